//! Runs `sql-tests/*.slt` against the real `millrace` binary over pgwire,
//! one fresh server and data directory per file, and the restart scenarios
//! in `sql-tests/restart/*/`: the files of a scenario run in name order
//! against one data directory, with the server killed between them
//! (`kill -9` after a file whose name contains "kill", SIGTERM otherwise).

mod common;

use std::path::{Path, PathBuf};

use common::kafka::TestBroker;
use common::{run_slt, run_slt_with_vars, scratch_dir, TestServer};

fn sql_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-tests")
}

fn slt_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "slt"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn filter_matches(path: &Path) -> bool {
    match std::env::var("SLT_FILTER") {
        Ok(f) => path.to_string_lossy().contains(&f),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() {
    let files: Vec<PathBuf> = slt_files(&sql_tests_dir())
        .into_iter()
        .filter(|p| filter_matches(p))
        .collect();
    assert!(
        !files.is_empty() || std::env::var("SLT_FILTER").is_ok(),
        "no .slt files found"
    );
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let dir = scratch_dir(&format!("slt-{name}"));
        let server = TestServer::start(&dir);
        match run_slt(&server, file).await {
            Ok(()) => eprintln!("ok   {}", file.display()),
            Err(e) => {
                eprintln!("FAIL {}\n{e}", file.display());
                failures.push(format!("{}: {e}", file.display()));
            }
        }
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "{} .slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `sql-tests/kafka/*.slt`: sources over a real broker (tansu) started
/// here. Files produce their messages with `system ok` and
/// `$PRODUCE topic < messages` (sql-tests/kafka/produce.py, a real
/// librdkafka client) and name the broker `${BROKER}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sql_logic_tests() {
    let dir = sql_tests_dir().join("kafka");
    let files: Vec<PathBuf> = slt_files(&dir)
        .into_iter()
        .filter(|p| filter_matches(p))
        .collect();
    if files.is_empty() {
        return;
    }
    let broker_dir = scratch_dir("slt-kafka-broker");
    let broker = TestBroker::start(&broker_dir);
    let produce = format!(
        "python3 {} {}",
        dir.join("produce.py").display(),
        broker.addr
    );
    let vars = vec![
        ("BROKER".to_string(), broker.addr.clone()),
        ("PRODUCE".to_string(), produce),
    ];
    let mut failures = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let data = scratch_dir(&format!("slt-kafka-{name}"));
        let server = TestServer::start(&data);
        match run_slt_with_vars(&server, file, &vars).await {
            Ok(()) => eprintln!("ok   {}", file.display()),
            Err(e) => {
                eprintln!("FAIL {}\n{e}", file.display());
                failures.push(format!("{}: {e}", file.display()));
            }
        }
        drop(server);
        let _ = std::fs::remove_dir_all(&data);
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&broker_dir);
    assert!(
        failures.is_empty(),
        "{} Kafka .slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_scenarios() {
    let root = sql_tests_dir().join("restart");
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    scenarios.sort();
    scenarios.retain(|p| filter_matches(p));
    let mut failures = Vec::new();
    for scenario in &scenarios {
        let name = scenario
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let dir = scratch_dir(&format!("restart-{name}"));
        let files = slt_files(scenario);
        let mut server = Some(TestServer::start(&dir));
        for (i, file) in files.iter().enumerate() {
            let s = server.take().expect("server running");
            if let Err(e) = run_slt(&s, file).await {
                eprintln!("FAIL {}\n{e}", file.display());
                failures.push(format!("{}: {e}", file.display()));
                break;
            }
            eprintln!("ok   {}", file.display());
            if i + 1 < files.len() {
                let fname = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                if fname.contains("kill") {
                    s.kill9();
                } else {
                    let code = s.stop();
                    assert_eq!(code, Some(0), "millrace did not exit cleanly on SIGTERM");
                }
                server = Some(TestServer::start(&dir));
            } else {
                server = Some(s);
            }
        }
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        failures.is_empty(),
        "{} restart step(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
