use super::*;

#[test]
fn spiffe_id_parse_valid() {
    let cases = [
        ("spiffe://example.org", "example.org", ""),
        (
            "spiffe://trust-domain-name/path",
            "trust-domain-name",
            "/path",
        ),
        (
            "spiffe://staging.example.com/payments/mysql",
            "staging.example.com",
            "/payments/mysql",
        ),
        (
            "spiffe://staging.example.com/payments/web-fe",
            "staging.example.com",
            "/payments/web-fe",
        ),
        (
            "spiffe://k8s-west.example.com/ns/staging/sa/default",
            "k8s-west.example.com",
            "/ns/staging/sa/default",
        ),
        (
            "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
            "example.com",
            "/9eebccd2-12bf-40a6-b262-65fe0487d453",
        ),
        (
            "spiffe://trust_domain_name.example.com/a",
            "trust_domain_name.example.com",
            "/a",
        ),
        ("spiffe://192.168.0.1/ip/like", "192.168.0.1", "/ip/like"),
        ("spiffe://x/...", "x", "/..."),
        ("spiffe://x/.a/..b/a.", "x", "/.a/..b/a."),
        ("spiffe://x/Mixed_Case-09.Path", "x", "/Mixed_Case-09.Path"),
        ("spiffe://-._/a", "-._", "/a"),
    ];
    for (input, td, path) in cases {
        let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.as_str(), input);
        assert_eq!(id.trust_domain().name(), td, "{input}");
        assert_eq!(id.path(), path, "{input}");
        assert_eq!(id.to_string(), input);
    }
}

