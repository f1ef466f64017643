//! `warren ping`: whether a broker answers, for health checks (a container's
//! HEALTHCHECK, a Kubernetes probe), in the spirit of `rabbitmq-diagnostics
//! ping`. It opens a connection, sends the protocol header and waits for
//! connection.start: the listener accepts and a connection task runs. It
//! needs no credentials, and leaves before logging in.

use std::net::SocketAddr;
use std::time::Duration;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::AMQPValue;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use warren_codec::{Frame, FrameCodec, PROTOCOL_HEADER};

/// Asks the broker at `addr` to start a connection, within `timeout`; its
/// product and version, or why not.
pub async fn ping(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        stream
            .write_all(PROTOCOL_HEADER)
            .await
            .map_err(|e| format!("cannot write: {e}"))?;
        let mut frames = FramedRead::new(stream, FrameCodec::client(4096));
        match frames.next().await {
            Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Start(start))))) => {
                let property = |key: &str| match start.server_properties.inner().get(key) {
                    Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    _ => "?".to_owned(),
                };
                Ok(format!("{} {}", property("product"), property("version")))
            }
            Some(Ok(other)) => Err(format!("expected connection.start, got {other:?}")),
            Some(Err(e)) => Err(format!("not an AMQP 0-9-1 broker: {e}")),
            None => Err("the broker closed the connection".to_owned()),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
}

/// Where to reach a broker listening on `bind`: a wildcard address is
/// reached on the loopback.
pub fn local_address(bind: SocketAddr) -> SocketAddr {
    // `[::]` is dual-stack, or IPv4 after the fallback: the IPv4 loopback
    // reaches it either way.
    match bind.ip().is_unspecified() {
        true => SocketAddr::from(([127, 0, 0, 1], bind.port())),
        false => bind,
    }
}
