//! Login hardening against the real binary with `--auth password`: an
//! unknown user fails exactly like a known user with a wrong password (the
//! same frames, a stable mock salt, the same FATAL 28P01), a burst of
//! failed logins logs a bounded number of lines, and the sessions of a
//! dropped user end at their next statement with FATAL 28000.

mod common;

use std::time::Duration;

use common::{scratch_dir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

/// A backend message: its type byte and body.
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// The type of the message, with the authentication request code for
    /// an `R` (`R10` SASL, `R11` SASLContinue, `R12` SASLFinal, `R0` ok).
    fn kind(&self) -> String {
        match self.tag {
            b'R' if self.body.len() >= 4 => {
                let code =
                    i32::from_be_bytes([self.body[0], self.body[1], self.body[2], self.body[3]]);
                format!("R{code}")
            }
            tag => char::from(tag).to_string(),
        }
    }

    /// The fields of an ErrorResponse, by their code.
    fn fields(&self) -> Vec<(char, String)> {
        self.body
            .split(|&b| b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| {
                (
                    char::from(f[0]),
                    String::from_utf8_lossy(&f[1..]).into_owned(),
                )
            })
            .collect()
    }
}

async fn recv(stream: &mut TcpStream) -> Option<Msg> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len.checked_sub(4)?];
    stream.read_exact(&mut body).await.ok()?;
    Some(Msg { tag: head[0], body })
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What one SCRAM login attempt with a wrong proof showed the client.
struct Attempt {
    /// Every message type received, in order, until the server closed.
    kinds: Vec<String>,
    /// The salt of the server-first message (base64, as sent).
    salt: String,
    /// Its iteration count.
    iterations: String,
    /// The fields of the final ErrorResponse.
    error: Vec<(char, String)>,
}

