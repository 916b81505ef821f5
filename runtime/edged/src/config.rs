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
    /// Credentials of the registries module images are pulled from; they
    /// take precedence over the deployment's `registryCredentials` for the
    /// same address (see `runtime/README.md`, "Module images from
    /// registries").
    #[serde(default)]
    pub registry_credentials: Vec<RegistryCredentialSettings>,
    /// The registry this device polls for new bundles, if any.
    #[serde(default)]
    pub update: Option<UpdateSettings>,
}

/// The `[update]` table: where `edged run` polls for new bundles and how often. The password is
/// named by file and read at every poll, never written here or logged.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettings {
    /// `host[:port]/repository:tag`: a tag (or channel, like `stable`) the release process moves.
    pub reference: String,
    /// The time between polls.
    #[serde(
        default = "fifteen_minutes",
        deserialize_with = "duration::deserialize"
    )]
    pub interval: Duration,
    /// The most a poll is delayed past `interval`, chosen at random per poll so a fleet does not
    /// poll in step; 10% of `interval` when not given.
    #[serde(default, deserialize_with = "duration::deserialize_some")]
    pub jitter: Option<Duration>,
    /// PEM certificates the registry's certificate must chain to; the system roots when not
    /// given.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The registry user name, with `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the registry password, read at every poll.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The longest one fetch (head and payload) may take.
    #[serde(default = "ten_minutes", deserialize_with = "duration::deserialize")]
    pub timeout: Duration,
}

fn fifteen_minutes() -> Duration {
    Duration::from_secs(15 * 60)
}

fn ten_minutes() -> Duration {
    Duration::from_secs(10 * 60)
}

/// The ranges of the `[update]` durations.
const UPDATE_INTERVAL: Bounds = Bounds {
    name: "update.interval",
    min: Duration::from_secs(10),
    max: Duration::from_secs(7 * 24 * 3600),
};
const UPDATE_TIMEOUT: Bounds = Bounds {
    name: "update.timeout",
    min: Duration::from_secs(1),
    max: Duration::from_secs(24 * 3600),
};

/// A parsed `[update] reference`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateReference {
    /// `host[:port]`.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    /// The tag or channel.
    pub tag: String,
}

impl std::fmt::Display for UpdateReference {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{}/{}:{}",
            self.registry, self.repository, self.tag
        )
    }
}

impl UpdateSettings {
    /// The reference, which must name its registry host and a tag, and no digest: a device
    /// follows a tag, and a digest would pin it to one release forever.
    pub fn reference(&self) -> std::result::Result<UpdateReference, String> {
        let text = &self.reference;
        let invalid = |why: &str| {
            format!(
                "update.reference {text:?} {why}; write host[:port]/repository:tag, like \"registry.example.com/edge/plant:stable\""
            )
        };
        let parsed = image_reference::Reference::parse(text)
            .map_err(|error| invalid(&format!("is not an image reference ({error})")))?;
        if parsed.digest().is_some() {
            return Err(invalid("pins a digest; a device follows a tag"));
        }
        let tag = parsed.tag().ok_or_else(|| invalid("names no tag"))?;
        let written_host = text.split_once('/').map(|(host, _)| host);
        if written_host != Some(parsed.registry()) {
            return Err(invalid("names no registry host"));
        }
        Ok(UpdateReference {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository(),
            tag: tag.to_owned(),
        })
    }

    /// The jitter: as given, or 10% of the interval.
    pub fn jitter(&self) -> Duration {
        self.jitter.unwrap_or(self.interval / 10)
    }

    /// Checks every value, so that a bad one is refused when the configuration is read.
    fn check(&self) -> std::result::Result<(), String> {
        self.reference()?;
        UPDATE_INTERVAL.check(self.interval)?;
        Bounds {
            name: "update.jitter",
            min: Duration::ZERO,
            max: self.interval,
        }
        .check(self.jitter())
        .map_err(|error| format!("{error} (at most update.interval)"))?;
        UPDATE_TIMEOUT.check(self.timeout)?;
        for (name, path) in [
            ("update.ca", &self.ca),
            ("update.password_file", &self.password_file),
        ] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(format!(
                    "{name} = {:?} must be an absolute path (edged runs from /)",
                    path.display().to_string()
                ));
            }
        }
        if let Some(username) = &self.username
            && (username.is_empty() || username.chars().any(|c| c.is_control() || c == ':'))
        {
            return Err(format!(
                "update.username {username:?} must be non-empty, without control characters or ':'"
            ));
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => Err("update.username needs update.password_file".to_owned()),
            (None, Some(_)) => Err("update.password_file needs update.username".to_owned()),
            _ => Ok(()),
        }
    }
}

