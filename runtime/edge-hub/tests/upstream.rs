//! The upstream connection against a real mosquitto standing in for IoT
//! Hub (TLS on loopback, a password file or client certificates): telemetry
//! going up in order with the sender's identity, checkpointed only after
//! the broker's PUBACK; the broker going away and coming back ten times;
//! credentials refused and reported; desired patches and method calls
//! coming down to modules; reported properties and the runtime's state
//! going up, again after every reconnect.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_hub::upstream::{
    ClientKey, FailureKind, LinkState, Upstream, UpstreamAuth, UpstreamConfig,
};
use edge_hub::{ClientIdentity, Hub, HubDeployment, HubMessage, Qos};
use serde_json::{Value, json};
use test_mosquitto::{Authority, CloudClient, DeviceAuth, Mosquitto, Received};

mod upstream_common;
use upstream_common::{
    DEVICE, LEAF, TOKEN, open_deployed, route, token_broker, token_config, wait_until, write_secret,
};

const WAIT: Duration = Duration::from_secs(30);

/// `sensor`'s messages go up, those with `alert = 'true'` at priority 0 and
/// the rest at priority 5; `sink` is a second module with a twin.
async fn open_hub(dir: &Path) -> Hub {
    open_deployed(
        dir,
        HubDeployment {
            routes: vec![
                route(
                    "alerts",
                    "FROM /messages/modules/sensor/* WHERE alert = 'true' INTO $upstream",
                    0,
                ),
                route(
                    "telemetry",
                    "FROM /messages/modules/sensor/* WHERE NOT(alert = 'true') INTO $upstream",
                    5,
                ),
            ],
            modules: vec!["sensor".to_owned(), "sink".to_owned()],
            desired: BTreeMap::from([("sink".to_owned(), json!({"rate": 1, "mode": "slow"}))]),
            default_time_to_live: None,
        },
    )
    .await
}

fn message(sequence: usize, alert: bool) -> HubMessage {
    HubMessage {
        body: format!("{{\"n\":{sequence}}}").into_bytes(),
        application_properties: vec![
            ("seq".to_owned(), sequence.to_string()),
            ("alert".to_owned(), alert.to_string()),
        ],
        ..HubMessage::default()
    }
}

