//! The pieces of polling a registry for new bundles that need no network, so that the loop in
//! `edged run` that calls the registry client stays a few lines: when the next poll is due (the
//! interval plus a random jitter, from a generator tests seed), what a head's verdict means
//! (fetch, or record and wait), and the update record `STATE/update.json` that `edged status`
//! shows.
//!
//! One poll, as the loop runs it:
//!
//! ```text
//! head    = registry.fetch_head(reference)                    failed: fetch-head
//! verdict = device.check_head(head.bundle_json, head.signatures)  failed: check
//! decide(verdict): Done(result) → record it; Fetch → …
//! registry.fetch_payload(head, |digest| device.local_blob(digest), dir)  failed: fetch-payload
//! applied(device.apply_fetched(dir))                           fetched N, refused, or failed: apply
//! UpdateRecord::polled(…).store(state_dir); sleep until schedule.next_after(now, rng)
//! ```

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use edge_init::status::{UpdateReport as UpdateRecord, UpdateResult, UpdateStep};

use crate::config::UpdateSettings;
use crate::device::{Applied, Verdict};
use crate::durable;
use crate::error::{Error, Result};

/// The update record's file name inside the state directory.
pub const UPDATE_FILE: &str = "update.json";

/// When polls are due: every `interval`, each delayed by up to `jitter` more, so that a fleet
/// started together spreads its polls over the jitter instead of arriving at once; never sooner
/// than `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The time between polls.
    pub interval: Duration,
    /// The most a poll is delayed past the interval.
    pub jitter: Duration,
}

impl Schedule {
    /// The schedule `[update]` asks for.
    pub fn of(settings: &UpdateSettings) -> Self {
        Self {
            interval: settings.interval,
            jitter: settings.jitter(),
        }
    }

    /// When the poll after one at `now` is due.
    pub fn next_after(&self, now: SystemTime, random: &mut Jitter) -> SystemTime {
        let jitter_millis = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let delay = match jitter_millis.checked_add(1) {
            Some(span) => Duration::from_millis(random.draw() % span),
            None => Duration::from_millis(random.draw()),
        };
        now + self.interval + delay
    }
}

/// A small random generator for the jitter (SplitMix64): seeded explicitly in tests, from the
/// process's hash seed otherwise. It decides only when a poll happens, never anything secret.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator whose sequence is fixed by `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded differently in every process (std's random hash keys), so that
    /// devices started at the same moment still draw different delays.
    pub fn from_entropy() -> Self {
        Self(RandomState::new().hash_one(std::process::id()))
    }

    /// The next number.
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^ (mixed >> 31)
    }
}

/// What a poll does after [`crate::Device::check_head`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Fetch the payload of this version and apply it.
    Fetch {
        /// The version offered.
        version: u64,
    },
    /// Nothing to fetch: record this and wait for the next poll.
    Done(UpdateResult),
}

/// What a verdict means for the poll.
pub fn decide(verdict: &Verdict) -> Decision {
    match verdict {
        Verdict::Fetch { version, .. } => Decision::Fetch { version: *version },
        Verdict::UpToDate { version } => {
            Decision::Done(UpdateResult::UpToDate { version: *version })
        }
        Verdict::Refused(refusal) => Decision::Done(UpdateResult::Refused {
            reason: refusal.to_string(),
        }),
    }
}

/// What applying a fetched bundle comes to: a refusal at apply time (the bundle expired while
/// it was fetched, a blob did not match) is recorded as refused; anything else that went wrong
/// (the deployment rolled back, the disk failed) as a failed apply.
pub fn applied(outcome: &Result<Applied>) -> UpdateResult {
    match outcome {
        Ok(applied) => UpdateResult::Fetched {
            version: applied.installed.version,
        },
        Err(error @ (Error::Refused(_) | Error::Expired { .. })) => UpdateResult::Refused {
            reason: error.to_string(),
        },
        Err(error) => failed(UpdateStep::Apply, error),
    }
}

/// A failed step, with its error in one line.
pub fn failed(step: UpdateStep, error: &dyn std::fmt::Display) -> UpdateResult {
    UpdateResult::Failed {
        step,
        error: error.to_string(),
    }
}

/// The record of a poll at `checked` that came to `result`; `manifest_digest` is what the
/// reference resolved to, if the head was fetched (otherwise the record keeps the last one
/// seen, from `previous`).
pub fn polled(
    previous: Option<&UpdateRecord>,
    reference: &str,
    checked: SystemTime,
    result: UpdateResult,
    manifest_digest: Option<String>,
    next: SystemTime,
) -> UpdateRecord {
    UpdateRecord {
        reference: reference.to_owned(),
        last_check: Some(utc(checked)),
        last_result: Some(result),
        last_manifest_digest: manifest_digest.or_else(|| {
            previous
                .filter(|record| record.reference == reference)
                .and_then(|record| record.last_manifest_digest.clone())
        }),
        next_check: Some(utc(next)),
    }
}

/// The record before any poll: only the reference.
pub fn never_polled(reference: &str) -> UpdateRecord {
    UpdateRecord {
        reference: reference.to_owned(),
        last_check: None,
        last_result: None,
        last_manifest_digest: None,
        next_check: None,
    }
}

/// A time as RFC 3339 UTC to the second.
fn utc(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The record's path inside `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(UPDATE_FILE)
}

/// Reads the record; `None` before the first poll.
pub fn load(state_dir: &Path) -> Result<Option<UpdateRecord>> {
    let path = path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            Error::CorruptState(format!("{} does not parse: {error}", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::state("read", &path)(error)),
    }
}

