//! Kafka test support: a real Kafka-protocol broker (tansu) on loopback,
//! topic creation through the admin API, and a real producer (rdkafka).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// A tansu broker process with its own sqlite storage.
pub struct TestBroker {
    child: Child,
    /// `127.0.0.1:port`.
    pub addr: String,
    dir: PathBuf,
}

/// The tansu binary: `$TANSU`, else `tansu` on PATH, else ~/.cargo/bin/tansu.
fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    }) {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = Path::new(&home).join(".cargo/bin/tansu");
    assert!(
        p.is_file(),
        "the Kafka tests need the tansu broker: run `bash .ci/run`, or `cargo install tansu --locked --features libsql`"
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestBroker {
    /// Starts tansu in `dir` and waits until it answers metadata requests.
    pub fn start(dir: &Path) -> TestBroker {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let log = std::fs::File::create(dir.join("tansu.log")).expect("tansu log file");
        let child = Command::new(tansu_binary())
            .current_dir(dir)
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
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let broker = TestBroker {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = ClientConfig::new()
                .set("bootstrap.servers", &broker.addr)
                .create::<rdkafka::consumer::BaseConsumer>()
                .ok()
                .and_then(|c| {
                    rdkafka::consumer::Consumer::fetch_metadata(&c, None, Duration::from_secs(2))
                        .ok()
                })
                .is_some();
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not answer within 60 s; see {}",
                broker.dir.join("tansu.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        broker
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        create_topic(&self.addr, topic, partitions).await
    }

    /// Creates `topic` with `partitions` partitions and topic `configs`
    /// (such as `max.message.bytes`).
    pub async fn create_topic_with(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        create_topic_configured(&self.addr, topic, partitions, configs).await
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `topic` on the cluster at `bootstrap`.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    create_topic_configured(bootstrap, topic, partitions, &[]).await
}

/// Creates `topic` on the cluster at `bootstrap` with topic `configs`.
pub async fn create_topic_configured(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        new_topic = new_topic.set(k, v);
    }
    let results = admin
        .create_topics(
            &[new_topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// A producer that acknowledges each message once the broker has it.
pub struct TestProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl TestProducer {
    /// A producer for the cluster at `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        Self::with(bootstrap, &[])
    }

    /// A producer for the cluster at `bootstrap` with extra client settings.
    pub fn with(bootstrap: &str, settings: &[(&str, &str)]) -> Self {
        let mut config = ClientConfig::new();
        for (k, v) in settings {
            config.set(*k, *v);
        }
        let producer = config
            .set("bootstrap.servers", bootstrap)
            .set("linger.ms", "5")
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .create()
            .expect("producer");
        Self { producer }
    }

    /// Sends `payload` to `partition` of `topic`.
    pub fn send(&self, topic: &str, partition: i32, key: Option<&[u8]>, payload: &[u8]) {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).partition(partition).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, r)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        panic!("produce failed: {e}");
                    }
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Waits until every message sent so far is on the broker.
    pub fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(60))
            .expect("producer flush");
    }
}
