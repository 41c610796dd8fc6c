//! Kafka ingest benchmark: how fast the real `millrace` binary (release
//! build) consumes a topic of JSON bids into a source feeding a windowed
//! view, and how much memory it needs doing so.
//!
//! Starts a tansu broker on loopback (as the tests do), creates a topic of
//! 8 partitions, produces `MESSAGES` (default 10,000,000) JSON bids with
//! rdkafka, then creates the source and view and times `FLUSH` — the moment
//! every message is committed into the view. While it runs, the server's
//! RSS is sampled every 100 ms; the peak and the progress are printed.
//!
//! `cargo bench -p millrace-server --bench kafka_ingest`
//! (`MESSAGES=1000000` for a shorter run).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const PARTITIONS: i32 = 8;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User + system CPU time of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit(')').next()?.split_whitespace().collect::<Vec<_>>();
            let utime: f64 = after.get(11)?.parse().ok()?;
            let stime: f64 = after.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() {
    let messages: u64 = std::env::var("MESSAGES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10_000_000);
    let dir = std::env::temp_dir().join(format!("millrace-kafka-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("scratch dir");

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("tcp://{addr}");
    let tansu = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
    let mut broker = Command::new(tansu)
        .current_dir(&dir)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu (cargo install tansu --version 0.6.0 --locked --features libsql)");
    let broker_pid = broker.id();
    std::thread::sleep(Duration::from_secs(2));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .create()
            .expect("admin");
        for r in admin
            .create_topics(
                &[NewTopic::new(
                    "bench_bids",
                    PARTITIONS,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new(),
            )
            .await
            .expect("create topic")
        {
            r.expect("topic");
        }
    });

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "false")
        .create()
        .expect("producer");
    let started = Instant::now();
    for i in 0..messages {
        let payload = format!(
            r#"{{"auction": {}, "bidder": {}, "price": {}, "channel": "web", "date_time": {}}}"#,
            i % 100,
            i % 7919,
            i % 10_000,
            // 1 ms apart: 10 M bids span 1000 windows of 10 s, so the view
            // holds 100,000 groups (windows do not close yet).
            1_767_225_600_000u64 + i
        );
        let mut record = BaseRecord::<[u8], [u8]>::to("bench_bids")
            .partition((i % PARTITIONS as u64) as i32)
            .payload(payload.as_bytes());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(600))
        .expect("producer flush");
    let produce_secs = started.elapsed().as_secs_f64();
    println!(
        "produced {messages} messages to {PARTITIONS} partitions in {produce_secs:.1} s ({:.0} msg/s)",
        messages as f64 / produce_secs
    );

    let mut server = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("MILLRACE_LOG", "warn,millrace_server::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start millrace");
    let pid = server.id();
    let stderr = server.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ready, listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let server_addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("millrace ready");
    let server_port = server_addr.rsplit(':').next().unwrap_or("0").to_string();

    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={server_port} user=bench"),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect");
        tokio::spawn(conn);
        let sampler_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = sampler_stop.clone();
            std::thread::spawn(move || {
                let mut peak: f64 = 0.0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    peak = peak.max(rss_mib(pid, "VmRSS:"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                peak
            })
        };
        let t0 = Instant::now();
        client
            .batch_execute(&format!(
                "CREATE SOURCE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP)
                 WITH (connector = 'kafka', topic = 'bench_bids', properties.bootstrap.server = '{addr}')
                 FORMAT PLAIN ENCODE JSON;
                 CREATE MATERIALIZED VIEW per_window AS
                   SELECT window_start, auction, count(*) AS n, max(price) AS top
                   FROM TUMBLE(bids, date_time, INTERVAL '10 seconds') GROUP BY window_start, auction;"
            ))
            .await
            .expect("create");
        let progress = {
            let client_port = server_port.clone();
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(
                    &format!("host=127.0.0.1 port={client_port} user=bench"),
                    tokio_postgres::NoTls,
                )
                .await
                .expect("connect");
                tokio::spawn(conn);
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    if let Ok(r) = c
                        .query_one(
                            "SELECT sum(committed_offset)::BIGINT FROM millrace_catalog.source_partitions",
                            &[],
                        )
                        .await
                    {
                        let done: Option<i64> = r.get(0);
                        println!(
                            "  {:>6.0} s: {} messages committed, RSS {:.0} MiB",
                            t0.elapsed().as_secs_f64(),
                            done.unwrap_or(0),
                            rss_mib(pid, "VmRSS:")
                        );
                    }
                }
            })
        };
        // FLUSH gives up after 120 s; a 10 M backlog takes longer: repeat.
        loop {
            match client.batch_execute("FLUSH").await {
                Ok(()) => break,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => continue,
                Err(e) => panic!("FLUSH: {e}"),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        progress.abort();
        sampler_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let peak = sampler.join().unwrap_or(0.0);
        let n: i64 = client
            .query_one("SELECT sum(n)::BIGINT FROM per_window", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n as u64, messages, "the view holds every message");
        println!(
            "ingested {messages} messages through a windowed view in {secs:.1} s: {:.0} msg/s; peak RSS {peak:.0} MiB (VmHWM {:.0} MiB)",
            messages as f64 / secs,
            rss_mib(pid, "VmHWM:")
        );
        println!(
            "CPU seconds over the run: millrace {:.1}, tansu {:.1}",
            cpu_seconds(pid),
            cpu_seconds(broker_pid)
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = broker.kill();
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