/// One `[[registry_credentials]]` entry. The password is named by file and
/// read at every pull, never kept in this file or logged: a bundle is signed
/// but not encrypted and is itself stored in registries, so the device's
/// own secrets stay on the device.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentialSettings {
    /// The registry, `host[:port]` as image references name it
    /// (`myregistry.azurecr.io`, `localhost:5000`; `docker.io` and
    /// `index.docker.io` are one).
    pub address: String,
    /// The user name.
    pub username: String,
    /// A file holding the password (or token), mode 0600 or stricter.
    pub password_file: PathBuf,
}

impl RegistryCredentialSettings {
    /// Checks the entry without reading the password file, which only a
    /// pull needs (and which an operator's `edged status` need not be able
    /// to read).
    fn check(&self, name: &str) -> std::result::Result<(), String> {
        crate::pull::registry_host(&self.address)
            .map_err(|why| format!("{name}.address: {why}"))?;
        if self.username.is_empty() || self.username.chars().any(char::is_control) {
            return Err(format!(
                "{name}.username must be a non-empty name without control characters"
            ));
        }
        if !self.password_file.is_absolute() {
            return Err(format!(
                "{name}.password_file: {} is not an absolute path; name the file by its full path",
                self.password_file.display()
            ));
        }
        Ok(())
    }
}

/// Checks every `[[registry_credentials]]` entry and that no registry is
/// named twice (which entry would win would be a guess).
fn check_registry_credentials(
    entries: &[RegistryCredentialSettings],
) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let name = format!("registry_credentials[{index}]");
        entry.check(&name)?;
        let host = crate::pull::registry_host(&entry.address).unwrap_or_default();
        if !seen.insert(host.clone()) {
            return Err(format!(
                "{name}.address: registry {host:?} is named twice; keep one entry"
            ));
        }
    }
    Ok(())
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
    /// The connection to the cloud that `$upstream` routes deliver to;
    /// without it their messages wait in the store.
    #[serde(default)]
    pub upstream: Option<UpstreamSettings>,
    /// The leaf (downstream) devices that may connect through the hub, as a
    /// transparent gateway. They are declared here, per gateway, rather than
    /// in the bundle: one bundle serves a fleet of gateways each with its
    /// own sensors, and their keys are secrets a signed (not encrypted)
    /// bundle must not carry.
    #[serde(default)]
    pub leaf_devices: Vec<LeafDeviceSettings>,
}

/// The `[hub.upstream]` table: where the cloud is and how the device
/// authenticates. Secrets are named by file and read at every connection,
/// never written here.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// The IoT Hub (or broker) host name.
    pub host: String,
    /// The MQTT/TLS port.
    #[serde(default = "default_upstream_port")]
    pub port: u16,
    /// PEM certificates the cloud's certificate must chain to.
    pub ca_file: PathBuf,
    /// The device's symmetric key (base64, IoT Hub's primary key): edged
    /// makes SAS tokens from it.
    #[serde(default)]
    pub sas_key_file: Option<PathBuf>,
    /// A SAS token made elsewhere, read again at every connection.
    #[serde(default)]
    pub sas_token_file: Option<PathBuf>,
    /// The device's X.509 certificate chain (PEM), with `key_file` or
    /// `key_label`.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The label of the certificate's EC P-256 key on the `[hub.pkcs11]`
    /// token.
    #[serde(default)]
    pub key_label: Option<String>,
    /// Telemetry messages sent and not yet acknowledged, at most.
    #[serde(default = "default_window")]
    pub window: usize,
    /// The MQTT keep-alive.
    #[serde(default = "one_minute", deserialize_with = "duration::deserialize")]
    pub keep_alive: Duration,
    /// The first wait after a failed connection attempt.
    #[serde(default = "one_second", deserialize_with = "duration::deserialize")]
    pub backoff_initial: Duration,
    /// The longest wait between attempts.
    #[serde(default = "one_minute", deserialize_with = "duration::deserialize")]
    pub backoff_max: Duration,
    /// How long a SAS token made from the key is valid.
    #[serde(default = "one_hour", deserialize_with = "duration::deserialize")]
    pub token_lifetime: Duration,
}

