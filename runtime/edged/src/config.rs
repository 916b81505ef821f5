//! The device configuration (`/etc/edged/device.toml`): what this device is,
//! whom it trusts, and the timing of health checks and restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_bundle::Architecture;
use serde::Deserialize;

use crate::duration::{self, Bounds};
use crate::error::{Error, Result};

/// The default location of the device configuration.
pub const DEFAULT_PATH: &str = "/etc/edged/device.toml";

/// The device configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device `compatible` string bundles must name exactly.
    pub compatible: String,
    /// The CPU architecture bundles must target.
    pub architecture: Architecture,
    /// Names this edged among others sharing one Docker engine; containers
    /// carry it so one edged never touches another's.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Trust anchors and threshold.
    #[serde(default)]
    pub trust: TrustConfig,
    /// Commit criteria.
    #[serde(default)]
    pub health: HealthConfig,
    /// Restart back-off.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Bundle size limits.
    #[serde(default)]
    pub limits: Limits,
    /// The OS slots, on devices whose bundles may carry OS updates.
    #[serde(default)]
    pub os: Option<crate::os_update::OsConfig>,
    /// The edge hub modules connect to.
    #[serde(default)]
    pub hub: HubSettings,
}

fn default_instance() -> String {
    "default".to_owned()
}

/// Which keys a bundle must be signed by.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// How many distinct trusted keys must have signed.
    #[serde(default = "one")]
    pub threshold: usize,
    /// Development trust store: a directory of PEM public keys (`*.pub`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The security element holding the trust anchors as public key objects.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Config>,
}

fn one() -> usize {
    1
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            threshold: 1,
            dir: None,
            pkcs11: None,
        }
    }
}

/// A PKCS#11 token that stores the trust anchors.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token label.
    pub token: String,
    /// A file holding the user PIN; needed only to add anchors, since
    /// public key objects are readable without logging in.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
}

/// When a new deployment counts as healthy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How long every module must run without restarting (`window =
    /// "30s"`); zero commits as soon as the modules run.
    #[serde(default = "thirty_seconds", deserialize_with = "duration::deserialize")]
    pub window: Duration,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            window: thirty_seconds(),
        }
    }
}

impl HealthConfig {
    /// The health window.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// The range of `[health] window`.
const WINDOW: Bounds = Bounds {
    name: "health.window",
    min: Duration::ZERO,
    max: Duration::from_secs(24 * 3600),
};
/// The range of `[restart] backoff_base`: never zero, which would restart a
/// crashing module in a tight loop.
const BACKOFF_BASE: Bounds = Bounds {
    name: "restart.backoff_base",
    min: Duration::from_millis(10),
    max: Duration::from_secs(3600),
};

/// Exponential restart back-off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// The first delay (`backoff_base = "10s"`).
    #[serde(default = "ten_seconds", deserialize_with = "duration::deserialize")]
    pub backoff_base: Duration,
    /// The longest delay (`backoff_max = "5m"`).
    #[serde(default = "five_minutes", deserialize_with = "duration::deserialize")]
    pub backoff_max: Duration,
}

fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            backoff_base: ten_seconds(),
            backoff_max: five_minutes(),
        }
    }
}

impl RestartConfig {
    /// The delay before restart number `attempt` (1-based): the base doubled
    /// per attempt, capped, and never infinite, so a module is never
    /// abandoned.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }

    /// Checks the delays against their ranges.
    fn check(&self) -> std::result::Result<(), String> {
        BACKOFF_BASE.check(self.backoff_base)?;
        Bounds {
            name: "restart.backoff_max",
            min: self.backoff_base,
            max: Duration::from_secs(24 * 3600),
        }
        .check(self.backoff_max)
        .map_err(|error| format!("{error} (and at least restart.backoff_base)"))?;
        Ok(())
    }
}

