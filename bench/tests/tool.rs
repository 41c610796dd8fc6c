//! The benchmark tool runs as README.md says, on few events: every query in
//! each mode, including the tool's own checks that every bid was counted
//! exactly once. The figures themselves are read by people, never asserted.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_millrace-bench"))
        .args(args)
        .output()
        .expect("run millrace-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "millrace-bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn scratch(name: &str) -> String {
    let dir =
        std::env::temp_dir().join(format!("millrace-bench-test-{name}-{}", std::process::id()));
    dir.to_string_lossy().into_owned()
}

/// The table rows printed at the end, one per query.
fn assert_rows_for_every_query(stdout: &str) {
    for q in ["q0", "q1", "q2", "q5", "q7", "tumble"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(q) && l.contains("MiB")),
            "no figures for {q} in:\n{stdout}"
        );
    }
}

#[test]
fn engine_mode_runs_every_query() {
    let dir = scratch("engine");
    let stdout = run(&["engine", "--events", "30000", "--scratch", &dir]);
    assert_rows_for_every_query(&stdout);
    // q5's hot items and q7's winning bids come from real windows.
    assert!(
        stdout.contains("q5: SELECT count(*) FROM q5_bids"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn kafka_mode_runs_every_query_and_measures_freshness() {
    let dir = scratch("kafka");
    let stdout = run(&[
        "kafka",
        "--events",
        "20000",
        "--partitions",
        "2",
        "--rate",
        "1000",
        "--freshness-seconds",
        "2",
        "--scratch",
        &dir,
    ]);
    assert_rows_for_every_query(&stdout);
    for q in ["q0", "tumble"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(q) && l.contains("p99")),
            "no freshness figures for {q} in:\n{stdout}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decode_mode_compares_with_serde_json() {
    let stdout = run(&["decode", "--events", "20000"]);
    assert!(
        stdout.contains("serde_json into the Bid struct"),
        "{stdout}"
    );
    assert!(stdout.contains("Millrace decoder"), "{stdout}");
}