fn default_upstream_port() -> u16 {
    8883
}

fn default_window() -> usize {
    edge_hub::upstream::config::DEFAULT_WINDOW
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

fn one_hour() -> Duration {
    Duration::from_secs(3600)
}

/// The ranges of the upstream durations.
const KEEP_ALIVE: Bounds = Bounds {
    name: "hub.upstream.keep_alive",
    min: Duration::from_secs(5),
    max: Duration::from_secs(1800),
};
const BACKOFF_INITIAL: Bounds = Bounds {
    name: "hub.upstream.backoff_initial",
    min: Duration::from_millis(10),
    max: Duration::from_secs(3600),
};
const BACKOFF_MAX: Bounds = Bounds {
    name: "hub.upstream.backoff_max",
    ..BACKOFF_INITIAL
};
const TOKEN_LIFETIME: Bounds = Bounds {
    name: "hub.upstream.token_lifetime",
    min: Duration::from_secs(60),
    max: Duration::from_secs(365 * 24 * 3600),
};

impl UpstreamSettings {
    /// How the device authenticates: exactly one of a SAS key file, a SAS
    /// token file or a certificate with its key.
    pub fn auth(
        &self,
        pkcs11: Option<&HubPkcs11>,
    ) -> std::result::Result<edge_hub::upstream::UpstreamAuth, String> {
        use edge_hub::upstream::{ClientKey, UpstreamAuth};
        let certificate_key = match (&self.key_file, &self.key_label) {
            (Some(_), Some(_)) => {
                return Err(
                    "hub.upstream: key_file and key_label both name the certificate's key; keep one"
                        .to_owned(),
                );
            }
            (Some(path), None) => Some(ClientKey::File(path.clone())),
            (None, Some(label)) => {
                let token = pkcs11.ok_or_else(|| {
                    format!(
                        "hub.upstream.key_label = {label:?} names a key on a PKCS#11 token, but there is no [hub.pkcs11] table saying which token"
                    )
                })?;
                Some(ClientKey::Pkcs11 {
                    module: token.module.clone(),
                    token: token.token.clone(),
                    pin_file: token.pin_file.clone(),
                    key_label: label.clone(),
                })
            }
            (None, None) => None,
        };
        match (&self.sas_key_file, &self.sas_token_file, &self.certificate_file, certificate_key) {
            (Some(key_file), None, None, None) => Ok(UpstreamAuth::SasKey {
                key_file: key_file.clone(),
            }),
            (None, Some(token_file), None, None) => Ok(UpstreamAuth::SasToken {
                token_file: token_file.clone(),
            }),
            (None, None, Some(certificate_file), Some(key)) => Ok(UpstreamAuth::X509 {
                certificate_file: certificate_file.clone(),
                key,
            }),
            (None, None, Some(_), None) => Err(
                "hub.upstream.certificate_file needs its private key: key_file, or key_label on the [hub.pkcs11] token".to_owned(),
            ),
            (None, None, None, Some(_)) => Err(
                "hub.upstream: a key_file or key_label without certificate_file; add the certificate".to_owned(),
            ),
            (None, None, None, None) => Err(
                "hub.upstream says no credentials: set one of sas_key_file, sas_token_file, or certificate_file with key_file or key_label".to_owned(),
            ),
            _ => Err(
                "hub.upstream names more than one kind of credentials (sas_key_file, sas_token_file, certificate_file); keep one".to_owned(),
            ),
        }
    }

    fn check(&self, pkcs11: Option<&HubPkcs11>) -> std::result::Result<(), String> {
        check_hostname("hub.upstream.host", &self.host)?;
        self.auth(pkcs11)?;
        let maximum = edge_hub::upstream::config::MAXIMUM_WINDOW;
        if !(1..=maximum).contains(&self.window) {
            return Err(format!(
                "hub.upstream.window must be between 1 and {maximum}, not {}",
                self.window
            ));
        }
        KEEP_ALIVE.check(self.keep_alive)?;
        BACKOFF_INITIAL.check(self.backoff_initial)?;
        BACKOFF_MAX.check(self.backoff_max)?;
        if self.backoff_max < self.backoff_initial {
            return Err(
                "hub.upstream.backoff_max is shorter than backoff_initial; make it at least as long"
                    .to_owned(),
            );
        }
        TOKEN_LIFETIME.check(self.token_lifetime)?;
        Ok(())
    }
}

/// One `[[hub.leaf_devices]]` entry: a device id and exactly one credential.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafDeviceSettings {
    /// The device id, the MQTT client id it connects with.
    pub id: String,
    /// A file holding the device's symmetric key in base64, as IoT Hub
    /// issues it; mode 0600 or stricter. Read when the hub starts.
    #[serde(default)]
    pub sas_key_file: Option<PathBuf>,
    /// SHA-1 or SHA-256 thumbprints (hex) of the device's self-signed
    /// certificates.
    #[serde(default)]
    pub x509_thumbprints: Option<Vec<String>>,
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
            upstream: None,
            leaf_devices: Vec::new(),
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

    /// The IoT Hub host name: as configured, else the upstream host, else
    /// `{device_id}.local` (no IoT Hub is involved).
    pub fn iothub_hostname(&self, device_id: &str) -> String {
        self.iothub_hostname
            .clone()
            .or_else(|| self.upstream.as_ref().map(|upstream| upstream.host.clone()))
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
        if let Some(upstream) = &self.upstream {
            upstream.check(self.pkcs11.as_ref())?;
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(format!(
                "hub.max_connections must be between 1 and 1000000, not {}",
                self.max_connections
            ));
        }
        self.check_leaf_devices()?;
        Ok(())
    }

    /// Checks `[[hub.leaf_devices]]` without reading the key files, which
    /// only the hub needs (and which an operator's `edged status` need not
    /// be able to read).
    fn check_leaf_devices(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (index, leaf) in self.leaf_devices.iter().enumerate() {
            let name = format!("hub.leaf_devices[{index}]");
            check_identifier(&format!("{name}.id"), &leaf.id)?;
            if !seen.insert(leaf.id.as_str()) {
                return Err(format!(
                    "{name}.id: leaf device {:?} is declared twice; keep one entry",
                    leaf.id
                ));
            }
            if self.device_id.as_deref() == Some(leaf.id.as_str()) {
                return Err(format!(
                    "{name}.id: {:?} is this gateway's own hub.device_id; a leaf device needs an id of its own",
                    leaf.id
                ));
            }
            match (&leaf.sas_key_file, &leaf.x509_thumbprints) {
                (Some(_), None) => {}
                (None, Some(thumbprints)) if thumbprints.is_empty() => {
                    return Err(format!(
                        "{name}.x509_thumbprints is empty; give the SHA-1 or SHA-256 thumbprint of the device's certificate"
                    ));
                }
                (None, Some(thumbprints)) => {
                    for thumbprint in thumbprints {
                        edge_hub::Thumbprint::parse(thumbprint)
                            .map_err(|error| format!("{name}.x509_thumbprints: {error}"))?;
                    }
                }
                _ => {
                    return Err(format!(
                        "{name} ({:?}) needs exactly one of sas_key_file and x509_thumbprints",
                        leaf.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// The leaf devices with their credentials, reading the key files:
    /// each must be a regular file of mode 0600 or stricter (it holds a
    /// secret) with the key in base64.
    pub fn leaf_devices(
        &self,
        device_id: &str,
    ) -> std::result::Result<Vec<edge_hub::LeafDevice>, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let mut devices = Vec::with_capacity(self.leaf_devices.len());
        for (index, leaf) in self.leaf_devices.iter().enumerate() {
            let name = format!("hub.leaf_devices[{index}]");
            if leaf.id == device_id {
                return Err(format!(
                    "{name}.id: {:?} is this gateway's own device id; a leaf device needs an id of its own",
                    leaf.id
                ));
            }
            let credential = match (&leaf.sas_key_file, &leaf.x509_thumbprints) {
                (Some(path), _) => {
                    let shown = path.display();
                    let metadata = std::fs::metadata(path).map_err(|error| {
                        format!("{name}.sas_key_file: cannot read {shown}: {error}")
                    })?;
                    let mode = metadata.permissions().mode() & 0o777;
                    if !metadata.is_file() || mode & 0o077 != 0 {
                        return Err(format!(
                            "{name}.sas_key_file: {shown} must be a file only its owner can read (mode {mode:o}); chmod 600 it"
                        ));
                    }
                    let text = std::fs::read_to_string(path).map_err(|error| {
                        format!("{name}.sas_key_file: cannot read {shown}: {error}")
                    })?;
                    let key = edge_hub::SymmetricKey::from_base64(&text)
                        .map_err(|error| format!("{name}.sas_key_file: {shown}: {error}"))?;
                    edge_hub::LeafCredential::SymmetricKey(key)
                }
                (None, thumbprints) => edge_hub::LeafCredential::X509Thumbprints(
                    thumbprints
                        .iter()
                        .flatten()
                        .map(|thumbprint| edge_hub::Thumbprint::parse(thumbprint))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|error| format!("{name}.x509_thumbprints: {error}"))?,
                ),
            };
            devices.push(edge_hub::LeafDevice {
                id: leaf.id.clone(),
                credential,
            });
        }
        Ok(devices)
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
        check_registry_credentials(&config.registry_credentials)?;
        if let Some(update) = &config.update {
            update.check()?;
        }
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
    fn update_settings_default_and_refuse_bad_values() {
        let config =
            with("[update]\nreference = \"registry.example.com:5000/edge/plant:stable\"").unwrap();
        let update = config.update.as_ref().expect("update");
        assert_eq!(update.interval, Duration::from_secs(900));
        assert_eq!(update.jitter(), Duration::from_secs(90));
        assert_eq!(update.timeout, Duration::from_secs(600));
        assert_eq!(
            update.reference().unwrap(),
            UpdateReference {
                registry: "registry.example.com:5000".to_owned(),
                repository: "edge/plant".to_owned(),
                tag: "stable".to_owned(),
            }
        );
        let config = with("[update]\nreference = \"localhost:5000/plant:v7\"\ninterval = \"10s\"\njitter = \"0s\"\nca = \"/etc/edged/registry-ca.pem\"\nusername = \"device\"\npassword_file = \"/etc/edged/registry-password\"\ntimeout = \"30s\"").unwrap();
        let update = config.update.as_ref().expect("update");
        assert_eq!(update.jitter(), Duration::ZERO);
        assert_eq!(
            update.reference().unwrap().to_string(),
            "localhost:5000/plant:v7"
        );
        assert!(with("").unwrap().update.is_none());
        let base = "[update]\nreference = \"registry.example.com/plant:stable\"\n";
        for (section, expected) in [
            (
                "[update]\ninterval = \"1m\"".to_owned(),
                "missing field `reference`",
            ),
            (
                "[update]\nreference = \"plant:stable\"".to_owned(),
                "names no registry host",
            ),
            (
                "[update]\nreference = \"registry.example.com/plant\"".to_owned(),
                "names no tag",
            ),
            (
                format!(
                    "[update]\nreference = \"registry.example.com/plant:1@sha256:{}\"",
                    "a".repeat(64)
                ),
                "pins a digest",
            ),
            (
                "[update]\nreference = \"registry.example.com/Plant:1\"".to_owned(),
                "is not an image reference",
            ),
            (
                format!("{base}interval = \"5s\""),
                "update.interval must be between 10s and 7days",
            ),
            (format!("{base}interval = \"soon\""), "is not a duration"),
            (
                format!("{base}interval = \"1m\"\njitter = \"2m\""),
                "update.jitter must be between 0s and 1m",
            ),
            (
                format!("{base}timeout = \"0s\""),
                "update.timeout must be between",
            ),
            (
                format!("{base}ca = \"registry-ca.pem\""),
                "update.ca = \"registry-ca.pem\" must be an absolute path",
            ),
            (
                format!("{base}username = \"device\""),
                "update.username needs update.password_file",
            ),
            (
                format!("{base}password_file = \"/p\""),
                "update.password_file needs update.username",
            ),
            (
                format!("{base}username = \"a:b\"\npassword_file = \"/p\""),
                "without control characters or ':'",
            ),
            (
                format!("{base}password = \"hunter2\""),
                "unknown field `password`",
            ),
        ] {
            let error = with(&section).unwrap_err();
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
    fn registry_credentials_are_checked_when_read() {
        let entry = |address: &str, username: &str, path: &str| {
            format!(
                "[[registry_credentials]]\naddress = \"{address}\"\nusername = \"{username}\"\npassword_file = \"{path}\"\n"
            )
        };
        let config = with(&entry(
            "localhost:5000",
            "fleet",
            "/etc/edged/registry.password",
        ))
        .unwrap();
        assert_eq!(config.registry_credentials.len(), 1);
        for (section, expected) in [
            (
                entry("a b", "fleet", "/p"),
                "registry_credentials[0].address",
            ),
            (entry("r.io", "", "/p"), "registry_credentials[0].username"),
            (entry("r.io", "fleet", "p"), "not an absolute path"),
            (
                entry("docker.io", "a", "/p") + &entry("index.docker.io", "b", "/q"),
                "registry \"docker.io\" is named twice",
            ),
            (
                entry("r.io", "fleet", "/p") + "password = \"inline\"\n",
                "unknown field",
            ),
        ] {
            let error = with(&section).unwrap_err();
            assert!(error.contains(expected), "{section}: {error}");
        }
    }

    #[test]
    fn upstream_settings_name_one_kind_of_credentials() {
        let base = "[hub]\ndevice_id = \"gw-1\"\n[hub.upstream]\nhost = \"myhub.azure-devices.net\"\nca_file = \"/etc/edged/cloud-ca.pem\"\n";
        let config = with(&format!("{base}sas_key_file = \"/etc/edged/device.key\"")).unwrap();
        let upstream = config.hub.upstream.as_ref().expect("upstream");
        assert_eq!(upstream.port, 8883);
        assert_eq!(upstream.window, 1024);
        assert_eq!(upstream.backoff_max, Duration::from_secs(60));
        // The IoT Hub host name modules see follows the cloud's.
        assert_eq!(
            config.hub.iothub_hostname("gw-1"),
            "myhub.azure-devices.net"
        );
        assert!(matches!(
            upstream.auth(None),
            Ok(edge_hub::upstream::UpstreamAuth::SasKey { .. })
        ));
        let token = "[hub.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"edged\"\npin_file = \"/etc/edged/pin\"\n";
        let config = with(&format!(
            "{base}certificate_file = \"/etc/edged/device.pem\"\nkey_label = \"device\"\nwindow = 1000\nbackoff_initial = \"250ms\"\n{token}"
        ))
        .unwrap();
        let upstream = config.hub.upstream.as_ref().expect("upstream");
        assert!(matches!(
            upstream.auth(config.hub.pkcs11.as_ref()),
            Ok(edge_hub::upstream::UpstreamAuth::X509 {
                key: edge_hub::upstream::ClientKey::Pkcs11 { .. },
                ..
            })
        ));
        for (section, expected) in [
            (String::new(), "says no credentials"),
            (
                "sas_key_file = \"/k\"\nsas_token_file = \"/t\"".to_owned(),
                "more than one kind",
            ),
            (
                "certificate_file = \"/c\"".to_owned(),
                "needs its private key",
            ),
            ("key_file = \"/k\"".to_owned(), "without certificate_file"),
            (
                "certificate_file = \"/c\"\nkey_label = \"device\"".to_owned(),
                "no [hub.pkcs11] table",
            ),
            (
                "certificate_file = \"/c\"\nkey_file = \"/k\"\nkey_label = \"device\"".to_owned(),
                "keep one",
            ),
            (
                "sas_key_file = \"/k\"\nwindow = 0".to_owned(),
                "window must be between 1 and 16384",
            ),
            (
                "sas_key_file = \"/k\"\nbackoff_initial = \"2m\"".to_owned(),
                "shorter than backoff_initial",
            ),
            (
                "sas_key_file = \"/k\"\nkeep_alive = \"1s\"".to_owned(),
                "hub.upstream.keep_alive must be between",
            ),
            ("sas_key = \"secret\"".to_owned(), "unknown field"),
        ] {
            let error = with(&format!("{base}{section}")).unwrap_err();
            assert!(error.contains(expected), "{section}: {error}");
        }
        let error = with(&base.replace("myhub.azure-devices.net", "my hub")).unwrap_err();
        assert!(error.contains("hub.upstream.host"), "{error}");
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

    #[test]
    fn leaf_devices_take_one_credential_and_their_key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("thermo.key");
        std::fs::write(&key_file, "c2VjcmV0\n").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sha256 = "ab".repeat(32);
        let config = with(&format!(
            "[hub]\ndevice_id = \"gw-1\"\n[[hub.leaf_devices]]\nid = \"thermo-1\"\nsas_key_file = {:?}\n[[hub.leaf_devices]]\nid = \"camera-1\"\nx509_thumbprints = [\"{sha256}\", \"{}\"]",
            key_file.display().to_string(),
            "CD".repeat(20)
        ))
        .unwrap();
        let leaves = config.hub.leaf_devices("gw-1").unwrap();
        assert_eq!(leaves.len(), 2);
        assert_eq!(
            leaves[0].credential,
            edge_hub::LeafCredential::SymmetricKey(
                edge_hub::SymmetricKey::from_base64("c2VjcmV0").unwrap()
            )
        );
        assert!(matches!(
            &leaves[1].credential,
            edge_hub::LeafCredential::X509Thumbprints(thumbprints) if thumbprints.len() == 2
        ));
        // A key file others can read is refused when the hub starts.
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = config.hub.leaf_devices("gw-1").unwrap_err();
        assert!(
            error.contains("hub.leaf_devices[0].sas_key_file") && error.contains("chmod 600"),
            "{error}"
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&key_file, "not base64!").unwrap();
        let error = config.hub.leaf_devices("gw-1").unwrap_err();
        assert!(error.contains("is not base64"), "{error}");
        std::fs::write(&key_file, "c2VjcmV0").unwrap();
        // The host name as the gateway's device id is only known at start.
        let error = config.hub.leaf_devices("camera-1").unwrap_err();
        assert!(error.contains("own device id"), "{error}");
        for (section, expected) in [
            (
                "[[hub.leaf_devices]]\nid = \"a\"",
                "needs exactly one of sas_key_file and x509_thumbprints",
            ),
            (
                "[[hub.leaf_devices]]\nid = \"a\"\nsas_key_file = \"/k\"\nx509_thumbprints = []",
                "needs exactly one",
            ),
            (
                "[[hub.leaf_devices]]\nid = \"a\"\nx509_thumbprints = []",
                "hub.leaf_devices[0].x509_thumbprints is empty",
            ),
            (
                "[[hub.leaf_devices]]\nid = \"a\"\nx509_thumbprints = [\"abc\"]",
                "hub.leaf_devices[0].x509_thumbprints: the thumbprint \"abc\"",
            ),
            (
                "[[hub.leaf_devices]]\nid = \"a/b\"\nsas_key_file = \"/k\"",
                "hub.leaf_devices[0].id: \"a/b\" is not a device id",
            ),
            (
                "[[hub.leaf_devices]]\nid = \"a\"\nsas_key_file = \"/k\"\n[[hub.leaf_devices]]\nid = \"a\"\nsas_key_file = \"/k\"",
                "hub.leaf_devices[1].id: leaf device \"a\" is declared twice",
            ),
            (
                "[hub]\ndevice_id = \"gw\"\n[[hub.leaf_devices]]\nid = \"gw\"\nsas_key_file = \"/k\"",
                "own hub.device_id",
            ),
            (
                "[[hub.leaf_devices]]\nid = \"a\"\nkey = \"secret\"",
                "unknown field `key`",
            ),
        ] {
            let error = with(section).unwrap_err();
            assert!(error.contains(expected), "{section}: {error}");
        }
    }
}