/// The `[hub]` table: the edge hub `edged run` serves to its modules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSettings {
    /// Whether `edged run` serves the hub (`enabled = false`: modules run
    /// without the IOTEDGE_* environment, as before the hub existed).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The device id modules see (`IOTEDGE_DEVICEID`); the host name when
    /// not given.
    #[serde(default)]
    pub device_id: Option<String>,
    /// The IoT Hub host name in module user names and SAS token resources
    /// (`IOTEDGE_IOTHUBHOSTNAME`); `{device_id}.local` when not given, since
    /// no IoT Hub is involved yet.
    #[serde(default)]
    pub iothub_hostname: Option<String>,
    /// The name modules reach the hub by (`IOTEDGE_GATEWAYHOSTNAME`), and
    /// the hub certificate's subject alternative name. Containers resolve
    /// it to the host through an `ExtraHosts` entry, so the default `edged`
    /// needs no DNS.
    #[serde(default = "default_gateway")]
    pub gateway_hostname: String,
    /// The MQTT/TLS listener.
    #[serde(default = "default_mqtt")]
    pub mqtt_listen: SocketAddr,
    /// The HTTPS listener for module-to-module direct methods.
    #[serde(default = "default_https")]
    pub https_listen: SocketAddr,
    /// The Prometheus metrics listener, or `"off"`.
    #[serde(default = "default_metrics")]
    pub metrics_listen: String,
    /// The store's size limit, with a unit (`"1GiB"`, `"500MB"`).
    #[serde(default = "default_store_limit")]
    pub store_limit: String,
    /// What the store does when a message would take it past `store_limit`:
    /// `"drop-oldest"` (evict the least urgent, oldest messages) or
    /// `"refuse-new"`.
    #[serde(default)]
    pub when_full: edge_hub::WhenFull,
    /// How long undelivered messages are kept when neither the route nor the
    /// deployment's `storeAndForwardConfiguration` says (`"2h"`, IoT Edge's
    /// default).
    #[serde(default = "two_hours", deserialize_with = "duration::deserialize")]
    pub store_and_forward_ttl: Duration,
    /// The most connections served at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A PKCS#11 token for the module keys and the device CA key; without
    /// it they are files in the hub directory (mode 0600).
    #[serde(default)]
    pub pkcs11: Option<HubPkcs11>,
}

/// The token holding the hub's keys. Unlike the trust anchors (public keys,
/// readable without a login), HMAC keys and the CA key are private objects:
/// the PIN is required.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubPkcs11 {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token label.
    pub token: String,
    /// A file holding the user PIN.
    pub pin_file: PathBuf,
}

fn yes() -> bool {
    true
}

fn default_gateway() -> String {
    "edged".to_owned()
}

fn default_mqtt() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}

fn default_https() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}

fn default_metrics() -> String {
    "127.0.0.1:9600".to_owned()
}

fn default_store_limit() -> String {
    "1GiB".to_owned()
}

fn two_hours() -> Duration {
    Duration::from_secs(2 * 3600)
}

fn default_max_connections() -> usize {
    10_000
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            device_id: None,
            iothub_hostname: None,
            gateway_hostname: default_gateway(),
            mqtt_listen: default_mqtt(),
            https_listen: default_https(),
            metrics_listen: default_metrics(),
            store_limit: default_store_limit(),
            when_full: edge_hub::WhenFull::default(),
            store_and_forward_ttl: two_hours(),
            max_connections: default_max_connections(),
            pkcs11: None,
        }
    }
}

/// The range of `[hub] store_and_forward_ttl`.
const STORE_TTL: Bounds = Bounds {
    name: "hub.store_and_forward_ttl",
    min: Duration::from_secs(1),
    max: Duration::from_secs(365 * 24 * 3600),
};

/// The smallest store: room for a few hundred largest messages.
const MINIMUM_STORE_BYTES: u64 = 64 << 20;

