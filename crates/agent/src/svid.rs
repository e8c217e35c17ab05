//! Workload SVIDs that the agent obtains from the server for its cached
//! entries, and the rotation timing shared with the agent SVID.

pub mod jwt;
pub mod x509;

use std::time::{Duration, SystemTime};

/// Returns when an SVID valid from `not_before` to `not_after` is renewed:
/// at half of its lifetime. A lifetime that is empty or reversed gives
/// `not_before`, so the SVID is renewed at once.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + lifetime / 2
}

/// Reads the validity period (notBefore, notAfter) of a DER certificate.
///
/// # Errors
///
/// Returns the parser's message when the certificate is malformed.
pub fn certificate_validity(der: &[u8]) -> Result<(SystemTime, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    Ok((
        unix_to_system_time(validity.not_before.timestamp()),
        unix_to_system_time(validity.not_after.timestamp()),
    ))
}

/// Converts Unix seconds to a `SystemTime`; times before 1970 become 1970.
pub fn unix_to_system_time(seconds: i64) -> SystemTime {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Converts a `SystemTime` to Unix seconds; times before 1970 become 0.
pub fn system_time_to_unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Returns how long from `now` until `deadline`, zero when it has passed.
pub fn duration_until(deadline: SystemTime, now: SystemTime) -> Duration {
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn at_millis(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn renewal_time_table() {
        let cases = [
            // (not_before, not_after, expected renewal), in milliseconds
            (1_000_000, 4_600_000, 2_800_000),
            (0, 1_000, 500),
            (0, 2_000, 1_000),
            (5_000_000, 5_000_000, 5_000_000),
            (5_000_000, 4_000_000, 5_000_000),
            (1_700_000_000_000, 1_700_086_400_000, 1_700_043_200_000),
        ];
        for (not_before, not_after, expected) in cases {
            assert_eq!(
                renewal_time(at_millis(not_before), at_millis(not_after)),
                at_millis(expected),
                "{not_before}..{not_after}"
            );
        }
    }

    #[test]
    fn unix_time_conversions() {
        assert_eq!(unix_to_system_time(-5), SystemTime::UNIX_EPOCH);
        assert_eq!(unix_to_system_time(60), at(60));
        assert_eq!(system_time_to_unix(at(60)), 60);
    }

    #[test]
    fn duration_until_clamps_past() {
        assert_eq!(duration_until(at(10), at(20)), Duration::ZERO);
        assert_eq!(duration_until(at(20), at(10)), Duration::from_secs(10));
    }
}
