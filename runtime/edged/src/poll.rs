//! `edged run`'s registry poller: every `[update] interval` (plus jitter) it asks the registry
//! what the tag names and, when that is a newer bundle this device accepts, fetches the blobs it
//! lacks and applies them through the transaction.
//!
//! The network runs on a thread of its own, so the daemon keeps supervising its modules (and
//! shell commands keep their turn at the state directory's lock) while a large update
//! downloads; the daemon's passes only start a step and take its result. One poll is a typed
//! sequence of [`Phase`]s:
//!
//! ```text
//! Idle ──due──▶ FetchingHead ──head──▶ check_head (in the pass) ──Fetch──▶ FetchingPayload
//!   ▲               │ unchanged, failed          │ up to date, refused          │ fetched
//!   └───────────────┴────────────────────────────┴──── record ◀── apply_fetched (in the pass)
//! ```
//!
//! Nothing about a payload is fetched before `bundle.json` and its signatures passed
//! [`Device::check_head`]; the payload goes to `STATE/downloads/<manifest digest>/`, where an
//! interrupted blob is resumed by the next attempt (even after a restart), and which is deleted
//! once the bundle is applied. The pure parts (the schedule, the verdicts' meaning, the record)
//! are in [`crate::update`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use edge_bundle::Sha256Digest;
use edge_registry::{
    Credentials, FetchReport, FetchedHead, RegistryClient, RegistryError, RegistryOptions,
};

use crate::config::UpdateSettings;
use crate::device::{Applied, Device};
use crate::error::{Error, Result};
use crate::update::{self, Decision, Jitter, Schedule, UpdateRecord, UpdateResult, UpdateStep};

/// The directory of the state directory that fetched bundles are assembled in.
pub const DOWNLOADS_DIR: &str = "downloads";

/// The first wait after a failed poll …
const RETRY_FIRST: Duration = Duration::from_secs(10);

/// The poller of one daemon.
pub struct Poller {
    settings: UpdateSettings,
    schedule: Schedule,
    jitter: Jitter,
    state_dir: PathBuf,
    phase: Phase,
    /// The record as last stored (or found at start).
    record: Option<UpdateRecord>,
    /// Polls that failed in a row: the next one comes sooner than the interval, after a
    /// back-off, so that a registry that was down for a minute does not delay an update by
    /// a whole interval.
    failures: u32,
}

/// Where a poll is.
enum Phase {
    /// Waiting for the next poll.
    Idle { due: SystemTime },
    /// The tag is being resolved and the bundle's head fetched.
    FetchingHead {
        started: SystemTime,
        task: JoinHandle<HeadOutcome>,
    },
    /// The payload of an accepted head is being fetched into `dir`.
    FetchingPayload {
        started: SystemTime,
        head: Box<FetchedHead>,
        dir: PathBuf,
        task: JoinHandle<std::result::Result<FetchReport, RegistryError>>,
    },
}

/// What fetching a head came to.
enum HeadOutcome {
    /// The tag still names the manifest the device found up to date last time: nothing more
    /// was fetched than the tag's digest.
    Unchanged(Sha256Digest),
    /// A head to judge.
    Head(Box<FetchedHead>),
    /// The registry could not be asked.
    Failed(RegistryError),
}

impl Poller {
    /// A poller for `settings` whose first poll comes after a random part of the jitter, so
    /// that a fleet powered on together does not poll at once.
    pub fn new(settings: &UpdateSettings, state_dir: &Path) -> Self {
        let schedule = Schedule::of(settings);
        let mut jitter = Jitter::from_entropy();
        let first = Schedule {
            interval: Duration::ZERO,
            jitter: schedule.jitter,
        }
        .next_after(SystemTime::now(), &mut jitter);
        let record = update::load(state_dir).unwrap_or_else(|error| {
            tracing::warn!(phase = "update", "starting a new update record: {error}");
            None
        });
        Self {
            settings: settings.clone(),
            schedule,
            jitter,
            state_dir: state_dir.to_owned(),
            phase: Phase::Idle { due: first },
            record,
            failures: 0,
        }
    }