impl HubSettings {
    /// The device id: as configured, or the host name.
    pub fn device_id(&self) -> std::result::Result<String, String> {
        if let Some(id) = &self.device_id {
            return Ok(id.clone());
        }
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|error| {
            format!("hub.device_id is not set and the host name is unreadable ({error}); set it")
        })?;
        let name = name.trim();
        check_identifier("the host name (hub.device_id's default)", name)?;
        Ok(name.to_owned())
    }

    /// The IoT Hub host name: as configured, or `{device_id}.local`.
    pub fn iothub_hostname(&self, device_id: &str) -> String {
        self.iothub_hostname
            .clone()
            .unwrap_or_else(|| format!("{device_id}.local"))
    }

    /// The metrics listener, `None` when `"off"`.
    pub fn metrics_listen(&self) -> std::result::Result<Option<SocketAddr>, String> {
        if self.metrics_listen == "off" {
            return Ok(None);
        }
        self.metrics_listen.parse().map(Some).map_err(|_| {
            format!(
                "hub.metrics_listen: {:?} is neither an address with a port (\"127.0.0.1:9600\") nor \"off\"",
                self.metrics_listen
            )
        })
    }

    /// The store limit in bytes.
    pub fn store_limit_bytes(&self) -> std::result::Result<u64, String> {
        let bytes =
            parse_size(&self.store_limit).map_err(|why| format!("hub.store_limit: {why}"))?;
        if bytes < MINIMUM_STORE_BYTES {
            return Err(format!(
                "hub.store_limit must be at least 64MiB, not {:?}",
                self.store_limit
            ));
        }
        Ok(bytes)
    }

    /// Checks every value, so that a bad one is refused when the
    /// configuration is read rather than when the hub starts.
    fn check(&self) -> std::result::Result<(), String> {
        if let Some(id) = &self.device_id {
            check_identifier("hub.device_id", id)?;
        }
        if let Some(name) = &self.iothub_hostname {
            check_hostname("hub.iothub_hostname", name)?;
        }
        check_hostname("hub.gateway_hostname", &self.gateway_hostname)?;
        self.metrics_listen()?;
        self.store_limit_bytes()?;
        STORE_TTL.check(self.store_and_forward_ttl)?;
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "hub.max_connections must be between 1 and 1000000, not {}",
                self.max_connections
            ));
        }
        Ok(())
    }
}

/// A device id as IoT Hub allows it: up to 128 ASCII letters, digits and
/// `-.%_*?!(),:=@$'`; edged also refuses `/`, which would split MQTT client
/// ids and topics.
fn check_identifier(name: &str, value: &str) -> std::result::Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-.%_*?!(),:=@$'".contains(c);
    if value.is_empty() || value.len() > 128 || !value.chars().all(allowed) {
        return Err(format!(
            "{name}: {value:?} is not a device id (1 to 128 ASCII letters, digits and -.%_*?!(),:=@$')"
        ));
    }
    Ok(())
}

/// A DNS host name: dot-separated labels of letters, digits and `-`.
fn check_hostname(name: &str, value: &str) -> std::result::Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.is_empty() || value.len() > 253 || !value.split('.').all(label_ok) {
        return Err(format!("{name}: {value:?} is not a host name"));
    }
    Ok(())
}

/// Parses a size with its unit: `1GiB`, `512 MiB`, `500MB`, `4096B`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} is not a size; write a number with a unit, like \"1GiB\" or \"500MB\""
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|value| value.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size this device can hold"))
}

/// Keys of earlier versions that took seconds as numbers, with the key that
/// replaced each.
const RENAMED_KEYS: &[(&str, &str, &str)] = &[
    ("health", "window_secs", "window = \"30s\""),
    ("restart", "backoff_base_secs", "backoff_base = \"10s\""),
    ("restart", "backoff_max_secs", "backoff_max = \"5m\""),
];

/// Refuses the numeric `*_secs` keys by name, saying what to write instead:
/// a float can be infinite or not a number, a duration with a unit cannot.
fn check_renamed_keys(text: &str) -> std::result::Result<(), String> {
    let Ok(table) = text.parse::<toml::Table>() else {
        // The typed parse reports the syntax error.
        return Ok(());
    };
    for (section, old, new) in RENAMED_KEYS {
        if table
            .get(*section)
            .and_then(toml::Value::as_table)
            .is_some_and(|keys| keys.contains_key(*old))
        {
            return Err(format!(
                "[{section}] {old} is no longer read: durations carry their unit, write {new}"
            ));
        }
    }
    Ok(())
}

