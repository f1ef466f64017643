//! AMQP over TLS (Warren-only: the reference RabbitMQ runs without a TLS
//! listener), with certificates made at test time: a non-default user on a
//! non-default vhost over amqps, client certificates verified, EXTERNAL
//! logins as the certificate's common name.

use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::json;
use warren_management::client::segment;
use warren_tests::tls::TestCerts;
use warren_tests::*;

async fn connect_tls(
    broker: &TestBroker,
    certs: &TestCerts,
    userinfo: &str,
    vhost: &str,
    query: &str,
    client: Option<(String, String)>,
) -> lapin::Result<lapin::Connection> {
    let port = broker.tls.unwrap().port();
    let url = format!("amqps://{userinfo}localhost:{port}/{}{query}", segment(vhost));
    lapin::ConnectionBuilder::new()
        .unwrap()
        .with_uri_str(url)
        .with_tls_config(certs.lapin_config(client))
        .connect()
        .await
}

/// A user of their own in a vhost of their own, with every permission.
async fn tenant(broker: &TestBroker) -> (String, String) {
    let (user, vhost) = (unique("tls-user"), unique("tls-vhost"));
    assert_eq!(
        broker
            .admin("PUT", &format!("/api/vhosts/{}", segment(&vhost)), None)
            .await
            .0,
        201
    );
    let body = json!({"password": "s3cret", "tags": ""});
    assert_eq!(
        broker
            .admin("PUT", &format!("/api/users/{}", segment(&user)), Some(body))
            .await
            .0,
        201
    );
    let path = format!("/api/permissions/{}/{}", segment(&vhost), segment(&user));
    let everything = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(broker.admin("PUT", &path, Some(everything)).await.0, 201);
    (user, vhost)
}

#[tokio::test]
async fn a_user_of_a_vhost_of_their_own_works_over_amqps_beside_plain_amqp() {
    if !is_warren() {
        return;
    }
    within(async {
        let certs = TestCerts::generate();
        let broker = start_warren_with_tls(certs.files(false, false), |_| {}).await;
        let (user, vhost) = tenant(&broker).await;
        let conn = connect_tls(&broker, &certs, &format!("{user}:s3cret@"), &vhost, "", None)
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = exclusive_queue(&ch, "tls").await;
        let body = vec![7u8; 200_000];
        publish(&ch, "", &q, &body).await;
        let got = get(&ch, &q).await.expect("the message came back");
        assert_eq!(got.delivery.data, body);
        // The plain listener serves as before.
        let (_plain, ch) = broker.channel().await;
        exclusive_queue(&ch, "plain").await;
        // A wrong password is refused over TLS as over TCP.
        let err = connect_tls(&broker, &certs, &format!("{user}:wrong@"), &vhost, "", None)
            .await
            .unwrap_err();
        assert_eq!(reply_code(&err), 403);
    })
    .await;
}

#[tokio::test]
async fn external_logs_in_as_the_verified_certificates_common_name() {
    if !is_warren() {
        return;
    }
    within(async {
        let certs = TestCerts::generate();
        let broker = start_warren_with_tls(certs.files(true, false), |config| {
            config.auth_mechanisms.push("EXTERNAL".to_owned())
        })
        .await;
        let (user, vhost) = tenant(&broker).await;
        let conn = connect_tls(
            &broker,
            &certs,
            "",
            &vhost,
            "?auth_mechanism=external",
            Some(certs.client(&user)),
        )
        .await
        .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "by-certificate".into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let (status, connections) = broker.admin("GET", "/api/connections", None).await;
        assert_eq!(status, 200);
        assert!(connections
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["user"] == user.as_str()));
        // A certificate for a user that does not exist logs nobody in.
        let err = connect_tls(
            &broker,
            &certs,
            "",
            &vhost,
            "?auth_mechanism=external",
            Some(certs.client("nobody-here")),
        )
        .await
        .unwrap_err();
        assert_eq!(reply_code(&err), 403);
        // Without a certificate, EXTERNAL is not offered; a password still works.
        connect_tls(&broker, &certs, &format!("{user}:s3cret@"), &vhost, "", None)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn fail_if_no_peer_cert_refuses_clients_without_one() {
    if !is_warren() {
        return;
    }
    within(async {
        let certs = TestCerts::generate();
        let broker = start_warren_with_tls(certs.files(true, true), |_| {}).await;
        let refused = connect_tls(&broker, &certs, "guest:guest@", "/", "", None).await;
        assert!(refused.is_err(), "no certificate, no connection");
        // A certificate from another CA is refused too.
        let stranger = TestCerts::generate().client("guest");
        let refused = connect_tls(&broker, &certs, "guest:guest@", "/", "", Some(stranger)).await;
        assert!(refused.is_err(), "an unknown CA's certificate is refused");
        let conn = connect_tls(
            &broker,
            &certs,
            "guest:guest@",
            "/",
            "",
            Some(certs.client("guest")),
        )
        .await
        .unwrap();
        conn.create_channel().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn external_is_offered_only_when_configured() {
    if !is_warren() {
        return;
    }
    within(async {
        let certs = TestCerts::generate();
        // A CA to verify clients with, but EXTERNAL not in auth_mechanisms.
        let broker = start_warren_with_tls(certs.files(true, false), |_| {}).await;
        let refused = connect_tls(
            &broker,
            &certs,
            "",
            "/",
            "?auth_mechanism=external",
            Some(certs.client("guest")),
        )
        .await;
        assert!(refused.is_err(), "a certificate alone does not log in");
    })
    .await;
}
