//! Virtual hosts: each has its own exchanges, queues and messages, kept
//! apart in the store and across restarts (Warren-only: the vhost is made
//! through the broker's API, as the administration CLI to come will).

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_tests::*;

async fn channel_in(broker: &TestBroker, vhost: &str) -> (Connection, lapin::Channel) {
    let url = format!("amqp://guest:guest@{}/{vhost}", broker.addr);
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

#[tokio::test]
async fn virtual_hosts_keep_their_queues_and_messages_apart_across_a_restart() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        assert!(broker.warren.as_ref().unwrap().add_vhost("orders"));
        assert!(!broker.warren.as_ref().unwrap().add_vhost("orders"), "it exists");
        let everything = warren_store::PermissionDef {
            user: "guest".into(),
            vhost: "orders".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        broker
            .warren
            .as_ref()
            .unwrap()
            .set_permissions(everything)
            .unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (vhost, messages) in [("orders", 2), ("%2f", 1)] {
            let (_conn, ch) = channel_in(&broker, vhost).await;
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            ch.queue_declare("same-name".into(), durable, FieldTable::default())
                .await
                .unwrap();
            for i in 0..messages {
                let body = format!("{vhost} {i}");
                publish_confirmed(
                    &ch,
                    "",
                    "same-name",
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await;
            }
        }
        let broker = broker.restart().await;
        let (_conn, orders) = channel_in(&broker, "orders").await;
        let (_conn, default) = channel_in(&broker, "%2f").await;
        assert_eq!(message_count(&orders, "same-name").await, 2);
        assert_eq!(message_count(&default, "same-name").await, 1);
        assert_eq!(drain(&orders, "same-name").await, ["orders 0", "orders 1"]);
        assert_eq!(drain(&default, "same-name").await, ["%2f 0"]);
        // A name declared in one is not in the other.
        orders
            .queue_declare(
                "orders-only".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let err = default
            .queue_declare("orders-only".into(), passive, FieldTable::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 404);
    })
    .await;
}
