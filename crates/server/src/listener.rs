//! Accepts connections and runs each in its own task; on shutdown, tells every
//! connection to close with 320 CONNECTION_FORCED and waits until they have.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tracing::{error, info};

use crate::connection;
use warren_store::{Store, StoreError};

use crate::vhost::VHost;
use crate::Config;

/// What every connection shares.
#[derive(Debug)]
pub struct Broker {
    /// Settings.
    pub config: Config,
    /// The one virtual host, `/`.
    pub vhost: Arc<VHost>,
    /// Source of connection ids, which tag logs and own exclusive queues.
    next_connection_id: AtomicU64,
    /// Open connections, for `max_connections`.
    open_connections: Arc<AtomicUsize>,
}

/// A connection's place under the connection limit, given back on drop.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Broker {
    /// Opens the store in the data directory, recovers what it holds, and
    /// makes the virtual host.
    pub fn open(config: Config) -> Result<Arc<Self>, StoreError> {
        let started = Instant::now();
        let store = Arc::new(Store::open(&config.data_dir, config.store_cache_bytes)?);
        let recovered = store.recover()?;
        let cleaned = recovered.cleaned;
        let (vhost, stats) = VHost::open("/", store, recovered);
        info!(
            exchanges = stats.exchanges,
            queues = stats.queues,
            messages = stats.messages,
            bindings = stats.bindings,
            cleaned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            data_dir = %config.data_dir.display(),
            "recovered durable state"
        );
        Ok(Arc::new(Self {
            config,
            vhost,
            next_connection_id: AtomicU64::new(1),
            open_connections: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// Takes a place for a newly opened connection, unless the limit is reached.
    pub(crate) fn admit(&self) -> Option<ConnectionSlot> {
        let limit = self.config.max_connections.unwrap_or(usize::MAX);
        self.open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot(self.open_connections.clone()))
    }

    fn connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Opens the store in `config.data_dir` and serves AMQP on `listener` until
/// `shutdown` completes, then closes every connection with 320
/// CONNECTION_FORCED and returns once all have ended and the store is synced.
/// Fails only if the store cannot be opened or recovered.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> Result<(), StoreError> {
    let broker = Broker::open(config)?;
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
    if let Err(e) = broker.vhost.store.close() {
        error!(error = %e, "final store sync failed");
    }
    info!("shut down");
    Ok(())
}
