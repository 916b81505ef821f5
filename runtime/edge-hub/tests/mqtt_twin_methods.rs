//! Twins and direct methods over MQTT, as the SDKs use them.

mod mqtt_common;

use std::time::Duration;

use edge_hub::methods::{CallTimeouts, MethodError};
use mqtt_common::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};

/// The status and `$rid`, `$version` of a twin response topic.
fn twin_response(topic: &str) -> (u16, String, Option<u64>) {
    let rest = topic
        .strip_prefix("$iothub/twin/res/")
        .expect("a twin response");
    let (status, query) = rest.split_once("/?").expect("a query");
    let mut rid = None;
    let mut version = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("$rid=") {
            rid = Some(value.to_owned());
        }
        if let Some(value) = pair.strip_prefix("$version=") {
            version = Some(value.parse().expect("a version"));
        }
    }
    (
        status.parse().expect("a status"),
        rid.expect("a $rid"),
        version,
    )
}

async fn twin_request(
    client: &mut TestClient,
    topic: &str,
    body: &[u8],
) -> (u16, Option<u64>, Vec<u8>) {
    client.publish(topic, body).await;
    let response = client.next_publish().await;
    client.ack(&response).await;
    let (status, rid, version) = twin_response(&response.topic);
    let sent_rid = topic.rsplit_once("$rid=").expect("rid").1;
    assert_eq!(rid, sent_rid);
    (status, version, response.payload.to_vec())
}

#[tokio::test]
async fn twin_get_and_reported_patches() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", true).await;
    filter
        .subscribe(&[
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
        ])
        .await;

    let (status, _, body) = twin_request(&mut filter, "$iothub/twin/GET/?$rid=1", b" ").await;
    assert_eq!(status, 200);
    let twin: serde_json::Value = serde_json::from_slice(&body).expect("JSON twin");
    assert_eq!(twin["desired"]["threshold"], 20);
    assert!(twin["desired"]["$version"].is_u64());
    let reported_version = twin["reported"]["$version"]
        .as_u64()
        .expect("reported $version");

    let (status, version, _) = twin_request(
        &mut filter,
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        br#"{"state":"running"}"#,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(version, Some(reported_version + 1));

    let (status, _, body) = twin_request(&mut filter, "$iothub/twin/GET/?$rid=3", b" ").await;
    assert_eq!(status, 200);
    let twin: serde_json::Value = serde_json::from_slice(&body).expect("JSON twin");
    assert_eq!(twin["reported"]["state"], "running");

    // Not JSON, and over the twin rules: 400 with a message.
    for (rid, body) in [
        ("4", b"{not json".to_vec()),
        (
            "5",
            format!(r#"{{"big":"{}"}}"#, "x".repeat(40 * 1024)).into_bytes(),
        ),
    ] {
        let (status, _, body) = twin_request(
            &mut filter,
            &format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            &body,
        )
        .await;
        assert_eq!(status, 400);
        let error: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty())
        );
    }

    // Two answered GETs and one stored patch count; the refused patches
    // do not (edgeHub counts the operations that succeeded).
    let stats = hub.hub.stats();
    assert_eq!(stats.modules["filter"].twin_gets, 2);
    assert_eq!(stats.modules["filter"].reported_patches, 1);
    assert_eq!(stats.modules["sensor"].twin_gets, 0);

    // A new deployment that changes the desired properties sends a patch.
    let mut deployment = deployment();
    deployment
        .desired
        .insert("filter".to_owned(), serde_json::json!({ "threshold": 30 }));
    hub.hub.deploy(deployment).await.expect("deploy");
    let patch = filter.next_publish().await;
    filter.ack(&patch).await;
    let (version, body) = desired_patch(&patch);
    assert_eq!(body["threshold"], 30);
    assert_eq!(body["$version"], version);
}

/// The version and body of a desired patch.
fn desired_patch(patch: &Publish) -> (u64, serde_json::Value) {
    let version = patch
        .topic
        .strip_prefix("$iothub/twin/PATCH/properties/desired/?$version=")
        .expect("a desired patch topic")
        .parse()
        .expect("a version");
    (
        version,
        serde_json::from_slice(&patch.payload).expect("JSON patch"),
    )
}

fn with_filter_desired(desired: serde_json::Value) -> edge_hub::HubDeployment {
    let mut deployment = deployment();
    deployment.desired.insert("filter".to_owned(), desired);
    deployment
}