    /// Moves the poll on, in a pass of the daemon (under the state directory's lock): starts a
    /// due poll, judges a fetched head, applies a fetched payload. Returns what an apply did,
    /// so the daemon can reboot into an OS update it wrote.
    pub fn step(&mut self, device: &mut Device) -> Option<Applied> {
        let now = SystemTime::now();
        match std::mem::replace(&mut self.phase, Phase::Idle { due: now }) {
            Phase::Idle { due } if now < due => {
                self.phase = Phase::Idle { due };
                None
            }
            Phase::Idle { .. } => {
                self.phase = self.start_head();
                None
            }
            Phase::FetchingHead { started, task } if !task.is_finished() => {
                self.phase = Phase::FetchingHead { started, task };
                None
            }
            Phase::FetchingHead { started, task } => {
                let outcome = task.join().unwrap_or_else(|_| {
                    HeadOutcome::Failed(RegistryError::Setup {
                        detail: "the fetch thread panicked".to_owned(),
                    })
                });
                self.judge(device, started, outcome);
                None
            }
            Phase::FetchingPayload {
                started,
                head,
                dir,
                task,
            } if !task.is_finished() => {
                self.phase = Phase::FetchingPayload {
                    started,
                    head,
                    dir,
                    task,
                };
                None
            }
            Phase::FetchingPayload {
                started,
                head,
                dir,
                task,
            } => {
                let fetched = task.join().unwrap_or_else(|_| {
                    Err(RegistryError::Setup {
                        detail: "the fetch thread panicked".to_owned(),
                    })
                });
                self.apply(device, started, &head, &dir, fetched)
            }
        }
    }

    /// Starts resolving the tag and fetching its head on a thread.
    fn start_head(&mut self) -> Phase {
        let started = SystemTime::now();
        let up_to_date = self.record.as_ref().and_then(|record| {
            matches!(record.last_result, Some(UpdateResult::UpToDate { .. }))
                .then(|| record.last_manifest_digest.clone())
                .flatten()
        });
        let options = self.options();
        let reference = self.settings.reference.clone();
        tracing::debug!(phase = "update", reference, "polling the registry");
        let task = std::thread::spawn(move || {
            let head = || -> std::result::Result<HeadOutcome, RegistryError> {
                let reference = edge_registry::parse_reference(&reference)?;
                let client = RegistryClient::new(options?)?;
                let digest = client.resolve(&reference)?;
                if up_to_date.as_deref() == Some(digest.oci().as_str()) {
                    return Ok(HeadOutcome::Unchanged(digest));
                }
                Ok(HeadOutcome::Head(Box::new(client.fetch_head(&reference)?)))
            };
            head().unwrap_or_else(HeadOutcome::Failed)
        });
        Phase::FetchingHead { started, task }
    }

    /// Judges a fetched head: records what there is nothing to fetch for, or starts fetching
    /// the payload.
    fn judge(&mut self, device: &Device, started: SystemTime, outcome: HeadOutcome) {
        let head = match outcome {
            HeadOutcome::Unchanged(digest) => {
                let result = self
                    .record
                    .as_ref()
                    .and_then(|record| record.last_result.clone())
                    .unwrap_or(UpdateResult::UpToDate { version: 0 });
                return self.finish(started, result, Some(digest.oci()));
            }
            HeadOutcome::Failed(error) => {
                return self.finish(started, update::failed(UpdateStep::FetchHead, &error), None);
            }
            HeadOutcome::Head(head) => head,
        };
        let digest = Some(head.manifest_digest.oci());
        let verdict = match device.check_head(&head.bundle_json, &head.signatures) {
            Ok(verdict) => verdict,
            Err(error) => {
                return self.finish(started, update::failed(UpdateStep::Check, &error), digest);
            }
        };
        let version = match update::decide(&verdict) {
            Decision::Done(result) => {
                if let UpdateResult::Refused { reason } = &result {
                    tracing::warn!(
                        phase = "update",
                        reference = self.settings.reference,
                        reason,
                        "the registry serves a bundle this device refuses; nothing fetched"
                    );
                }
                return self.finish(started, result, digest);
            }
            Decision::Fetch { version } => version,
        };
        let dir = match self.download_dir(&head.manifest_digest) {
            Ok(dir) => dir,
            Err(error) => {
                return self.finish(
                    started,
                    update::failed(UpdateStep::FetchPayload, &error),
                    digest,
                );
            }
        };
        // The device's own copies of the blobs are found here, in the pass, because finding
        // them reads the slots; the thread only links what it is given.
        let mut have = BTreeMap::new();
        for file in &head.manifest.payload {
            if let Some(blob) = Sha256Digest::from_hex(&file.sha256)
                && !have.contains_key(&blob.hex())
                && let Some(path) = device.local_blob(&blob)
            {
                have.insert(blob.hex(), path);
            }
        }
        tracing::info!(
            phase = "update",
            reference = self.settings.reference,
            deployment = head.manifest.deployment,
            version,
            blobs_on_device = have.len(),
            "the registry serves a newer bundle; fetching what this device lacks"
        );
        let options = self.options();
        let task = {
            let head = head.clone();
            let dir = dir.clone();
            std::thread::spawn(move || {
                let client = RegistryClient::new(options?)?;
                let have = |blob: &Sha256Digest| have.get(&blob.hex()).cloned();
                client.fetch_payload(&head, &have, &dir, &mut |_| {})
            })
        };
        self.phase = Phase::FetchingPayload {
            started,
            head,
            dir,
            task,
        };
    }

