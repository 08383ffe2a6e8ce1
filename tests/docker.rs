//! The docker files cannot be run here (no engine): check they are well formed
//! and wired to what the daemon reads.

use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn compose_file_is_valid_yaml_with_kraft_kafka_and_playpulse() {
    let text = std::fs::read_to_string(format!("{ROOT}/docker/compose.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("compose.yaml is valid YAML");
    let services = &docs[0]["services"];
    let kafka = &services["kafka"];
    assert!(kafka["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    assert_eq!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller")
    );
    let pp = &services["playpulse"];
    assert_eq!(
        pp["build"]["dockerfile"].as_str(),
        Some("docker/Dockerfile")
    );
    let brokers = pp["environment"]["PLAYPULSE_KAFKA__BROKERS"]
        .as_str()
        .unwrap();
    // The daemon must reach the broker on a listener the broker advertises.
    let advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap();
    assert!(
        advertised.contains(&format!("//{brokers}")),
        "{brokers} not in {advertised}"
    );
    // Every environment override names a real config key.
    let cfg = playpulse::config::Config::load_with_env(
        None,
        match &pp["environment"] {
            Yaml::Hash(h) => h
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_string(),
                        v.as_str().unwrap_or("").to_string(),
                    )
                })
                .collect::<Vec<_>>(),
            other => panic!("environment must be a map: {other:?}"),
        },
    );
    assert!(cfg.is_ok(), "{cfg:?}");
    // The topics it creates are the ones the default config consumes.
    let create = services["topics"]["command"][0].as_str().unwrap();
    for kind in ["video", "users", "movies", "series", "music"] {
        assert!(create.contains(kind), "{kind}");
        assert_eq!(
            playpulse::config::Config::default()
                .kafka
                .topics
                .values()
                .filter(|t| **t == format!("playpulse.{kind}"))
                .count(),
            1
        );
    }
}

#[test]
fn dockerfile_builds_the_binary_and_runs_the_daemon() {
    let text = std::fs::read_to_string(format!("{ROOT}/docker/Dockerfile")).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        instructions[0].starts_with("FROM rust:"),
        "{:?}",
        instructions[0]
    );
    for dir in ["src", "actors", "benches"] {
        assert!(
            text.contains(&format!("COPY {dir} ./{dir}")),
            "{dir} must be copied: the crate needs it to build"
        );
    }
    assert!(text.contains("cargo build --release --locked --bin playpulse"));
    assert!(text.contains("ENTRYPOINT [\"playpulse\"]"));
    assert!(text.contains("CMD [\"run\", \"--config\", \"/etc/playpulse/config.toml\"]"));
}
