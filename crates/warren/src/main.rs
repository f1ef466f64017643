//! `warren`: run the broker; `warren ping` checks that one answers;
//! `warren ctl` administers one (rabbitmqctl's verbs).

mod ctl;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use warren_server::config::MAX_MESSAGE_SIZE;

/// mimalloc instead of glibc's malloc: messages are allocated by the
/// connection that reads them and freed by another task, often on another
/// thread, and glibc's arena locks made that cross-thread free the broker's
/// largest single cost under load (futex waits in `free`, seen with perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Warren, an AMQP 0-9-1 message broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Without a command, run the broker.
    #[command(subcommand)]
    command: Option<Command>,
    /// A configuration file (TOML) whose keys are these flags' names in
    /// snake case; the environment and the flags override it
    /// (docs/warren.example.toml).
    #[arg(long, env = "WARREN_CONFIG_FILE")]
    config: Option<PathBuf>,
    /// Addresses to listen on for AMQP connections: the flag repeated, or a
    /// comma-separated list. `[::]` (the default) takes IPv4 clients too, and
    /// falls back to 0.0.0.0 where the machine has no IPv6.
    #[arg(long, env = "WARREN_BIND", default_value = "[::]:5672", value_delimiter = ',')]
    bind: Vec<SocketAddr>,
    /// Addresses for the management HTTP API (RabbitMQ's paths; `warren
    /// ctl` uses it), like `--bind`.
    #[arg(
        long,
        env = "WARREN_MANAGEMENT_BIND",
        default_value = "[::]:15672",
        value_delimiter = ','
    )]
    management_bind: Vec<SocketAddr>,
    /// Addresses for Prometheus metrics (`/metrics`, `/metrics/per-object`,
    /// in rabbitmq_prometheus's names), like `--bind`.
    #[arg(
        long,
        env = "WARREN_PROMETHEUS_BIND",
        default_value = "[::]:15692",
        value_delimiter = ','
    )]
    prometheus_bind: Vec<SocketAddr>,
    /// How often the management API samples message counts for its rates,
    /// in milliseconds (RabbitMQ's collect_statistics_interval).
    #[arg(long, env = "WARREN_COLLECT_STATISTICS_INTERVAL", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..))]
    collect_statistics_interval: u64,
    /// Addresses for AMQP over TLS (amqps), like `--bind`; used once
    /// `--tls-cert` and `--tls-key` are given.
    #[arg(
        long,
        env = "WARREN_TLS_BIND",
        default_value = "[::]:5671",
        value_delimiter = ','
    )]
    tls_bind: Vec<SocketAddr>,
    /// The server's certificate chain, PEM (RabbitMQ's ssl_options.certfile).
    #[arg(long, env = "WARREN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key, PEM (ssl_options.keyfile).
    #[arg(long, env = "WARREN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates, PEM, to verify client certificates with
    /// (ssl_options.cacertfile with verify_peer). A client with a verified
    /// certificate may log in with EXTERNAL as the user its common name
    /// names.
    #[arg(long, env = "WARREN_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate (ssl_options.fail_if_no_peer_cert).
    #[arg(long, env = "WARREN_TLS_FAIL_IF_NO_PEER_CERT", requires = "tls_ca")]
    tls_fail_if_no_peer_cert: bool,
    /// The login mechanisms offered, in order (RabbitMQ's auth_mechanisms).
    /// EXTERNAL logs a TLS client in as the user named by its verified
    /// certificate's common name, with no password: list it only if
    /// everyone holding a certificate from `--tls-ca` may do that.
    #[arg(long, env = "WARREN_AUTH_MECHANISMS", default_value = "PLAIN,AMQPLAIN", value_delimiter = ',',
          value_parser = ["PLAIN", "AMQPLAIN", "EXTERNAL"])]
    auth_mechanisms: Vec<String>,
    /// Directory for durable state.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "./warren-data")]
    data_dir: PathBuf,
    /// Memory for the store's page cache, in MiB.
    #[arg(long, env = "WARREN_STORE_CACHE_MB", default_value_t = 16)]
    store_cache_mb: u64,
    /// The user created on the first start, when the data directory has no
    /// user yet (RabbitMQ's default_user); it gets the administrator tag.
    #[arg(long, env = "WARREN_DEFAULT_USER", default_value = "guest")]
    default_user: String,
    /// That user's password (RabbitMQ's default_pass). The environment
    /// variable keeps it out of the process list.
    #[arg(
        long,
        env = "WARREN_DEFAULT_PASS",
        default_value = "guest",
        hide_env_values = true
    )]
    default_pass: String,
    /// Let `guest` log in from any address, not only loopback (RabbitMQ's
    /// `loopback_users = none`). Needed in a container, where clients are
    /// never on the container's loopback.
    #[arg(long, env = "WARREN_ALLOW_REMOTE_GUEST")]
    allow_remote_guest: bool,
    /// Channels a connection may have open at once (offered in connection.tune).
    #[arg(long, env = "WARREN_CHANNEL_MAX", default_value_t = 2047, value_parser = clap::value_parser!(u16).range(1..))]
    channel_max: u16,
    /// Largest message body accepted, in bytes (at most 512 MiB, as in RabbitMQ).
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE", default_value_t = 128 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=MAX_MESSAGE_SIZE))]
    max_message_size: u64,
    /// Connections open at once; unlimited unless set.
    #[arg(long, env = "WARREN_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Bytes of unfinished message bodies one connection may have in
    /// progress over all its channels.
    #[arg(long, env = "WARREN_MAX_PARTIAL_BODY_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_partial_body_bytes: u64,
    /// Memory above which publishing connections are blocked: a fraction of
    /// the machine's (or the cgroup's) memory, e.g. 0.4, or a size, e.g. 2GB
    /// or 512MiB (RabbitMQ's vm_memory_high_watermark).
    #[arg(long, env = "WARREN_MEMORY_HIGH_WATERMARK", default_value = "0.4", value_parser = clap::value_parser!(warren_server::alarm::Watermark))]
    memory_high_watermark: warren_server::alarm::Watermark,
    /// Free disk space below which publishing connections are blocked, e.g.
    /// 50MB or 2GiB (RabbitMQ's disk_free_limit).
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", default_value = "50MB", value_parser = warren_server::alarm::parse_size)]
    disk_free_limit: u64,
    /// The fraction of the memory high watermark above which queues page
    /// transient messages past their 8 MiB head out to disk (RabbitMQ's
    /// vm_memory_high_watermark_paging_ratio).
    #[arg(long, env = "WARREN_MEMORY_PAGING_RATIO", default_value_t = 0.5, value_parser = warren_server::alarm::parse_paging_ratio)]
    memory_paging_ratio: f64,
    /// How long a delivery may stay unacked before its channel is closed
    /// with 406 and its messages go back to the queue, in milliseconds, or
    /// `off` (RabbitMQ's consumer_timeout). A queue's or a consumer's
    /// `x-consumer-timeout` argument overrides it.
    #[arg(long, env = "WARREN_CONSUMER_TIMEOUT", default_value = "1800000", value_parser = parse_timeout)]
    consumer_timeout: Timeout,
    /// How log lines are written: `text`, coloured only on a terminal, or
    /// `json`, one object per line, for log shippers.
    #[arg(long, env = "WARREN_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check that a broker answers (for health checks): exit 0 if it
    /// starts an AMQP connection, 1 if not. No credentials are needed.
    Ping {
        /// The broker's address; by default the first `--bind` address
        /// (a wildcard one reached on the loopback).
        #[arg(long)]
        addr: Option<SocketAddr>,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout: u64,
    },
    /// Administer a running broker through its management API, as
    /// rabbitmqctl does: users, vhosts, permissions, queues, connections,
    /// definitions.
    Ctl(ctl::Ctl),
}

