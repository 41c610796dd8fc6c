//! Accepting connections and shutting down cleanly.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::Engine;
use crate::pg::{Frontend, Handlers};

/// Opens the data directory, listens, and serves connections until
/// `shutdown` resolves. Storage is flushed after every commit, so stopping
/// only needs to stop accepting and let in-flight statements finish.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let engine = Engine::open(&config.data_dir).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot open data directory {}: {e}",
            config.data_dir.display()
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
    let frontend = Frontend::new(engine.clone());
    tokio::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let h = Arc::new(Handlers(frontend.connection()));
                    connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, h).await {
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
