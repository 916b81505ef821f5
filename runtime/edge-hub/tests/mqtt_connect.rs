//! CONNECT: who is let in, with which CONNACK, and what happens to those
//! who are not.

mod mqtt_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mqtt_common::*;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

async fn refused_with(hub: &TestHub, connect: Connect) -> ConnectReturnCode {
    let mut client = hub.open().await;
    let connack = client.connect(connect).await;
    assert!(!connack.session_present);
    client.expect_closed().await;
    connack.code
}

#[tokio::test]
async fn a_module_with_a_valid_token_connects() {
    let hub = TestHub::start().await;
    let mut client = hub.client("sensor", true).await;
    client.ping().await;
    assert!(hub.hub.stats().modules["sensor"].connected);
}

#[tokio::test]
async fn bad_credentials_are_refused_with_the_right_connack() {
    let hub = TestHub::start().await;

    let mut wrong_password = hub.connect_packet("sensor", true);
    wrong_password.set_login(TestHub::user_name("sensor"), hub.token("filter"));
    assert_eq!(
        refused_with(&hub, wrong_password).await,
        ConnectReturnCode::NotAuthorized
    );

    let mut forged = hub.connect_packet("sensor", true);
    let token = hub.token("sensor");
    let (head, expiry) = token.rsplit_once("se=").expect("se");
    let later: u64 = expiry.parse::<u64>().expect("expiry") + 1000;
    forged.set_login(TestHub::user_name("sensor"), format!("{head}se={later}"));
    assert_eq!(
        refused_with(&hub, forged).await,
        ConnectReturnCode::NotAuthorized
    );

    let mut expired = hub.connect_packet("sensor", true);
    expired.set_login(
        TestHub::user_name("sensor"),
        sas_token(hub.keys.as_ref(), "sensor", now() - 10),
    );
    assert_eq!(
        refused_with(&hub, expired).await,
        ConnectReturnCode::NotAuthorized
    );

    // A token signed by the module's own key for another module's
    // resource: the key is right, the resource is not.
    let mut wrong_resource = hub.connect_packet("sensor", true);
    let token = hub.token("sensor").replace("sensor", "filter");
    wrong_resource.set_login(TestHub::user_name("sensor"), token);
    assert_eq!(
        refused_with(&hub, wrong_resource).await,
        ConnectReturnCode::NotAuthorized
    );

    let mut unknown = hub.connect_packet("sensor", true);
    unknown.client_id = format!("{DEVICE}/intruder");
    unknown.set_login(TestHub::user_name("intruder"), hub.token("sensor"));
    assert_eq!(
        refused_with(&hub, unknown).await,
        ConnectReturnCode::NotAuthorized
    );

    let mut other_device = hub.connect_packet("sensor", true);
    other_device.client_id = "device2/sensor".to_owned();
    assert_eq!(
        refused_with(&hub, other_device).await,
        ConnectReturnCode::NotAuthorized
    );

    for client_id in ["", "/sensor", "device1/", "device1/sensor/x"] {
        let mut bad_client_id = hub.connect_packet("sensor", true);
        bad_client_id.client_id = client_id.to_owned();
        assert_eq!(
            refused_with(&hub, bad_client_id).await,
            ConnectReturnCode::BadClientId,
            "{client_id:?}"
        );
    }

    // A client id without a slash is a leaf device's, and no leaf device
    // is configured.
    let mut unknown_leaf = hub.connect_packet("sensor", true);
    unknown_leaf.client_id = "sensor".to_owned();
    assert_eq!(
        refused_with(&hub, unknown_leaf).await,
        ConnectReturnCode::NotAuthorized
    );

    for user_name in [
        format!("{IOTHUB}/{DEVICE}/sensor/"),
        format!("{IOTHUB}/{DEVICE}/filter/?api-version=2019-10-01"),
        format!("other.example/{DEVICE}/sensor/?api-version=2019-10-01"),
        "garbage".to_owned(),
    ] {
        let mut bad_user = hub.connect_packet("sensor", true);
        bad_user.set_login(user_name.clone(), hub.token("sensor"));
        assert_eq!(
            refused_with(&hub, bad_user).await,
            ConnectReturnCode::NotAuthorized,
            "{user_name}"
        );
    }

    let mut no_login = hub.connect_packet("sensor", true);
    no_login.login = None;
    assert_eq!(
        refused_with(&hub, no_login).await,
        ConnectReturnCode::NotAuthorized
    );

    assert!(!hub.hub.stats().modules["sensor"].connected);
    // The hub still serves a good client.
    hub.client("sensor", true).await.ping().await;
}

