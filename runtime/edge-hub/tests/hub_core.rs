//! The hub core against a real store in a temporary directory: routing,
//! queues, deliveries and acknowledgements, twins, sessions, counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edge_hub::{
    DesiredSeen, FileKeys, Hub, HubConfig, HubDeployment, HubMessage, PublishRefused, Qos,
    StoredSession, SystemProperty,
};
use edge_route::RouteTableEntry;
use serde_json::json;

fn config(dir: &std::path::Path) -> HubConfig {
    HubConfig {
        device_id: "device1".to_owned(),
        iothub_hostname: "hub.example".to_owned(),
        gateway_hostname: "localhost".to_owned(),
        mqtt_listen: "127.0.0.1:0".parse().expect("address"),
        https_listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: None,
        dir: dir.join("hub"),
        store_limit_bytes: 64 * 1024 * 1024,
        when_full: edge_hub::WhenFull::DropOldest,
        default_time_to_live: Duration::from_secs(7200),
        max_connections: 100,
        leaf_devices: Vec::new(),
    }
}

fn open(config: &HubConfig) -> Hub {
    let keys = FileKeys::open(&config.dir.join("keys")).expect("keys");
    Hub::open(config, Arc::new(keys)).expect("hub")
}

fn route(name: &str, text: &str, priority: u8) -> RouteTableEntry {
    RouteTableEntry {
        name: name.to_owned(),
        route: text.to_owned(),
        priority,
        time_to_live_secs: 0,
    }
}

fn deployment(routes: Vec<RouteTableEntry>, modules: &[&str]) -> HubDeployment {
    HubDeployment {
        routes,
        modules: modules.iter().map(|module| (*module).to_owned()).collect(),
        desired: BTreeMap::new(),
        default_time_to_live: None,
    }
}

/// The deployment most tests use: module `s` sends, every message goes to
/// `r`'s input `in`.
async fn deploy_s_to_r(hub: &Hub) {
    hub.deploy(deployment(
        vec![route(
            "r",
            "FROM /messages/* INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
            0,
        )],
        &["s", "r"],
    ))
    .await
    .expect("deploy");
}

fn message(body: &str) -> HubMessage {
    HubMessage {
        body: body.as_bytes().to_vec(),
        ..HubMessage::default()
    }
}

async fn next(stream: &mut edge_hub::InputStream) -> edge_hub::Delivery {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a delivery in time")
        .expect("a delivery")
}

async fn nothing_within(stream: &mut edge_hub::InputStream, wait: Duration) {
    assert!(
        tokio::time::timeout(wait, stream.next()).await.is_err(),
        "a delivery came that should not have"
    );
}

