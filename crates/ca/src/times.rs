//! Conversions of `SystemTime` for certificate fields and messages.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Truncates a time to whole seconds since the Unix epoch, the precision of
/// X.509 validity dates and JWT claims.
pub(crate) fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(before) => {
            let before = before.duration();
            let secs = before.as_secs() + u64::from(before.subsec_nanos() > 0);
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs)
        }
    }
}

/// Formats a time as RFC 3339 in UTC, or as seconds from the Unix epoch when
/// the calendar date is out of the formatter's range.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let (offset, after_epoch) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => (since, true),
        Err(before) => (before.duration(), false),
    };

    let date = time::Duration::try_from(offset).ok().and_then(|offset| {
        if after_epoch {
            OffsetDateTime::UNIX_EPOCH.checked_add(offset)
        } else {
            OffsetDateTime::UNIX_EPOCH.checked_sub(offset)
        }
    });

    match date.map(|d| d.format(&Rfc3339)) {
        Some(Ok(text)) => text,
        _ if after_epoch => format!("{}s after the Unix epoch", offset.as_secs()),
        _ => format!("{}s before the Unix epoch", offset.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_truncates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        assert_eq!(whole_seconds(t), expected);
    }

    #[test]
    fn whole_seconds_before_epoch_rounds_down() {
        let t = SystemTime::UNIX_EPOCH - Duration::from_millis(1_500);
        let expected = SystemTime::UNIX_EPOCH - Duration::from_secs(2);
        assert_eq!(whole_seconds(t), expected);
    }

    #[test]
    fn rfc3339_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400);
        assert_eq!(rfc3339(t), "1970-01-02T00:00:00Z");
    }

    #[test]
    fn rfc3339_out_of_range_falls_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339(t), "400000000000s after the Unix epoch");
    }
}