/// Replaces the record atomically (temporary file, fsync, rename, fsync of the directory).
pub fn store(state_dir: &Path, record: &UpdateRecord) -> Result<()> {
    let path = path(state_dir);
    let mut bytes = serde_json::to_vec_pretty(record).map_err(|error| {
        Error::CorruptState(format!("cannot encode the update record: {error}"))
    })?;
    bytes.push(b'\n');
    durable::replace_file(&path, &bytes, None).map_err(Error::state("write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::Refusal;
    use crate::state::{Installed, Slot};
    use std::time::UNIX_EPOCH;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn polls_are_due_after_the_interval_plus_at_most_the_jitter() {
        let schedule = Schedule {
            interval: HOUR,
            jitter: Duration::from_secs(360),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut random = Jitter::seeded(7);
        let delays: Vec<Duration> = (0..1000)
            .map(|_| {
                schedule
                    .next_after(now, &mut random)
                    .duration_since(now)
                    .unwrap()
            })
            .collect();
        assert!(
            delays
                .iter()
                .all(|delay| (HOUR..=HOUR + Duration::from_secs(360)).contains(delay))
        );
        // Spread over the jitter, not bunched at one end.
        let early = delays
            .iter()
            .filter(|delay| **delay < HOUR + Duration::from_secs(180))
            .count();
        assert!(
            (400..600).contains(&early),
            "{early} of 1000 in the first half"
        );
        // The same seed gives the same schedule; another seed another one.
        let replay: Vec<SystemTime> = {
            let mut random = Jitter::seeded(7);
            (0..3)
                .map(|_| schedule.next_after(now, &mut random))
                .collect()
        };
        let mut random = Jitter::seeded(7);
        let again: Vec<SystemTime> = (0..3)
            .map(|_| schedule.next_after(now, &mut random))
            .collect();
        assert_eq!(replay, again);
        let mut other = Jitter::seeded(8);
        assert_ne!(schedule.next_after(now, &mut other), replay[0]);
        // Without jitter, exactly the interval.
        let fixed = Schedule {
            interval: HOUR,
            jitter: Duration::ZERO,
        };
        assert_eq!(fixed.next_after(now, &mut random), now + HOUR);
    }

    #[test]
    fn verdicts_decide_whether_to_fetch() {
        let digest = edge_bundle::Sha256Digest::of(b"bundle.json");
        let fetch = Verdict::Fetch {
            deployment: "plant".to_owned(),
            version: 8,
            manifest_digest: digest,
        };
        assert_eq!(decide(&fetch), Decision::Fetch { version: 8 });
        assert_eq!(
            decide(&Verdict::UpToDate { version: 7 }),
            Decision::Done(UpdateResult::UpToDate { version: 7 })
        );
        assert_eq!(
            decide(&Verdict::Refused(Refusal::Older { offered: 6, committed: 7 })),
            Decision::Done(UpdateResult::Refused {
                reason: "the registry serves version 6, older than the committed 7: refused (anti-rollback)".to_owned()
            })
        );
        let installed = Installed {
            slot: Slot::B,
            deployment: "plant".to_owned(),
            version: 8,
            manifest_digest: "ab".repeat(32),
        };
        let done = Ok(Applied {
            installed,
            previous_version: Some(7),
            os_slot: None,
        });
        assert_eq!(applied(&done), UpdateResult::Fetched { version: 8 });
        let rolled_back = Err(Error::RolledBack {
            version: 8,
            reason: "sensor exited 1".to_owned(),
        });
        assert!(matches!(
            applied(&rolled_back),
            UpdateResult::Failed { step: UpdateStep::Apply, error } if error.contains("sensor exited 1")
        ));
        let refused = Err(Error::Refused("fetched bundle: blob … deleted".to_owned()));
        assert!(matches!(applied(&refused), UpdateResult::Refused { .. }));
    }

    #[test]
    fn the_record_round_trips_and_keeps_the_last_digest_seen() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(load(state.path()).unwrap(), None);
        let reference = "registry.example.com/plant:stable";
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let first = polled(
            None,
            reference,
            at,
            UpdateResult::Fetched { version: 3 },
            Some(format!("sha256:{}", "c".repeat(64))),
            at + HOUR,
        );
        store(state.path(), &first).unwrap();
        assert_eq!(load(state.path()).unwrap().as_ref(), Some(&first));
        assert_eq!(first.last_check.as_deref(), Some("2023-11-14T22:13:20Z"));
        assert_eq!(first.next_check.as_deref(), Some("2023-11-14T23:13:20Z"));
        // A poll that never reached the head keeps the digest last seen.
        let second = polled(
            Some(&first),
            reference,
            at + HOUR,
            failed(UpdateStep::FetchHead, &"connection refused"),
            None,
            at + 2 * HOUR,
        );
        assert_eq!(second.last_manifest_digest, first.last_manifest_digest);
        store(state.path(), &second).unwrap();
        let text = std::fs::read_to_string(path(state.path())).unwrap();
        assert!(text.contains("\"result\": \"failed\""), "{text}");
        assert!(text.contains("\"step\": \"fetch-head\""), "{text}");
        assert!(!durable::temporary_path(&path(state.path())).exists());
        // A changed reference does not inherit the old one's digest.
        let moved = polled(
            Some(&second),
            "registry.example.com/plant:beta",
            at,
            UpdateResult::UpToDate { version: 3 },
            None,
            at,
        );
        assert_eq!(moved.last_manifest_digest, None);
        std::fs::write(path(state.path()), b"{").unwrap();
        assert!(matches!(load(state.path()), Err(Error::CorruptState(_))));
    }
}
