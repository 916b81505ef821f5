//! The module runtime behind the transaction: Docker on devices, and two
//! engine-less runtimes for tests and benchmarks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use edge_bundle::BundleManifest;
use serde::Serialize;

use crate::deployment::ModuleSpec;
use crate::error::Result;
use crate::pull::{ImagePull, Progress};

/// An installed deployment, ready to be run.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The slot's deployment directory (holds `bundle.json` and `payload/`).
    pub dir: PathBuf,
    /// The verified manifest.
    pub manifest: BundleManifest,
    /// Its user modules in startup order.
    pub modules: Vec<ModuleSpec>,
}

/// A module's reported state, in the shape IoT Edge's agent reports.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    /// `running`, `stopped`, `failed`, `backoff` or `unknown`.
    pub runtime_status: String,
    /// The last exit code.
    pub exit_code: i64,
    /// How often edged restarted it since the deployment started, across
    /// edged processes (see `supervision.rs`).
    pub restart_count: u32,
    /// When it last started, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_start_time_utc: Option<String>,
    /// When it last exited, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit_time_utc: Option<String>,
    /// Docker health status, when the module has a health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
}

/// What the transaction needs from a module runtime.
pub trait ModuleRuntime {
    /// Makes every image `pull` pins present in the engine before the
    /// deployment is switched to: an image already present with the pinned
    /// digest is not pulled again; others are pulled by digest and checked
    /// against it. Runtimes without an engine have nothing to pull.
    fn fetch_images(&mut self, pull: &ImagePull, progress: &mut Progress) -> Result<()>;

    /// Makes the engine run exactly `deployment`'s modules (none for
    /// `None`): loads images, removes containers edged labelled that do not
    /// belong, creates and starts the rest in startup order.
    fn reconcile(&mut self, deployment: Option<&Loaded>) -> Result<()>;

    /// Watches `deployment` for `window`; returns why it is unhealthy.
    fn health(&mut self, deployment: &Loaded, window: Duration) -> std::result::Result<(), String>;

    /// One supervision pass: restarts stopped modules per their policy and
    /// back-off.
    fn supervise(&mut self, deployment: Option<&Loaded>) -> Result<()>;

    /// The state of each module, by name.
    fn status(&mut self, deployment: Option<&Loaded>) -> Result<Vec<(String, ModuleStatus)>>;

    /// How often the runtime restarted each module, by name, so the counts
    /// can be recorded for other edged processes.
    fn restart_counts(&self) -> BTreeMap<String, u32>;

    /// Continues from counts an earlier edged process recorded.
    fn restore_restart_counts(&mut self, counts: &BTreeMap<String, u32>);
}

/// A runtime that runs nothing: every deployment counts as healthy, or, with
/// `healthy = false`, as failing, to exercise the rollback path without an
/// engine.
pub struct NoEngine {
    /// Whether health checks pass.
    pub healthy: bool,
}

impl ModuleRuntime for NoEngine {
    fn fetch_images(&mut self, _pull: &ImagePull, _progress: &mut Progress) -> Result<()> {
        Ok(())
    }

    fn reconcile(&mut self, _deployment: Option<&Loaded>) -> Result<()> {
        Ok(())
    }

    fn health(
        &mut self,
        _deployment: &Loaded,
        _window: Duration,
    ) -> std::result::Result<(), String> {
        if self.healthy {
            Ok(())
        } else {
            Err("simulated health failure (--runtime failing)".to_owned())
        }
    }

    fn supervise(&mut self, _deployment: Option<&Loaded>) -> Result<()> {
        Ok(())
    }

    fn restart_counts(&self) -> BTreeMap<String, u32> {
        BTreeMap::new()
    }

    fn restore_restart_counts(&mut self, _counts: &BTreeMap<String, u32>) {}

    fn status(&mut self, deployment: Option<&Loaded>) -> Result<Vec<(String, ModuleStatus)>> {
        Ok(deployment
            .map(|loaded| {
                loaded
                    .modules
                    .iter()
                    .map(|module| {
                        let status = ModuleStatus {
                            runtime_status: "unknown".to_owned(),
                            ..ModuleStatus::default()
                        };
                        (module.name.clone(), status)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}
