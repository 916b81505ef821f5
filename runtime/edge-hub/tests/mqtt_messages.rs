//! Telemetry through the routes to module inputs, the topic ACL, and
//! persistent sessions across reconnects and hub restarts.

mod mqtt_common;

use std::time::Duration;

use mqtt_common::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::SubscribeReasonCode;

/// An output message with a JSON body, as the route conditions need.
const JSON: &str = "%24.on=out&%24.ct=application%2Fjson&%24.ce=utf-8";

fn hot(index: usize) -> Vec<u8> {
    format!(r#"{{"temperature":{},"index":{index}}}"#, 30 + index).into_bytes()
}

fn index_of(body: &[u8]) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
    value["index"].as_u64().expect("index")
}

#[tokio::test]
async fn telemetry_is_routed_to_another_modules_input_with_its_properties() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", true).await;
    assert_eq!(
        filter.subscribe(&[&inputs_filter("filter")]).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut sensor = hub.client("sensor", true).await;
    // The route takes only hot readings; the client's own $.cmid is not
    // believed.
    sensor
        .publish(
            &telemetry_topic("sensor", &format!("{JSON}&%24.cmid=forged")),
            br#"{"temperature":10}"#,
        )
        .await;
    sensor
        .publish(
            &telemetry_topic(
                "sensor",
                &format!("%24.mid=m-1&{JSON}&alert=hi%20there&plus=1%2B1&slash=a%2Fb"),
            ),
            br#"{"temperature":25}"#,
        )
        .await;
    let delivery = filter.next_publish().await;
    assert_eq!(delivery.qos, QoS::AtLeastOnce);
    assert!(!delivery.dup);
    assert_eq!(&delivery.payload[..], br#"{"temperature":25}"#);
    let (input, properties) = delivered_properties(&delivery.topic);
    assert_eq!(input, "in1");
    let get = |key: &str| {
        properties
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(get("alert"), Some("hi there"));
    assert_eq!(get("plus"), Some("1+1"));
    assert_eq!(get("slash"), Some("a/b"));
    assert_eq!(get("$.mid"), Some("m-1"));
    assert_eq!(get("$.ct"), Some("application/json"));
    assert_eq!(get("$.on"), Some("out"));
    assert_eq!(get("$.cdid"), Some(DEVICE));
    assert_eq!(get("$.cmid"), Some("sensor"));
    filter.ack(&delivery).await;
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn a_module_cannot_use_another_modules_topics() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", true).await;
    assert_eq!(
        filter
            .subscribe(&[
                &inputs_filter("sink"),
                "devices/device1/modules/+/inputs/#",
                "#",
                &inputs_filter("filter"),
            ])
            .await,
        vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    // Publishing as another module closes the connection, unacknowledged.
    let mut sensor = hub.client("sensor", true).await;
    let packet_id = sensor
        .publish_no_wait(&telemetry_topic("filter", JSON), &hot(0))
        .await;
    sensor.expect_closed().await;
    let _ = packet_id;
    let mut sensor = hub.client("sensor", true).await;
    sensor
        .publish_no_wait("devices/device1/messages/events/", &hot(0))
        .await;
    sensor.expect_closed().await;
    let queued = hub.hub.stats().modules["filter"]
        .queues
        .get("filter/in1")
        .map_or(0, |queue| queue.depth);
    assert_eq!(queued, 0);
    // The hub keeps serving.
    let mut sensor = hub.client("sensor", true).await;
    sensor
        .publish(&telemetry_topic("sensor", JSON), &hot(1))
        .await;
    let delivery = filter.next_publish().await;
    assert_eq!(index_of(&delivery.payload), 1);
}

#[tokio::test]
async fn a_persistent_session_survives_a_reconnect_and_a_restart() {
    let mut hub = TestHub::start().await;
    {
        let mut filter = hub.client("filter", false).await;
        filter.subscribe(&[&inputs_filter("filter")]).await;
    }
    let mut sensor = hub.client("sensor", true).await;
    for index in 0..3 {
        sensor
            .publish(&telemetry_topic("sensor", JSON), &hot(index))
            .await;
    }
    drop(sensor);

    // Reconnect: the subscription is back without a SUBSCRIBE, and the
    // queued messages come in order.
    let mut filter = hub.open().await;
    let connack = filter.connect(hub.connect_packet("filter", false)).await;
    assert!(connack.session_present);
    let first = filter.next_publish().await;
    assert_eq!(index_of(&first.payload), 0);
    filter.ack(&first).await;
    let second = filter.next_publish().await;
    assert_eq!(index_of(&second.payload), 1);
    // Not acknowledged: it and the third come again after the restart.
    let third = filter.next_publish().await;
    assert_eq!(index_of(&third.payload), 2);
    filter.ack(&third).await;
    filter.ping().await;
    drop(filter);

    hub = hub.restart().await;
    let mut filter = hub.open().await;
    let connack = filter.connect(hub.connect_packet("filter", false)).await;
    assert!(connack.session_present, "the session is in the store");
    let again = filter.next_publish().await;
    assert_eq!(index_of(&again.payload), 1);
    filter.ack(&again).await;
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);

    // A clean session forgets the subscription: nothing arrives until the
    // module subscribes again, and then the queue is delivered.
    drop(filter);
    let mut sensor = hub.client("sensor", true).await;
    sensor
        .publish(&telemetry_topic("sensor", JSON), &hot(3))
        .await;
    let mut filter = hub.open().await;
    let connack = filter.connect(hub.connect_packet("filter", true)).await;
    assert!(!connack.session_present);
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
    filter.subscribe(&[&inputs_filter("filter")]).await;
    let delivery = filter.next_publish().await;
    assert_eq!(index_of(&delivery.payload), 3);
    drop(filter);
    assert!(hub.hub.load_session(&format!("{DEVICE}/filter")).is_none());
}

#[tokio::test]
async fn unacknowledged_deliveries_are_resent_with_dup_and_their_packet_id() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", false).await;
    filter.subscribe(&[&inputs_filter("filter")]).await;
    let mut sensor = hub.client("sensor", true).await;
    sensor
        .publish(&telemetry_topic("sensor", JSON), &hot(0))
        .await;
    sensor
        .publish(&telemetry_topic("sensor", JSON), &hot(1))
        .await;
    let first = filter.next_publish().await;
    let second = filter.next_publish().await;
    assert!(!first.dup && !second.dup);
    filter.ack(&first).await;
    filter.ping().await;
    drop(filter);

    let mut filter = hub.client("filter", false).await;
    let resent = filter.next_publish().await;
    assert_eq!(index_of(&resent.payload), 1);
    assert!(resent.dup, "a redelivery carries DUP");
    assert_eq!(resent.pkid, second.pkid, "with its original packet id");
    assert_eq!(resent.topic, second.topic);
    filter.ack(&resent).await;
    // A new message after that is not a duplicate.
    sensor
        .publish(&telemetry_topic("sensor", JSON), &hot(2))
        .await;
    let fresh = filter.next_publish().await;
    assert_eq!(index_of(&fresh.payload), 2);
    assert!(!fresh.dup);
    assert_ne!(fresh.pkid, resent.pkid);
}

#[tokio::test]
async fn qos_0_subscriptions_get_qos_0_deliveries() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", true).await;
    let mut subscribe =
        rumqttc::mqttbytes::v4::Subscribe::new(inputs_filter("filter"), QoS::AtMostOnce);
    subscribe.pkid = 9;
    filter
        .send(rumqttc::mqttbytes::v4::Packet::Subscribe(subscribe))
        .await;
    let mut sensor = hub.client("sensor", true).await;
    // A QoS 0 publish is routed too.
    let publish = rumqttc::mqttbytes::v4::Publish::new(
        telemetry_topic("sensor", JSON),
        QoS::AtMostOnce,
        hot(5),
    );
    sensor
        .send(rumqttc::mqttbytes::v4::Packet::Publish(publish))
        .await;
    let delivery = filter.next_publish().await;
    assert_eq!(delivery.qos, QoS::AtMostOnce);
    assert_eq!(index_of(&delivery.payload), 5);
}

