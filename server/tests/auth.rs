//! Authentication against the real binary: trust only on loopback unless
//! allowed, SCRAM-SHA-256 passwords for users kept durably, 28P01 for a
//! wrong password or an unknown user (tests/login.rs: that the two look
//! alike, failure logging, dropped users' sessions).

mod common;

use std::process::Command;

use common::{scratch_dir, TestServer};
use tokio_postgres::NoTls;

async fn login(port: u16, user: &str, password: &str) -> Result<tokio_postgres::Client, String> {
    let conninfo =
        format!("host=127.0.0.1 port={port} user={user} password={password} dbname=millrace");
    match tokio_postgres::connect(&conninfo, NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
        Err(e) => Err(e
            .as_db_error()
            .map(|d| d.code().code().to_string())
            .unwrap_or_else(|| e.to_string())),
    }
}

#[test]
fn trust_is_refused_on_a_non_loopback_address() {
    let dir = scratch_dir("auth-refuse");
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run millrace");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );

    // A password mode with nobody to log in as is refused too.
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "password",
            "--data-dir",
        ])
        .arg(&dir)
        .env_remove("MILLRACE_PASSWORD")
        .output()
        .expect("run millrace");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user exists yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_passwords_for_durable_users() {
    let dir = scratch_dir("auth-scram");
    let args = ["--auth", "password"];
    let server = TestServer::start_with(&dir, &args, &[("MILLRACE_PASSWORD", "bootstrap-pw")]);
    let port = server.port;

    assert_eq!(
        login(port, "millrace", "wrong").await.err().as_deref(),
        Some("28P01")
    );
    assert_eq!(
        login(port, "nobody", "x").await.err().as_deref(),
        Some("28P01")
    );
    let admin = login(port, "millrace", "bootstrap-pw")
        .await
        .expect("bootstrap user");
    admin
        .batch_execute("CREATE USER alice WITH PASSWORD 'wonder'; CREATE TABLE t (x INT)")
        .await
        .expect("create user");
    let err = admin
        .batch_execute("CREATE USER alice PASSWORD 'again'")
        .await
        .expect_err("duplicate user");
    assert_eq!(err.code().map(|c| c.code()), Some("42710"));

    let alice = login(port, "alice", "wonder").await.expect("alice logs in");
    alice
        .batch_execute("ALTER USER alice WITH PASSWORD 'land'")
        .await
        .expect("alter user");
    assert_eq!(
        login(port, "alice", "wonder").await.err().as_deref(),
        Some("28P01")
    );
    // A failed login affects no other session.
    assert_eq!(
        alice
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("query")
            .get::<_, i64>(0),
        0
    );
    drop(alice);
    drop(admin);

    // Users survive a restart (without MILLRACE_PASSWORD this time).
    server.stop();
    let server = TestServer::start_with(&dir, &args, &[]);
    let port = server.port;
    let alice = login(port, "alice", "land")
        .await
        .expect("alice after restart");
    // A user cannot drop itself (as PostgreSQL: 55006)…
    let err = alice
        .batch_execute("DROP USER alice")
        .await
        .expect_err("drop self");
    assert_eq!(err.code().map(|c| c.code()), Some("55006"));
    // …another can (its sessions end: see tests/login.rs).
    let admin = login(port, "millrace", "bootstrap-pw")
        .await
        .expect("bootstrap user after restart");
    admin
        .batch_execute("DROP USER alice")
        .await
        .expect("drop user");
    assert_eq!(
        login(port, "alice", "land").await.err().as_deref(),
        Some("28P01")
    );
    let err = admin
        .batch_execute("DROP USER alice")
        .await
        .expect_err("already dropped");
    assert_eq!(err.code().map(|c| c.code()), Some("42704"));
    admin
        .batch_execute("DROP USER IF EXISTS alice")
        .await
        .expect("if exists");
    server.stop();
}

/// `--tls-cert` / `--tls-key`: psql with `sslmode=require` gets an
/// encrypted session (certificate made here with openssl).
#[test]
fn tls_with_a_given_certificate_and_key() {
    if Command::new("openssl").arg("version").output().is_err()
        || Command::new("psql").arg("--version").output().is_err()
    {
        panic!("openssl and psql are required for this test (apt-get install openssl postgresql-client)");
    }
    let dir = scratch_dir("auth-tls");
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let data = dir.join("data");
    let (cert, key) = (
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );
    let server = TestServer::start_with(&data, &["--tls-cert", &cert, "--tls-key", &key], &[]);
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} user=me dbname=millrace sslmode=require",
            server.port
        ))
        .args(["-X", "-c", "\\conninfo", "-c", "SELECT 40 + 2"])
        .output()
        .expect("run psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SSL connection (protocol: TLS"), "{stdout}");
    assert!(stdout.contains("42"), "{stdout}");
    server.stop();

    // A key that does not exist stops the server at startup, saying which.
    let out = Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            "/no/such.key",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("run millrace");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read TLS key /no/such.key"));
}
