use super::*;
use tessera_store::PoolSettings;

fn minimal() -> RawConfig {
    RawConfig {
        trust_domain: Some("example.org".into()),
        data_dir: Some("/var/lib/tessera".into()),
        ..RawConfig::default()
    }
}

fn invalid_keys(raw: RawConfig) -> Vec<InvalidKey> {
    match ServerConfig::resolve(raw) {
        Err(ConfigError::Invalid(keys)) => keys,
        other => panic!("expected ConfigError::Invalid, got {other:?}"),
    }
}

fn keys_named(keys: &[InvalidKey]) -> Vec<&str> {
    keys.iter().map(|k| k.key.as_str()).collect()
}

#[test]
fn resolve_minimal_fills_defaults() {
    let config = ServerConfig::resolve(minimal()).unwrap();

    assert_eq!(config.trust_domain.name(), "example.org");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/tessera"));
    assert_eq!(config.bind_address, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(
        config.admin_socket,
        PathBuf::from("/var/lib/tessera/admin.sock")
    );
    assert_eq!(config.log_level, "info");
    assert_eq!(config.jwt_issuer, None);
    assert_eq!(config.ca_key_type, KeyAlgorithm::EcP256);
    assert_eq!(config.ca_ttl, Duration::from_secs(86_400));
    assert_eq!(config.ca_key_storage, KeyStorageKind::Disk);
    assert_eq!(config.x509_svid_ttl, Duration::from_secs(3_600));
    assert_eq!(config.jwt_svid_ttl, Duration::from_secs(300));
    assert_eq!(config.join_token_ttl, Duration::from_secs(600));
    assert_eq!(
        config.datastore.url,
        "sqlite:///var/lib/tessera/datastore.sqlite3"
    );
    assert_eq!(config.datastore.pool, PoolSettings::default());
    assert!(config.datastore.tls.is_empty());
}

#[test]
fn resolve_relative_data_dir_made_absolute() {
    let raw = RawConfig {
        data_dir: Some("relative/dir".into()),
        ..minimal()
    };
    let config = ServerConfig::resolve(raw).unwrap();

    assert!(config.data_dir.is_absolute());
    assert!(config.data_dir.ends_with("relative/dir"));
}

#[test]
fn resolve_missing_required_keys_listed_together() {
    let keys = invalid_keys(RawConfig::default());

    assert_eq!(keys_named(&keys), ["trust_domain", "data_dir"]);
    assert!(keys.iter().all(|k| k.value.is_none()));
}

#[test]
fn resolve_reports_every_invalid_key() {
    let raw = RawConfig {
        trust_domain: Some("Example.org".into()),
        bind_address: Some("localhost".into()),
        log_level: Some("loud".into()),
        ca: RawCaConfig {
            key_type: Some("ed448".into()),
            ttl: Some("forever".into()),
            key_storage: Some("hsm".into()),
        },
        svid: RawSvidConfig {
            x509_ttl: Some("0s".into()),
            jwt_ttl: Some("1.5s".into()),
        },
        join_token: RawJoinTokenConfig {
            ttl: Some("-1m".into()),
        },
        datastore: RawDatastoreConfig {
            url: Some("redis://user:secret@host".into()),
            ..RawDatastoreConfig::default()
        },
        ..minimal()
    };
    let keys = invalid_keys(raw);

    assert_eq!(
        keys_named(&keys),
        [
            "trust_domain",
            "bind_address",
            "log_level",
            "ca.key_type",
            "ca.key_storage",
            "ca.ttl",
            "svid.x509_ttl",
            "svid.jwt_ttl",
            "join_token.ttl",
            "datastore.url",
        ]
    );
}

#[test]
fn resolve_invalid_key_names_value_and_expectation() {
    let raw = RawConfig {
        ca: RawCaConfig {
            ttl: Some("forever".into()),
            ..RawCaConfig::default()
        },
        ..minimal()
    };
    let message = ConfigError::Invalid(invalid_keys(raw)).to_string();

    assert!(message.contains("`ca.ttl`"), "{message}");
    assert!(message.contains("\"forever\""), "{message}");
    assert!(message.contains("expected a duration"), "{message}");
}

#[test]
fn resolve_datastore_password_not_shown() {
    let raw = RawConfig {
        datastore: RawDatastoreConfig {
            url: Some("redis://user:secret@host".into()),
            ..RawDatastoreConfig::default()
        },
        ..minimal()
    };
    let message = ConfigError::Invalid(invalid_keys(raw)).to_string();

    assert!(message.contains("datastore.url"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn resolve_svid_ttl_over_ca_ttl_rejected() {
    let cases = [
        ("1h", "1h", "5m", vec!["svid.x509_ttl"]),
        ("1h", "2h", "5m", vec!["svid.x509_ttl"]),
        ("1h", "30m", "1h", vec!["svid.jwt_ttl"]),
        ("10m", "1h", "1h", vec!["svid.x509_ttl", "svid.jwt_ttl"]),
        ("59s", "10s", "10s", vec!["ca.ttl"]),
        ("101years", "1h", "5m", vec!["ca.ttl"]),
    ];
    for (ca_ttl, x509_ttl, jwt_ttl, expected) in cases {
        let raw = RawConfig {
            ca: RawCaConfig {
                ttl: Some(ca_ttl.into()),
                ..RawCaConfig::default()
            },
            svid: RawSvidConfig {
                x509_ttl: Some(x509_ttl.into()),
                jwt_ttl: Some(jwt_ttl.into()),
            },
            ..minimal()
        };
        let keys = invalid_keys(raw);
        assert_eq!(
            keys_named(&keys),
            expected,
            "ca {ca_ttl}, x509 {x509_ttl}, jwt {jwt_ttl}"
        );
    }
}

#[test]
fn resolve_default_x509_ttl_over_ca_ttl() {
    let raw = RawConfig {
        ca: RawCaConfig {
            ttl: Some("30m".into()),
            ..RawCaConfig::default()
        },
        ..minimal()
    };
    let keys = invalid_keys(raw);

    assert_eq!(keys_named(&keys), ["svid.x509_ttl"]);
    assert_eq!(keys[0].value.as_deref(), Some("1h"));
}

#[test]
fn resolve_durations_table() {
    let cases = [
        ("90s", Some(90)),
        ("5m", Some(300)),
        ("1h 30m", Some(5_400)),
        ("24h", Some(86_400)),
        ("0s", None),
        ("1500ms", None),
        ("69years", None),
        ("10", None),
        ("", None),
    ];
    for (text, expected) in cases {
        let mut errors = Vec::new();
        let got = resolve_duration(
            "join_token.ttl",
            Some(text),
            DEFAULT_JOIN_TOKEN_TTL,
            &mut errors,
        );
        assert_eq!(got.map(|d| d.as_secs()), expected, "duration {text:?}");
        assert_eq!(
            errors.len(),
            usize::from(expected.is_none()),
            "duration {text:?}"
        );
    }
}

#[test]
fn resolve_key_storage_memory() {
    let raw = RawConfig {
        ca: RawCaConfig {
            key_storage: Some("memory".into()),
            ..RawCaConfig::default()
        },
        ..minimal()
    };

    assert_eq!(
        ServerConfig::resolve(raw).unwrap().ca_key_storage,
        KeyStorageKind::Memory
    );
}

#[test]
fn resolve_long_admin_socket_rejected() {
    let raw = RawConfig {
        data_dir: Some(PathBuf::from("/").join("d".repeat(120))),
        ..minimal()
    };
    let keys = invalid_keys(raw);

    assert_eq!(keys_named(&keys), ["admin_socket"]);
    assert!(
        keys[0].expected.contains("at most 107 bytes"),
        "{}",
        keys[0].expected
    );
}

#[test]
fn resolve_bind_address_ipv6() {
    let raw = RawConfig {
        bind_address: Some("[::1]:0".into()),
        ..minimal()
    };

    assert_eq!(
        ServerConfig::resolve(raw).unwrap().bind_address,
        "[::1]:0".parse().unwrap()
    );
}

#[test]
fn parse_unknown_key_rejected() {
    let cases = [
        "trust_domain = \"example.org\"\nbind_adress = \"127.0.0.1:1\"\n",
        "[ca]\nkey_size = 256\n",
        "[svid]\nttl = \"1h\"\n",
        "[plugins]\n",
    ];
    for text in cases {
        let err = RawConfig::from_toml_str(text).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{text:?}: {err}");
        assert!(err.to_string().contains("unknown field"), "{text:?}: {err}");
    }
}

#[test]
fn parse_wrong_type_rejected() {
    let err = RawConfig::from_toml_str("trust_domain = 5\n").unwrap_err();

    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn from_file_missing_names_path() {
    let err = RawConfig::from_file(Path::new("/nonexistent/tessera/server.toml")).unwrap_err();

    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/tessera/server.toml"),
        "{err}"
    );
}

#[test]
fn example_file_parses_and_resolves() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("server.example.toml");
    let raw = RawConfig::from_file(&path).unwrap();
    let config = ServerConfig::resolve(raw).unwrap();

    assert_eq!(config.trust_domain.name(), "example.org");
    assert_eq!(
        config.admin_socket,
        PathBuf::from("/var/lib/tessera/server/admin.sock")
    );
    assert_eq!(
        config.datastore.url,
        "sqlite:///var/lib/tessera/server/datastore.sqlite3"
    );
    assert_eq!(config.ca_ttl, DEFAULT_CA_TTL);
    assert_eq!(config.x509_svid_ttl, DEFAULT_X509_SVID_TTL);
    assert_eq!(config.jwt_svid_ttl, DEFAULT_JWT_SVID_TTL);
    assert_eq!(config.join_token_ttl, DEFAULT_JOIN_TOKEN_TTL);
}

/// Turns a commented-out `# key = value` line into `key = value`.
fn uncomment_key(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("# ") else {
        return line;
    };
    match rest.split_once(" = ") {
        Some((key, _)) if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') => rest,
        _ => line,
    }
}

#[test]
fn example_file_sets_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("server.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let uncommented: String = text
        .lines()
        .map(uncomment_key)
        .collect::<Vec<_>>()
        .join("\n");
    let raw = RawConfig::from_toml_str(&uncommented).unwrap();

    assert!(raw.trust_domain.is_some());
    assert!(raw.data_dir.is_some());
    assert!(raw.bind_address.is_some());
    assert!(raw.admin_socket.is_some());
    assert!(raw.log_level.is_some());
    assert!(raw.jwt_issuer.is_some());
    assert!(raw.ca.key_type.is_some());
    assert!(raw.ca.ttl.is_some());
    assert!(raw.ca.key_storage.is_some());
    assert!(raw.svid.x509_ttl.is_some());
    assert!(raw.svid.jwt_ttl.is_some());
    assert!(raw.join_token.ttl.is_some());
    assert!(raw.datastore.url.is_some());
    assert!(raw.datastore.max_connections.is_some());
    assert!(raw.datastore.min_connections.is_some());
    assert!(raw.datastore.acquire_timeout.is_some());
    assert!(raw.datastore.idle_timeout.is_some());
    assert!(raw.datastore.max_lifetime.is_some());
    assert!(raw.datastore.ssl_mode.is_some());
    assert!(raw.datastore.ssl_ca_file.is_some());
    assert!(raw.datastore.ssl_cert_file.is_some());
    assert!(raw.datastore.ssl_key_file.is_some());
}

fn with_datastore(datastore: RawDatastoreConfig) -> RawConfig {
    RawConfig {
        datastore,
        ..minimal()
    }
}

fn postgres(tls: RawDatastoreConfig) -> RawDatastoreConfig {
    RawDatastoreConfig {
        url: Some("postgres://tessera:s3cret@db.example.org:5432/tessera".into()),
        ..tls
    }
}

/// Writes a PEM file with a block of `label` and returns its path.
fn pem_file(dir: &Path, name: &str, label: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn resolve_datastore_pool_settings() {
    let raw = with_datastore(RawDatastoreConfig {
        max_connections: Some(20),
        min_connections: Some(2),
        acquire_timeout: Some("500ms".into()),
        idle_timeout: Some("5m".into()),
        max_lifetime: Some("1h".into()),
        ..RawDatastoreConfig::default()
    });
    let pool = ServerConfig::resolve(raw).unwrap().datastore.pool;

    assert_eq!(pool.max_connections, 20);
    assert_eq!(pool.min_connections, 2);
    assert_eq!(pool.acquire_timeout, Duration::from_millis(500));
    assert_eq!(pool.idle_timeout, Duration::from_secs(300));
    assert_eq!(pool.max_lifetime, Duration::from_secs(3600));
}

#[test]
fn resolve_datastore_invalid_pool_values() {
    let cases: [(RawDatastoreConfig, &str, &str, &str); 9] = [
        (
            RawDatastoreConfig {
                max_connections: Some(0),
                ..RawDatastoreConfig::default()
            },
            "datastore.max_connections",
            "0",
            "from 1 to 1000",
        ),
        (
            RawDatastoreConfig {
                max_connections: Some(5000),
                ..RawDatastoreConfig::default()
            },
            "datastore.max_connections",
            "5000",
            "from 1 to 1000",
        ),
        (
            RawDatastoreConfig {
                min_connections: Some(-1),
                ..RawDatastoreConfig::default()
            },
            "datastore.min_connections",
            "-1",
            "from 0 to 1000",
        ),
        (
            RawDatastoreConfig {
                max_connections: Some(4),
                min_connections: Some(5),
                ..RawDatastoreConfig::default()
            },
            "datastore.min_connections",
            "5",
            "at most datastore.max_connections (4)",
        ),
        (
            RawDatastoreConfig {
                acquire_timeout: Some("0s".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.acquire_timeout",
            "0s",
            "from 100ms to 10m",
        ),
        (
            RawDatastoreConfig {
                acquire_timeout: Some("soon".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.acquire_timeout",
            "soon",
            "such as \"500ms\"",
        ),
        (
            RawDatastoreConfig {
                idle_timeout: Some("0s".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.idle_timeout",
            "0s",
            "from 1s to 1day",
        ),
        (
            RawDatastoreConfig {
                max_lifetime: Some("2days".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.max_lifetime",
            "2days",
            "from 1s to 1day",
        ),
        (
            RawDatastoreConfig {
                url: Some("sqlite:///tmp/x.db".into()),
                ssl_mode: Some("require".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.ssl_mode",
            "require",
            "TLS applies only to postgres:// and mysql://",
        ),
    ];
    for (datastore, key, value, expected) in cases {
        let keys = invalid_keys(with_datastore(datastore));
        assert_eq!(keys_named(&keys), [key], "{keys:?}");
        assert_eq!(keys[0].value.as_deref(), Some(value), "{keys:?}");
        assert!(keys[0].expected.contains(expected), "{keys:?}");
    }
}

#[test]
fn resolve_datastore_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pem_file(dir.path(), "ca.pem", "CERTIFICATE");
    let cert = pem_file(dir.path(), "client.pem", "CERTIFICATE");
    let key = pem_file(dir.path(), "client.key", "PRIVATE KEY");
    let raw = with_datastore(postgres(RawDatastoreConfig {
        ssl_mode: Some("Verify-CA".into()),
        ssl_ca_file: Some(ca.clone()),
        ssl_cert_file: Some(cert.clone()),
        ssl_key_file: Some(key.clone()),
        ..RawDatastoreConfig::default()
    }));
    let tls = ServerConfig::resolve(raw).unwrap().datastore.tls;

    assert_eq!(tls.mode.as_deref(), Some("verify-ca"));
    assert_eq!(tls.ca_file, Some(ca));
    assert_eq!(tls.cert_file, Some(cert));
    assert_eq!(tls.key_file, Some(key));
}

#[test]
fn resolve_datastore_ca_file_alone_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pem_file(dir.path(), "ca.pem", "CERTIFICATE");
    let cases = [
        ("postgres://tessera@db/tessera", "verify-full"),
        ("mysql://tessera@db/tessera", "VERIFY_IDENTITY"),
    ];
    for (url, expected) in cases {
        let raw = with_datastore(RawDatastoreConfig {
            url: Some(url.into()),
            ssl_ca_file: Some(ca.clone()),
            ..RawDatastoreConfig::default()
        });
        let tls = ServerConfig::resolve(raw).unwrap().datastore.tls;
        assert_eq!(tls.mode.as_deref(), Some(expected), "{url}");
    }
}

#[test]
fn resolve_datastore_invalid_tls_values() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pem_file(dir.path(), "ca.pem", "CERTIFICATE");
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, [0x30, 0x82]).unwrap();
    let missing = dir.path().join("missing.pem");
    let cases: [(RawDatastoreConfig, &str, Option<String>, &str); 6] = [
        (
            RawDatastoreConfig {
                url: Some("mysql://root@db/tessera".into()),
                ssl_mode: Some("verify-full".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.ssl_mode",
            Some("verify-full".into()),
            "one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY for a mysql URL",
        ),
        (
            postgres(RawDatastoreConfig {
                ssl_mode: Some("disable".into()),
                ssl_ca_file: Some(ca.clone()),
                ..RawDatastoreConfig::default()
            }),
            "datastore.ssl_mode",
            Some("disable".into()),
            "a mode that uses TLS",
        ),
        (
            postgres(RawDatastoreConfig {
                ssl_ca_file: Some(missing.clone()),
                ..RawDatastoreConfig::default()
            }),
            "datastore.ssl_ca_file",
            Some(missing.display().to_string()),
            "a readable PEM file",
        ),
        (
            postgres(RawDatastoreConfig {
                ssl_ca_file: Some(not_pem.clone()),
                ..RawDatastoreConfig::default()
            }),
            "datastore.ssl_ca_file",
            Some(not_pem.display().to_string()),
            "no -----BEGIN",
        ),
        (
            postgres(RawDatastoreConfig {
                ssl_cert_file: Some(ca.clone()),
                ..RawDatastoreConfig::default()
            }),
            "datastore.ssl_key_file",
            None,
            "because ssl_cert_file is set",
        ),
        (
            RawDatastoreConfig {
                url: Some("postgres://tessera:s3cret@db/tessera?sslmode=require".into()),
                ssl_mode: Some("verify-full".into()),
                ..RawDatastoreConfig::default()
            },
            "datastore.ssl_mode",
            Some("verify-full".into()),
            "datastore.url already sets",
        ),
    ];
    for (datastore, key, value, expected) in cases {
        let keys = invalid_keys(with_datastore(datastore));
        assert_eq!(keys_named(&keys), [key], "{keys:?}");
        assert_eq!(keys[0].value, value, "{keys:?}");
        assert!(keys[0].expected.contains(expected), "{keys:?}");
    }
}

#[test]
fn datastore_password_never_shown() {
    let raw = with_datastore(postgres(RawDatastoreConfig {
        ssl_mode: Some("sometimes".into()),
        ..RawDatastoreConfig::default()
    }));
    let message = ConfigError::Invalid(invalid_keys(raw)).to_string();
    assert!(message.contains("datastore.ssl_mode"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");

    let raw = with_datastore(postgres(RawDatastoreConfig::default()));
    let raw_debug = format!("{raw:?}");
    assert!(
        raw_debug.contains("tessera:***@db.example.org"),
        "{raw_debug}"
    );
    assert!(!raw_debug.contains("s3cret"), "{raw_debug}");

    let config = ServerConfig::resolve(raw).unwrap();
    let debug = format!("{config:?}");
    assert!(debug.contains("tessera:***@db.example.org"), "{debug}");
    assert!(!debug.contains("s3cret"), "{debug}");
}
