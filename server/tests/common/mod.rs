//! Test support: the real `millrace` binary on a free loopback port, over a
//! real data directory, and a sqllogictest adapter speaking pgwire.

#![allow(dead_code)]

pub mod kafka;
pub mod wire;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// A running `millrace` process.
pub struct TestServer {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Every line the server has logged so far (see [`TestServer::log`]).
    log: Arc<Mutex<Vec<String>>>,
}

/// A fresh, empty scratch directory under the target directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("millrace-tests");
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

impl TestServer {
    /// Starts the binary on `data_dir` and waits for its "ready" line.
    pub fn start(data_dir: &Path) -> TestServer {
        Self::start_with(data_dir, &[], &[])
    }

    /// Like [`TestServer::start`], with more flags and environment.
    pub fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_millrace"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .envs(envs.iter().copied())
            .env("MILLRACE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn millrace");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line.clone());
                }
                if !sent {
                    if let Some(rest) = line.split("ready, listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
                if std::env::var("MILLRACE_TEST_ECHO").is_ok() {
                    eprintln!("[millrace] {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("millrace did not report ready within 60 s");
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in ready line");
        TestServer {
            child,
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// The lines the server has logged (stderr, at `info`) so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A libpq-style connection string.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=tester dbname=millrace",
            self.port
        )
    }

    /// Connects a tokio-postgres client.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conninfo(), NoTls)
            .await
            .expect("connect to millrace");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database error as `SQLSTATE: message`, so that `.slt` files can pin
/// the error code (`statement error 42P01: …`).
#[derive(Debug)]
pub struct SqlStateError(pub String);

impl std::fmt::Display for SqlStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlStateError {}

impl From<tokio_postgres::Error> for SqlStateError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SqlStateError(format!("{}: {}", db.code().code(), db.message())),
            None => SqlStateError(format!("client error: {e}")),
        }
    }
}

/// sqllogictest over the simple query protocol; values as PostgreSQL's text.
pub struct PgSimple {
    pub client: tokio_postgres::Client,
}

#[async_trait]
impl sqllogictest::AsyncDB for PgSimple {
    type Error = SqlStateError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut affected = None;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(cols) => {
                    columns.get_or_insert(cols.len());
                }
                SimpleQueryMessage::Row(row) => {
                    columns.get_or_insert(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = Some(n),
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected.unwrap_or(0))),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "millrace"
    }
}

/// Runs one `.slt` file against `server`; returns the failure, if any.
pub async fn run_slt(server: &TestServer, file: &Path) -> Result<(), String> {
    run_slt_with_vars(server, file, &[]).await
}

/// Runs one `.slt` file with variables for `control substitution on`.
pub async fn run_slt_with_vars(
    server: &TestServer,
    file: &Path,
    vars: &[(String, String)],
) -> Result<(), String> {
    let conninfo = server.conninfo();
    let mut runner = sqllogictest::Runner::new(move || {
        let conninfo = conninfo.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, SqlStateError>(PgSimple { client })
        }
    });
    for (k, v) in vars {
        runner.set_var(k.clone(), v.clone());
    }
    runner
        .run_file_async(file)
        .await
        .map_err(|e| e.display(false).to_string())
}

/// Every row of `sql` (simple protocol, as text, NULL as `NULL`), columns
/// joined by `|`, sorted: a result to compare with another regardless of
/// row order.
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}
