//! Users, virtual hosts and permissions, set up through the management API
//! (RabbitMQ's paths, the same calls on both brokers) and checked over AMQP
//! where RabbitMQ checks them: each refusal's code and text are RabbitMQ's.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::json;
use warren_management::client::segment;
use warren_tests::*;

/// A user of their own in a vhost of their own, with `permissions`
/// (configure, write, read), deleted when dropped.
struct Tenant {
    user: String,
    vhost: String,
    password: String,
}

async fn tenant(broker: &TestBroker, [configure, write, read]: [&str; 3]) -> Tenant {
    let t = Tenant {
        user: unique("user"),
        vhost: unique("vhost"),
        password: "s3cret".to_owned(),
    };
    let (status, _) = broker
        .admin("PUT", &format!("/api/vhosts/{}", segment(&t.vhost)), None)
        .await;
    assert_eq!(status, 201);
    let user = json!({"password": t.password, "tags": ""});
    let (status, _) = broker
        .admin("PUT", &format!("/api/users/{}", segment(&t.user)), Some(user))
        .await;
    assert_eq!(status, 201);
    set_permissions(broker, &t, [configure, write, read]).await;
    t
}

async fn set_permissions(broker: &TestBroker, t: &Tenant, [configure, write, read]: [&str; 3]) {
    let path = format!("/api/permissions/{}/{}", segment(&t.vhost), segment(&t.user));
    let body = json!({"configure": configure, "write": write, "read": read});
    let (status, answer) = broker.admin("PUT", &path, Some(body)).await;
    assert!(matches!(status, 201 | 204), "{status} {answer}");
}

async fn remove(broker: &TestBroker, t: Tenant) {
    broker
        .admin("DELETE", &format!("/api/vhosts/{}", segment(&t.vhost)), None)
        .await;
    broker
        .admin("DELETE", &format!("/api/users/{}", segment(&t.user)), None)
        .await;
}

