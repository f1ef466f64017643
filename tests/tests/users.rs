//! Users: the default user of a first start, kept in the store (Warren-only:
//! the reference's users are set up by its own configuration). The password
//! hashes are RabbitMQ's; a unit test in `crates/server/src/users.rs` checks
//! hashes exported from RabbitMQ 3.10.8.

use lapin::{Connection, ConnectionProperties};
use warren_tests::*;

async fn login(broker: &TestBroker, user: &str, pass: &str) -> Result<Connection, u16> {
    let url = format!("amqp://{user}:{pass}@{}/%2f", broker.addr);
    Connection::connect(&url, ConnectionProperties::default())
        .await
        .map_err(|e| reply_code(&e))
}

#[tokio::test]
async fn the_default_user_is_made_on_the_first_start_and_kept() {
    if !is_warren() {
        return;
    }
    within(async {
        let broker = start_warren_with(|c| {
            c.default_user = "alice".into();
            c.default_pass = "s3cret".into();
        })
        .await;
        assert!(login(&broker, "alice", "s3cret").await.is_ok());
        assert_eq!(login(&broker, "alice", "guess").await.err(), Some(403));
        // No guest when another default user was asked for, as RabbitMQ.
        assert_eq!(login(&broker, "guest", "guest").await.err(), Some(403));
        // A restart (with the default settings) keeps alice and makes no
        // default user: there are users already.
        let broker = broker.restart().await;
        assert!(login(&broker, "alice", "s3cret").await.is_ok());
        assert_eq!(login(&broker, "guest", "guest").await.err(), Some(403));
    })
    .await;
}
