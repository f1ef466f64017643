//! Accepts connections and runs each in its own task; on shutdown, tells every
//! connection to close with 320 CONNECTION_FORCED and waits until they have.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tracing::{error, info};

use warren_store::StoreError;

use crate::broker::Broker;
use crate::connection;
use crate::Config;

/// Opens the store in `config.data_dir` and serves AMQP on `listener` until
/// `shutdown` completes (see [`serve`]). Fails only if the store cannot be
/// opened or recovered. The binary opens the broker before it binds its
/// port instead, so that nothing connects before recovery is done.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> Result<(), StoreError> {
    let broker = Broker::open(config).await?;
    serve(broker, listener, shutdown).await;
    Ok(())
}

/// Serves AMQP on `listener` until `shutdown` completes, then closes every
/// connection with 320 CONNECTION_FORCED and returns once all have ended
/// and the store is closed.
pub async fn serve(broker: std::sync::Arc<Broker>, listener: TcpListener, shutdown: impl Future) {
    // Every connection task holds a receiver; a send asks them all to close.
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    // Every connection task holds a clone of this sender; recv() returns None
    // once the last one has dropped it, i.e. every connection has ended.
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening for AMQP 0-9-1 connections");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let shutdown = notify_shutdown.subscribe();
                    let done = shutdown_complete_tx.clone();
                    let (broker, id) = (broker.clone(), broker.connection_id());
                    let (read, write) = socket.into_split();
                    tokio::spawn(async move {
                        connection::serve(broker, id, Box::new(read), Box::new(write), peer, shutdown).await;
                        drop(done);
                    });
                }
                // Out of file descriptors and the like: back off, keep serving the others.
                Err(e) => {
                    error!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    info!("shutting down: closing every connection");
    drop(listener);
    let _ = notify_shutdown.send(());
    drop(shutdown_complete_tx);
    let _ = shutdown_complete_rx.recv().await;
    // Let every queue finish what is already in its inbox before the final
    // sync and the clean-shutdown mark.
    broker.vhost.quiesce().await;
    let store = broker.vhost.store.clone();
    match tokio::task::spawn_blocking(move || store.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "closing the store failed"),
        Err(e) => error!(error = %e, "closing the store failed"),
    }
    info!("shut down");
}
