//! Kafka mode: Nexmark bids as JSON in a real Kafka-protocol broker on
//! loopback, consumed by a Millrace server process through `CREATE SOURCE`.
//!
//! Throughput: each query gets a fresh server that consumes the whole
//! topic into its views; the time runs from `CREATE SOURCE` to the end of
//! `FLUSH` (every message committed into the views). CPU time and peak RSS
//! are the server process's own. A broker that keeps everything (tansu, an
//! external one) has the topic filled once, before the first query; the
//! mock cluster keeps ~5 MiB per partition, so there each query's server
//! consumes while the bids are produced, the producer staying at most
//! [`AHEAD_PER_PARTITION`] messages per partition ahead of what the server
//! has committed (read from `millrace_catalog.source_partitions`).
//!
//! Freshness: a fresh server and topic per query; bids are produced at a
//! fixed rate while the view is polled, and each bid's latency runs from
//! the moment it was due (bid i at i / rate seconds) to the end of the
//! first poll that counted it.

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_postgres::error::SqlState;

use crate::events::{self, BID_COLUMNS};
use crate::measure::{self, Figures};
use crate::processes::{Broker, Server};
use crate::queries::Query;

fn producer(
    broker_addr: &str,
    linger_ms: u32,
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", broker_addr)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "false")
        .create()?)
}