#[tokio::test]
async fn messages_follow_routes_and_conditions_to_inputs() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    hub.deploy(deployment(
        vec![route(
            "hot",
            "FROM /messages/modules/sensor/outputs/out WHERE $body.t > 20 INTO BrokeredEndpoint(\"/modules/filter/inputs/in\")",
            0,
        )],
        &["sensor", "filter"],
    ))
    .await
    .expect("deploy");
    let mut inputs = hub.open_inputs("filter");
    let mut json_message = message(r#"{"t": 25}"#);
    json_message
        .system_properties
        .insert(SystemProperty::ContentType, "application/json".to_owned());
    json_message
        .system_properties
        .insert(SystemProperty::ContentEncoding, "utf-8".to_owned());
    json_message
        .application_properties
        .push(("site".to_owned(), "a".to_owned()));
    let mut cold = json_message.clone();
    cold.body = br#"{"t": 5}"#.to_vec();
    hub.publish("sensor", Some("out"), cold, Qos::AtLeastOnce)
        .await
        .expect("publish");
    hub.publish("sensor", Some("out"), json_message, Qos::AtLeastOnce)
        .await
        .expect("publish");
    let delivery = next(&mut inputs).await;
    assert_eq!(delivery.input, "in");
    assert_eq!(delivery.message.body, br#"{"t": 25}"#);
    assert_eq!(
        delivery.message.system_properties[&SystemProperty::ConnectionModuleId],
        "sensor"
    );
    assert_eq!(
        delivery.message.system_properties[&SystemProperty::ConnectionDeviceId],
        "device1"
    );
    assert_eq!(
        delivery.message.system_properties[&SystemProperty::OutputName],
        "out"
    );
    assert_eq!(
        delivery.message.application_properties,
        vec![("site".to_owned(), "a".to_owned())]
    );
    let stats = hub.stats();
    assert_eq!(stats.modules["sensor"].messages_in, 2);
    assert_eq!(stats.modules["filter"].queues["filter/in"].depth, 1);
    inputs.ack(delivery.id);
    nothing_within(&mut inputs, Duration::from_millis(200)).await;
    let stats = hub.stats();
    assert_eq!(stats.modules["filter"].messages_out, 1);
    assert_eq!(stats.modules["filter"].queues["filter/in"].depth, 0);
    assert_eq!(stats.totals.queued, 0);
}

#[tokio::test]
async fn a_message_for_many_routes_is_stored_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    hub.deploy(deployment(
        vec![
            route(
                "a",
                "FROM /messages/* INTO BrokeredEndpoint(\"/modules/a/inputs/in\")",
                0,
            ),
            route(
                "b",
                "FROM /messages/* INTO BrokeredEndpoint(\"/modules/b/inputs/in\")",
                0,
            ),
            route("up", "FROM /messages/* INTO $upstream", 0),
        ],
        &["sensor", "a", "b"],
    ))
    .await
    .expect("deploy");
    let body = "x".repeat(10_000);
    hub.publish("sensor", None, message(&body), Qos::AtLeastOnce)
        .await
        .expect("publish");
    let stats = hub.stats();
    assert_eq!(stats.upstream.depth, 1);
    assert_eq!(stats.modules["a"].queues["a/in"].depth, 1);
    assert_eq!(stats.modules["b"].queues["b/in"].depth, 1);
    // One copy of the body, not three.
    assert!(stats.store.stored_bytes > 10_000, "{:?}", stats.store);
    assert!(stats.store.stored_bytes < 20_000, "{:?}", stats.store);
    let mut a = hub.open_inputs("a");
    let mut b = hub.open_inputs("b");
    let first = next(&mut a).await;
    a.ack(first.id);
    let second = next(&mut b).await;
    assert_eq!(first.message, second.message);
    b.ack(second.id);
    hub.save_session("flush", &StoredSession::default())
        .await
        .expect("flush");
    let stats = hub.stats();
    // The upstream entry still holds the message.
    assert!(stats.store.stored_bytes > 10_000, "{:?}", stats.store);
    assert_eq!(stats.upstream.depth, 1);
}

#[tokio::test]
async fn priority_zero_comes_first_and_each_queue_is_fifo() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    hub.deploy(deployment(
        vec![
            route(
                "urgent",
                "FROM /messages/modules/s/outputs/alarm INTO BrokeredEndpoint(\"/modules/r/inputs/alarm\")",
                0,
            ),
            route(
                "bulk",
                "FROM /messages/modules/s/outputs/data INTO BrokeredEndpoint(\"/modules/r/inputs/data\")",
                5,
            ),
        ],
        &["s", "r"],
    ))
    .await
    .expect("deploy");
    for index in 0..5 {
        hub.publish(
            "s",
            Some("data"),
            message(&format!("d{index}")),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    }
    for index in 0..3 {
        hub.publish(
            "s",
            Some("alarm"),
            message(&format!("a{index}")),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    }
    let mut inputs = hub.open_inputs("r");
    let mut order = Vec::new();
    for _ in 0..8 {
        let delivery = next(&mut inputs).await;
        order.push(String::from_utf8(delivery.message.body.clone()).expect("text"));
        inputs.ack(delivery.id);
    }
    assert_eq!(order, ["a0", "a1", "a2", "d0", "d1", "d2", "d3", "d4"]);
}

#[tokio::test]
async fn unacknowledged_deliveries_come_again_on_a_new_stream() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    deploy_s_to_r(&hub).await;
    for index in 0..3 {
        hub.publish("s", None, message(&format!("m{index}")), Qos::AtLeastOnce)
            .await
            .expect("publish");
    }
    let mut old = hub.open_inputs("r");
    let first = next(&mut old).await;
    old.ack(first.id);
    let _second = next(&mut old).await;
    let mut new = hub.open_inputs("r");
    assert!(old.next().await.is_none(), "the replaced stream ends");
    // The ack of m0 may still be on its way to the store; m1 is delivered
    // again either way.
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut new).await;
        bodies.push(String::from_utf8(delivery.message.body.clone()).expect("text"));
        new.ack(delivery.id);
    }
    if bodies[0] == "m0" {
        let delivery = next(&mut new).await;
        bodies.push(String::from_utf8(delivery.message.body.clone()).expect("text"));
        bodies.remove(0);
    }
    assert_eq!(bodies, ["m1", "m2"]);
}

