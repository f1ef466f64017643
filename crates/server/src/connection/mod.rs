//! The connection task: one per client socket.
//!
//! Responsibilities:
//! - run the handshake ([`handshake`]) and start the writer task ([`writer`]);
//! - read frames and dispatch them to their channel, processing every frame
//!   already buffered before anything else (a burst of publishes is one batch);
//! - turn queue deliveries from its inbox into basic.deliver with a delivery
//!   tag, and remember them as unacked;
//! - count any octet received as a sign of life, and let the writer task
//!   send heartbeats and drop a peer silent, or not reading, for two
//!   intervals ([`liveness`], [`writer`]);
//! - turn every error into channel.close or connection.close, in one place
//!   ([`Connection::fail`]);
//! - on close, cleanly or not, requeue every unacked message, cancel every
//!   consumer and delete its exclusive queues.

pub(crate) mod handshake;
pub(crate) mod liveness;
pub(crate) mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{basic, channel, connection, AMQPClass};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::{debug, info, instrument, warn};
use warren_codec::{CodecError, ContentAssembler, Frame, FrameCodec, Message, Outbound};

use crate::access::Access;
use crate::alarm::Alarm;
use crate::broker::Broker;
use crate::channel::ack_timeout::Deadline;
use crate::channel::{Channel, ChannelState, PendingPublishes, QueueBatches, Settle};
use crate::events::{ConnEvent, ConnectionActivity, Delivery, Outcome, QueueCommand, QueueHandle};
use crate::stats::MessageCounters;
use crate::vhost::{RouteCache, VHost};
use crate::AmqpError;

pub use handshake::{ReadHalf, WriteHalf};
use handshake::{Refused, PRE_OPEN_FRAME_MAX};
use liveness::{Activity, Counted};

/// Frames handled before the connection looks at its inbox and flushes
/// publisher confirms.
const READ_BATCH: usize = 256;
/// What a connection's socket buffers start with.
const IDLE_BUFFER: usize = 256;
/// The read buffer of a connection that sends more than one frame at a
/// time: large enough for a read syscall to bring many messages.
const READ_BUFFER: usize = 16 * 1024;
/// How long a closing connection waits to queue its connection.close (the
/// writer may be full, for a peer that stopped reading).
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the server waits for connection.close-ok after sending close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the server leaves the socket to a client that closed the
/// connection to close, at most (RabbitMQ's `CLOSING_TIMEOUT`); a shutdown
/// does not wait for it.
const CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the writer may take to write what is left once the connection
/// has ended; then the socket is dropped. The three timeouts together keep a
/// shutdown under 5 s whatever the clients do.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// An open connection's state, owned by its task.
#[derive(Debug)]
pub struct Connection {
    pub(crate) id: u64,
    /// The user it logged in as, and their permissions in the vhost.
    pub(crate) access: Access,
    pub(crate) vhost: Arc<VHost>,
    /// Frames for the writer task; bounded, see [`writer`].
    writer: mpsc::Sender<writer::Out>,
    /// Given to every queue this connection consumes from. Unbounded so that
    /// a queue never waits on a connection; credit bounds it in practice.
    pub(crate) inbox: mpsc::UnboundedSender<ConnEvent>,
    pub(crate) channels: HashMap<u16, Channel>,
    channel_max: u16,
    /// Client announced consumer_cancel_notify.
    pub(crate) consumer_cancel_notify: bool,
    /// Client announced connection.blocked.
    connection_blocked: bool,
    /// The broker's alarm state ([`crate::alarm`]).
    alarm: watch::Receiver<Option<Alarm>>,
    /// A basic.publish that arrived during an alarm, held with the socket
    /// unread until the alarm clears; and whether blocked was sent for it.
    held: Option<(Frame, bool)>,
    /// Exclusive queues declared here, deleted when the connection closes.
    pub(crate) exclusive_queues: Vec<Arc<QueueHandle>>,
    /// Channels with publisher confirms not yet sent.
    pub(crate) pending_confirms: Vec<u16>,
    /// Acks not yet sent to their queues ([`Connection::defer_acks`]).
    pub(crate) pending_acks: QueueBatches<u64>,
    /// Routed messages not yet handed to their queues
    /// ([`Connection::flush_publishes`]).
    pub(crate) pending_publishes: PendingPublishes,
    /// Whether it handed the store a message since the last flush: only
    /// then does it wait for the store to catch up ([`Connection::flush_publishes`]).
    pub(crate) stored_since_flush: bool,
    /// When the peer was last heard from; paused while this task is busy.
    activity: Arc<Activity>,
    /// Body octets announced by content headers and not yet complete, over
    /// all channels (bounded by `Config::max_partial_bytes`).
    pub(crate) partial_bytes: u64,
    /// Where this connection's recent publishes were routed.
    pub(crate) route_cache: RouteCache,
    /// Limits from the broker's configuration.
    pub(crate) max_message_size: u64,
    pub(crate) max_partial_bytes: u64,
    /// The broker's consumer timeout (`Config::consumer_timeout`).
    pub(crate) consumer_timeout: Option<Duration>,
    /// The earliest deadline of an unacked delivery, which the frame loop's
    /// timer waits for ([`crate::channel::ack_timeout`]). It may be earlier
    /// than the true one (the delivery was acked since): the timer then
    /// finds nothing overdue and looks again.
    pub(crate) ack_deadline: Option<tokio::time::Instant>,
    /// What its closed channels counted, so that its totals never go down.
    closed_channels: MessageCounters,
}

