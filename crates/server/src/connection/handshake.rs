//! Connection negotiation: protocol header, start/start-ok (authentication),
//! tune/tune-ok, open/open-ok.
//!
//! spec: "the server MUST respond with a valid protocol header and then close
//! the socket connection" when the client's header is not one it accepts.

use std::net::{IpAddr, SocketAddr};

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::warn;
use warren_codec::nesting::{check_table, MAX_NESTING};
use warren_codec::{CodecError, Frame, FrameCodec, PROTOCOL_HEADER};

use super::liveness::Counted;
use crate::access::Access;
use crate::broker::{Broker, ConnectionSlot};
use crate::AmqpError;

/// The largest frame read before connection.open: a client that has not
/// logged in cannot make the broker buffer more than this. RabbitMQ compares
/// the payload, without the 8 octets of framing, with 4096 (3.10 takes a
/// 4104-octet start-ok and resets the connection at 4105).
pub(crate) const PRE_OPEN_FRAME_MAX: u32 = 4096 + 8;

/// What the handshake settled.
#[derive(Debug)]
pub(crate) struct Negotiated {
    /// The user, and what they may do in the vhost.
    pub access: Access,
    pub vhost: std::sync::Arc<crate::vhost::VHost>,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// The client handles a server-sent basic.cancel.
    pub consumer_cancel_notify: bool,
    /// The client announced connection.blocked: it is told when an alarm
    /// holds its publishes.
    pub connection_blocked: bool,
    /// This connection's place under the connection limit.
    pub slot: ConnectionSlot,
}

/// Why the handshake did not produce a connection.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Answered already (bad protocol header), or the socket went away:
    /// just close.
    Closed,
    /// Close the connection with this error.
    Error(AmqpError),
    /// The client sent connection.close during the handshake; reply close-ok.
    ClientClosed,
}

impl From<AmqpError> for Refused {
    fn from(e: AmqpError) -> Self {
        Refused::Error(e)
    }
}

/// The socket's read half, boxed so that tests and fuzzers can serve an
/// in-memory stream through the same code.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The socket's write half.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;
pub(crate) type Reader = FramedRead<Counted<ReadHalf>, FrameCodec>;
pub(crate) type Writer = FramedWrite<Counted<WriteHalf>, FrameCodec>;

/// The capabilities this broker has, announced in connection.start. Only
/// what works is listed, so clients never rely on a missing feature.
fn server_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "consumer_priorities",
        "direct_reply_to",
        "per_consumer_qos",
        "authentication_failure_close",
        "connection.blocked",
    ] {
        capabilities.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    let mut text = |k: &str, v: &str| {
        props.insert(k.into(), AMQPValue::LongString(v.into()));
    };
    text("product", "Warren");
    text("version", env!("CARGO_PKG_VERSION"));
    text("platform", "Rust");
    text("copyright", "Copyright (c) the Warren authors");
    text("information", "Licensed under the Apache License 2.0");
    props.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    props
}

async fn next_method(reader: &mut Reader) -> Result<AMQPClass, Refused> {
    loop {
        match reader.next().await {
            Some(Ok(Frame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_))))) => {
                return Err(Refused::ClientClosed)
            }
            Some(Ok(Frame::Method(0, method))) => return Ok(method),
            Some(Ok(Frame::Heartbeat(0))) => continue,
            Some(Ok(_)) => {
                return Err(AmqpError::command_invalid("expected a connection method on channel 0").into())
            }
            Some(Err(CodecError::Frame { code, text })) => return Err(AmqpError::hard(code, text).into()),
            Some(Err(_)) | None => return Err(Refused::Closed),
        }
    }
}

fn unexpected(method: &AMQPClass, expected: &str) -> Refused {
    AmqpError::command_invalid(format!("expected '{expected}'"))
        .for_method(method.get_amqp_class_id(), method.get_amqp_method_id())
        .into()
}

