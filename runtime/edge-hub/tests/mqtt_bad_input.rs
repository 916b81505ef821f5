//! Bad input: each gets a clear refusal (a closed connection, a SUBACK
//! failure), nothing stored is lost, and the hub keeps serving a good client
//! afterwards.

mod mqtt_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use edge_hub::message::HubMessage;
use edge_hub::properties;
use edge_hub::topic::{PublishTopic, TopicOwner};
use mqtt_common::*;
use proptest::prelude::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};

const JSON: &str = "%24.on=out&%24.ct=application%2Fjson&%24.ce=utf-8";

fn queued(hub: &TestHub) -> u64 {
    hub.hub.stats().modules["filter"]
        .queues
        .get("filter/in1")
        .map_or(0, |queue| queue.depth)
}

/// A sensor message reaches the filter: the hub still works.
async fn still_serves(hub: &TestHub) {
    let mut filter = hub.client("filter", true).await;
    filter.subscribe(&[&inputs_filter("filter")]).await;
    // Earlier tests' messages may be queued; they come first.
    while queued(hub) > 0 {
        let delivery = filter.next_publish().await;
        filter.ack(&delivery).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut sensor = hub.client("sensor", true).await;
    sensor
        .publish(
            &telemetry_topic("sensor", JSON),
            br#"{"temperature":99,"check":true}"#,
        )
        .await;
    loop {
        let delivery = filter.next_publish().await;
        filter.ack(&delivery).await;
        if delivery.payload.ends_with(br#""check":true}"#) {
            break;
        }
    }
}

/// A connected sensor client sends `bytes` and is disconnected, without a
/// PUBACK for anything in them.
async fn refused_after_connect(hub: &TestHub, bytes: &[u8]) {
    let mut sensor = hub.client("sensor", true).await;
    sensor.send_raw(bytes).await;
    loop {
        match tokio::time::timeout(PATIENCE, sensor.receive()).await {
            Ok(None) => break,
            Ok(Some(Packet::PubAck(ack))) => panic!("a refused publish was acknowledged: {ack:?}"),
            Ok(Some(_)) => {}
            Err(_) => panic!("the hub did not close the connection"),
        }
    }
}

fn encoded(packet: Packet) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    packet.write(&mut bytes, usize::MAX).expect("encode");
    bytes.to_vec()
}

fn publish(topic: &str, payload: Vec<u8>, qos: QoS) -> Vec<u8> {
    let mut publish = Publish::new(topic, qos, payload);
    if qos != QoS::AtMostOnce {
        publish.pkid = 7;
    }
    encoded(Packet::Publish(publish))
}

#[tokio::test]
async fn malformed_packets_close_the_connection() {
    let hub = TestHub::start().await;
    // Before CONNECT: garbage, and a packet that is not CONNECT.
    for bytes in [
        vec![0xff; 64],
        vec![0x00, 0x00],
        vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        encoded(Packet::PingReq),
    ] {
        let mut client = hub.open().await;
        client.send_raw(&bytes).await;
        client.expect_closed().await;
    }
    // After CONNECT.
    for bytes in [
        // A PUBLISH whose topic length runs past the packet.
        vec![0x32, 0x04, 0x00, 0x40, b'a', b'b'],
        // Reserved packet type 15.
        vec![0xf0, 0x00],
        // A second CONNECT.
        encoded(Packet::Connect(hub.connect_packet("sensor", true))),
        // A SUBSCRIBE without filters.
        vec![0x82, 0x02, 0x00, 0x01],
        // QoS 2.
        publish(
            &telemetry_topic("sensor", JSON),
            br#"{"temperature":50}"#.to_vec(),
            QoS::ExactlyOnce,
        ),
        // A PUBLISH with packet id 0 at QoS 1.
        vec![0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00],
        // A publish with QoS bits 3.
        vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
    ] {
        refused_after_connect(&hub, &bytes).await;
    }
    // Random bytes after CONNECT, on connections with a short keep-alive so
    // that bytes that only look like the start of a long packet end too.
    // One after the other: they share a client id, and a new connection
    // would replace the previous one.
    for seed in 0u64..16 {
        let mut connect = hub.connect_packet("sink", true);
        connect.keep_alive = 1;
        let mut client = hub.open().await;
        let connack = client.connect(connect).await;
        assert_eq!(
            connack.code,
            rumqttc::mqttbytes::v4::ConnectReturnCode::Success
        );
        let mut state = seed;
        let bytes: Vec<u8> = (0..512)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        client.send_raw(&bytes).await;
        client.expect_closed().await;
    }
    assert_eq!(queued(&hub), 0);
    still_serves(&hub).await;
}

