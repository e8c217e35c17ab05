//! Redaction of datastore URLs for logs and errors: the password is
//! replaced.

/// Replacement for a password in a redacted URL.
const MASK: &str = "***";

/// Returns `url` with its password, and any `password` query parameter,
/// replaced by `***`. A SQLite URL is returned unchanged because it has
/// no credentials. A URL that does not parse is reduced to its scheme,
/// because the position of a password in it is unknown.
pub fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        return format!("{scheme}://<a URL that does not parse>");
    };

    if parsed.password().is_some() {
        // Fails only for URLs that cannot have credentials, which this one
        // has.
        let _ = parsed.set_password(Some(MASK));
    }

    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if pairs.iter().any(|(key, _)| key == "password") {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (key, value) in &pairs {
            let value = if key == "password" { MASK } else { value };
            query.append_pair(key, value);
        }
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_masks_passwords() {
        let cases = [
            (
                "postgres://tessera:s3cret@db.example.org:5432/tessera",
                "postgres://tessera:***@db.example.org:5432/tessera",
            ),
            (
                "mysql://root:p%40ss@127.0.0.1:3306/tessera?ssl-mode=REQUIRED",
                "mysql://root:***@127.0.0.1:3306/tessera?ssl-mode=REQUIRED",
            ),
            (
                "postgres://tessera@db/tessera?sslmode=require&password=s3cret",
                "postgres://tessera@db/tessera?sslmode=require&password=***",
            ),
            (
                "postgres://postgres@127.0.0.1:5432/tessera",
                "postgres://postgres@127.0.0.1:5432/tessera",
            ),
            (
                "sqlite:///var/lib/tessera/datastore.sqlite3",
                "sqlite:///var/lib/tessera/datastore.sqlite3",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn redact_url_hides_unparseable_url() {
        let redacted = redact_url("postgres://tessera:pa#ss@db/tessera");
        assert_eq!(redacted, "postgres://<a URL that does not parse>");
        assert!(!redacted.contains("pa#ss"), "{redacted}");
    }
}
