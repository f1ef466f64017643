//! Transactions: tx.select, tx.commit, tx.rollback.

use lapin::options::*;
use lapin::types::FieldTable;
use warren_tests::*;

#[tokio::test]
async fn publishes_wait_for_commit_and_rollback_discards_them() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "tx").await;
        ch.tx_select().await.unwrap();
        publish(&ch, "", &q, b"one").await;
        publish(&ch, "", &q, b"two").await;
        // Not in the queue before commit.
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        assert_eq!(
            ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap()
                .message_count(),
            0
        );
        ch.tx_commit().await.unwrap();
        assert_eq!(
            ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap()
                .message_count(),
            2
        );
        publish(&ch, "", &q, b"three").await;
        ch.tx_rollback().await.unwrap();
        assert_eq!(
            ch.queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap()
                .message_count(),
            2
        );
    })
    .await;
}

#[tokio::test]
async fn acks_wait_for_commit_and_rollback_keeps_messages_unacked() {
    within(async {
        let broker = start_broker().await;
        let (conn, ch) = broker.channel().await;
        let q = exclusive_queue(&ch, "txack").await;
        publish(&ch, "", &q, b"a").await;
        publish(&ch, "", &q, b"b").await;
        let txch = conn.create_channel().await.unwrap();
        txch.tx_select().await.unwrap();
        let a = get(&txch, &q).await.unwrap();
        let b = get(&txch, &q).await.unwrap();
        a.delivery.ack(BasicAckOptions::default()).await.unwrap();
        txch.tx_rollback().await.unwrap();
        b.delivery.ack(BasicAckOptions::default()).await.unwrap();
        txch.tx_commit().await.unwrap();
        // b is gone; a was never acked and returns when the channel closes.
        txch.close(200, "bye".into()).await.unwrap();
        let left = drain(&ch, &q).await;
        assert_eq!(left, ["a"]);
    })
    .await;
}

#[tokio::test]
async fn mixing_tx_and_confirms_is_406_and_commit_needs_select() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        assert_eq!(reply_code(&ch.tx_select().await.unwrap_err()), 406);
        let ch = conn.create_channel().await.unwrap();
        ch.tx_select().await.unwrap();
        let err = ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 406);
        let ch = conn.create_channel().await.unwrap();
        assert_eq!(reply_code(&ch.tx_commit().await.unwrap_err()), 406);
        let ch = conn.create_channel().await.unwrap();
        assert_eq!(reply_code(&ch.tx_rollback().await.unwrap_err()), 406);
    })
    .await;
}

#[tokio::test]
async fn a_publish_to_a_missing_exchange_fails_before_commit() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        ch.tx_select().await.unwrap();
        let nox = unique("nox");
        let publish = ch.basic_publish(
            nox.as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            lapin::BasicProperties::default(),
        );
        assert_eq!(closed_code(&ch, publish).await, 404);
    })
    .await;
}
