//! The device configuration (`/etc/edged/device.toml`): what this device is,
//! whom it trusts, and the timing of health checks and restarts.

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
}