#[tokio::test]
async fn publishes_are_pipelined_and_acknowledged_in_order() {
    let hub = TestHub::start().await;
    let mut sensor = hub.client("sensor", true).await;
    // More than the 64 the hub has in flight at once, all sent before any
    // acknowledgement is read.
    let mut sent = Vec::new();
    for index in 0..300 {
        sent.push(
            sensor
                .publish_no_wait(&telemetry_topic("sensor", JSON), &hot(index))
                .await,
        );
    }
    let mut acknowledged = Vec::new();
    while acknowledged.len() < sent.len() {
        match sensor.receive().await {
            Some(rumqttc::mqttbytes::v4::Packet::PubAck(ack)) => acknowledged.push(ack.pkid),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(acknowledged, sent);
    // And stored in the order sent.
    let mut filter = hub.client("filter", true).await;
    filter.subscribe(&[&inputs_filter("filter")]).await;
    for index in 0..300 {
        let delivery = filter.next_publish().await;
        assert_eq!(index_of(&delivery.payload), index);
        filter.ack(&delivery).await;
    }
}

#[tokio::test]
async fn a_full_store_closes_the_publisher_without_puback_and_keeps_what_it_acknowledged() {
    let hub = TestHub::start_with(|dir| {
        let mut config = config(dir);
        config.store_limit_bytes = 200 * 1024;
        config.when_full = edge_hub::WhenFull::RefuseNew;
        config
    })
    .await;
    let mut sensor = hub.client("sensor", true).await;
    let padding = "x".repeat(10 * 1024);
    let mut acknowledged = 0u64;
    loop {
        let body = format!(r#"{{"temperature":50,"index":{acknowledged},"pad":"{padding}"}}"#);
        let packet_id = sensor
            .publish_no_wait(&telemetry_topic("sensor", JSON), body.as_bytes())
            .await;
        match sensor.receive().await {
            Some(rumqttc::mqttbytes::v4::Packet::PubAck(ack)) => {
                assert_eq!(ack.pkid, packet_id);
                acknowledged += 1;
                assert!(acknowledged < 100, "the store never fills");
            }
            None => break,
            other => panic!("expected PUBACK or a close, got {other:?}"),
        }
    }
    assert!(acknowledged > 0);
    assert_eq!(hub.hub.stats().modules["sensor"].refused_store_full, 1);
    // Everything acknowledged is delivered, and the space it frees lets the
    // sensor publish again.
    let mut filter = hub.client("filter", true).await;
    filter.subscribe(&[&inputs_filter("filter")]).await;
    for index in 0..acknowledged {
        let delivery = filter.next_publish().await;
        assert_eq!(index_of(&delivery.payload), index);
        filter.ack(&delivery).await;
    }
    let mut sensor = hub.client("sensor", true).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let packet_id = sensor
            .publish_no_wait(&telemetry_topic("sensor", JSON), &hot(1000))
            .await;
        match sensor.receive().await {
            Some(rumqttc::mqttbytes::v4::Packet::PubAck(ack)) if ack.pkid == packet_id => break,
            // Acknowledged deliveries are removed in batches; until then the
            // store may still be full.
            None if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                sensor = hub.client("sensor", true).await;
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(index_of(&filter.next_publish().await.payload), 1000);
}

#[tokio::test]
async fn an_unsubscribed_module_gets_no_inputs_and_its_session_remembers() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", false).await;
    filter.subscribe(&[&inputs_filter("filter")]).await;
    let mut unsubscribe = rumqttc::mqttbytes::v4::Unsubscribe::new(inputs_filter("filter"));
    unsubscribe.pkid = 77;
    filter
        .send(rumqttc::mqttbytes::v4::Packet::Unsubscribe(unsubscribe))
        .await;
    filter
        .expect(|packet| match packet {
            rumqttc::mqttbytes::v4::Packet::UnsubAck(ack) if ack.pkid == 77 => Some(()),
            _ => None,
        })
        .await;
    let mut sensor = hub.client("sensor", true).await;
    sensor
        .publish(&telemetry_topic("sensor", JSON), &hot(0))
        .await;
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
    drop(filter);
    // The stored session has no subscription left: a reconnect delivers
    // nothing until the module subscribes again.
    let mut filter = hub.open().await;
    let connack = filter.connect(hub.connect_packet("filter", false)).await;
    assert!(connack.session_present);
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
    filter.subscribe(&[&inputs_filter("filter")]).await;
    assert_eq!(index_of(&filter.next_publish().await.payload), 0);
}
