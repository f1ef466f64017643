//! Queue arguments: bad values are refused with RabbitMQ's 406 and its
//! text (each case below was declared against RabbitMQ 3.10.8 and its
//! answer copied; the test passes against it too), and arguments Warren does
//! not honour yet are refused rather than ignored (Warren-only).

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use warren_tests::*;

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn i(v: i32) -> AMQPValue {
    AMQPValue::LongInt(v)
}

/// Declares a queue with `args` on a fresh channel; the 406 text, if refused.
async fn declare(conn: &lapin::Connection, name: &str, args: &[(&str, AMQPValue)]) -> Option<String> {
    let ch = conn.create_channel().await.unwrap();
    let mut table = FieldTable::default();
    for (key, value) in args {
        table.insert((*key).into(), value.clone());
    }
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    match ch.queue_declare(name.into(), options, table).await {
        Ok(_) => None,
        Err(e) => {
            assert_eq!(reply_code(&e), 406, "{e}");
            Some(reply_text(&e))
        }
    }
}

#[tokio::test]
async fn invalid_queue_arguments_are_refused_as_rabbitmq_does() {
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        let q = unique("args");
        let arg = |key: &str, why: &str| {
            format!("PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {why}")
        };
        let cases: Vec<(Vec<(&str, AMQPValue)>, String)> = vec![
            (vec![("x-message-ttl", i(-1))], arg("x-message-ttl", "{value_negative,-1}")),
            (vec![("x-message-ttl", s("abc"))], arg("x-message-ttl", "\"expected integer, got longstr\"")),
            (vec![("x-message-ttl", AMQPValue::Boolean(true))], arg("x-message-ttl", "\"expected integer, got bool\"")),
            (vec![("x-expires", i(0))], arg("x-expires", "{value_zero,0}")),
            (vec![("x-expires", i(-5))], arg("x-expires", "{value_negative,-5}")),
            // Ten years at most, as rabbit_misc:check_expiry.
            (
                vec![("x-message-ttl", AMQPValue::LongLongInt(315_360_000_001))],
                arg("x-message-ttl", "{value_too_large,315360000001}"),
            ),
            (
                vec![("x-expires", AMQPValue::LongLongInt(i64::MAX))],
                arg("x-expires", "{value_too_large,9223372036854775807}"),
            ),
            (vec![("x-max-length", i(-1))], arg("x-max-length", "{value_negative,-1}")),
            (vec![("x-max-length-bytes", s("abc"))], arg("x-max-length-bytes", "\"expected integer, got longstr\"")),
            (vec![("x-max-priority", i(256))], arg("x-max-priority", "{max_value_exceeded,256}")),
            (vec![("x-max-priority", i(-1))], arg("x-max-priority", "{value_negative,-1}")),
            (vec![("x-overflow", s("bogus"))], arg("x-overflow", "invalid_overflow")),
            (vec![("x-overflow", i(1))], arg("x-overflow", "{unacceptable_type,signedint}")),
            (vec![("x-dead-letter-routing-key", s("k"))], arg("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")),
            (
                vec![("x-dead-letter-exchange", i(5))],
                format!("PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
            ),
            (vec![("x-queue-mode", s("bogus"))], arg("x-queue-mode", "\"unsupported queue mode 'bogus'\"")),
            (vec![("x-queue-type", s("bogus"))], arg("x-queue-type", "\"unsupported queue type 'bogus'\"")),
            (vec![("x-queue-version", i(5))], arg("x-queue-version", "\"unsupported queue version '5'\"")),
            (vec![("x-single-active-consumer", s("yes"))], arg("x-single-active-consumer", "{unacceptable_type,longstr}")),
            (
                vec![("x-delivery-limit", i(3))],
                format!("PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"),
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(declare(&conn, &q, &args).await.as_deref(), Some(expected.as_str()), "{args:?}");
        }
        // Accepted by both: a TTL, a lazy or default mode, a version, and an
        // argument neither knows.
        for args in [
            vec![("x-message-ttl", i(1000))],
            vec![("x-queue-mode", s("lazy"))],
            vec![("x-queue-version", i(2))],
            vec![("x-unknown-thing", i(1))],
        ] {
            let name = unique("args-ok");
            assert_eq!(declare(&conn, &name, &args).await, None, "{args:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn arguments_warren_does_not_honour_yet_are_refused_not_ignored() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_broker().await;
        let conn = broker.connect().await;
        for (key, value) in [("x-queue-type", s("stream"))] {
            let q = unique("unsupported");
            let text = declare(&conn, &q, &[(key, value)]).await.expect("refused");
            assert!(
                text.contains(key) && text.ends_with("is not supported by Warren"),
                "{text}"
            );
        }
    })
    .await;
}
