//! Kafka mode: Nexmark bids as JSON in a real Kafka-protocol broker on
//! loopback, consumed by a Millrace server process through `CREATE SOURCE`.
//!
//! Throughput: the topic is filled first, then each query gets a fresh
//! server that consumes the whole topic into its views; the time runs from
//! `CREATE SOURCE` to the end of `FLUSH` (every message committed into the
//! views). CPU time and peak RSS are the server process's own.
//!
//! Freshness: a fresh server and topic per query; bids are produced at a
//! fixed rate while the view is polled, and each bid's latency runs from
//! the moment it was handed to the producer to the end of the first poll
//! that counted it.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_postgres::error::SqlState;

use crate::events::{self, BID_COLUMNS};
use crate::measure::{self, Figures};
use crate::processes::{Broker, Server};
use crate::queries::Query;

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(broker: &Broker, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()?;
    for r in admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

fn producer(
    broker: &Broker,
    linger_ms: u32,
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
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

/// Fills `topic` with `events` JSON bids spread over `partitions`; returns
/// the seconds it took.
pub fn produce(broker: &Broker, topic: &str, partitions: i32, events: u64) -> anyhow::Result<f64> {
    let p = producer(broker, 50)?;
    let started = Instant::now();
    for (i, bid) in events::bids(1_767_225_600_000)
        .take(events as usize)
        .enumerate()
    {
        send(&p, topic, (i as i32) % partitions, &events::to_json(&bid));
    }
    p.flush(Duration::from_secs(1800))?;
    Ok(started.elapsed().as_secs_f64())
}

fn create_source(topic: &str, broker: &Broker, extra: &str) -> String {
    format!(
        "CREATE SOURCE bid ({BID_COLUMNS}) WITH (connector = 'kafka', topic = '{topic}', \
         properties.bootstrap.server = '{}'{extra}) FORMAT PLAIN ENCODE JSON",
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
    flush(&client).await?;
    let wall = started.elapsed();
    let cpu = measure::process_cpu_seconds(server.pid) - cpu_before;
    let peak = peak.stop();
    let consumed = first_value(&client, "SELECT count(*) FROM bid").await?;
    anyhow::ensure!(
        consumed == events.to_string(),
        "the source holds {consumed} bids, not {events}"
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
    checkpoint_ms: u64,
    scratch: &std::path::Path,
) -> anyhow::Result<Freshness> {
    let Some(progress) = query.progress else {
        anyhow::bail!("{} has no cheap progress read", query.name);
    };
    let topic = format!("nexmark_live_{}", query.name);
    create_topic(broker, &topic, 1).await?;
    let server = Server::start(&scratch.join(format!("fresh-{}", query.name)))?;
    let client = server.connect().await?;
    let options = format!(
        ", checkpoint.interval.ms = '{checkpoint_ms}', properties.fetch.wait.max.ms = '10'"
    );
    client
        .batch_execute(&create_source(&topic, broker, &options))
        .await?;
    for view in query.views {
        client.batch_execute(view).await?;
    }

    let total = rate * seconds;
    let p = producer(broker, 1)?;
    let producing = std::thread::spawn(move || {
        let mut sent = Vec::with_capacity(total as usize);
        let started = Instant::now();
        let mut bids = events::bids(events::now_ms());
        for i in 0..total {
            // Paced: bid i leaves at i / rate seconds.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let Some(bid) = bids.next() else { break };
            let json = events::to_json(&bid);
            sent.push(Instant::now());
            send(&p, &topic, 0, &json);
        }
        let _ = p.flush(Duration::from_secs(60));
        sent
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
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let server_cpu = measure::process_cpu_seconds(server.pid) - cpu_before;
    let busy = polling_started.elapsed().as_secs_f64();
    let sent = producing
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))?;
    anyhow::ensure!(
        seen >= total,
        "only {seen} of {total} bids became visible within {} s",
        seconds + 60
    );
    let mut latencies = Vec::with_capacity(sent.len());
    let mut poll = polls.iter().peekable();
    for (i, at) in sent.iter().enumerate() {
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
