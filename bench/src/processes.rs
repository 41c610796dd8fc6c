//! The processes a Kafka run needs: a tansu broker on loopback, and a
//! Millrace server in its own process (this binary, `millrace-bench
//! serve`, which runs the same server code as the `millrace` binary), so
//! that its CPU time and memory are its own.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A free loopback port (the broker is told its address up front).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A tansu broker, killed when dropped.
pub struct Broker {
    child: Child,
    pub addr: String,
    pub pid: u32,
}

impl Broker {
    /// Starts tansu in `dir` with `storage` (such as `sqlite://tansu.db`) and waits until it answers metadata requests.
    pub fn start(dir: &Path, storage: &str) -> anyhow::Result<Broker> {
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
        let broker = Broker { child, addr, pid };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &broker.addr)
                .create()?;
            if consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
            {
                return Ok(broker);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the broker did not answer within 60 s; see {}",
                dir.join("tansu.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Millrace server process with a fresh data directory, killed when
/// dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub port: u16,
}

impl Server {
    /// Starts the server on a free loopback port with data under `data`.
    pub fn start(data: &Path) -> anyhow::Result<Server> {
        let _ = std::fs::remove_dir_all(data);
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
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("the server did not start within 60 s"))?;
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("cannot read the server's port from {addr:?}"))?;
        Ok(Server { child, pid, port })
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
