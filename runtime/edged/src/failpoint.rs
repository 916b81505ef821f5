//! Named crash points on every write, fsync and rename of the apply and
//! rollback paths, so tests can prove that a crash at any of them leaves the
//! device on a complete deployment.
//!
//! The mechanism (`EDGED_FAILPOINT=NAME` aborts there, `NAME:pause=3s`
//! pauses there, only in builds with the `failpoints` feature) is the shared
//! `edge-failpoint` crate's, which the hub's store uses too; this module
//! lists edged's own points.

pub use edge_failpoint::{COMPILED_IN, ENV, Point, hit};

edge_failpoint::failpoints! {
    /// A point on the apply or rollback path where a crash is simulated.
    pub enum Failpoint {
        StageCreate => "stage-create": "Before the staging directory is created in the inactive slot.",
        StageWrite => "stage-write": "In the middle of writing a payload file into staging.",
        StageFsyncFile => "stage-fsync-file": "Before a staged payload file is fsynced.",
        StageFsyncDirs => "stage-fsync-dirs": "Before the staged directories are fsynced.",
        SlotRetire => "slot-retire": "Before the inactive slot's old deployment is renamed aside, once the bundle is verified, staged and flushed and its OS payload written.",
        SlotInstall => "slot-install": "Before staging is renamed into the slot.",
        SlotFsync => "slot-fsync": "Before the slot directory is fsynced after the rename.",
        SwitchWrite => "switch-write": "Before the state record that switches slots is written.",
        SwitchFsync => "switch-fsync": "Before the switching state record is fsynced.",
        SwitchRename => "switch-rename": "Before the switching state record replaces the old one.",
        SwitchFsyncDir => "switch-fsync-dir": "Before the state directory is fsynced after the switch.",
        ReconcileNew => "reconcile-new": "Before the modules are reconciled to the new deployment.",
        HealthWait => "health-wait": "During the health window of the new deployment.",
        CommitWrite => "commit-write": "Before the committing state record is written.",
        CommitFsync => "commit-fsync": "Before the committing state record is fsynced.",
        CommitRename => "commit-rename": "Before the committing state record replaces the old one.",
        CommitFsyncDir => "commit-fsync-dir": "Before the state directory is fsynced after the commit.",
        RollbackWrite => "rollback-write": "Before the state record that switches back is written.",
        RollbackFsync => "rollback-fsync": "Before the switching-back state record is fsynced.",
        RollbackRename => "rollback-rename": "Before the switching-back state record replaces the old one.",
        RollbackFsyncDir => "rollback-fsync-dir": "Before the state directory is fsynced after switching back.",
        ReconcileOld => "reconcile-old": "Before the modules are reconciled back to the old deployment.",
        RollbackDoneWrite => "rollback-done-write": "Before the state record closing the rollback is written.",
        RollbackDoneFsync => "rollback-done-fsync": "Before the record closing the rollback is fsynced.",
        RollbackDoneRename => "rollback-done-rename": "Before the record closing the rollback replaces the old one.",
        RollbackDoneFsyncDir => "rollback-done-fsync-dir": "Before the state directory is fsynced after the rollback.",
        SlotDiscard => "slot-discard": "Before the slot's renamed-aside old deployment is renamed to `discarded`, once the commit or rollback is recorded.",
        SlotRemoveRetired => "slot-remove-retired": "Before the slot's discarded old deployment is deleted (on its own thread, after the commit or rollback).",
    }
}

/// The four failpoints of one atomic state-record replacement.
#[derive(Clone, Copy, Debug)]
pub struct RecordPoints {
    /// Before the temporary file is written.
    pub write: Failpoint,
    /// Before the temporary file is fsynced.
    pub fsync: Failpoint,
    /// Before the temporary file is renamed over the record.
    pub rename: Failpoint,
    /// Before the directory is fsynced.
    pub fsync_dir: Failpoint,
}

/// The state-record failpoints of the switch to the new slot.
pub const SWITCH: RecordPoints = RecordPoints {
    write: Failpoint::SwitchWrite,
    fsync: Failpoint::SwitchFsync,
    rename: Failpoint::SwitchRename,
    fsync_dir: Failpoint::SwitchFsyncDir,
};
/// The state-record failpoints of the commit.
pub const COMMIT: RecordPoints = RecordPoints {
    write: Failpoint::CommitWrite,
    fsync: Failpoint::CommitFsync,
    rename: Failpoint::CommitRename,
    fsync_dir: Failpoint::CommitFsyncDir,
};
/// The state-record failpoints of switching back.
pub const ROLLBACK: RecordPoints = RecordPoints {
    write: Failpoint::RollbackWrite,
    fsync: Failpoint::RollbackFsync,
    rename: Failpoint::RollbackRename,
    fsync_dir: Failpoint::RollbackFsyncDir,
};
/// The state-record failpoints of closing a rollback.
pub const ROLLBACK_DONE: RecordPoints = RecordPoints {
    write: Failpoint::RollbackDoneWrite,
    fsync: Failpoint::RollbackDoneFsync,
    rename: Failpoint::RollbackDoneRename,
    fsync_dir: Failpoint::RollbackDoneFsyncDir,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for point in Failpoint::ALL {
            assert_eq!(edge_failpoint::by_name(point.name()), Some(*point));
        }
        let mut names: Vec<&str> = Failpoint::ALL.iter().map(|point| point.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Failpoint::ALL.len());
    }
}