/// Runs the handshake up to open-ok.
pub(crate) async fn negotiate(
    reader: &mut Reader,
    writer: &mut Writer,
    broker: &Broker,
    peer: SocketAddr,
    external: Option<String>,
) -> Result<Negotiated, Refused> {
    let config = &broker.config;
    match reader.next().await {
        Some(Ok(Frame::ProtocolHeader)) => {}
        Some(Err(CodecError::ProtocolHeader(_))) => {
            // spec: answer with the header we do speak, then close.
            let _ = tokio::io::AsyncWriteExt::write_all(writer.get_mut(), PROTOCOL_HEADER).await;
            return Err(Refused::Closed);
        }
        _ => return Err(Refused::Closed),
    }
    let send = |m: connection::AMQPMethod| Frame::Method(0, AMQPClass::Connection(m));
    // EXTERNAL only when configured, and to a client whose certificate was
    // verified.
    let offered: Vec<&str> = config
        .auth_mechanisms
        .iter()
        .map(String::as_str)
        .filter(|m| *m != "EXTERNAL" || external.is_some())
        .collect();
    writer
        .send(send(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: offered.join(" ").into(),
            locales: "en_US".into(),
        })))
        .await
        .map_err(|_| Refused::Closed)?;

    let method = next_method(reader).await?;
    let AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)) = &method else {
        return Err(unexpected(&method, "connection.start-ok"));
    };
    let capability = |name: &str| match start_ok.client_properties.inner().get("capabilities") {
        Some(AMQPValue::FieldTable(caps)) => matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true))),
        _ => false,
    };
    let consumer_cancel_notify = capability("consumer_cancel_notify");
    let connection_blocked = capability("connection.blocked");
    let mechanism = start_ok.mechanism.as_str();
    let credentials = match mechanism {
        other if !offered.contains(&other) => {
            return Err(
                AmqpError::command_invalid(format!("unknown authentication mechanism '{other}'"))
                    .for_method(10, 11)
                    .into(),
            )
        }
        "PLAIN" => plain(start_ok.response.as_bytes()),
        "AMQPLAIN" => amqplain(start_ok.response.as_bytes()),
        // The certificate's common name; RabbitMQ ignores the response.
        "EXTERNAL" => external.map(|user| (user, String::new())),
        other => {
            return Err(
                AmqpError::command_invalid(format!("unknown authentication mechanism '{other}'"))
                    .for_method(10, 11)
                    .into(),
            )
        }
    };
    // Why a login fails goes to the log with the peer, never the password;
    // the client only learns that it failed, as with RabbitMQ.
    let failure = match &credentials {
        None => Some(format!("{mechanism} response is malformed")),
        // EXTERNAL: the certificate is the credential; the user must exist.
        Some((user, _)) if mechanism == "EXTERNAL" && !broker.users.exists(user) => Some(format!(
            "no user '{user}' for the client certificate's common name"
        )),
        Some((user, password)) if mechanism != "EXTERNAL" && !broker.users.authenticate(user, password) => {
            Some(format!("invalid credentials for user '{user}'"))
        }
        Some((user, _)) if user == "guest" && !config.allow_remote_guest && !is_loopback(peer.ip()) => {
            Some("user 'guest' can only connect via localhost".to_owned())
        }
        Some(_) => None,
    };
    let user = credentials.map(|(user, _)| user).unwrap_or_default();
    if let Some(reason) = failure {
        warn!(%peer, %mechanism, %reason, "authentication failed");
        let refusal = AmqpError::access_refused(format!(
            "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
        ));
        // A client that did not announce authentication_failure_close only
        // sees the socket close, as RabbitMQ does.
        return Err(if capability("authentication_failure_close") {
            refusal.into()
        } else {
            Refused::Closed
        });
    }

    writer
        .send(send(connection::AMQPMethod::Tune(connection::Tune {
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat: config.heartbeat,
        })))
        .await
        .map_err(|_| Refused::Closed)?;
    let method = next_method(reader).await?;
    let AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)) = &method else {
        return Err(unexpected(&method, "connection.tune-ok"));
    };
    // Zero means "no limit" for channel_max and frame_max: ours then applies.
    let channel_max = match tune_ok.channel_max {
        0 => config.channel_max,
        n => n.min(config.channel_max),
    };
    let frame_max = match tune_ok.frame_max {
        0 => config.frame_max,
        n => n.min(config.frame_max),
    };
    if frame_max < 4096 {
        return Err(
            AmqpError::not_allowed(format!("frame_max={frame_max} < 4096 min size"))
                .for_method(10, 31)
                .into(),
        );
    }
    // The client has the last word on heartbeats, as with RabbitMQ: it
    // proposes the lower non-zero value, or 0 to disable them.
    let heartbeat = tune_ok.heartbeat;
    writer.encoder_mut().set_frame_max(frame_max);

    let method = next_method(reader).await?;
    let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = &method else {
        return Err(unexpected(&method, "connection.open"));
    };
    let name = open.virtual_host.as_str();
    let Some(vhost) = broker.vhost(name) else {
        return Err(AmqpError::not_allowed(format!("vhost {name} not found"))
            .for_method(10, 40)
            .into());
    };
    let access = Access::open(broker.users.clone(), &user, name).map_err(|e| e.for_method(10, 40))?;
    let Some(slot) = broker.admit() else {
        return Err(AmqpError::not_allowed(format!(
            "connection refused: node connection limit ({}) is reached",
            config.max_connections.unwrap_or_default()
        ))
        .for_method(10, 40)
        .into());
    };
    // Logged in and opened: frames may now be as large as negotiated.
    reader.decoder_mut().set_frame_max(frame_max);
    writer
        .send(send(connection::AMQPMethod::OpenOk(connection::OpenOk {})))
        .await
        .map_err(|_| Refused::Closed)?;
    Ok(Negotiated {
        access,
        vhost,
        channel_max,
        heartbeat,
        consumer_cancel_notify,
        connection_blocked,
        slot,
    })
}

