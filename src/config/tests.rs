use super::*;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn shipped_config_toml_equals_code_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let cfg = Config::load_with_env(Some(&path), no_env()).expect("config.toml loads");
    assert_eq!(cfg, Config::default());
}

#[test]
fn env_overrides_nested_and_top_level_keys() {
    let env = vec![
        (
            "PLAYPULSE_KAFKA__BROKERS".to_string(),
            "127.0.0.1:9092".to_string(),
        ),
        ("PLAYPULSE_INGEST__BATCH_SIZE".to_string(), "77".to_string()),
        ("PLAYPULSE_DATA_DIR".to_string(), "/tmp/pp".to_string()),
        ("OTHER".to_string(), "x".to_string()),
    ];
    let cfg = Config::load_with_env(None, env).unwrap();
    assert_eq!(cfg.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(cfg.ingest.batch_size, 77);
    assert_eq!(cfg.data_dir, PathBuf::from("/tmp/pp"));
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[ingest]\nbatch_sise = 10\n").unwrap();
    let err = Config::load_with_env(Some(&p), no_env())
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_sise"), "{err}");
    let env = vec![("PLAYPULSE_KAFKA__BROKER".to_string(), "x".to_string())];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(
        err.contains("broker") && err.contains("PLAYPULSE_KAFKA__BROKER"),
        "{err}"
    );
}

#[test]
fn bad_values_are_rejected_with_key_value_and_fix() {
    let env = vec![("PLAYPULSE_INGEST__BATCH_SIZE".to_string(), "0".to_string())];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(
        err.contains("ingest.batch_size") && err.contains("1..="),
        "{err}"
    );
    let env = vec![(
        "PLAYPULSE_VALIDATION__MIN_TIMESTAMP".to_string(),
        "yesterday".to_string(),
    )];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(
        err.contains("validation.min_timestamp") && err.contains("yesterday"),
        "{err}"
    );
    let env = vec![(
        "PLAYPULSE_INGEST__BATCH_SIZE".to_string(),
        "many".to_string(),
    )];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(err.contains("batch_size"), "{err}");
    for bad in [
        "garbage",
        "host:notaport",
        "localhost:0",
        ":9092",
        "a:1,b",
        "h:99999",
    ] {
        let env = vec![("PLAYPULSE_KAFKA__BROKERS".to_string(), bad.to_string())];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            err.contains("kafka.brokers") && err.contains("PLAYPULSE_KAFKA__BROKERS"),
            "{bad}: {err}"
        );
    }
    for good in [
        "localhost:9092",
        "10.0.0.1:9092, b-2.kafka:19092",
        "[::1]:9092",
        "SSL://k:9093",
    ] {
        let env = vec![("PLAYPULSE_KAFKA__BROKERS".to_string(), good.to_string())];
        assert!(Config::load_with_env(None, env).is_ok(), "{good}");
    }
    let env = vec![(
        "PLAYPULSE_KAFKA__MAX_RECORD_BYTES".to_string(),
        "8388608".to_string(),
    )];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(
        err.contains("kafka.max_record_bytes") && err.contains("5 MiB"),
        "{err}"
    );
    for bad in ["0", "301"] {
        let env = vec![(
            "PLAYPULSE_ANALYTICS__ROLLUP_COMPACT_SECONDS".to_string(),
            bad.to_string(),
        )];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(
            err.contains("analytics.rollup_compact_seconds")
                && err.contains(bad)
                && err.contains("1..=300"),
            "{bad}: {err}"
        );
    }
    let env = vec![(
        "PLAYPULSE_INGEST__BACKGROUND".to_string(),
        "realtime".to_string(),
    )];
    let err = Config::load_with_env(None, env).unwrap_err().to_string();
    assert!(
        err.contains("background") && err.contains("realtime"),
        "{err}"
    );
    let env = vec![(
        "PLAYPULSE_INGEST__BACKGROUND".to_string(),
        "nice".to_string(),
    )];
    let cfg = Config::load_with_env(None, env).unwrap();
    assert_eq!(
        cfg.ingest.background,
        crate::domain::worker::Background::Nice
    );
}
