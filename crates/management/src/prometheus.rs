//! Prometheus metrics on `--prometheus-bind` (`[::]:15692`), in the names of
//! RabbitMQ's `rabbitmq_prometheus` plugin where they correspond, so that
//! its Grafana dashboards find them: `/metrics` gives totals, as the
//! plugin does by default, and `/metrics/per-object` one series per queue
//! (the plugin's per-object endpoint). Unauthenticated, as the plugin's.
//!
//! Written by hand in the text exposition format (version 0.0.4): gauges,
//! counters and three histograms read from the broker need no client
//! library. Beside RabbitMQ's names, Warren's own histograms: the store's
//! fsync latency and group-commit size, and how long messages wait in
//! their queues. The endpoint needs
//! no credentials, so scrapes of a path are computed one at a time (every
//! queue is asked for its counts) and one answer is shared by the requests
//! that waited for it: a flood of requests cannot turn into a flood of work
//! for the queues.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Mutex;
use warren_server::broker::Broker;
use warren_server::stats::Histogram;

/// The last answer and when its computation started.
type Slot = Arc<Mutex<Option<(Instant, String)>>>;

/// The broker, and the last answer of each path.
#[derive(Clone)]
struct Metrics {
    broker: Arc<Broker>,
    totals: Slot,
    per_object: Slot,
}

/// The metrics routes.
pub fn router(broker: Arc<Broker>) -> Router {
    let metrics = Metrics {
        broker,
        totals: Slot::default(),
        per_object: Slot::default(),
    };
    Router::new()
        .route("/metrics", get(totals))
        .route("/metrics/per-object", get(per_object))
        .with_state(metrics)
}

/// One computation at a time: a request that arrives while one runs
/// waits for it and takes the next answer computed after it arrived,
/// shared with every other request waiting then. So each answer is as
/// fresh as the request, and a flood of requests costs one computation
/// at a time, not one each.
async fn cached<F: std::future::Future<Output = Exposition>>(
    slot: &Slot,
    compute: impl FnOnce() -> F,
) -> Response {
    let arrived = Instant::now();
    let mut slot = slot.lock().await;
    let text = match &*slot {
        Some((started, text)) if *started >= arrived => text.clone(),
        _ => {
            let started = Instant::now();
            let text = compute().await.0;
            *slot = Some((started, text.clone()));
            text
        }
    };
    let content_type = [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")];
    (content_type, text).into_response()
}

async fn totals(State(metrics): State<Metrics>) -> Response {
    cached(&metrics.totals, || compute_totals(metrics.broker.clone())).await
}

async fn per_object(State(metrics): State<Metrics>) -> Response {
    cached(&metrics.per_object, || compute_per_object(metrics.broker.clone())).await
}

/// One metric family being written.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    /// A histogram whose values were observed in units of `1/scale` of
    /// what it is named in (microseconds for seconds: 1e6; 1 for a count).
    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram, scale: f64) {
        self.family(name, "histogram", help);
        let (buckets, sum) = histogram.snapshot();
        let bucket = format!("{name}_bucket");
        let mut count = 0;
        for (bound, n) in buckets {
            let le = bound.map_or("+Inf".to_owned(), |b| (b as f64 / scale).to_string());
            self.sample(&bucket, &[("le", &le)], n);
            count = n;
        }
        self.sample(&format!("{name}_sum"), &[], sum as f64 / scale);
        self.sample(&format!("{name}_count"), &[], count);
    }
}

