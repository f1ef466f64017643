//! Test harness: a Warren broker started in-process on port 0 with a temp
//! data directory, or, when `AMQP_URL` is set, any broker at that URL (the
//! reference RabbitMQ, to check that a test encodes RabbitMQ's behaviour).
//!
//! # Layout
//!
//! - [`TestBroker`] and [`start_broker`]: where the tests connect.
//! - [`within`]: the timeout every test runs under.
//! - [`raw`]: a frame-level client for protocol violations lapin cannot send.

pub mod raw;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The most any test may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How often an in-process Warren samples its counts for rates: shorter
/// than RabbitMQ's 5 s so that tests of rates need not wait long.
const STATISTICS_INTERVAL: Duration = Duration::from_millis(200);

/// A broker to test against.
pub struct TestBroker {
    /// `amqp://` URL for lapin.
    pub url: String,
    /// Host and port, for raw sockets.
    pub addr: SocketAddr,
    /// The in-process broker's amqps address, if it was started with TLS
    /// ([`start_warren_with_tls`]).
    pub tls: Option<SocketAddr>,
    /// The management API's `http://` address: Warren's, or the
    /// reference's (`MANAGEMENT_URL`, by default RabbitMQ's on 15682).
    pub management: String,
    /// The in-process broker, for Warren-only tests that act on it as an
    /// operator would (e.g. change its memory watermark).
    pub warren: Option<std::sync::Arc<warren_server::broker::Broker>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _data_dir: Option<tempfile::TempDir>,
}

/// Whether the tests run against an in-process Warren (no `AMQP_URL`).
pub fn is_warren() -> bool {
    std::env::var_os("AMQP_URL").is_none()
}

/// Starts a Warren broker on 127.0.0.1:0, or points at `AMQP_URL`.
pub async fn start_broker() -> TestBroker {
    if std::env::var_os("AMQP_URL").is_some() {
        return external_broker().await;
    }
    start_warren(tempfile::tempdir().unwrap()).await
}

async fn start_warren(data_dir: tempfile::TempDir) -> TestBroker {
    start_warren_on("127.0.0.1:0", data_dir, |_| {}).await
}

/// Starts an in-process Warren with settings of the test's own (limits set
/// low enough to reach). Only for Warren-only tests: check [`is_warren`].
pub async fn start_warren_with(configure: impl FnOnce(&mut warren_server::Config)) -> TestBroker {
    start_warren_on("127.0.0.1:0", tempfile::tempdir().unwrap(), configure).await
}

/// Like [`start_warren_with`], listening on `bind` (e.g. `0.0.0.0:0`).
pub async fn start_warren_on(
    bind: &str,
    data_dir: tempfile::TempDir,
    configure: impl FnOnce(&mut warren_server::Config),
) -> TestBroker {
    start_warren_full(bind, data_dir, configure, None).await
}

/// An in-process Warren that also serves AMQP over TLS on 127.0.0.1:0
/// with `tls` (Warren-only: the reference has no TLS listener).
pub async fn start_warren_with_tls(
    tls: warren_server::tls::TlsFiles,
    configure: impl FnOnce(&mut warren_server::Config),
) -> TestBroker {
    start_warren_full("127.0.0.1:0", tempfile::tempdir().unwrap(), configure, Some(tls)).await
}

async fn start_warren_full(
    bind: &str,
    data_dir: tempfile::TempDir,
    configure: impl FnOnce(&mut warren_server::Config),
    tls: Option<warren_server::tls::TlsFiles>,
) -> TestBroker {
    use warren_server::listener::Listener;
    let plain = warren_server::listener::bind(&[bind.parse().unwrap()]).unwrap();
    let mut listeners: Vec<Listener> = plain.into_iter().map(Listener::plain).collect();
    let mut tls_addr = None;
    if let Some(files) = tls {
        let socket = warren_server::listener::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
        let socket = socket.into_iter().next().unwrap();
        tls_addr = Some(socket.local_addr().unwrap());
        listeners.push(Listener::tls(
            socket,
            files.acceptor().expect("the test certificates load"),
        ));
    }
    let api = warren_server::listener::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let management = format!("http://{}", api[0].local_addr().unwrap());
    let addr = listeners[0].local_addr().unwrap();
    // A wildcard listener is reached on the loopback, as `warren ping` reaches it.
    let addr = warren_server::ping::local_address(addr);
    let (tx, rx) = oneshot::channel::<()>();
    let mut config = warren_server::Config::new(data_dir.path());
    configure(&mut config);
    let broker = warren_server::broker::Broker::open(config)
        .await
        .expect("the store opens");
    let warren = broker.clone();
    let task = tokio::spawn(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until_stopped = async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        };
        let api = tokio::spawn(warren_management::serve(
            broker.clone(),
            api,
            STATISTICS_INTERVAL,
            until_stopped,
        ));
        let shutdown = async move {
            let _ = rx.await;
            let _ = stop.send(true);
        };
        warren_server::serve(broker, std::mem::take(&mut listeners), shutdown).await;
        let _ = api.await;
    });
    TestBroker {
        url: format!("amqp://guest:guest@{addr}/%2f"),
        addr,
        tls: tls_addr,
        management,
        warren: Some(warren),
        shutdown: Some(tx),
        task: Some(task),
        _data_dir: Some(data_dir),
    }
}

