//! Named crash points on every write, fsync and rename of the apply and
//! rollback paths, so tests can prove that a crash at any of them leaves the
//! device on a complete deployment.
//!
//! A failpoint is armed by naming it in the `EDGED_FAILPOINT` environment
//! variable; when execution reaches it, the process aborts on the spot, as a
//! power cut would stop it. `NAME:pause=DURATION` (`health-wait:pause=3s`)
//! stops there for that long instead, so that tests can run a second
//! process while the first is in the middle of a transaction. Unarmed
//! failpoints cost one comparison. Only builds with the `failpoints` cargo
//! feature (tests) read the variable at all; the named points stay in the
//! code of every build as calls that do nothing.
//!
//! The mechanism is the `edge-failpoint` crate's, shared with the edge hub
//! (whose store has failpoints of its own); this module names edged's.

pub use edge_failpoint::{Action, COMPILED_IN, ENV};

edge_failpoint::failpoints! {
    /// A point on the apply or rollback path where a crash is simulated;
    /// `ALL` lists them in the order the apply and rollback paths reach
    /// them (the staged files' writes and fsyncs run on threads of their
    /// own alongside the verification).
    pub enum Failpoint {
        StageCreate => "stage-create": "Before the staging directory is created in the inactive slot.",
        StageWrite => "stage-write": "In the middle of writing a payload file into staging.",
        StageFsyncFile => "stage-fsync-file": "Before a staged payload file (or a fetched bundle's verified blob) is fsynced.",
        StageBlobPlace => "stage-blob-place": "Before a verified blob of a fetched bundle is renamed or hard-linked into staging.",
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

/// Looks a failpoint up by its name.
pub fn by_name(name: &str) -> Option<Failpoint> {
    edge_failpoint::by_name(name)
}

/// Parses an `EDGED_FAILPOINT` value: `NAME`, `NAME:pause=DURATION` or
/// `NAME:at=N`.
pub fn parse(text: &str) -> Option<(Failpoint, Action)> {
    let (name, action) = edge_failpoint::parse(text)?;
    Some((by_name(name)?, action))
}

/// Aborts or pauses the process if `point` is the armed failpoint.
pub fn hit(point: Failpoint) {
    edge_failpoint::hit(point);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_unique_and_round_trip() {
        for point in Failpoint::ALL {
            assert_eq!(by_name(point.name()), Some(*point));
        }
        let mut names: Vec<&str> = Failpoint::ALL.iter().map(|point| point.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Failpoint::ALL.len());
    }

    #[test]
    fn values_arm_an_abort_or_a_pause() {
        assert_eq!(
            parse("health-wait"),
            Some((Failpoint::HealthWait, Action::Abort))
        );
        assert_eq!(
            parse("health-wait:pause=1m30s"),
            Some((
                Failpoint::HealthWait,
                Action::Pause(Duration::from_secs(90))
            ))
        );
        assert_eq!(parse("health-wait:pause=soon"), None);
        assert_eq!(parse("health-wait:sleep=1s"), None);
        assert_eq!(parse("nowhere"), None);
    }
}
