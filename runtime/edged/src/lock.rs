//! One writer at a time: every edged command that may change the state
//! directory holds an exclusive lock on `STATE/lock` while it does.
//!
//! The lock is the kernel's (`flock` through `File::try_lock`), so it is
//! released when the holder exits, however it exits: a crashed writer never
//! leaves the device locked. While it is held, the file names the holder
//! (its pid and command), so that a second writer can say whom it waits for.
//!
//! `edged run` also holds `STATE/daemon.lock` for as long as it runs,
//! passes and sleeps alike ([`DaemonLock`]): one daemon at a time serves a
//! state directory, its hub and the hub's store. A second daemon (systemd
//! restarting edged while the previous one still stops) waits a bounded
//! time for the first to exit before it opens anything.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// The daemon's lock file inside the state directory.
pub const DAEMON_LOCK_FILE: &str = "daemon.lock";

/// How long a starting `edged run` waits for a daemon before it, unless
/// `--wait` says otherwise: longer than the previous daemon takes to stop
/// (a pass, then the hub's 5 s shutdown).
pub const DAEMON_WAIT: Duration = Duration::from_secs(30);

/// How long a command from the shell waits, by default, for a daemon's
/// pass: a supervision pass takes well under a second, so without this a
/// shell `edged apply` would fail at random whenever it met one. A pass that
/// applies a bundle from the inbox (health window included) takes longer,
/// and the command is busy after this wait as it would be without it.
pub const DAEMON_PASS_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting writer tries the lock again.
const RETRY: Duration = Duration::from_millis(100);

/// How long a writer waits for the lock before giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Wait at most [`DAEMON_PASS_WAIT`] while `edged run` holds it (or
    /// while the holder is not named yet, which it is only for the instant
    /// between taking the lock and writing the name); give up at once if a
    /// command from the shell holds it. A shell command's default.
    ForDaemonPass,
    /// Wait at most this long.
    AtMost(Duration),
    /// Wait until it is free (the daemon, between its passes).
    Forever,
}

/// The held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    file: File,
}

impl StateLock {
    /// Takes the lock of `state_dir` (creating the directory if needed) for
    /// `command`, waiting as `wait` says. Fails with [`Error::Busy`] naming
    /// the holder when the wait is over.
    pub fn acquire(state_dir: &Path, command: &str, wait: Wait) -> Result<Self> {
        Self::acquire_file(state_dir, LOCK_FILE, command, wait, |holder, _| {
            tracing::info!(%holder, "waiting for the state directory lock");
        })
        .map_err(|refused| match refused {
            Refused::Held(holder) => Error::Busy { holder },
            Refused::Failed(error) => error,
        })
    }

    /// Takes the lock file `name` of `state_dir`; `waiting` is told once
    /// who holds it, and how long the wait may last, when the lock has to
    /// be waited for.
    fn acquire_file(
        state_dir: &Path,
        name: &str,
        command: &str,
        wait: Wait,
        waiting: impl FnOnce(&str, Option<Duration>),
    ) -> std::result::Result<Self, Refused> {
        std::fs::create_dir_all(state_dir)
            .map_err(|error| Refused::Failed(Error::state("create", state_dir)(error)))?;
        let path = state_dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| Refused::Failed(Error::state("open", &path)(error)))?;
        let started = Instant::now();
        let deadline = match wait {
            Wait::ForDaemonPass => Some(started + DAEMON_PASS_WAIT),
            Wait::AtMost(limit) => Some(started + limit),
            Wait::Forever => None,
        };
        let mut waiting = Some(waiting);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::Error(error)) => {
                    return Err(Refused::Failed(Error::state("lock", &path)(error)));
                }
                Err(TryLockError::WouldBlock) => {
                    let now = Instant::now();
                    let holder = holder(&path);
                    let shell_holds_it =
                        wait == Wait::ForDaemonPass && holder.named() && !holder.is_daemon();
                    if shell_holds_it || deadline.is_some_and(|deadline| now >= deadline) {
                        return Err(Refused::Held(holder.describe()));
                    }
                    if let Some(waiting) = waiting.take() {
                        waiting(&holder.describe(), deadline.map(|deadline| deadline - now));
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
        let mut lock = Self { file };
        // The name is for whoever waits, nothing depends on it: a full disk, which makes the
        // write fail, must not keep the daemon from the pass that frees space or from
        // supervising its modules.
        if let Err(error) = lock.name_holder(command) {
            tracing::debug!(lock = %path.display(), "cannot name the holder of the lock: {error}");
        }
        Ok(lock)
    }

    /// Writes this process into the lock file, for a writer that finds the
    /// lock taken. Nothing depends on it being there.
    fn name_holder(&mut self, command: &str) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        writeln!(self.file, "pid {} edged {command}", std::process::id())
    }
}

