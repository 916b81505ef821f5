//! The document `edged status --json` prints, in the shape IoT Edge's agent reports as reported
//! properties (`runtimeStatus`, `exitCode`, `restartCount`, `lastStartTimeUtc`,
//! `lastExitTimeUtc`, `lastDesiredStatus`), so fleet tooling can read either.
//!
//! It lives here, the crate edged already depends on, because the init reads it too: edged
//! writes it and the init reads it through this one definition (`runtime/README.md`, "Status").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The schema version IoT Edge's agent reports.
pub const SCHEMA_VERSION: &str = "1.1";

/// The whole status document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// The outcome of the last requested change.
    pub last_desired_status: DesiredStatus,
    /// The version of the active deployment, if any.
    pub last_desired_version: Option<u64>,
    /// The active deployment and the transaction in progress.
    pub deployment: DeploymentReport,
    /// The active deployment's modules, by name.
    pub modules: BTreeMap<String, ModuleReport>,
    /// Why `edged run`'s supervision passes are failing; absent while they work.
    pub supervision: Option<SupervisionFailure>,
    /// The edge hub's view of the modules; absent where the hub is disabled
    /// and in documents from edged versions before the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubReport>,
    /// The module images being pulled from registries, while a pull runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullReport>,
    /// The registry poller's record (`STATE/update.json`); absent where `[update]` is not
    /// configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateReport>,
}

/// What the registry poller last did, kept in `STATE/update.json` (replaced atomically) and
/// shown by `edged status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateReport {
    /// The reference polled, `host[:port]/repository:tag`.
    pub reference: String,
    /// When the registry was last asked, RFC 3339 UTC; absent before the first poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
    /// What that poll came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<UpdateResult>,
    /// The manifest digest (`sha256:…`) the reference last resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manifest_digest: Option<String>,
    /// When the next poll is due, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<String>,
}

/// The outcome of one poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum UpdateResult {
    /// The registry serves the running deployment.
    UpToDate {
        /// Its version.
        version: u64,
    },
    /// A newer version was fetched and applied (committed).
    Fetched {
        /// The version.
        version: u64,
    },
    /// The registry serves a bundle this device refuses; nothing was fetched or changed.
    Refused {
        /// Why, in a sentence.
        reason: String,
    },
    /// A step failed (the registry unreachable, a fetch cut off, an apply that rolled back).
    Failed {
        /// Which step.
        step: UpdateStep,
        /// What went wrong.
        error: String,
    },
}

/// The steps of one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateStep {
    /// Resolving the reference and fetching `bundle.json` and `bundle.sig.json`.
    FetchHead,
    /// Judging the head against the device.
    Check,
    /// Fetching the payload blobs the device lacks.
    FetchPayload,
    /// Applying the fetched bundle.
    Apply,
}

impl UpdateStep {
    /// The name `edged status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FetchHead => "fetch-head",
            Self::Check => "check",
            Self::FetchPayload => "fetch-payload",
            Self::Apply => "apply",
        }
    }
}

/// A pull of a deployment's module images in progress, as the puller last
/// recorded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    /// The deployment whose images are pulled.
    pub deployment: String,
    /// Its version.
    pub version: u64,
    /// When the pull started, RFC 3339.
    pub started: String,
    /// How many seconds ago the puller last recorded progress.
    pub age_seconds: u64,
    /// Per module being pulled, by name.
    pub modules: BTreeMap<String, PullModuleReport>,
}

/// One module image of a pull.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullModuleReport {
    /// The pinned reference, `name@sha256:…`.
    pub reference: String,
    /// Bytes of its layers downloaded so far.
    pub current_bytes: u64,
    /// Bytes of its layers the engine knows of so far (it learns each
    /// layer's size when that layer starts).
    pub total_bytes: u64,
    /// Whether it is present in the engine now.
    pub done: bool,
}

/// What the edge hub `edged run` serves reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubReport {
    /// Whether a daemon serving the hub answered; `false` when `edged run`
    /// is not running, and then `modules` is empty.
    pub running: bool,
    /// Per module of the deployment, by name.
    #[serde(default)]
    pub modules: BTreeMap<String, HubModuleReport>,
    /// Messages the routes sent to `$upstream`, kept in the store until the
    /// cloud acknowledged them (or their time to live ends).
    #[serde(default)]
    pub upstream_queue: u64,
    /// The connection to the cloud; `None` when none is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamReport>,
    /// Messages the store dropped, by endpoint (`{module}/{input}` or
    /// `$upstream`); only endpoints that dropped any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, HubDropped>,
}

/// The hub's connection to the cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamReport {
    /// `host:port`.
    pub endpoint: String,
    /// `connected`, `connecting` or `waiting` (after a failure, until the
    /// next attempt).
    pub state: String,
    /// When it connected (`connected`) or when the next attempt starts
    /// (`waiting`), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Failed attempts in a row.
    #[serde(default)]
    pub failures: u32,
    /// The last failure, kept after the link recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<UpstreamFailure>,
    /// Connections that were accepted.
    #[serde(default)]
    pub connections: u64,
    /// Telemetry messages published (again after a reconnect, too).
    #[serde(default)]
    pub messages_sent: u64,
    /// Telemetry messages the cloud acknowledged.
    #[serde(default)]
    pub messages_acknowledged: u64,
    /// Messages sent again because a connection ended before the cloud
    /// acknowledged them (the cloud may have them twice).
    #[serde(default)]
    pub messages_resent: u64,
    /// Messages in flight now.
    #[serde(default)]
    pub in_flight: usize,
    /// The in-flight window.
    #[serde(default)]
    pub window: usize,
}