/// Waits until the hub has recorded that `module` has desired `version`.
async fn until_seen(hub: &edge_hub::Hub, module: &str, version: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let state = hub.desired_state(module).await.expect("desired state");
        if state.seen.is_some_and(|seen| seen.version == version) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{module} was never recorded at desired version {version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn desired_changes_made_while_a_module_was_away_reach_it_when_it_returns() {
    let hub = TestHub::start().await;
    let desired_filter = "$iothub/twin/PATCH/properties/desired/#";
    // The first subscription records what the module has: version 2.
    let mut filter = hub.client("filter", false).await;
    filter.subscribe(&[desired_filter]).await;
    until_seen(&hub.hub, "filter", 2).await;
    drop(filter);

    // Deployed while it is away: its restored session brings it the change
    // at once, without a new SUBSCRIBE.
    hub.hub
        .deploy(with_filter_desired(
            serde_json::json!({ "threshold": 30, "mode": "fast" }),
        ))
        .await
        .expect("deploy");
    let mut filter = hub.client("filter", false).await;
    let patch = filter.next_publish().await;
    assert_eq!(
        desired_patch(&patch),
        (
            3,
            serde_json::json!({ "threshold": 30, "mode": "fast", "$version": 3 })
        )
    );
    filter.ack(&patch).await;
    until_seen(&hub.hub, "filter", 3).await;
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
    drop(filter);

    // Acknowledged, it is not sent again, also after a restart of the hub.
    let hub = hub.restart().await;
    let mut filter = hub.client("filter", false).await;
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
    drop(filter);

    // A removed property comes as null; a clean session gets the change
    // when it subscribes.
    hub.hub
        .deploy(with_filter_desired(serde_json::json!({ "threshold": 30 })))
        .await
        .expect("deploy");
    let mut filter = hub.client("filter", true).await;
    filter.subscribe(&[desired_filter]).await;
    let patch = filter.next_publish().await;
    assert_eq!(
        desired_patch(&patch),
        (4, serde_json::json!({ "mode": null, "$version": 4 }))
    );
    filter.ack(&patch).await;
    until_seen(&hub.hub, "filter", 4).await;

    // While connected, the next change comes once, as a patch.
    hub.hub
        .deploy(with_filter_desired(serde_json::json!({ "threshold": 40 })))
        .await
        .expect("deploy");
    let patch = filter.next_publish().await;
    assert_eq!(
        desired_patch(&patch),
        (5, serde_json::json!({ "threshold": 40, "$version": 5 }))
    );
    filter.ack(&patch).await;
    until_seen(&hub.hub, "filter", 5).await;
    assert!(filter.receives_nothing(Duration::from_millis(300)).await);
}

/// A patch sent but never acknowledged (the module went away first) is
/// sent again when the module returns.
#[tokio::test]
async fn an_unacknowledged_desired_patch_comes_again() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", false).await;
    filter
        .subscribe(&["$iothub/twin/PATCH/properties/desired/#"])
        .await;
    until_seen(&hub.hub, "filter", 2).await;
    hub.hub
        .deploy(with_filter_desired(serde_json::json!({ "threshold": 25 })))
        .await
        .expect("deploy");
    let patch = filter.next_publish().await;
    assert_eq!(desired_patch(&patch).0, 3);
    drop(filter);
    let mut filter = hub.client("filter", false).await;
    let patch = filter.next_publish().await;
    assert_eq!(
        desired_patch(&patch),
        (3, serde_json::json!({ "threshold": 25, "$version": 3 }))
    );
}

#[tokio::test]
async fn direct_methods_round_trip_through_the_module() {
    let hub = TestHub::start().await;
    let methods = || hub.hub.methods();
    assert_eq!(
        methods()
            .invoke(
                "filter",
                "reset",
                b"{}".to_vec(),
                CallTimeouts::answer_within(Duration::from_secs(1))
            )
            .await,
        Err(MethodError::NotConnected)
    );
    let mut filter = hub.client("filter", true).await;
    filter.subscribe(&["$iothub/methods/POST/#"]).await;

    let call = {
        let hub = hub.hub.clone();
        tokio::spawn(async move {
            hub.methods()
                .invoke(
                    "filter",
                    "reset",
                    br#"{"hard":true}"#.to_vec(),
                    CallTimeouts::answer_within(PATIENCE),
                )
                .await
        })
    };
    let request = filter.next_publish().await;
    filter.ack(&request).await;
    let rid = request
        .topic
        .strip_prefix("$iothub/methods/POST/reset/?$rid=")
        .expect("a method request topic")
        .to_owned();
    assert_eq!(&request.payload[..], br#"{"hard":true}"#);
    filter
        .publish(
            &format!("$iothub/methods/res/201/?$rid={rid}"),
            br#"{"done":true}"#,
        )
        .await;
    let response = call.await.expect("no panic").expect("answered");
    assert_eq!(response.status, 201);
    assert_eq!(response.payload, br#"{"done":true}"#);

    // Unanswered: the caller times out, and a late answer is ignored.
    let late = methods()
        .invoke(
            "filter",
            "slow",
            Vec::new(),
            CallTimeouts::answer_within(Duration::from_millis(200)),
        )
        .await;
    assert_eq!(late, Err(MethodError::Timeout));
    let request = filter.next_publish().await;
    let rid = request
        .topic
        .rsplit_once("$rid=")
        .expect("rid")
        .1
        .to_owned();
    filter
        .publish(&format!("$iothub/methods/res/200/?$rid={rid}"), b"{}")
        .await;

    // A module that goes away fails its pending calls with Closed.
    let call = {
        let hub = hub.hub.clone();
        tokio::spawn(async move {
            hub.methods()
                .invoke(
                    "filter",
                    "hang",
                    Vec::new(),
                    CallTimeouts::answer_within(PATIENCE),
                )
                .await
        })
    };
    let _request = filter.next_publish().await;
    drop(filter);
    assert_eq!(call.await.expect("no panic"), Err(MethodError::Closed));
    assert_eq!(
        methods()
            .invoke(
                "filter",
                "reset",
                b"{}".to_vec(),
                CallTimeouts::answer_within(Duration::from_secs(1))
            )
            .await,
        Err(MethodError::NotConnected)
    );
}

/// A call made while its target is away reaches it when it comes back
/// within the call's connect timeout; without one, it fails at once.
#[tokio::test]
async fn a_method_call_waits_its_connect_timeout_for_a_reconnecting_module() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", false).await;
    filter.subscribe(&["$iothub/methods/POST/#"]).await;
    drop(filter);
    // The hub notices the disconnection.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.hub.stats().modules["filter"].connected {
        assert!(tokio::time::Instant::now() < deadline, "still connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = tokio::time::Instant::now();
    assert_eq!(
        hub.hub
            .methods()
            .invoke(
                "filter",
                "reset",
                Vec::new(),
                CallTimeouts::answer_within(PATIENCE)
            )
            .await,
        Err(MethodError::NotConnected)
    );
    assert!(started.elapsed() < Duration::from_secs(1), "failed at once");

    let call = {
        let hub = hub.hub.clone();
        let timeouts = CallTimeouts {
            connect: PATIENCE,
            response: PATIENCE,
        };
        tokio::spawn(async move {
            hub.methods()
                .invoke("filter", "reset", b"{}".to_vec(), timeouts)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The persistent session brings the subscription back at CONNECT.
    let mut filter = hub.client("filter", false).await;
    let request = filter.next_publish().await;
    filter.ack(&request).await;
    let rid = request
        .topic
        .strip_prefix("$iothub/methods/POST/reset/?$rid=")
        .expect("a method request topic")
        .to_owned();
    filter
        .publish(&format!("$iothub/methods/res/200/?$rid={rid}"), b"\"ok\"")
        .await;
    let response = call.await.expect("no panic").expect("answered");
    assert_eq!(response.payload, b"\"ok\"");
}

#[tokio::test]
async fn an_oversized_method_response_fails_the_call() {
    let hub = TestHub::start().await;
    let mut filter = hub.client("filter", true).await;
    filter.subscribe(&["$iothub/methods/POST/#"]).await;
    let call = {
        let hub = hub.hub.clone();
        tokio::spawn(async move {
            hub.methods()
                .invoke(
                    "filter",
                    "dump",
                    Vec::new(),
                    CallTimeouts::answer_within(PATIENCE),
                )
                .await
        })
    };
    let request = filter.next_publish().await;
    let rid = request
        .topic
        .rsplit_once("$rid=")
        .expect("rid")
        .1
        .to_owned();
    let mut response = Publish::new(
        format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        vec![b' '; 129 * 1024],
    );
    response.pkid = 0;
    filter.send(Packet::Publish(response)).await;
    assert_eq!(call.await.expect("no panic"), Err(MethodError::Closed));
    filter.ping().await;
}
