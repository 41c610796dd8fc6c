//! Statements too big to plan in reasonable time, sent as raw protocol
//! messages to the real binary. A target list longer than PostgreSQL's is
//! refused as PostgreSQL refuses it (54011); a statement with too many
//! expressions, or nested too deep, with 54000. Statements under the
//! limits work, a Parse with PostgreSQL's 65535 parameters is answered, the
//! session goes on after a refusal, and while heavy statements plan, other
//! sessions answer: planning no longer runs on the async workers.
//!
//! Times are bounded generously (the machine is loaded and the build is a
//! debug build): the bounds tell "answered" from "stalled for minutes"
//! (`select 0, …, 65534` took 250 s before), never a speed.

mod common;

use std::time::{Duration, Instant};

use common::wire::{bind, describe, errors, execute, parse, query, sync, tags, Raw};
use common::{scratch_dir, TestServer};

/// Parse of the unnamed statement (no declared types), Describe of it, Sync.
fn parse_describe(sql: &str) -> Vec<u8> {
    [parse("", sql.as_bytes(), &[]), describe(), sync()].concat()
}

/// Bind of the unnamed statement with text `params`, Execute, Sync.
fn bind_execute(params: &[&[u8]]) -> Vec<u8> {
    let params: Vec<Option<&[u8]>> = params.iter().copied().map(Some).collect();
    [bind("", &[], &params, &[]), execute(0), sync()].concat()
}

/// `first, first + 1, …` up to `n` items, each made by `item`.
fn list(n: usize, item: impl Fn(usize) -> String) -> String {
    (0..n).map(item).collect::<Vec<_>>().join(", ")
}

/// `SELECT 1 + 1 + …` of `n` terms: nested `n` deep.
fn sum(n: usize) -> String {
    format!("SELECT {}", vec!["1"; n].join(" + "))
}

/// An allowed statement that takes a while to plan (over a second on a
/// debug build): about the deepest sum allowed.
fn heavy() -> String {
    sum(990)
}

/// The tester's statement: refused as PostgreSQL refuses it, at once
/// rather than after 250 s of planning; the session goes on. The same for
/// a Parse of `SELECT $1, …, $65535`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_list_longer_than_postgresql_allows_is_refused_with_54011() {
    let dir = scratch_dir("limits-wide");
    let server = TestServer::start(&dir);
    let mut raw = Raw::connect(&server).await;
    let wide = format!("select {}", list(65_535, |i| i.to_string()));
    let started = Instant::now();
    let msgs = raw.exchange(&query(&wide)).await;
    let took = started.elapsed();
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(
        errors(&msgs),
        [(
            "54011".to_owned(),
            "target lists can have at most 1664 entries".to_owned()
        )]
    );
    // Only parsing and one walk of the statement: well under this bound.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    raw.select_1_works().await;

    let wide_params = format!("SELECT {}", list(65_535, |i| format!("${}", i + 1)));
    let msgs = raw.exchange(&parse_describe(&wide_params)).await;
    assert_eq!(tags(&msgs), "EZ");
    assert_eq!(errors(&msgs)[0].0, "54011");
    raw.select_1_works().await;
}

/// A Parse with PostgreSQL's most parameters, 65535, in an `IN` list (as
/// drivers expand a list): described with its 65535 parameters, bound and
/// executed; then the session runs `SELECT 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_with_65535_parameters_is_answered() {
    let dir = scratch_dir("limits-params");
    let server = TestServer::start(&dir);
    let mut raw = Raw::connect(&server).await;
    let sql = format!(
        "SELECT 7 WHERE 3 IN ({})",
        list(65_535, |i| format!("${}::bigint", i + 1))
    );
    let msgs = raw.exchange(&parse_describe(&sql)).await;
    assert_eq!(tags(&msgs), "1tTZ", "{:?}", errors(&msgs));
    assert_eq!(msgs[1].count(), 65_535, "parameters described");

    let values: Vec<String> = (0..65_535).map(|i| i.to_string()).collect();
    let params: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
    let msgs = raw.exchange(&bind_execute(&params)).await;
    assert_eq!(tags(&msgs), "2DCZ", "{:?}", errors(&msgs));
    assert_eq!(msgs[1].first().as_deref(), Some("7"));
    raw.select_1_works().await;
}

