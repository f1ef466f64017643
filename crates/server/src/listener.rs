//! Accepts connections and runs each in its own task; on shutdown, tells every
//! connection to close with 320 CONNECTION_FORCED and waits until they have.
//!
//! [`bind`] opens the listeners: by default one on `[::]`, dual-stack, so
//! that IPv4 and IPv6 clients both connect, as RabbitMQ's default listener
//! takes both (a client such as Node's resolves `localhost` to `::1` first).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use warren_store::StoreError;

use crate::broker::Broker;
use crate::connection::{self, ReadHalf, WriteHalf};
use crate::Config;

/// A bound socket: plain AMQP (5672), or AMQP over TLS (5671).
pub struct Listener {
    socket: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    /// Plain AMQP.
    pub fn plain(socket: TcpListener) -> Self {
        Self { socket, tls: None }
    }

    /// AMQP over TLS ([`crate::tls`]).
    pub fn tls(socket: TcpListener, acceptor: TlsAcceptor) -> Self {
        Self {
            socket,
            tls: Some(acceptor),
        }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Opens the store in `config.data_dir` and serves AMQP on `listeners`
/// until `shutdown` completes (see [`serve`]). Fails only if the store
/// cannot be opened or recovered. The binary opens the broker before it
/// binds its port instead, so that nothing connects before recovery is done.
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Config,
    shutdown: impl Future,
) -> Result<(), StoreError> {
    let broker = Broker::open(config).await?;
    serve(
        broker,
        listeners.into_iter().map(Listener::plain).collect(),
        shutdown,
    )
    .await;
    Ok(())
}

/// Opens a listener on each of `addrs`. An IPv6 wildcard or address takes
/// IPv4 clients too (dual-stack), unless an IPv4 address with the same port
/// is also listed. Where the machine has no IPv6, `[::]` falls back to
/// `0.0.0.0` on the same port, with a warning.
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|&addr| {
            let v4_too = addrs.iter().any(|a| a.is_ipv4() && a.port() == addr.port());
            match bind_one(addr, !v4_too) {
                Err(e) if addr.ip() == IpAddr::from([0u16; 8]) && ipv6_missing(&e) => {
                    warn!(%addr, error = %e, "no IPv6 here: listening on IPv4 only");
                    bind_one(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()), false)
                }
                bound => bound,
            }
        })
        .collect()
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    // A restarted broker binds its port at once, despite connections of
    // the last run in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

fn ipv6_missing(e: &io::Error) -> bool {
    // EAFNOSUPPORT: no IPv6 in the kernel; EADDRNOTAVAIL: none configured.
    matches!(e.raw_os_error(), Some(97 | 99))
}

/// Serves AMQP on `listeners` until `shutdown` completes, then closes every
/// connection with 320 CONNECTION_FORCED and returns once all have ended
/// and the store is closed.
pub async fn serve(broker: std::sync::Arc<Broker>, listeners: Vec<Listener>, shutdown: impl Future) {
    // Every connection task holds a receiver; a send asks them all to close.
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    // Every connection task holds a clone of this sender; recv() returns None
    // once the last one has dropped it, i.e. every connection has ended.
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    // One task accepts on each listener and hands the sockets here.
    let (accepted_tx, mut accepted_rx) = mpsc::channel(64);
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                match listener.tls {
                    None => info!(%addr, "listening for AMQP 0-9-1 connections"),
                    Some(_) => info!(%addr, "listening for AMQP 0-9-1 connections over TLS"),
                }
            }
            let accepted = accepted_tx.clone();
            tokio::spawn(async move {
                loop {
                    let next = listener.socket.accept().await;
                    let next = next.map(|(socket, peer)| (socket, peer, listener.tls.clone()));
                    if next.is_err() {
                        // Out of file descriptors and the like: back off,
                        // keep serving the others.
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    if accepted.send(next).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(accepted_tx);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            Some(accepted) = accepted_rx.recv() => match accepted {
                Ok((socket, peer, tls)) => {
                    let _ = socket.set_nodelay(true);
                    let shutdown = notify_shutdown.subscribe();
                    let done = shutdown_complete_tx.clone();
                    let (broker, id) = (broker.clone(), broker.connection_id());
                    tokio::spawn(async move {
                        if let Some((read, write, external)) = open(socket, peer, tls, &broker).await {
                            connection::serve(broker, id, read, write, peer, external, shutdown).await;
                        }
                        drop(done);
                    });
                }
                Err(e) => error!(error = %e, "accept failed"),
            },
            _ = &mut shutdown => break,
        }
    }
    info!("shutting down: closing every connection");
    // No new connections: the listeners close with their tasks.
    for acceptor in &acceptors {
        acceptor.abort();
    }
    let _ = notify_shutdown.send(());
    drop(shutdown_complete_tx);
    let _ = shutdown_complete_rx.recv().await;
    // Let every queue finish what is already in its inbox before the final
    // sync and the clean-shutdown mark.
    for vhost in broker.vhosts() {
        vhost.quiesce().await;
    }
    let store = broker.store.clone();
    match tokio::task::spawn_blocking(move || store.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "closing the store failed"),
        Err(e) => error!(error = %e, "closing the store failed"),
    }
    info!("shut down");
}

/// The socket's two halves, after the TLS handshake on a TLS listener, with
/// the common name of a verified client certificate (for EXTERNAL). `None`
/// if the handshake failed or took longer than a connection's handshake
/// may: the client goes away without a word, as from RabbitMQ.
async fn open(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    broker: &Broker,
) -> Option<(ReadHalf, WriteHalf, Option<String>)> {
    let Some(acceptor) = tls else {
        let (read, write) = socket.into_split();
        return Some((Box::new(read), Box::new(write), None));
    };
    match tokio::time::timeout(broker.config.handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let external = crate::tls::peer_common_name(stream.get_ref().1.peer_certificates());
            let (read, write) = tokio::io::split(stream);
            Some((Box::new(read), Box::new(write), external))
        }
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            warn!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reaches(listener: &TcpListener, ip: IpAddr) -> bool {
        let addr = SocketAddr::new(ip, listener.local_addr().unwrap().port());
        let (connected, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        connected.is_ok() && accepted.is_ok()
    }

    #[tokio::test]
    async fn the_ipv6_wildcard_takes_ipv4_clients_too() {
        let listeners = bind(&["[::]:0".parse().unwrap()]).unwrap();
        assert_eq!(listeners.len(), 1);
        assert!(reaches(&listeners[0], Ipv4Addr::LOCALHOST.into()).await);
        if listeners[0].local_addr().unwrap().is_ipv6() {
            assert!(reaches(&listeners[0], std::net::Ipv6Addr::LOCALHOST.into()).await);
        }
    }

    #[tokio::test]
    async fn several_addresses_each_get_a_listener() {
        let addrs: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        let Ok(listeners) = bind(&addrs) else {
            return; // no IPv6 loopback here
        };
        assert_eq!(listeners.len(), 2);
        assert!(reaches(&listeners[0], Ipv4Addr::LOCALHOST.into()).await);
        assert!(reaches(&listeners[1], std::net::Ipv6Addr::LOCALHOST.into()).await);
    }
}
