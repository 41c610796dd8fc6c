//! `docker/`: no Docker engine runs on our machines, so the files are
//! checked here: the compose file and Grafana provisioning parse as YAML
//! (Python's PyYAML), the dashboard as JSON, and the demo's SQL with
//! Millrace's own parser.

use std::path::PathBuf;
use std::process::Command;

fn docker_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docker")
}

#[test]
fn compose_and_grafana_files_parse() {
    let dir = docker_dir();
    let yaml_files = [
        "docker-compose.yml",
        "grafana/provisioning/datasources/millrace.yml",
        "grafana/provisioning/dashboards/millrace.yml",
    ];
    let probe = Command::new("python3").args(["-c", "import yaml"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        panic!("PyYAML is required for this test: apt-get install python3-yaml");
    }
    for f in yaml_files {
        let path = dir.join(f);
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); assert isinstance(d, dict), 'not a mapping'",
            ])
            .arg(&path)
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The services the issue asks for are all there.
    let compose = std::fs::read_to_string(dir.join("docker-compose.yml")).expect("compose");
    for service in ["kafka:", "millrace:", "generator:", "grafana:"] {
        assert!(
            compose.contains(&format!("\n  {service}")),
            "no service {service}"
        );
    }
    let dashboard = std::fs::read_to_string(dir.join("grafana/dashboards/millrace-demo.json"))
        .expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
}

#[test]
fn demo_sql_parses() {
    let sql = std::fs::read_to_string(docker_dir().join("init.sql")).expect("init.sql");
    let stmts = millrace_planner::statement::parse(&sql).expect("init.sql parses");
    assert_eq!(stmts.len(), 3);
}
