//! Checks of command-line values before anything is sent: SPIFFE IDs, trust
//! domains, selectors, durations and times. Each error names the value and
//! the expected form.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tessera_registration::Selector;
use tessera_spiffe::{SpiffeId, TrustDomain};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses a SPIFFE ID given for the field `field`, such as `--parent-id`.
pub fn spiffe_id(field: &str, value: &str) -> Result<SpiffeId> {
    // The parser's error names the value and the fault, so the context adds
    // only the field and an example.
    SpiffeId::parse(value).with_context(|| {
        format!("invalid {field} (a SPIFFE ID such as spiffe://example.org/service/web)")
    })
}

/// Parses a trust domain name given for the field `field`.
pub fn trust_domain(field: &str, value: &str) -> Result<TrustDomain> {
    TrustDomain::new(value)
        .with_context(|| format!("invalid {field} (a trust domain name such as example.org)"))
}

/// Parses a selector written as `TYPE:VALUE` given for the field `field`.
/// The context names the whole value because the parser's error may name
/// only the faulty part, such as an empty type.
pub fn selector(field: &str, value: &str) -> Result<Selector> {
    Selector::parse(value).with_context(|| format!("invalid {field} {value:?}"))
}

/// Parses a duration such as `90s`, `5m` or `1h 30m`.
pub fn duration(field: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value).with_context(|| {
        format!("invalid {field} {value:?}: expected a duration such as 90s, 5m or 1h")
    })
}

/// Parses a lifetime into whole seconds as the admin API carries it; `0s`
/// gives 0, which means the server's default.
pub fn ttl_seconds(field: &str, value: &str) -> Result<i32> {
    let parsed = duration(field, value)?;
    seconds_from_duration(field, value, parsed)
}

/// Converts a duration into whole seconds that fit the admin API's `int32`.
pub fn seconds_from_duration(field: &str, value: &str, parsed: Duration) -> Result<i32> {
    if parsed.subsec_nanos() != 0 {
        bail!("invalid {field} {value:?}: the duration must be a whole number of seconds");
    }
    i32::try_from(parsed.as_secs()).map_err(|_| {
        anyhow::anyhow!(
            "invalid {field} {value:?}: the duration exceeds the maximum of {} seconds",
            i32::MAX
        )
    })
}

/// Parses an expiry time into Unix seconds: RFC 3339 (such as
/// `2027-01-31T12:00:00Z`), Unix seconds, or `never` (0).
pub fn expiry(value: &str) -> Result<i64> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("never") {
        return Ok(0);
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<i64>()
            .with_context(|| format!("invalid expiry time {value:?}: Unix seconds out of range"));
    }
    let parsed = OffsetDateTime::parse(value, &Rfc3339).with_context(|| {
        format!(
            "invalid expiry time {value:?}: expected RFC 3339 (such as 2027-01-31T12:00:00Z), \
             Unix seconds, or never"
        )
    })?;
    Ok(parsed.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_seconds_cases() {
        let cases: [(&str, Option<i32>); 8] = [
            ("0s", Some(0)),
            ("90s", Some(90)),
            ("5m", Some(300)),
            ("1h 30m", Some(5400)),
            ("1.5s", None),
            ("100000000000s", None),
            ("ten minutes", None),
            ("", None),
        ];
        for (input, expected) in cases {
            let parsed = ttl_seconds("--x509-svid-ttl", input).ok();
            assert_eq!(parsed, expected, "input {input:?}");
        }
    }

    #[test]
    fn ttl_error_names_value_and_form() {
        let err = ttl_seconds("--jwt-svid-ttl", "soon").expect_err("not a duration");
        let message = format!("{err:#}");
        assert!(message.contains("--jwt-svid-ttl"), "{message}");
        assert!(message.contains("\"soon\""), "{message}");
        assert!(message.contains("such as 90s"), "{message}");
    }

    #[test]
    fn expiry_cases() {
        let cases: [(&str, Option<i64>); 8] = [
            ("never", Some(0)),
            ("NEVER", Some(0)),
            ("0", Some(0)),
            ("1800000000", Some(1_800_000_000)),
            ("2027-01-15T08:00:00Z", Some(1_800_000_000)),
            ("2027-01-15T10:00:00+02:00", Some(1_800_000_000)),
            ("2027-01-15", None),
            ("-5", None),
        ];
        for (input, expected) in cases {
            assert_eq!(expiry(input).ok(), expected, "input {input:?}");
        }
    }

    #[test]
    fn spiffe_id_cases() {
        let cases = [
            ("spiffe://example.org/service/web", true),
            ("spiffe://example.org", true),
            ("http://example.org/web", false),
            ("spiffe://Example.org/web", false),
            ("spiffe:///web", false),
            ("example.org/web", false),
            ("", false),
        ];
        for (input, valid) in cases {
            assert_eq!(
                spiffe_id("--spiffe-id", input).is_ok(),
                valid,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn spiffe_id_error_names_flag_and_form() {
        let err = spiffe_id("--parent-id", "not-an-id").expect_err("not a SPIFFE ID");
        let message = format!("{err:#}");
        assert!(message.contains("--parent-id"), "{message}");
        assert!(message.contains("\"not-an-id\""), "{message}");
        assert!(message.contains("spiffe://example.org/"), "{message}");
    }

    #[test]
    fn selector_cases() {
        let cases = [
            ("unix:uid:1000", true),
            ("k8s:ns:default", true),
            ("unix", false),
            (":uid:1000", false),
            ("unix:", false),
            ("", false),
        ];
        for (input, valid) in cases {
            assert_eq!(
                selector("--selector", input).is_ok(),
                valid,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn selector_error_names_value_and_form() {
        for input in ["uid1000", ":uid:1000"] {
            let err = selector("--selector", input).expect_err(input);
            let message = format!("{err:#}");
            assert!(
                message.contains(&format!("--selector {input:?}")),
                "{message}"
            );
        }
        let err = selector("--selector", "uid1000").expect_err("no type");
        assert!(format!("{err:#}").contains("TYPE:VALUE"), "{err:#}");
    }

    #[test]
    fn trust_domain_cases() {
        let cases = [
            ("example.org", true),
            ("spiffe://example.org", true),
            ("Bad!", false),
        ];
        for (input, valid) in cases {
            assert_eq!(
                trust_domain("--federates-with", input).is_ok(),
                valid,
                "input {input:?}"
            );
        }
    }
}
