//! The processes a Kafka run needs: a broker on loopback (librdkafka's
//! mock cluster, tansu, or one already running), and a
//! Millrace server in its own process (this binary, `millrace-bench
//! serve`, which runs the same server code as the `millrace` binary), so
//! that its CPU time and memory are its own.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A free loopback port (the broker is told its address up front).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Which Kafka-protocol broker a run talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerChoice {
    /// librdkafka's mock cluster in a process of its own (the default: it
    /// is not the bottleneck; it keeps only ~5 MiB per partition, so runs
    /// produce while the server consumes, paced by the server's progress).
    Mock,
    /// tansu with the given storage (`sqlite://tansu.db`, relative to the
    /// scratch directory): a real broker, ~30 k msg/s.
    Tansu(String),
    /// A broker already running at this bootstrap address.
    External(String),
}

impl BrokerChoice {
    /// `mock`, `tansu`, `tansu:STORAGE` or a bootstrap address.
    pub fn parse(s: &str) -> BrokerChoice {
        match s {
            "mock" => BrokerChoice::Mock,
            "tansu" => BrokerChoice::Tansu("sqlite://tansu.db".into()),
            _ => match s.strip_prefix("tansu:") {
                Some(storage) => BrokerChoice::Tansu(storage.into()),
                None => BrokerChoice::External(s.into()),
            },
        }
    }
}

/// A running broker; one this run started is killed when dropped.
pub struct Broker {
    child: Option<Child>,
    /// The mock broker's control channel: a line `topic NAME PARTITIONS`
    /// is answered `ok` once the topic exists.
    control: Option<std::sync::Mutex<(ChildStdin, BufReader<ChildStdout>)>>,
    pub addr: String,
    /// The broker's process, when this run started it.
    pub pid: Option<u32>,
    pub choice: BrokerChoice,
}

impl Broker {
    /// Starts (or reaches) the broker `choice` names.
    pub fn start(dir: &Path, choice: &BrokerChoice) -> anyhow::Result<Broker> {
        let broker = match choice {
            BrokerChoice::Tansu(storage) => Broker::start_tansu(dir, storage)?,
            BrokerChoice::Mock => Broker::start_mock()?,
            BrokerChoice::External(addr) => Broker {
                child: None,
                control: None,
                addr: addr.clone(),
                pid: None,
                choice: choice.clone(),
            },
        };
        broker.wait_for_metadata(dir)?;
        Ok(broker)
    }

    /// Whether the broker keeps a whole topic, so that it can be filled
    /// before the server reads it (the mock cluster cannot).
    pub fn keeps_everything(&self) -> bool {
        self.choice != BrokerChoice::Mock
    }

    /// A short name for reports.
    pub fn describe(&self) -> String {
        match &self.choice {
            BrokerChoice::Mock => "librdkafka mock cluster".into(),
            BrokerChoice::Tansu(storage) => format!("tansu, {storage}"),
            BrokerChoice::External(addr) => format!("broker at {addr}"),
        }
    }

    fn start_mock() -> anyhow::Result<Broker> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("mock-broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin to the mock broker"))?;
        let mut stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no stdout from the mock broker"))?,
        );
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .strip_prefix("bootstrap ")
            .map(|a| a.trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("the mock broker said {line:?}"))?;
        Ok(Broker {
            child: Some(child),
            control: Some(std::sync::Mutex::new((stdin, stdout))),
            addr,
            pid: Some(pid),
            choice: BrokerChoice::Mock,
        })
    }

    /// Starts tansu in `dir` with `storage` (such as `sqlite://tansu.db`).
    fn start_tansu(dir: &Path, storage: &str) -> anyhow::Result<Broker> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let url = format!("tcp://{addr}");
        let tansu = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let child = Command::new(&tansu)
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start the broker {tansu:?} ({e}); install it with \
                     `cargo install tansu --version 0.6.0 --locked --features libsql` \
                     or set TANSU to its path"
                )
            })?;
        let pid = child.id();
        Ok(Broker {
            child: Some(child),
            control: None,
            addr,
            pid: Some(pid),
            choice: BrokerChoice::Tansu(storage.into()),
        })
    }

    /// Waits until the broker answers metadata requests.
    fn wait_for_metadata(&self, dir: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.addr)
                .create()?;
            if consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the broker at {} did not answer within 60 s (tansu logs to {})",
                self.addr,
                dir.join("tansu.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates `topic` with `partitions` partitions: through the admin API,
    /// or by asking the mock broker process (the mock cluster has no
    /// CreateTopics).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        if let Some(control) = &self.control {
            let mut guard = control
                .lock()
                .map_err(|_| anyhow::anyhow!("the mock broker's channel is poisoned"))?;
            let (stdin, stdout) = &mut *guard;
            writeln!(stdin, "topic {topic} {partitions}")?;
            stdin.flush()?;
            let mut line = String::new();
            stdout.read_line(&mut line)?;
            anyhow::ensure!(line.trim() == "ok", "creating topic {topic}: {line}");
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
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

    /// CPU seconds the broker process has used (0 for an external one).
    pub fn cpu_seconds(&self) -> f64 {
        self.pid.map_or(0.0, crate::measure::process_cpu_seconds)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The mock broker process (`millrace-bench mock-broker`): a one-broker
/// librdkafka mock cluster on a loopback port, printed as `bootstrap ADDR`;
/// then one topic per `topic NAME PARTITIONS` line on stdin, each answered
/// `ok`. It ends when stdin closes (its parent went away).
pub fn run_mock_broker() -> anyhow::Result<()> {
    let cluster = rdkafka::mocking::MockCluster::new(1)?;
    let mut out = std::io::stdout();
    writeln!(out, "bootstrap {}", cluster.bootstrap_servers())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["topic", name, partitions] => match partitions.parse::<i32>() {
                Ok(n) => match cluster.create_topic(name, n, 1) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error {e}"),
                },
                Err(e) => format!("error {e}"),
            },
            _ => format!("error unknown command {line:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

/// A server process that has not said it is serving yet.
pub struct Launching {
    child: Child,
    pub pid: u32,
    ready: std::sync::mpsc::Receiver<String>,
}

impl Launching {
    /// Waits up to `timeout` for the server to listen.
    pub fn ready(self, timeout: Duration) -> anyhow::Result<Server> {
        let Launching {
            mut child,
            pid,
            ready,
        } = self;
        let Ok(addr) = ready.recv_timeout(timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the server did not start within {timeout:?}");
        };
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("cannot read the server's port from {addr:?}"))?;
        Ok(Server { child, pid, port })
    }
}

/// A Millrace server process, killed when dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub port: u16,
}

impl Server {
    /// Starts the server on a free loopback port with data under `data`
    /// (emptied first).
    pub fn start(data: &Path) -> anyhow::Result<Server> {
        let _ = std::fs::remove_dir_all(data);
        Server::launch(data)?.ready(Duration::from_secs(60))
    }

    /// Starts the server on the data directory `data` as it is; it is
    /// serving once [`Launching::ready`] returns.
    pub fn launch(data: &Path) -> anyhow::Result<Launching> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data)
            .env("MILLRACE_LOG", "warn,millrace_server::server=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = child.id();
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr from the server"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ready, listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                } else if line.contains("ERROR") || line.contains("millrace:") {
                    eprintln!("server: {line}");
                }
            }
        });
        Ok(Launching {
            child,
            pid,
            ready: rx,
        })
    }

    /// Kills the server with SIGKILL, as a crash would end it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new client session.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=bench", self.port),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