impl Drop for StateLock {
    /// Empties the lock file before releasing it, so that a free lock names
    /// no holder and the state directory reads the same before and after a
    /// command that changed nothing.
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Why a lock was not taken.
enum Refused {
    /// Another process still held it when the wait was over.
    Held(String),
    /// The lock file could not be used.
    Failed(Error),
}

/// The lock `edged run` holds while it runs; dropping it releases it.
#[derive(Debug)]
pub struct DaemonLock {
    _lock: StateLock,
}

impl DaemonLock {
    /// Takes `state_dir`'s daemon lock, waiting at most `wait` for a daemon
    /// that holds it to exit (logging once whom it waits for). Fails with
    /// [`Error::DaemonRunning`] naming the holder when it still runs.
    pub fn acquire(state_dir: &Path, wait: Duration) -> Result<Self> {
        let path = state_dir.join(DAEMON_LOCK_FILE);
        StateLock::acquire_file(
            state_dir,
            DAEMON_LOCK_FILE,
            "run",
            Wait::AtMost(wait),
            |holder, left| {
                tracing::warn!(
                    %holder,
                    lock = %path.display(),
                    wait = %humantime::format_duration(left.unwrap_or(wait)),
                    "another edged run serves this state directory; waiting for it to exit"
                );
            },
        )
        .map(|lock| Self { _lock: lock })
        .map_err(|refused| match refused {
            Refused::Held(holder) => Error::DaemonRunning {
                holder,
                lock: state_dir.join(DAEMON_LOCK_FILE),
                waited: wait,
            },
            Refused::Failed(error) => error,
        })
    }
}

/// Who holds a lock, as its file says: `pid N edged COMMAND`, or nothing
/// for the instant between the holder taking the lock and naming itself.
struct Holder(Option<String>);

impl Holder {
    /// Whether the holder has named itself.
    fn named(&self) -> bool {
        self.0.is_some()
    }

    /// Whether the holder is a daemon's pass (`pid N edged run`).
    fn is_daemon(&self) -> bool {
        self.0
            .as_deref()
            .is_some_and(|text| text.ends_with(" edged run"))
    }

    /// The holder for a message.
    fn describe(&self) -> String {
        self.0
            .clone()
            .unwrap_or_else(|| "another edged process".to_owned())
    }
}

/// Reads who holds the lock file at `path`.
fn holder(path: &Path) -> Holder {
    let mut text = String::new();
    let read = File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .is_ok();
    let text = text.trim();
    Holder((read && !text.is_empty()).then(|| text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_busy_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "apply", Wait::ForDaemonPass).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts just as another process would.
        // A command from the shell holds it: the default gives up at once.
        let started = Instant::now();
        let error = StateLock::acquire(dir.path(), "rollback", Wait::ForDaemonPass).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        match &error {
            Error::Busy { holder } => {
                assert_eq!(holder, &format!("pid {} edged apply", std::process::id()));
            }
            other => panic!("expected busy, got {other}"),
        }
        assert_eq!(error.exit_code(), 9);
        let started = Instant::now();
        let error = StateLock::acquire(
            dir.path(),
            "rollback",
            Wait::AtMost(Duration::from_millis(300)),
        )
        .unwrap_err();
        assert!(matches!(error, Error::Busy { .. }));
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(first);
        assert_eq!(std::fs::read(dir.path().join(LOCK_FILE)).unwrap(), b"");
        let _second = StateLock::acquire(dir.path(), "rollback", Wait::ForDaemonPass).unwrap();
    }

    #[test]
    fn a_shell_writer_waits_for_a_daemon_pass_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let pass = StateLock::acquire(dir.path(), "run", Wait::ForDaemonPass).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            drop(pass);
        });
        let started = Instant::now();
        let _apply = StateLock::acquire(dir.path(), "apply", Wait::ForDaemonPass).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400));
        releaser.join().unwrap();
    }
}
