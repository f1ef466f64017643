//! `warren-management`: the broker's management HTTP API, on RabbitMQ's
//! paths and JSON shapes (`/api/vhosts`, `/api/users`, `/api/permissions`,
//! `/api/definitions`, …), so that tools written for RabbitMQ's API work;
//! and the client `warren ctl` speaks it with.
//!
//! # Layout
//!
//! - [`answer`]: errors in RabbitMQ's shape, and the answers routes give.
//! - [`api`]: the routes, authentication (HTTP basic, RabbitMQ's tags, the
//!   vhosts a user may see) and JSON-only changes.
//! - [`explain`]: the route explainer: where a message would go, and why.
//! - [`definitions`]: export and import in RabbitMQ's definitions format.
//! - [`json`]: arguments tables as JSON.
//! - [`listing`]: sorting, filtering, pagination and columns of lists.
//! - [`client`]: a small blocking client of the API, for `warren ctl` and
//!   the tests.
//! - [`ui`]: the web UI (`ui/`: Preact with htm, uPlot; vendored), its
//!   topology graph and route explainer page.
//! - [`guard`]: how many connections each HTTP listener serves, and how
//!   long a silent one is kept.
//! - [`rates`]: message rates, from counts sampled every
//!   `collect_statistics_interval`.
//! - [`prometheus`]: metrics in `rabbitmq_prometheus`'s names, on their
//!   own port.
//!
//! The operations themselves are the server's ([`warren_server::admin`]):
//! this crate only speaks HTTP.
#![deny(missing_docs)]

pub mod answer;
pub mod api;
pub mod client;
pub mod definitions;
pub mod explain;
pub mod guard;
pub mod json;
pub mod listing;
pub mod prometheus;
pub mod rates;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::info;
use warren_server::broker::Broker;

/// Serves the API on `listeners` until `shutdown` completes, sampling the
/// broker's counts for rates every `statistics_interval`.
pub async fn serve(
    broker: Arc<Broker>,
    listeners: Vec<TcpListener>,
    statistics_interval: Duration,
    shutdown: impl Future,
) {
    let rates = Arc::new(rates::Rates::default());
    let sampler = tokio::spawn(rates::sample_every(
        broker.clone(),
        rates.clone(),
        statistics_interval,
    ));
    let app = api::router(broker, rates).merge(ui::router());
    let max = guard::MANAGEMENT_CONNECTIONS;
    serve_app(app, listeners, max, "management API", shutdown).await;
    sampler.abort();
}

/// Serves Prometheus metrics ([`prometheus`]) on `listeners` until
/// `shutdown` completes.
pub async fn serve_prometheus(broker: Arc<Broker>, listeners: Vec<TcpListener>, shutdown: impl Future) {
    serve_app(
        prometheus::router(broker),
        listeners,
        guard::PROMETHEUS_CONNECTIONS,
        "Prometheus metrics",
        shutdown,
    )
    .await
}

async fn serve_app(
    app: axum::Router,
    listeners: Vec<TcpListener>,
    max: usize,
    what: &str,
    shutdown: impl Future,
) {
    let (stop, stopped) = tokio::sync::watch::channel(());
    let mut tasks = Vec::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "{what} listening");
        }
        let app = app.clone().into_make_service_with_connect_info::<guard::Peer>();
        let mut stopped = stopped.clone();
        let listener = guard::Guarded::new(listener, max, guard::IDLE);
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .await;
        }));
    }
    shutdown.await;
    drop(stop);
    // Open keep-alive connections get a moment to finish, not longer.
    for mut task in tasks {
        if tokio::time::timeout(std::time::Duration::from_secs(1), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}