#[tokio::test]
async fn at_most_64_deliveries_are_unacknowledged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    deploy_s_to_r(&hub).await;
    for index in 0..100 {
        hub.publish("s", None, message(&format!("m{index}")), Qos::AtMostOnce)
            .await
            .expect("publish");
    }
    let mut inputs = hub.open_inputs("r");
    let mut delivered = Vec::new();
    for _ in 0..64 {
        delivered.push(next(&mut inputs).await);
    }
    nothing_within(&mut inputs, Duration::from_millis(200)).await;
    inputs.ack(delivered[0].id);
    let more = next(&mut inputs).await;
    assert_eq!(more.message.body, b"m64");
}

#[tokio::test]
async fn a_waiting_stream_wakes_when_a_message_arrives() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    deploy_s_to_r(&hub).await;
    let mut inputs = hub.open_inputs("r");
    let waiter = tokio::spawn(async move { next(&mut inputs).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    hub.publish("s", None, message("late"), Qos::AtLeastOnce)
        .await
        .expect("publish");
    let delivery = waiter.await.expect("waiter");
    assert_eq!(delivery.message.body, b"late");
}

#[tokio::test]
async fn concurrent_publishes_share_commits() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    hub.deploy(deployment(
        vec![route("up", "FROM /messages/* INTO $upstream", 0)],
        &["s"],
    ))
    .await
    .expect("deploy");
    let before = hub.stats().store;
    let publishes: Vec<_> = (0..200)
        .map(|index| {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.publish("s", None, message(&format!("m{index}")), Qos::AtLeastOnce)
                    .await
            })
        })
        .collect();
    for publish in publishes {
        publish.await.expect("task").expect("publish");
    }
    let after = hub.stats().store;
    let commits = after.commits - before.commits;
    assert_eq!(hub.stats().upstream.depth, 200);
    eprintln!(
        "200 concurrent publishes: {commits} commits, largest batch {}",
        after.largest_batch
    );
    assert!(
        commits < 200,
        "200 concurrent publishes took {commits} commits"
    );
    assert!(after.largest_batch > 1, "{after:?}");
}