async fn external_broker() -> TestBroker {
    let url = std::env::var("AMQP_URL").unwrap();
    let authority = url.split("://").nth(1).unwrap_or(&url);
    let host_port = authority.rsplit('@').next().unwrap().split('/').next().unwrap();
    let addr = tokio::net::lookup_host(host_port).await.unwrap().next().unwrap();
    let management = std::env::var("MANAGEMENT_URL").unwrap_or_else(|_| "http://127.0.0.1:15682".to_owned());
    TestBroker {
        url,
        addr,
        tls: None,
        management,
        warren: None,
        shutdown: None,
        task: None,
        _data_dir: None,
    }
}

impl TestBroker {
    /// The in-process broker's data directory (Warren-only tests).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self._data_dir.as_ref().map(|d| d.path())
    }

    /// A lapin connection.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .unwrap()
    }

    /// A management API request as `guest`: its status and JSON body.
    /// `path` is escaped already (see [`warren_management::client::segment`]).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        self.admin_as("guest", "guest", method, path, body).await
    }

    /// [`TestBroker::admin`] as another user.
    pub async fn admin_as(
        &self,
        user: &str,
        password: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = warren_management::client::Client::new(&self.management, user, password);
        let (method, path) = (method.to_owned(), path.to_owned());
        tokio::task::spawn_blocking(move || client.request(&method, &path, body.as_ref()))
            .await
            .unwrap()
            .expect("the management API answers")
    }

    /// A connection as `user` to `vhost`, or the broker's refusal.
    pub async fn connect_as(&self, user: &str, password: &str, vhost: &str) -> lapin::Result<Connection> {
        use warren_management::client::segment;
        let url = format!(
            "amqp://{}:{}@{}/{}",
            segment(user),
            segment(password),
            self.addr,
            segment(vhost)
        );
        Connection::connect(&url, ConnectionProperties::default()).await
    }

    /// A lapin connection and one channel on it.
    pub async fn channel(&self) -> (Connection, lapin::Channel) {
        let conn = self.connect().await;
        let ch = conn.create_channel().await.unwrap();
        (conn, ch)
    }

    /// Shuts an in-process broker down (as SIGTERM does) and waits for it.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        self.warren = None;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Stops an in-process broker and starts a new one on the same data
    /// directory (and a new port).
    pub async fn restart(self) -> TestBroker {
        self.shut_down_for(Duration::ZERO).await
    }

    /// Like [`TestBroker::restart`], with the broker down for `down`: what
    /// a message's time in the store is measured against.
    pub async fn shut_down_for(mut self, down: Duration) -> TestBroker {
        self.shut_down().await;
        tokio::time::sleep(down).await;
        start_warren(self._data_dir.take().expect("an in-process broker")).await
    }
}

/// Runs a violation on its own connection while another connection stays
/// open on `broker`, then checks that the bystander still works: one client
/// may cost itself its connection, never another client its service.
pub async fn with_bystander<F, Fut>(broker: TestBroker, violation: F)
where
    F: FnOnce(TestBroker) -> Fut,
    Fut: Future<Output = TestBroker>,
{
    let (_conn, ch) = broker.channel().await;
    let q = exclusive_queue(&ch, "bystander").await;
    let broker = violation(broker).await;
    publish(&ch, "", &q, b"still here").await;
    assert_eq!(drain(&ch, &q).await, ["still here"]);
    drop(broker);
}

/// Runs a test body under [`TIMEOUT`].
pub async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, body).await.expect("test timed out")
}

/// A name no other test (or earlier run against a shared broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The AMQP reply code of a channel or connection exception.
pub fn reply_code(err: &lapin::Error) -> u16 {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_id(),
        other => panic!("expected an AMQP exception, got {other:?}"),
    }
}

/// The reply text of a channel or connection exception.
pub fn reply_text(err: &lapin::Error) -> String {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => e.get_message().to_string(),
        other => panic!("expected an AMQP exception, got {other:?}"),
    }
}

