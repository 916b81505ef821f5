//! The daemon's inbox: a directory bundles are dropped into.
//!
//! The protocol: a writer copies a bundle in under a name that does not end
//! in `.edgebundle` (`NAME.edgebundle.part`) and renames it to
//! `NAME.edgebundle` once it is complete, so edged never sees half a file.
//! edged takes only regular files named `*.edgebundle` (no links, no
//! directories), in name order, and moves each to `applied/` or `refused/`
//! next to a `.log` saying why. Nothing a bundle does stops the daemon: an
//! error, even a panic, refuses it, and one that cannot be moved away is
//! remembered and left alone rather than retried on every pass.
//!
//! A bundle whose module images cannot be pulled for a reason that can pass
//! (the network or the registry is down) stays in the inbox and is tried
//! again after an exponential back-off with jitter (1 s doubling to 5 min,
//! never giving up); `edged status` says what it waits for. Meanwhile the
//! device runs its deployment as before.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::device::{Applied, Device};
use crate::error::Error;
use crate::logging::apply_span;
use crate::state::DesiredStatus;

/// The wait before the second attempt at a bundle whose images could not be
/// pulled …
const PULL_RETRY_FIRST: Duration = Duration::from_secs(1);
/// … doubling per attempt up to this.
const PULL_RETRY_MAX: Duration = Duration::from_secs(300);

/// The extension that marks a complete bundle.
const BUNDLE_SUFFIX: &[u8] = b".edgebundle";

/// Where a bundle goes once it has been taken.
const APPLIED: &str = "applied";
const REFUSED: &str = "refused";

/// An inbox directory and the bundles in it that could not be moved away.
pub struct Inbox {
    dir: PathBuf,
    stuck: BTreeSet<PathBuf>,
    /// Bundles waiting for a registry, with their failed attempts so far
    /// and when to try again.
    waiting: BTreeMap<PathBuf, (u32, Instant)>,
}

/// What became of a bundle taken from the inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Applied; an OS update in it was written to this OS slot.
    Applied(Option<edge_init::boot::Slot>),
    /// Refused or rolled back.
    Refused,
    /// edged panicked applying it: the device must recover before anything
    /// else is applied.
    Panicked,
    /// Its images could not be pulled for now; it stays in the inbox and is
    /// tried again after a back-off.
    Waiting,
}

/// What became of a bundle, with its details.
enum Outcome {
    Applied(Applied),
    Refused(Error),
    Panicked(String),
}