#[tokio::test]
async fn unknown_senders_and_oversized_messages_are_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    hub.deploy(deployment(Vec::new(), &["s"]))
        .await
        .expect("deploy");
    assert!(matches!(
        hub.publish("ghost", None, message("x"), Qos::AtLeastOnce)
            .await,
        Err(PublishRefused::UnknownModule(_))
    ));
    let big = message(&"x".repeat(256 * 1024 + 1));
    assert!(matches!(
        hub.publish("s", None, big, Qos::AtLeastOnce).await,
        Err(PublishRefused::TooLarge { .. })
    ));
    assert!(
        hub.deploy(deployment(vec![route("bad", "FROM nowhere", 0)], &["s"]))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn twins_have_versions_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    let generation;
    {
        let hub = open(&config);
        let mut first = deployment(
            vec![route(
                "twins",
                "FROM /twinChangeNotifications INTO BrokeredEndpoint(\"/modules/watch/inputs/twins\")",
                0,
            )],
            &["m", "watch"],
        );
        first.desired.insert("m".to_owned(), json!({"rate": 1}));
        hub.deploy(first.clone()).await.expect("deploy");
        let twin = hub.twin("m").await.expect("twin");
        assert_eq!(twin.desired, json!({"rate": 1, "$version": 2}));
        assert_eq!(twin.reported, json!({"$version": 1}));
        generation = hub.identity("m").expect("identity").generation_id;
        assert_eq!(generation.len(), 32);

        let mut patches = hub.desired_patches("m");
        hub.deploy(first.clone()).await.expect("same deployment");
        let mut changed = first.clone();
        changed.desired.insert("m".to_owned(), json!({"rate": 2}));
        hub.deploy(changed).await.expect("deploy");
        let patch = patches.recv().await.expect("a desired patch");
        assert_eq!(patch.version, 3);
        assert_eq!(patch.patch, json!({"rate": 2, "$version": 3}));
        assert_eq!(
            hub.identity("m").expect("identity").generation_id,
            generation
        );

        let version = hub
            .patch_reported("m", json!({"state": "ok", "n": {"a": 1}}))
            .await
            .expect("patch");
        assert_eq!(version, 2);
        let version = hub
            .patch_reported("m", json!({"n": null}))
            .await
            .expect("patch");
        assert_eq!(version, 3);
        assert!(matches!(
            hub.patch_reported("m", json!({"bad key": 1})).await,
            Err(edge_hub::TwinError::Invalid(_))
        ));
        let mut watch = hub.open_inputs("watch");
        let notification = next(&mut watch).await;
        assert_eq!(notification.input, "twins");
        let body: serde_json::Value =
            serde_json::from_slice(&notification.message.body).expect("JSON");
        assert_eq!(body, json!({"state": "ok", "n": {"a": 1}, "$version": 2}));
        assert_eq!(
            notification.message.system_properties[&SystemProperty::ConnectionModuleId],
            "m"
        );
    }
    let hub = open(&config);
    assert_eq!(
        hub.identity("m").expect("identity").generation_id,
        generation
    );
    let twin = hub.twin("m").await.expect("twin");
    assert_eq!(twin.reported, json!({"state": "ok", "$version": 3}));
    assert_eq!(twin.desired, json!({"rate": 2, "$version": 3}));
    // Removing the module forgets it; adding it back is a new identity.
    hub.deploy(deployment(Vec::new(), &["watch"]))
        .await
        .expect("deploy");
    assert!(hub.identity("m").is_none());
    assert!(hub.twin("m").await.is_err());
    hub.deploy(deployment(Vec::new(), &["watch", "m"]))
        .await
        .expect("deploy");
    assert_ne!(
        hub.identity("m").expect("identity").generation_id,
        generation
    );
    assert_eq!(
        hub.twin("m").await.expect("twin").reported,
        json!({"$version": 1})
    );
}

#[tokio::test]
async fn sessions_are_kept_until_forgotten() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    let session = StoredSession {
        subscriptions: vec![("devices/device1/modules/m/inputs/#".to_owned(), 1)],
    };
    {
        let hub = open(&config);
        assert!(hub.load_session("device1/m").is_none());
        hub.save_session("device1/m", &session).await.expect("save");
    }
    let hub = open(&config);
    assert_eq!(hub.load_session("device1/m"), Some(session));
    hub.forget_session("device1/m").await.expect("forget");
    assert!(hub.load_session("device1/m").is_none());
}

