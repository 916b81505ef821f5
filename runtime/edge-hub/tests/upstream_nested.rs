//! A gateway's cloud connection authenticated with the device's SAS key,
//! against a parent hub that knows the gateway as a leaf device with that
//! key: the parent checks the token the gateway makes from the key (with
//! the verifier the real Python SDK's leaf tokens pass, `hub_sdk.rs`), and
//! the gateway's telemetry arrives there as the leaf's.

mod mqtt_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use edge_hub::leaf::{LeafCredential, LeafDevice, SymmetricKey};
use edge_hub::upstream::{LinkState, Upstream, UpstreamAuth, UpstreamConfig};
use edge_hub::{FileKeys, Hub, HubDeployment, HubMessage, Qos, SystemProperty};
use mqtt_common::{IOTHUB, TestHub, config, route};

const GATEWAY: &str = "gw-1";
const KEY: &str = "Z2F0ZXdheS1kZXZpY2Uta2V5LWZvci10ZXN0cy0wMTIzNDU=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sas_key_authenticates_the_gateway_to_a_parent_that_knows_the_key() {
    let parent = TestHub::start_with(|dir| {
        let mut config = config(dir);
        config.leaf_devices = vec![LeafDevice {
            id: GATEWAY.to_owned(),
            credential: LeafCredential::SymmetricKey(
                SymmetricKey::from_base64(KEY).expect("a key"),
            ),
        }];
        config
    })
    .await;
    parent
        .hub
        .deploy(HubDeployment {
            routes: vec![route(
                "children",
                "FROM /messages INTO BrokeredEndpoint(\"/modules/sink/inputs/children\")",
            )],
            modules: vec!["sink".to_owned()],
            desired: BTreeMap::new(),
            default_time_to_live: None,
        })
        .await
        .expect("deploy");

    let dir = tempfile::tempdir().expect("temporary directory");
    let ca_file = dir.path().join("parent-ca.pem");
    std::fs::write(&ca_file, &parent.certificates.ca_pem).expect("CA");
    let key_file = dir.path().join("device.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut gateway_config = config(dir.path());
    gateway_config.device_id = GATEWAY.to_owned();
    gateway_config.iothub_hostname = IOTHUB.to_owned();
    let keys = FileKeys::open(&gateway_config.dir.join("keys")).expect("keys");
    let gateway = Hub::open(&gateway_config, Arc::new(keys)).expect("gateway hub");
    gateway
        .deploy(HubDeployment {
            routes: vec![route(
                "up",
                "FROM /messages/modules/sensor/* INTO $upstream",
            )],
            modules: vec!["sensor".to_owned()],
            desired: BTreeMap::new(),
            default_time_to_live: None,
        })
        .await
        .expect("deploy");
    let mut upstream_config = UpstreamConfig::new(
        "localhost",
        parent.address.port(),
        ca_file,
        GATEWAY,
        UpstreamAuth::SasKey { key_file },
    );
    upstream_config.iothub_hostname = IOTHUB.to_owned();
    upstream_config.backoff_initial = Duration::from_millis(50);
    let upstream = Upstream::start(gateway.clone(), upstream_config);

    for sequence in 0..5 {
        gateway
            .publish(
                "sensor",
                Some("out"),
                HubMessage {
                    body: format!("reading {sequence}").into_bytes(),
                    application_properties: vec![("seq".to_owned(), sequence.to_string())],
                    ..HubMessage::default()
                },
                Qos::AtLeastOnce,
            )
            .await
            .expect("publish");
    }
    let mut inputs = parent.hub.open_inputs("sink");
    for sequence in 0..5 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), inputs.next())
            .await
            .unwrap_or_else(|_| {
                panic!("message {sequence} did not arrive: {:?}", upstream.status())
            })
            .expect("the sink's stream");
        assert_eq!(
            delivery.message.body,
            format!("reading {sequence}").into_bytes()
        );
        assert_eq!(
            delivery
                .message
                .system_properties
                .get(&SystemProperty::ConnectionDeviceId),
            Some(&GATEWAY.to_owned()),
            "the parent knows the sender as the gateway"
        );
        inputs.ack(delivery.id);
    }
    let status = upstream.status();
    assert!(
        matches!(status.state, LinkState::Connected { .. }),
        "{status:?}"
    );
    assert!(status.last_failure.is_none(), "{status:?}");
}
