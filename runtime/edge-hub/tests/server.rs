//! The whole hub server as edged runs it, on port-0 listeners in a
//! temporary directory: deployment and workload sockets, a SAS token signed
//! through the workload API that the gateway accepts, direct methods
//! through the real method router, the metrics text, and a restart that
//! keeps the CA and the module identities.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edge_hub::certs::CaKeySource;
use edge_hub::server::HubServer;
use edge_hub::workload::PeerPolicy;
use edge_hub::{FileKeys, HubConfig, HubDeployment, MethodResponse};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

mod common;
#[path = "mqtt_common/mod.rs"]
mod mqtt_common;
use common::{http_get, https_post, tls_connector, unix_call};
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};

const DEVICE: &str = "dev1";
const IOTHUB: &str = "myhub.azure-devices.net";

fn config(dir: &std::path::Path) -> HubConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    HubConfig {
        device_id: DEVICE.to_owned(),
        iothub_hostname: IOTHUB.to_owned(),
        gateway_hostname: "localhost".to_owned(),
        mqtt_listen: any,
        https_listen: any,
        metrics_listen: Some(any),
        dir: dir.join("hub"),
        store_limit_bytes: 64 * 1024 * 1024,
        when_full: edge_hub::WhenFull::DropOldest,
        default_time_to_live: Duration::from_secs(3600),
        max_connections: 100,
        leaf_devices: Vec::new(),
    }
}

fn start(dir: &std::path::Path) -> HubServer {
    let keys = Arc::new(FileKeys::open(&dir.join("hub/keys")).expect("keys"));
    HubServer::start(config(dir), keys, CaKeySource::File, PeerPolicy::SameUser)
        .expect("the hub starts")
}

fn deployment(modules: &[&str]) -> HubDeployment {
    HubDeployment {
        routes: vec![edge_route::RouteTableEntry {
            name: "toFilter".to_owned(),
            route: "FROM /messages/modules/sensor/outputs/* INTO BrokeredEndpoint(\"/modules/filter/inputs/in\")".to_owned(),
            priority: 0,
            time_to_live_secs: 0,
        }],
        modules: modules.iter().map(|module| (*module).to_owned()).collect(),
        desired: BTreeMap::new(),
        default_time_to_live: None,
    }
}

/// A SAS token for `module`, signed through its workload socket as the SDK
/// does it.
fn sas_token(server: &HubServer, module: &str, generation: &str) -> String {
    let resource = format!("{IOTHUB}/devices/{DEVICE}/modules/{module}");
    let encoded = utf8_percent_encode(&resource, NON_ALPHANUMERIC).to_string();
    let expiry = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 3600;
    let signed = format!("{encoded}\n{expiry}");
    let body = serde_json::json!({
        "keyId": "primary",
        "algo": "HMACSHA256",
        "data": BASE64.encode(signed.as_bytes()),
    });
    let socket = server.workload_socket_dir(module).join("workload.sock");
    let (status, reply) = server.runtime().block_on(unix_call(
        &socket,
        "POST",
        &format!("/modules/{module}/genid/{generation}/sign?api-version=2020-07-07"),
        &body.to_string(),
    ));
    assert_eq!(status, 200, "{reply}");
    let signature = reply["digest"].as_str().expect("digest");
    format!(
        "SharedAccessSignature sr={encoded}&sig={}&se={expiry}",
        utf8_percent_encode(signature, NON_ALPHANUMERIC)
    )
}

/// Makes `module` answer direct methods the way the MQTT layer does for a
/// connected module: attached to the router, it answers each request with
/// status 201 and `{"echo": payload}`.
fn answer_methods(server: &HubServer, module: &str) {
    let mut requests = server.hub().methods().attach(module);
    server.runtime().spawn(async move {
        while let Some(request) = requests.recv().await {
            let mut payload = br#"{"echo":"#.to_vec();
            payload.extend_from_slice(&request.payload);
            payload.push(b'}');
            let _ = request.respond.send(MethodResponse {
                status: 201,
                payload,
            });
        }
    });
}