#[tokio::test]
async fn what_a_module_has_of_its_desired_properties_is_kept_with_its_twin() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    let mut first = deployment(Vec::new(), &["m"]);
    first.desired.insert("m".to_owned(), json!({"rate": 1}));
    {
        let hub = open(&config);
        hub.deploy(first.clone()).await.expect("deploy");
        let state = hub.desired_state("m").await.expect("state");
        assert_eq!((state.version, state.seen), (2, None));
        let seen = DesiredSeen {
            version: state.version,
            desired: state.desired,
        };
        hub.record_desired_seen("m", &seen).await.expect("record");
        // A deployment changes the twin, not what the module has.
        let mut changed = first.clone();
        changed.desired.insert("m".to_owned(), json!({"rate": 2}));
        hub.deploy(changed).await.expect("deploy");
        let state = hub.desired_state("m").await.expect("state");
        assert_eq!(state.version, 3);
        assert_eq!(state.seen.as_ref(), Some(&seen));
        assert!(matches!(
            hub.record_desired_seen("other", &seen).await,
            Err(edge_hub::HubError::UnknownModule(_))
        ));
    }
    let hub = open(&config);
    let state = hub.desired_state("m").await.expect("state after a reopen");
    assert_eq!(state.seen.map(|seen| seen.version), Some(2));
    // A module that leaves the deployment and comes back starts again.
    hub.deploy(deployment(Vec::new(), &[]))
        .await
        .expect("deploy");
    assert!(hub.desired_state("m").await.is_err());
    hub.deploy(first).await.expect("deploy");
    let state = hub.desired_state("m").await.expect("state");
    assert_eq!((state.version, state.seen), (2, None));
}

#[tokio::test]
async fn queued_messages_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    {
        let hub = open(&config);
        deploy_s_to_r(&hub).await;
        for index in 0..10 {
            hub.publish("s", None, message(&format!("m{index}")), Qos::AtLeastOnce)
                .await
                .expect("publish");
        }
    }
    // The deployment is remembered, so routing works before edged deploys
    // again.
    let hub = open(&config);
    assert_eq!(hub.stats().modules["r"].queues["r/in"].depth, 10);
    hub.publish("s", None, message("m10"), Qos::AtLeastOnce)
        .await
        .expect("publish");
    let mut inputs = hub.open_inputs("r");
    for index in 0..11 {
        let delivery = next(&mut inputs).await;
        assert_eq!(delivery.message.body, format!("m{index}").as_bytes());
        inputs.ack(delivery.id);
    }
}

#[tokio::test]
async fn an_urgent_message_overtakes_a_queue_being_delivered() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    hub.deploy(deployment(
        vec![
            route(
                "urgent",
                "FROM /messages/modules/s/outputs/alarm INTO BrokeredEndpoint(\"/modules/r/inputs/alarm\")",
                0,
            ),
            route(
                "bulk",
                "FROM /messages/modules/s/outputs/data INTO BrokeredEndpoint(\"/modules/r/inputs/data\")",
                9,
            ),
        ],
        &["s", "r"],
    ))
    .await
    .expect("deploy");
    for index in 0..10 {
        hub.publish(
            "s",
            Some("data"),
            message(&format!("d{index}")),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    }
    let mut inputs = hub.open_inputs("r");
    let first = next(&mut inputs).await;
    assert_eq!(first.message.body, b"d0");
    inputs.ack(first.id);
    hub.publish("s", Some("alarm"), message("alarm"), Qos::AtLeastOnce)
        .await
        .expect("publish");
    let urgent = next(&mut inputs).await;
    assert_eq!(urgent.input, "alarm");
    inputs.ack(urgent.id);
    let rest = next(&mut inputs).await;
    assert_eq!(rest.message.body, b"d1");
}

#[tokio::test]
async fn expired_messages_are_not_delivered_and_are_counted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    let mut short = route(
        "short",
        "FROM /messages/modules/s/outputs/short INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
        0,
    );
    short.time_to_live_secs = 1;
    let long = route(
        "long",
        "FROM /messages/modules/s/outputs/long INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
        0,
    );
    hub.deploy(deployment(vec![short, long], &["s", "r"]))
        .await
        .expect("deploy");
    hub.publish("s", Some("short"), message("gone"), Qos::AtLeastOnce)
        .await
        .expect("publish");
    hub.publish("s", Some("long"), message("kept"), Qos::AtLeastOnce)
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut inputs = hub.open_inputs("r");
    let delivery = next(&mut inputs).await;
    assert_eq!(delivery.message.body, b"kept");
    inputs.ack(delivery.id);
    hub.save_session("flush", &StoredSession::default())
        .await
        .expect("flush");
    let stats = hub.stats();
    assert_eq!(stats.modules["r"].queues["r/in"].expired, 1);
    assert_eq!(stats.modules["r"].queues["r/in"].depth, 0);
    assert_eq!(stats.totals.expired, 1);
}

