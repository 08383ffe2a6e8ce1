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

/// The config with `var` set to `value` in the environment.
fn with_env(var: &str, value: &str) -> Result<Config, String> {
    Config::load_with_env(None, vec![(var.to_string(), value.to_string())])
        .map_err(|e| e.to_string())
}

#[test]
fn bad_values_are_rejected_with_key_value_and_fix() {
    // (variable, value, what the error must name)
    let refused: &[(&str, &str, &[&str])] = &[
        (
            "PLAYPULSE_INGEST__BATCH_SIZE",
            "0",
            &["ingest.batch_size", "1..="],
        ),
        (
            "PLAYPULSE_VALIDATION__MIN_TIMESTAMP",
            "yesterday",
            &["validation.min_timestamp", "yesterday"],
        ),
        ("PLAYPULSE_INGEST__BATCH_SIZE", "many", &["batch_size"]),
        (
            "PLAYPULSE_KAFKA__MAX_RECORD_BYTES",
            "8388608",
            &["kafka.max_record_bytes", "5 MiB"],
        ),
        (
            "PLAYPULSE_ANALYTICS__ROLLUP_COMPACT_SECONDS",
            "0",
            &["analytics.rollup_compact_seconds", "0", "1..=300"],
        ),
        (
            "PLAYPULSE_ANALYTICS__ROLLUP_COMPACT_SECONDS",
            "301",
            &["analytics.rollup_compact_seconds", "301", "1..=300"],
        ),
        (
            "PLAYPULSE_INGEST__BACKGROUND",
            "realtime",
            &["background", "realtime"],
        ),
        (
            "PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE",
            "1.5",
            &["models.retrain_new_pairs_share", "1.5", "[0, 1]"],
        ),
        (
            "PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE",
            "-0.01",
            &["models.retrain_new_pairs_share", "-0.01", "[0, 1]"],
        ),
        (
            "PLAYPULSE_MODELS__FOLD_IN_THREADS",
            "257",
            &["models.fold_in_threads", "257", "0..=256"],
        ),
        (
            "PLAYPULSE_HTTP__THREADS",
            "0",
            &["http.threads", "0", "1..=64"],
        ),
        (
            "PLAYPULSE_HTTP__THREADS",
            "65",
            &["http.threads", "65", "1..=64"],
        ),
        (
            "PLAYPULSE_STORE__REWRITE_RATIO",
            "1.2",
            &["store.rewrite_ratio", "1.2", "1.5..=100"],
        ),
        (
            "PLAYPULSE_STORE__REWRITE_RATIO",
            "NaN",
            &["store.rewrite_ratio", "NaN"],
        ),
        (
            "PLAYPULSE_STORE__REWRITE_MIN_MB",
            "0",
            &["store.rewrite_min_mb", "0", "1..="],
        ),
        (
            "PLAYPULSE_MODELS__RETRAIN_NEW_PAIRS_SHARE",
            "NaN",
            &["models.retrain_new_pairs_share", "NaN"],
        ),
    ];
    let brokers = [
        "garbage",
        "host:notaport",
        "localhost:0",
        ":9092",
        "a:1,b",
        "h:99999",
    ];
    let brokers = brokers.map(|b| {
        let names: &[&str] = &["kafka.brokers", "PLAYPULSE_KAFKA__BROKERS"];
        ("PLAYPULSE_KAFKA__BROKERS", b, names)
    });
    for (var, value, names) in refused.iter().chain(&brokers) {
        let err = with_env(var, value).unwrap_err();
        assert!(
            names.iter().all(|n| err.contains(n)),
            "{var}={value}: {err}"
        );
    }
    for good in [
        "localhost:9092",
        "10.0.0.1:9092, b-2.kafka:19092",
        "[::1]:9092",
        "SSL://k:9093",
    ] {
        assert!(with_env("PLAYPULSE_KAFKA__BROKERS", good).is_ok(), "{good}");
    }
    let cfg = with_env("PLAYPULSE_INGEST__BACKGROUND", "nice").unwrap();
    assert_eq!(
        cfg.ingest.background,
        crate::domain::worker::Background::Nice
    );
}
