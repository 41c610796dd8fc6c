//! Accepting connections and shutting down cleanly.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{AuthMode, Config};
use crate::pg::{Frontend, Handlers, Startup};
use crate::sqlstate::describe;
use millrace_engine::Engine;

/// Sends log lines to stderr, filtered by `filter` (`RUST_LOG` syntax, as
/// `--log` takes it; an invalid filter falls back to `info`).
pub fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Opens the data directory, listens, and serves connections until
/// `shutdown` resolves. Every write is in the log when it returns, so
/// stopping only needs to stop accepting, let in-flight statements finish
/// and write a last checkpoint (which spares the next start a replay).
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if config.auth == AuthMode::Trust
        && !config.listen.ip().is_loopback()
        && !config.allow_trust_remote
    {
        anyhow::bail!(
            "refusing to listen on {} without authentication: anyone who can reach it could log in. \
             Use --auth password (with users made by CREATE USER … PASSWORD, or MILLRACE_PASSWORD), \
             listen on 127.0.0.1, or pass --allow-trust-remote if the network is trusted",
            config.listen
        );
    }
    let options = millrace_engine::EngineOptions {
        checkpoint_interval: Some(std::time::Duration::from_millis(
            config.checkpoint_interval_ms,
        )),
        workers: usize::from(config.workers),
        ..crate::engine_options()
    };
    let engine = Engine::open_with(&config.data_dir, options)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open data directory {}: {}",
                config.data_dir.display(),
                describe(&e)
            )
        })?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        "ready, listening on {local} (connect with: psql -h {} -p {})",
        local.ip(),
        local.port()
    );
    let users = engine.users();
    if config.auth == AuthMode::Password {
        if let Some(password) = &config.password {
            users.set_password(&config.user, password).map_err(|e| {
                anyhow::anyhow!(
                    "cannot set the password of {}: {}",
                    config.user,
                    describe(&e)
                )
            })?;
        } else if users
            .is_empty()
            .map_err(|e| anyhow::anyhow!("cannot read users: {}", describe(&e)))?
        {
            anyhow::bail!(
                "--auth password, but no user exists yet: set MILLRACE_PASSWORD to create user \"{}\" (or --user / MILLRACE_USER for another name)",
                config.user
            );
        }
    }
    let tls = tls_acceptor(&config)?;
    let frontend = Frontend::new(engine.clone());
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let connection = frontend.connection();
                    let startup = match config.auth {
                        AuthMode::Trust => Startup::Trust(connection.clone()),
                        AuthMode::Password => Startup::password(users.clone()),
                    };
                    let h = Arc::new(Handlers {
                        frontend: connection,
                        startup: Arc::new(startup),
                    });
                    let tls = tls.clone();
                    connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, h).await {
                            tracing::debug!(%peer, "connection ended with error: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    tracing::info!("shutting down: no new connections");
    let grace = tokio::time::sleep(std::time::Duration::from_secs(5));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => { connections.abort_all(); break; }
            next = connections.join_next() => if next.is_none() { break },
        }
    }
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The TLS acceptor of `--tls-cert` / `--tls-key`, if given.
fn tls_acceptor(config: &Config) -> anyhow::Result<Option<pgwire::tokio::TlsAcceptor>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("TLS certificate {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("TLS certificate and key do not fit: {e}"))?;
    // PostgreSQL 17 clients may negotiate direct TLS by this ALPN name.
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(pgwire::tokio::TlsAcceptor::from(Arc::new(tls))))
}