#[tokio::test]
async fn a_full_store_refuses_new_messages_and_keeps_the_stored_ones() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(dir.path());
    config.store_limit_bytes = 100 * 1024;
    config.when_full = edge_hub::WhenFull::RefuseNew;
    let hub = open(&config);
    hub.deploy(deployment(
        vec![route(
            "r",
            "FROM /messages/modules/s/outputs/out INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
            0,
        )],
        &["s", "r"],
    ))
    .await
    .expect("deploy");
    let body = "x".repeat(1000);
    let mut accepted = 0;
    loop {
        match hub
            .publish("s", Some("out"), message(&body), Qos::AtLeastOnce)
            .await
        {
            Ok(()) => accepted += 1,
            Err(PublishRefused::StoreFull(_)) => break,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
        assert!(accepted < 200, "the limit is not enforced");
    }
    assert!(accepted > 50, "only {accepted} messages fit in 100 KiB");
    assert!(matches!(
        hub.publish("s", Some("out"), message(&body), Qos::AtMostOnce)
            .await,
        Err(PublishRefused::StoreFull(_))
    ));
    let stats = hub.stats();
    assert_eq!(stats.modules["s"].refused_store_full, 1);
    assert_eq!(stats.modules["s"].dropped_store_full, 1);
    assert_eq!(stats.modules["r"].queues["r/in"].depth, accepted);
    assert!(stats.store.stored_bytes <= config.store_limit_bytes);
    // Delivering one makes room for one.
    let mut inputs = hub.open_inputs("r");
    let delivery = next(&mut inputs).await;
    inputs.ack(delivery.id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hub
        .publish("s", Some("out"), message(&body), Qos::AtLeastOnce)
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no room after an ack");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every accepted message is still there, in order.
    drop(inputs);
    let mut inputs = hub.open_inputs("r");
    let mut count = 0;
    while let Ok(Some(delivery)) =
        tokio::time::timeout(Duration::from_millis(300), inputs.next()).await
    {
        inputs.ack(delivery.id);
        count += 1;
    }
    assert_eq!(count, accepted);
}

#[tokio::test]
async fn expired_messages_make_room_in_a_full_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(dir.path());
    config.store_limit_bytes = 50 * 1024;
    // Refusing new messages shows when the store is full; expired ones
    // make room under either policy.
    config.when_full = edge_hub::WhenFull::RefuseNew;
    let hub = open(&config);
    let mut brief = route(
        "brief",
        "FROM /messages/modules/s/outputs/brief INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
        0,
    );
    brief.time_to_live_secs = 1;
    hub.deploy(deployment(vec![brief], &["s", "r"]))
        .await
        .expect("deploy");
    let body = "x".repeat(1000);
    while hub
        .publish("s", Some("brief"), message(&body), Qos::AtLeastOnce)
        .await
        .is_ok()
    {}
    tokio::time::sleep(Duration::from_millis(1100)).await;
    hub.publish("s", Some("brief"), message(&body), Qos::AtLeastOnce)
        .await
        .expect("expired messages made room");
    let stats = hub.stats();
    assert!(stats.totals.expired > 0, "{stats:?}");
    assert_eq!(stats.modules["r"].queues["r/in"].depth, 1);
}

