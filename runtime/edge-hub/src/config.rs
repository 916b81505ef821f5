//! What the hub needs to know about the device it runs on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::leaf::LeafDevice;
use serde::Deserialize;

/// The largest message a module may send, as on IoT Hub.
pub const MAXIMUM_MESSAGE_BYTES: usize = 256 * 1024;

/// The hub's settings; edged fills them from `device.toml`'s `[hub]` table.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The device id modules see (`IOTEDGE_DEVICEID`).
    pub device_id: String,
    /// The IoT Hub host name in SAS resources and user names
    /// (`IOTEDGE_IOTHUBHOSTNAME`).
    pub iothub_hostname: String,
    /// The name modules reach the hub by (`IOTEDGE_GATEWAYHOSTNAME`), the
    /// server certificate's subject alternative name.
    pub gateway_hostname: String,
    /// The MQTT/TLS listener (`0.0.0.0:8883`).
    pub mqtt_listen: SocketAddr,
    /// The HTTPS listener for module-to-module direct methods (`0.0.0.0:443`).
    pub https_listen: SocketAddr,
    /// The Prometheus metrics listener (`127.0.0.1:9600`); `None` turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// The hub's directory: store, keys, certificates, workload sockets.
    pub dir: PathBuf,
    /// The store's size limit in bytes.
    pub store_limit_bytes: u64,
    /// What the store does when a message would take it past its limit.
    pub when_full: WhenFull,
    /// How long undelivered messages are kept when neither the route nor the
    /// deployment says (`store_and_forward_ttl`).
    pub default_time_to_live: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
    /// The leaf devices that may connect through the hub.
    pub leaf_devices: Vec<LeafDevice>,
}

/// What the store does when a new message does not fit under its limit
/// (`[hub] when_full` in `device.toml`); see `runtime/README.md`, "Offline:
/// quotas and the drop policy".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenFull {
    /// Evict queued messages to make room, the least urgent priority first
    /// and the oldest first within it, across every endpoint; a message is
    /// never evicted for a less urgent one, which is refused instead.
    #[default]
    DropOldest,
    /// Refuse the new message: QoS 1 publishes are not acknowledged (the
    /// module sends them again), QoS 0 ones are dropped.
    RefuseNew,
}
