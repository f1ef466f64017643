//! `warren`: run the broker.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Warren, an AMQP 0-9-1 message broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on for AMQP connections.
    #[arg(long, env = "WARREN_BIND", default_value = "0.0.0.0:5672")]
    bind: SocketAddr,
    /// Directory for durable state.
    #[arg(long, env = "WARREN_DATA_DIR", default_value = "./warren-data")]
    data_dir: PathBuf,
    /// Memory for the store's page cache, in MiB.
    #[arg(long, env = "WARREN_STORE_CACHE_MB", default_value_t = 16)]
    store_cache_mb: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("WARREN_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let args = Args::parse();
    let listener = match tokio::net::TcpListener::bind(args.bind).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(bind = %args.bind, error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.data_dir) {
        tracing::error!(data_dir = %args.data_dir.display(), error = %e, "cannot create the data directory");
        return std::process::ExitCode::FAILURE;
    }
    let mut config = warren_server::Config::new(args.data_dir);
    config.store_cache_bytes = args.store_cache_mb.saturating_mul(1024 * 1024);
    match warren_server::run(listener, config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the store");
            std::process::ExitCode::FAILURE
        }
    }
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
