//! `edged run` with `[hub.upstream]` against mosquitto standing in for IoT
//! Hub: the daemon connects with the SAS token file `device.toml` names,
//! the runtime's state arrives as the device twin's reported properties,
//! and `edged status` shows the link, then the failure and its step once
//! the cloud is gone.

mod common;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Key, TestDevice};
use serde_json::Value;
use test_mosquitto::{Authority, DeviceAuth, HOST, Mosquitto};

const DEVICE: &str = "gw-up";
const TOKEN: &str =
    "SharedAccessSignature sr=localhost%2Fdevices%2Fgw-up&sig=dGVzdA%3D%3D&se=4102444800";

/// The daemon, killed however the test ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(device: &TestDevice) -> String {
    let output = device.edged("none", &["status"]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for_status(device: &TestDevice, what: &str, condition: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = status(device);
        if condition(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in edged status:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edged_run_reports_to_the_cloud_and_shows_the_link() {
    let root = tempfile::tempdir().unwrap();
    let username = format!(
        "{HOST}/{DEVICE}/?api-version={}&DeviceClientType=edged%2F{}",
        edge_hub::upstream::API_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let mut broker = Mosquitto::start(
        &root.path().join("broker"),
        Arc::new(Authority::new("cloud CA")),
        DeviceAuth::Passwords(vec![(username, TOKEN.to_owned())]),
    );
    let mut cloud = broker.cloud_client().await;
    let token_file = root.path().join("device.sas");
    std::fs::write(&token_file, TOKEN).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(
        &[&key],
        &format!(
            "[health]\nwindow = \"0s\"\n[hub]\ndevice_id = \"{DEVICE}\"\ngateway_hostname = \"localhost\"\n\
             mqtt_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\n\
             store_limit = \"64MiB\"\n[hub.upstream]\nhost = \"{HOST}\"\nport = {}\nca_file = \"{}\"\n\
             sas_token_file = \"{}\"\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
            broker.device_port(),
            broker.ca_file().display(),
            token_file.display()
        ),
    );
    let v1 = device.write_version(&key, 1);
    assert!(
        device
            .edged("none", &["apply", v1.to_str().unwrap()])
            .status
            .success()
    );
    let _daemon = Daemon(
        device
            .command("none", &["run", "--interval", "200ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The runtime's state is the device twin's reported properties.
    let reported = cloud
        .next_on(
            "$iothub/twin/PATCH/properties/reported/",
            Duration::from_secs(30),
        )
        .await
        .expect("the runtime's state reaches the cloud");
    let reported: Value = serde_json::from_slice(&reported.payload).unwrap();
    assert_eq!(reported["deployment"]["name"], "plant", "{reported}");
    assert_eq!(reported["deployment"]["version"], 1, "{reported}");
    assert!(
        reported["deployment"]["manifestDigest"].is_string(),
        "{reported}"
    );
    assert!(reported["modules"].is_object(), "{reported}");

    let endpoint = format!("upstream {HOST}:{}:", broker.device_port());
    let connected = wait_for_status(&device, "connected link", |text| {
        text.contains(&format!("{endpoint} connected since"))
    });
    assert!(connected.contains("in flight 0/1024"), "{connected}");
    let json = device.edged("none", &["status", "--json"]);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["hub"]["upstream"]["state"], "connected", "{json}");
    assert_eq!(json["hub"]["upstream"]["connections"], 1, "{json}");

    // The cloud goes away: the status says so, with the step that failed.
    drop(cloud);
    broker.stop();
    let failed = wait_for_status(&device, "failed link", |text| {
        text.contains(&format!("{endpoint} not connected")) && text.contains("  last error ")
    });
    assert!(
        failed.contains("(lost)") || failed.contains("(tcp)"),
        "{failed}"
    );
    // And it comes back by itself.
    broker.start_again();
    wait_for_status(&device, "reconnected link", |text| {
        text.contains(&format!("{endpoint} connected since"))
    });
}