/// The flags, over the environment, over the configuration file, over the
/// defaults. clap prints help, version and flag errors itself, and exits.
fn parse_args(argv: Vec<std::ffi::OsString>) -> Result<Args, String> {
    use clap::{CommandFactory, FromArgMatches};
    let first = Args::parse_from(&argv);
    let Some(path) = first.config else {
        return Ok(first);
    };
    let command = warren_server::config_file::apply(Args::command(), &path, &["config"])?;
    let matches = command.get_matches_from(argv);
    Args::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// A timeout that can be turned off (a bare `Option` would make clap treat
/// the flag itself as optional).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timeout(Option<std::time::Duration>);

/// A number of milliseconds, or `off`.
fn parse_timeout(value: &str) -> Result<Timeout, String> {
    match value {
        "off" => Ok(Timeout(None)),
        ms => ms
            .parse()
            .map(|ms| Timeout(Some(std::time::Duration::from_millis(ms))))
            .map_err(|_| format!("expected milliseconds or `off`, got `{ms}`")),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(why) => {
            eprintln!("error: {why}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(Command::Ctl(ctl)) = args.command {
        // Blocking HTTP: off the runtime's threads.
        return tokio::task::spawn_blocking(move || ctl::run(ctl))
            .await
            .unwrap_or(std::process::ExitCode::FAILURE);
    }
    if let Some(Command::Ping { addr, timeout }) = args.command {
        let first = args
            .bind
            .first()
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5672)));
        let addr = addr.unwrap_or_else(|| warren_server::ping::local_address(first));
        let timeout = std::time::Duration::from_millis(timeout);
        return match warren_server::ping::ping(addr, timeout).await {
            Ok(product) => {
                println!("{addr}: {product} answers");
                std::process::ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("{addr}: {why}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let filter = EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        // Colour only for a person at a terminal: a log file or `docker
        // logs` gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        tracing::error!(data_dir = %args.data_dir.display(), error = %e, "cannot create the data directory");
        return std::process::ExitCode::FAILURE;
    }
    let mut config = warren_server::Config::new(args.data_dir);
    config.store_cache_bytes = args.store_cache_mb.saturating_mul(1024 * 1024);
    config.allow_remote_guest = args.allow_remote_guest;
    config.default_user = args.default_user;
    config.default_pass = args.default_pass;
    config.channel_max = args.channel_max;
    config.max_message_size = args.max_message_size;
    config.max_connections = args.max_connections;
    config.max_partial_bytes = args.max_partial_body_bytes;
    config.memory_high_watermark = args.memory_high_watermark;
    config.disk_free_limit = args.disk_free_limit;
    config.memory_paging_ratio = args.memory_paging_ratio;
    config.consumer_timeout = args.consumer_timeout.0;
    config.auth_mechanisms = args.auth_mechanisms;
    // Recovery first, then the port: a client never connects to a broker
    // that is still reading its store.
    let broker = match warren_server::broker::Broker::open(config).await {
        Ok(broker) => broker,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the store");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listeners = match warren_server::listener::bind(&args.bind) {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!(bind = ?args.bind, error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let management = match warren_server::listener::bind(&args.management_bind) {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!(bind = ?args.management_bind, error = %e, "cannot listen for the management API");
            return std::process::ExitCode::FAILURE;
        }
    };
    let prometheus = match warren_server::listener::bind(&args.prometheus_bind) {
        Ok(listeners) => listeners,
        Err(e) => {
            tracing::error!(bind = ?args.prometheus_bind, error = %e, "cannot listen for Prometheus");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut listeners: Vec<_> = listeners
        .into_iter()
        .map(warren_server::listener::Listener::plain)
        .collect();
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        let files = warren_server::tls::TlsFiles {
            cert,
            key,
            ca: args.tls_ca,
            fail_if_no_peer_cert: args.tls_fail_if_no_peer_cert,
        };
        let acceptor = match files.acceptor() {
            Ok(acceptor) => acceptor,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the TLS settings");
                return std::process::ExitCode::FAILURE;
            }
        };
        match warren_server::listener::bind(&args.tls_bind) {
            Ok(bound) => listeners.extend(
                bound
                    .into_iter()
                    .map(|l| warren_server::listener::Listener::tls(l, acceptor.clone())),
            ),
            Err(e) => {
                tracing::error!(bind = ?args.tls_bind, error = %e, "cannot listen for TLS");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    // One signal stops both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(warren_management::serve(
        broker.clone(),
        management,
        std::time::Duration::from_millis(args.collect_statistics_interval),
        until_stopped(stopped.clone()),
    ));
    let metrics = tokio::spawn(warren_management::serve_prometheus(
        broker.clone(),
        prometheus,
        until_stopped(stopped.clone()),
    ));
    warren_server::serve(broker, listeners, until_stopped(stopped)).await;
    let _ = api.await;
    let _ = metrics.await;
    std::process::ExitCode::SUCCESS
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_message_size_is_at_most_512_mib() {
        let parse = |size: &str| Args::try_parse_from(["warren", "--max-message-size", size]);
        assert_eq!(parse("536870912").unwrap().max_message_size, MAX_MESSAGE_SIZE);
        assert!(parse("536870913").is_err());
        assert!(parse("0").is_err());
    }

    #[test]
    fn several_addresses_can_be_bound_and_the_default_is_dual_stack() {
        let parse = |args: &[&str]| Args::try_parse_from([&["warren"], args].concat()).unwrap().bind;
        assert_eq!(parse(&[]), ["[::]:5672".parse::<SocketAddr>().unwrap()]);
        let two: Vec<SocketAddr> = vec!["127.0.0.1:5672".parse().unwrap(), "[::1]:5673".parse().unwrap()];
        assert_eq!(parse(&["--bind", "127.0.0.1:5672", "--bind", "[::1]:5673"]), two);
        assert_eq!(parse(&["--bind", "127.0.0.1:5672,[::1]:5673"]), two);
    }

    fn with_file(toml: &str, flags: &[&str]) -> Result<Args, String> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), toml).unwrap();
        let argv = ["warren", "--config", file.path().to_str().unwrap()]
            .iter()
            .chain(flags)
            .map(std::ffi::OsString::from)
            .collect();
        parse_args(argv)
    }

    #[test]
    fn the_configuration_file_sets_defaults_that_flags_override() {
        let toml = r#"
            bind = ["127.0.0.1:5000", "[::1]:5001"]
            channel_max = 100
            allow_remote_guest = true
            consumer_timeout = "off"
            max_message_size = 1048576
            memory_high_watermark = "2GB"
        "#;
        let args = with_file(toml, &[]).unwrap();
        assert_eq!(args.bind.len(), 2);
        assert_eq!(args.channel_max, 100);
        assert!(args.allow_remote_guest);
        assert_eq!(args.consumer_timeout.0, None);
        assert_eq!(args.max_message_size, 1 << 20);
        let args = with_file(toml, &["--channel-max", "200", "--bind", "127.0.0.1:6000"]).unwrap();
        assert_eq!(args.channel_max, 200);
        assert_eq!(args.bind, ["127.0.0.1:6000".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn the_example_file_names_every_setting_and_gives_the_defaults() {
        use clap::CommandFactory;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/warren.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let defaults = format!("{:?}", Args::try_parse_from(["warren"]).unwrap());
        let mut from_example = with_file(&text, &[]).unwrap();
        from_example.config = None;
        assert_eq!(
            format!("{from_example:?}"),
            defaults,
            "the example's values are the defaults"
        );
        // Every setting, commented out or not.
        for arg in Args::command().get_arguments().filter(|a| a.get_long().is_some()) {
            let key = arg.get_id().as_str();
            if key == "config" {
                continue;
            }
            assert!(
                text.lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
                "{key} is missing"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_in_the_file_are_refused_by_name() {
        let err = with_file("chanel_max = 100", &[]).unwrap_err();
        assert!(err.contains("unknown key 'chanel_max'"), "{err}");
        let err = with_file("channel_max = 0", &[]).unwrap_err();
        assert!(err.contains("key 'channel_max'") && err.contains("'0'"), "{err}");
        let err = with_file("allow_remote_guest = \"yes\"", &[]).unwrap_err();
        assert!(
            err.contains("key 'allow_remote_guest': expected true or false"),
            "{err}"
        );
        let err = with_file("max_message_size = 536870913", &[]).unwrap_err();
        assert!(err.contains("key 'max_message_size'"), "{err}");
        let err = with_file("bind = [[1]]", &[]).unwrap_err();
        assert!(err.contains("key 'bind'"), "{err}");
        let err = with_file("config = \"other.toml\"", &[]).unwrap_err();
        assert!(err.contains("unknown key 'config'"), "{err}");
        let err = with_file("channel_max = ", &[]).unwrap_err();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn consumer_timeout_is_milliseconds_or_off() {
        let parse = |value: &str| Args::try_parse_from(["warren", "--consumer-timeout", value]);
        assert_eq!(
            Args::try_parse_from(["warren"]).unwrap().consumer_timeout.0,
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(
            parse("1500").unwrap().consumer_timeout.0,
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(parse("off").unwrap().consumer_timeout.0, None);
        assert!(parse("-1").is_err());
        assert!(parse("soon").is_err());
    }
}
