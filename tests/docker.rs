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

/// Every `playpulse_*` family the daemon's /metrics declares (from its source).
fn metric_families() -> Vec<String> {
    let src = std::fs::read_to_string(format!("{ROOT}/src/http/metrics.rs")).unwrap();
    let re = regex::Regex::new(r#""(playpulse_[a-z_]+)""#).unwrap();
    re.captures_iter(&src).map(|c| c[1].to_string()).collect()
}

/// The `playpulse_*` series an expression reads, as families (counters lose
/// `_total`, histograms `_bucket`).
fn series_in(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"playpulse_[a-z_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let s = m.as_str();
            s.strip_suffix("_total")
                .or_else(|| s.strip_suffix("_bucket"))
                .unwrap_or(s)
                .to_string()
        })
        .collect()
}

#[test]
fn prometheus_rules_and_grafana_dashboard_read_metrics_the_daemon_serves() {
    let families = metric_families();
    assert!(families.len() > 20, "{families:?}");
    let compose = std::fs::read_to_string(format!("{ROOT}/docker/compose.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&compose).unwrap();
    let services = &docs[0]["services"];
    for s in ["prometheus", "grafana"] {
        assert!(services[s]["image"].as_str().is_some(), "{s}");
    }
    // Prometheus scrapes the service by a name the daemon answers to.
    let prom = YamlLoader::load_from_str(
        &std::fs::read_to_string(format!("{ROOT}/docker/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let target = prom[0]["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    let host = target.split(':').next().unwrap();
    let allowed = services["playpulse"]["environment"]["PLAYPULSE_HTTP__ALLOWED_HOSTS"]
        .as_str()
        .unwrap();
    assert!(
        allowed.contains(&format!("\"{host}\"")),
        "{allowed} lacks {host}"
    );
    // Every rule is well formed and reads only families /metrics has.
    let rules = YamlLoader::load_from_str(
        &std::fs::read_to_string(format!("{ROOT}/docker/alerts.yml")).unwrap(),
    )
    .unwrap();
    let list = rules[0]["groups"][0]["rules"].as_vec().unwrap();
    assert!(list.len() >= 5);
    for r in list {
        let name = r["alert"].as_str().unwrap();
        let expr = r["expr"].as_str().unwrap();
        assert!(r["annotations"]["summary"].as_str().is_some(), "{name}");
        for s in series_in(expr) {
            assert!(
                families.contains(&s),
                "{name} reads {s}, which /metrics does not serve"
            );
        }
    }
    // The dashboard: valid JSON, every panel's query on served families.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/docker/grafana/playpulse.json")).unwrap(),
    )
    .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            for s in series_in(t["expr"].as_str().unwrap()) {
                assert!(families.contains(&s), "panel {} reads {s}", p["title"]);
            }
        }
    }
    for f in ["datasource.yaml", "dashboards.yaml"] {
        let text = std::fs::read_to_string(format!("{ROOT}/docker/grafana/{f}")).unwrap();
        assert!(YamlLoader::load_from_str(&text).is_ok(), "{f}");
    }
}