/// Logs in as `user` over raw frames, as libpq does (the SCRAM user name
/// left empty), answering the server's challenge with a proof that cannot
/// be right: what the server sees of a wrong password.
async fn attempt(port: u16, user: &str) -> Attempt {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", user, "database", "millrace"] {
        startup.extend_from_slice(part.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut msg = (startup.len() as i32 + 4).to_be_bytes().to_vec();
    msg.extend_from_slice(&startup);
    s.write_all(&msg).await.expect("send startup");

    let mut kinds = Vec::new();
    let mut salt = String::new();
    let mut iterations = String::new();
    let mut error = Vec::new();
    let client_nonce = "rOprNGfwEbeRWgbNEkqO";
    let read = async {
        while let Some(m) = recv(&mut s).await {
            kinds.push(m.kind());
            match m.kind().as_str() {
                "R10" => {
                    let mut body = b"SCRAM-SHA-256\0".to_vec();
                    let first = format!("n,,n=,r={client_nonce}");
                    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
                    body.extend_from_slice(first.as_bytes());
                    s.write_all(&frame(b'p', &body))
                        .await
                        .expect("send client-first");
                }
                "R11" => {
                    let server_first = String::from_utf8_lossy(&m.body[4..]).into_owned();
                    let mut nonce = "";
                    for part in server_first.split(',') {
                        if let Some(v) = part.strip_prefix("r=") {
                            nonce = v;
                        } else if let Some(v) = part.strip_prefix("s=") {
                            salt = v.to_owned();
                        } else if let Some(v) = part.strip_prefix("i=") {
                            iterations = v.to_owned();
                        }
                    }
                    assert!(nonce.starts_with(client_nonce), "{server_first}");
                    // 32 zero bytes: a well-formed proof that is wrong.
                    let last = format!("c=biws,r={nonce},p={}", "A".repeat(43) + "=");
                    s.write_all(&frame(b'p', last.as_bytes()))
                        .await
                        .expect("send client-final");
                }
                "E" => error = m.fields(),
                _ => {}
            }
        }
    };
    // Generous: a loaded 2-core machine; a login takes milliseconds.
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the server closes a failed login");
    Attempt {
        kinds,
        salt,
        iterations,
        error,
    }
}

async fn login(
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let conninfo =
        format!("host=127.0.0.1 port={port} user={user} password={password} dbname=millrace");
    let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn password_server(name: &str) -> TestServer {
    let dir = scratch_dir(name);
    TestServer::start_with(
        &dir,
        &["--auth", "password"],
        &[("MILLRACE_PASSWORD", "admin-pw")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_fails_exactly_like_a_wrong_password() {
    let server = password_server("login-alike");
    let port = server.port;

    let known = attempt(port, "millrace").await;
    let unknown = attempt(port, "nobody").await;
    let again = attempt(port, "nobody").await;
    let other = attempt(port, "somebody").await;

    // The same frames: SASL, SASLContinue, then the ErrorResponse (and the
    // ReadyForQuery pgwire sends before it closes).
    assert_eq!(known.kinds, unknown.kinds);
    assert_eq!(known.kinds[..3], ["R10", "R11", "E"]);
    assert_eq!(known.iterations, "4096");
    assert_eq!(unknown.iterations, "4096");
    // The same error but for the name it quotes.
    for (attempt, user) in [(&known, "millrace"), (&unknown, "nobody")] {
        assert_eq!(
            attempt.error,
            [
                ('S', "FATAL".to_owned()),
                ('C', "28P01".to_owned()),
                (
                    'M',
                    format!("password authentication failed for user \"{user}\"")
                ),
            ]
        );
    }
    // A mock salt looks like a real one, is the same on every attempt and
    // differs between names.
    assert_eq!(known.salt.len(), unknown.salt.len());
    assert_eq!(unknown.salt, again.salt);
    assert_ne!(unknown.salt, other.salt);
    assert_ne!(unknown.salt, known.salt);

    // What a driver reports, for a wrong password and an unknown user.
    for user in ["millrace", "nobody"] {
        let Err(err) = login(port, user, "wrong").await else {
            panic!("{user} logged in with a wrong password");
        };
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.severity(), "FATAL");
        assert_eq!(db.code().code(), "28P01");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }

    // The mock salt secret belongs to the installation: an unknown user's
    // salt survives a restart, as a real user's does.
    let dir = server.data_dir.clone();
    server.stop();
    let server = TestServer::start_with(&dir, &["--auth", "password"], &[]);
    assert_eq!(attempt(server.port, "nobody").await.salt, unknown.salt);
    assert_eq!(attempt(server.port, "millrace").await.salt, known.salt);
    server.stop();
}

/// Lines of the server's log about failed logins from the loopback address.
fn failure_lines(server: &TestServer) -> Vec<String> {
    server
        .log()
        .into_iter()
        .filter(|l| l.contains("from 127.0.0.1") && l.contains("failed"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_failed_logins_logs_a_bounded_number_of_lines() {
    let server = password_server("login-burst");
    const ATTEMPTS: usize = 30;
    for i in 0..ATTEMPTS {
        // One name tries to forge a log line.
        let user = match i {
            1 => "evil\n2026-01-01T00:00:00Z  INFO forged",
            _ if i % 2 == 0 => "millrace",
            _ => "guess",
        };
        let error = attempt(server.port, user).await.error;
        assert!(error.contains(&('C', "28P01".to_owned())), "{error:?}");
    }
    // The burst is over once the address has been quiet for 5 s; its
    // summary comes then. 30 s is generous for a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = failure_lines(&server);
        if lines
            .iter()
            .any(|l| l.contains("failed logins from 127.0.0.1"))
        {
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no summary of the burst in the log: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let starts: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("password authentication failed for user"))
        .collect();
    // One line when the burst starts and one summary; a machine stalled
    // for 5 s between two attempts could split it, so allow a few, far
    // fewer than one per attempt.
    assert!(lines.len() <= 6, "{lines:#?}");
    assert!(starts[0].contains("\"millrace\""), "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains("WARN")), "{lines:#?}");
    assert!(
        !server.log().iter().any(|l| l.starts_with("2026-01-01")),
        "a user name forged a log line"
    );
    if starts.len() == 1 {
        let summary = lines
            .iter()
            .find(|l| l.contains("failed logins from"))
            .expect("summary");
        assert!(
            summary.contains(&format!("{ATTEMPTS} failed logins from 127.0.0.1")),
            "{summary}"
        );
        assert!(
            summary.contains(r#""evil\n2026-01-01T00:00:00Z  INFO forged", "guess", "millrace""#),
            "{summary}"
        );
    }
    server.stop();
}

/// The SQLSTATE and severity of a failed statement.
fn failure(e: &tokio_postgres::Error) -> (String, String, String) {
    let db = e.as_db_error().expect("a server error");
    (
        db.severity().to_owned(),
        db.code().code().to_owned(),
        db.message().to_owned(),
    )
}

/// Waits (generously: the server closes at once) for `client` to notice
/// that its connection was closed.
async fn closed(client: &tokio_postgres::Client) -> bool {
    for _ in 0..100 {
        if client.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_users_sessions_end_at_their_next_statement() {
    let server = password_server("login-drop");
    let port = server.port;
    let admin = login(port, "millrace", "admin-pw").await.expect("admin");
    admin
        .batch_execute(
            "CREATE USER u PASSWORD 'u-pw'; CREATE USER w PASSWORD 'w-pw'; \
             CREATE USER keep PASSWORD 'keep-pw'",
        )
        .await
        .expect("create users");
    let u = login(port, "u", "u-pw").await.expect("u");
    let w = login(port, "w", "w-pw").await.expect("w");
    let keep = login(port, "keep", "keep-pw").await.expect("keep");
    for c in [&u, &w, &keep] {
        c.batch_execute("SELECT 1").await.expect("logged in");
    }

    // A password change keeps the sessions the user has.
    admin
        .batch_execute("ALTER USER keep WITH PASSWORD 'new-pw'")
        .await
        .expect("alter");
    keep.batch_execute("SELECT 1")
        .await
        .expect("after ALTER USER");

    // A user cannot drop itself (PostgreSQL: 55006).
    let err = keep
        .batch_execute("DROP USER keep")
        .await
        .expect_err("self");
    assert_eq!(
        failure(&err),
        (
            "ERROR".into(),
            "55006".into(),
            "current user cannot be dropped".into()
        )
    );

    admin.batch_execute("DROP USER u, w").await.expect("drop");
    // The simple query protocol…
    let err = u.batch_execute("SELECT 1").await.expect_err("u is gone");
    assert_eq!(
        failure(&err),
        (
            "FATAL".into(),
            "28000".into(),
            "role \"u\" does not exist".into()
        )
    );
    assert!(closed(&u).await, "u's connection stays open");
    // …and the extended one.
    let err = w.query("SELECT 1", &[]).await.expect_err("w is gone");
    assert_eq!(
        failure(&err),
        (
            "FATAL".into(),
            "28000".into(),
            "role \"w\" does not exist".into()
        )
    );
    assert!(closed(&w).await, "w's connection stays open");

    // Nobody else is affected.
    admin
        .batch_execute("SELECT 1")
        .await
        .expect("admin goes on");
    keep.query("SELECT 1", &[]).await.expect("keep goes on");
    assert!(!admin.is_closed() && !keep.is_closed());

    // A new user of the same name is another user: it logs in, and the
    // old name's drop does not end its sessions.
    admin
        .batch_execute("CREATE USER u PASSWORD 'again'")
        .await
        .expect("create again");
    let u2 = login(port, "u", "again").await.expect("new u");
    u2.batch_execute("SELECT 1").await.expect("new u works");
    server.stop();
}