/// Limits that stop a hostile bundle from exhausting the device.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most payload entries a bundle may carry.
    #[serde(default = "max_entries")]
    pub max_entries: usize,
    /// Largest single payload entry, in bytes.
    #[serde(default = "max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// Largest total payload, in bytes.
    #[serde(default = "max_total_bytes")]
    pub max_total_bytes: u64,
}

fn max_entries() -> usize {
    100_000
}

fn max_entry_bytes() -> u64 {
    4 << 30
}

fn max_total_bytes() -> u64 {
    16 << 30
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: max_entries(),
            max_entry_bytes: max_entry_bytes(),
            max_total_bytes: max_total_bytes(),
        }
    }
}

impl DeviceConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            Error::Config(format!(
                "cannot read the device configuration {}: {error} (pass --device-config FILE)",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|reason| Error::Config(format!("{}: {reason}", path.display())))
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        check_renamed_keys(text)?;
        let config: Self = toml::from_str(text).map_err(|error| error.to_string())?;
        WINDOW.check(config.health.window)?;
        config.restart.check()?;
        if config.trust.threshold == 0 {
            return Err("trust.threshold must be at least 1".to_owned());
        }
        if config.compatible.is_empty() {
            return Err("compatible must not be empty".to_owned());
        }
        config.hub.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_but_never_stops() {
        let restart = RestartConfig::default();
        assert_eq!(restart.delay(1), Duration::from_secs(10));
        assert_eq!(restart.delay(2), Duration::from_secs(20));
        assert_eq!(restart.delay(5), Duration::from_secs(160));
        assert_eq!(restart.delay(6), Duration::from_secs(300));
        assert_eq!(restart.delay(10_000), Duration::from_secs(300));
    }

    fn with(section: &str) -> std::result::Result<DeviceConfig, String> {
        DeviceConfig::parse(&format!(
            "compatible = \"a\"\narchitecture = \"arm64\"\n{section}\n"
        ))
    }

    #[test]
    fn durations_carry_units_and_stay_in_range() {
        let config = with("[health]\nwindow = \"1m30s\"\n[restart]\nbackoff_base = \"500ms\"\nbackoff_max = \"2m\"").unwrap();
        assert_eq!(config.health.window(), Duration::from_secs(90));
        assert_eq!(config.restart.delay(1), Duration::from_millis(500));
        assert_eq!(config.restart.delay(100), Duration::from_secs(120));
        assert_eq!(
            with("[health]\nwindow = \"0s\"").unwrap().health.window(),
            Duration::ZERO
        );
        for (section, expected) in [
            ("[health]\nwindow = \"inf\"", "is not a duration"),
            ("[health]\nwindow = \"NaN\"", "is not a duration"),
            ("[health]\nwindow = \"-1s\"", "is not a duration"),
            ("[health]\nwindow = 30", "a duration with a unit"),
            ("[health]\nwindow = \"30\"", "is not a duration"),
            (
                "[health]\nwindow = \"100000000000000000000h\"",
                "is not a duration",
            ),
            (
                "[health]\nwindow = \"400d\"",
                "health.window must be between 0s and 1day",
            ),
            (
                "[restart]\nbackoff_base = \"0s\"",
                "restart.backoff_base must be between 10ms and 1h",
            ),
            ("[restart]\nbackoff_base = \"inf\"", "is not a duration"),
            (
                "[restart]\nbackoff_base = \"1m\"\nbackoff_max = \"10s\"",
                "at least restart.backoff_base",
            ),
            (
                "[health]\nwindow_secs = inf",
                "[health] window_secs is no longer read: durations carry their unit, write window = \"30s\"",
            ),
            (
                "[restart]\nbackoff_base_secs = 10",
                "write backoff_base = \"10s\"",
            ),
            (
                "[restart]\nbackoff_max_secs = -1",
                "write backoff_max = \"5m\"",
            ),
        ] {
            let error = with(section).unwrap_err();
            assert!(error.contains(expected), "{section}: {error}");
        }
    }

    #[test]
    fn configuration_defaults_and_errors() {
        let config = DeviceConfig::parse("compatible = \"a\"\narchitecture = \"arm64\"\n").unwrap();
        assert_eq!(config.trust.threshold, 1);
        assert_eq!(config.health.window(), Duration::from_secs(30));
        let error =
            DeviceConfig::parse("compatible = \"a\"\narchitecture = \"x86\"\n").unwrap_err();
        assert!(
            error.contains("architecture") || error.contains("unknown variant"),
            "{error}"
        );
        let error = DeviceConfig::parse(
            "compatible = \"a\"\narchitecture = \"amd64\"\n[trust]\nthreshold = 0\n",
        )
        .unwrap_err();
        assert!(error.contains("threshold"), "{error}");
    }

    #[test]
    fn hub_settings_default_and_refuse_bad_values() {
        let config = with("[hub]\ndevice_id = \"gw-1\"").unwrap();
        let hub = &config.hub;
        assert!(hub.enabled);
        assert_eq!(hub.device_id().unwrap(), "gw-1");
        assert_eq!(hub.iothub_hostname("gw-1"), "gw-1.local");
        assert_eq!(hub.gateway_hostname, "edged");
        assert_eq!(hub.mqtt_listen.port(), 8883);
        assert_eq!(hub.https_listen.port(), 443);
        assert_eq!(
            hub.metrics_listen().unwrap(),
            Some("127.0.0.1:9600".parse().unwrap())
        );
        assert_eq!(hub.store_limit_bytes().unwrap(), 1 << 30);
        assert_eq!(hub.when_full, edge_hub::WhenFull::DropOldest);
        assert_eq!(hub.store_and_forward_ttl, Duration::from_secs(7200));
        let config = with(
            "[hub]\nenabled = false\nmetrics_listen = \"off\"\nstore_limit = \"500MB\"\nwhen_full = \"refuse-new\"\nstore_and_forward_ttl = \"1d\"\nmax_connections = 10",
        )
        .unwrap();
        assert_eq!(config.hub.when_full, edge_hub::WhenFull::RefuseNew);
        assert!(!config.hub.enabled);
        assert_eq!(config.hub.metrics_listen().unwrap(), None);
        assert_eq!(config.hub.store_limit_bytes().unwrap(), 500_000_000);
        for (section, expected) in [
            (
                "[hub]\nstore_limit = \"1G\"",
                "hub.store_limit: \"1G\" is not a size",
            ),
            ("[hub]\nstore_limit = \"1MiB\"", "at least 64MiB"),
            (
                "[hub]\nstore_limit = \"99999999999TiB\"",
                "not a size this device can hold",
            ),
            ("[hub]\nstore_limit = 1024", "invalid type"),
            ("[hub]\nmetrics_listen = \"9600\"", "nor \"off\""),
            ("[hub]\nmqtt_listen = \"0.0.0.0\"", "mqtt_listen"),
            ("[hub]\ndevice_id = \"a/b\"", "is not a device id"),
            ("[hub]\ndevice_id = \"\"", "is not a device id"),
            ("[hub]\ngateway_hostname = \"-x\"", "is not a host name"),
            ("[hub]\niothub_hostname = \"a..b\"", "is not a host name"),
            ("[hub]\nmax_connections = 0", "between 1 and 1000000"),
            ("[hub]\nstore_and_forward_ttl = \"0s\"", "between 1s and"),
            ("[hub]\nport = 1", "unknown field `port`"),
            (
                "[hub]\nwhen_full = \"drop-newest\"",
                "unknown variant `drop-newest`, expected `drop-oldest` or `refuse-new`",
            ),
            (
                "[hub.pkcs11]\nmodule = \"/x.so\"\ntoken = \"t\"",
                "pin_file",
            ),
        ] {
            let error = with(section).unwrap_err();
            assert!(error.contains(expected), "{section}: {error}");
        }
    }
}
