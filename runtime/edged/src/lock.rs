//! One writer at a time: every edged command that may change the state
//! directory holds an exclusive lock on `STATE/lock` while it does.
//!
//! The lock is the kernel's (`flock` through `File::try_lock`), so it is
//! released when the holder exits, however it exits: a crashed writer never
//! leaves the device locked. While it is held, the file names the holder
//! (its pid and command), so that a second writer can say whom it waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// How often a waiting writer tries the lock again.
const RETRY: Duration = Duration::from_millis(100);

/// How long a writer waits for the lock before giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Give up at once if another writer holds it.
    No,
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
        std::fs::create_dir_all(state_dir).map_err(Error::state("create", state_dir))?;
        let path = state_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::state("open", &path))?;
        let deadline = match wait {
            Wait::No => Some(Instant::now()),
            Wait::AtMost(limit) => Some(Instant::now() + limit),
            Wait::Forever => None,
        };
        let mut reported = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::Error(error)) => return Err(Error::state("lock", &path)(error)),
                Err(TryLockError::WouldBlock) => {
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        return Err(Error::Busy {
                            holder: holder(&path),
                        });
                    }
                    if !reported {
                        tracing::info!(holder = %holder(&path), "waiting for the state directory lock");
                        reported = true;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
        let mut lock = Self { file };
        lock.name_holder(command)
            .map_err(Error::state("write", &path))?;
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

/// Who holds the lock, as the lock file says.
fn holder(path: &Path) -> String {
    let mut text = String::new();
    let named = File::open(path)
        .and_then(|mut file| file.read_to_string(&mut text))
        .is_ok();
    match text.trim() {
        holder if named && !holder.is_empty() => holder.to_owned(),
        _ => "another edged process".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_busy_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "apply", Wait::No).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts just as another process would.
        let error = StateLock::acquire(dir.path(), "rollback", Wait::No).unwrap_err();
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
        let _second = StateLock::acquire(dir.path(), "rollback", Wait::No).unwrap();
    }
}