#[tokio::test]
async fn oversized_packets_and_messages_are_refused() {
    let hub = TestHub::start().await;
    // Over the packet limit: closed as soon as the header is read.
    refused_after_connect(
        &hub,
        &publish(
            &telemetry_topic("sensor", JSON),
            vec![b'x'; 300 * 1024],
            QoS::AtLeastOnce,
        ),
    )
    .await;
    // Within the packet limit but over the 256 KiB message limit.
    let mut body = br#"{"temperature":50,"pad":""#.to_vec();
    body.resize(256 * 1024 + 10, b'x');
    body.extend_from_slice(br#""}"#);
    refused_after_connect(
        &hub,
        &publish(&telemetry_topic("sensor", JSON), body, QoS::AtLeastOnce),
    )
    .await;
    assert_eq!(queued(&hub), 0);
    still_serves(&hub).await;
}

#[tokio::test]
async fn bad_topics_and_property_bags_are_refused() {
    let hub = TestHub::start().await;
    // A topic that is not UTF-8.
    let mut packet = vec![0x32, 0x00, 0x00, 0x04, b'a', 0xff, 0xfe, b'b', 0x00, 0x01];
    packet.extend_from_slice(b"{}");
    packet[1] = u8::try_from(packet.len() - 2).expect("short");
    refused_after_connect(&hub, &packet).await;
    for bag in [
        format!("{JSON}&a=%zz"),
        format!("{JSON}&a=%ff"),
        format!("{JSON}&a=1&a=2"),
        format!("{JSON}&=1"),
        format!("{JSON}&x=a+b"),
        format!("{JSON}&x=#"),
    ] {
        refused_after_connect(
            &hub,
            &publish(
                &telemetry_topic("sensor", &bag),
                br#"{"temperature":50}"#.to_vec(),
                QoS::AtLeastOnce,
            ),
        )
        .await;
    }
    for topic in [
        "$iothub/twin/GET/?$rid=",
        "$iothub/methods/res/abc/?$rid=1",
        "devices/device1/modules/sensor/inputs/in1/",
        "$iothub/unknown",
    ] {
        refused_after_connect(&hub, &publish(topic, b"{}".to_vec(), QoS::AtLeastOnce)).await;
    }
    assert_eq!(queued(&hub), 0);
    still_serves(&hub).await;
}

#[tokio::test]
async fn a_flooding_client_is_throttled_and_others_are_served() {
    let hub = TestHub::start().await;
    // A big twin makes every GET's answer large, so a client that never
    // reads fills the hub's writer quickly.
    let mut deployment = deployment();
    let padding = "x".repeat(3000);
    let desired: serde_json::Map<String, serde_json::Value> = (0..8)
        .map(|index| {
            (
                format!("p{index}"),
                serde_json::Value::from(padding.clone()),
            )
        })
        .collect();
    deployment
        .desired
        .insert("sink".to_owned(), serde_json::Value::Object(desired));
    hub.hub.deploy(deployment).await.expect("deploy");

    let mut flood = hub.client("sink", true).await;
    flood.subscribe(&["$iothub/twin/res/#"]).await;
    let written = Arc::new(AtomicUsize::new(0));
    let flooding = {
        let written = written.clone();
        let request = publish("$iothub/twin/GET/?$rid=1", b" ".to_vec(), QoS::AtMostOnce);
        let batch: Vec<u8> = request.repeat(256);
        tokio::spawn(async move {
            // Never reads: every answer stays in the hub's way.
            for _ in 0..100_000 {
                flood.send_raw(&batch).await;
                written.fetch_add(batch.len(), Ordering::Relaxed);
            }
            flood
        })
    };
    // The flooder's writes stall: the hub stopped reading from it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flooding client is never throttled ({now} bytes written)"
        );
        last = now;
    }
    assert!(!flooding.is_finished());
    // Meanwhile others are served.
    still_serves(&hub).await;
    flooding.abort();
    still_serves(&hub).await;
}

#[tokio::test]
async fn a_thousand_connections_are_served_while_another_client_works() {
    let hub = TestHub::start().await;
    let mut deployment = deployment();
    let idle: Vec<String> = (0..1000).map(|index| format!("idle{index}")).collect();
    deployment.modules.extend(idle.iter().cloned());
    hub.hub.deploy(deployment).await.expect("deploy");
    let mut clients = Vec::with_capacity(idle.len());
    for module in &idle {
        clients.push(hub.client(module, true).await);
    }
    still_serves(&hub).await;
    let stats = hub.hub.stats();
    assert!(idle.iter().all(|module| stats.modules[module].connected));
    // Each still answers.
    for client in clients.iter_mut().step_by(97) {
        client.ping().await;
    }
}

/// What the connection does with bytes from a client, short of the hub:
/// decode packets with the hub's limit, then parse publish topics and
/// property bags.
fn decode_path(bytes: &[u8]) {
    let mut buffer = BytesMut::from(bytes);
    loop {
        match Packet::read(&mut buffer, 264 * 1024) {
            Ok(Packet::Publish(publish)) => {
                if let Ok(PublishTopic::Telemetry { properties: bag }) = PublishTopic::parse(
                    &publish.topic,
                    TopicOwner::Module {
                        device: DEVICE,
                        module: "sensor",
                    },
                ) {
                    let _ = properties::decode_into(bag, &mut HubMessage::default());
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_path(&bytes);
    }

    #[test]
    fn decoding_mutated_publishes_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = publish(
            &telemetry_topic("sensor", "%24.on=out&a=1&b=%C3%A9"),
            b"{\"temperature\":1}".to_vec(),
            QoS::AtLeastOnce,
        );
        for (index, byte) in flips {
            let index = index.index(bytes.len());
            bytes[index] = byte;
        }
        let end = cut.index(bytes.len() + 1);
        decode_path(&bytes[..end]);
    }
}