/// Why the cloud connection last failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamFailure {
    /// When, RFC 3339.
    pub at: String,
    /// The step: credentials, dns, tcp, tls, refused, timeout, lost or
    /// protocol.
    pub step: String,
    /// What happened.
    pub message: String,
}

/// The messages the hub's store dropped from one endpoint's queue, by
/// reason (`runtime/README.md`, "Offline: quotas and the drop policy").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubDropped {
    /// Their time to live passed before they were delivered.
    pub expired: u64,
    /// Evicted to keep the store under `store_limit` (`when_full`).
    pub quota: u64,
    /// Evicted while the disk holding the store was full.
    pub disk_full: u64,
}

/// One module as the hub sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubModuleReport {
    /// Whether the module has an MQTT connection open.
    pub connected: bool,
    /// Messages the module sent that the hub accepted.
    pub messages_in: u64,
    /// Messages delivered to the module and acknowledged by it.
    pub messages_out: u64,
    /// Messages waiting, per endpoint (`{module}/{input}`).
    #[serde(default)]
    pub queues: BTreeMap<String, u64>,
    /// The module twin's reported properties, with `$version`.
    #[serde(default)]
    pub reported: serde_json::Value,
}

/// The outcome of the last requested change, as IoT Edge reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredStatus {
    /// 200 applied, 400 refused or rolled back, 417 trial in progress.
    pub code: u16,
    /// A sentence for people.
    pub description: String,
}

/// The active deployment; every field but the floor is absent on a device never deployed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentReport {
    /// The deployment name.
    pub name: Option<String>,
    /// Its version.
    pub version: Option<u64>,
    /// The state slot holding it (`a` or `b`).
    pub slot: Option<String>,
    /// SHA-256 of its canonical manifest.
    pub manifest_digest: Option<String>,
    /// The anti-rollback floor: bundles must be newer.
    pub committed_version: u64,
    /// The transaction in progress, which another edged process may be in the middle of.
    pub transaction: Option<TransactionReport>,
    /// Why the active deployment cannot be loaded (its slot is damaged), so its modules are not
    /// listed; a newer bundle replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unusable: Option<String>,
    /// The active deployment's signed expiry (RFC 3339 UTC), if its bundle has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Whether that expiry has passed by the device's clock. A committed deployment keeps
    /// running past it (the expiry only stops bundles being taken in), but a registry still
    /// serving it as the latest is stale.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

/// How far a transaction in progress got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransactionPhase {
    /// The new deployment runs, not yet proven healthy.
    Trial,
    /// The previous deployment is active again; its modules are being restored.
    RollingBack,
}

impl TransactionPhase {
    /// The name the JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trial => "trial",
            Self::RollingBack => "rolling-back",
        }
    }
}

/// A transaction in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionReport {
    /// How far it got.
    pub phase: TransactionPhase,
    /// The deployment being tried (or abandoned).
    pub target: InstalledReport,
    /// The deployment to go back to; absent on a device's first deployment.
    pub previous: Option<InstalledReport>,
    /// Why a rollback happens.
    pub reason: Option<String>,
}

/// A deployment installed in a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledReport {
    /// The state slot (`a` or `b`).
    pub slot: String,
    /// The deployment name.
    pub deployment: String,
    /// The version.
    pub version: u64,
    /// SHA-256 of its canonical manifest.
    pub manifest_digest: String,
}

/// One module, as IoT Edge's agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleReport {
    /// `running`, `stopped`, `failed`, `backoff` or `unknown`.
    pub runtime_status: String,
    /// The last exit code.
    pub exit_code: i64,
    /// How often edged restarted it in this deployment, across edged processes.
    pub restart_count: u32,
    /// When it last started, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_start_time_utc: Option<String>,
    /// When it last exited, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_time_utc: Option<String>,
    /// Docker's health status, when the module has a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The module version the deployment asks for.
    pub version: String,
    /// The desired status: `running` or `stopped`.
    pub status: String,
    /// `never`, `on-failure`, `on-unhealthy` or `always`.
    pub restart_policy: String,
    /// How the module runs.
    pub settings: ModuleSettings,
}

/// A module's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleSettings {
    /// The image reference.
    pub image: String,
}

/// Supervision passes of `edged run` failing in a row (the engine does not answer, the state
/// directory cannot be read); also the content of `STATE/supervision-failure.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisionFailure {
    /// Why the last pass failed.
    pub last_error: String,
    /// When the first of the failing passes failed, RFC 3339.
    pub since: String,
    /// How many passes in a row failed.
    pub consecutive_failures: u32,
}

impl StatusReport {
    /// Parses `edged status --json` output.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|error| format!("edged status is not JSON ({error})"))
    }

    /// The line the init prints once edged reports its deployment (the QEMU boot tests wait
    /// for it); an error if edged reports none.
    pub fn ready_line(&self, os_slot: impl std::fmt::Display) -> Result<String, String> {
        let deployment = &self.deployment;
        let version = deployment.version.ok_or("edged reports no deployment")?;
        if let Some(why) = &deployment.unusable {
            return Err(format!("edged reports its deployment unusable: {why}"));
        }
        Ok(format!(
            "edged: ready: deployment {} version {version} running (deployment slot {}, {} modules), OS slot {os_slot}",
            deployment.name.as_deref().unwrap_or("?"),
            deployment.slot.as_deref().unwrap_or("?"),
            self.modules.len(),
        ))
    }
}
