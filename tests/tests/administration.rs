//! Administration of a running broker: `warren ctl` (rabbitmqctl's verbs,
//! spoken to the management API) and definitions exported from RabbitMQ.
//! `warren ctl` speaks RabbitMQ's management API, so the CLI test runs
//! against the reference's API as well as Warren's.

use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::{json, Value};
use tokio::process::Command;
use warren_management::client::segment;
use warren_tests::*;

/// Runs `warren ctl` against the broker's management API: its exit status
/// and standard output.
async fn ctl(broker: &TestBroker, args: &[&str]) -> (bool, String) {
    let out = Command::new(warren_binary())
        .arg("ctl")
        .args([
            "--url",
            &broker.management,
            "--user",
            "guest",
            "--password",
            "guest",
        ])
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || !stderr.is_empty(), "a failure says why");
    (out.status.success(), stdout)
}

async fn ctl_ok(broker: &TestBroker, args: &[&str]) -> String {
    let (ok, out) = ctl(broker, args).await;
    assert!(ok, "warren ctl {args:?} failed: {out}");
    out
}

/// The code and text the broker closed the connection with; `None` if
/// the socket failed first.
async fn closed(mut events: impl futures::Stream<Item = lapin::Event> + Unpin) -> Option<(u16, String)> {
    use futures::StreamExt;
    loop {
        match events.next().await {
            Some(lapin::Event::Error(err)) => match err.kind() {
                lapin::ErrorKind::ProtocolError(_) => return Some((reply_code(&err), reply_text(&err))),
                _ => return None,
            },
            Some(_) => continue,
            None => panic!("the connection ended without an error"),
        }
    }
}

