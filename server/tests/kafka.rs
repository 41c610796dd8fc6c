//! Kafka sources end to end: the real `millrace` binary consuming from a
//! real Kafka-protocol broker (tansu, started here on loopback), fed by a
//! real producer; and, for what a real broker cannot do on demand (going
//! down and coming back), librdkafka's mock cluster.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka::{TestBroker, TestProducer};
use common::{scratch_dir, TestServer};

/// One produced bid, as the ground truth remembers it.
#[derive(Clone, Copy)]
struct Bid {
    auction: i64,
    price: i64,
}

fn bid_json(i: u64, b: Bid) -> String {
    format!(
        r#"{{"auction": {}, "bidder": {}, "price": {}, "date_time": "2026-01-01 00:{:02}:{:02}"}}"#,
        b.auction,
        i % 97,
        b.price,
        (i / 60) % 60,
        i % 60
    )
}

fn create_bids_sql(topic: &str, bootstrap: &str) -> String {
    format!(
        "CREATE SOURCE bids (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP)
         INCLUDE partition AS part INCLUDE offset AS off
         WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{bootstrap}',
               scan.startup.mode = 'earliest')
         FORMAT PLAIN ENCODE JSON"
    )
}

const VIEWS: &str = "
    CREATE MATERIALIZED VIEW per_auction AS
      SELECT auction, count(*) AS n, sum(price) AS total, max(price) AS high
      FROM bids GROUP BY auction;
    CREATE MATERIALIZED VIEW per_window AS
      SELECT window_start, count(*) AS n, count(DISTINCT auction) AS auctions
      FROM TUMBLE(bids, date_time, INTERVAL '10 seconds') GROUP BY window_start;
    CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(price) AS total FROM bids;";

/// `auction -> (count, sum, max)` of `bids`.
fn truth(bids: &[Bid]) -> BTreeMap<i64, (i64, i64, i64)> {
    let mut t: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
    for b in bids {
        let e = t.entry(b.auction).or_insert((0, 0, i64::MIN));
        e.0 += 1;
        e.1 += b.price;
        e.2 = e.2.max(b.price);
    }
    t
}

async fn per_auction(client: &tokio_postgres::Client) -> BTreeMap<i64, (i64, i64, i64)> {
    client
        .query("SELECT auction, n, total, high FROM per_auction", &[])
        .await
        .expect("read per_auction")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get::<_, i64>(2), r.get(3))))
        .collect()
}

async fn flush(client: &tokio_postgres::Client) {
    client.batch_execute("FLUSH").await.expect("FLUSH");
}

