//! Connection negotiation: protocol header, start/start-ok (authentication),
//! tune/tune-ok, open/open-ok.
//!
//! spec: "the server MUST respond with a valid protocol header and then close
//! the socket connection" when the client's header is not one it accepts.

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use futures::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};
use warren_codec::{CodecError, Frame, FrameCodec, PROTOCOL_HEADER};

use crate::{AmqpError, Config};

/// What the handshake settled.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub user: String,
    pub vhost: String,
    pub channel_max: u16,
    pub heartbeat: u16,
    /// The client handles a server-sent basic.cancel.
    pub consumer_cancel_notify: bool,
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

pub(crate) type Reader = FramedRead<OwnedReadHalf, FrameCodec>;
pub(crate) type Writer = FramedWrite<OwnedWriteHalf, FrameCodec>;

/// The capabilities this broker has, announced in connection.start. Only
/// what works is listed, so clients never rely on a missing feature.
fn server_properties() -> FieldTable {
    let mut capabilities = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
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
    config: &Config,
) -> Result<Negotiated, Refused> {
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
    writer
        .send(send(connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: "PLAIN AMQPLAIN".into(),
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
    let mechanism = start_ok.mechanism.as_str();
    let (user, password) = match mechanism {
        "PLAIN" => plain(&start_ok.response),
        "AMQPLAIN" => amqplain(&start_ok.response),
        other => {
            return Err(
                AmqpError::command_invalid(format!("unknown authentication mechanism '{other}'"))
                    .for_method(10, 11)
                    .into(),
            )
        }
    }
    .unwrap_or_default();
    if config.users.get(&user) != Some(&password) {
        tracing::warn!(%user, %mechanism, "authentication failed");
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
    reader.decoder_mut().set_frame_max(frame_max);
    writer.encoder_mut().set_frame_max(frame_max);

    let method = next_method(reader).await?;
    let AMQPClass::Connection(connection::AMQPMethod::Open(open)) = &method else {
        return Err(unexpected(&method, "connection.open"));
    };
    let vhost = open.virtual_host.as_str();
    if vhost != "/" {
        return Err(AmqpError::not_allowed(format!("vhost {vhost} not found"))
            .for_method(10, 40)
            .into());
    }
    writer
        .send(send(connection::AMQPMethod::OpenOk(connection::OpenOk {})))
        .await
        .map_err(|_| Refused::Closed)?;
    Ok(Negotiated {
        user,
        vhost: vhost.to_owned(),
        channel_max,
        heartbeat,
        consumer_cancel_notify,
    })
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
fn plain(response: &LongString) -> Option<(String, String)> {
    let mut parts = response.as_bytes().split(|b| *b == 0);
    let (_authzid, user, password) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(password.to_vec()).ok()?,
    ))
}

/// AMQPLAIN: a field table's entries (without its length prefix) with LOGIN
/// and PASSWORD.
fn amqplain(response: &LongString) -> Option<(String, String)> {
    let bytes = response.as_bytes();
    let mut table = (bytes.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(bytes);
    let (_, table) = parse_field_table(&table[..]).ok()?;
    let field = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((field("LOGIN")?, field("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_amqplain_responses() {
        assert_eq!(
            plain(&"\0guest\0secret".into()),
            Some(("guest".into(), "secret".into()))
        );
        assert_eq!(plain(&"guest".into()), None);
        let creds = amq_protocol::auth::Credentials::new("guest".into(), "pw".into());
        let response = creds.sasl_auth_string(amq_protocol::auth::SASLMechanism::AMQPlain);
        assert_eq!(amqplain(&response), Some(("guest".into(), "pw".into())));
    }
}