#[tokio::test]
async fn disk_space_is_reused_after_delivery() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    let hub = open(&config);
    deploy_s_to_r(&hub).await;
    let file = config.dir.join("store.redb");
    let body = "x".repeat(1000);
    let mut sizes = Vec::new();
    for _ in 0..12 {
        let publishes: Vec<_> = (0..500)
            .map(|_| {
                let hub = hub.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    hub.publish("s", None, message(&body), Qos::AtLeastOnce)
                        .await
                })
            })
            .collect();
        for publish in publishes {
            publish.await.expect("task").expect("publish");
        }
        let mut inputs = hub.open_inputs("r");
        for _ in 0..500 {
            let delivery = next(&mut inputs).await;
            inputs.ack(delivery.id);
        }
        // A durable commit after the acks lets redb reuse their pages.
        hub.save_session("flush", &StoredSession::default())
            .await
            .expect("flush");
        hub.save_session("flush", &StoredSession::default())
            .await
            .expect("flush");
        assert_eq!(hub.stats().totals.queued, 0);
        sizes.push(std::fs::metadata(&file).expect("store file").len());
    }
    eprintln!("store file bytes after each round: {sizes:?}");
    // redb reuses freed pages, so the file stays within a small multiple
    // of its size after the first rounds instead of growing every round.
    let early = sizes[..3].iter().copied().max().unwrap_or_default();
    let late = sizes[sizes.len() - 3..]
        .iter()
        .copied()
        .max()
        .unwrap_or_default();
    assert!(
        late <= 2 * early,
        "the store file keeps growing while its queues drain: {sizes:?}"
    );
}

#[tokio::test]
async fn a_stream_reads_past_a_long_run_of_expired_messages() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    let mut short = route(
        "short",
        "FROM /messages/modules/s/outputs/short INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
        0,
    );
    short.time_to_live_secs = 1;
    let long = route(
        "long",
        "FROM /messages/modules/s/outputs/long INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
        0,
    );
    hub.deploy(deployment(vec![short, long], &["s", "r"]))
        .await
        .expect("deploy");
    for index in 0..200 {
        hub.publish(
            "s",
            Some("short"),
            message(&format!("e{index}")),
            Qos::AtMostOnce,
        )
        .await
        .expect("publish");
    }
    for index in 0..3 {
        hub.publish(
            "s",
            Some("long"),
            message(&format!("k{index}")),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut inputs = hub.open_inputs("r");
    for index in 0..3 {
        let delivery = next(&mut inputs).await;
        assert_eq!(delivery.message.body, format!("k{index}").as_bytes());
        inputs.ack(delivery.id);
    }
}

#[tokio::test]
async fn a_cancelled_next_loses_no_delivery() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    deploy_s_to_r(&hub).await;
    let mut inputs = hub.open_inputs("r");
    // A call waiting on an empty queue is dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), inputs.next())
            .await
            .is_err()
    );
    for index in 0..50 {
        hub.publish("s", None, message(&format!("m{index}")), Qos::AtLeastOnce)
            .await
            .expect("publish");
    }
    let mut bodies = Vec::new();
    let mut cancelled = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bodies.len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries stopped: {bodies:?}"
        );
        // Each call gets one poll; a call that is still waiting (for a read
        // from the store) is dropped, as a select! on another branch would.
        match tokio::time::timeout(Duration::ZERO, inputs.next()).await {
            Ok(Some(delivery)) => {
                bodies.push(String::from_utf8(delivery.message.body.clone()).expect("text"));
                inputs.ack(delivery.id);
            }
            Ok(None) => panic!("the stream ended"),
            Err(_) => {
                cancelled += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let expected: Vec<String> = (0..50).map(|index| format!("m{index}")).collect();
    assert_eq!(bodies, expected, "after {cancelled} cancelled calls");
}

#[tokio::test]
async fn a_damaged_store_file_is_refused_with_an_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = config(dir.path());
    {
        let hub = open(&config);
        hub.deploy(deployment(Vec::new(), &["m"]))
            .await
            .expect("deploy");
    }
    let file = config.dir.join("store.redb");
    let keys = || -> Arc<dyn edge_hub::KeyStore> {
        Arc::new(FileKeys::open(&config.dir.join("keys")).expect("keys"))
    };
    let length = std::fs::metadata(&file).expect("store file").len();
    // Cut short, as a torn write at the end of the file would leave it.
    let truncated = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("store file");
    truncated.set_len(length / 3).expect("truncate");
    drop(truncated);
    let refused = Hub::open(&config, keys());
    assert!(refused.is_err(), "a truncated store was opened");
    // Garbage from the first byte.
    std::fs::write(&file, vec![0x5a; 8192]).expect("overwrite");
    match Hub::open(&config, keys()) {
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("store.redb"), "{message}");
            assert!(message.contains("move it aside"), "{message}");
        }
        Ok(_) => panic!("a garbage store was opened"),
    }
}

