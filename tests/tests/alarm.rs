//! Memory and disk alarms block publishing connections, as RabbitMQ's do
//! (Warren-only: the tests change the in-process broker's limits, as
//! `rabbitmqctl set_vm_memory_high_watermark` does on RabbitMQ). The same
//! sequence run with pika against RabbitMQ 3.10.8 gave: `connection.blocked`
//! ("low on memory") to the publisher only, at its first publish after the
//! alarm; that publish held until `connection.unblocked`; basic.get served
//! throughout; nothing sent to a consuming or an idle connection.

use futures::{FutureExt, StreamExt};
use lapin::options::*;
use lapin::{BasicProperties, Event};
use warren_server::alarm::{Alarm, Watermark};
use warren_tests::*;

/// The next blocked or unblocked event (lapin also reports others).
async fn next_flow_event(events: &mut (impl futures::Stream<Item = Event> + Unpin)) -> Event {
    loop {
        match events.next().await.expect("the connection's events") {
            e @ (Event::ConnectionBlocked(_) | Event::ConnectionUnblocked) => return e,
            _ => continue,
        }
    }
}

/// Publishes, and gives back the confirm to wait for.
async fn send(ch: &lapin::Channel, queue: &str, body: &[u8]) -> lapin::PublisherConfirm {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
}

fn body(m: Option<lapin::message::BasicGetMessage>) -> Option<String> {
    m.map(|m| String::from_utf8(m.delivery.data).unwrap())
}

#[tokio::test]
async fn an_alarm_holds_a_publisher_and_serves_consumers_until_it_clears() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let warren = broker.warren.clone().expect("in process");
        let publisher = broker.connect().await;
        let mut events = publisher.events_listener();
        let pch = publisher.create_channel().await.unwrap();
        pch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let (_consumer, cch) = broker.channel().await;
        let idle = broker.connect().await;
        let mut idle_events = idle.events_listener();
        let q = shared_queue(&cch, "alarm").await;
        assert!(send(&pch, &q, b"before").await.await.unwrap().is_ack());

        let mut state = warren.alarms.watch();
        warren.alarms.set_memory_high_watermark(Watermark::Absolute(1));
        state.wait_for(|s| *s == Some(Alarm::Memory)).await.unwrap();
        assert!(warren.status().memory_alarm);
        let held = send(&pch, &q, b"during").await;
        match next_flow_event(&mut events).await {
            Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on memory"),
            other => panic!("expected connection.blocked, got {other:?}"),
        }
        // Consumers are served; the held publish is not in the queue.
        assert_eq!(body(get(&cch, &q).await).as_deref(), Some("before"));
        assert_eq!(body(get(&cch, &q).await), None);

        warren.alarms.set_memory_high_watermark(Watermark::Relative(0.4));
        assert!(matches!(
            next_flow_event(&mut events).await,
            Event::ConnectionUnblocked
        ));
        assert!(held.await.unwrap().is_ack());
        assert_eq!(body(get(&cch, &q).await).as_deref(), Some("during"));

        // A connection that never published was never told anything: a
        // round trip on it first, so that anything sent to it has arrived.
        idle.create_channel().await.unwrap();
        while let Some(Some(event)) = idle_events.next().now_or_never() {
            assert!(
                !matches!(event, Event::ConnectionBlocked(_) | Event::ConnectionUnblocked),
                "an idle connection got {event:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_disk_alarm_blocks_with_its_own_reason() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let warren = broker.warren.clone().expect("in process");
        let publisher = broker.connect().await;
        let mut events = publisher.events_listener();
        let (_consumer, cch) = broker.channel().await;
        let pch = publisher.create_channel().await.unwrap();
        let q = shared_queue(&cch, "disk-alarm").await;
        let mut state = warren.alarms.watch();
        warren.alarms.set_disk_free_limit(u64::MAX);
        state.wait_for(|s| *s == Some(Alarm::Disk)).await.unwrap();
        publish(&pch, "", &q, b"held").await;
        match next_flow_event(&mut events).await {
            Event::ConnectionBlocked(reason) => assert_eq!(reason, "low on disk space"),
            other => panic!("expected connection.blocked, got {other:?}"),
        }
        warren.alarms.set_disk_free_limit(0);
        assert!(matches!(
            next_flow_event(&mut events).await,
            Event::ConnectionUnblocked
        ));
        // The held message arrives; a declare's count is a round trip that
        // sees it once it is in.
        let mut count = 0;
        while count == 0 {
            count = cch
                .queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .unwrap()
                .message_count();
        }
        assert_eq!(drain(&cch, &q).await, ["held"]);
    })
    .await;
}