/// Sends `payload` to `partition`, waiting while the producer's queue is full.
fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, partition: i32, payload: &[u8]) {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// How far (in messages per partition) a producer may run ahead of the
/// server on the mock cluster: 6 k bids of ~250 bytes, well inside the
/// 5 MiB the mock keeps per partition (14 k lost bids on q0: the mock's
/// accounting or the producer's batching takes more than the payloads).
pub const AHEAD_PER_PARTITION: u64 = 6_000;

/// Holds a producer back until the server has committed enough.
#[derive(Clone)]
pub struct Pace {
    /// Messages the server has committed, over all partitions.
    pub consumed: Arc<AtomicU64>,
    /// How many sent messages may be ahead of `consumed`.
    pub ahead: u64,
}

impl Pace {
    fn new(partitions: i32) -> Pace {
        Pace {
            consumed: Arc::new(AtomicU64::new(0)),
            ahead: AHEAD_PER_PARTITION * partitions.max(1) as u64,
        }
    }

    fn wait(&self, sent: u64) {
        while sent > self.consumed.load(Ordering::Relaxed) + self.ahead {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sends `bids` as JSON, spread over `partitions` round-robin, held back
/// by `pace` if given; returns the seconds it took, all delivered.
pub fn produce(
    broker_addr: &str,
    topic: &str,
    partitions: i32,
    bids: impl Iterator<Item = nexmark::event::Bid>,
    pace: Option<Pace>,
) -> anyhow::Result<f64> {
    let p = producer(broker_addr, 50)?;
    let started = Instant::now();
    for (i, bid) in bids.enumerate() {
        if let Some(pace) = &pace {
            pace.wait(i as u64);
        }
        send(&p, topic, (i as i32) % partitions, &events::to_json(&bid));
    }
    p.flush(Duration::from_secs(1800))?;
    Ok(started.elapsed().as_secs_f64())
}

/// Messages `source` has committed, over its partitions.
async fn committed(client: &tokio_postgres::Client, source: &str) -> anyhow::Result<u64> {
    let v = first_value(
        client,
        &format!(
            "SELECT coalesce(sum(committed_offset), 0) FROM millrace_catalog.source_partitions \
             WHERE source = '{source}'"
        ),
    )
    .await?;
    Ok(v.parse().unwrap_or(0))
}

/// Produces `bids` on a thread of its own while `client`'s server consumes
/// them, keeping the producer within the mock cluster's retention; returns
/// once every bid is delivered.
async fn produce_while_consumed(
    client: &tokio_postgres::Client,
    broker: &Broker,
    topic: &str,
    partitions: i32,
    bids: impl Iterator<Item = nexmark::event::Bid> + Send + 'static,
) -> anyhow::Result<()> {
    let pace = Pace::new(partitions);
    let consumed = pace.consumed.clone();
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let addr = broker.addr.clone();
    let topic = topic.to_string();
    let producing = std::thread::spawn(move || {
        let r = produce(&addr, &topic, partitions, bids, Some(pace));
        finished.store(true, Ordering::Relaxed);
        r
    });
    while !done.load(Ordering::Relaxed) {
        consumed.store(committed(client, "bid").await?, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producing
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    Ok(())
}

/// `CREATE SOURCE bid` over `topic`, with the source's defaults and
/// `extra` options. On the mock cluster the consumer's fetch wait is 10 ms:
/// a mock broker that finds no data holds the fetch for its whole wait
/// (500 ms by default) even when data arrives meanwhile, where a Kafka
/// broker answers as soon as data arrives.
fn create_source(topic: &str, broker: &Broker, extra: &str) -> String {
    let fetch = if broker.keeps_everything() {
        ""
    } else {
        ", properties.fetch.wait.max.ms = '10'"
    };
    format!(
        "CREATE SOURCE bid ({BID_COLUMNS}) WITH (connector = 'kafka', topic = '{topic}', \
         properties.bootstrap.server = '{}'{fetch}{extra}) FORMAT PLAIN ENCODE JSON",
        broker.addr
    )
}

/// FLUSH, repeated while it times out (it gives up after 120 s).
async fn flush(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    loop {
        match client.batch_execute("FLUSH").await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The first column of the first row of `sql`, as text.
async fn first_value(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<String> {
    let rows = client.simple_query(sql).await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some(r.get(0).unwrap_or("NULL").to_string())
            }
            _ => None,
        })
        .unwrap_or_else(|| "(no rows)".into()))
}

/// Consumes the whole of `topic` (holding `events` bids) into `query`'s
/// views in a fresh server.
pub async fn throughput(
    query: &Query,
    broker: &Broker,
    topic: &str,
    partitions: i32,
    events: u64,
    scratch: &std::path::Path,
) -> anyhow::Result<Figures> {
    let server = Server::start(&scratch.join(format!("kafka-{}", query.name)))?;
    let client = server.connect().await?;
    let cpu_before = measure::process_cpu_seconds(server.pid);
    let peak = measure::PeakRss::start(server.pid);
    let started = Instant::now();
    client
        .batch_execute(&create_source(topic, broker, ""))
        .await?;
    for view in query.views {
        client.batch_execute(view).await?;
    }
    if !broker.keeps_everything() {
        let bids = events::bids(1_767_225_600_000).take(events as usize);
        produce_while_consumed(&client, broker, topic, partitions, bids).await?;
    }
    flush(&client).await?;
    let wall = started.elapsed();
    let cpu = measure::process_cpu_seconds(server.pid) - cpu_before;
    let peak = peak.stop();
    // The source keeps no rows, and the mock cluster keeps only its last
    // ~5 MiB per partition: count what was consumed by its offsets.
    let consumed = committed(&client, "bid").await?;
    anyhow::ensure!(
        consumed == events,
        "the source consumed {consumed} bids, not {events}"
    );
    let summary = first_value(&client, query.summary).await?;
    println!("  {}: {} = {summary}", query.name, query.summary);
    query.check(&summary, events)?;
    Ok(Figures {
        query: query.name.to_string(),
        events,
        wall,
        cpu_seconds: cpu,
        peak_rss_mib: peak,
    })
}

/// What a freshness run measured.
pub struct Freshness {
    pub rate: u64,
    pub seconds: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub server_cpu_share: f64,
}

/// Produces bids at `rate` per second for `seconds` into a new one-
/// partition topic while polling `query`'s progress, and returns the
/// produce-to-visible latencies. One partition keeps the topic's order, so
/// that the view counting n bids means the first n bids are visible.
pub async fn freshness(
    query: &Query,
    broker: &Broker,
    rate: u64,
    seconds: u64,
    epoch_ms: Option<u64>,
    scratch: &std::path::Path,
) -> anyhow::Result<Freshness> {
    let Some(progress) = query.progress else {
        anyhow::bail!("{} has no cheap progress read", query.name);
    };
    let topic = format!("nexmark_live_{}", query.name);
    broker.create_topic(&topic, 1).await?;
    let server = Server::start(&scratch.join(format!("fresh-{}", query.name)))?;
    let client = server.connect().await?;
    // The source's defaults unless an epoch is asked for.
    let options = epoch_ms
        .map(|ms| format!(", epoch.interval.ms = '{ms}'"))
        .unwrap_or_default();
    client
        .batch_execute(&create_source(&topic, broker, &options))
        .await?;
    for view in query.views {
        client.batch_execute(view).await?;
    }

    let total = rate * seconds;
    let p = producer(&broker.addr, 1)?;
    // On the mock cluster the producer may not outrun the view by more than
    // the partition keeps; a bid held back still counts from when it was
    // due, so a server that falls behind shows in the latencies.
    let pace = (!broker.keeps_everything()).then(|| Pace::new(1));
    let visible = pace.as_ref().map(|p| p.consumed.clone());
    let producing = std::thread::spawn(move || {
        let mut due_at = Vec::with_capacity(total as usize);
        let started = Instant::now();
        let mut bids = events::bids(events::now_ms());
        for i in 0..total {
            // Paced: bid i is due at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if let Some(pace) = &pace {
                pace.wait(i);
            }
            let Some(bid) = bids.next() else { break };
            let json = events::to_json(&bid);
            due_at.push(due);
            send(&p, &topic, 0, &json);
        }
        let _ = p.flush(Duration::from_secs(60));
        due_at
    });

    let cpu_before = measure::process_cpu_seconds(server.pid);
    let polling_started = Instant::now();
    let mut polls: Vec<(Instant, u64)> = Vec::new();
    let mut seen = 0u64;
    let deadline = Instant::now() + Duration::from_secs(seconds + 60);
    while seen < total && Instant::now() < deadline {
        let value = first_value(&client, progress).await?;
        let n: u64 = value.parse().unwrap_or(0);
        if n > seen {
            polls.push((Instant::now(), n));
            seen = n;
            if let Some(v) = &visible {
                v.store(n, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A producer still held back by the pace must not wait for ever.
    if let Some(v) = &visible {
        v.store(u64::MAX / 2, Ordering::Relaxed);
    }
    let server_cpu = measure::process_cpu_seconds(server.pid) - cpu_before;
    let busy = polling_started.elapsed().as_secs_f64();
    let due_at = producing
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    anyhow::ensure!(
        seen >= total,
        "only {seen} of {total} bids became visible within {} s",
        seconds + 60
    );
    let mut latencies = Vec::with_capacity(due_at.len());
    let mut poll = polls.iter().peekable();
    for (i, at) in due_at.iter().enumerate() {
        while let Some((_, n)) = poll.peek() {
            if *n > i as u64 {
                break;
            }
            poll.next();
        }
        if let Some((visible, _)) = poll.peek() {
            latencies.push(visible.saturating_duration_since(*at));
        }
    }
    latencies.sort();
    Ok(Freshness {
        rate,
        seconds,
        p50: measure::percentile(&latencies, 50.0),
        p99: measure::percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        server_cpu_share: server_cpu / busy.max(1e-9),
    })
}

/// What a point-query run measured.
pub struct PointQueries {
    pub rate: u64,
    /// Bids the view counted during the measured phase, per second.
    pub ingested_per_second: f64,
    pub queries: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub server_cpu_share: f64,
}

/// Random keys in `1..=keys` by xorshift64 from `seed`: cheap, and the
/// same run every time.
fn random_keys(seed: u64, keys: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % keys + 1
    })
}

/// Bids whose auction ids are `1..=keys` in turn, then (after `keys` of
/// them) drawn at random from the same range: a view grouped by auction
/// holds `keys` rows after the first `keys` bids and keeps updating them.
fn keyed_bids(keys: u64) -> impl Iterator<Item = nexmark::event::Bid> {
    let mut random = random_keys(0x9e37_79b9_7f4a_7c15, keys);
    events::bids(1_767_225_600_000)
        .enumerate()
        .map(move |(i, mut bid)| {
            bid.auction = if (i as u64) < keys {
                i + 1
            } else {
                random.next().unwrap_or(1) as usize
            };
            bid
        })
}

/// Point queries by group key on a view of `keys` rows while bids are
/// ingested at `rate` per second for `seconds`: the view is filled first
/// (each key once), then one client asks for random keys over the
/// extended protocol (a prepared statement), one query at a time, while
/// the bids keep updating random rows of the view.
pub async fn point_queries(
    broker: &Broker,
    keys: u64,
    rate: u64,
    seconds: u64,
    partitions: i32,
    scratch: &std::path::Path,
) -> anyhow::Result<PointQueries> {
    let topic = "nexmark_point";
    broker.create_topic(topic, partitions).await?;
    let server = Server::start(&scratch.join("point"))?;
    let client = server.connect().await?;
    client
        .batch_execute(&create_source(topic, broker, ""))
        .await?;
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW by_auction AS \
             SELECT auction, count(*) AS n, max(price) AS top FROM bid GROUP BY auction",
        )
        .await?;
    let started = Instant::now();
    let first = keyed_bids(keys).take(keys as usize);
    produce_while_consumed(&client, broker, topic, partitions, first).await?;
    flush(&client).await?;
    let rows = first_value(&client, "SELECT count(*) FROM by_auction").await?;
    anyhow::ensure!(
        rows == keys.to_string(),
        "the view has {rows} rows, not {keys}"
    );
    println!(
        "  filled: {keys} rows in {:.1} s; load {}",
        started.elapsed().as_secs_f64(),
        measure::load_average()
    );

    // The first point query builds the view's index (a pass over every
    // row, which holds publishing back meanwhile); it is timed apart, and
    // the measured phase is the steady state after it.
    let building = Instant::now();
    client
        .query("SELECT n FROM by_auction WHERE auction = 1", &[])
        .await?;
    println!(
        "  first point query (builds the index): {:.0} ms",
        building.elapsed().as_secs_f64() * 1e3
    );
    let total = rate * seconds;
    let addr = broker.addr.clone();
    let done = Arc::new(AtomicBool::new(false));
    let finished = done.clone();
    let committed_before = committed(&client, "bid").await?;
    // What the server has committed, read every 10 ms by a watcher: the
    // producer keeps its rate, and gives up if the server falls so far
    // behind that the mock cluster would drop bids it has not read.
    let pace = Pace::new(partitions);
    pace.consumed.store(committed_before, Ordering::Relaxed);
    let consumed = pace.consumed.clone();
    let keeps_everything = broker.keeps_everything();
    let producing = std::thread::spawn(move || -> anyhow::Result<()> {
        let result = (|| -> anyhow::Result<()> {
            let p = producer(&addr, 5)?;
            let started = Instant::now();
            for (i, bid) in keyed_bids(keys)
                .skip(keys as usize)
                .take(total as usize)
                .enumerate()
            {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let sent = committed_before + i as u64;
                anyhow::ensure!(
                    keeps_everything || sent <= pace.consumed.load(Ordering::Relaxed) + pace.ahead,
                    "the server fell more than {} bids behind {rate} bids/s after {:.1} s \
                     (more than the mock cluster keeps): ingest cannot sustain this rate",
                    pace.ahead,
                    started.elapsed().as_secs_f64()
                );
                send(&p, topic, (i as i32) % partitions, &events::to_json(&bid));
            }
            p.flush(Duration::from_secs(60))?;
            Ok(())
        })();
        finished.store(true, Ordering::Relaxed);
        result
    });
    // Another session reads the server's progress for the producer.
    let watcher = server.connect().await?;
    let watching = done.clone();
    let watch = tokio::spawn(async move {
        while !watching.load(Ordering::Relaxed) {
            if let Ok(n) = committed(&watcher, "bid").await {
                consumed.store(n, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let statement = client
        .prepare("SELECT n, top FROM by_auction WHERE auction = $1")
        .await?;
    let cpu_before = measure::process_cpu_seconds(server.pid);
    let measuring = Instant::now();
    let mut latencies = Vec::new();
    let mut random = random_keys(0x2545_f491_4f6c_dd1d, keys);
    while !done.load(Ordering::Relaxed) {
        let key = random.next().unwrap_or(1) as i64;
        let asked = Instant::now();
        let rows = client.query(&statement, &[&key]).await?;
        latencies.push(asked.elapsed());
        anyhow::ensure!(rows.len() == 1, "key {key}: {} rows", rows.len());
    }
    let busy = measuring.elapsed().as_secs_f64();
    let server_cpu = measure::process_cpu_seconds(server.pid) - cpu_before;
    let ingested = committed(&client, "bid").await? - committed_before;
    let _ = watch.await;
    producing
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    flush(&client).await?;
    let counted = first_value(&client, "SELECT sum(n) FROM by_auction").await?;
    anyhow::ensure!(
        counted == (keys + total).to_string(),
        "the view counted {counted} bids, not {}",
        keys + total
    );
    latencies.sort();
    Ok(PointQueries {
        rate,
        ingested_per_second: ingested as f64 / busy.max(1e-9),
        queries: latencies.len(),
        p50: measure::percentile(&latencies, 50.0),
        p99: measure::percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        server_cpu_share: server_cpu / busy.max(1e-9),
    })
}
