//! The route explainer (Warren's own; RabbitMQ has none):
//! `POST /api/explain/{vhost}/{exchange}` with `{"routing_key": "…",
//! "headers": {…}}` answers every queue a message published so would
//! reach, through which exchange and binding, every exchange the walk
//! visited and how it got there (published to, an exchange-to-exchange
//! binding, or an alternate exchange), which bindings matched and how
//! many missed, and where each queue reached would dead-letter it.
//! Nothing is published. `warren ctl explain_route` prints it.

use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{json, Value};
use warren_router::{Binding, Destination, Reached};

use crate::answer::{body, exchange_name, ok, Answer, ApiError, Shared};
use crate::json::{json_to_table, table_to_json};

/// What the message would carry.
#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    headers: Option<Value>,
}

fn binding_json(b: &Binding) -> Value {
    let (destination, kind) = match &b.destination {
        Destination::Queue(q) => (q.to_string(), "queue"),
        Destination::Exchange(x) => (x.to_string(), "exchange"),
    };
    json!({
        "destination": destination,
        "destination_type": kind,
        "routing_key": b.routing_key,
        "arguments": table_to_json(&b.arguments),
    })
}

fn reached_json(reached: &Reached) -> Value {
    match reached {
        Reached::Published => json!({"how": "published"}),
        Reached::Binding { from, routing_key } => {
            json!({"how": "binding", "from": from, "routing_key": routing_key})
        }
        Reached::Alternate { from } => json!({"how": "alternate-exchange", "from": from}),
    }
}

pub(crate) async fn explain(
    State(broker): Shared,
    Path((vhost, exchange)): Path<(String, String)>,
    bytes: Bytes,
) -> Answer {
    let message: Message = body(&bytes)?;
    let headers = match &message.headers {
        None | Some(Value::Null) => None,
        Some(h) => Some(json_to_table(h).map_err(ApiError::bad_request)?),
    };
    let exchange = exchange_name(&exchange);
    let (explained, dead_letters) =
        broker.explain(&vhost, exchange, &message.routing_key, headers.as_ref())?;
    let queues: Vec<Value> = explained
        .queues
        .iter()
        .map(|a| {
            let dead = dead_letters.iter().find(|d| d.queue == a.queue);
            json!({
                "queue": a.queue,
                "exchange": a.exchange,
                "routing_key": a.routing_key,
                "dead_letter_exchange": dead.map(|d| d.exchange.clone()),
                "dead_letter_routing_key": dead.and_then(|d| d.routing_key.clone()),
            })
        })
        .collect();
    let hops: Vec<Value> = explained
        .hops
        .iter()
        .map(|h| {
            json!({
                "exchange": h.exchange,
                "type": h.kind,
                "reached": reached_json(&h.reached),
                "matched": h.matched.iter().map(binding_json).collect::<Vec<_>>(),
                "missed": h.missed,
                "held_for_delay": h.held,
                "visited_before": h.again,
            })
        })
        .collect();
    // A delayed exchange that holds the message routes it when due.
    let held = explained.hops.iter().any(|h| h.held);
    ok(json!({
        "vhost": vhost,
        "exchange": exchange,
        "routing_key": message.routing_key,
        "routed": !queues.is_empty() || held,
        "held_for_delay": held,
        "queues": queues,
        "hops": hops,
    }))
}