/// Produces a known stream of bids (with some malformed messages) while
/// the server is killed with SIGKILL at random moments; after the last
/// restart and a FLUSH, every view must equal the ground truth computed
/// from the produced events: nothing lost, nothing counted twice.
///
/// In CI it runs 3 to 8 rounds, while the first 30,000 messages are
/// produced. `MILLRACE_CRASH_ROUNDS=100` runs exactly that many rounds,
/// the producer going on until the last (a long run, outside CI):
/// `MILLRACE_CRASH_ROUNDS=100 cargo test --workspace --test kafka kill9 -- --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_ingest_loses_and_duplicates_nothing() {
    let dir = scratch_dir("kafka-crash");
    let broker = TestBroker::start(&dir);
    let topic = "crash_bids";
    broker.create_topic(topic, 4).await;

    let produced: Arc<Mutex<Vec<Bid>>> = Arc::default();
    // The first TOTAL messages are produced; `stop`: no more after them.
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let malformed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    const TOTAL: u64 = 30_000;
    let long_run: Option<usize> = std::env::var("MILLRACE_CRASH_ROUNDS").ok().map(|v| {
        v.parse()
            .expect("MILLRACE_CRASH_ROUNDS is a number of rounds")
    });
    let producer_thread = {
        let (produced, done, stop, malformed, sent, addr) = (
            produced.clone(),
            done.clone(),
            stop.clone(),
            malformed.clone(),
            sent.clone(),
            broker.addr.clone(),
        );
        std::thread::spawn(move || {
            let p = TestProducer::new(&addr);
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0.. {
                if i == TOTAL {
                    done.store(true, Ordering::SeqCst);
                }
                if i >= TOTAL && stop.load(Ordering::SeqCst) {
                    break;
                }
                sent.store(i + 1, Ordering::SeqCst);
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let partition = (seed % 4) as i32;
                if i % 997 == 0 {
                    p.send(topic, partition, None, b"{\"auction\": \"not a number\"}");
                    malformed.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let bid = Bid {
                    auction: (seed >> 8) as i64 % 50,
                    price: 1 + (seed >> 20) as i64 % 1000,
                };
                p.send(
                    topic,
                    partition,
                    Some(&bid.auction.to_be_bytes()),
                    bid_json(i, bid).as_bytes(),
                );
                produced.lock().unwrap().push(bid);
                if i % 500 == 499 {
                    p.flush();
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            p.flush();
        })
    };

    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = TestServer::start(&data);
    let client = server.connect().await;
    client
        .batch_execute(&create_bids_sql(topic, &broker.addr))
        .await
        .expect("CREATE SOURCE");
    client.batch_execute(VIEWS).await.expect("CREATE views");
    drop(client);

    let mut server = Some(server);
    let mut rounds = 0;
    let mut seed = 12345u64;
    let started = Instant::now();
    loop {
        let enough = match long_run {
            Some(n) => rounds >= n,
            None => rounds >= 8 || (rounds >= 3 && done.load(Ordering::SeqCst)),
        };
        if enough {
            break;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = 300 + (seed >> 33) % 1200;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.take().expect("server").kill9();
        rounds += 1;
        server = Some(TestServer::start(&data));
        if long_run.is_some() && rounds % 10 == 0 {
            eprintln!(
                "crash test: {rounds} rounds, {} messages sent, {:.0} s",
                sent.load(Ordering::SeqCst),
                started.elapsed().as_secs_f64()
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    producer_thread.join().expect("producer");
    let server = server.expect("server");
    let client = server.connect().await;
    flush(&client).await;

    let produced = produced.lock().unwrap().clone();
    let expected = truth(&produced);
    assert_eq!(
        per_auction(&client).await,
        expected,
        "per_auction after {rounds} kill -9 rounds"
    );
    let row = client
        .query_one("SELECT n, total FROM totals", &[])
        .await
        .unwrap();
    let (n, total): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(n as usize, produced.len());
    assert_eq!(total, produced.iter().map(|b| b.price).sum::<i64>());
    // The source's own rows: each (partition, offset) exactly once.
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (part, off)) FROM (SELECT part, off FROM bids) t",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (n, n));
    let windows = client
        .query_one("SELECT sum(n) FROM per_window", &[])
        .await
        .unwrap();
    assert_eq!(windows.get::<_, Option<i64>>(0), Some(n));
    let errors = client
        .query_one(
            "SELECT sum(decode_errors), sum(lag) FROM millrace_catalog.source_partitions WHERE source = 'bids'",
            &[],
        )
        .await
        .unwrap();
    // Decode errors count since the last start only; at least none is lost
    // in the views, which hold exactly the well-formed messages.
    assert!(
        errors.get::<_, Option<i64>>(0).unwrap_or(0) <= malformed.load(Ordering::SeqCst) as i64
    );
    assert_eq!(errors.get::<_, Option<i64>>(1), Some(0));
    eprintln!(
        "crash test: {rounds} kill -9 rounds, {} messages ({} malformed), views equal the ground truth",
        sent.load(Ordering::SeqCst),
        malformed.load(Ordering::SeqCst)
    );
    drop(server);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Produces bids `range` over two partitions, remembering them in `bids`.
fn produce_numbered_bids(
    producer: &TestProducer,
    topic: &str,
    range: std::ops::Range<u64>,
    bids: &mut Vec<Bid>,
) {
    for i in range {
        let b = Bid {
            auction: (i % 7) as i64,
            price: i as i64,
        };
        producer.send(topic, (i % 2) as i32, None, bid_json(i, b).as_bytes());
        bids.push(b);
    }
    producer.flush();
}

/// A broker outage while running: queries keep being served, the source
/// shows that it is retrying, and when the broker returns ingestion
/// resumes without loss or duplication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_retried_and_resumes_exactly() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = "outage_bids";
    cluster.create_topic(topic, 2, 1).expect("mock topic");
    let mut bids = Vec::new();
    produce_numbered_bids(&TestProducer::new(&bootstrap), topic, 0..200, &mut bids);

    let dir = scratch_dir("kafka-outage");
    let server = TestServer::start(&dir);
    let client = server.connect().await;
    client
        .batch_execute(&create_bids_sql(topic, &bootstrap))
        .await
        .expect("CREATE SOURCE");
    client.batch_execute(VIEWS).await.expect("CREATE views");
    flush(&client).await;
    assert_eq!(per_auction(&client).await, truth(&bids));

    cluster.broker_down(1).expect("broker down");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = client
            .query_one(
                "SELECT min(state), max(last_error), count(lag) FROM millrace_catalog.source_partitions WHERE source = 'bids'",
                &[],
            )
            .await
            .expect("status table stays readable during the outage");
        let state: Option<String> = row.get(0);
        if state.as_deref() == Some("retrying") {
            let error: Option<String> = row.get(1);
            assert!(error.is_some(), "a retrying source shows its last error");
            // Lag is the broker's end now minus the committed offset: with
            // the broker down it is unknown, not the last figure seen.
            let known_lags: i64 = row.get(2);
            assert_eq!(
                known_lags, 0,
                "lag is NULL while the broker does not answer"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the source never reported the outage (state {state:?})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Views stay queryable while the broker is down.
    assert_eq!(per_auction(&client).await, truth(&bids));
    let err = client
        .batch_execute("FLUSH")
        .await
        .expect_err("FLUSH cannot finish without the broker");
    assert!(
        err.as_db_error().is_some(),
        "FLUSH fails with a server error, not a dropped connection: {err}"
    );
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("session usable after FLUSH failed");

    cluster.broker_up(1).expect("broker up");
    // A new producer: the mock cluster does not let the old one reconnect.
    produce_numbered_bids(&TestProducer::new(&bootstrap), topic, 200..400, &mut bids);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client.batch_execute("FLUSH").await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("FLUSH after the outage: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("ingestion did not resume after the broker came back: {e}"),
        }
    }
    assert_eq!(per_auction(&client).await, truth(&bids));
    let state: String = client
        .query_one(
            "SELECT min(state) FROM millrace_catalog.source_partitions WHERE source = 'bids'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "running");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The totals a view over `bids` shows: `(count, sum of price)`.
async fn totals_of(client: &tokio_postgres::Client, sql: &str) -> (i64, i64) {
    let row = client.query_one(sql, &[]).await.expect(sql);
    (row.get(0), row.get::<_, Option<i64>>(1).unwrap_or(0))
}

/// The late rows source `bids` turned away.
async fn late_rows(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT late_rows FROM millrace_catalog.watermarks WHERE relation = 'bids'",
            &[],
        )
        .await
        .expect("watermarks")
        .get(0)
}

/// `CREATE SOURCE` keeps no rows (issue 13, item 6): nothing of the
/// source's rows is written to the data directory; a view created later
/// backfills by reading the topic again, leaving out exactly the rows the
/// source turned away as late; a `SELECT` on the source reads the topic;
/// and after kill -9 between checkpoints, recovery reads the epochs logged
/// since the last checkpoint from the topic again, so the views come back
/// as they were, before the source consumes anything new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_keeps_no_rows_and_its_readers_read_the_topic() {
    let dir = scratch_dir("kafka-no-rows");
    let broker = TestBroker::start(&dir);
    let topic = "norows_bids";
    broker.create_topic(topic, 2).await;
    let producer = TestProducer::new(&broker.addr);
    let send = |i: u64, second: u64, price: i64| {
        let json = format!(
            r#"{{"auction": {}, "price": {price}, "date_time": "2026-01-01 {:02}:{:02}:{:02}"}}"#,
            i % 5,
            second / 3600,
            (second / 60) % 60,
            second % 60
        );
        producer.send(topic, (i % 2) as i32, None, json.as_bytes());
    };
    // Phase 1: 1,000 bids in time order over both partitions (one malformed).
    let mut kept = (0i64, 0i64);
    for i in 0..1000u64 {
        if i == 500 {
            producer.send(topic, 0, None, b"not json");
            continue;
        }
        send(i, i, i as i64);
        kept = (kept.0 + 1, kept.1 + i as i64);
    }
    producer.flush();

    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Checkpoints only on FLUSH and view creation: what the source consumes
    // after the last FLUSH is in no checkpoint.
    let args = ["--checkpoint-interval-ms", "3600000"];
    let server = TestServer::start_with(&data, &args, &[]);
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (auction BIGINT, price BIGINT, date_time TIMESTAMP,
                 WATERMARK FOR date_time AS date_time - INTERVAL '5 seconds')
             WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{}',
                   scan.startup.mode = 'earliest')
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW early AS SELECT count(*) AS n, sum(price) AS total FROM bids;",
            broker.addr
        ))
        .await
        .expect("CREATE SOURCE and a view");
    flush(&client).await;
    assert_eq!(totals_of(&client, "SELECT n, total FROM early").await, kept);

    // Phase 2: ten bids far behind the watermark (late: dropped, counted)
    // and 200 new ones.
    for i in 1000..1010u64 {
        send(i, i - 1000, 1_000_000);
    }
    for i in 1010..1210u64 {
        send(i, i, i as i64);
        kept = (kept.0 + 1, kept.1 + i as i64);
    }
    producer.flush();
    flush(&client).await;
    assert_eq!(late_rows(&client).await, 10);
    assert_eq!(totals_of(&client, "SELECT n, total FROM early").await, kept);
    // A view created now reads the topic from the start, without the late rows.
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW later AS SELECT count(*) AS n, sum(price) AS total FROM bids",
        )
        .await
        .expect("CREATE MATERIALIZED VIEW later");
    assert_eq!(totals_of(&client, "SELECT n, total FROM later").await, kept);
    // So does a SELECT on the source.
    assert_eq!(
        totals_of(&client, "SELECT count(*), sum(price) FROM bids").await,
        kept
    );
    // Nothing of the source's rows is in the data directory.
    let row_files: Vec<_> = std::fs::read_dir(data.join("rows"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(row_files.is_empty(), "row files: {row_files:?}");

    // Phase 3: 300 more, consumed but in no checkpoint; then kill -9.
    for i in 1210..1510u64 {
        send(i, i, i as i64);
        kept = (kept.0 + 1, kept.1 + i as i64);
    }
    producer.flush();
    let deadline = Instant::now() + Duration::from_secs(60);
    while totals_of(&client, "SELECT n, total FROM early").await != kept {
        assert!(Instant::now() < deadline, "phase 3 was not consumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    server.kill9();
    // The broker stays up: recovery reads phase 3 from the topic again.
    let server = TestServer::start_with(&data, &args, &[]);
    let client = server.connect().await;
    for view in ["early", "later"] {
        assert_eq!(
            totals_of(&client, &format!("SELECT n, total FROM {view}")).await,
            kept,
            "{view} right after the restart, before any FLUSH"
        );
    }
    flush(&client).await;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW after_restart AS SELECT count(*) AS n, sum(price) AS total FROM bids",
        )
        .await
        .expect("CREATE MATERIALIZED VIEW after_restart");
    for view in ["early", "later", "after_restart"] {
        assert_eq!(
            totals_of(&client, &format!("SELECT n, total FROM {view}")).await,
            kept,
            "{view} after FLUSH"
        );
    }
    assert_eq!(
        late_rows(&client).await,
        10,
        "late rows counted once across the restart"
    );
    drop(server);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
