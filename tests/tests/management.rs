//! The management API's declare, bind, publish and get, and its health
//! checks, with RabbitMQ's paths, statuses, field names and types: every
//! test runs against RabbitMQ 3.10.8's API too.

use serde_json::{json, Value};
use warren_management::client::segment;
use warren_tests::*;

/// Each field is there, with a value of the given JSON type ("string",
/// "number", "bool", "object", "array").
fn assert_fields(value: &Value, fields: &[(&str, &str)]) {
    for (name, kind) in fields {
        let field = &value[*name];
        let ok = match *kind {
            "string" => field.is_string(),
            "number" => field.is_number(),
            "bool" => field.is_boolean(),
            "object" => field.is_object(),
            "array" => field.is_array(),
            _ => unreachable!("a JSON type"),
        };
        assert!(ok, "field {name} should be a {kind} in {value}");
    }
}

#[tokio::test]
async fn declare_bind_publish_and_get_through_the_api() {
    within(async {
        let broker = start_broker().await;
        let (q, x) = (unique("api-q"), unique("api-x"));
        let (qp, xp) = (
            format!("/api/queues/%2F/{}", segment(&q)),
            format!("/api/exchanges/%2F/{}", segment(&x)),
        );
        let (status, _) = broker
            .admin(
                "PUT",
                &qp,
                Some(json!({"durable": false, "arguments": {"x-max-length": 10}})),
            )
            .await;
        assert_eq!(status, 201);
        assert_eq!(
            broker
                .admin(
                    "PUT",
                    &qp,
                    Some(json!({"durable": false, "arguments": {"x-max-length": 10}}))
                )
                .await
                .0,
            204
        );
        let (status, _) = broker.admin("PUT", &xp, Some(json!({"type": "topic"}))).await;
        assert_eq!(status, 201);
        let (status, exchange) = broker.admin("GET", &xp, None).await;
        assert_eq!(status, 200);
        assert_fields(
            &exchange,
            &[
                ("name", "string"),
                ("vhost", "string"),
                ("type", "string"),
                ("durable", "bool"),
                ("auto_delete", "bool"),
                ("internal", "bool"),
                ("arguments", "object"),
            ],
        );
        assert_eq!(
            (exchange["type"].as_str(), exchange["durable"].as_bool()),
            (Some("topic"), Some(false))
        );

        let bp = format!("/api/bindings/%2F/e/{}/q/{}", segment(&x), segment(&q));
        let (status, _) = broker
            .admin("POST", &bp, Some(json!({"routing_key": "orders.#"})))
            .await;
        assert_eq!(status, 201);
        let (_, bindings) = broker.admin("GET", &bp, None).await;
        let binding = &bindings[0];
        assert_fields(
            binding,
            &[
                ("source", "string"),
                ("vhost", "string"),
                ("destination", "string"),
                ("destination_type", "string"),
                ("routing_key", "string"),
                ("arguments", "object"),
                ("properties_key", "string"),
            ],
        );
        assert_eq!(binding["properties_key"], "orders.%23");
        let (_, from) = broker.admin("GET", &format!("{xp}/bindings/source"), None).await;
        // The queue's bindings include the default exchange's, as RabbitMQ lists them.
        let (_, own) = broker.admin("GET", &format!("{qp}/bindings"), None).await;
        let own = own.as_array().unwrap();
        assert!(
            own.iter()
                .any(|b| b["source"] == "" && b["routing_key"] == q.as_str()),
            "{own:?}"
        );
        assert!(own.iter().any(|b| b["source"] == x.as_str()), "{own:?}");
        assert_eq!(from.as_array().unwrap().len(), 1);

        let publish = |key: &str, payload: &str| {
            json!({"routing_key": key, "payload": payload, "payload_encoding": "string",
                   "properties": {"delivery_mode": 2, "headers": {"n": 1}, "correlation_id": "c1"}})
        };
        let (status, routed) = broker
            .admin(
                "POST",
                &format!("{xp}/publish"),
                Some(publish("orders.new", "hello")),
            )
            .await;
        assert_eq!((status, routed), (200, json!({"routed": true})));
        let (_, routed) = broker
            .admin("POST", &format!("{xp}/publish"), Some(publish("other", "lost")))
            .await;
        assert_eq!(routed, json!({"routed": false}));

        let get = |mode: &str| json!({"count": 5, "ackmode": mode, "encoding": "auto"});
        let (status, got) = broker
            .admin("POST", &format!("{qp}/get"), Some(get("ack_requeue_true")))
            .await;
        assert_eq!(status, 200);
        let message = &got[0];
        assert_fields(
            message,
            &[
                ("payload_bytes", "number"),
                ("redelivered", "bool"),
                ("exchange", "string"),
                ("routing_key", "string"),
                ("message_count", "number"),
                ("properties", "object"),
                ("payload", "string"),
                ("payload_encoding", "string"),
            ],
        );
        assert_eq!(message["payload"], "hello");
        assert_eq!(message["properties"]["correlation_id"], "c1");
        assert_eq!(message["properties"]["headers"]["n"], 1);
        assert_eq!(message["properties"]["delivery_mode"], 2);
        let (_, got) = broker
            .admin("POST", &format!("{qp}/get"), Some(get("ack_requeue_false")))
            .await;
        assert_eq!(got.as_array().unwrap().len(), 1);
        assert_eq!(got[0]["redelivered"], true, "looked at once, put back");
        let (_, got) = broker
            .admin("POST", &format!("{qp}/get"), Some(get("ack_requeue_false")))
            .await;
        assert_eq!(got, json!([]));

        // A publish to a missing exchange: 400 with the AMQP error, as RabbitMQ.
        let missing = format!("/api/exchanges/%2F/{}/publish", segment(&unique("missing")));
        let (status, refused) = broker.admin("POST", &missing, Some(publish("k", "x"))).await;
        assert_eq!(status, 400);
        let reason = refused["reason"].as_str().unwrap();
        assert!(reason.starts_with("404 NOT_FOUND - no exchange"), "{refused}");

        let props = segment(binding["properties_key"].as_str().unwrap());
        assert_eq!(
            broker.admin("DELETE", &format!("{bp}/{props}"), None).await.0,
            204
        );
        let (_, bindings) = broker.admin("GET", &bp, None).await;
        assert_eq!(bindings, json!([]));
        assert_eq!(broker.admin("DELETE", &xp, None).await.0, 204);
        assert_eq!(broker.admin("DELETE", &qp, None).await.0, 204);
        assert_eq!(broker.admin("GET", &qp, None).await.0, 404);
    })
    .await;
}