/// How the frame loop ended.
enum End {
    /// The socket closed or failed, or the peer missed heartbeats.
    Lost,
    /// The peer sent connection.close; close-ok is due.
    ClientClosed,
    /// The server sent connection.close; wait for close-ok.
    ServerClosed,
}

/// Serves one socket from handshake to close.
#[instrument(name = "connection", skip_all, fields(peer = %peer, conn_id = id))]
pub async fn serve(
    broker: Arc<Broker>,
    id: u64,
    read: ReadHalf,
    write: WriteHalf,
    peer: SocketAddr,
    external: Option<String>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let config = &broker.config;
    let activity = Activity::new();
    // Both buffers start small: an idle connection keeps what its handshake
    // needed, not 8 KiB each way. The read buffer grows once the peer sends
    // batches ([`READ_BUFFER`]); the write buffer grows as writes need.
    let mut reader = FramedRead::with_capacity(
        Counted::new(read, activity.clone()),
        FrameCodec::new(PRE_OPEN_FRAME_MAX),
        IDLE_BUFFER,
    );
    let mut sink = FramedWrite::with_capacity(
        Counted::new(write, activity.clone()),
        FrameCodec::new(config.frame_max),
        IDLE_BUFFER,
    );
    let negotiated = tokio::select! {
        negotiated = tokio::time::timeout(
            config.handshake_timeout,
            handshake::negotiate(&mut reader, &mut sink, &broker, peer, external),
        ) => negotiated,
        // Not open yet: nothing to tell the client, just drop it.
        _ = shutdown.recv() => return,
    };
    let negotiated = match negotiated {
        Ok(Ok(n)) => n,
        Ok(Err(refused)) => {
            let close = match refused {
                Refused::Closed => None,
                Refused::ClientClosed => Some(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                Refused::Error(e) => {
                    warn!(code = e.code(), error = %e, "handshake refused");
                    Some(close_method(&e))
                }
            };
            if let Some(m) = close {
                let (writer, task) = writer::spawn(sink, None, shutdown.resubscribe());
                let _ = writer
                    .send(Outbound::Frame(Frame::Method(0, AMQPClass::Connection(m))).into())
                    .await;
                drop(writer);
                finish_writer(task).await;
                let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, discard_until_closed(&mut reader)).await;
            }
            return;
        }
        Err(_) => {
            warn!("handshake timed out");
            return;
        }
    };
    info!(user = %negotiated.access.user(), vhost = %negotiated.vhost.name, "connection opened");
    let heartbeat = (negotiated.heartbeat > 0).then(|| writer::Heartbeat {
        interval: Duration::from_secs(u64::from(negotiated.heartbeat)),
        activity: activity.clone(),
    });
    let (writer, writer_task) = writer::spawn(sink, heartbeat, shutdown.resubscribe());
    let (inbox, mut inbox_rx) = mpsc::unbounded_channel();
    let listed = broker.list_connection(
        id,
        peer,
        negotiated.access.user(),
        &negotiated.vhost.name,
        inbox.clone(),
    );
    // Opened while its vhost was being deleted, after the deletion closed
    // the vhost's listed connections: it closes too.
    if negotiated.vhost.is_deleted() {
        let reason = format!("vhost '{}' is deleted", negotiated.vhost.name);
        let _ = inbox.send(ConnEvent::Close(reason));
    }
    let mut conn = Connection {
        id,
        access: negotiated.access,
        vhost: negotiated.vhost.clone(),
        writer,
        inbox,
        channels: HashMap::new(),
        channel_max: negotiated.channel_max,
        consumer_cancel_notify: negotiated.consumer_cancel_notify,
        connection_blocked: negotiated.connection_blocked,
        alarm: broker.alarms.watch(),
        held: None,
        exclusive_queues: Vec::new(),
        pending_confirms: Vec::new(),
        pending_acks: QueueBatches::default(),
        pending_publishes: PendingPublishes::default(),
        stored_since_flush: false,
        activity,
        partial_bytes: 0,
        route_cache: RouteCache::default(),
        max_message_size: config.max_message_size,
        max_partial_bytes: config.max_partial_bytes,
        consumer_timeout: config.consumer_timeout,
        ack_deadline: None,
        closed_channels: MessageCounters::default(),
    };
    let end = conn.run(&mut reader, &mut inbox_rx, &mut shutdown).await;
    let mut released = false;
    match end {
        End::Lost => {}
        End::ClientClosed => {
            // RabbitMQ's order: the connection's channels end and its
            // exclusive queues go before close-ok, so a client that closes
            // and reconnects finds them gone...
            conn.release_everything(&mut inbox_rx).await;
            released = true;
            conn.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
            )
            .await;
            // ...and then the client closes the socket: RabbitMQ keeps it
            // open for the heartbeat timeout, or 30 s (probed on 3.10.8:
            // still open 5 s after close-ok). Closing it first hands a
            // client an end of stream it does not expect right after
            // close-ok. The writer stays up meanwhile: dropping it would
            // half-close the socket.
            let closing = match negotiated.heartbeat {
                hb @ 1..30 => Duration::from_secs(u64::from(hb)),
                _ => CLIENT_CLOSE_TIMEOUT,
            };
            tokio::select! {
                _ = tokio::time::timeout(closing, discard_until_closed(&mut reader)) => {}
                _ = shutdown.recv() => {}
            }
        }
        End::ServerClosed => {
            // spec: after sending close, discard everything until close-ok.
            let wait = async {
                loop {
                    match reader.next().await {
                        Some(Ok(Frame::Method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                        ))) => break,
                        // Both sides closed at once: answer, as RabbitMQ does.
                        Some(Ok(Frame::Method(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::Close(_)),
                        ))) => {
                            conn.send(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                    connection::CloseOk {},
                                )),
                            )
                            .await;
                            break;
                        }
                        Some(Ok(_)) => {}
                        // The framing is lost (the close was for a frame error).
                        Some(Err(_)) | None => {
                            discard_until_closed(&mut reader).await;
                            break;
                        }
                    }
                }
            };
            let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT, wait).await;
        }
    }
    if !released {
        conn.release_everything(&mut inbox_rx).await;
    }
    let vhost = conn.vhost.clone();
    let flows = conn.route_cache.flows(|f| vhost.retain_steps(f));
    broker.retire(conn.totals(), &conn.vhost.name, flows);
    drop(conn);
    drop(listed);
    drop(negotiated.slot);
    finish_writer(writer_task).await;
    info!("connection closed");
}