#[test]
fn deployments_identities_methods_and_metrics_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = start(dir.path());
    server
        .deploy(deployment(&["sensor", "filter"]))
        .expect("deploy");
    let environment: BTreeMap<String, String> = server
        .module_environment("sensor", "unix:///var/run/iotedge/workload.sock")
        .expect("deployed")
        .into_iter()
        .collect();
    assert_eq!(environment["IOTEDGE_MODULEID"], "sensor");
    assert_eq!(environment["IOTEDGE_DEVICEID"], DEVICE);
    assert_eq!(environment["IOTEDGE_IOTHUBHOSTNAME"], IOTHUB);
    assert_eq!(environment["IOTEDGE_GATEWAYHOSTNAME"], "localhost");
    assert_eq!(environment["IOTEDGE_AUTHSCHEME"], "sasToken");
    assert_eq!(environment["IOTEDGE_APIVERSION"], "2020-07-07");
    assert_eq!(
        environment["IOTEDGE_WORKLOADURI"],
        "unix:///var/run/iotedge/workload.sock"
    );
    let generation = environment["IOTEDGE_MODULEGENERATIONID"].clone();
    assert_eq!(generation.len(), 32, "{generation}");
    assert!(server.module_environment("absent", "unix:///x").is_none());
    assert_eq!(
        server.workload_socket_dir("sensor"),
        dir.path().join("hub/workload/sensor")
    );

    answer_methods(&server, "filter");

    let answer = server
        .invoke_method(
            "filter",
            "ping",
            b"1".to_vec(),
            edge_hub::CallTimeouts::answer_within(Duration::from_secs(5)),
        )
        .expect("edged calls the filter");
    assert_eq!(answer.status, 201);

    let metrics = server.addresses().metrics.expect("metrics listen");
    let scrape = || {
        let (status, text) = server.runtime().block_on(http_get(metrics, "/metrics"));
        assert_eq!(status, 200);
        edge_hub::metrics::check_exposition(&text).expect("exposition format");
        text
    };
    let sample = |text: &str, prefix: &str, labels: &str| -> Option<u64> {
        text.lines()
            .filter(|line| line.starts_with(prefix) && line.contains(labels))
            .find_map(|line| line.rsplit(' ').next()?.parse().ok())
    };
    let before = scrape();
    assert_eq!(
        sample(
            &before,
            "edgehub_messages_received_total{",
            "id=\"dev1/sensor\""
        ),
        Some(0)
    );
    let message = edge_hub::HubMessage {
        body: b"{\"t\":21}".to_vec(),
        ..edge_hub::HubMessage::default()
    };
    server
        .runtime()
        .block_on(
            server
                .hub()
                .publish("sensor", Some("out"), message, edge_hub::Qos::AtLeastOnce),
        )
        .expect("publish");
    let text = scrape();
    assert_eq!(
        sample(
            &text,
            "edgehub_messages_received_total{",
            "id=\"dev1/sensor\""
        ),
        Some(1),
        "{text}"
    );
    assert_eq!(
        sample(&text, "edgehub_queue_length{", "endpoint=\"filter/in\""),
        Some(1),
        "{text}"
    );
    assert_eq!(
        sample(&text, "edgehub_connected_clients{", ""),
        Some(0),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("edgehub_direct_methods_total{")
                && line.contains("from=\"edged\",to=\"dev1/filter\"")
                && line.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.contains("edgehub_messages_received_total{iothub=\"myhub.azure-devices.net\",edge_device=\"dev1\""),
        "{text}"
    );
    let (status, _) = server.runtime().block_on(http_get(metrics, "/other"));
    assert_eq!(status, 404);

    let twin = server.twin("sensor").expect("twin");
    assert!(twin.desired.is_object());

    // A module that leaves the deployment loses its socket.
    server.deploy(deployment(&["sensor"])).expect("deploy");
    assert!(!server.workload_socket_dir("filter").exists());
    assert!(
        server
            .workload_socket_dir("sensor")
            .join("workload.sock")
            .exists()
    );
    let bundle = server.trust_bundle_pem();
    server.shutdown();

    // The directory of a module removed while the hub was down goes.
    std::fs::create_dir_all(dir.path().join("hub/workload/ghost")).expect("stale directory");
    let server = start(dir.path());
    assert!(!dir.path().join("hub/workload/ghost").exists());
    assert_eq!(server.trust_bundle_pem(), bundle, "the CA is kept");
    let environment: BTreeMap<String, String> = server
        .module_environment("sensor", "unix:///x")
        .expect("still deployed")
        .into_iter()
        .collect();
    assert_eq!(environment["IOTEDGE_MODULEGENERATIONID"], generation);
    // The socket is served again right after the start, before any deploy.
    sas_token(&server, "sensor", &generation);
    server.shutdown();
}