#[tokio::test]
async fn health_checks_and_nodes_answer_as_rabbitmq() {
    within(async {
        let broker = start_broker().await;
        let (status, alive) = broker.admin("GET", "/api/aliveness-test/%2F", None).await;
        assert_eq!((status, alive), (200, json!({"status": "ok"})));
        for path in ["/api/health/checks/alarms", "/api/health/checks/local-alarms"] {
            let (status, answer) = broker.admin("GET", path, None).await;
            assert_eq!((status, &answer["status"]), (200, &json!("ok")), "{path}");
        }
        let (status, nodes) = broker.admin("GET", "/api/nodes", None).await;
        assert_eq!(status, 200);
        assert_fields(
            &nodes[0],
            &[
                ("name", "string"),
                ("running", "bool"),
                ("mem_used", "number"),
                ("mem_limit", "number"),
                ("mem_alarm", "bool"),
                ("disk_free", "number"),
                ("disk_free_limit", "number"),
                ("disk_free_alarm", "bool"),
            ],
        );
        let (_, overview) = broker.admin("GET", "/api/overview", None).await;
        assert_fields(
            &overview,
            &[
                ("product_name", "string"),
                ("product_version", "string"),
                ("management_version", "string"),
                ("node", "string"),
                ("queue_totals", "object"),
                ("object_totals", "object"),
            ],
        );
        // Booleans and counts as strings, as rabbitmqadmin sends them.
        let q = unique("strings");
        let qp = format!("/api/queues/%2F/{}", segment(&q));
        assert_eq!(
            broker
                .admin(
                    "PUT",
                    &qp,
                    Some(json!({"durable": "false", "auto_delete": "false"}))
                )
                .await
                .0,
            201
        );
        let (status, got) = broker
            .admin(
                "POST",
                &format!("{qp}/get"),
                Some(json!({"count": "1", "ackmode": "ack_requeue_true", "encoding": "auto"})),
            )
            .await;
        assert_eq!((status, got), (200, json!([])));
        broker.admin("DELETE", &qp, None).await;
    })
    .await;
}