/// Reads and drops whatever the peer still sends until it closes: closing a
/// socket with unread bytes sends a reset, which can destroy the
/// connection.close just written before the peer reads it.
async fn discard_until_closed(reader: &mut handshake::Reader) {
    let mut scratch = [0u8; 4096];
    while let Ok(1..) = reader.get_mut().read(&mut scratch).await {}
}

/// Lets the writer write what is queued, for a while; a peer that does not
/// read by then loses it, and the socket is dropped.
async fn finish_writer(mut task: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await.is_err() {
        debug!("peer is not reading; dropping the socket");
        task.abort();
    }
}

fn is_publish(frame: &Frame) -> bool {
    matches!(
        frame,
        Frame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Publish(_)))
    )
}

fn close_method(e: &AmqpError) -> connection::AMQPMethod {
    connection::AMQPMethod::Close(connection::Close {
        reply_code: e.code(),
        reply_text: e.reply_text(),
        class_id: e.class_id,
        method_id: e.method_id,
    })
}

impl Connection {
    async fn run(
        &mut self,
        reader: &mut handshake::Reader,
        inbox: &mut mpsc::UnboundedReceiver<ConnEvent>,
        shutdown: &mut broadcast::Receiver<()>,
    ) -> End {
        // The writer task ends on its own when the peer is dead (see
        // [`writer`]); this clone only watches for that.
        let writer = self.writer.clone();
        let mut alarm = self.alarm.clone();
        // The alarm state as last seen: a publish checks the channel's
        // version (one atomic load), not its lock.
        let mut alarm_state = *alarm.borrow_and_update();
        // One timer, moved only when the earliest deadline changes.
        let mut armed = None;
        let ack_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(ack_timer);
        loop {
            if self.ack_deadline != armed {
                armed = self.ack_deadline;
                if let Some(at) = armed {
                    ack_timer.as_mut().reset(at);
                }
            }
            // Silence counts only while this task listens (see [`liveness`]);
            // a connection holding a publish for an alarm does not read its
            // socket, and RabbitMQ stops its heartbeat monitor then too.
            self.activity.busy(self.held.is_some());
            let result = tokio::select! {
                frame = reader.next(), if self.held.is_none() => {
                    self.activity.busy(true);
                    let mut frame = frame;
                    let mut handled = 0;
                    let mut result;
                    // Handle every frame already buffered before anything else.
                    loop {
                        result = match frame {
                            None => return End::Lost,
                            Some(Err(CodecError::Io(e))) => {
                                debug!(error = %e, "read failed");
                                return End::Lost;
                            }
                            Some(Err(CodecError::ProtocolHeader(_))) => return End::Lost,
                            Some(Err(CodecError::Frame { code, text })) => Err((0, AmqpError::hard(code, text))),
                            Some(Ok(frame)) if is_publish(&frame) => {
                                if alarm.has_changed().unwrap_or(false) {
                                    alarm_state = *alarm.borrow_and_update();
                                }
                                match alarm_state {
                                    Some(why) => {
                                        self.hold(frame, why).await;
                                        Ok(None)
                                    }
                                    None => self.handle_frame(frame).await,
                                }
                            }
                            Some(Ok(frame)) => self.handle_frame(frame).await,
                        };
                        handled += 1;
                        if !matches!(result, Ok(None)) || handled == READ_BATCH || self.held.is_some() {
                            break;
                        }
                        match reader.next().now_or_never() {
                            Some(next) => frame = next,
                            None => break,
                        }
                    }
                    self.flush_publishes().await;
                    self.flush_acks().await;
                    self.flush_confirms().await;
                    // A peer that sends batches gets a buffer to match; one
                    // that sends a heartbeat now and then keeps a small one.
                    let buffer = reader.read_buffer_mut();
                    if handled > 1 && buffer.capacity() < READ_BUFFER {
                        buffer.reserve(READ_BUFFER);
                    }
                    if handled == READ_BATCH {
                        // More is probably buffered: let the queues and the
                        // consumers' connections have their turn first. A
                        // publisher that never waits would otherwise run for
                        // its whole cooperative budget (thousands of
                        // messages) between two turns of its consumers.
                        tokio::task::yield_now().await;
                    }
                    result
                }
                Some(event) = inbox.recv() => {
                    self.activity.busy(true);
                    let mut result = self.handle_event(event).await;
                    for _ in 0..READ_BATCH {
                        if result.is_err() {
                            break;
                        }
                        match inbox.try_recv() {
                            Ok(event) => result = self.handle_event(event).await,
                            Err(_) => break,
                        }
                    }
                    self.flush_confirms().await;
                    result.map(|_| None).map_err(|e| (0, e))
                }
                // A held publish goes on once the alarm clears.
                changed = alarm.changed(), if self.held.is_some() => {
                    alarm_state = *alarm.borrow_and_update();
                    if changed.is_err() || alarm_state.is_none() {
                        self.release_held().await
                    } else {
                        Ok(None)
                    }
                }
                () = &mut ack_timer, if armed.is_some() => {
                    self.ack_deadline = None;
                    armed = None;
                    self.expire_unacked().await;
                    Ok(None)
                }
                _ = writer.closed() => return End::Lost,
                _ = shutdown.recv() => Err((0, AmqpError::connection_forced(
                    "broker forced connection closure with reason 'shutdown'",
                ))),
            };
            match result {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err((channel, error)) => {
                    if self.fail(channel, error).await {
                        return End::ServerClosed;
                    }
                }
            }
            if self.writer.is_closed() {
                return End::Lost;
            }
        }
    }

