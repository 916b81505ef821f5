//! A read-only view of a device, for `edged status`: it takes no lock and
//! writes nothing, so it can run while another process applies a bundle,
//! on a read-only file system, or as a user who may not write the state
//! directory.

use std::path::{Path, PathBuf};

use crate::config::DeviceConfig;
use crate::device::Device;
use crate::error::Result;
use crate::runtime::{Loaded, ModuleRuntime, ModuleStatus};
use crate::state::State;
use crate::supervision::{FailureRecord, SupervisionFailure};
use crate::trust::TrustStore;

/// A device opened for reading: only the methods that read are reachable.
pub struct DeviceView {
    device: Device,
    state_dir: PathBuf,
}

impl DeviceView {
    /// Opens the state directory without creating, recovering or locking
    /// anything.
    pub fn open(
        state_dir: &Path,
        config: DeviceConfig,
        runtime: Box<dyn ModuleRuntime>,
    ) -> Result<Self> {
        let trust = TrustStore::new(&config.trust, &[]);
        Ok(Self {
            device: Device::open_read_only(state_dir, config, trust, runtime)?,
            state_dir: state_dir.to_owned(),
        })
    }

    /// The state record as last written, with any transaction in progress.
    pub fn state(&self) -> Result<State> {
        self.device.state()
    }

    /// The active deployment.
    pub fn active(&self) -> Result<Option<Loaded>> {
        self.device.active()
    }

    /// Why `edged run`'s supervision passes are failing, if they are.
    pub fn supervision_failure(&self) -> Option<SupervisionFailure> {
        SupervisionFailure::load(&self.state_dir)
    }

    /// The pull of module images in progress, if a live process records
    /// one (see [`crate::pull::ProgressRecord::load_live`]).
    pub fn pull_progress(&self) -> Option<edge_init::status::PullReport> {
        crate::pull::ProgressRecord::load_live(&self.state_dir)
    }

    /// The module states of the active deployment.
    pub fn module_status(&mut self) -> Result<Vec<(String, ModuleStatus)>> {
        self.device.module_status()
    }
}