#[tokio::test]
async fn lists_are_sorted_filtered_paged_and_cut_to_columns_as_rabbitmq_does() {
    within(async {
        let broker = start_broker().await;
        let prefix = unique("listing");
        for i in 1..=3 {
            let path = format!("/api/vhosts/{}", segment(&format!("{prefix}-{i}")));
            assert_eq!(broker.admin("PUT", &path, None).await.0, 201);
        }
        let name = segment(&prefix);
        let query = format!("page=1&page_size=500&name={name}&sort=name&sort_reverse=true&columns=name");
        let (status, listed) = broker.admin("GET", &format!("/api/vhosts?{query}"), None).await;
        assert_eq!(status, 200);
        let items = listed["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(names, [3, 2, 1].map(|i| format!("{prefix}-{i}")));
        assert_eq!(
            items[0].as_object().unwrap().len(),
            1,
            "only the column asked for"
        );
        let (_, all) = broker.admin("GET", "/api/vhosts?columns=name", None).await;
        assert!(all
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_object().unwrap().len() == 1));
        let (status, page) = broker
            .admin(
                "GET",
                &format!("/api/vhosts?name={name}&sort=name&page=2&page_size=2"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_fields(
            &page,
            &[
                ("filtered_count", "number"),
                ("item_count", "number"),
                ("items", "array"),
                ("page", "number"),
                ("page_count", "number"),
                ("page_size", "number"),
                ("total_count", "number"),
            ],
        );
        assert_eq!(
            (
                page["filtered_count"].as_u64(),
                page["item_count"].as_u64(),
                page["page_count"].as_u64()
            ),
            (Some(3), Some(1), Some(2))
        );
        assert_eq!(page["items"][0]["name"], format!("{prefix}-3"));
        let (status, refused) = broker
            .admin("GET", "/api/vhosts?page=1&page_size=600", None)
            .await;
        assert_eq!(
            (status, &refused["error"]),
            (400, &json!("invalid_pagination_parameters"))
        );
        for i in 1..=3 {
            broker
                .admin(
                    "DELETE",
                    &format!("/api/vhosts/{}", segment(&format!("{prefix}-{i}"))),
                    None,
                )
                .await;
        }
    })
    .await;
}

/// Polls `path` until `ready` holds of its answer (RabbitMQ's statistics
/// arrive every 5 s).
async fn until_answer(broker: &TestBroker, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    loop {
        let (status, value) = broker.admin("GET", path, None).await;
        if status == 200 && ready(&value) {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn message_stats_rates_and_channels_as_rabbitmq_lists_them() {
    use lapin::options::{BasicAckOptions, ConfirmSelectOptions};
    use lapin::BasicProperties;
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = shared_queue(&ch, "stats-q").await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for _ in 0..5 {
            publish_confirmed(&ch, "", &q, "m", BasicProperties::default()).await;
        }
        let got = get(&ch, &q).await.unwrap();
        got.ack(BasicAckOptions::default()).await.unwrap();
        let mut consumer = consume(&ch, &q, false, Default::default()).await;
        for _ in 0..4 {
            use futures::StreamExt;
            let delivery = consumer.next().await.unwrap().unwrap();
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }

        let qp = format!("/api/queues/%2F/{}", segment(&q));
        let queue = until_answer(&broker, &qp, |v| {
            v["message_stats"]["ack"] == 5
                && v["message_stats"]["publish"] == 5
                && v["messages_details"].is_object()
        })
        .await;
        let stats = &queue["message_stats"];
        assert_fields(
            stats,
            &[
                ("publish", "number"),
                ("publish_details", "object"),
                ("deliver", "number"),
                ("get", "number"),
                ("ack", "number"),
                ("ack_details", "object"),
                ("deliver_get", "number"),
                ("deliver_get_details", "object"),
            ],
        );
        assert_fields(&stats["publish_details"], &[("rate", "number")]);
        assert_eq!(
            (&stats["get"], &stats["deliver"], &stats["deliver_get"]),
            (&json!(1), &json!(4), &json!(5))
        );
        assert_fields(
            &queue,
            &[
                ("messages_details", "object"),
                ("messages_ready_details", "object"),
            ],
        );
        assert_fields(&queue["messages_details"], &[("rate", "number")]);

        // The channel: found by what it did, as other tests may share the broker.
        let ours = |c: &Value| {
            c["confirm"] == true && c["message_stats"]["publish"] == 5 && c["consumer_count"] == 1
        };
        let channels = until_answer(&broker, "/api/channels", |v| {
            v.as_array().is_some_and(|all| all.iter().any(ours))
        })
        .await;
        let channel = channels
            .as_array()
            .unwrap()
            .iter()
            .find(|c| ours(c))
            .unwrap()
            .clone();
        assert_fields(
            &channel,
            &[
                ("name", "string"),
                ("number", "number"),
                ("node", "string"),
                ("connection_details", "object"),
                ("user", "string"),
                ("vhost", "string"),
                ("state", "string"),
                ("consumer_count", "number"),
                ("prefetch_count", "number"),
                ("global_prefetch_count", "number"),
                ("messages_unacknowledged", "number"),
                ("messages_unconfirmed", "number"),
                ("messages_uncommitted", "number"),
                ("acks_uncommitted", "number"),
                ("confirm", "bool"),
                ("transactional", "bool"),
                ("message_stats", "object"),
            ],
        );
        assert_fields(
            &channel["connection_details"],
            &[
                ("name", "string"),
                ("peer_host", "string"),
                ("peer_port", "number"),
            ],
        );
        assert_eq!(
            (&channel["user"], &channel["vhost"], &channel["state"]),
            (&json!("guest"), &json!("/"), &json!("running"))
        );
        let stats = &channel["message_stats"];
        assert_fields(
            stats,
            &[
                ("publish", "number"),
                ("confirm", "number"),
                ("ack", "number"),
                ("deliver_get", "number"),
            ],
        );
        assert_eq!(
            (&stats["confirm"], &stats["ack"], &stats["deliver_get"]),
            (&json!(5), &json!(5), &json!(5))
        );
        let name = channel["name"].as_str().unwrap();
        assert!(name.ends_with(&format!("({})", channel["number"])), "{name}");
        let (status, one) = broker
            .admin("GET", &format!("/api/channels/{}", segment(name)), None)
            .await;
        assert_eq!((status, &one["number"]), (200, &channel["number"]));
        let connection = channel["connection_details"]["name"].as_str().unwrap();
        let (status, of_connection) = broker
            .admin(
                "GET",
                &format!("/api/connections/{}/channels", segment(connection)),
                None,
            )
            .await;
        assert_eq!((status, of_connection.as_array().map(Vec::len)), (200, Some(1)));

        let overview = until_answer(&broker, "/api/overview", |v| {
            v["message_stats"]["publish"].as_u64() >= Some(5)
        })
        .await;
        assert_fields(
            &overview["message_stats"],
            &[
                ("publish", "number"),
                ("publish_details", "object"),
                ("ack", "number"),
                ("deliver_get", "number"),
                ("confirm", "number"),
            ],
        );
        assert_fields(
            &overview["queue_totals"],
            &[("messages", "number"), ("messages_details", "object")],
        );
        assert_fields(
            &overview["object_totals"],
            &[("channels", "number"), ("connections", "number")],
        );

        // Rates: publishing goes on until the queue's publish rate shows it.
        drop(consumer);
        loop {
            publish_confirmed(&ch, "", &q, "m", BasicProperties::default()).await;
            let (_, queue) = broker.admin("GET", &qp, None).await;
            if queue["message_stats"]["publish_details"]["rate"].as_f64() > Some(0.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        ch.queue_delete(q.as_str().into(), Default::default())
            .await
            .unwrap();
        conn.close(200, "".into()).await.unwrap();
    })
    .await;
}

/// What a connection counted stays in the broker's totals once it closes,
/// channels still open at the close included (Warren-only: RabbitMQ's
/// overview totals follow its own statistics database).
#[tokio::test]
async fn the_overview_totals_keep_what_closed_connections_counted() {
    use lapin::options::ConfirmSelectOptions;
    use lapin::BasicProperties;
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "retired").await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for _ in 0..5 {
            publish_confirmed(&ch, "", &q, "m", BasicProperties::default()).await;
        }
        // Closed with its channel still open.
        conn.close(200, "".into()).await.unwrap();
        let overview = until_answer(&broker, "/api/overview", |v| {
            v["object_totals"]["connections"] == 0
        })
        .await;
        let stats = &overview["message_stats"];
        assert_eq!(
            (&stats["publish"], &stats["confirm"]),
            (&json!(5), &json!(5)),
            "{stats}"
        );
    })
    .await;
}

/// The topology graph's rates: every step messages take, through
/// exchange-to-exchange and queue bindings, to an alternate exchange, and
/// from a queue to its dead-letter exchange (Warren-only: `/api/flows` is
/// Warren's own).
#[tokio::test]
async fn every_step_of_the_topology_has_its_rate() {
    use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions};
    use lapin::types::{AMQPValue, FieldTable};
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let declare = |name: &str, kind: lapin::ExchangeKind, args: FieldTable| {
            let ch = ch.clone();
            let name = name.to_owned();
            async move {
                ch.exchange_declare(
                    name.as_str().into(),
                    kind,
                    ExchangeDeclareOptions::default(),
                    args,
                )
                .await
                .unwrap()
            }
        };
        let alternate = table(&[("alternate-exchange", long_string("flow-lost"))]);
        declare("flow-x", lapin::ExchangeKind::Topic, alternate).await;
        declare("flow-y", lapin::ExchangeKind::Fanout, FieldTable::default()).await;
        declare("flow-lost", lapin::ExchangeKind::Fanout, FieldTable::default()).await;
        ch.exchange_bind(
            "flow-y".into(),
            "flow-x".into(),
            "a.#".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let q = exclusive_queue(&ch, "flow-q").await;
        let unrouted = exclusive_queue(&ch, "flow-unrouted").await;
        // Expires on arrival, so dead-letters everything it takes.
        let dying = exclusive_queue_with(
            &ch,
            "flow-dying",
            table(&[
                ("x-message-ttl", AMQPValue::LongInt(0)),
                ("x-dead-letter-exchange", long_string("flow-lost")),
            ]),
        )
        .await;
        let bind = |queue: &str, exchange: &str, key: &str| {
            let (ch, queue, exchange, key) =
                (ch.clone(), queue.to_owned(), exchange.to_owned(), key.to_owned());
            async move {
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap()
            }
        };
        bind(&q, "flow-y", "").await;
        bind(&unrouted, "flow-lost", "").await;
        bind(&dying, "flow-x", "e.#").await;

        let expected = [
            ("flow-x", "flow-y", "exchange"),
            ("flow-y", q.as_str(), "queue"),
            ("flow-x", "flow-lost", "alternate-exchange"),
            ("flow-lost", unrouted.as_str(), "queue"),
            ("flow-x", dying.as_str(), "queue"),
            (dying.as_str(), "flow-lost", "dead-letter-exchange"),
        ];
        loop {
            for key in ["a.b", "z", "e.x"] {
                publish(&ch, "flow-x", key, b"m").await;
            }
            let (status, flows) = broker.admin("GET", "/api/flows/%2F", None).await;
            assert_eq!(status, 200, "{flows}");
            let rate = |(source, destination, kind): (&str, &str, &str)| {
                flows
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| {
                        f["source"] == source
                            && f["destination"] == destination
                            && f["destination_type"] == kind
                    })
                    .and_then(|f| f["rate"].as_f64())
                    .unwrap_or(0.0)
            };
            if expected.iter().all(|&step| rate(step) > 0.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// DELETE of a queue honours `?if-empty=true` and `?if-unused=true`, with
/// RabbitMQ's 400 and text.
#[tokio::test]
async fn deleting_a_queue_through_the_api_honours_if_empty_and_if_unused() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = shared_queue(&ch, "api-delete").await;
        publish(&ch, "", &q, b"m").await;
        let qp = format!("/api/queues/%2F/{}", segment(&q));
        let (status, refused) = broker.admin("DELETE", &format!("{qp}?if-empty=true"), None).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["reason"], format!("queue '{q}' in vhost '/' not empty"));
        let consumer = consume(&ch, &q, false, Default::default()).await;
        let (status, refused) = broker
            .admin("DELETE", &format!("{qp}?if-unused=true"), None)
            .await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["reason"], format!("queue '{q}' in vhost '/' in use"));
        drop(consumer);
        assert_eq!(broker.admin("DELETE", &qp, None).await.0, 204);
        assert_eq!(broker.admin("GET", &qp, None).await.0, 404);
    })
    .await;
}
