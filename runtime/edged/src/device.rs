//! The A/B transaction: apply, commit, roll back, and recovery of whatever a
//! crash interrupted.
//!
//! The layout of the state directory:
//!
//! ```text
//! state.json                 the state record (see `state.rs`)
//! slots/a/deployment/        a complete, verified deployment: bundle.json,
//!                            bundle.sig.json and payload/…
//! slots/a/staging/           a bundle being extracted (only during apply)
//! slots/a/retired/           the slot's old deployment, being deleted (only during apply)
//! slots/b/…                  the same for slot B
//! ```
//!
//! The active slot is never written to. The only step that changes which
//! deployment the device runs is the atomic replacement of `state.json`.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use edge_bundle::display::escaped_message;
use edge_bundle::manifest::MANIFEST_PATH;

use crate::config::DeviceConfig;
use crate::deployment;
use crate::durable;
use crate::error::{Error, Result};
use crate::failpoint::{self, Failpoint};
use crate::fetched;
use crate::intake::{self, Refusal};
use crate::runtime::{Loaded, ModuleRuntime};
use crate::state::{DesiredStatus, Installed, Phase, Slot, State, Transaction};
use crate::supervision::SupervisionRecord;
use crate::trust::TrustStore;

/// Where the bundle being applied comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A bundle file (`NAME.edgebundle`).
    Bundle(&'a Path),
    /// A directory a registry fetch wrote (see [`crate::fetched`]).
    Fetched(&'a Path),
}

/// What the head of a bundle a registry serves means for this device
/// ([`Device::check_head`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than anything the device has, and acceptable: fetch its payload.
    Fetch {
        /// The deployment name.
        deployment: String,
        /// Its version.
        version: u64,
        /// The digest of its manifest.
        manifest_digest: edge_bundle::Sha256Digest,
    },
    /// The running deployment, byte for byte: nothing to do.
    UpToDate {
        /// Its version.
        version: u64,
    },
    /// Refused; nothing is fetched.
    Refused(Refusal),
}

const DEPLOYMENT: &str = "deployment";
const STAGING: &str = "staging";
const RETIRED: &str = "retired";
const DISCARDED: &str = "discarded";

/// What a successful apply did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The deployment that now runs.
    pub installed: Installed,
    /// The version it replaced, if any.
    pub previous_version: Option<u64>,
    /// The OS slot an OS update in the bundle was written to; it runs after a reboot.
    pub os_slot: Option<edge_init::boot::Slot>,
}

/// A device: its state directory, configuration, trust and module runtime.
pub struct Device {
    state_dir: PathBuf,
    config: DeviceConfig,
    trust: TrustStore,
    runtime: Box<dyn ModuleRuntime>,
    /// The supervision record as last read or written, so that it is only
    /// rewritten when a count changes.
    supervision: Option<SupervisionRecord>,
    /// The deletion of the deployment the last apply replaced.
    cleanup: Option<JoinHandle<Result<()>>>,
}

impl Device {
    /// Opens the state directory (creating its layout on first use) and
    /// finishes or undoes any transaction a crash interrupted.
    pub fn open(
        state_dir: &Path,
        config: DeviceConfig,
        trust: TrustStore,
        runtime: Box<dyn ModuleRuntime>,
    ) -> Result<(Self, Option<String>)> {
        let slots = state_dir.join("slots");
        for slot in [Slot::A, Slot::B] {
            let dir = slots.join(slot.name());
            if !dir.is_dir() {
                std::fs::create_dir_all(&dir).map_err(Error::state("create", &dir))?;
                for parent in [&slots, state_dir] {
                    durable::fsync_dir(parent).map_err(Error::state("fsync", parent))?;
                }
            }
        }
        let mut device = Self::unopened(state_dir, config, trust, runtime);
        let recovered = device.recover()?;
        device.restore_restart_counts()?;
        Ok((device, recovered))
    }

    /// Opens the state directory for reading only: nothing is created,
    /// recovered or rolled back, so a reader never disturbs a transaction
    /// another process is in the middle of (its `state.json` shows it as
    /// such). See [`crate::view::DeviceView`], which exposes only readers.
    pub(crate) fn open_read_only(
        state_dir: &Path,
        config: DeviceConfig,
        trust: TrustStore,
        runtime: Box<dyn ModuleRuntime>,
    ) -> Result<Self> {
        let mut device = Self::unopened(state_dir, config, trust, runtime);
        device.restore_restart_counts()?;
        Ok(device)
    }

