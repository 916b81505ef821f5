//! `edged run`: apply the bundles arriving in the inbox or from the
//! registry `[update]` polls (`poll.rs`), supervise the modules, sleep, again.
//!
//! Each pass holds the state directory's lock, waiting for it while a
//! command from the shell holds it, and first finishes whatever a writer
//! that crashed left behind; the daemon sleeps without the lock.
//!
//! A pass that fails (the engine does not answer for a moment, the state
//! directory is briefly unreadable) does not end the daemon, which on an OS
//! image would reboot the device: it is logged and recorded for `edged
//! status` (`supervision-failure.json`), and the next pass comes after a
//! back-off of 1 s doubling to 1 min, until one succeeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::inbox::{Inbox, Taken};
use crate::lock::{StateLock, Wait};
use crate::poll::Poller;
use crate::stop::StopSignals;
use crate::supervision::{FailureRecord, SupervisionFailure};

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
    /// The passes failing in a row, if the last one failed.
    streak: FailureStreak,
    /// The registry poller, when `[update]` names a registry.
    poller: Option<Poller>,
}

/// The back-off after the first failed pass …
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// … doubling per failure up to this.
const RETRY_MAX: Duration = Duration::from_secs(60);

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
            streak: FailureStreak::new(state_dir),
            poller: None,
        }
    }

    /// Polls the registry `[update]` names, as well as the inbox.
    pub fn with_poller(mut self, poller: Option<Poller>) -> Self {
        self.poller = poller;
        self
    }

    /// Passes until an OS update asks for a reboot. With `once`, passes
    /// once and returns a failure as the command's error.
    /// `stop` ends the loop between passes when SIGTERM or SIGINT arrives;
    /// without it (a single pass), the signals keep their default effect.
    pub fn run(&mut self, once: bool, stop: Option<&StopSignals>) -> Result<()> {
        // A record a daemon before this one left describes that daemon.
        if let Err(error) = SupervisionFailure::clear(&self.state_dir) {
            tracing::warn!(
                phase = "supervise",
                "cannot clear an earlier daemon's failure record: {error}"
            );
        }
        loop {
            let next = if once { self.pass()? } else { self.step() };
            match next {
                Next::Reboot(slot) => {
                    tracing::info!(%slot, "OS update written to slot {slot}; exiting to reboot into it");
                    return Ok(());
                }
                Next::Sleep(_) if once => return Ok(()),
                Next::Sleep(delay) => match stop {
                    Some(stop) => {
                        if let Some(signal) = stop.sleep(delay) {
                            tracing::info!(signal, "stopping on {signal}");
                            return Ok(());
                        }
                    }
                    None => std::thread::sleep(delay),
                },
            }
        }
    }

    /// One pass whose failure is logged, recorded and answered with a
    /// back-off instead of ending the daemon.
    pub fn step(&mut self) -> Next {
        match self.pass() {
            Ok(next) => {
                self.streak.succeeded();
                next
            }
            Err(error) => Next::Sleep(self.streak.failed(&error)),
        }
    }

    /// One pass under the lock: recover, apply the inbox, supervise.
    pub fn pass(&mut self) -> Result<Next> {
        let _lock = StateLock::acquire(&self.state_dir, "run", Wait::Forever)?;
        self.recover()?;
        for bundle in self.inbox.bundles() {
            match self.inbox.take(self.device, &bundle) {
                Taken::Applied(Some(slot)) => return Ok(Next::Reboot(slot)),
                Taken::Applied(None) | Taken::Refused | Taken::Waiting => {}
                // A panic may have left a trial open: it is rolled back
                // before the next bundle is tried against it.
                Taken::Panicked => self.recover()?,
            }
        }
        if let Some(poller) = &mut self.poller
            && let Some(applied) = poller.step(self.device)
            && let Some(slot) = applied.os_slot
        {
            return Ok(Next::Reboot(slot));
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

/// Failures of the daemon's passes in a row: each is logged, recorded for
/// `edged status` (`supervision-failure.json`) and answered with a back-off;
/// the record is cleared once a pass works again.
pub struct FailureStreak {
    state_dir: PathBuf,
    failure: Option<SupervisionFailure>,
}

impl FailureStreak {
    /// No failures yet, recorded in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
            failure: None,
        }
    }

    /// Records a failed pass; returns how long to wait before the next.
    pub fn failed(&mut self, error: &Error) -> Duration {
        let failure = match self.failure.take() {
            Some(failure) => SupervisionFailure {
                last_error: error.to_string(),
                consecutive_failures: failure.consecutive_failures.saturating_add(1),
                ..failure
            },
            None => SupervisionFailure {
                last_error: error.to_string(),
                since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                consecutive_failures: 1,
            },
        };
        let doublings = (failure.consecutive_failures - 1).min(16);
        let retry = RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX);
        tracing::error!(
            phase = "supervise",
            consecutive_failures = failure.consecutive_failures,
            since = failure.since,
            retry_in = %humantime::format_duration(retry),
            reason = %error,
            "supervision pass failed; retrying after a back-off"
        );
        if let Err(store) = failure.store(&self.state_dir) {
            tracing::warn!(
                phase = "supervise",
                "cannot record the failure for edged status: {store}"
            );
        }
        self.failure = Some(failure);
        retry
    }

    /// Clears the failure record once a pass succeeds again.
    pub fn succeeded(&mut self) {
        let Some(failure) = self.failure.take() else {
            return;
        };
        tracing::info!(
            phase = "supervise",
            consecutive_failures = failure.consecutive_failures,
            since = failure.since,
            "supervision works again"
        );
        if let Err(error) = SupervisionFailure::clear(&self.state_dir) {
            tracing::warn!(
                phase = "supervise",
                "cannot clear the failure record: {error}"
            );
        }
    }
}

/// Connects to the module runtime for the daemon, waiting while it does not
/// answer: an engine that comes up after edged (as on a booting device) or
/// is restarting must not end the daemon, which on an OS image would reboot
/// the device. Each failed attempt is a failing pass (logged, recorded for
/// `edged status`, retried after the same back-off).
pub fn until_connected<T>(state_dir: &Path, mut connect: impl FnMut() -> Result<T>) -> T {
    let mut streak = FailureStreak::new(state_dir);
    loop {
        match connect() {
            Ok(connected) => {
                streak.succeeded();
                return connected;
            }
            Err(error) => std::thread::sleep(streak.failed(&error)),
        }
    }
}
