use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_tests::*;

#[tokio::test]
async fn publish_and_consume() {
    within(async {
        let broker = start_broker().await;
        let (_conn, ch) = broker.channel().await;
        let q = unique("smoke");
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"hi",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let mut consumer = ch
            .basic_consume(
                q.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let d = consumer.next().await.unwrap().unwrap();
        assert_eq!(d.data, b"hi");
        d.ack(BasicAckOptions::default()).await.unwrap();
    })
    .await;
}
