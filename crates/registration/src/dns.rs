//! DNS name checks for the DNS SANs of X.509-SVIDs: RFC 1123 host names,
//! with a `*` wildcard allowed as the leftmost label.

use crate::EntryError;

/// Maximum length of a DNS name in bytes, without a trailing dot.
pub const MAX_DNS_NAME_BYTES: usize = 253;

/// Maximum length of one DNS label in bytes.
const MAX_LABEL_BYTES: usize = 63;

/// Checks that `name` is a valid DNS name for an X.509-SVID DNS SAN: at
/// most [`MAX_DNS_NAME_BYTES`] bytes of dot-separated labels, each 1 to 63
/// letters, digits and hyphens that neither start nor end with a hyphen.
/// The leftmost label may be `*`. A trailing dot is not allowed.
///
/// # Errors
///
/// Returns [`EntryError::InvalidDnsName`] naming the fault.
pub fn validate_dns_name(name: &str) -> Result<(), EntryError> {
    let invalid = |reason: String| EntryError::InvalidDnsName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("the name is empty".to_owned()));
    }
    if name.len() > MAX_DNS_NAME_BYTES {
        return Err(invalid(format!(
            "the name is {} bytes, over the maximum of {MAX_DNS_NAME_BYTES}",
            name.len()
        )));
    }
    if name.ends_with('.') {
        return Err(invalid("remove the trailing dot".to_owned()));
    }

    for (index, label) in name.split('.').enumerate() {
        if index == 0 && label == "*" {
            continue;
        }
        check_label(label).map_err(invalid)?;
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("the name has an empty label (two dots in a row or a leading dot)".to_owned());
    }
    if label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "label {label:?} is {} bytes, over the maximum of {MAX_LABEL_BYTES}",
            label.len()
        ));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
    {
        let wildcard_hint = if c == '*' {
            "; a wildcard must be the whole leftmost label, as in *.example.org"
        } else {
            ""
        };
        return Err(format!(
            "label {label:?} contains {c:?}: labels allow only letters, digits and '-'{wildcard_hint}"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} starts or ends with '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        let long_label = "a".repeat(MAX_LABEL_BYTES);
        let cases = [
            "example.org",
            "web",
            "web-1.prod.example.org",
            "*.example.org",
            "123.example.org",
            "EXAMPLE.org",
            long_label.as_str(),
        ];
        for name in cases {
            assert_eq!(validate_dns_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_names() {
        let long_label = format!("{}.org", "a".repeat(MAX_LABEL_BYTES + 1));
        let long_name = vec!["abcdefghi"; 26].join(".");
        let cases = [
            ("", "empty"),
            ("example.org.", "trailing dot"),
            (".example.org", "empty label"),
            ("a..b", "empty label"),
            ("-web.example.org", "starts or ends with '-'"),
            ("web-.example.org", "starts or ends with '-'"),
            ("web_1.example.org", "contains '_'"),
            ("wéb.example.org", "contains 'é'"),
            ("web example.org", "contains ' '"),
            ("a.*.example.org", "leftmost label"),
            ("*web.example.org", "leftmost label"),
            (long_label.as_str(), "over the maximum of 63"),
            (long_name.as_str(), "over the maximum of 253"),
        ];
        for (name, expected) in cases {
            let err = validate_dns_name(name).expect_err(name);
            assert!(err.to_string().contains(expected), "{name}: {err}");
        }
    }
}
