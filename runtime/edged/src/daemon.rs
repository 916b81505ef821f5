//! `edged run`: apply the bundles arriving in the inbox, supervise the
//! modules, sleep, again.
//!
//! Each pass holds the state directory's lock, waiting for it while a
//! command from the shell holds it, and first finishes whatever a writer
//! that crashed left behind; the daemon sleeps without the lock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device::Device;
use crate::error::Result;
use crate::inbox::{Inbox, Taken};
use crate::lock::{StateLock, Wait};

/// What the daemon does after a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Sleep this long, then pass again.
    Sleep(Duration),
    /// Exit, so that the init reboots into the OS slot an update was
    /// written to.
    Reboot(edge_init::boot::Slot),
}

/// The daemon's loop over one device.
pub struct Daemon<'device> {
    device: &'device mut Device,
    state_dir: PathBuf,
    inbox: Inbox,
    interval: Duration,
}

impl<'device> Daemon<'device> {
    /// A daemon over `device`, whose state directory is `state_dir`, taking
    /// bundles from `inbox` and passing every `interval`.
    pub fn new(
        device: &'device mut Device,
        state_dir: &Path,
        inbox: &Path,
        interval: Duration,
    ) -> Self {
        Self {
            device,
            state_dir: state_dir.to_owned(),
            inbox: Inbox::new(inbox),
            interval,
        }
    }

    /// Passes until an OS update asks for a reboot, or once.
    pub fn run(&mut self, once: bool) -> Result<()> {
        loop {
            match self.pass()? {
                Next::Reboot(slot) => {
                    tracing::info!(%slot, "OS update written; exiting to reboot into it");
                    return Ok(());
                }
                Next::Sleep(_) if once => return Ok(()),
                Next::Sleep(delay) => std::thread::sleep(delay),
            }
        }
    }

    /// One pass under the lock: recover, apply the inbox, supervise.
    pub fn pass(&mut self) -> Result<Next> {
        let _lock = StateLock::acquire(&self.state_dir, "run", Wait::Forever)?;
        self.recover()?;
        for bundle in self.inbox.bundles() {
            match self.inbox.take(self.device, &bundle) {
                Taken::Applied(Some(slot)) => return Ok(Next::Reboot(slot)),
                Taken::Applied(None) | Taken::Refused => {}
                // A panic may have left a trial open: it is rolled back
                // before the next bundle is tried against it.
                Taken::Panicked => self.recover()?,
            }
        }
        self.device.supervise()?;
        // What the last apply replaced is deleted before another writer may
        // take the lock.
        self.device.wait_for_cleanup();
        Ok(Next::Sleep(self.interval))
    }

    /// Finishes or undoes a transaction a crashed or panicked writer left.
    fn recover(&mut self) -> Result<()> {
        if let Some(what) = self.device.recover()? {
            tracing::warn!(phase = "recover", "recovered an interrupted update: {what}");
        }
        Ok(())
    }
}
