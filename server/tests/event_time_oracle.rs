//! Event time against an oracle: random, out-of-order event streams are
//! inserted in random batches into a table with a WATERMARK, and
//!
//! - an `EMIT ON WINDOW CLOSE` view must equal a batch GROUP BY, computed
//!   here, over the on-time events of the windows the watermark closed;
//! - the continuous view over the same windows must equal the batch GROUP
//!   BY over all on-time events;
//! - the same holds for session windows (`SESSION` per auction, the gap
//!   the window size), whose sessions the oracle computes by sorting;
//! - a crash (kill -9) and restart in the middle of a case changes neither.
//!
//! The oracle decides lateness itself from the documented rule (a row is
//! late when its event time is below the watermark at its INSERT; the
//! watermark is the largest on-time event time so far minus the delay), so
//! the server's late-row filter is checked too, not trusted.

mod common;

use std::collections::BTreeMap;

use common::{scratch_dir, TestServer};

/// Number of random streams.
const CASES: usize = 200;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random case: the event stream in insert batches and its settings.
struct Case {
    /// Event time in milliseconds after the base, auction, price.
    batches: Vec<Vec<(i64, i64, i64)>>,
    delay_ms: i64,
    size_ms: i64,
}

fn random_case(rng: &mut Rng) -> Case {
    let delay_ms = [0, 500, 2_000, 5_000][rng.below(4) as usize];
    let size_ms = [1_000, 3_000, 10_000][rng.below(3) as usize];
    let events = 20 + rng.below(180) as i64;
    let mut batches = Vec::new();
    let mut batch = Vec::new();
    let mut front = 0i64;
    for _ in 0..events {
        // Time mostly moves forward; a third of the events are out of
        // order by up to 8 s, some of them late.
        front += rng.below(400) as i64;
        let t = if rng.below(3) == 0 {
            (front - rng.below(8_000) as i64).max(0)
        } else {
            front
        };
        batch.push((t, rng.below(4) as i64, rng.below(1_000) as i64));
        if rng.below(5) == 0 {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    Case {
        batches,
        delay_ms,
        size_ms,
    }
}

/// (window start ms, auction) → (count, sum, max).
type Groups = BTreeMap<(i64, i64), (i64, i64, i64)>;

/// The on-time events and the final watermark, by the documented rule.
fn oracle(case: &Case) -> (Vec<(i64, i64, i64)>, Option<i64>) {
    let mut wm: Option<i64> = None;
    let mut max: Option<i64> = None;
    let mut on_time = Vec::new();
    for b in &case.batches {
        for e in b {
            if wm.is_none_or(|w| e.0 >= w) {
                on_time.push(*e);
                max = Some(max.map_or(e.0, |m: i64| m.max(e.0)));
            }
        }
        if let Some(m) = max {
            let candidate = m - case.delay_ms;
            wm = Some(wm.map_or(candidate, |w| w.max(candidate)));
        }
    }
    (on_time, wm)
}

fn group(events: &[(i64, i64, i64)], size_ms: i64) -> Groups {
    let mut g = Groups::new();
    for (t, auction, price) in events {
        let start = t.div_euclid(size_ms) * size_ms;
        let e = g.entry((start, *auction)).or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += price;
        e.2 = e.2.max(*price);
    }
    g
}

/// One session: (start ms, auction), end ms, (count, sum, max).
type Session = ((i64, i64), i64, (i64, i64, i64));

/// Sessions per auction, each with its end (last event + gap).
fn sessions(events: &[(i64, i64, i64)], gap_ms: i64) -> Vec<Session> {
    let mut by_auction: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (t, auction, price) in events {
        by_auction.entry(*auction).or_default().push((*t, *price));
    }
    let mut out = Vec::new();
    for (auction, mut evs) in by_auction {
        evs.sort();
        let mut i = 0;
        while i < evs.len() {
            let start = evs[i].0;
            let mut j = i + 1;
            while j < evs.len() && evs[j].0 - evs[j - 1].0 < gap_ms {
                j += 1;
            }
            let prices = evs[i..j].iter().map(|e| e.1);
            let agg = (
                (j - i) as i64,
                prices.clone().sum(),
                prices.max().unwrap_or(i64::MIN),
            );
            out.push(((start, auction), evs[j - 1].0 + gap_ms, agg));
            i = j;
        }
    }
    out
}

fn ts(ms: i64) -> String {
    let base = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("base date");
    let t = base + chrono::Duration::milliseconds(ms);
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

fn as_rows(g: &Groups) -> Vec<String> {
    let mut v: Vec<String> = g
        .iter()
        .map(|((start, auction), (n, sum, max))| {
            format!("{}|{auction}|{n}|{sum}|{max}", ts(*start))
        })
        .collect();
    v.sort();
    v
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| {
            let start: chrono::NaiveDateTime = r.get(0);
            let auction: i64 = r.get(1);
            let n: i64 = r.get(2);
            let sum: i64 = r.get(3);
            let max: i64 = r.get(4);
            format!(
                "{}|{auction}|{n}|{sum}|{max}",
                start.format("%Y-%m-%d %H:%M:%S%.3f")
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_close_views_equal_a_batch_group_by_over_on_time_events() {
    let dir = scratch_dir("event-time-oracle");
    let mut server = TestServer::start(&dir);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut checked_windows = 0usize;
    let mut checked_sessions = 0usize;
    let mut late_total = 0usize;
    for case_no in 0..CASES {
        let case = random_case(&mut rng);
        let c = server.connect().await;
        let t = format!("events_{case_no}");
        c.batch_execute(&format!(
            "CREATE TABLE {t} (auction BIGINT, price BIGINT, ts TIMESTAMP,
               WATERMARK FOR ts AS ts - INTERVAL '{} milliseconds')",
            case.delay_ms
        ))
        .await
        .unwrap();
        let select = format!(
            "SELECT window_start, auction, count(*) AS n, sum(price) AS total, max(price) AS top
             FROM TUMBLE({t}, ts, INTERVAL '{} milliseconds') GROUP BY window_start, auction",
            case.size_ms
        );
        let session_select = format!(
            "SELECT window_start, auction, count(*) AS n, sum(price) AS total, max(price) AS top
             FROM SESSION({t}, ts, INTERVAL '{} milliseconds', auction)
             GROUP BY window_start, window_end, auction",
            case.size_ms
        );
        c.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW closed_{case_no} AS {select} EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW live_{case_no} AS {select};
             CREATE MATERIALIZED VIEW closed_sessions_{case_no} AS {session_select} EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW live_sessions_{case_no} AS {session_select}"
        ))
        .await
        .unwrap();
        // Every fifth case is killed and restarted halfway through.
        let crash_at = (case_no % 5 == 4).then_some(case.batches.len() / 2);
        for (i, b) in case.batches.iter().enumerate() {
            if crash_at == Some(i) {
                server.kill9();
                server = TestServer::start(&dir);
            }
            let c = server.connect().await;
            let values: Vec<String> = b
                .iter()
                .map(|(t, a, p)| format!("({a}, {p}, TIMESTAMP '{}')", ts(*t)))
                .collect();
            c.batch_execute(&format!("INSERT INTO {t} VALUES {}", values.join(", ")))
                .await
                .unwrap();
        }
        let (on_time, wm) = oracle(&case);
        late_total += case.batches.iter().map(Vec::len).sum::<usize>() - on_time.len();
        let all = group(&on_time, case.size_ms);
        let closed: Groups = all
            .iter()
            .filter(|((start, _), _)| wm.is_some_and(|w| start + case.size_ms <= w))
            .map(|(k, v)| (*k, *v))
            .collect();
        checked_windows += closed.len();
        let c = server.connect().await;
        assert_eq!(
            rows(&c, &format!("SELECT * FROM closed_{case_no}")).await,
            as_rows(&closed),
            "case {case_no} (delay {} ms, size {} ms): EMIT ON WINDOW CLOSE view",
            case.delay_ms,
            case.size_ms
        );
        assert_eq!(
            rows(&c, &format!("SELECT * FROM live_{case_no}")).await,
            as_rows(&all),
            "case {case_no}: continuous view"
        );
        let all_sessions = sessions(&on_time, case.size_ms);
        let closed_sessions: Groups = all_sessions
            .iter()
            .filter(|(_, end, _)| wm.is_some_and(|w| *end <= w))
            .map(|(k, _, v)| (*k, *v))
            .collect();
        checked_sessions += closed_sessions.len();
        assert_eq!(
            rows(&c, &format!("SELECT * FROM closed_sessions_{case_no}")).await,
            as_rows(&closed_sessions),
            "case {case_no} (delay {} ms, gap {} ms): EMIT ON WINDOW CLOSE session view",
            case.delay_ms,
            case.size_ms
        );
        let live_sessions: Groups = all_sessions.iter().map(|(k, _, v)| (*k, *v)).collect();
        assert_eq!(
            rows(&c, &format!("SELECT * FROM live_sessions_{case_no}")).await,
            as_rows(&live_sessions),
            "case {case_no}: continuous session view"
        );
        let late: i64 = c
            .query_one(
                "SELECT late_rows FROM millrace_catalog.watermarks WHERE relation = $1",
                &[&t],
            )
            .await
            .unwrap()
            .get(0);
        let expected_late = case.batches.iter().map(Vec::len).sum::<usize>() - on_time.len();
        assert_eq!(late as usize, expected_late, "case {case_no}: late rows");
    }
    eprintln!(
        "{CASES} random streams, {checked_windows} closed windows, {checked_sessions} closed sessions and {late_total} late rows checked against the oracle"
    );
    server.stop();
}