/// The reply code and text of a channel or connection exception.
pub fn exception(err: &lapin::Error) -> (u16, String) {
    (reply_code(err), reply_text(err))
}

/// Declares a queue exclusive to the channel's connection, so it goes away
/// with the test even on a shared broker.
pub async fn exclusive_queue(ch: &lapin::Channel, prefix: &str) -> String {
    exclusive_queue_with(ch, prefix, lapin::types::FieldTable::default()).await
}

/// An exclusive queue with a fresh name from `prefix`, declared with `args`.
pub async fn exclusive_queue_with(
    ch: &lapin::Channel,
    prefix: &str,
    args: lapin::types::FieldTable,
) -> String {
    let name = unique(prefix);
    declare_exclusive(ch, &name, args).await;
    name
}

/// Declares the exclusive queue `name` with `args`.
pub async fn declare_exclusive(ch: &lapin::Channel, name: &str, args: lapin::types::FieldTable) {
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(name.into(), options, args).await.unwrap();
}

/// An arguments (or headers) table of `pairs`.
pub fn table(pairs: &[(&str, lapin::types::AMQPValue)]) -> lapin::types::FieldTable {
    let mut table = lapin::types::FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), value.clone());
    }
    table
}

/// A long string field value.
pub fn long_string(value: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(value.into())
}

/// A consumer of `queue` with an automatic tag and `args`.
pub async fn consume(
    ch: &lapin::Channel,
    queue: &str,
    no_ack: bool,
    args: lapin::types::FieldTable,
) -> lapin::Consumer {
    let options = lapin::options::BasicConsumeOptions {
        no_ack,
        ..Default::default()
    };
    ch.basic_consume(queue.into(), "".into(), options, args)
        .await
        .unwrap()
}

/// A plain queue (not exclusive) that other connections can use; the test
/// deletes it at the end.
pub async fn shared_queue(ch: &lapin::Channel, prefix: &str) -> String {
    let name = unique(prefix);
    ch.queue_declare(
        name.as_str().into(),
        lapin::options::QueueDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    name
}

/// Publishes a transient message.
pub async fn publish(ch: &lapin::Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange.into(),
        routing_key.into(),
        lapin::options::BasicPublishOptions::default(),
        body,
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap();
}

/// Publishes with `properties`, mandatory, on a channel in confirm mode,
/// and checks that the broker acked it and returned nothing.
pub async fn publish_confirmed(
    ch: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    body: &str,
    properties: lapin::BasicProperties,
) {
    let options = lapin::options::BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body.as_bytes(),
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "{body} acked");
    assert!(confirm.take_message().is_none(), "{body} not returned");
}

/// basic.get with manual ack; the body and the redelivered flag.
pub async fn get(ch: &lapin::Channel, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    ch.basic_get(queue.into(), lapin::options::BasicGetOptions::default())
        .await
        .unwrap()
}

/// Bodies left in a queue, fetched with basic.get and no-ack.
pub async fn drain(ch: &lapin::Channel, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        bodies.push(String::from_utf8(m.delivery.data).unwrap());
    }
    bodies
}

/// Runs an asynchronous method that the server answers by closing `ch`
/// (basic.ack, basic.publish, …) and returns the close's reply code.
///
/// A consumer started on the channel first is what learns the reason: lapin
/// ends every consumer of a closed channel with the server's error.
pub async fn closed_code<T>(ch: &lapin::Channel, method: impl Future<Output = lapin::Result<T>>) -> u16 {
    closed_reply(ch, method).await.0
}

/// [`closed_code`], with the close's reply text.
pub async fn closed_reply<T>(
    ch: &lapin::Channel,
    method: impl Future<Output = lapin::Result<T>>,
) -> (u16, String) {
    use futures::StreamExt;
    let probe_queue = exclusive_queue(ch, "probe").await;
    let mut probe = ch
        .basic_consume(
            probe_queue.as_str().into(),
            "".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    method.await.expect("the method itself should be sent");
    match probe.next().await {
        Some(Err(err)) => (reply_code(&err), reply_text(&err)),
        other => panic!("expected the channel to close, got {other:?}"),
    }
}

/// The `warren` binary cargo built beside the test binaries, for tests that
/// run the broker as a process (Warren-only).
pub fn warren_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("warren");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p warren` first",
        bin.display()
    );
    bin
}

/// A port nothing listens on right now, for a broker process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How many ready messages `queue` holds (a passive declare's count).
pub async fn message_count(ch: &lapin::Channel, queue: &str) -> u32 {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
        .unwrap()
        .message_count()
}