    /// Applies a fetched payload and records the outcome.
    fn apply(
        &mut self,
        device: &mut Device,
        started: SystemTime,
        head: &FetchedHead,
        dir: &Path,
        fetched: std::result::Result<FetchReport, RegistryError>,
    ) -> Option<Applied> {
        let digest = Some(head.manifest_digest.oci());
        let report = match fetched {
            Ok(report) => report,
            Err(error) => {
                // The partial blobs stay for the next attempt to resume, unless the disk is
                // full: then they are what would starve the deployment and the hub's store,
                // and the next attempt starts again from nothing.
                if is_disk_full(&error) {
                    tracing::warn!(
                        phase = "update",
                        "the disk is full; deleting the partly fetched bundle {}",
                        dir.display()
                    );
                    if let Err(delete) = crate::durable::remove_tree(dir) {
                        tracing::warn!(
                            phase = "update",
                            "cannot delete {}: {delete}",
                            dir.display()
                        );
                    }
                }
                self.finish(
                    started,
                    update::failed(UpdateStep::FetchPayload, &error),
                    digest,
                );
                return None;
            }
        };
        tracing::info!(
            phase = "update",
            deployment = head.manifest.deployment,
            version = head.manifest.version,
            blobs_fetched = report.blobs_fetched,
            blobs_reused = report.blobs_reused,
            bytes_fetched = report.bytes_fetched,
            "fetched; applying"
        );
        let outcome = device.apply_fetched(dir);
        if outcome.is_ok()
            && let Err(error) = crate::durable::remove_tree(dir)
        {
            tracing::warn!(
                phase = "update",
                "cannot delete the fetched bundle's directory {}: {error}",
                dir.display()
            );
        }
        self.finish(started, update::applied(&outcome), digest);
        outcome.ok()
    }

    /// Records a poll that started at `started` and came to `result`, and schedules the next.
    fn finish(&mut self, started: SystemTime, result: UpdateResult, digest: Option<String>) {
        let now = SystemTime::now();
        let mut next = self.schedule.next_after(now, &mut self.jitter);
        if let UpdateResult::Failed { step, error } = &result {
            self.failures = self.failures.saturating_add(1);
            let doublings = (self.failures - 1).min(16);
            next = next.min(now + RETRY_FIRST.saturating_mul(1 << doublings));
            tracing::warn!(
                phase = "update",
                reference = self.settings.reference,
                step = step.as_str(),
                consecutive_failures = self.failures,
                retry_in = %humantime::format_duration(
                    next.duration_since(now).unwrap_or_default()
                ),
                "polling the registry failed: {error}"
            );
        } else {
            self.failures = 0;
        }
        let record = update::polled(
            self.record.as_ref(),
            &self.settings.reference,
            started,
            result,
            digest,
            next,
        );
        if let Err(error) = update::store(&self.state_dir, &record) {
            tracing::warn!(
                phase = "update",
                "cannot store the update record for edged status: {error}"
            );
        }
        self.record = Some(record);
        self.phase = Phase::Idle { due: next };
    }

    /// The client options of one poll: the CA and the password are read anew each time, so
    /// that rotating them needs no restart.
    fn options(&self) -> std::result::Result<RegistryOptions, RegistryError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| RegistryError::Io {
                action: "read",
                path: path.to_owned(),
                source: error,
            })
        };
        let ca_pem = self.settings.ca.as_deref().map(read).transpose()?;
        let credentials = match (&self.settings.username, &self.settings.password_file) {
            (Some(user), Some(file)) => {
                let password = String::from_utf8_lossy(&read(file)?).trim_end().to_owned();
                Some(Credentials {
                    user: user.clone(),
                    password,
                })
            }
            _ => None,
        };
        Ok(RegistryOptions {
            ca_pem,
            credentials,
            deadline: Some(self.settings.timeout),
            ..RegistryOptions::default()
        })
    }

    /// The directory the bundle with manifest `digest` is fetched into; the directories of
    /// other bundles (a tag that moved on before they were applied) are deleted.
    fn download_dir(&self, digest: &Sha256Digest) -> Result<PathBuf> {
        let downloads = self.state_dir.join(DOWNLOADS_DIR);
        std::fs::create_dir_all(&downloads).map_err(Error::state("create", &downloads))?;
        let keep = digest.hex();
        let entries = std::fs::read_dir(&downloads).map_err(Error::state("read", &downloads))?;
        for entry in entries.flatten() {
            if entry.file_name().to_str() != Some(keep.as_str()) {
                let path = entry.path();
                crate::durable::remove_tree(&path).map_err(Error::state("delete", &path))?;
            }
        }
        Ok(downloads.join(keep))
    }
}

/// Whether a fetch failed because the disk it writes to is full.
fn is_disk_full(error: &RegistryError) -> bool {
    matches!(error, RegistryError::Io { source, .. }
        if source.raw_os_error() == Some(libc::ENOSPC))
}