async fn channel_of(broker: &TestBroker, t: &Tenant) -> (lapin::Connection, lapin::Channel) {
    let conn = broker.connect_as(&t.user, &t.password, &t.vhost).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

fn refused(kind: &str, name: &str, t: &Tenant) -> String {
    format!(
        "ACCESS_REFUSED - access to {kind} '{name}' in vhost '{}' refused for user '{}'",
        t.vhost, t.user
    )
}

#[tokio::test]
async fn a_vhost_without_permissions_or_a_missing_one_refuses_the_connection() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, [".*", ".*", ".*"]).await;
        let path = format!("/api/permissions/{}/{}", segment(&t.vhost), segment(&t.user));
        assert_eq!(broker.admin("DELETE", &path, None).await.0, 204);
        let err = broker
            .connect_as(&t.user, &t.password, &t.vhost)
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 530);
        assert_eq!(
            reply_text(&err),
            format!(
                "NOT_ALLOWED - access to vhost '{}' refused for user '{}'",
                t.vhost, t.user
            )
        );
        // The default vhost: the new user has no permissions there either.
        let err = broker.connect_as(&t.user, &t.password, "/").await.unwrap_err();
        assert_eq!(reply_code(&err), 530);
        let err = broker
            .connect_as(&t.user, &t.password, "no-such-vhost")
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 530);
        // A wrong password is refused at login.
        let err = broker.connect_as(&t.user, "wrong", &t.vhost).await.unwrap_err();
        assert_eq!(reply_code(&err), 403);
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn configure_is_checked_on_declare_and_delete_under_the_name_a_queue_gets() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, ["^(mine|probe)", ".*", ".*"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        ch.queue_declare(
            "mine-q".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.exchange_declare(
            "mine-x".into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let err = ch
            .queue_declare(
                "theirs".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("queue", "theirs", &t)));

        // A server-named queue is checked under the name it would get.
        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .queue_declare("".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        assert!(
            reply_text(&err).starts_with("ACCESS_REFUSED - access to queue 'amq.gen-"),
            "{}",
            reply_text(&err)
        );

        // A passive declare needs no permission.
        let (_conn, ch) = channel_of(&broker, &t).await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = ch
            .queue_declare("theirs".into(), passive, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404, "not found, not refused");

        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .exchange_declare(
                "theirs-x".into(),
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("exchange", "theirs-x", &t)));

        // Deleting needs configure too: the owner narrows their own rights.
        set_permissions(&broker, &t, ["^probe", ".*", ".*"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .queue_delete("mine-q".into(), QueueDeleteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("queue", "mine-q", &t)));
        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .exchange_delete("mine-x".into(), ExchangeDeleteOptions::default())
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("exchange", "mine-x", &t)));
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn write_is_checked_on_publish_and_the_default_exchange_is_amq_default() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, [".*", "^amq\\.fanout$", ".*"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        let q = exclusive_queue(&ch, "probe").await;
        ch.queue_bind(
            q.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
        // Binding a queue needs write on the queue: refused above. With it:
        set_permissions(&broker, &t, [".*", "^(amq\\.fanout|probe)", ".*"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        let q = exclusive_queue(&ch, "probe").await;
        ch.queue_bind(
            q.as_str().into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.fanout", "", b"allowed").await;
        assert_eq!(drain(&ch, &q).await, ["allowed"]);
        let publish_default = ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"refused",
            BasicProperties::default(),
        );
        let (code, text) = closed_reply(&ch, publish_default).await;
        assert_eq!((code, text), (403, refused("exchange", "amq.default", &t)));
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn read_is_checked_on_consume_get_purge_and_the_source_of_a_binding() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, [".*", ".*", "^probe"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        ch.queue_declare(
            "unread".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let err = ch
            .basic_get("unread".into(), BasicGetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("queue", "unread", &t)));
        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .basic_consume(
                "unread".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .queue_purge("unread".into(), QueuePurgeOptions::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        // Binding from amq.direct needs read on it.
        let (_conn, ch) = channel_of(&broker, &t).await;
        let err = ch
            .queue_bind(
                "unread".into(),
                "amq.direct".into(),
                "k".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("exchange", "amq.direct", &t)));
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn topic_permissions_check_routing_keys_with_the_users_name_put_in() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, [".*", ".*", ".*"]).await;
        let path = format!("/api/topic-permissions/{}/{}", segment(&t.vhost), segment(&t.user));
        let body = json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": "^public\\."});
        let (status, answer) = broker.admin("PUT", &path, Some(body)).await;
        assert_eq!(status, 201, "{answer}");
        let (_conn, ch) = channel_of(&broker, &t).await;
        let q = exclusive_queue(&ch, "probe").await;
        ch.queue_bind(
            q.as_str().into(),
            "amq.topic".into(),
            "public.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        publish(&ch, "amq.topic", &format!("{}.news", t.user), b"mine").await;
        // Other exchanges are not restricted by amq.topic's permissions.
        publish(&ch, "amq.direct", "anything", b"elsewhere").await;
        let bind_private = ch.queue_bind(
            q.as_str().into(),
            "amq.topic".into(),
            "private.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        let err = bind_private.await.unwrap_err();
        assert_eq!(reply_code(&err), 403);
        assert_eq!(
            reply_text(&err),
            format!(
                "ACCESS_REFUSED - access to topic 'private.#' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
                t.vhost, t.user
            )
        );
        let (_conn, ch) = channel_of(&broker, &t).await;
        let publish_other = ch.basic_publish(
            "amq.topic".into(),
            "someone.news".into(),
            BasicPublishOptions::default(),
            b"not mine",
            BasicProperties::default(),
        );
        let (code, text) = closed_reply(&ch, publish_other).await;
        assert_eq!(code, 403);
        assert_eq!(
            text,
            format!(
                "ACCESS_REFUSED - access to topic 'someone.news' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
                t.vhost, t.user
            )
        );
        // The management API's publish makes the same checks, and answers
        // a refusal with 400 and the AMQP error, as RabbitMQ's does.
        let user = json!({"password": t.password, "tags": "management"});
        let (status, _) = broker
            .admin("PUT", &format!("/api/users/{}", segment(&t.user)), Some(user))
            .await;
        assert_eq!(status, 204);
        let api_publish = |key: &str, properties: serde_json::Value| {
            let path = format!("/api/exchanges/{}/amq.topic/publish", segment(&t.vhost));
            let body = json!({"routing_key": key, "payload": "x", "payload_encoding": "string", "properties": properties});
            let (broker, t) = (&broker, &t);
            async move { broker.admin_as(&t.user, &t.password, "POST", &path, Some(body)).await }
        };
        let (status, answer) = api_publish("someone.news", json!({})).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer["reason"],
            format!(
                "403 ACCESS_REFUSED - access to topic 'someone.news' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
                t.vhost, t.user
            )
        );
        let (status, answer) = api_publish(&format!("{}.news", t.user), json!({"user_id": "admin"})).await;
        assert_eq!(status, 400);
        assert_eq!(
            answer["reason"],
            format!(
                "406 PRECONDITION_FAILED - user_id property set to 'admin' but authenticated user was '{}'",
                t.user
            )
        );
        let (status, _) = api_publish(&format!("{}.news", t.user), json!({})).await;
        assert_eq!(status, 200);
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn a_dead_letter_exchange_needs_write_on_it_and_read_on_the_queue() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, [".*", "^probe", ".*"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        let args = table(&[("x-dead-letter-exchange", long_string("dlx"))]);
        let err = ch
            .queue_declare("with-dlx".into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap_err();
        assert_eq!(exception(&err), (403, refused("exchange", "dlx", &t)));
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn a_user_id_other_than_the_users_own_is_refused() {
    within(async {
        let broker = start_broker().await;
        let t = tenant(&broker, [".*", ".*", ".*"]).await;
        let (_conn, ch) = channel_of(&broker, &t).await;
        let q = exclusive_queue(&ch, "probe").await;
        let own = BasicProperties::default().with_user_id(t.user.as_str().into());
        ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), b"own", own)
            .await
            .unwrap();
        assert_eq!(drain(&ch, &q).await, ["own"]);
        let other = BasicProperties::default().with_user_id("someone-else".into());
        let publish_other = ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"forged",
            other,
        );
        let (code, text) = closed_reply(&ch, publish_other).await;
        assert_eq!(code, 406);
        assert_eq!(
            text,
            format!(
                "PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was '{}'",
                t.user
            )
        );
        remove(&broker, t).await;
    })
    .await;
}

#[tokio::test]
async fn the_management_api_refuses_bad_credentials_and_unknown_targets() {
    within(async {
        let broker = start_broker().await;
        let (status, _) = broker
            .admin_as("guest", "wrong", "GET", "/api/vhosts", None)
            .await;
        assert_eq!(status, 401);
        // A user without the administrator tag may not manage.
        let t = tenant(&broker, [".*", ".*", ".*"]).await;
        let (status, _) = broker
            .admin_as(&t.user, &t.password, "PUT", "/api/vhosts/nope", None)
            .await;
        assert_eq!(status, 401);
        let path = format!(
            "/api/permissions/{}/{}",
            segment("no-such-vhost"),
            segment(&t.user)
        );
        let body = json!({"configure": ".*", "write": ".*", "read": ".*"});
        let (status, _) = broker.admin("PUT", &path, Some(body)).await;
        assert!(matches!(status, 400 | 404), "{status}");
        let (status, _) = broker.admin("GET", "/api/queues/%2F/no-such-queue", None).await;
        assert_eq!(status, 404);
        let (status, vhosts) = broker.admin("GET", "/api/vhosts", None).await;
        assert_eq!(status, 200);
        assert!(vhosts.as_array().unwrap().iter().any(|v| v["name"] == t.vhost));
        remove(&broker, t).await;
        let (status, vhosts) = broker.admin("GET", "/api/vhosts", None).await;
        assert_eq!(status, 200);
        assert!(vhosts.as_array().unwrap().iter().all(|v| v["name"] != "nope"));
    })
    .await;
}

/// Sends one raw HTTP request to the management API: its status code.
async fn raw_http(broker: &TestBroker, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = broker.management.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(authority).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the API closed without answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&answer);
    status_line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_management_api_gives_each_tag_what_rabbitmq_gives_it() {
    within(async {
        let broker = start_broker().await;
        let user = unique("monitor");
        let body = json!({"password": "m0n", "tags": "monitoring"});
        let (status, _) = broker
            .admin("PUT", &format!("/api/users/{}", segment(&user)), Some(body))
            .await;
        assert_eq!(status, 201);
        for (path, expected) in [
            ("/api/overview", 200),
            ("/api/whoami", 200),
            ("/api/queues", 200),
            ("/api/vhosts", 200),
            ("/api/connections", 200),
            // Password hashes and permissions are for administrators.
            ("/api/users", 401),
            ("/api/permissions", 401),
            ("/api/definitions", 401),
        ] {
            let (status, _) = broker.admin_as(&user, "m0n", "GET", path, None).await;
            assert_eq!(status, expected, "{path}");
        }
        let (status, _) = broker
            .admin_as(&user, "m0n", "PUT", "/api/vhosts/nope", None)
            .await;
        assert_eq!(status, 401);
        // A body that is not JSON (a form a web page could post) is refused.
        let credentials = "Z3Vlc3Q6Z3Vlc3Q="; // guest:guest
        let form = format!(
            "POST /api/definitions HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
             Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        assert_eq!(raw_http(&broker, &form).await, 415);
        // An empty form too (Warren-only: RabbitMQ takes a change with an
        // empty body whatever its type, so a form another site's page posts
        // with remembered credentials could, say, bind a queue).
        if is_warren() {
            let empty_form = format!(
                "PUT /api/vhosts/form-made HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(raw_http(&broker, &empty_form).await, 415);
            // And a bodiless POST with no type, which a page can send too.
            let untyped = format!(
                "POST /api/bindings/%2F/e/amq.direct/q/nowhere HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Basic {credentials}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(raw_http(&broker, &untyped).await, 415);
        }
        // A PUT with no body at all is fine (RabbitMQ's documented `curl -X PUT`).
        let vhost = unique("bare");
        let bare = format!(
            "PUT /api/vhosts/{vhost} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_http(&broker, &bare).await, 201);
        broker
            .admin("DELETE", &format!("/api/vhosts/{vhost}"), None)
            .await;
        broker
            .admin("DELETE", &format!("/api/users/{}", segment(&user)), None)
            .await;
    })
    .await;
}

#[tokio::test]
async fn listing_queues_does_not_keep_an_expiring_queue_alive() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = unique("expiring");
        let args = table(&[("x-expires", lapin::types::AMQPValue::LongInt(1000))]);
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .unwrap();
        conn.close(200, "bye".into()).await.unwrap();
        // Looked at every 100 ms, the unused queue still expires.
        let path = format!("/api/queues/%2F/{}", segment(&q));
        loop {
            let (status, _) = broker.admin("GET", &path, None).await;
            if status == 404 {
                break;
            }
            assert_eq!(status, 200);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_missing_exchange_is_reported_before_a_forged_user_id() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let forged = BasicProperties::default().with_user_id("someone-else".into());
        let publish = ch.basic_publish(
            unique("no-such-exchange").as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            forged,
        );
        assert_eq!(closed_code(&ch, publish).await, 404);
    })
    .await;
}

#[tokio::test]
async fn management_and_monitoring_users_see_the_vhosts_they_may_use() {
    within(async {
        let broker = start_broker().await;
        let (vhost, manager, monitor) = (unique("seen"), unique("manager"), unique("monitor"));
        let v = segment(&vhost);
        assert_eq!(
            broker.admin("PUT", &format!("/api/vhosts/{v}"), None).await.0,
            201
        );
        for (user, tags) in [(&manager, "management"), (&monitor, "monitoring")] {
            let body = json!({"password": "pw", "tags": tags});
            let (status, _) = broker
                .admin("PUT", &format!("/api/users/{}", segment(user)), Some(body))
                .await;
            assert_eq!(status, 201);
        }
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        let (status, _) = broker
            .admin(
                "PUT",
                &format!("/api/permissions/{v}/{}", segment(&manager)),
                Some(all),
            )
            .await;
        assert_eq!(status, 201);
        assert_eq!(
            broker
                .admin("PUT", &format!("/api/queues/{v}/in-seen"), Some(json!({})))
                .await
                .0,
            201
        );
        let (_conn, ch) = broker.channel().await;
        let elsewhere = shared_queue(&ch, "not-seen").await;

        let as_user = |user: &str, method: &'static str, path: String| {
            let user = user.to_owned();
            let broker = &broker;
            let body = (method == "PUT").then(|| json!({}));
            async move { broker.admin_as(&user, "pw", method, &path, body).await }
        };
        // The manager: their vhost's objects only, and may act there.
        let (status, queues) = as_user(&manager, "GET", "/api/queues".into()).await;
        assert_eq!(status, 200);
        let queues = queues.as_array().unwrap();
        assert!(queues.iter().all(|q| q["vhost"] == vhost.as_str()), "{queues:?}");
        assert!(queues.iter().any(|q| q["name"] == "in-seen"), "{queues:?}");
        let (_, vhosts) = as_user(&manager, "GET", "/api/vhosts".into()).await;
        assert_eq!(vhosts.as_array().unwrap().len(), 1, "{vhosts}");
        assert_eq!(vhosts[0]["name"], vhost.as_str());
        let (_, exchanges) = as_user(&manager, "GET", "/api/exchanges".into()).await;
        assert!(exchanges
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["vhost"] == vhost.as_str()));
        for (method, path, expected) in [
            ("GET", format!("/api/queues/{v}"), 200),
            ("GET", format!("/api/queues/%2F/{}", segment(&elsewhere)), 401),
            ("GET", "/api/queues/%2F".to_owned(), 401),
            ("GET", "/api/exchanges/%2F".to_owned(), 401),
            ("GET", format!("/api/vhosts/{v}"), 401),
            ("GET", "/api/nodes".to_owned(), 401),
            ("GET", "/api/users".to_owned(), 401),
            ("PUT", format!("/api/queues/{v}/made-by-manager"), 201),
            ("DELETE", format!("/api/queues/{v}/made-by-manager"), 204),
            ("PUT", "/api/queues/%2F/made-by-manager".to_owned(), 401),
        ] {
            let (status, _) = as_user(&manager, method, path.clone()).await;
            assert_eq!(status, expected, "{method} {path}");
        }
        // Connections: their own only. The test's own is guest's.
        let (_, connections) = as_user(&manager, "GET", "/api/connections".into()).await;
        assert!(connections
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["user"] == manager.as_str()));

        // The monitor: every vhost and connection, but no vhost's objects
        // without permissions there.
        let (_, vhosts) = as_user(&monitor, "GET", "/api/vhosts".into()).await;
        let names: Vec<&str> = vhosts
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|x| x["name"].as_str())
            .collect();
        assert!(
            names.contains(&"/") && names.contains(&vhost.as_str()),
            "{names:?}"
        );
        let (_, queues) = as_user(&monitor, "GET", "/api/queues".into()).await;
        assert!(
            queues
                .as_array()
                .unwrap()
                .iter()
                .all(|q| q["vhost"] != "/" && q["vhost"] != vhost.as_str()),
            "{queues}"
        );
        assert_eq!(as_user(&monitor, "GET", format!("/api/queues/{v}")).await.0, 401);
        assert_eq!(as_user(&monitor, "GET", "/api/nodes".into()).await.0, 200);
        // Every connection, guest's included (RabbitMQ lists a connection
        // once its first statistics are in).
        loop {
            let (_, connections) = as_user(&monitor, "GET", "/api/connections".into()).await;
            if connections
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["user"] == "guest")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }

        ch.queue_delete(elsewhere.as_str().into(), Default::default())
            .await
            .unwrap();
        broker.admin("DELETE", &format!("/api/vhosts/{v}"), None).await;
        for user in [&manager, &monitor] {
            broker
                .admin("DELETE", &format!("/api/users/{}", segment(user)), None)
                .await;
        }
    })
    .await;
}