/// A module that stops reading while messages keep coming: its live tail
/// fills, the senders wait a little, then the tail overflows and the
/// module's stream reads the store; once it reads again it gets every
/// message exactly once and in order, across the switches from the tail to
/// the store and back.
#[tokio::test]
async fn a_live_stream_that_falls_behind_reads_the_store_and_loses_nothing() {
    const MESSAGES: usize = 3000;
    let dir = tempfile::tempdir().expect("temporary directory");
    let hub = open(&config(dir.path()));
    deploy_s_to_r(&hub).await;
    let mut inputs = hub.open_inputs("r");
    let consumer = tokio::spawn(async move {
        let mut bodies = Vec::with_capacity(MESSAGES);
        while bodies.len() < MESSAGES {
            if bodies.len() == 100 {
                // The module stalls: the tail fills and overflows.
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            let delivery = next(&mut inputs).await;
            bodies.push(String::from_utf8(delivery.message.body.clone()).expect("text"));
            inputs.ack(delivery.id);
        }
        nothing_within(&mut inputs, Duration::from_millis(200)).await;
        bodies
    });
    let started = std::time::Instant::now();
    for index in 0..MESSAGES {
        hub.publish("s", None, message(&format!("m{index}")), Qos::AtMostOnce)
            .await
            .expect("publish");
    }
    // The stall held the sender back for one wait, not for every message.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "publishing took {:?}",
        started.elapsed()
    );
    let bodies = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the consumer finishes")
        .expect("consumer");
    let expected: Vec<String> = (0..MESSAGES).map(|index| format!("m{index}")).collect();
    assert_eq!(bodies, expected);
    // Every acknowledgement reaches the store (some may still be on their
    // way for a moment), and the store is empty again.
    let queued = |hub: &Hub| -> u64 {
        hub.stats()
            .modules
            .values()
            .flat_map(|module| module.queues.values())
            .map(|queue| queue.depth)
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queued(&hub) > 0 || hub.stats().store.stored_bytes > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} left queued, {:?}",
            queued(&hub),
            hub.stats().store
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_full_store_that_drops_the_oldest_accepts_and_counts_its_evictions() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = config(dir.path());
    config.store_limit_bytes = 100 * 1024;
    let hub = open(&config);
    hub.deploy(deployment(
        vec![route(
            "r",
            "FROM /messages/modules/s/outputs/out INTO BrokeredEndpoint(\"/modules/r/inputs/in\")",
            0,
        )],
        &["s", "r"],
    ))
    .await
    .expect("deploy");
    let sent = 200;
    for sequence in 0..sent {
        let body = format!("{sequence:04}{}", "x".repeat(1000));
        hub.publish("s", Some("out"), message(&body), Qos::AtLeastOnce)
            .await
            .expect("drop-oldest accepts");
    }
    let queue = hub.stats().modules["r"].queues["r/in"];
    assert!(queue.dropped_quota > 0, "{queue:?}");
    assert_eq!(queue.depth + queue.dropped_quota, sent);
    assert_eq!(hub.stats().totals.dropped_quota, queue.dropped_quota);
    // The oldest went: the first one delivered is the first one kept.
    let mut inputs = hub.open_inputs("r");
    let first = inputs.next().await.expect("a delivery");
    assert_eq!(
        &first.message.body[..4],
        format!("{:04}", queue.dropped_quota).as_bytes()
    );
}