#[test]
fn a_module_calls_another_connected_over_mqtt_through_the_gateway() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = start(dir.path());
    server
        .deploy(deployment(&["sensor", "filter"]))
        .expect("deploy");
    let generation = |module: &str| {
        server
            .hub()
            .identity(module)
            .expect("deployed")
            .generation_id
    };
    let token = sas_token(&server, "sensor", &generation("sensor"));
    let ca = rustls_pemfile::certs(&mut server.trust_bundle_pem().as_bytes())
        .next()
        .expect("a CA certificate")
        .expect("PEM");

    // The filter connects over MQTT/TLS with a token its workload socket
    // signed, checking the hub's certificate against the trust bundle, and
    // listens for methods as the SDK does.
    let filter_token = sas_token(&server, "filter", &generation("filter"));
    let reopened = edge_hub::certs::Certificates::open(
        &dir.path().join("hub"),
        "localhost",
        &CaKeySource::File,
    )
    .expect("the hub's certificates");
    let tls = mqtt_common::Certificates {
        ca: ca.clone(),
        ca_pem: server.trust_bundle_pem(),
        server: reopened.server_config().expect("TLS"),
    };
    let mqtt = server.addresses().mqtt;
    let mut filter = server.runtime().block_on(async {
        let mut client = mqtt_common::TestClient::open(mqtt, &tls).await;
        let mut connect = Connect::new(format!("{DEVICE}/filter"));
        connect.keep_alive = 60;
        connect.set_login(
            format!("{IOTHUB}/{DEVICE}/filter/?api-version=2019-10-01"),
            filter_token,
        );
        let connack = client.connect(connect).await;
        assert_eq!(connack.code, ConnectReturnCode::Success);
        client.subscribe(&["$iothub/methods/POST/#"]).await;
        client
    });
    let responder = server.runtime().spawn(async move {
        let request = filter.next_publish().await;
        filter.ack(&request).await;
        let topic = request.topic.clone();
        let rid = topic
            .strip_prefix("$iothub/methods/POST/reset/?$rid=")
            .expect("a reset request")
            .to_owned();
        let mut payload = br#"{"echo":"#.to_vec();
        payload.extend_from_slice(&request.payload);
        payload.push(b'}');
        filter
            .publish_no_wait(&format!("$iothub/methods/res/201/?$rid={rid}"), &payload)
            .await;
        filter
    });
    let connector = tls_connector(&ca);
    let https = server.addresses().https;
    let call = r#"{"methodName":"reset","payload":{"hard":true},"responseTimeoutInSeconds":5}"#;
    let caller = [
        ("Authorization", token.as_str()),
        ("x-ms-edge-moduleId", "dev1/sensor"),
    ];
    let path = "twins/dev1/modules/filter/methods?api-version=2020-09-30";
    let (status, reply) = server
        .runtime()
        .block_on(https_post(&connector, https, path, &caller, call));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply,
        serde_json::json!({"status": 201, "payload": {"echo": {"hard": true}}})
    );
    let filter = server
        .runtime()
        .block_on(responder)
        .expect("the filter answered");
    // The sensor's token does not make anyone else the sensor.
    let impostor = [
        ("Authorization", token.as_str()),
        ("x-ms-edge-moduleId", "dev1/filter"),
    ];
    let (status, _) = server
        .runtime()
        .block_on(https_post(&connector, https, path, &impostor, call));
    assert_eq!(status, 401);
    let (status, reply) = server.runtime().block_on(https_post(
        &connector,
        https,
        "twins/dev1/modules/sensor/methods?api-version=1",
        &caller,
        call,
    ));
    assert_eq!(status, 404, "the sensor does not listen: {reply}");
    assert_eq!(reply["errorCode"], 404103);

    let metrics = server.addresses().metrics.expect("metrics listen");
    let (_, text) = server.runtime().block_on(http_get(metrics, "/metrics"));
    assert!(
        text.lines()
            .any(|line| line.starts_with("edgehub_direct_methods_total{")
                && line.contains("from=\"dev1/sensor\",to=\"dev1/filter\"")
                && line.ends_with(" 1")),
        "{text}"
    );
    drop(filter);
    server.shutdown();
}