#[tokio::test]
async fn mqtt_3_1_is_refused_with_connack_1() {
    let hub = TestHub::start().await;
    // CONNECT with protocol name MQIsdp, level 3 (MQTT 3.1).
    let mut client = hub.open().await;
    let mut packet = vec![0x10, 0];
    packet.extend_from_slice(&[0, 6]);
    packet.extend_from_slice(b"MQIsdp");
    packet.extend_from_slice(&[3, 0x02, 0, 60, 0, 1, b'x']);
    packet[1] = u8::try_from(packet.len() - 2).expect("short");
    client.send_raw(&packet).await;
    match client.receive().await {
        Some(rumqttc::mqttbytes::v4::Packet::ConnAck(connack)) => {
            assert_eq!(connack.code, ConnectReturnCode::RefusedProtocolVersion);
        }
        other => panic!("expected CONNACK 1, got {other:?}"),
    }
    client.expect_closed().await;

    // "MQTT" at level 3 is refused the same way.
    let mut client = hub.open().await;
    let mut bytes = bytes::BytesMut::new();
    rumqttc::mqttbytes::v4::Packet::Connect(hub.connect_packet("sensor", true))
        .write(&mut bytes, usize::MAX)
        .expect("encode");
    // Protocol level: after the fixed header (1 + remaining-length bytes)
    // and the protocol name (2 + 4).
    let level = 1 + (1 + usize::from(bytes[1] & 0x80 != 0)) + 6;
    assert_eq!(bytes[level], 4);
    bytes[level] = 3;
    client.send_raw(&bytes).await;
    match client.receive().await {
        Some(rumqttc::mqttbytes::v4::Packet::ConnAck(connack)) => {
            assert_eq!(connack.code, ConnectReturnCode::RefusedProtocolVersion);
        }
        other => panic!("expected CONNACK 1, got {other:?}"),
    }
    client.expect_closed().await;
    hub.client("sensor", true).await.ping().await;
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    let hub = TestHub::start().await;
    let mut first = hub.client("sensor", false).await;
    let mut second = hub.client("sensor", false).await;
    first.expect_closed().await;
    second.ping().await;
    assert!(hub.hub.stats().modules["sensor"].connected);
    drop(second);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.hub.stats().modules["sensor"].connected {
        assert!(tokio::time::Instant::now() < deadline, "disconnect is seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_connection_closes_when_its_token_expires() {
    let hub = TestHub::start().await;
    let mut connect = hub.connect_packet("sensor", true);
    connect.set_login(
        TestHub::user_name("sensor"),
        sas_token(hub.keys.as_ref(), "sensor", now() + 2),
    );
    let mut client = hub.open().await;
    assert_eq!(
        client.connect(connect).await.code,
        ConnectReturnCode::Success
    );
    client.expect_closed().await;
}

#[tokio::test]
async fn a_token_valid_forever_is_accepted() {
    let hub = TestHub::start().await;
    let mut connect = hub.connect_packet("sensor", true);
    connect.set_login(
        TestHub::user_name("sensor"),
        sas_token(hub.keys.as_ref(), "sensor", u64::MAX),
    );
    let mut client = hub.open().await;
    assert_eq!(
        client.connect(connect).await.code,
        ConnectReturnCode::Success
    );
    client.ping().await;
}

#[tokio::test]
async fn keep_alive_is_enforced() {
    let hub = TestHub::start().await;
    let mut connect = hub.connect_packet("sensor", true);
    connect.keep_alive = 1;
    let mut client = hub.open().await;
    assert_eq!(
        client.connect(connect).await.code,
        ConnectReturnCode::Success
    );
    let started = tokio::time::Instant::now();
    client.expect_closed().await;
    // Closed after 1.5 s of silence, not at once.
    assert!(started.elapsed() >= Duration::from_millis(1400));
}

#[tokio::test]
async fn a_silent_connection_is_closed_before_connect() {
    let hub = TestHub::start().await;
    let mut client = hub.open().await;
    let started = tokio::time::Instant::now();
    client.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_secs(9));
    hub.client("sensor", true).await.ping().await;
}

#[tokio::test]
async fn connections_past_the_limit_are_closed() {
    let hub = TestHub::start_with(|dir| {
        let mut config = config(dir);
        config.max_connections = 2;
        config
    })
    .await;
    let mut sensor = hub.client("sensor", true).await;
    let mut filter = hub.client("filter", true).await;
    let refused = async {
        let tcp = tokio::net::TcpStream::connect(hub.address)
            .await
            .expect("TCP connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = hub.certificates.connector().connect(name, tcp).await?;
        // Should the handshake have completed, nothing more comes.
        let mut byte = [0u8; 1];
        tokio::io::AsyncReadExt::read(&mut tls, &mut byte).await
    };
    match tokio::time::timeout(PATIENCE, refused).await {
        Ok(Ok(0) | Err(_)) => {}
        other => panic!("a third connection was served: {other:?}"),
    }
    sensor.ping().await;
    filter.ping().await;
    // A freed place is taken by the next connection.
    drop(sensor);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.hub.stats().modules["sensor"].connected {
        assert!(tokio::time::Instant::now() < deadline, "disconnect is seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    hub.client("sink", true).await.ping().await;
}
