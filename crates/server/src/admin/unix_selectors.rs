//! Admin-side checks of `unix` selectors in registration entries.

use tessera_registration::Selector;

/// Keys of the `unix` selectors that the agent's unix workload attestor
/// produces.
const UNIX_SELECTOR_KEYS: [&str; 8] = [
    "uid",
    "gid",
    "user",
    "group",
    "supplementary_gid",
    "supplementary_group",
    "path",
    "sha256",
];

/// Rejects a `unix` selector that the unix workload attestor can never
/// produce, such as `unix:uid:alice`, because an entry with it would match
/// no workload and nothing would report why. Other selector types pass
/// unchecked. Entries already stored are not checked again.
pub(crate) fn check(selector: &Selector) -> Result<(), String> {
    if selector.kind() != "unix" {
        return Ok(());
    }
    let value = selector.value();
    let Some((key, rest)) = value.split_once(':') else {
        return Err(format!(
            "invalid selector {selector}: expected unix:KEY:VALUE with KEY one of {}",
            UNIX_SELECTOR_KEYS.join(", ")
        ));
    };
    let valid = match key {
        // The attestor writes IDs in canonical decimal, so `05` or `+5`
        // would never match.
        "uid" | "gid" | "supplementary_gid" => {
            rest.parse::<u32>().is_ok_and(|id| id.to_string() == rest)
        }
        "path" => rest.starts_with('/'),
        "sha256" => {
            rest.len() == 64
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        "user" | "group" | "supplementary_group" => !rest.is_empty(),
        _ => {
            return Err(format!(
                "invalid selector {selector}: unknown unix selector key {key:?}, expected one \
                 of {}",
                UNIX_SELECTOR_KEYS.join(", ")
            ));
        }
    };
    if valid {
        return Ok(());
    }
    let expected = match key {
        "path" => "an absolute executable path such as unix:path:/usr/bin/app".to_owned(),
        "sha256" => "64 lowercase hex digits of the executable's SHA-256 digest".to_owned(),
        "user" | "group" | "supplementary_group" => format!("a name such as unix:{key}:www"),
        _ => format!("a decimal number without leading zeros such as unix:{key}:1000"),
    };
    Err(format!("invalid selector {selector}: expected {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_selector_cases() {
        let digest = "a".repeat(64);
        let valid = [
            "unix:uid:1000".to_owned(),
            "unix:gid:0".to_owned(),
            "unix:supplementary_gid:27".to_owned(),
            "unix:user:alice".to_owned(),
            "unix:group:staff".to_owned(),
            "unix:supplementary_group:docker".to_owned(),
            "unix:path:/usr/bin/app".to_owned(),
            format!("unix:sha256:{digest}"),
            "k8s:ns:default".to_owned(),
        ];
        for text in &valid {
            let selector = Selector::parse(text).unwrap();
            assert_eq!(check(&selector), Ok(()), "{text}");
        }

        let invalid = [
            ("unix:uid:alice", "decimal number"),
            ("unix:uid:05", "without leading zeros"),
            ("unix:uid:+5", "decimal number"),
            ("unix:gid:abc", "unix:gid:1000"),
            ("unix:user:", "a name"),
            ("unix:gid:-1", "decimal number"),
            ("unix:path:bin/app", "absolute"),
            ("unix:sha256:ABC", "64 lowercase hex"),
            ("unix:user_id:1000", "unknown unix selector key"),
            ("unix:1000", "expected unix:KEY:VALUE"),
        ];
        for (text, expected) in invalid {
            let selector = Selector::parse(text).unwrap();
            let message = check(&selector).unwrap_err();
            assert!(message.contains(text), "{message}");
            assert!(message.contains(expected), "{text}: {message}");
        }
    }
}
