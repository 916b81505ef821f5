//! The state record (`state.json`): which slot is active, the anti-rollback
//! floor, and the transaction in progress. It is the single piece of state
//! whose atomic replacement switches the device between deployments.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, Result};
use crate::failpoint::RecordPoints;

/// The state record's file name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// One of the two deployment slots.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// The directory name under `slots/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A complete, verified deployment installed in a slot.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Installed {
    /// The slot holding it.
    pub slot: Slot,
    /// The deployment name.
    pub deployment: String,
    /// The deployment version.
    pub version: u64,
    /// SHA-256 of the canonical bundle manifest, the bundle's identity.
    pub manifest_digest: String,
}

/// Where an interrupted transaction stood.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The new slot is active but not yet proven healthy.
    Trial,
    /// The old slot is active again; its modules are being restored.
    RollingBack,
}

/// A transaction in progress.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Transaction {
    /// How far it got.
    pub phase: Phase,
    /// The deployment being tried (or abandoned).
    pub target: Installed,
    /// The deployment to go back to; `None` on a device's first deployment.
    pub previous: Option<Installed>,
    /// Why a rollback happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcome of the last requested change, as IoT Edge reports it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DesiredStatus {
    /// 200 applied, 400 refused or rolled back, 417 (in progress).
    pub code: u16,
    /// A sentence for people.
    pub description: String,
}

/// The whole state record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct State {
    /// The record's format, for future migrations.
    pub format: u32,
    /// The deployment that runs, if any.
    pub active: Option<Installed>,
    /// The highest committed version; with the slots' manifests it makes the
    /// anti-rollback floor (see `Device::floor`).
    pub committed_version: u64,
    /// The manifest digest of the last deployment that was tried and rolled
    /// back without ever being committed: its slot's version does not raise
    /// the floor, so a fixed environment may try it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
    /// The transaction in progress.
    pub transaction: Option<Transaction>,
    /// The outcome of the last requested change.
    pub last_desired_status: DesiredStatus,
}

impl Default for State {
    fn default() -> Self {
        Self {
            format: 1,
            active: None,
            committed_version: 0,
            rolled_back: None,
            transaction: None,
            last_desired_status: DesiredStatus {
                code: 200,
                description: "no deployment yet".to_owned(),
            },
        }
    }
}

impl State {
    /// The path of the record inside `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Reads the record; a device without one has never been deployed to.
    /// A record that does not parse is an error, never a silent reset,
    /// because resetting would drop the anti-rollback floor.
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = Self::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(error) => return Err(Error::state("read", &path)(error)),
        };
        serde_json::from_slice(&bytes).map_err(|error| {
            Error::CorruptState(format!("{} does not parse: {error}", path.display()))
        })
    }

    /// Replaces the record atomically.
    pub fn store(&self, state_dir: &Path, points: RecordPoints) -> Result<()> {
        self.replace(state_dir, Some(points))
    }

    /// Replaces the record atomically where only the outcome of a change
    /// that switched nothing differs (`last_desired_status`): it is on no
    /// transaction's path, so it has no failpoints; a crash leaves the old
    /// or the new record, and either is the same deployment.
    pub fn store_outcome(&self, state_dir: &Path) -> Result<()> {
        self.replace(state_dir, None)
    }

    fn replace(&self, state_dir: &Path, points: Option<RecordPoints>) -> Result<()> {
        let path = Self::path(state_dir);
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|error| Error::CorruptState(format!("cannot encode the state: {error}")))?;
        bytes.push(b'\n');
        durable::replace_file(&path, &bytes, points).map_err(Error::state("write", &path))
    }
}