    /// The device before anything of its state directory has been read.
    fn unopened(
        state_dir: &Path,
        config: DeviceConfig,
        trust: TrustStore,
        runtime: Box<dyn ModuleRuntime>,
    ) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
            config,
            trust,
            runtime,
            supervision: None,
            cleanup: None,
        }
    }

    /// The device configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The trust store.
    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// The current state record.
    pub fn state(&self) -> Result<State> {
        State::load(&self.state_dir)
    }

    /// The deployment directory of a slot.
    pub fn deployment_dir(&self, slot: Slot) -> PathBuf {
        self.slot_dir(slot).join(DEPLOYMENT)
    }

    fn slot_dir(&self, slot: Slot) -> PathBuf {
        self.state_dir.join("slots").join(slot.name())
    }

    /// Loads the active deployment for the runtime.
    pub fn active(&self) -> Result<Option<Loaded>> {
        match self.state()?.active {
            Some(installed) => self.load(&installed).map(Some),
            None => Ok(None),
        }
    }

    fn load(&self, installed: &Installed) -> Result<Loaded> {
        let dir = self.deployment_dir(installed.slot);
        let path = dir.join("bundle.json");
        let bytes = std::fs::read(&path).map_err(Error::state("read", &path))?;
        if edge_bundle::Sha256Digest::of(&bytes).hex() != installed.manifest_digest {
            return Err(Error::CorruptState(format!(
                "{} is not the manifest the state record names (digest differs)",
                path.display()
            )));
        }
        let manifest = edge_bundle::BundleManifest::from_canonical_bytes(&bytes)
            .map_err(|error| Error::CorruptState(format!("{}: {error}", path.display())))?;
        let modules = deployment::modules(&manifest)
            .map_err(|error| Error::CorruptState(format!("{}: {error}", path.display())))?;
        Ok(Loaded {
            dir,
            manifest,
            modules,
        })
    }

    /// Verifies, stages, switches, runs and health-checks a bundle; commits
    /// it when healthy, otherwise switches back and returns
    /// [`Error::RolledBack`]. A refused bundle changes nothing. The
    /// deployment the new one replaced may still be being deleted when this
    /// returns (see [`Self::wait_for_cleanup`]).
    pub fn apply(&mut self, bundle: &Path) -> Result<Applied> {
        self.apply_from(Source::Bundle(bundle))
            .inspect_err(log_refusal)
    }

    /// [`Self::apply`] for a bundle fetched from a registry into a directory
    /// (`bundle.json`, `bundle.sig.json`, `blobs/sha256/<hex>`; see
    /// [`crate::fetched`]): the same checks and the same transaction. On
    /// success the blobs have moved into the slot and the caller removes what
    /// is left of the directory; on a refusal or failure the verified blobs
    /// are back in it for the next attempt, and blobs that did not match the
    /// signed listing are deleted.
    pub fn apply_fetched(&mut self, dir: &Path) -> Result<Applied> {
        self.apply_from(Source::Fetched(dir))
            .inspect_err(log_refusal)
    }

    /// Judges the head of a bundle a registry serves, before any payload is
    /// fetched: the checks of [`Self::apply_fetched`] without the payload,
    /// and whether it is news. The error is the device's own failure (state
    /// or trust anchors unreadable); a refused bundle is a verdict.
    pub fn check_head(&self, bundle_json: &[u8], signatures: &[u8]) -> Result<Verdict> {
        let state = self.state()?;
        let judged = intake::judge_head(
            bundle_json.to_vec(),
            signatures.to_vec(),
            &self.config,
            &self.trust,
            std::time::SystemTime::now(),
        )?;
        let accepted = match judged {
            Ok(accepted) => accepted,
            Err(refusal) => return Ok(Verdict::Refused(refusal)),
        };
        let digest = accepted.digest.hex();
        let version = accepted.manifest.version;
        let floor = self.floor(&state);
        let active = state.active.as_ref();
        if active.is_some_and(|active| active.manifest_digest == digest) {
            return Ok(Verdict::UpToDate { version });
        }
        if state.rolled_back.as_ref() == Some(&digest) {
            return Ok(Verdict::Refused(Refusal::RolledBack { version }));
        }
        if version > floor {
            return Ok(Verdict::Fetch {
                deployment: accepted.manifest.deployment,
                version,
                manifest_digest: accepted.digest,
            });
        }
        if version < floor {
            return Ok(Verdict::Refused(Refusal::Older {
                offered: version,
                committed: floor,
            }));
        }
        let in_a_slot = [Slot::A, Slot::B].into_iter().any(|slot| {
            std::fs::read(self.deployment_dir(slot).join(MANIFEST_PATH))
                .is_ok_and(|bytes| edge_bundle::Sha256Digest::of(&bytes).hex() == digest)
        });
        Ok(Verdict::Refused(if in_a_slot {
            Refusal::AlreadyLeft { version }
        } else {
            Refusal::SameVersionOtherContents { version }
        }))
    }

    /// A file of a complete deployment in either slot whose signed listing
    /// gives it `digest`, for the fetcher to hard-link instead of download.
    /// Only deployments something vouches for count: the active slot's when
    /// its manifest is the one the state record names, the other slot's (the
    /// rollback target) when its manifest parses; staging, retired and
    /// discarded trees never do. The file itself is hashed before it is
    /// offered, so a damaged copy is never handed on (reading it costs less
    /// than downloading it, and the staging checks it again anyway).
    pub fn local_blob(&self, digest: &edge_bundle::Sha256Digest) -> Option<PathBuf> {
        let state = self.state().ok()?;
        let hex = digest.hex();
        let active_slot = state.active.as_ref().map(|active| active.slot);
        let slots = [Slot::A, Slot::B];
        // The active slot first: it is the deployment the record vouches for.
        let ordered = slots
            .iter()
            .filter(|slot| Some(**slot) == active_slot)
            .chain(slots.iter().filter(|slot| Some(**slot) != active_slot));
        for &slot in ordered {
            let dir = self.deployment_dir(slot);
            let Ok(bytes) = std::fs::read(dir.join(MANIFEST_PATH)) else {
                continue;
            };
            if let Some(active) = &state.active
                && active.slot == slot
                && edge_bundle::Sha256Digest::of(&bytes).hex() != active.manifest_digest
            {
                continue;
            }
            let Ok(manifest) = edge_bundle::BundleManifest::from_canonical_bytes(&bytes) else {
                continue;
            };
            for listed in manifest
                .payload
                .iter()
                .filter(|listed| listed.sha256 == hex)
            {
                let path = dir.join(&listed.path);
                let intact = std::fs::File::open(&path)
                    .and_then(|mut file| crate::fetched::hash(&mut file))
                    .is_ok_and(|(sha256, size)| sha256 == hex && size == listed.size);
                if intact {
                    return Some(path);
                }
            }
        }
        None
    }

    /// Accepts and stages a bundle from `source`, then installs, switches to
    /// and tries it: the one transaction every way in shares.
    fn apply_from(&mut self, source: Source<'_>) -> Result<Applied> {
        // The slot about to be retired may be the one still being deleted
        // (after a rollback the same slot is the target again).
        self.wait_for_cleanup();
        let state = self.state()?;
        let floor = self.floor(&state);
        let accepted = match source {
            Source::Bundle(bundle) => intake::accept(bundle, &self.config, &self.trust, floor)?,
            Source::Fetched(dir) => fetched::accept(dir, &self.config, &self.trust, floor)?,
        };
        let target = state
            .active
            .as_ref()
            .map_or(Slot::A, |active| active.slot.other());
        let staging = self.slot_dir(target).join(STAGING);
        match source {
            Source::Bundle(bundle) => {
                intake::extract(bundle, &accepted, self.trust.threshold(), &staging)?;
            }
            Source::Fetched(dir) => fetched::stage(dir, &accepted, &staging)?,
        }
        self.install_staged(&state, target, &staging, &accepted)
    }

    /// The part of an apply after staging, whatever the bundle came from:
    /// the OS payload, the install into the slot, the switch and the trial.
    fn install_staged(
        &mut self,
        state: &State,
        target: Slot,
        staging: &Path,
        accepted: &intake::Accepted,
    ) -> Result<Applied> {
        self.fetch_images(state, accepted, staging)?;
        let os_slot = self.write_os(staging, accepted).inspect_err(|_| {
            let _ = durable::remove_tree(staging);
        })?;
        // Only once everything that can refuse the bundle has passed is the
        // inactive slot's old deployment (the rollback target) renamed aside;
        // until the switch is recorded, any failure renames it back. If the
        // deployment is not kept, neither is its OS update (a rollback has
        // withdrawn it already; withdrawing again changes nothing, and covers
        // the failures before a rollback could run).
        let applied = self
            .install(target, staging)
            .and_then(|retired| self.switch_to(target, state, accepted, retired))
            .inspect_err(|_| self.withdraw_if_written(os_slot, accepted.manifest.version))?;
        Ok(Applied { os_slot, ..applied })
    }

    /// Makes the images the bundle pins present in the engine, before
    /// anything switches. A failure removes staging, leaves the inactive
    /// slot's deployment (the rollback target) as it was and records why in
    /// `lastDesiredStatus` for `edged status`.
    fn fetch_images(
        &mut self,
        state: &State,
        accepted: &intake::Accepted,
        staging: &Path,
    ) -> Result<()> {
        if accepted.manifest.registry_images.is_empty() {
            return Ok(());
        }
        let Err(error) = self.pull_images(&accepted.manifest) else {
            return Ok(());
        };
        let _ = durable::remove_tree(staging);
        let mut refused = state.clone();
        refused.last_desired_status = DesiredStatus {
            code: 400,
            description: format!(
                "deployment version {} not applied: {}",
                accepted.manifest.version,
                escaped_message(&error.to_string())
            ),
        };
        if let Err(store) = refused.store_outcome(&self.state_dir) {
            tracing::warn!(
                phase = "pull",
                "cannot record the failed pull for edged status: {store}"
            );
        }
        Err(error)
    }

    /// Makes the images `manifest` pins present in the engine: those it
    /// has with the pinned digest are left alone, the others pulled.
    fn pull_images(&mut self, manifest: &edge_bundle::BundleManifest) -> Result<()> {
        let pull = crate::pull::ImagePull::new(manifest, &self.config.registry_credentials)?;
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut progress = crate::pull::Progress::new(&self.state_dir, &pull, terminal);
        self.runtime.fetch_images(&pull, &mut progress)
    }

    /// Records the outcome of a change that did not switch anything (a
    /// bundle waiting for its images), for `edged status`.
    pub fn record_outcome(&self, status: DesiredStatus) -> Result<()> {
        let mut state = self.state()?;
        state.last_desired_status = status;
        state.store_outcome(&self.state_dir)
    }

    /// Takes back the OS update of a bundle that is not kept after all.
    fn withdraw_if_written(&self, os_slot: Option<edge_init::boot::Slot>, version: u64) {
        if os_slot.is_some() {
            self.withdraw_os_update(version);
        }
    }

    /// Whether the deployment a rollback leaves carried an OS update: its
    /// manifest says so, or it cannot be read, in which case the safe answer
    /// (stay on the running OS) is yes.
    fn carries_os_update(&self, target: &Installed) -> bool {
        if self.config.os.is_none() {
            return false;
        }
        let path = self.deployment_dir(target.slot).join(MANIFEST_PATH);
        std::fs::read(path)
            .ok()
            .and_then(|bytes| edge_bundle::BundleManifest::from_canonical_bytes(&bytes).ok())
            .is_none_or(|manifest| manifest.os.is_some())
    }

    /// Makes a pending OS update in the slot that is not running unbootable,
    /// because the deployment that carried it (version `version`) is not
    /// kept: the device must not reboot into an OS whose deployment was
    /// refused or rolled back. A failure is logged, not returned, so it can
    /// never wedge a rollback; the init's boot counting still falls back
    /// from an OS update that does not come up.
    fn withdraw_os_update(&self, version: u64) {
        let Some(config) = &self.config.os else {
            return;
        };
        let outcome = crate::os_update::booted_slot()
            .and_then(|booted| crate::os_update::withdraw(config, booted));
        match outcome {
            Ok(true) => tracing::warn!(
                phase = "rollback",
                version,
                "withdrew the OS update of a deployment that is not kept; the next boot stays on the running OS"
            ),
            Ok(false) => {}
            Err(error) => tracing::error!(
                phase = "rollback",
                version,
                "cannot withdraw the OS update of a deployment that is not kept: {error}"
            ),
        }
    }

    /// Waits until the deployment the last apply replaced is deleted. A
    /// failure is only reported: the transaction was decided without it,
    /// and recovery deletes the leftover at the next start.
    pub fn wait_for_cleanup(&mut self) {
        let Some(deletion) = self.cleanup.take() else {
            return;
        };
        match deletion.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!("{error}; it is deleted at the next start"),
            Err(_) => tracing::warn!("deleting the replaced deployment failed"),
        }
    }

    /// Writes the bundle's OS payload, if any, to the OS slot that is not running and stages
    /// it for the next boot (see [`crate::os_update`]).
    fn write_os(
        &self,
        staging: &Path,
        accepted: &intake::Accepted,
    ) -> Result<Option<edge_init::boot::Slot>> {
        let Some(os) = &accepted.manifest.os else {
            return Ok(None);
        };
        let (config, booted) = crate::os_update::check(self.config.os.as_ref(), os)?;
        crate::os_update::install(config, booted, staging, os).map(Some)
    }

    /// Switches to the deployment installed in `target`, runs the trial and
    /// commits or rolls back. If the switch cannot be recorded, the slot's
    /// retired deployment is put back; once it is, the retired one is
    /// discarded whatever the trial decides.
    fn switch_to(
        &mut self,
        target: Slot,
        state: &State,
        accepted: &intake::Accepted,
        retired: bool,
    ) -> Result<Applied> {
        let installed = Installed {
            slot: target,
            deployment: accepted.manifest.deployment.clone(),
            version: accepted.manifest.version,
            manifest_digest: accepted.digest.hex(),
        };
        let mut switched = state.clone();
        switched.active = Some(installed.clone());
        switched.transaction = Some(Transaction {
            phase: Phase::Trial,
            target: installed.clone(),
            previous: state.active.clone(),
            reason: None,
        });
        switched.last_desired_status = DesiredStatus {
            code: 417,
            description: format!("trying deployment version {}", installed.version),
        };
        if let Err(error) = switched.store(&self.state_dir, failpoint::SWITCH) {
            self.undo_install(target)?;
            return Err(error);
        }
        tracing::info!(
            phase = "trial",
            deployment = installed.deployment,
            version = installed.version,
            slot = %installed.slot,
            window = %humantime::format_duration(self.config.health.window()),
            "switched; watching the health window"
        );
        let decided = self.trial_and_decide(switched, &installed);
        if retired {
            self.discard(target);
        }
        decided?;
        Ok(Applied {
            installed,
            previous_version: state.active.as_ref().map(|active| active.version),
            os_slot: None,
        })
    }

    /// Runs the switched-to deployment through its health window, then
    /// commits it or rolls back.
    fn trial_and_decide(&mut self, switched: State, installed: &Installed) -> Result<()> {
        match self.run_trial(installed) {
            Ok(()) => {
                let mut committed = switched;
                committed.committed_version = installed.version;
                committed.rolled_back = None;
                committed.transaction = None;
                committed.last_desired_status = DesiredStatus {
                    code: 200,
                    description: format!(
                        "deployment {} version {} applied",
                        installed.deployment, installed.version
                    ),
                };
                committed.store(&self.state_dir, failpoint::COMMIT)?;
                tracing::info!(
                    phase = "commit",
                    deployment = installed.deployment,
                    version = installed.version,
                    "committed"
                );
                Ok(())
            }
            Err(reason) => {
                tracing::warn!(
                    phase = "rollback",
                    deployment = installed.deployment,
                    version = installed.version,
                    reason,
                    "unhealthy; rolling back"
                );
                self.roll_back(switched, reason.clone())?;
                Err(Error::RolledBack {
                    version: installed.version,
                    reason,
                })
            }
        }
    }

    /// Renames the slot's deployment aside; returns where to. Nothing refers
    /// to it: the state record only ever names the active slot and the
    /// transaction's previous deployment, which is the active slot too. If
    /// edged stops before the switch is recorded, recovery puts it back.
    fn retire(&self, slot: Slot) -> Result<Option<PathBuf>> {
        let slot_dir = self.slot_dir(slot);
        let current = slot_dir.join(DEPLOYMENT);
        if !current.exists() {
            return Ok(None);
        }
        let retired = slot_dir.join(RETIRED);
        durable::rename(&current, &retired, Failpoint::SlotRetire)
            .map_err(Error::state("rename", &current))?;
        Ok(Some(retired))
    }

    /// Retires the slot's deployment and renames the verified staging
    /// directory into its place; returns whether there was one to retire. On
    /// failure the retired deployment is put back and staging removed.
    fn install(&self, slot: Slot, staging: &Path) -> Result<bool> {
        let slot_dir = self.slot_dir(slot);
        let current = slot_dir.join(DEPLOYMENT);
        let retired = match self.retire(slot) {
            Ok(retired) => retired.is_some(),
            Err(error) => {
                let _ = durable::remove_tree(staging);
                return Err(error);
            }
        };
        if let Err(error) = durable::rename(staging, &current, Failpoint::SlotInstall) {
            self.restore_retired(slot)?;
            let _ = durable::remove_tree(staging);
            return Err(Error::state("rename", staging)(error));
        }
        failpoint::hit(Failpoint::SlotFsync);
        if let Err(error) = durable::fsync_dir(&slot_dir) {
            self.undo_install(slot)?;
            return Err(Error::state("fsync", &slot_dir)(error));
        }
        Ok(retired)
    }

    /// Undoes an install the switch never recorded: the slot's new
    /// deployment is deleted and the retired one, if any, renamed back.
    fn undo_install(&self, slot: Slot) -> Result<()> {
        let current = self.deployment_dir(slot);
        durable::remove_tree(&current).map_err(Error::state("remove", &current))?;
        self.restore_retired(slot)?;
        let slot_dir = self.slot_dir(slot);
        durable::fsync_dir(&slot_dir).map_err(Error::state("fsync", &slot_dir))
    }

    /// Puts a retired deployment back in place of whatever the slot holds
    /// (a new deployment never switched to), durably.
    fn restore_retired(&self, slot: Slot) -> Result<()> {
        let slot_dir = self.slot_dir(slot);
        let retired = slot_dir.join(RETIRED);
        if !retired.exists() {
            return Ok(());
        }
        let current = slot_dir.join(DEPLOYMENT);
        durable::remove_tree(&current).map_err(Error::state("remove", &current))?;
        std::fs::rename(&retired, &current).map_err(Error::state("rename", &retired))?;
        durable::fsync_dir(&slot_dir).map_err(Error::state("fsync", &slot_dir))
    }

    /// Once the switch is decided, renames the slot's retired deployment to
    /// `discarded` (which recovery always deletes, so a half-deleted tree is
    /// never restored) and deletes it on a thread of its own. A failure is
    /// only reported: the transaction was decided without it, and recovery
    /// deletes a retired deployment of the switched-to slot.
    fn discard(&mut self, slot: Slot) {
        let slot_dir = self.slot_dir(slot);
        let retired = slot_dir.join(RETIRED);
        let discarded = slot_dir.join(DISCARDED);
        match durable::rename(&retired, &discarded, Failpoint::SlotDiscard) {
            Ok(()) => self.cleanup = Some(start_deletion(discarded)),
            Err(error) => tracing::warn!(
                path = %retired.display(),
                "cannot rename the replaced deployment aside: {error}; it is deleted at the next start"
            ),
        }
    }

    /// Runs the new deployment and waits out the health window.
    fn run_trial(&mut self, installed: &Installed) -> std::result::Result<(), String> {
        let loaded = self.load(installed).map_err(|error| error.to_string())?;
        failpoint::hit(Failpoint::ReconcileNew);
        self.runtime
            .reconcile(Some(&loaded))
            .map_err(|error| format!("cannot start the modules: {error}"))?;
        failpoint::hit(Failpoint::HealthWait);
        self.runtime.health(&loaded, self.config.health.window())
    }

    /// Switches back to the transaction's previous deployment, restores its
    /// modules and closes the transaction.
    fn roll_back(&mut self, mut state: State, reason: String) -> Result<()> {
        let transaction = state
            .transaction
            .take()
            .ok_or_else(|| Error::CorruptState("rollback without a transaction".to_owned()))?;
        state.active = transaction.previous.clone();
        state.transaction = Some(Transaction {
            phase: Phase::RollingBack,
            reason: Some(reason),
            ..transaction
        });
        state.store(&self.state_dir, failpoint::ROLLBACK)?;
        self.finish_rollback(state)
    }

    /// Restores the previous deployment's modules and closes the rollback.
    /// A previous deployment that cannot be loaded (its manifest damaged or
    /// missing) must not wedge the device in `rolling-back`: the rollback
    /// then ends with no deployment running, the floor kept, so that any
    /// newer good bundle applies.
    fn finish_rollback(&mut self, mut state: State) -> Result<()> {
        let transaction = state
            .transaction
            .take()
            .ok_or_else(|| Error::CorruptState("rollback without a transaction".to_owned()))?;
        failpoint::hit(Failpoint::ReconcileOld);
        if self.carries_os_update(&transaction.target) {
            self.withdraw_os_update(transaction.target.version);
        }
        let mut unusable = None;
        let previous = match &state.active {
            Some(installed) => match self.load(installed) {
                Ok(loaded) => Some(loaded),
                Err(error) => {
                    unusable = Some(format!(
                        "no deployment, because version {} in slot {} is unusable ({})",
                        installed.version,
                        installed.slot,
                        escaped_message(&error.to_string())
                    ));
                    None
                }
            },
            None => None,
        };
        if unusable.is_some() {
            state.active = None;
        }
        self.runtime.reconcile(previous.as_ref())?;
        // A target that was never committed may be tried again: its slot
        // must not raise the floor.
        state.rolled_back = (transaction.target.version > state.committed_version)
            .then(|| transaction.target.manifest_digest.clone());
        let back_to = unusable.unwrap_or_else(|| {
            state.active.as_ref().map_or_else(
                || "no deployment".to_owned(),
                |active| format!("version {}", active.version),
            )
        });
        state.last_desired_status = DesiredStatus {
            code: 400,
            description: format!(
                "deployment version {} rolled back to {back_to}: {}",
                transaction.target.version,
                transaction.reason.as_deref().unwrap_or("unhealthy")
            ),
        };
        state.store(&self.state_dir, failpoint::ROLLBACK_DONE)?;
        tracing::warn!(
            phase = "rollback",
            deployment = transaction.target.deployment,
            version = transaction.target.version,
            "{}",
            state.last_desired_status.description
        );
        Ok(())
    }

    /// The anti-rollback floor: a bundle must be newer than the record's
    /// committed version and than every deployment in either slot, except
    /// the one recorded as rolled back without a commit. So a record whose
    /// committed version was lowered (a bit flip) or lost (`state.json`
    /// deleted) cannot let an old bundle back in while a slot holds a newer
    /// one; a damaged record errs towards a higher floor, never a lower one.
    /// A slot's manifest only counts if it parses (a damaged one is no
    /// evidence of anything; the record still is).
    pub fn floor(&self, state: &State) -> u64 {
        let slot_versions = [Slot::A, Slot::B].into_iter().filter_map(|slot| {
            let path = self.deployment_dir(slot).join(MANIFEST_PATH);
            let bytes = std::fs::read(path).ok()?;
            let digest = edge_bundle::Sha256Digest::of(&bytes).hex();
            if state.rolled_back.as_ref() == Some(&digest) {
                return None;
            }
            edge_bundle::BundleManifest::from_canonical_bytes(&bytes)
                .ok()
                .map(|manifest| manifest.version)
        });
        slot_versions.fold(state.committed_version, u64::max)
    }

    /// A device whose `state.json` is gone while its slots hold deployments
    /// gets a record rebuilt from them: no deployment runs (none is known to
    /// be committed) and the floor is the highest version in a slot.
    fn rebuild_lost_record(&self) -> Result<Option<String>> {
        if State::path(&self.state_dir).exists()
            || [Slot::A, Slot::B]
                .iter()
                .all(|slot| !self.deployment_dir(*slot).exists())
        {
            return Ok(None);
        }
        let mut state = State::default();
        state.committed_version = self.floor(&state);
        state.last_desired_status = DesiredStatus {
            code: 400,
            description: format!(
                "state.json was missing; no deployment runs, and the anti-rollback floor was rebuilt from the slots as version {}: apply a newer bundle",
                state.committed_version
            ),
        };
        state.store(&self.state_dir, failpoint::ROLLBACK_DONE)?;
        Ok(Some(state.last_desired_status.description))
    }

    /// Removes leftovers of an interrupted apply and finishes or undoes an
    /// interrupted transaction. Returns what it did, if anything.
    pub fn recover(&mut self) -> Result<Option<String>> {
        self.wait_for_cleanup();
        let temporary = durable::temporary_path(&State::path(&self.state_dir));
        if temporary.exists() {
            std::fs::remove_file(&temporary).map_err(Error::state("remove", &temporary))?;
        }
        let rebuilt = self.rebuild_lost_record()?;
        let state = self.state()?;
        for slot in [Slot::A, Slot::B] {
            for leftover in [STAGING, DISCARDED] {
                let path = self.slot_dir(slot).join(leftover);
                durable::remove_tree(&path).map_err(Error::state("remove", &path))?;
            }
            // A retired deployment whose replacement was never switched to
            // is still the slot's deployment: it is put back.
            let switched = state
                .active
                .as_ref()
                .is_some_and(|active| active.slot == slot)
                || state
                    .transaction
                    .as_ref()
                    .is_some_and(|transaction| transaction.target.slot == slot);
            if switched {
                let retired = self.slot_dir(slot).join(RETIRED);
                durable::remove_tree(&retired).map_err(Error::state("remove", &retired))?;
            } else {
                self.restore_retired(slot)?;
            }
        }
        let Some(transaction) = state.transaction.clone() else {
            return Ok(rebuilt);
        };
        let version = transaction.target.version;
        match transaction.phase {
            Phase::Trial => {
                let reason = format!(
                    "edged stopped before deployment version {version} was confirmed healthy"
                );
                self.roll_back(state, reason)?;
                Ok(Some(format!(
                    "rolled back the unconfirmed deployment version {version}"
                )))
            }
            Phase::RollingBack => {
                self.finish_rollback(state)?;
                Ok(Some(format!(
                    "finished rolling back deployment version {version}"
                )))
            }
        }
    }

    /// Goes back to the deployment in the other slot, on an operator's
    /// request. The anti-rollback floor stays where it is.
    pub fn rollback(&mut self) -> Result<Installed> {
        let state = self.state()?;
        let active = state
            .active
            .clone()
            .ok_or_else(|| Error::NothingToRollBack("the device has no deployment".to_owned()))?;
        let other = active.slot.other();
        let dir = self.deployment_dir(other);
        if !dir.is_dir() {
            return Err(Error::NothingToRollBack(format!(
                "slot {other} holds no previous deployment"
            )));
        }
        let manifest = intake::check_installed(&dir).map_err(|error| {
            Error::NothingToRollBack(format!("slot {other} is not intact: {error}"))
        })?;
        let previous = Installed {
            slot: other,
            deployment: manifest.deployment.clone(),
            version: manifest.version,
            manifest_digest: manifest
                .digest()
                .map_err(|error| Error::CorruptState(error.to_string()))?
                .hex(),
        };
        let mut trial = state;
        trial.transaction = Some(Transaction {
            phase: Phase::Trial,
            target: active,
            previous: Some(previous.clone()),
            reason: None,
        });
        self.roll_back(trial, "rolled back by the operator".to_owned())?;
        Ok(previous)
    }

    /// Hands the runtime the restart counts recorded for the active
    /// deployment by an earlier edged process.
    fn restore_restart_counts(&mut self) -> Result<()> {
        let Some(active) = self.state()?.active else {
            return Ok(());
        };
        let record = SupervisionRecord::load(&self.state_dir)
            .filter(|record| record.manifest_digest == active.manifest_digest);
        if let Some(record) = &record {
            self.runtime.restore_restart_counts(&record.restart_counts);
        }
        self.supervision = record;
        Ok(())
    }

    /// One supervision pass over the active deployment; records the restart
    /// counts whenever they change, for `edged status` in other processes.
    pub fn supervise(&mut self) -> Result<()> {
        let Some(installed) = self.state()?.active else {
            return self.runtime.supervise(None);
        };
        let loaded = self.load(&installed)?;
        self.follow_deployment_change(&installed, &loaded);
        if let Err(error) = self.runtime.supervise(Some(&loaded)) {
            // An image the deployment pins may have gone from the engine since it was pulled
            // (`docker image prune -a`, an engine whose storage was reset): it is pulled again
            // and the pass retried once. Only a failed pass pays for the check.
            if loaded.manifest.registry_images.is_empty() {
                return Err(error);
            }
            tracing::warn!(
                phase = "supervise",
                "supervision failed ({error}); making sure the pinned images are present"
            );
            self.pull_images(&loaded.manifest)?;
            self.runtime.supervise(Some(&loaded))?;
        }
        let record = SupervisionRecord {
            manifest_digest: installed.manifest_digest,
            restart_counts: self.runtime.restart_counts(),
        };
        if self.supervision.as_ref() != Some(&record) {
            record.store(&self.state_dir)?;
            self.supervision = Some(record);
        }
        Ok(())
    }

    /// When the active deployment is not the one the restart counts belong
    /// to (another edged process applied or rolled back since the last
    /// pass), the runtime counts on from what was recorded for it, or from
    /// zero, rather than carrying the old deployment's counts over.
    fn follow_deployment_change(&mut self, installed: &Installed, loaded: &Loaded) {
        let current = self
            .supervision
            .as_ref()
            .is_some_and(|record| record.manifest_digest == installed.manifest_digest);
        if current {
            return;
        }
        let recorded = SupervisionRecord::load(&self.state_dir)
            .filter(|record| record.manifest_digest == installed.manifest_digest);
        let counts = loaded
            .modules
            .iter()
            .map(|module| {
                let count = recorded
                    .as_ref()
                    .and_then(|record| record.restart_counts.get(&module.name).copied())
                    .unwrap_or(0);
                (module.name.clone(), count)
            })
            .collect();
        self.runtime.restore_restart_counts(&counts);
        self.supervision = recorded;
    }

    /// The module states of the active deployment.
    pub fn module_status(&mut self) -> Result<Vec<(String, crate::runtime::ModuleStatus)>> {
        let active = self.active()?;
        self.runtime.status(active.as_ref())
    }
}

/// Logs a refused bundle as one event with its reason, in the apply's span.
fn log_refusal(error: &Error) {
    match error {
        Error::Refused(reason) => tracing::warn!(phase = "verify", reason, "bundle refused"),
        Error::Expired { .. } => {
            tracing::warn!(phase = "verify", reason = %error, "bundle refused: expired");
        }
        _ => {}
    }
}

/// Deletes a retired deployment on a thread of its own.
fn start_deletion(retired: PathBuf) -> JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        failpoint::hit(Failpoint::SlotRemoveRetired);
        durable::remove_tree(&retired).map_err(Error::state("remove", &retired))
    })
}

impl Drop for Device {
    /// A process ends only once the replaced deployment is deleted.
    fn drop(&mut self) {
        self.wait_for_cleanup();
    }
}