#[test]
fn spiffe_id_parse_invalid() {
    let cases: &[(&str, IdError)] = &[
        ("", IdError::Empty),
        (
            "example.org/a",
            IdError::WrongScheme {
                id: "example.org/a".into(),
            },
        ),
        (
            "SPIFFE://example.org/a",
            IdError::WrongScheme {
                id: "SPIFFE://example.org/a".into(),
            },
        ),
        (
            "Spiffe://example.org",
            IdError::WrongScheme {
                id: "Spiffe://example.org".into(),
            },
        ),
        (
            "https://example.org/a",
            IdError::WrongScheme {
                id: "https://example.org/a".into(),
            },
        ),
        (
            "spiffe:/example.org/a",
            IdError::WrongScheme {
                id: "spiffe:/example.org/a".into(),
            },
        ),
        (
            "spiffe:example.org",
            IdError::WrongScheme {
                id: "spiffe:example.org".into(),
            },
        ),
        (
            " spiffe://example.org",
            IdError::WrongScheme {
                id: " spiffe://example.org".into(),
            },
        ),
        (
            "spiffe://",
            IdError::EmptyTrustDomain {
                id: "spiffe://".into(),
            },
        ),
        (
            "spiffe:///a",
            IdError::EmptyTrustDomain {
                id: "spiffe:///a".into(),
            },
        ),
        (
            "spiffe://Example.org/a",
            IdError::TrustDomainCharacter {
                input: "spiffe://Example.org/a".into(),
                ch: 'E',
                position: 9,
            },
        ),
        (
            "spiffe://example.org:8080/a",
            IdError::TrustDomainCharacter {
                input: "spiffe://example.org:8080/a".into(),
                ch: ':',
                position: 20,
            },
        ),
        (
            "spiffe://user@example.org/a",
            IdError::TrustDomainCharacter {
                input: "spiffe://user@example.org/a".into(),
                ch: '@',
                position: 13,
            },
        ),
        (
            "spiffe://exa%6Dple.org",
            IdError::TrustDomainCharacter {
                input: "spiffe://exa%6Dple.org".into(),
                ch: '%',
                position: 12,
            },
        ),
        (
            "spiffe://example.org?x=1",
            IdError::TrustDomainCharacter {
                input: "spiffe://example.org?x=1".into(),
                ch: '?',
                position: 20,
            },
        ),
        (
            "spiffe://example.org#frag",
            IdError::TrustDomainCharacter {
                input: "spiffe://example.org#frag".into(),
                ch: '#',
                position: 20,
            },
        ),
        (
            "spiffe://[::1]/a",
            IdError::TrustDomainCharacter {
                input: "spiffe://[::1]/a".into(),
                ch: '[',
                position: 9,
            },
        ),
        (
            "spiffe://exämple.org",
            IdError::TrustDomainCharacter {
                input: "spiffe://exämple.org".into(),
                ch: 'ä',
                position: 11,
            },
        ),
        (
            "spiffe://exa mple.org",
            IdError::TrustDomainCharacter {
                input: "spiffe://exa mple.org".into(),
                ch: ' ',
                position: 12,
            },
        ),
        (
            "spiffe://example.org/",
            IdError::TrailingSlash {
                id: "spiffe://example.org/".into(),
            },
        ),
        (
            "spiffe://example.org/a/",
            IdError::TrailingSlash {
                id: "spiffe://example.org/a/".into(),
            },
        ),
        (
            "spiffe://example.org//a",
            IdError::EmptySegment {
                id: "spiffe://example.org//a".into(),
                position: 21,
            },
        ),
        (
            "spiffe://example.org/a//b",
            IdError::EmptySegment {
                id: "spiffe://example.org/a//b".into(),
                position: 23,
            },
        ),
        (
            "spiffe://example.org/.",
            IdError::DotSegment {
                id: "spiffe://example.org/.".into(),
                segment: ".".into(),
                position: 21,
            },
        ),
        (
            "spiffe://example.org/a/../b",
            IdError::DotSegment {
                id: "spiffe://example.org/a/../b".into(),
                segment: "..".into(),
                position: 23,
            },
        ),
        (
            "spiffe://example.org/a/..",
            IdError::DotSegment {
                id: "spiffe://example.org/a/..".into(),
                segment: "..".into(),
                position: 23,
            },
        ),
        (
            "spiffe://example.org/a%20b",
            IdError::PathCharacter {
                id: "spiffe://example.org/a%20b".into(),
                ch: '%',
                position: 22,
            },
        ),
        (
            "spiffe://example.org/a?b=c",
            IdError::PathCharacter {
                id: "spiffe://example.org/a?b=c".into(),
                ch: '?',
                position: 22,
            },
        ),
        (
            "spiffe://example.org/a#b",
            IdError::PathCharacter {
                id: "spiffe://example.org/a#b".into(),
                ch: '#',
                position: 22,
            },
        ),
        (
            "spiffe://example.org/a b",
            IdError::PathCharacter {
                id: "spiffe://example.org/a b".into(),
                ch: ' ',
                position: 22,
            },
        ),
        (
            "spiffe://example.org/a:b",
            IdError::PathCharacter {
                id: "spiffe://example.org/a:b".into(),
                ch: ':',
                position: 22,
            },
        ),
        (
            "spiffe://example.org/ü",
            IdError::PathCharacter {
                id: "spiffe://example.org/ü".into(),
                ch: 'ü',
                position: 21,
            },
        ),
        (
            "spiffe://example.org/a\nb",
            IdError::PathCharacter {
                id: "spiffe://example.org/a\nb".into(),
                ch: '\n',
                position: 22,
            },
        ),
        (
            "spiffe://example.org/a\\b",
            IdError::PathCharacter {
                id: "spiffe://example.org/a\\b".into(),
                ch: '\\',
                position: 22,
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(SpiffeId::parse(input).as_ref(), Err(expected), "{input:?}");
    }
}

#[test]
fn spiffe_id_length_limits() {
    let prefix = "spiffe://example.org/";
    let at_limit = format!("{prefix}{}", "a".repeat(MAX_SPIFFE_ID_BYTES - prefix.len()));
    assert!(SpiffeId::parse(&at_limit).is_ok());

    let over = format!("{at_limit}a");
    assert_eq!(
        SpiffeId::parse(&over),
        Err(IdError::TooLong {
            len: MAX_SPIFFE_ID_BYTES + 1,
            max: MAX_SPIFFE_ID_BYTES
        })
    );

    let long_td = "a".repeat(MAX_TRUST_DOMAIN_BYTES);
    assert!(SpiffeId::parse(&format!("spiffe://{long_td}/x")).is_ok());
    assert_eq!(
        SpiffeId::parse(&format!("spiffe://{long_td}a/x")),
        Err(IdError::TrustDomainTooLong {
            len: MAX_TRUST_DOMAIN_BYTES + 1,
            max: MAX_TRUST_DOMAIN_BYTES
        })
    );
}

#[test]
fn trust_domain_new_accepts_name_and_uri() {
    let from_name = TrustDomain::new("example.org").expect("valid name");
    let from_uri = TrustDomain::new("spiffe://example.org").expect("valid URI");
    assert_eq!(from_name, from_uri);
    assert_eq!(from_name.name(), "example.org");
    assert_eq!(from_name.id_string(), "spiffe://example.org");
    assert_eq!(from_name.to_string(), "example.org");
}

#[test]
fn trust_domain_new_invalid() {
    let cases: &[(&str, IdError)] = &[
        ("", IdError::EmptyTrustDomain { id: String::new() }),
        (
            "Example.org",
            IdError::TrustDomainCharacter {
                input: "Example.org".into(),
                ch: 'E',
                position: 0,
            },
        ),
        (
            "example.org:443",
            IdError::TrustDomainCharacter {
                input: "example.org:443".into(),
                ch: ':',
                position: 11,
            },
        ),
        (
            "example.org/a",
            IdError::TrustDomainCharacter {
                input: "example.org/a".into(),
                ch: '/',
                position: 11,
            },
        ),
        (
            "spiffe://example.org/a",
            IdError::TrustDomainWithPath {
                id: "spiffe://example.org/a".into(),
                trust_domain: "example.org".into(),
            },
        ),
        (
            "spiffe://example.org/",
            IdError::TrailingSlash {
                id: "spiffe://example.org/".into(),
            },
        ),
        (
            "https://example.org",
            IdError::WrongScheme {
                id: "https://example.org".into(),
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(TrustDomain::new(input).as_ref(), Err(expected), "{input:?}");
    }
    let too_long = "a".repeat(MAX_TRUST_DOMAIN_BYTES + 1);
    assert_eq!(
        TrustDomain::new(&too_long),
        Err(IdError::TrustDomainTooLong {
            len: MAX_TRUST_DOMAIN_BYTES + 1,
            max: MAX_TRUST_DOMAIN_BYTES
        })
    );
}

#[test]
fn spiffe_id_from_path() {
    let td = TrustDomain::new("example.org").expect("valid name");
    let id = SpiffeId::from_path(&td, "/a/b").expect("valid path");
    assert_eq!(id.as_str(), "spiffe://example.org/a/b");
    assert_eq!(
        id,
        SpiffeId::parse("spiffe://example.org/a/b").expect("valid ID")
    );

    let root = SpiffeId::from_path(&td, "").expect("empty path");
    assert_eq!(root.as_str(), "spiffe://example.org");
    assert_eq!(root.path(), "");

    assert_eq!(
        SpiffeId::from_path(&td, "a/b"),
        Err(IdError::PathNotAbsolute { path: "a/b".into() })
    );
    assert_eq!(
        SpiffeId::from_path(&td, "/a/"),
        Err(IdError::TrailingSlash {
            id: "spiffe://example.org/a/".into()
        })
    );
    assert_eq!(
        SpiffeId::from_path(&td, "/a/./b"),
        Err(IdError::DotSegment {
            id: "spiffe://example.org/a/./b".into(),
            segment: ".".into(),
            position: 23
        })
    );
    let long = format!("/{}", "a".repeat(MAX_SPIFFE_ID_BYTES));
    assert!(matches!(
        SpiffeId::from_path(&td, &long),
        Err(IdError::TooLong { .. })
    ));
}

#[test]
fn error_messages_name_the_fault() {
    let err = SpiffeId::parse("spiffe://Example.org/a").expect_err("uppercase");
    assert_eq!(
        err.to_string(),
        "invalid character 'E' at byte 9 of \"spiffe://Example.org/a\": trust domain names may \
         contain only a-z, 0-9, '.', '-' and '_' (trust domain names must be lowercase)"
    );
    let err = SpiffeId::parse("spiffe://example.org:80").expect_err("port");
    assert!(err.to_string().contains("a port is not allowed"), "{err}");
    let err = SpiffeId::parse("spiffe://example.org/a%41").expect_err("percent");
    assert!(
        err.to_string().contains("percent-encoding is not allowed"),
        "{err}"
    );
}

#[test]
fn serde_round_trip_as_string() {
    let id = SpiffeId::parse("spiffe://example.org/web").expect("valid ID");
    let json = serde_json::to_string(&id).expect("serialize");
    assert_eq!(json, "\"spiffe://example.org/web\"");
    let back: SpiffeId = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, id);

    let td: TrustDomain = serde_json::from_str("\"example.org\"").expect("deserialize");
    assert_eq!(
        serde_json::to_string(&td).expect("serialize"),
        "\"example.org\""
    );
    assert!(serde_json::from_str::<SpiffeId>("\"spiffe://example.org/\"").is_err());
}

#[test]
fn ordering_and_membership() {
    let a = SpiffeId::parse("spiffe://example.org/a").expect("valid ID");
    let b = SpiffeId::parse("spiffe://example.org/b").expect("valid ID");
    assert!(a < b);
    let td = TrustDomain::new("example.org").expect("valid name");
    let other = TrustDomain::new("example.com").expect("valid name");
    assert!(a.is_member_of(&td));
    assert!(!a.is_member_of(&other));
}