async fn publish(hub: &Hub, range: std::ops::Range<usize>) {
    for sequence in range {
        hub.publish(
            "sensor",
            Some("out"),
            message(sequence, false),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    }
}

/// The `seq` property of a telemetry publish, checking the sender's
/// identity in the property bag on the way.
fn sequence(received: &Received) -> usize {
    let bag = received
        .topic
        .strip_prefix(&format!("devices/{DEVICE}/messages/events/"))
        .unwrap_or_else(|| panic!("not telemetry: {}", received.topic));
    let fields: BTreeMap<&str, &str> = bag
        .split('&')
        .filter_map(|field| field.split_once('='))
        .collect();
    assert_eq!(fields.get("%24.cdid"), Some(&DEVICE), "{bag}");
    assert_eq!(fields.get("%24.cmid"), Some(&"sensor"), "{bag}");
    assert_eq!(fields.get("%24.on"), Some(&"out"), "{bag}");
    fields["seq"].parse().expect("a sequence number")
}

/// Collects telemetry until `count` distinct sequence numbers arrived;
/// returns them in arrival order (duplicates included).
async fn collect(cloud: &mut CloudClient, count: usize) -> Vec<usize> {
    let mut arrived = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    while distinct.len() < count {
        let received = cloud
            .next_on("devices/", WAIT)
            .await
            .unwrap_or_else(|| panic!("only {} of {count} messages arrived", distinct.len()));
        let sequence = sequence(&received);
        distinct.insert(sequence);
        arrived.push(sequence);
    }
    arrived
}

/// The JSON payload of the next publish on a topic starting with `prefix`.
async fn next_json(cloud: &mut CloudClient, prefix: &str) -> Value {
    let received = cloud
        .next_on(prefix, WAIT)
        .await
        .unwrap_or_else(|| panic!("nothing arrived on {prefix}"));
    serde_json::from_slice(&received.payload).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_goes_up_in_order_and_leaves_the_store_only_when_acknowledged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let broker = token_broker(dir.path());
    let mut cloud = broker.cloud_client().await;
    let hub = open_hub(dir.path()).await;
    // Queued before the connection exists.
    publish(&hub, 0..200).await;
    assert_eq!(hub.stats().upstream.depth, 200);
    let upstream = Upstream::start(hub.clone(), token_config(dir.path(), &broker));
    publish(&hub, 200..500).await;
    let arrived = collect(&mut cloud, 500).await;
    assert_eq!(arrived, (0..500).collect::<Vec<_>>(), "in order, once each");
    wait_until("the queue to drain", || hub.stats().upstream.depth == 0).await;
    let status = upstream.status();
    assert!(
        matches!(status.state, LinkState::Connected { .. }),
        "{status:?}"
    );
    assert_eq!(status.messages_acknowledged, 500);
    assert_eq!(status.connections, 1);
    assert!(status.last_failure.is_none(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_messages_overtake_the_backlog() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let broker = token_broker(dir.path());
    let mut cloud = broker.cloud_client().await;
    let hub = open_hub(dir.path()).await;
    publish(&hub, 0..300).await;
    for sequence in 300..310 {
        hub.publish(
            "sensor",
            Some("out"),
            message(sequence, true),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    }
    let _upstream = Upstream::start(hub.clone(), token_config(dir.path(), &broker));
    let arrived = collect(&mut cloud, 310).await;
    assert_eq!(
        &arrived[..10],
        &(300..310).collect::<Vec<_>>(),
        "priority 0 first"
    );
    assert_eq!(
        &arrived[10..],
        &(0..300).collect::<Vec<_>>(),
        "then the backlog in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_by_itself_after_the_broker_restarts_ten_times() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut broker = token_broker(dir.path());
    let hub = open_hub(dir.path()).await;
    // Each reconnect must come after the recorder subscribed again
    // (mosquitto keeps nothing for a client that is not there): the retry
    // waits at least a second.
    let mut config = token_config(dir.path(), &broker);
    config.backoff_initial = Duration::from_secs(2);
    config.backoff_maximum = Duration::from_secs(2);
    let upstream = Upstream::start(hub.clone(), config);
    let mut sent = 0;
    for round in 0..10 {
        let mut cloud = broker.cloud_client().await;
        wait_until("the link to come up", || {
            matches!(upstream.status().state, LinkState::Connected { .. })
        })
        .await;
        publish(&hub, sent..sent + 100).await;
        sent += 100;
        // Everything queued so far arrives, in order per the first arrival
        // of each message.
        let arrived = collect(&mut cloud, 100).await;
        let mut first = Vec::new();
        for sequence in arrived {
            if !first.contains(&sequence) {
                first.push(sequence);
            }
        }
        assert_eq!(
            first,
            (sent - 100..sent).collect::<Vec<_>>(),
            "round {round}"
        );
        wait_until("the queue to drain", || hub.stats().upstream.depth == 0).await;
        // The cloud goes away while more is queued.
        broker.stop();
        publish(&hub, sent..sent + 50).await;
        sent += 50;
        wait_until("the link failure to show", || {
            upstream.status().last_failure.is_some()
                && !matches!(upstream.status().state, LinkState::Connected { .. })
        })
        .await;
        drop(cloud);
        // The device is admitted only once the cloud client listens:
        // mosquitto drops what it acknowledges for nobody.
        broker.admit_devices(false);
        broker.start_again();
        let mut cloud = broker.cloud_client().await;
        broker.admit_devices(true);
        let arrived = collect(&mut cloud, 50).await;
        assert!(
            arrived
                .iter()
                .all(|sequence| (sent - 50..sent).contains(sequence)),
            "{arrived:?}"
        );
        drop(cloud);
    }
    wait_until("the last acknowledgements", || {
        hub.stats().upstream.depth == 0
    })
    .await;
    let status = upstream.status();
    assert!(status.connections >= 11, "{status:?}");
    assert!(status.messages_acknowledged as usize >= sent, "{status:?}");
    let failure = status.last_failure.expect("a failure was recorded");
    assert!(
        matches!(failure.kind, FailureKind::Lost | FailureKind::Tcp),
        "{failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_reported_and_retried() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let broker = token_broker(dir.path());
    let hub = open_hub(dir.path()).await;
    let mut config = token_config(dir.path(), &broker);
    let wrong = write_secret(
        &dir.path().join("wrong"),
        &TOKEN.replace("dGVzdA", "bm9wZQ"),
    );
    config.auth = UpstreamAuth::SasToken { token_file: wrong };
    let upstream = Upstream::start(hub.clone(), config.clone());
    wait_until("a refusal", || {
        upstream
            .status()
            .last_failure
            .is_some_and(|failure| failure.kind == FailureKind::Refused)
    })
    .await;
    wait_until("a retry", || match upstream.status().state {
        LinkState::Waiting { failures, .. } => failures >= 2,
        _ => false,
    })
    .await;
    drop(upstream);

    // A missing key file and an untrusted CA name their step and file.
    let cases = [
        (
            UpstreamAuth::SasKey {
                key_file: dir.path().join("missing.key"),
            },
            config.ca_file.clone(),
            FailureKind::Credentials,
            "missing.key",
        ),
        (
            config.auth.clone(),
            {
                let other = dir.path().join("other-ca.pem");
                std::fs::write(&other, Authority::new("other").ca_pem()).expect("CA");
                other
            },
            FailureKind::Tls,
            "TLS handshake",
        ),
    ];
    for (auth, ca_file, kind, text) in cases {
        let mut config = config.clone();
        config.auth = auth;
        config.ca_file = ca_file;
        let upstream = Upstream::start(hub.clone(), config);
        wait_until("the failure", || upstream.status().last_failure.is_some()).await;
        let failure = upstream.status().last_failure.expect("a failure");
        assert_eq!(failure.kind, kind, "{failure:?}");
        assert!(failure.message.contains(text), "{failure:?}");
    }

    // A name that cannot resolve (`.invalid` never does) and a port where
    // nothing listens name their steps too.
    let mut unresolvable = config.clone();
    unresolvable.host = "cloud.does-not-exist.invalid".to_owned();
    let mut closed = config.clone();
    closed.port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("address").port()
    };
    for (config, kind, text) in [
        (
            unresolvable,
            FailureKind::Dns,
            "cannot resolve cloud.does-not-exist.invalid",
        ),
        (closed, FailureKind::Tcp, "cannot connect to localhost"),
    ] {
        let upstream = Upstream::start(hub.clone(), config);
        wait_until("the failure", || upstream.status().last_failure.is_some()).await;
        let failure = upstream.status().last_failure.expect("a failure");
        assert_eq!(failure.kind, kind, "{failure:?}");
        assert!(failure.message.contains(text), "{failure:?}");
    }
}

fn x509_config(dir: &Path, broker: &Mosquitto, key: ClientKey) -> UpstreamConfig {
    let issued = broker.authority().client(DEVICE);
    let certificate_file = dir.join("device.pem");
    std::fs::write(&certificate_file, &issued.certificate_pem).expect("certificate");
    if let ClientKey::File(path) = &key {
        write_secret(path, &issued.key_pem);
    }
    let mut config = UpstreamConfig::new(
        test_mosquitto::HOST,
        broker.device_port(),
        broker.ca_file(),
        DEVICE,
        UpstreamAuth::X509 {
            certificate_file,
            key,
        },
    );
    config.backoff_initial = Duration::from_millis(50);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x509_device_certificate_authenticates() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        Arc::new(Authority::new("cloud CA")),
        DeviceAuth::ClientCertificates,
    );
    let mut cloud = broker.cloud_client().await;
    let hub = open_hub(dir.path()).await;
    let config = x509_config(
        dir.path(),
        &broker,
        ClientKey::File(dir.path().join("device.key")),
    );
    let _upstream = Upstream::start(hub.clone(), config);
    publish(&hub, 0..20).await;
    assert_eq!(collect(&mut cloud, 20).await, (0..20).collect::<Vec<_>>());
}

fn desired_topic(module: &str, version: u64) -> String {
    format!("$iothub/{DEVICE}/{module}/twin/PATCH/properties/desired/?$version={version}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_patches_and_method_calls_come_down_and_reported_properties_go_up() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut broker = token_broker(dir.path());
    let mut cloud = broker.cloud_client().await;
    let hub = open_hub(dir.path()).await;
    hub.patch_reported("sink", json!({"temperature": 21, "gone": true}))
        .await
        .expect("reported");
    // The reconnect below must come after the cloud client subscribed
    // again (mosquitto keeps nothing for a client that is not there): the
    // first retry waits at least 1.5 s.
    let mut config = token_config(dir.path(), &broker);
    config.backoff_initial = Duration::from_secs(3);
    config.backoff_maximum = Duration::from_secs(3);
    let upstream = Upstream::start(hub.clone(), config);
    upstream.report_runtime_state(serde_json::Map::from_iter([(
        "deployment".to_owned(),
        json!({"version": "1.0.0"}),
    )]));

    // On connecting: the whole reported documents, the device's and the
    // module's.
    let mut reported = BTreeMap::new();
    while reported.len() < 2 {
        let received = cloud
            .next_on("$iothub/", WAIT)
            .await
            .expect("reported properties");
        let payload: Value = serde_json::from_slice(&received.payload).expect("JSON");
        if received
            .topic
            .starts_with("$iothub/twin/PATCH/properties/reported/?$rid=")
        {
            reported.insert("device", payload);
        } else if received.topic.starts_with(&format!(
            "$iothub/{DEVICE}/sink/twin/PATCH/properties/reported/?$rid="
        )) {
            reported.insert("sink", payload);
        }
    }
    assert_eq!(
        reported["device"],
        json!({"deployment": {"version": "1.0.0"}})
    );
    assert_eq!(reported["sink"], json!({"temperature": 21, "gone": true}));

    // A change goes up as the difference.
    hub.patch_reported("sink", json!({"temperature": 22}))
        .await
        .expect("reported");
    assert_eq!(
        next_json(
            &mut cloud,
            &format!("$iothub/{DEVICE}/sink/twin/PATCH/properties/reported/")
        )
        .await,
        json!({"temperature": 22}),
        "patch"
    );

    // A desired patch from the cloud reaches the module's connection and
    // stays over the deployment's properties.
    let mut patches = hub.desired_patches("sink");
    cloud
        .publish(
            &desired_topic("sink", 9),
            json!({"rate": 5, "mode": null, "$version": 9}).to_string(),
        )
        .await;
    let patch = tokio::time::timeout(WAIT, patches.recv())
        .await
        .expect("a patch")
        .expect("open");
    assert_eq!(patch.patch["rate"], json!(5));
    assert_eq!(patch.patch["mode"], Value::Null);
    let twin = hub.twin("sink").await.expect("twin");
    assert_eq!(twin.desired["rate"], json!(5));
    assert!(twin.desired.get("mode").is_none());

    // A method call from the cloud is answered by the module.
    let mut calls = hub.methods().attach("sink");
    cloud
        .publish(
            &format!("$iothub/{DEVICE}/sink/methods/POST/reset/?$rid=77"),
            r#"{"hard":true}"#,
        )
        .await;
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("a call")
        .expect("open");
    assert_eq!(call.name, "reset");
    assert_eq!(call.payload, br#"{"hard":true}"#);
    call.respond
        .send(edge_hub::MethodResponse {
            status: 200,
            payload: br#"{"done":true}"#.to_vec(),
        })
        .expect("respond");
    let answer = cloud
        .next_on(&format!("$iothub/{DEVICE}/sink/methods/res/"), WAIT)
        .await
        .expect("an answer");
    assert_eq!(
        answer.topic,
        format!("$iothub/{DEVICE}/sink/methods/res/200/?$rid=77")
    );
    assert_eq!(answer.payload, br#"{"done":true}"#);
    // A call to a module that does not listen fails as on IoT Hub.
    cloud
        .publish(
            &format!("$iothub/{DEVICE}/sensor/methods/POST/reset/?$rid=78"),
            "{}",
        )
        .await;
    let answer = cloud
        .next_on(&format!("$iothub/{DEVICE}/sensor/methods/res/"), WAIT)
        .await
        .expect("an answer");
    assert_eq!(
        answer.topic,
        format!("$iothub/{DEVICE}/sensor/methods/res/404/?$rid=78")
    );

    // After the cloud comes back, everything is sent again, with the
    // deletions made while it was away.
    broker.stop();
    hub.patch_reported("sink", json!({"gone": null}))
        .await
        .expect("reported");
    broker.start_again();
    let mut cloud = broker.cloud_client().await;
    assert_eq!(
        next_json(
            &mut cloud,
            &format!("$iothub/{DEVICE}/sink/twin/PATCH/properties/reported/")
        )
        .await,
        json!({"temperature": 22, "gone": null}),
        "the whole document again"
    );
    let status = upstream.status();
    assert_eq!(status.desired_patches_received, 1);
    assert_eq!(status.method_calls_received, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_devices_cloud_traffic_goes_through_the_gateways_connection() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let broker = token_broker(dir.path());
    let mut cloud = broker.cloud_client().await;
    let hub = open_hub(dir.path()).await;
    let upstream = Upstream::start(hub.clone(), token_config(dir.path(), &broker));
    wait_until("the link", || {
        matches!(upstream.status().state, LinkState::Connected { .. })
    })
    .await;
    let leaf = ClientIdentity::LeafDevice(LEAF.to_owned());

    // A cloud-to-device message is queued for the leaf, with its properties.
    cloud
        .publish(
            &format!("devices/{LEAF}/messages/devicebound/%24.mid=c2d-1&valve=shut"),
            "close it",
        )
        .await;
    let mut inputs = hub.open_inputs(&leaf.key());
    let delivery = tokio::time::timeout(WAIT, inputs.next())
        .await
        .expect("a cloud-to-device message")
        .expect("the leaf's stream");
    assert_eq!(delivery.message.body, b"close it");
    assert!(
        delivery
            .message
            .application_properties
            .contains(&("valve".to_owned(), "shut".to_owned()))
    );
    inputs.ack(delivery.id);

    // A desired patch and a method call reach the leaf's connection.
    let mut patches = hub.desired_patches(&leaf.key());
    cloud
        .publish(
            &format!("$iothub/{LEAF}/twin/PATCH/properties/desired/?$version=3"),
            json!({"interval": 10, "$version": 3}).to_string(),
        )
        .await;
    let patch = tokio::time::timeout(WAIT, patches.recv())
        .await
        .expect("a patch")
        .expect("open");
    assert_eq!(patch.patch["interval"], json!(10));
    let mut calls = hub.methods().attach(&leaf.key());
    cloud
        .publish(&format!("$iothub/{LEAF}/methods/POST/open/?$rid=5"), "{}")
        .await;
    let call = tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("a call")
        .expect("open");
    call.respond
        .send(edge_hub::MethodResponse {
            status: 201,
            payload: b"{}".to_vec(),
        })
        .expect("respond");
    let answer = cloud
        .next_on(&format!("$iothub/{LEAF}/methods/res/"), WAIT)
        .await
        .expect("an answer");
    assert_eq!(
        answer.topic,
        format!("$iothub/{LEAF}/methods/res/201/?$rid=5")
    );

    // The leaf's reported properties go up under its own identity.
    hub.patch_reported(&leaf.key(), json!({"battery": 80}))
        .await
        .expect("reported");
    assert_eq!(
        next_json(
            &mut cloud,
            &format!("$iothub/{LEAF}/twin/PATCH/properties/reported/")
        )
        .await,
        json!({"battery": 80}),
        "reported properties"
    );
}

/// Where Debian's softhsm2 package installs the module.
const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN_LABEL: &str = "edge-hub-upstream";
const TOKEN_PIN: &str = "246810";
const SOFTHSM_DIR: &str = "EDGE_HUB_UPSTREAM_SOFTHSM_DIR";

/// SoftHSM reads `SOFTHSM2_CONF` when it is loaded, which a running test
/// binary cannot change safely: this test makes a token directory and runs
/// the scenario below in a child process with the variable set.
#[test]
fn an_x509_key_on_a_pkcs11_token_authenticates() {
    assert!(
        Path::new(SOFTHSM).exists(),
        "SoftHSM2 module {SOFTHSM} is missing: apt-get install -y softhsm2 opensc (CI installs it)"
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).expect("token directory");
    let config = dir.path().join("softhsm2.conf");
    std::fs::write(
        &config,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("configuration");
    let run = |command: &mut std::process::Command| {
        let output = command
            .env("SOFTHSM2_CONF", &config)
            .output()
            .expect("the tool runs");
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(std::process::Command::new("softhsm2-util").args([
        "--init-token",
        "--free",
        "--label",
        TOKEN_LABEL,
        "--pin",
        TOKEN_PIN,
        "--so-pin",
        "13579",
    ]));
    // The device key is made on the token, as a factory would; only its
    // public half ever leaves it.
    run(std::process::Command::new("pkcs11-tool").args([
        "--module",
        SOFTHSM,
        "--token-label",
        TOKEN_LABEL,
        "--login",
        "--pin",
        TOKEN_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--label",
        "device",
    ]));
    run(std::process::Command::new("pkcs11-tool")
        .args(["--module", SOFTHSM, "--token-label", TOKEN_LABEL])
        .args([
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "device",
            "-o",
        ])
        .arg(dir.path().join("device.spki")));
    write_secret(&dir.path().join("pin"), TOKEN_PIN);
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "pkcs11_scenario", "--ignored", "--nocapture"])
        .env("SOFTHSM2_CONF", &config)
        .env(SOFTHSM_DIR, dir.path())
        .output()
        .expect("run the scenario");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the scenario failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by an_x509_key_on_a_pkcs11_token_authenticates with SOFTHSM2_CONF set"]
async fn pkcs11_scenario() {
    let dir = PathBuf::from(std::env::var_os(SOFTHSM_DIR).expect("run by the outer test"));
    let authority = Arc::new(Authority::new("cloud CA"));
    // A P-256 SubjectPublicKeyInfo ends with the uncompressed point.
    let spki = std::fs::read(dir.join("device.spki")).expect("the public key");
    let point = &spki[spki.len() - 65..];
    std::fs::write(
        dir.join("device.pem"),
        authority.client_for_p256_point(DEVICE, point),
    )
    .expect("certificate");
    let broker = Mosquitto::start(
        &dir.join("broker"),
        authority,
        DeviceAuth::ClientCertificates,
    );
    let mut cloud = broker.cloud_client().await;
    let hub = open_hub(&dir).await;
    let mut config = UpstreamConfig::new(
        test_mosquitto::HOST,
        broker.device_port(),
        broker.ca_file(),
        DEVICE,
        UpstreamAuth::X509 {
            certificate_file: dir.join("device.pem"),
            key: ClientKey::Pkcs11 {
                module: PathBuf::from(SOFTHSM),
                token: TOKEN_LABEL.to_owned(),
                pin_file: dir.join("pin"),
                key_label: "device".to_owned(),
            },
        },
    );
    config.backoff_initial = Duration::from_millis(50);
    let upstream = Upstream::start(hub.clone(), config.clone());
    publish(&hub, 0..20).await;
    assert_eq!(collect(&mut cloud, 20).await, (0..20).collect::<Vec<_>>());
    drop(upstream);

    // A label the token does not hold is a credentials failure that says
    // how to make the key.
    if let UpstreamAuth::X509 {
        key: ClientKey::Pkcs11 { key_label, .. },
        ..
    } = &mut config.auth
    {
        *key_label = "missing".to_owned();
    }
    let upstream = Upstream::start(hub.clone(), config);
    wait_until("the failure", || upstream.status().last_failure.is_some()).await;
    let failure = upstream.status().last_failure.expect("a failure");
    assert_eq!(failure.kind, FailureKind::Credentials, "{failure:?}");
    assert!(
        failure.message.contains("pkcs11-tool --keypairgen"),
        "{failure:?}"
    );
}
