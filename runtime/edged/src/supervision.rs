//! The supervision record (`supervision.json`): the restart counts `edged
//! run` has observed, so that `edged status`, which runs in a process of its
//! own, reports them too, and a restarted daemon goes on counting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, Result};

/// The record's file name inside the state directory.
pub const SUPERVISION_FILE: &str = "supervision.json";

/// Restart counts of one deployment's modules.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisionRecord {
    /// The manifest digest of the deployment the counts belong to: counts
    /// of an earlier deployment do not carry over to a new one.
    pub manifest_digest: String,
    /// How often edged restarted each module, by module name.
    pub restart_counts: BTreeMap<String, u32>,
}

impl SupervisionRecord {
    /// The path of the record inside `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(SUPERVISION_FILE)
    }

    /// Reads the record. A missing or unreadable one means no restarts
    /// were recorded: the counts are informative, unlike the state record,
    /// so a damaged file must not stop the device.
    pub fn load(state_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(Self::path(state_dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Replaces the record atomically, so a reader never sees half of it.
    pub fn store(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir);
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|error| {
            Error::CorruptState(format!("cannot encode the supervision record: {error}"))
        })?;
        bytes.push(b'\n');
        durable::replace_file(&path, &bytes, None).map_err(Error::state("write", &path))
    }
}

/// The failure record's file name inside the state directory; it exists only
/// while `edged run`'s supervision passes fail.
pub const FAILURE_FILE: &str = "supervision-failure.json";

pub use edge_init::status::SupervisionFailure;

/// Where `edged run` records its failing passes for `edged status`.
pub trait FailureRecord: Sized {
    /// The path of the record inside `state_dir`.
    fn path(state_dir: &Path) -> PathBuf;
    /// Reads the record; none, or an unreadable one, means supervision is
    /// not known to fail.
    fn load(state_dir: &Path) -> Option<Self>;
    /// Replaces the record atomically.
    fn store(&self, state_dir: &Path) -> Result<()>;
    /// Removes the record: supervision works (again).
    fn clear(state_dir: &Path) -> Result<()>;
}

impl FailureRecord for SupervisionFailure {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FAILURE_FILE)
    }

    fn load(state_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(Self::path(state_dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn store(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir);
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|error| {
            Error::CorruptState(format!("cannot encode the supervision failure: {error}"))
        })?;
        bytes.push(b'\n');
        durable::replace_file(&path, &bytes, None).map_err(Error::state("write", &path))
    }

    fn clear(state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::state("remove", &path)(error))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(SupervisionRecord::load(dir.path()), None);
        let record = SupervisionRecord {
            manifest_digest: "ab".repeat(32),
            restart_counts: [("sensor".to_owned(), 3)].into(),
        };
        record.store(dir.path()).unwrap();
        assert_eq!(SupervisionRecord::load(dir.path()), Some(record));
        assert!(!durable::temporary_path(&SupervisionRecord::path(dir.path())).exists());
        std::fs::write(SupervisionRecord::path(dir.path()), b"{").unwrap();
        assert_eq!(SupervisionRecord::load(dir.path()), None);
    }
}