/// Statements exactly at each limit work; one step past it is refused
/// (54011 for the target list, 54000 naming the numbers otherwise), and
/// the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_at_the_limits_work_and_one_past_them_are_refused() {
    let dir = scratch_dir("limits-edge");
    let server = TestServer::start(&dir);
    let mut raw = Raw::connect(&server).await;

    // 1664 entries: a row of 1664 columns.
    let msgs = raw
        .exchange(&query(&format!("SELECT {}", list(1664, |i| i.to_string()))))
        .await;
    assert_eq!(tags(&msgs), "TDCZ", "{:?}", errors(&msgs));
    assert_eq!(msgs[0].count(), 1664);
    let msgs = raw
        .exchange(&query(&format!("SELECT {}", list(1665, |i| i.to_string()))))
        .await;
    assert_eq!(errors(&msgs)[0].0, "54011");

    // 150000 expressions: the projection `1`, the IN, its `1`, the items.
    let in_list = |n| format!("SELECT 1 WHERE 1 IN ({})", list(n, |i| i.to_string()));
    let msgs = raw.exchange(&query(&in_list(149_997))).await;
    assert_eq!(tags(&msgs), "TDCZ", "{:?}", errors(&msgs));
    let msgs = raw.exchange(&query(&in_list(149_998))).await;
    assert_eq!(
        errors(&msgs),
        [(
            "54000".to_owned(),
            "statement too complex: 150001 expressions, the limit is 150000".to_owned()
        )]
    );
    raw.select_1_works().await;

    // Nested 990 deep (`1 + 1 + …` of 990 terms), by both protocols: a
    // 400-term sum once overflowed a stack and took the server down.
    let msgs = raw.exchange(&query(&sum(990))).await;
    assert_eq!(tags(&msgs), "TDCZ", "{:?}", errors(&msgs));
    assert_eq!(msgs[1].first().as_deref(), Some("990"));
    let msgs = raw.exchange(&parse_describe(&sum(990))).await;
    assert_eq!(tags(&msgs), "1tTZ", "{:?}", errors(&msgs));
    let msgs = raw.exchange(&bind_execute(&[])).await;
    assert_eq!(tags(&msgs), "2DCZ", "{:?}", errors(&msgs));
    let nested = "statement too complex: expressions nested too deep (their depths add up to more than 1000000), the limit is 1000000";
    for msgs in [
        raw.exchange(&query(&sum(1100))).await,
        raw.exchange(&parse_describe(&sum(100_000))).await,
    ] {
        assert_eq!(errors(&msgs), [("54000".to_owned(), nested.to_owned())]);
    }
    raw.select_1_works().await;
}

/// Three heavy statements plan at once, more than the server has async
/// workers (one per core); meanwhile a fourth session's `SELECT 1` answers
/// before any of them is done. Before, planning ran on the workers and held
/// them: every session waited for the heavy statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sessions_answer_while_heavy_statements_plan() {
    let dir = scratch_dir("limits-stall");
    let server = TestServer::start(&dir);
    let mut light = Raw::connect(&server).await;
    let mut heavies = Vec::new();
    for _ in 0..3 {
        heavies.push(Raw::connect(&server).await);
    }
    let sql = heavy();
    let running: Vec<_> = heavies
        .into_iter()
        .map(|mut raw| {
            let sql = sql.clone();
            tokio::spawn(async move {
                let msgs = raw.exchange(&query(&sql)).await;
                (Instant::now(), tags(&msgs), errors(&msgs))
            })
        })
        .collect();
    // Let the heavy statements reach the server and start planning.
    tokio::time::sleep(Duration::from_millis(100)).await;
    light.select_1_works().await;
    let answered = Instant::now();
    for task in running {
        let (done, tags, errors) = task.await.expect("heavy session");
        assert_eq!(tags, "TDCZ", "{errors:?}");
        assert!(
            done > answered,
            "a heavy statement was done before the light one answered"
        );
    }
    light.select_1_works().await;
}