/// Waits until `ctl` lists a row containing `needle` whose cells are all
/// filled (RabbitMQ's API shows connections, and a consumer's channel,
/// once its statistics catch up).
async fn until_listed(broker: &TestBroker, args: &[&str], needle: &str) -> String {
    loop {
        let out = ctl_ok(broker, args).await;
        let complete = |row: &&str| row.contains(needle) && row.split('\t').all(|cell| !cell.is_empty());
        if let Some(row) = out.lines().find(complete) {
            return row.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn warren_ctl_manages_users_vhosts_permissions_queues_and_connections() {
    within(async {
        let broker = start_broker().await;
        let (user, vhost) = (unique("ctl-user"), unique("ctl-vhost"));
        ctl_ok(&broker, &["add_vhost", &vhost]).await;
        ctl_ok(&broker, &["add_user", &user, "pa55"]).await;
        let (ok, _) = ctl(&broker, &["add_user", &user, "again"]).await;
        assert!(!ok, "adding a user twice fails");
        ctl_ok(
            &broker,
            &["set_permissions", "-p", &vhost, &user, "^app", ".*", ".*"],
        )
        .await;
        // The probe queues below are `app-probe-…`, within `^app`.
        assert!(ctl_ok(&broker, &["list_users"])
            .await
            .lines()
            .any(|l| l.starts_with(&user)));
        assert!(ctl_ok(&broker, &["list_vhosts"])
            .await
            .lines()
            .any(|l| l == vhost));
        let permissions = ctl_ok(&broker, &["list_permissions", "-p", &vhost]).await;
        assert!(
            permissions.lines().any(|l| l == format!("{user}\t^app\t.*\t.*")),
            "{permissions}"
        );

        let conn = broker.connect_as(&user, "pa55", &vhost).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "app-q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        for _ in 0..3 {
            publish_confirmed(&ch, "", "app-q", "m", BasicProperties::default()).await;
        }
        let row = until_listed(&broker, &["list_queues", "-p", &vhost], "app-q").await;
        if is_warren() {
            // RabbitMQ's counts lag behind by its statistics interval.
            assert_eq!(row, "app-q\t3\t0");
        }
        ctl_ok(&broker, &["purge_queue", "-p", &vhost, "app-q"]).await;
        assert_eq!(message_count(&ch, "app-q").await, 0);

        // A consumer, with its prefetch.
        ch.basic_qos(5, BasicQosOptions::default()).await.unwrap();
        // Held: lapin cancels a consumer it drops.
        let _consumer = ch
            .basic_consume(
                "app-q".into(),
                "app-tag".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let row = until_listed(&broker, &["list_consumers", "-p", &vhost], "app-tag").await;
        let cells: Vec<&str> = row.split('\t').collect();
        assert_eq!(
            (cells[0], cells[1], cells[3], cells[4], cells[5], cells[6]),
            ("app-q", "app-tag", "1", "true", "5", "true"),
            "{row}"
        );

        // Closing a connection: the client hears 320 and the reason.
        // Its events tell why the broker closed it.
        let probe = Box::pin(conn.events_listener());
        let row = until_listed(&broker, &["list_connections"], &user).await;
        let name = row.split('\t').next().unwrap().to_owned();
        ctl_ok(&broker, &["close_connection", &name, "maintenance"]).await;
        assert_eq!(
            closed(probe).await,
            Some((320, "CONNECTION_FORCED - maintenance".to_owned()))
        );

        // Deleting the queue, then the vhost and the user.
        ctl_ok(&broker, &["delete_queue", "-p", &vhost, "app-q"]).await;
        assert!(!ctl_ok(&broker, &["list_queues", "-p", &vhost])
            .await
            .contains("app-q"));
        ctl_ok(&broker, &["delete_vhost", &vhost]).await;
        ctl_ok(&broker, &["delete_user", &user]).await;
        let err = broker.connect_as(&user, "pa55", &vhost).await.unwrap_err();
        assert_eq!(reply_code(&err), 403, "the user is gone");
        let (ok, _) = ctl(&broker, &["delete_vhost", &vhost]).await;
        assert!(!ok, "a missing vhost cannot be deleted");
    })
    .await;
}

/// Makes `vhost` with `warren ctl`, gives `guest` every permission there,
/// and connects to it.
async fn guest_in_new_vhost(broker: &TestBroker, vhost: &str) -> (lapin::Connection, lapin::Channel) {
    ctl_ok(broker, &["add_vhost", vhost]).await;
    ctl_ok(
        broker,
        &["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
    )
    .await;
    let conn = broker.connect_as("guest", "guest", vhost).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

#[tokio::test]
async fn deleting_a_vhost_closes_its_connections_and_drops_its_queues() {
    within(async {
        let broker = start_broker().await;
        let vhost = unique("doomed");
        let (conn, ch) = guest_in_new_vhost(&broker, &vhost).await;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("kept".into(), durable, FieldTable::default())
            .await
            .unwrap();
        // Its events tell why the broker closed it.
        let probe = Box::pin(conn.events_listener());
        ctl_ok(&broker, &["delete_vhost", &vhost]).await;
        let reason = format!("CONNECTION_FORCED - vhost '{vhost}' is deleted");
        match closed(probe).await {
            Some(close) => assert_eq!(close, (320, reason)),
            // RabbitMQ stops the vhost's connection processes as it sends
            // the close: lapin sometimes sees the reset first.
            None => assert!(!is_warren(), "Warren closes with 320 and the reason"),
        }
        // Made again, it is empty.
        let (conn, ch) = guest_in_new_vhost(&broker, &vhost).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = ch
            .queue_declare("kept".into(), passive, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
        drop(conn);
        ctl_ok(&broker, &["delete_vhost", &vhost]).await;
    })
    .await;
}

/// A file from `rabbitmqctl export_definitions` on RabbitMQ 3.10.8 (its
/// `defs-user`, password `defs-pass`, and `defs-vhost` with a quorum queue,
/// a topic exchange with an alternate, a binding, permissions and topic
/// permissions), imported into Warren: the user logs in with their
/// password, and everything works as defined. Warren-only: it imports into
/// the broker under test.
#[tokio::test]
async fn definitions_exported_from_rabbitmq_import_and_their_users_log_in() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/rabbitmq-3.10.8-definitions.json");
        let (ok, _) = ctl(&broker, &["import_definitions", path.to_str().unwrap()]).await;
        assert!(ok);
        let conn = broker
            .connect_as("defs-user", "defs-pass", "defs-vhost")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        // Topic permission `^{username}` on amq.topic does not bind defs-x.
        publish_confirmed(&ch, "defs-x", "orders.new", "o1", BasicProperties::default()).await;
        assert_eq!(message_count(&ch, "defs-q").await, 1);
        assert_eq!(drain(&ch, "defs-q").await, ["o1"]);
        // configure is `^defs`.
        let err = ch
            .queue_declare(
                "other".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        // Export gives the same definitions back, in the same format.
        let (status, exported) = broker.admin("GET", "/api/definitions", None).await;
        assert_eq!(status, 200);
        let text = std::fs::read_to_string(&path).unwrap();
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["permissions", "topic_permissions", "bindings"] {
            let ours: Vec<&serde_json::Value> = exported[key]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["vhost"] == "defs-vhost")
                .collect();
            let theirs: Vec<&serde_json::Value> = original[key].as_array().unwrap().iter().collect();
            assert_eq!(ours, theirs, "{key}");
        }
        let user = exported["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "defs-user")
            .unwrap();
        assert_eq!(user["password_hash"], original["users"][0]["password_hash"]);
        assert_eq!(user["tags"], serde_json::json!(["monitoring"]));

        // What Warren cannot honour is refused whole, not skipped.
        let mut with_policy = original.clone();
        with_policy["policies"] = serde_json::json!([{"vhost": "/", "name": "ttl", "pattern": ".*",
            "definition": {"message-ttl": 1000}}]);
        let (status, answer) = broker.admin("POST", "/api/definitions", Some(with_policy)).await;
        assert_eq!(status, 400, "{answer}");
    })
    .await;
}

/// The route explainer (Warren-only: RabbitMQ has none), through the API
/// and `warren ctl explain_route`.
#[tokio::test]
async fn the_route_explainer_names_bindings_hops_alternates_and_dead_letter_routes() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let x = |name: &str, kind: &str, args: Value| {
            let path = format!("/api/exchanges/%2F/{}", segment(name));
            let broker = &broker;
            let body = json!({"type": kind, "arguments": args});
            async move { assert_eq!(broker.admin("PUT", &path, Some(body)).await.0, 201) }
        };
        let (orders, audit, lost) = (unique("orders"), unique("audit"), unique("lost"));
        x(&lost, "fanout", json!({})).await;
        x(&orders, "topic", json!({"alternate-exchange": lost})).await;
        x(&audit, "fanout", json!({})).await;
        let q = |name: &str, args: Value| {
            let path = format!("/api/queues/%2F/{}", segment(name));
            let broker = &broker;
            async move {
                assert_eq!(
                    broker
                        .admin("PUT", &path, Some(json!({"arguments": args})))
                        .await
                        .0,
                    201
                )
            }
        };
        let (eu, log, unrouted, dead) = (unique("eu"), unique("log"), unique("unrouted"), unique("dead"));
        q(&dead, json!({})).await;
        q(
            &eu,
            json!({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}),
        )
        .await;
        q(&log, json!({})).await;
        q(&unrouted, json!({})).await;
        let bind = |source: &str, kind: &str, to: &str, key: &str| {
            let path = format!("/api/bindings/%2F/e/{}/{kind}/{}", segment(source), segment(to));
            let broker = &broker;
            let body = json!({"routing_key": key});
            async move { assert_eq!(broker.admin("POST", &path, Some(body)).await.0, 201) }
        };
        bind(&orders, "q", &eu, "orders.eu.*").await;
        bind(&orders, "e", &audit, "orders.#").await;
        bind(&audit, "q", &log, "").await;
        bind(&lost, "q", &unrouted, "").await;

        let explain = |key: &str| {
            let path = format!("/api/explain/%2F/{}", segment(&orders));
            let broker = &broker;
            let body = json!({"routing_key": key});
            async move { broker.admin("POST", &path, Some(body)).await }
        };
        let (status, explained) = explain("orders.eu.new").await;
        assert_eq!(status, 200, "{explained}");
        let queues: Vec<(&str, &str)> = explained["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| (q["queue"].as_str().unwrap(), q["exchange"].as_str().unwrap()))
            .collect();
        assert_eq!(
            queues,
            [(eu.as_str(), orders.as_str()), (log.as_str(), audit.as_str())]
        );
        assert_eq!(explained["queues"][0]["dead_letter_exchange"], "");
        assert_eq!(explained["queues"][0]["dead_letter_routing_key"], dead.as_str());
        assert_eq!(
            explained["hops"][1]["reached"],
            json!({"how": "binding", "from": orders, "routing_key": "orders.#"})
        );
        // What the explainer says is what a publish does.
        publish(&ch, &orders, "orders.eu.new", b"m").await;
        assert_eq!(message_count(&ch, &eu).await, 1);
        assert_eq!(message_count(&ch, &log).await, 1);

        let (_, missed) = explain("invoices").await;
        assert_eq!(missed["hops"][0]["missed"], 2);
        assert_eq!(
            missed["hops"][1]["reached"],
            json!({"how": "alternate-exchange", "from": orders})
        );
        assert_eq!(missed["queues"][0]["queue"], unrouted.as_str());
        // The default exchange reaches only a queue that exists.
        let (_, direct) = broker
            .admin(
                "POST",
                "/api/explain/%2F/amq.default",
                Some(json!({"routing_key": "no-such-queue"})),
            )
            .await;
        assert_eq!(direct["routed"], false);
        assert_eq!(
            broker
                .admin("POST", "/api/explain/%2F/nope", Some(json!({})))
                .await
                .0,
            404
        );

        let printed = ctl_ok(&broker, &["explain_route", &orders, "orders.eu.new"]).await;
        assert!(
            printed.contains(&format!("matched 'orders.eu.*' -> queue {eu}")),
            "{printed}"
        );
        assert!(
            printed.contains(&format!(
                "exchange {audit} (fanout): bound from {orders} with key 'orders.#'"
            )),
            "{printed}"
        );
        assert!(
            printed.contains(&format!(
                "queue {eu} (via {orders}); dead-letters to (default exchange)"
            )),
            "{printed}"
        );
        let printed = ctl_ok(&broker, &["explain_route", &orders, "invoices"]).await;
        assert!(
            printed.contains(&format!("alternate exchange of {orders}")),
            "{printed}"
        );
    })
    .await;
}
