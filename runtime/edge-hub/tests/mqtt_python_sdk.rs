//! The unmodified Python SDK (`azure-iot-device`) against the MQTT front
//! end: telemetry through a route to another module's input, twin GET and
//! reported patch, a direct method.
//!
//! The SDK always dials port 8883, so this runs in a private network
//! namespace, with the SDK's Python given by `EDGE_HUB_SDK_PYTHON`:
//!
//! ```text
//! unshare -rn sh -c 'ip link set lo up &&
//!   EDGE_HUB_SDK_PYTHON=/path/to/venv/bin/python3 \
//!   cargo test -p edge-hub --test mqtt_python_sdk -- --ignored'
//! ```
//!
//! The modules authenticate with connection strings holding their keys,
//! so the SDK signs its SAS tokens itself exactly as it does with the
//! workload API's signature; edged's tests run the same SDK through the
//! workload API.

mod mqtt_common;

use std::time::Duration;

use base64::Engine as _;
use mqtt_common::*;

const SCRIPT: &str = r#"
import json, sys, threading, time
from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

ca = open(sys.argv[1]).read()
def client(module):
    key = open(sys.argv[2] + "/" + module + ".b64").read().strip()
    return IoTHubModuleClient.create_from_connection_string(
        "HostName=hub.example;DeviceId=device1;ModuleId=%s;SharedAccessKey=%s;GatewayHostName=localhost" % (module, key),
        server_verification_cert=ca)

sensor, filter = client("sensor"), client("filter")
received = threading.Event()
messages = []
def on_message(message):
    messages.append(message)
    received.set()
def on_method(request):
    filter.send_method_response(MethodResponse.create_from_method_request(request, 200, {"echo": request.payload}))
filter.on_message_received = on_message
filter.on_method_request_received = on_method
filter.connect()
sensor.connect()
time.sleep(1)

message = Message(json.dumps({"temperature": 30}))
message.content_type = "application/json"
message.content_encoding = "utf-8"
message.message_id = "m-1"
message.custom_properties["alert"] = "hi there & more"
sensor.send_message_to_output(message, "out")
assert received.wait(10), "no input message"
got = messages[0]
print("INPUT", json.dumps({"input": got.input_name, "properties": got.custom_properties,
    "message_id": got.message_id, "content_type": got.content_type, "data": got.data.decode()}))

twin = filter.get_twin()
print("TWIN", json.dumps(twin))
filter.patch_twin_reported_properties({"state": "running"})
print("PATCHED", json.dumps(filter.get_twin()["reported"]))
print("READY", flush=True)
sys.stdin.readline()
sensor.shutdown()
filter.shutdown()
"#;

#[tokio::test]
#[ignore = "needs the Python SDK (EDGE_HUB_SDK_PYTHON) and port 8883: run in a private network namespace"]
async fn the_python_sdk_sends_receives_and_uses_twins_and_methods() {
    let python = std::env::var("EDGE_HUB_SDK_PYTHON").expect("EDGE_HUB_SDK_PYTHON");
    let hub = TestHub::start_with(|dir| {
        let mut config = config(dir);
        config.mqtt_listen = "127.0.0.1:8883".parse().expect("address");
        config
    })
    .await;
    let work = hub.dir.path().join("sdk");
    std::fs::create_dir_all(&work).expect("work dir");
    for module in ["sensor", "filter"] {
        let key = std::fs::read(hub.hub.config().dir.join(format!("keys/{module}.key")))
            .expect("module key");
        std::fs::write(
            work.join(format!("{module}.b64")),
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .expect("key file");
    }
    std::fs::write(work.join("ca.pem"), &hub.certificates.ca_pem).expect("CA file");
    std::fs::write(work.join("probe.py"), SCRIPT).expect("script");
    let mut child = std::process::Command::new(python)
        .arg(work.join("probe.py"))
        .arg(work.join("ca.pem"))
        .arg(&work)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let stdout = child.stdout.take().expect("stdout");
    // Read on a blocking thread, so that the hub serves the SDK meanwhile.
    let reading = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.expect("read");
            if line.starts_with("READY") {
                return (lines, true);
            }
            lines.push(line);
        }
        (lines, false)
    });
    let (lines, ready) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the SDK script goes on")
        .expect("reader");
    if !ready {
        let _ = child.kill();
        panic!("the SDK script ended early: {lines:?}");
    }
    let find = |prefix: &str| -> serde_json::Value {
        let line = lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {lines:?}"));
        serde_json::from_str(line.trim()).expect("JSON")
    };
    let input = find("INPUT ");
    assert_eq!(input["input"], "in1");
    assert_eq!(input["properties"]["alert"], "hi there & more");
    assert_eq!(input["message_id"], "m-1");
    assert_eq!(input["content_type"], "application/json");
    assert_eq!(input["data"], r#"{"temperature": 30}"#);
    let twin = find("TWIN ");
    assert_eq!(twin["desired"]["threshold"], 20);
    let reported = find("PATCHED ");
    assert_eq!(reported["state"], "running");

    let response = hub
        .hub
        .methods()
        .invoke(
            "filter",
            "echo",
            br#"{"n":1}"#.to_vec(),
            Duration::from_secs(10),
        )
        .await
        .expect("the method is answered");
    assert_eq!(response.status, 200);
    let payload: serde_json::Value =
        serde_json::from_slice(&response.payload).expect("JSON payload");
    assert_eq!(payload["echo"]["n"], 1);

    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"\n").expect("write");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("waiter")
        .expect("wait");
    assert!(status.success());
}