    /// Holds a basic.publish that arrived during an alarm, and tells a
    /// client that can hear it why (RabbitMQ's words): the socket is not
    /// read again until the alarm clears. RabbitMQ blocks the same way, at
    /// the first publish after the alarm, and never a connection that only
    /// consumes.
    async fn hold(&mut self, frame: Frame, why: Alarm) {
        info!(reason = why.reason(), "publishing connection blocked by an alarm");
        if self.connection_blocked {
            let blocked = connection::Blocked {
                reason: why.reason().into(),
            };
            self.send(0, AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked)))
                .await;
        }
        self.held = Some((frame, self.connection_blocked));
    }

    /// The alarm cleared: unblocked to a client that was told, then the
    /// held publish, and reading resumes.
    async fn release_held(&mut self) -> Result<Option<End>, (u16, AmqpError)> {
        let Some((frame, told)) = self.held.take() else {
            return Ok(None);
        };
        info!("publishing connection unblocked");
        if told {
            let unblocked = connection::AMQPMethod::Unblocked(connection::Unblocked {});
            self.send(0, AMQPClass::Connection(unblocked)).await;
        }
        self.handle_frame(frame).await
    }

    /// Sends one frame to the writer. A gone writer means a gone socket,
    /// which the read side notices.
    pub(crate) async fn send_frame(&self, frame: Frame) {
        let _ = self.writer.send(Outbound::Frame(frame).into()).await;
    }

    /// Sends a method on a channel.
    pub(crate) async fn send(&self, channel: u16, method: AMQPClass) {
        self.send_frame(Frame::Method(channel, method)).await;
    }

    /// Sends the reply to a method unless the client asked for none.
    /// spec: "If set, the server will not respond to the method."
    pub(crate) async fn reply(&self, channel: u16, nowait: bool, method: AMQPClass) {
        if !nowait {
            self.send(channel, method).await;
        }
    }

    /// Sends a content-carrying method with its message.
    pub(crate) async fn send_content(&self, channel: u16, method: AMQPClass, message: Arc<Message>) {
        let _ = self
            .writer
            .send(
                Outbound::Content {
                    channel,
                    method,
                    message,
                }
                .into(),
            )
            .await;
    }

    /// The one place an error becomes a close. Soft errors on a channel close
    /// that channel; hard errors, and any error on channel 0, close the
    /// connection. Returns whether the connection is now closing.
    pub(crate) async fn fail(&mut self, channel: u16, error: AmqpError) -> bool {
        if error.is_hard() || channel == 0 {
            warn!(channel, code = error.code(), error = %error, "closing connection");
            // A peer that stopped reading may never make room for it.
            let close = Outbound::Frame(Frame::Method(0, AMQPClass::Connection(close_method(&error))));
            let _ = self.writer.send_timeout(close.into(), CLOSE_SEND_TIMEOUT).await;
            return true;
        }
        warn!(channel, code = error.code(), error = %error, "closing channel");
        self.send(
            channel,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: error.code(),
                reply_text: error.reply_text(),
                class_id: error.class_id,
                method_id: error.method_id,
            })),
        )
        .await;
        // spec: after sending channel.close, discard everything but close-ok.
        self.release_channel(channel).await;
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.state = ChannelState::Closing;
            // The content in progress, if any, will never complete.
            ch.assembler = ContentAssembler::default();
            self.partial_bytes -= std::mem::take(&mut ch.partial_bytes);
        }
        false
    }

    /// What its channels, open and closed, counted.
    fn totals(&self) -> MessageCounters {
        let mut totals = self.closed_channels;
        for channel in self.channels.values() {
            totals += channel.counters;
        }
        totals
    }

    /// Forgets a closed channel, and the unfinished content it held.
    pub(crate) fn remove_channel(&mut self, id: u16) {
        if let Some(ch) = self.channels.remove(&id) {
            self.partial_bytes -= ch.partial_bytes;
            self.closed_channels += ch.counters;
        }
    }

    /// Dispatches one frame. `Ok(Some(_))` ends the frame loop; an error
    /// carries the channel it happened on.
    async fn handle_frame(&mut self, frame: Frame) -> Result<Option<End>, (u16, AmqpError)> {
        let channel = frame.channel();
        match frame {
            Frame::Heartbeat(0) => Ok(None),
            Frame::Heartbeat(_) => Err((
                0,
                AmqpError::unexpected_frame(format!("heartbeat frame on channel {channel}")),
            )),
            Frame::Header(0, _) | Frame::Body(0, _) => {
                Err((0, AmqpError::unexpected_frame("content frame on channel 0")))
            }
            Frame::ProtocolHeader => Err((0, AmqpError::frame_error("protocol header after handshake"))),
            Frame::Method(0, method) => self.handle_connection_method(method).await.map_err(|e| (0, e)),
            Frame::Method(_, method) => {
                let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
                self.handle_channel_frame(channel, Frame::Method(channel, method))
                    .await
                    .map(|_| None)
                    .map_err(|e| (channel, e.for_method(ids.0, ids.1)))
            }
            frame => self
                .handle_channel_frame(channel, frame)
                .await
                .map(|_| None)
                .map_err(|e| (channel, e)),
        }
    }

    async fn handle_connection_method(&mut self, method: AMQPClass) -> Result<Option<End>, AmqpError> {
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                debug!(code = close.reply_code, text = %close.reply_text, "client closed the connection");
                Ok(Some(End::ClientClosed))
            }
            // A client refreshing its credentials (an OAuth token, say).
            // RabbitMQ asks its auth backends to update the user's state;
            // its internal backend's state never expires, so it answers
            // update-secret-ok and goes on with the user it has, whatever
            // the secret (probed on 3.10.8 with pika: a wrong secret gets
            // update-secret-ok too). Warren's users are internal ones.
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(update)) => {
                info!(user = %self.access.user(), reason = %update.reason, "user updated secret");
                let ok = connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {});
                self.send(0, AMQPClass::Connection(ok)).await;
                Ok(None)
            }
            // Anything else on channel 0 once the connection is open, even a
            // close-ok nobody asked for, is RabbitMQ's 504.
            _ => Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .for_method(ids.0, ids.1),
            ),
        }
    }

    async fn handle_channel_frame(&mut self, id: u16, frame: Frame) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&id) else {
            return match frame {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    self.handle_channel_open(id).await
                }
                _ => Err(AmqpError::channel_error("expected 'channel.open'")),
            };
        };
        if channel.state == ChannelState::Closing {
            // spec: after channel.close, only close(-ok) matters.
            match frame {
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                    self.remove_channel(id);
                }
                Frame::Method(_, AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                    self.remove_channel(id);
                    self.send(
                        id,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    )
                    .await;
                }
                _ => {}
            }
            return Ok(());
        }
        // A frame that breaks a content sequence is blamed on its basic.publish.
        let in_content = !channel.assembler.is_idle();
        let codec_error = |e| {
            let e = codec_error(e);
            if in_content {
                e.for_method(60, 40)
            } else {
                e
            }
        };
        match frame {
            Frame::Method(_, method) => {
                channel.assembler.expect_idle().map_err(codec_error)?;
                self.handle_method(id, method).await
            }
            Frame::Header(_, header) => {
                let size = header.body_size;
                if !channel.assembler.is_idle() {
                    // RabbitMQ's max_message_size (default 128 MiB).
                    if size > self.max_message_size {
                        return Err(AmqpError::precondition_failed(format!(
                            "message size {size} is larger than configured max size {}",
                            self.max_message_size
                        ))
                        .for_method(60, 40));
                    }
                    // What all of this connection's unfinished bodies may
                    // make the broker buffer, whatever the channel count.
                    if self.partial_bytes.saturating_add(size) > self.max_partial_bytes {
                        return Err(AmqpError::precondition_failed(format!(
                            "message size {size} would take the connection's unfinished message bodies \
                             over the configured limit of {} bytes",
                            self.max_partial_bytes
                        ))
                        .for_method(60, 40));
                    }
                }
                match channel.assembler.header(header).map_err(codec_error)? {
                    Some(published) => self.handle_published(id, published).await,
                    None => {
                        channel.partial_bytes = size;
                        self.partial_bytes += size;
                        Ok(())
                    }
                }
            }
            Frame::Body(_, body) => match channel.assembler.body(body).map_err(codec_error)? {
                Some(published) => {
                    self.partial_bytes -= std::mem::take(&mut channel.partial_bytes);
                    self.handle_published(id, published).await
                }
                None => Ok(()),
            },
            Frame::ProtocolHeader | Frame::Heartbeat(_) => Ok(()),
        }
    }

    async fn handle_channel_open(&mut self, id: u16) -> Result<(), AmqpError> {
        // RabbitMQ counts open channels against channel_max; the channel
        // number itself may be anything from 1 to 65535.
        if self.channels.len() >= usize::from(self.channel_max) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened ({}) has reached the negotiated channel_max ({})",
                self.channels.len(),
                self.channel_max
            )));
        }
        self.channels.insert(id, Channel::new());
        self.send(
            id,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        )
        .await;
        Ok(())
    }

    async fn handle_event(&mut self, event: ConnEvent) -> Result<(), AmqpError> {
        match event {
            ConnEvent::Close(reason) => return Err(AmqpError::connection_forced(reason)),
            ConnEvent::Channels(reply) => {
                let mut listing: Vec<_> = self.channels.iter().map(|(&n, c)| c.listing(n)).collect();
                listing.sort_by_key(|c| c.number);
                let _ = reply.send(ConnectionActivity {
                    channels: listing,
                    closed: self.closed_channels,
                    flows: self.route_cache.flows(|f| self.vhost.retain_steps(f)),
                });
            }
            ConnEvent::Deliver(deliveries) => {
                // One clock reading for the batch's deadlines.
                let now = tokio::time::Instant::now();
                for delivery in deliveries {
                    self.handle_delivery(delivery, now).await;
                }
            }
            ConnEvent::Confirmed {
                channel,
                epoch,
                seq,
                outcome,
            } => {
                if outcome == Outcome::Failed {
                    // Never confirm what may not be on disk; the log says why.
                    return Err(AmqpError::internal_error("cannot store a persistent message"));
                }
                let confirms = self
                    .channels
                    .get_mut(&channel)
                    .and_then(|c| c.confirms.as_mut())
                    .filter(|c| c.epoch == epoch);
                if let Some(confirms) = confirms {
                    confirms.outstanding.remove(&seq);
                    if outcome == Outcome::Nack {
                        confirms.nacked.insert(seq);
                    }
                    if !self.pending_confirms.contains(&channel) {
                        self.pending_confirms.push(channel);
                    }
                }
            }
            ConnEvent::Cancelled(consumer) => {
                let Some(channel) = self.channels.get_mut(&consumer.channel) else {
                    return Ok(());
                };
                let ours = channel
                    .consumers
                    .get(&*consumer.tag)
                    .is_some_and(|c| Arc::ptr_eq(c, &consumer));
                if ours && channel.state == ChannelState::Open {
                    channel.consumers.remove(&*consumer.tag);
                    if self.consumer_cancel_notify {
                        self.send(
                            consumer.channel,
                            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                                consumer_tag: (*consumer.tag).into(),
                                nowait: true,
                            })),
                        )
                        .await;
                    }
                }
            }
        }
        Ok(())
    }

    /// A queue delivered a message to one of our consumers: give it a
    /// delivery tag and send it, or hand it back if the consumer is gone.
    async fn handle_delivery(&mut self, delivery: Delivery, now: tokio::time::Instant) {
        let consumer = &delivery.consumer;
        let channel = self.channels.get_mut(&consumer.channel).filter(|ch| {
            ch.state == ChannelState::Open
                && ch
                    .consumers
                    .get(&*consumer.tag)
                    .is_some_and(|c| Arc::ptr_eq(c, consumer))
        });
        let Some(channel) = channel else {
            delivery.hand_back().await;
            return;
        };
        let Delivery {
            consumer,
            credit,
            msg_id,
            message,
            redelivered,
        } = delivery;
        match consumer.no_ack {
            true => channel.counters.deliver_no_ack += 1,
            false => channel.counters.deliver += 1,
        }
        channel.counters.redeliver += u64::from(redelivered);
        let delivery_tag = channel.next_delivery_tag();
        if !consumer.no_ack {
            let deadline = Deadline::at(now, consumer.ack_timeout);
            channel.track_unacked(
                delivery_tag,
                consumer.queue.clone(),
                msg_id,
                Some(consumer.clone()),
                deadline,
            );
            self.watch_deadline(deadline);
        }
        let deliver = Outbound::Deliver {
            channel: consumer.channel,
            consumer_tag: consumer.tag.clone(),
            delivery_tag,
            redelivered,
            message,
        };
        // The credit goes back once the writer has encoded it.
        let _ = self
            .writer
            .send(writer::Out::delivery(deliver, consumer, credit))
            .await;
    }

    /// Hands queues what this connection still holds for them, on the way out.
    async fn flush_pending(&mut self) {
        self.flush_publishes().await;
        self.flush_acks().await;
    }

    /// Requeues a channel's unacked messages and cancels its consumers, as
    /// when it closes. The channel stays in the table (the caller decides).
    pub(crate) async fn release_channel(&mut self, id: u16) {
        // Publishes and acks already made go first; what is left unacked
        // goes back.
        self.flush_pending().await;
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        if let Some((key, _)) = channel.reply_to.take() {
            self.vhost.replies().remove(&key);
        }
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let consumers: Vec<_> = channel.consumers.drain().map(|(_, c)| c).collect();
        let mut unacked = channel.take_all_unacked();
        // Acks of a transaction never committed are void: those messages
        // are still unacked, and go back to their queues with the rest.
        if let Some(tx) = channel.tx.as_mut() {
            let tx = std::mem::take(tx);
            unacked.extend(tx.settles.into_iter().flat_map(|(entries, _)| entries));
        }
        for consumer in consumers {
            consumer.queue.send(QueueCommand::Cancel(consumer.clone())).await;
        }
        self.settle(unacked, Settle::Requeue).await;
    }

    /// Everything a closing connection gives back: unacked messages,
    /// consumers, exclusive queues, and deliveries still in the inbox.
    async fn release_everything(&mut self, inbox: &mut mpsc::UnboundedReceiver<ConnEvent>) {
        self.flush_pending().await;
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_channel(id).await;
        }
        // What they counted stays in the connection's totals, which the
        // broker keeps once it closes.
        for (_, channel) in self.channels.drain() {
            self.closed_channels += channel.counters;
        }
        for queue in std::mem::take(&mut self.exclusive_queues) {
            let _ = queue
                .ask(|reply| QueueCommand::Delete {
                    if_unused: false,
                    if_empty: false,
                    reply,
                })
                .await;
        }
        inbox.close();
        while let Ok(event) = inbox.try_recv() {
            if let ConnEvent::Deliver(deliveries) = event {
                for delivery in deliveries {
                    delivery.hand_back().await;
                }
            }
        }
    }
}

fn codec_error(e: CodecError) -> AmqpError {
    match e {
        CodecError::Frame { code, text } => AmqpError::hard(code, text),
        other => AmqpError::internal_error(other.to_string()),
    }
}
