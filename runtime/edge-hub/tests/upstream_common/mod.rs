//! What the upstream tests share: the device, its hub, the stand-in cloud
//! that knows the device's SAS token, and the connection to it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge_hub::leaf::{LeafCredential, LeafDevice, SymmetricKey};
use edge_hub::upstream::{UpstreamAuth, UpstreamConfig};
use edge_hub::{FileKeys, Hub, HubConfig, HubDeployment};
use edge_route::RouteTableEntry;
use test_mosquitto::{Authority, DeviceAuth, Mosquitto};

pub const DEVICE: &str = "gw-1";
/// A leaf device behind the gateway.
pub const LEAF: &str = "plc-7";

pub fn hub_config(dir: &Path) -> HubConfig {
    HubConfig {
        device_id: DEVICE.to_owned(),
        iothub_hostname: test_mosquitto::HOST.to_owned(),
        gateway_hostname: "localhost".to_owned(),
        mqtt_listen: "127.0.0.1:0".parse().expect("address"),
        https_listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: None,
        dir: dir.join("hub"),
        store_limit_bytes: 256 * 1024 * 1024,
        when_full: edge_hub::WhenFull::DropOldest,
        default_time_to_live: Duration::from_secs(7200),
        max_connections: 100,
        leaf_devices: vec![LeafDevice {
            id: LEAF.to_owned(),
            credential: LeafCredential::SymmetricKey(
                SymmetricKey::from_base64("c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg=")
                    .expect("a key"),
            ),
        }],
    }
}

/// Polls `condition` until it holds, failing the test after a minute.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A route of `priority` that keeps messages until delivered.
pub fn route(name: &str, text: &str, priority: u8) -> RouteTableEntry {
    RouteTableEntry {
        name: name.to_owned(),
        route: text.to_owned(),
        priority,
        time_to_live_secs: 0,
    }
}

/// The device's hub in `dir` (opened again if it was before), with
/// `deployment` installed.
pub async fn open_deployed(dir: &Path, deployment: HubDeployment) -> Hub {
    let config = hub_config(dir);
    let keys = FileKeys::open(&config.dir.join("keys")).expect("keys");
    let hub = Hub::open(&config, Arc::new(keys)).expect("hub");
    hub.deploy(deployment).await.expect("deploy");
    hub
}

pub fn write_secret(path: &Path, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).expect("secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.to_owned()
}

/// A SAS token as a provisioning service would hand it out: mosquitto
/// checks it as a password.
pub const TOKEN: &str =
    "SharedAccessSignature sr=localhost%2Fdevices%2Fgw-1&sig=dGVzdA%3D%3D&se=4102444800";

/// The connection to `broker` with the token (written into `dir`),
/// retrying quickly.
pub fn token_config(dir: &Path, broker: &Mosquitto) -> UpstreamConfig {
    token_config_for(dir, broker.device_port(), broker.ca_file())
}

/// [`token_config`] for a process that knows the broker only by its port
/// and CA file.
pub fn token_config_for(dir: &Path, port: u16, ca_file: PathBuf) -> UpstreamConfig {
    let token_file = write_secret(&dir.join("token"), TOKEN);
    let mut config = UpstreamConfig::new(
        test_mosquitto::HOST,
        port,
        ca_file,
        DEVICE,
        UpstreamAuth::SasToken { token_file },
    );
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_maximum = Duration::from_millis(400);
    config
}

/// A broker in `dir/broker` that admits the device with [`TOKEN`].
pub fn token_broker(dir: &Path) -> Mosquitto {
    Mosquitto::start(
        &dir.join("broker"),
        Arc::new(Authority::new("cloud CA")),
        DeviceAuth::Passwords(vec![(
            format!(
                "{}/{DEVICE}/?api-version={}&DeviceClientType=edged%2F{}",
                test_mosquitto::HOST,
                edge_hub::upstream::API_VERSION,
                env!("CARGO_PKG_VERSION")
            ),
            TOKEN.to_owned(),
        )]),
    )
}