/// A label value as the format wants it: `\`, `"` and line feeds escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn compute_totals(broker: Arc<Broker>) -> Exposition {
    let mut out = Exposition(String::new());
    let queues = broker.queues(None).await.unwrap_or_default();
    let status = broker.status();
    let sum = |f: fn(&warren_server::admin::QueueInfo) -> u32| -> u64 {
        queues.iter().map(|q| u64::from(f(q))).sum()
    };
    out.family("warren_build_info", "gauge", "Warren's version");
    out.sample("warren_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    out.gauge(
        "rabbitmq_connections",
        "Connections currently open",
        broker.connections().len(),
    );
    out.gauge("rabbitmq_queues", "Queues available", queues.len());
    out.gauge(
        "rabbitmq_consumers",
        "Consumers currently connected",
        sum(|q| q.consumers),
    );
    out.gauge(
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
        sum(|q| q.ready),
    );
    out.gauge(
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        sum(|q| q.unacked),
    );
    out.gauge(
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages",
        sum(|q| q.ready) + sum(|q| q.unacked),
    );
    out.gauge(
        "rabbitmq_process_resident_memory_bytes",
        "Memory used in bytes",
        status.memory_used,
    );
    out.gauge(
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark in bytes",
        status.memory_limit,
    );
    out.gauge(
        "rabbitmq_disk_space_available_bytes",
        "Disk space available in bytes",
        status.disk_free,
    );
    out.gauge(
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        status.disk_free_limit,
    );
    out.gauge(
        "rabbitmq_alarms_memory_used_watermark",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(status.memory_alarm),
    );
    out.gauge(
        "rabbitmq_alarms_free_disk_space_watermark",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(status.disk_alarm),
    );
    let activity = broker.channels().await;
    let (channels, c) = (activity.channels, activity.totals);
    out.gauge("rabbitmq_channels", "Channels currently open", channels.len());
    let counters: [(&str, &str, u64); 12] = [
        ("received", "Total number of messages received from publishers", c.publish),
        ("confirmed", "Total number of messages confirmed to publishers", c.confirm),
        (
            "routed",
            "Total number of messages routed to queues or streams",
            c.publish.saturating_sub(c.return_unroutable + c.drop_unroutable),
        ),
        (
            "unroutable_dropped",
            "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
            c.drop_unroutable,
        ),
        (
            "unroutable_returned",
            "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
            c.return_unroutable,
        ),
        ("delivered", "Total number of messages delivered to consumers", c.deliver_get()),
        (
            "delivered_consume_manual_ack",
            "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
            c.deliver,
        ),
        (
            "delivered_consume_auto_ack",
            "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
            c.deliver_no_ack,
        ),
        (
            "delivered_get_manual_ack",
            "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
            c.get,
        ),
        (
            "delivered_get_auto_ack",
            "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
            c.get_no_ack,
        ),
        ("redelivered", "Total number of messages redelivered to consumers", c.redeliver),
        ("acknowledged", "Total number of messages acknowledged by consumers", c.ack),
    ];
    for (what, help, value) in counters {
        out.counter(&format!("rabbitmq_global_messages_{what}_total"), help, value);
    }
    // Warren's own: no rabbitmq_prometheus metric corresponds.
    let metrics = broker.store.metrics();
    out.histogram(
        "warren_store_fsync_seconds",
        "How long each fdatasync of a group commit took",
        &metrics.fsync_us,
        1e6,
    );
    out.histogram(
        "warren_store_group_commit_messages",
        "How many persistent messages each group commit (one fdatasync) covered",
        &metrics.commit_messages,
        1.0,
    );
    out.histogram(
        "warren_message_delivery_latency_seconds",
        "How long messages waited in their queues, from arrival to delivery or basic.get (millisecond precision)",
        &metrics.delivery_us,
        1e6,
    );
    out
}

async fn compute_per_object(broker: Arc<Broker>) -> Exposition {
    let mut out = Exposition(String::new());
    let queues = broker.queues(None).await.unwrap_or_default();
    type Field = fn(&warren_server::admin::QueueInfo) -> u32;
    let families: [(&str, &str, Field); 4] = [
        (
            "rabbitmq_queue_messages_ready",
            "Messages ready to be delivered to consumers",
            |q| q.ready,
        ),
        (
            "rabbitmq_queue_messages_unacked",
            "Messages delivered to consumers but not yet acknowledged",
            |q| q.unacked,
        ),
        (
            "rabbitmq_queue_messages",
            "Sum of ready and unacknowledged messages",
            |q| q.ready + q.unacked,
        ),
        ("rabbitmq_queue_consumers", "Consumers on a queue", |q| {
            q.consumers
        }),
    ];
    for (name, help, value) in families {
        out.family(name, "gauge", help);
        for q in &queues {
            out.sample(name, &[("vhost", &q.vhost), ("queue", &q.name)], value(q));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition(String::new());
        out.sample("m", &[("queue", "a\"b\\c\nd")], 1);
        assert_eq!(out.0, "m{queue=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
