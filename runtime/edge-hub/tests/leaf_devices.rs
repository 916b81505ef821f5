//! Leaf devices through the hub (a transparent gateway), over real MQTT and
//! TLS with raw clients: SAS and X.509 authentication and their refusals,
//! device telemetry along the routes, cloud-to-device messages queued
//! while the device is away (also across a restart), twins and direct
//! methods.

mod mqtt_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_hub::hub::HubDeployment;
use edge_hub::{
    CallTimeouts, ClientIdentity, HubMessage, LeafCredential, LeafDevice, MethodResponse,
    SymmetricKey, SystemProperty, Thumbprint,
};
use mqtt_common::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, PubAck, SubscribeReasonCode};

/// A leaf device authenticating with SAS tokens.
const SAS_LEAF: &str = "thermo-1";
/// A leaf device authenticating with its certificate.
const X509_LEAF: &str = "camera-1";
/// The SAS leaf device's key, as IoT Hub issues it (base64).
const SAS_KEY_BASE64: &str = "bGVhZiBkZXZpY2Uga2V5LCAzMiBieXRlcyBsb25nLi4=";

fn sas_key() -> SymmetricKey {
    SymmetricKey::from_base64(SAS_KEY_BASE64).expect("a base64 key")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A device token for `device` signed with `key`, valid until `expiry`.
fn device_token(device: &str, key: &[u8], expiry: u64) -> String {
    edge_hub::sas::device_token(key, &format!("{IOTHUB}/devices/{device}"), expiry)
}

/// The CONNECT the Python SDK's `IoTHubDeviceClient` sends.
fn leaf_connect(device: &str, password: String, clean_session: bool) -> Connect {
    let mut connect = Connect::new(device);
    connect.keep_alive = 60;
    connect.clean_session = clean_session;
    connect.set_login(
        format!("{IOTHUB}/{device}/?api-version=2019-10-01&DeviceClientType=test"),
        password,
    );
    connect
}

/// The test deployment with routes that tell device telemetry from module
/// telemetry: the SAS leaf's messages go to `sink`, all messages to
/// `$upstream`, and only module messages to `filter`.
fn leaf_deployment() -> HubDeployment {
    let mut deployment = deployment();
    deployment.routes = vec![
        route(
            "leafToSink",
            "FROM /messages WHERE $connectionDeviceId = 'thermo-1' INTO BrokeredEndpoint(\"/modules/sink/inputs/alerts\")",
        ),
        route("all", "FROM /messages/* INTO $upstream"),
        route(
            "modulesOnly",
            "FROM /messages/modules/* INTO BrokeredEndpoint(\"/modules/filter/inputs/in1\")",
        ),
    ];
    deployment
}

async fn start(camera: &LeafCertificate) -> TestHub {
    let thumbprint = camera.thumbprint();
    let hub = TestHub::start_with(move |dir| {
        let mut config = config(dir);
        config.leaf_devices = vec![
            LeafDevice {
                id: SAS_LEAF.to_owned(),
                credential: LeafCredential::SymmetricKey(sas_key()),
            },
            LeafDevice {
                id: X509_LEAF.to_owned(),
                credential: LeafCredential::X509Thumbprints(vec![
                    Thumbprint::parse(&thumbprint).expect("a thumbprint"),
                ]),
            },
        ];
        config
    })
    .await;
    hub.hub.deploy(leaf_deployment()).await.expect("deploy");
    hub
}

async fn sas_leaf(hub: &TestHub, clean_session: bool) -> TestClient {
    let mut client = hub.open().await;
    let token = device_token(SAS_LEAF, sas_key().bytes(), now() + 3600);
    let connack = client
        .connect(leaf_connect(SAS_LEAF, token, clean_session))
        .await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    client
}

async fn refused_with(
    hub: &TestHub,
    mut client: TestClient,
    connect: Connect,
) -> ConnectReturnCode {
    let _ = hub;
    let code = client.connect(connect).await.code;
    client.expect_closed().await;
    code
}

#[tokio::test]
async fn a_sas_leaf_device_sends_telemetry_that_routes_as_device_telemetry() {
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    let mut sink = hub.client("sink", true).await;
    sink.subscribe(&[&inputs_filter("sink")]).await;
    let mut leaf = sas_leaf(&hub, true).await;
    // The SDK's property bag; `$.on` and `$.cmid` are not a device's to set.
    leaf.publish(
        &format!("devices/{SAS_LEAF}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&%24.cmid=forged&%24.on=out&unit=C"),
        br#"{"temperature": 30}"#,
    )
    .await;
    let delivered = sink.next_publish().await;
    sink.ack(&delivered).await;
    assert_eq!(delivered.payload.as_ref(), br#"{"temperature": 30}"#);
    let (input, properties) = delivered_properties(&delivered.topic);
    assert_eq!(input, "alerts");
    let property = |key: &str| {
        properties
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    assert_eq!(property("$.cdid"), Some(SAS_LEAF));
    assert_eq!(property("$.cmid"), None);
    assert_eq!(property("$.on"), None);
    assert_eq!(property("unit"), Some("C"));
    let stats = hub.hub.stats();
    assert_eq!(stats.leaf_devices[SAS_LEAF].messages_in, 1);
    assert!(stats.leaf_devices[SAS_LEAF].connected);
    assert_eq!(stats.upstream.depth, 1, "FROM /messages/* takes it");
    assert_eq!(
        stats.modules["filter"]
            .queues
            .get("filter/in1")
            .map_or(0, |queue| queue.depth),
        0,
        "FROM /messages/modules/* does not"
    );
}

#[tokio::test]
async fn an_x509_leaf_device_connects_with_its_certificate_and_no_other() {
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    let connector = hub.certificates.connector_with_certificate(&camera);
    let mut client = TestClient::open_with(hub.address, &connector).await;
    // The SDK sends no password with a certificate.
    let mut connect = leaf_connect(X509_LEAF, String::new(), true);
    if let Some(login) = &mut connect.login {
        login.password.clear();
    }
    assert_eq!(
        client.connect(connect.clone()).await.code,
        ConnectReturnCode::Success
    );
    client
        .publish(&format!("devices/{X509_LEAF}/messages/events/"), b"frame")
        .await;
    assert_eq!(hub.hub.stats().leaf_devices[X509_LEAF].messages_in, 1);

    // Another self-signed certificate for the same name is not the device's.
    let impostor = LeafCertificate::self_signed(X509_LEAF);
    let connector = hub.certificates.connector_with_certificate(&impostor);
    let client = TestClient::open_with(hub.address, &connector).await;
    assert_eq!(
        refused_with(&hub, client, connect.clone()).await,
        ConnectReturnCode::NotAuthorized
    );
    // No certificate at all.
    let client = hub.open().await;
    assert_eq!(
        refused_with(&hub, client, connect).await,
        ConnectReturnCode::NotAuthorized
    );
    // The SAS device's token does not make the certificate device connect,
    // nor does the camera's certificate the SAS device.
    let client = TestClient::open_with(
        hub.address,
        &hub.certificates.connector_with_certificate(&camera),
    )
    .await;
    let token = device_token(X509_LEAF, sas_key().bytes(), now() + 3600);
    let mut with_token = leaf_connect(SAS_LEAF, token, true);
    with_token.client_id = SAS_LEAF.to_owned();
    assert_eq!(
        refused_with(&hub, client, with_token).await,
        ConnectReturnCode::NotAuthorized
    );
}

#[tokio::test]
async fn leaf_devices_with_wrong_credentials_are_refused_with_connack_5() {
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    let key = sas_key();
    let good = || device_token(SAS_LEAF, key.bytes(), now() + 3600);
    let mut cases = vec![
        (
            "unknown device",
            leaf_connect(
                "stranger",
                device_token("stranger", key.bytes(), now() + 3600),
                true,
            ),
        ),
        (
            "wrong key",
            leaf_connect(
                SAS_LEAF,
                device_token(SAS_LEAF, b"another key", now() + 3600),
                true,
            ),
        ),
        (
            "expired token",
            leaf_connect(
                SAS_LEAF,
                device_token(SAS_LEAF, key.bytes(), now() - 10),
                true,
            ),
        ),
        (
            "a module's resource",
            leaf_connect(
                SAS_LEAF,
                edge_hub::sas::device_token(
                    key.bytes(),
                    &format!("{IOTHUB}/devices/{SAS_LEAF}/modules/sink"),
                    now() + 3600,
                ),
                true,
            ),
        ),
        (
            "the gateway's device id",
            leaf_connect(DEVICE, good(), true),
        ),
    ];
    let mut module_user_name = leaf_connect(SAS_LEAF, good(), true);
    module_user_name.set_login(TestHub::user_name("sink"), good());
    cases.push(("a module's user name", module_user_name));
    let mut other_hub = leaf_connect(SAS_LEAF, good(), true);
    other_hub.set_login(
        format!("other.example/{SAS_LEAF}/?api-version=2019-10-01"),
        good(),
    );
    cases.push(("another IoT hub", other_hub));
    for (case, connect) in cases {
        let client = hub.open().await;
        assert_eq!(
            refused_with(&hub, client, connect).await,
            ConnectReturnCode::NotAuthorized,
            "{case}"
        );
    }
    assert!(!hub.hub.stats().leaf_devices[SAS_LEAF].connected);
    // A leaf device's key is no module's: a module cannot connect with it.
    let mut as_module = hub.connect_packet("sink", true);
    as_module.set_login(
        TestHub::user_name("sink"),
        edge_hub::sas::device_token(
            key.bytes(),
            &format!("{IOTHUB}/devices/{DEVICE}/modules/sink"),
            now() + 3600,
        ),
    );
    let client = hub.open().await;
    assert_eq!(
        refused_with(&hub, client, as_module).await,
        ConnectReturnCode::NotAuthorized
    );
}

#[tokio::test]
async fn a_leaf_device_may_use_only_its_own_topics() {
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    for topic in [
        format!("devices/{X509_LEAF}/messages/events/"),
        format!("devices/{DEVICE}/modules/sensor/messages/events/"),
        format!("devices/{SAS_LEAF}/modules/sensor/messages/events/"),
        format!("devices/{SAS_LEAF}/messages/devicebound/"),
    ] {
        let mut leaf = sas_leaf(&hub, true).await;
        leaf.publish_no_wait(&topic, b"{}").await;
        leaf.expect_closed().await;
    }
    let mut leaf = sas_leaf(&hub, true).await;
    assert_eq!(
        leaf.subscribe(&[
            &format!("devices/{X509_LEAF}/messages/devicebound/#"),
            &inputs_filter("sink"),
            &format!("devices/{SAS_LEAF}/messages/devicebound/#"),
        ])
        .await,
        vec![
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    assert_eq!(hub.hub.stats().leaf_devices[SAS_LEAF].messages_in, 0);
}

fn cloud_message(id: &str, body: &[u8]) -> HubMessage {
    let mut message = HubMessage {
        body: body.to_vec(),
        ..HubMessage::default()
    };
    message
        .system_properties
        .insert(SystemProperty::MessageId, id.to_owned());
    message
        .application_properties
        .push(("command".to_owned(), "open".to_owned()));
    message
}

#[tokio::test]
async fn cloud_to_device_messages_wait_for_the_leaf_device_across_a_restart_until_it_acknowledges()
{
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    // Queued while the device has never connected.
    hub.hub
        .send_to_device(SAS_LEAF, cloud_message("c2d-1", b"first"))
        .await
        .expect("queued");
    assert!(matches!(
        hub.hub
            .send_to_device("stranger", cloud_message("c2d-x", b"lost"))
            .await,
        Err(edge_hub::HubError::UnknownLeafDevice(_))
    ));
    assert_eq!(
        hub.hub.stats().leaf_devices[SAS_LEAF].queues[&format!("$leaf/{SAS_LEAF}")].depth,
        1
    );
    let hub = hub.restart().await;
    let filter = format!("devices/{SAS_LEAF}/messages/devicebound/#");
    let mut leaf = sas_leaf(&hub, false).await;
    leaf.subscribe(&[&filter]).await;
    let delivered = leaf.next_publish().await;
    assert_eq!(delivered.payload.as_ref(), b"first");
    assert_eq!(delivered.qos, QoS::AtLeastOnce);
    let properties = delivered
        .topic
        .strip_prefix(&format!("devices/{SAS_LEAF}/messages/devicebound/"))
        .expect("a cloud-to-device topic");
    assert!(properties.contains("%24.mid=c2d-1"), "{properties}");
    assert!(properties.contains("command=open"), "{properties}");
    // Not acknowledged: it comes again on the next connection, with DUP.
    drop(leaf);
    let mut leaf = sas_leaf(&hub, false).await;
    let again = leaf.next_publish().await;
    assert_eq!(again.payload.as_ref(), b"first");
    assert!(again.dup);
    leaf.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    // Once acknowledged it is gone; a new one comes live.
    hub.hub
        .send_to_device(SAS_LEAF, cloud_message("c2d-2", b"second"))
        .await
        .expect("queued");
    let live = leaf.next_publish().await;
    assert_eq!(live.payload.as_ref(), b"second");
    leaf.ack(&live).await;
    leaf.ping().await;
    drop(leaf);
    let mut leaf = sas_leaf(&hub, false).await;
    leaf.ping().await;
    assert!(leaf.receives_nothing(Duration::from_millis(300)).await);
    assert_eq!(hub.hub.stats().leaf_devices[SAS_LEAF].messages_out, 2);
}

#[tokio::test]
async fn a_leaf_devices_twin_takes_reported_patches_and_cloud_desired_patches() {
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    let leaf_identity = ClientIdentity::LeafDevice(SAS_LEAF.to_owned());
    let mut reported_changes = hub.hub.reported_changes();
    let mut leaf = sas_leaf(&hub, true).await;
    leaf.subscribe(&[
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
    ])
    .await;
    leaf.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=1",
        br#"{"battery": 80}"#,
    )
    .await;
    let response = leaf.next_publish().await;
    assert_eq!(response.topic, "$iothub/twin/res/204/?$rid=1&$version=2");
    let change = reported_changes.recv().await.expect("a reported change");
    assert_eq!(change.client, leaf_identity);
    assert_eq!(change.version, 2);
    assert_eq!(change.patch["battery"], 80);

    let object = |value: serde_json::Value| match value {
        serde_json::Value::Object(object) => object,
        _ => unreachable!("an object"),
    };
    let version = hub
        .hub
        .patch_desired_from_cloud(
            &leaf_identity,
            object(serde_json::json!({"interval": 5, "$version": 7})),
        )
        .await
        .expect("applied");
    // The hub's own version, which counts every change the leaf sees.
    assert_eq!(version, Some(2));
    let patch = leaf.next_publish().await;
    assert_eq!(
        patch.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=2"
    );
    let body: serde_json::Value = serde_json::from_slice(&patch.payload).expect("JSON");
    assert_eq!(body, serde_json::json!({"interval": 5, "$version": 2}));
    leaf.ack(&patch).await;
    // The same patch delivered again (QoS 1 may) changes nothing.
    assert_eq!(
        hub.hub
            .patch_desired_from_cloud(
                &leaf_identity,
                object(serde_json::json!({"interval": 5, "$version": 7}))
            )
            .await
            .expect("a repeated patch"),
        None
    );

    leaf.publish("$iothub/twin/GET/?$rid=2", b"").await;
    let twin = leaf.next_publish().await;
    assert_eq!(twin.topic, "$iothub/twin/res/200/?$rid=2");
    let twin: serde_json::Value = serde_json::from_slice(&twin.payload).expect("JSON");
    assert_eq!(
        twin,
        serde_json::json!({
            "desired": {"interval": 5, "$version": 2},
            "reported": {"battery": 80, "$version": 2},
        })
    );
    // The module of the same name has its own twin: the sink's is untouched.
    let sink_twin = hub.hub.twin("sink").await.expect("the sink's twin");
    assert_eq!(sink_twin.reported, serde_json::json!({"$version": 1}));
}

#[tokio::test]
async fn a_direct_method_reaches_the_leaf_device_and_returns_its_answer() {
    let camera = LeafCertificate::self_signed(X509_LEAF);
    let hub = start(&camera).await;
    let leaf_identity = ClientIdentity::LeafDevice(SAS_LEAF.to_owned());
    let timeouts = CallTimeouts::answer_within(Duration::from_secs(30));
    assert_eq!(
        hub.hub
            .invoke_method(&leaf_identity, "reboot", b"{}".to_vec(), timeouts)
            .await,
        Err(edge_hub::MethodError::NotConnected)
    );
    let mut leaf = sas_leaf(&hub, true).await;
    leaf.subscribe(&["$iothub/methods/POST/#"]).await;
    let call = tokio::spawn({
        let hub = hub.hub.clone();
        let leaf_identity = leaf_identity.clone();
        async move {
            hub.invoke_method(
                &leaf_identity,
                "reboot",
                br#"{"delay":1}"#.to_vec(),
                timeouts,
            )
            .await
        }
    });
    let request = leaf.next_publish().await;
    let rid = request
        .topic
        .strip_prefix("$iothub/methods/POST/reboot/?$rid=")
        .expect("a method request")
        .to_owned();
    assert_eq!(request.payload.as_ref(), br#"{"delay":1}"#);
    leaf.ack(&request).await;
    leaf.publish(
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        br#"{"ok":true}"#,
    )
    .await;
    assert_eq!(
        call.await.expect("no panic"),
        Ok(MethodResponse {
            status: 200,
            payload: br#"{"ok":true}"#.to_vec()
        })
    );
    // The module called like the device is not the device.
    assert_eq!(
        hub.hub
            .methods()
            .invoke(SAS_LEAF, "reboot", b"{}".to_vec(), timeouts)
            .await,
        Err(edge_hub::MethodError::NotConnected)
    );
}