impl Inbox {
    /// The inbox at `dir`, which need not exist yet.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            stuck: BTreeSet::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// The complete bundles waiting, by name, except those that could not
    /// be moved away before and those whose next pull attempt is not due. A missing inbox holds none; one that cannot be
    /// listed is logged and holds none this pass.
    pub fn bundles(&mut self) -> Vec<PathBuf> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(error) => {
                tracing::error!(phase = "inbox", inbox = %self.dir.display(), "cannot list the inbox: {error}");
                return Vec::new();
            }
        };
        let mut bundles: Vec<PathBuf> = entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let regular = entry.file_type().ok()?.is_file();
                (regular && is_bundle_name(&entry.file_name())).then(|| entry.path())
            })
            .collect();
        bundles.sort();
        // A stuck bundle someone has since removed is forgotten.
        self.stuck.retain(|path| bundles.contains(path));
        bundles.retain(|path| !self.stuck.contains(path));
        self.waiting.retain(|path, _| bundles.contains(path));
        let now = Instant::now();
        bundles.retain(|path| self.waiting.get(path).is_none_or(|(_, next)| *next <= now));
        bundles
    }

    /// Applies one bundle and files it under `applied/` or `refused/` with
    /// its log.
    pub fn take(&mut self, device: &mut Device, bundle: &Path) -> Taken {
        let span = apply_span(bundle);
        let _entered = span.enter();
        let outcome = match catch_unwind(AssertUnwindSafe(|| device.apply(bundle))) {
            Ok(Ok(applied)) => Outcome::Applied(applied),
            Ok(Err(error)) => Outcome::Refused(error),
            Err(panic) => Outcome::Panicked(panic_message(panic.as_ref())),
        };
        if let Outcome::Refused(error) = &outcome
            && error.is_transient()
        {
            self.wait_for_registry(device, bundle, error);
            return Taken::Waiting;
        }
        self.waiting.remove(bundle);
        let (folder, message) = match &outcome {
            Outcome::Applied(applied) => {
                tracing::info!(phase = "inbox", "applied");
                (
                    APPLIED,
                    format!("applied version {}", applied.installed.version),
                )
            }
            Outcome::Refused(error) => {
                tracing::warn!(phase = "inbox", reason = %error, "not applied");
                (REFUSED, format!("{error}\nhint: {}", error.hint()))
            }
            Outcome::Panicked(message) => {
                tracing::error!(
                    phase = "inbox",
                    reason = message,
                    "edged panicked applying it; refused"
                );
                (
                    REFUSED,
                    format!(
                        "edged panicked while applying it: {message}\nhint: the device recovers at the next pass; report this as a bug"
                    ),
                )
            }
        };
        if let Err(error) = self.file(bundle, folder, &message) {
            tracing::error!(
                phase = "inbox",
                "{error}; the bundle stays in the inbox and is not retried until it is renamed or removed"
            );
            self.stuck.insert(bundle.to_owned());
        }
        match outcome {
            Outcome::Applied(applied) => Taken::Applied(applied.os_slot),
            Outcome::Refused(_) => Taken::Refused,
            Outcome::Panicked(_) => Taken::Panicked,
        }
    }

    /// Keeps a bundle whose images cannot be pulled now for another attempt
    /// after a back-off, logging the attempt and recording for `edged
    /// status` what the device waits for.
    fn wait_for_registry(&mut self, device: &Device, bundle: &Path, error: &Error) {
        let attempts = self
            .waiting
            .get(bundle)
            .map_or(1, |(attempts, _)| attempts.saturating_add(1));
        let delay = pull_retry_delay(attempts);
        let retry_in = humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)));
        tracing::warn!(
            phase = "inbox",
            attempt = attempts,
            retry_in = %retry_in,
            reason = %error,
            "the bundle's images cannot be pulled now; it stays in the inbox and is tried again"
        );
        let name = bundle.file_name().unwrap_or_default().to_string_lossy();
        let status = DesiredStatus {
            code: 417,
            description: format!(
                "waiting for the registry: {} (attempt {attempts} of bundle {}; next attempt in about {retry_in}); the device runs its current deployment meanwhile",
                edge_bundle::display::escaped_message(&error.to_string()),
                edge_bundle::display::escaped_message(&name)
            ),
        };
        if let Err(store) = device.record_outcome(status) {
            tracing::warn!(
                phase = "inbox",
                "cannot record the wait for edged status: {store}"
            );
        }
        self.waiting
            .insert(bundle.to_owned(), (attempts, Instant::now() + delay));
    }

    /// Moves a taken bundle into `folder` and writes its log next to it.
    fn file(&self, bundle: &Path, folder: &str, message: &str) -> Result<(), Error> {
        let target_dir = self.dir.join(folder);
        std::fs::create_dir_all(&target_dir).map_err(Error::state("create", &target_dir))?;
        let target = target_dir.join(bundle.file_name().unwrap_or_default());
        std::fs::rename(bundle, &target).map_err(Error::state("move", bundle))?;
        let note = target.with_extension("log");
        std::fs::write(&note, format!("{message}\n")).map_err(Error::state("write", &note))
    }
}

/// The wait after failed attempt number `attempts` (1-based): 1 s doubling
/// to 5 min, each spread by up to a quarter either way, so that a fleet whose
/// registry went down does not come back to it all in the same second.
fn pull_retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let delay = PULL_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(PULL_RETRY_MAX);
    // Without randomness (it never fails on Linux) the wait is unspread.
    let spread = getrandom::u32().map_or(0.5, |random| f64::from(random) / f64::from(u32::MAX));
    delay.mul_f64(0.75 + spread / 2.0)
}

/// Whether a file name marks a complete bundle.
fn is_bundle_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    name.len() > BUNDLE_SUFFIX.len() && name.ends_with(BUNDLE_SUFFIX)
}

/// The message a panic carried, when it carried one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_retries_back_off_with_jitter_up_to_a_cap_and_never_stop() {
        for (attempt, base) in [(1, 1), (2, 2), (5, 16), (9, 256), (10, 300), (10_000, 300)] {
            let delay = pull_retry_delay(attempt).as_secs_f64();
            let base = f64::from(base);
            assert!(
                (base * 0.75..=base * 1.25).contains(&delay),
                "attempt {attempt}: {delay}"
            );
        }
    }

    #[test]
    fn only_complete_bundle_names_count() {
        assert!(is_bundle_name(OsStr::new("v2.edgebundle")));
        assert!(!is_bundle_name(OsStr::new("v2.edgebundle.part")));
        assert!(!is_bundle_name(OsStr::new(".edgebundle")));
        assert!(!is_bundle_name(OsStr::new("v2.log")));
    }
}