/// RabbitMQ's loopback check: 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// PLAIN (RFC 4616) as RabbitMQ reads it: `NUL user NUL password`, with an
/// empty authorization identity and nothing after the password. RabbitMQ
/// refuses an authzid (`admin\0guest\0guest`) and trailing fields.
fn plain(response: &[u8]) -> Option<(String, String)> {
    let rest = response.strip_prefix(&[0])?;
    let at = rest.iter().position(|b| *b == 0)?;
    let (user, password) = (&rest[..at], &rest[at + 1..]);
    if password.contains(&0) {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(password.to_vec()).ok()?,
    ))
}

/// AMQPLAIN: a field table's entries (without its length prefix) with LOGIN
/// and PASSWORD, both long strings, as RabbitMQ requires.
fn amqplain(response: &[u8]) -> Option<(String, String)> {
    let mut table = (response.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(response);
    // The parser recurses; bound the nesting first (see warren_codec::nesting).
    check_table(&table, MAX_NESTING).ok()?;
    let (_, table) = parse_field_table(&table[..]).ok()?;
    let field = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        _ => None,
    };
    Some((field("LOGIN")?, field("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_as_strict_as_rabbitmq() {
        let ok = Some(("guest".to_owned(), "secret".to_owned()));
        assert_eq!(plain(b"\0guest\0secret"), ok);
        assert_eq!(plain(b"\0\0"), Some((String::new(), String::new())));
        for refused in [
            &b"guest"[..],
            b"guest\0secret",
            b"admin\0guest\0secret",
            b"\0guest\0secret\0junk",
            b"\0guest\0secret\0",
            b"\0guest",
            b"",
            b"\0\xff\0pw",
        ] {
            assert_eq!(plain(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn amqplain_wants_long_strings() {
        let creds = amq_protocol::auth::Credentials::new("guest".into(), "pw".into());
        let response = creds.sasl_auth_string(amq_protocol::auth::SASLMechanism::AMQPlain);
        assert_eq!(amqplain(response.as_bytes()), Some(("guest".into(), "pw".into())));
        // LOGIN as a short string ('s' is a short int to RabbitMQ and
        // amq-protocol alike, so use an unparseable table) and garbage.
        assert_eq!(amqplain(b"\x05LOGINS\0\0\0\x01g"), None);
        assert_eq!(amqplain(b"\xff\xff"), None);
        // Nested 10,000 levels deep: refused without recursing.
        let mut deep = Vec::new();
        for _ in 0..10_000 {
            deep.extend_from_slice(b"\x01kF\xff\xff\xff\xff");
        }
        assert_eq!(amqplain(&deep), None);
    }

    #[test]
    fn loopback_is_127_slash_8_and_ipv6_one_also_mapped() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "127.255.255.254",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "0.0.0.0",
            "128.0.0.1",
            "::",
            "::ffff:10.0.0.1",
            "fe80::1",
            "192.168.1.1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
