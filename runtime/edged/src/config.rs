//! The device configuration (`/etc/edged/device.toml`): what this device is,
//! whom it trusts, and the timing of health checks and restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_bundle::Architecture;
use serde::Deserialize;

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
    /// How long every module must run without restarting, in seconds.
    #[serde(default = "thirty")]
    pub window_secs: f64,
}

fn thirty() -> f64 {
    30.0
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { window_secs: 30.0 }
    }
}

impl HealthConfig {
    /// The health window.
    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.window_secs.max(0.0))
    }
}

/// Exponential restart back-off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// The first delay, in seconds.
    #[serde(default = "ten")]
    pub backoff_base_secs: f64,
    /// The longest delay, in seconds.
    #[serde(default = "three_hundred")]
    pub backoff_max_secs: f64,
}

fn ten() -> f64 {
    10.0
}

fn three_hundred() -> f64 {
    300.0
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            backoff_base_secs: 10.0,
            backoff_max_secs: 300.0,
        }
    }
}

impl RestartConfig {
    /// The delay before restart number `attempt` (1-based): the base doubled
    /// per attempt, capped, and never infinite, so a module is never
    /// abandoned.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doubled = self.backoff_base_secs * 2_f64.powi(attempt.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64(doubled.min(self.backoff_max_secs).max(0.0))
    }
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
        let config: Self = toml::from_str(text).map_err(|error| error.to_string())?;
        if config.trust.threshold == 0 {
            return Err("trust.threshold must be at least 1".to_owned());
        }
        if config.compatible.is_empty() {
            return Err("compatible must not be empty".to_owned());
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
}
