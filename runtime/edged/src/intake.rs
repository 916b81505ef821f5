//! Taking a bundle in: signature, device and anti-rollback checks on the
//! manifest, then one streaming pass that checks every payload byte while it
//! is written into a staging directory. Nothing outside staging is touched,
//! and staging is removed again if anything is wrong.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_bundle::display::{escaped, escaped_message};
use edge_bundle::manifest::{MANIFEST_PATH, SIGNATURES_PATH};
use edge_bundle::{BundleManifest, Sha256Digest, SignatureFile, TarGuard, verify_bundle_with};

use crate::config::{DeviceConfig, Limits};
use crate::durable;
use crate::error::{Error, Result};
use crate::failpoint::{self, Failpoint};
use crate::trust::TrustStore;
use crate::writer::Writer;

/// The largest head entry (`bundle.json`, `bundle.sig.json`) read.
const MAX_HEAD_ENTRY: u64 = 16 << 20;
/// The read buffer for bundle files and for re-hashing installed payload.
const BUFFER: usize = 1 << 20;

/// A bundle whose manifest passed every check, not yet its payload.
pub struct Accepted {
    /// The manifest.
    pub manifest: BundleManifest,
    /// Its canonical bytes.
    pub manifest_bytes: Vec<u8>,
    /// The signature file bytes, kept with the deployment.
    pub signature_bytes: Vec<u8>,
    /// SHA-256 of the manifest bytes.
    pub digest: Sha256Digest,
    /// The trusted keys whose signatures verified.
    pub keys: Vec<edge_bundle::VerifyingKey>,
}

/// Why the head of a bundle (`bundle.json` and `bundle.sig.json`) is refused, typed so that a
/// caller (the registry poller, which checks a head before it fetches any payload) can report
/// and count each kind apart. Every refusal leaves the device as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a manifest of this format: not canonical, outside the grammar, a signature file
    /// that does not parse, or an IoT Edge manifest edged could not run.
    Malformed(String),
    /// Not signed by enough trusted keys.
    Untrusted(String),
    /// Built for another kind of device (compatible string, architecture, OS slots).
    Incompatible(String),
    /// Larger than the device's `[limits]`.
    TooLarge(String),
    /// Its signed expiry has passed by this device's clock.
    Expired {
        /// The deployment name.
        deployment: String,
        /// Its version.
        version: u64,
        /// The signed expiry, RFC 3339 UTC.
        expires: String,
        /// The device's clock when it was judged, RFC 3339 UTC.
        now: String,
    },
    /// Older than the anti-rollback floor.
    Older {
        /// The version offered.
        offered: u64,
        /// The committed version (the floor).
        committed: u64,
    },
    /// The committed version again, with other bytes: a release changed without a new
    /// version, which the device cannot tell from an attack.
    SameVersionOtherContents {
        /// The version.
        version: u64,
    },
    /// Exactly the deployment the device left for an older one at an operator's request
    /// (`edged rollback`): it is in the inactive slot still, and only a newer version replaces
    /// the running one.
    AlreadyLeft {
        /// The version.
        version: u64,
    },
    /// Exactly the deployment that was tried and rolled back as unhealthy; fetching it again
    /// would only fail again, so only a newer version is taken.
    RolledBack {
        /// The version.
        version: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why)
            | Self::Untrusted(why)
            | Self::Incompatible(why)
            | Self::TooLarge(why) => formatter.write_str(why),
            Self::Expired {
                deployment,
                version,
                expires,
                now,
            } => write!(
                formatter,
                "deployment {} version {version} expired at {expires}; this device's clock says {now}",
                escaped(deployment)
            ),
            Self::Older { offered, committed } => write!(
                formatter,
                "the registry serves version {offered}, older than the committed {committed}: refused (anti-rollback)"
            ),
            Self::SameVersionOtherContents { version } => write!(
                formatter,
                "the registry serves version {version}, the committed version: same version, other contents: refused; a changed release needs a higher version"
            ),
            Self::AlreadyLeft { version } => write!(
                formatter,
                "the registry serves version {version}, which this device was rolled back from by request; only a newer version replaces the running one"
            ),
            Self::RolledBack { version } => write!(
                formatter,
                "the registry serves version {version}, which was tried and rolled back as unhealthy; only a newer version is fetched"
            ),
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Expired {
                deployment,
                version,
                expires,
                now,
            } => Error::Expired {
                deployment,
                version,
                expires,
                now,
            },
            other => Error::Refused(other.to_string()),
        }
    }
}

/// Checks the head of the bundle at `path`: signatures against the trust
/// anchors, the device's compatible string and architecture, the signed
/// expiry against the device's clock, the anti-rollback floor and the size
/// limits.
pub fn accept(
    path: &Path,
    config: &DeviceConfig,
    trust: &TrustStore,
    committed_version: u64,
) -> Result<Accepted> {
    let file = open_bundle(path)?;
    let (manifest_bytes, signature_bytes) = read_head(file)?;
    accept_head(
        manifest_bytes,
        signature_bytes,
        config,
        trust,
        committed_version,
    )
}

/// [`accept`] for a head already read (`bundle.json` and `bundle.sig.json` of a fetched
/// bundle), judged by the device's clock now.
pub fn accept_head(
    manifest_bytes: Vec<u8>,
    signature_bytes: Vec<u8>,
    config: &DeviceConfig,
    trust: &TrustStore,
    committed_version: u64,
) -> Result<Accepted> {
    let accepted = judge_head(
        manifest_bytes,
        signature_bytes,
        config,
        trust,
        SystemTime::now(),
    )??;
    if accepted.manifest.version <= committed_version {
        return Err(Error::Refused(format!(
            "deployment {} version {} is not newer than the committed version {committed_version} (anti-rollback)",
            escaped(&accepted.manifest.deployment),
            accepted.manifest.version
        )));
    }
    Ok(accepted)
}

/// Every check of a bundle's head except the anti-rollback floor, whose verdict depends on
/// what the caller does with it: the outer error is the device's own failure (a trust token
/// that cannot be read), the inner one the bundle's refusal. The expiry is judged by `now`,
/// after the signatures, so that only a signed expiry counts; a clock before 1970 counts as
/// 1970.
pub fn judge_head(
    manifest_bytes: Vec<u8>,
    signature_bytes: Vec<u8>,
    config: &DeviceConfig,
    trust: &TrustStore,
    now: SystemTime,
) -> Result<std::result::Result<Accepted, Refusal>> {
    let manifest = match BundleManifest::from_canonical_bytes(&manifest_bytes) {
        Ok(manifest) => manifest,
        Err(error) => return Ok(Err(Refusal::Malformed(error.to_string()))),
    };
    // The log names what the bundle claims to be, verified or not yet (the manifest's grammar
    // has already been checked, so the names are printable).
    tracing::Span::current()
        .record("deployment", manifest.deployment.as_str())
        .record("version", manifest.version);
    let signatures = match SignatureFile::parse(&signature_bytes) {
        Ok(signatures) => signatures,
        Err(error) => return Ok(Err(Refusal::Malformed(error.to_string()))),
    };
    let keys = match trust.verify(&manifest_bytes, &signatures) {
        Ok(keys) => keys,
        Err(Error::Refused(why)) => return Ok(Err(Refusal::Untrusted(why))),
        Err(error) => return Err(error),
    };
    if let Err(why) = check_device(&manifest, config) {
        return Ok(Err(Refusal::Incompatible(why)));
    }
    // The modules are read now so that a deployment edged could not run is refused before
    // anything is installed, instead of failing its trial.
    if let Err(error) = crate::deployment::modules(&manifest) {
        return Ok(Err(Refusal::Malformed(refusal_reason(error)?)));
    }
    if let Err(why) = check_limits(&manifest, &config.limits) {
        return Ok(Err(Refusal::TooLarge(why)));
    }
    if let Some(os) = &manifest.os
        && let Err(error) = crate::os_update::check(config.os.as_ref(), os)
    {
        return Ok(Err(Refusal::Incompatible(refusal_reason(error)?)));
    }
    if let Some(refusal) = check_expiry(&manifest, now) {
        return Ok(Err(refusal));
    }
    Ok(Ok(Accepted {
        digest: Sha256Digest::of(&manifest_bytes),
        manifest,
        manifest_bytes,
        signature_bytes,
        keys,
    }))
}

/// The reason of a refusal, or the error itself when it is the device's.
fn refusal_reason(error: Error) -> Result<String> {
    match error {
        Error::Refused(why) => Ok(why),
        other => Err(other),
    }
}

/// A bundle whose signed expiry is at or before `now` is refused.
fn check_expiry(manifest: &BundleManifest, now: SystemTime) -> Option<Refusal> {
    let expires = manifest.expires_at()?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    (now >= expires).then(|| Refusal::Expired {
        deployment: manifest.deployment.clone(),
        version: manifest.version,
        expires: manifest.expires.clone().unwrap_or_default(),
        now: utc_time(now),
    })
}

/// Seconds since 1970 as RFC 3339 UTC to the second.
pub fn utc_time(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

/// Opens the bundle file, refusing anything but a regular file. The path is
/// checked before it is opened, since opening a FIFO blocks until a writer
/// comes; the open itself does not block (`O_NONBLOCK`, which changes
/// nothing for a regular file), and the opened file is checked again in
/// case the path was replaced in between.
fn open_bundle(path: &Path) -> Result<File> {
    let not_regular = || Error::Refused(format!("{} is not a regular file", path.display()));
    let before = fs::metadata(path)
        .map_err(|error| Error::Refused(format!("cannot open {}: {error}", path.display())))?;
    if !before.is_file() {
        return Err(not_regular());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| Error::Refused(format!("cannot open {}: {error}", path.display())))?;
    let metadata = file
        .metadata()
        .map_err(|error| Error::Refused(format!("cannot stat {}: {error}", path.display())))?;
    if !metadata.is_file() {
        return Err(not_regular());
    }
    if metadata.len() == 0 {
        return Err(Error::Refused(format!("{} is empty", path.display())));
    }
    Ok(file)
}

/// Reads the two head entries, which must come first and be small.
fn read_head(file: File) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut archive = tar::Archive::new(TarGuard::new(BufReader::new(file)));
    let mut entries = archive.entries().map_err(|error| {
        Error::Refused(format!(
            "not a bundle (tar): {}",
            escaped_message(&error.to_string())
        ))
    })?;
    let mut next = |expected: &str| -> Result<Vec<u8>> {
        let entry = entries
            .next()
            .ok_or_else(|| Error::Refused(format!("not a bundle: {expected} is missing")))?
            .map_err(|error| {
                Error::Refused(format!(
                    "not a bundle (tar): {}",
                    escaped_message(&error.to_string())
                ))
            })?;
        let name = entry.path_bytes();
        if *name != *expected.as_bytes() || entry.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::Refused(format!(
                "not a bundle: it must start with {expected}, found {}",
                escaped(&String::from_utf8_lossy(&name))
            )));
        }
        if entry.size() > MAX_HEAD_ENTRY {
            return Err(Error::Refused(format!("{expected} is larger than 16 MiB")));
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_HEAD_ENTRY)
            .read_to_end(&mut bytes)
            .map_err(|error| {
                Error::Refused(format!(
                    "cannot read {expected}: {}",
                    escaped_message(&error.to_string())
                ))
            })?;
        Ok(bytes)
    };
    let manifest = next(MANIFEST_PATH)?;
    let signatures = next(SIGNATURES_PATH)?;
    Ok((manifest, signatures))
}

/// The bundle must be built for exactly this kind of device.
fn check_device(
    manifest: &BundleManifest,
    config: &DeviceConfig,
) -> std::result::Result<(), String> {
    if manifest.compatible != config.compatible {
        return Err(format!(
            "bundle is for devices compatible with {}, this device is {}",
            escaped(&manifest.compatible),
            escaped(&config.compatible)
        ));
    }
    if manifest.architecture != config.architecture {
        return Err(format!(
            "bundle is built for {}, this device is {}",
            manifest.architecture.as_str(),
            config.architecture.as_str()
        ));
    }
    Ok(())
}

/// Entry count and size limits, checked on the signed listing before any
/// byte is written; the streaming pass then holds every entry to its
/// listed size.
fn check_limits(manifest: &BundleManifest, limits: &Limits) -> std::result::Result<(), String> {
    if manifest.payload.len() > limits.max_entries {
        return Err(format!(
            "bundle lists {} payload entries, the device accepts at most {}",
            manifest.payload.len(),
            limits.max_entries
        ));
    }
    let mut total: u64 = 0;
    for file in &manifest.payload {
        if file.size > limits.max_entry_bytes {
            return Err(format!(
                "payload {} is {} bytes, the device accepts at most {} per entry",
                escaped(&file.path),
                file.size,
                limits.max_entry_bytes
            ));
        }
        total = total.saturating_add(file.size);
    }
    if total > limits.max_total_bytes {
        return Err(format!(
            "bundle payload totals {total} bytes, the device accepts at most {}",
            limits.max_total_bytes
        ));
    }
    for pair in manifest.payload.windows(2) {
        let prefix = format!("{}/", pair[0].path);
        if pair[1].path.starts_with(&prefix) {
            return Err(format!(
                "payload {} is both a file and a directory",
                escaped(&pair[0].path)
            ));
        }
    }
    for image in &manifest.images {
        // The listing is sorted, so the first path at or after the directory's is
        // the only one that can lie inside it.
        let inside = format!("{}/", image.path);
        let first = manifest
            .payload
            .partition_point(|file| file.path.as_str() < inside.as_str());
        let holds_payload = manifest
            .payload
            .get(first)
            .is_some_and(|file| file.path.starts_with(&inside));
        if !image.path.starts_with("payload/images/") || !holds_payload {
            return Err(format!(
                "image of module {} points at {}, which holds no payload",
                escaped(&image.module),
                escaped(&image.path)
            ));
        }
    }
    Ok(())
}

/// Streams the bundle again, writing every payload file under `staging`
/// while `edge-bundle` checks its size and digest, then fsyncs what was
/// written. On any failure staging is removed and the error returned.
pub fn extract(path: &Path, accepted: &Accepted, threshold: usize, staging: &Path) -> Result<()> {
    let result = extract_into(path, accepted, threshold, staging);
    if result.is_err() {
        let _ = durable::remove_tree(staging);
    }
    result
}

fn extract_into(path: &Path, accepted: &Accepted, threshold: usize, staging: &Path) -> Result<()> {
    failpoint::hit(Failpoint::StageCreate);
    fs::create_dir(staging).map_err(Error::state("create", staging))?;
    let mut directories: HashSet<PathBuf> = HashSet::from([staging.to_owned()]);
    let file = open_bundle(path)?;
    std::thread::scope(|scope| {
        let mut writer = Writer::start(scope);
        let verified = verify_bundle_with(
            BufReader::with_capacity(BUFFER, file),
            &accepted.keys,
            threshold,
            |listed, reader| {
                let target = staging.join(&listed.path);
                create_parents(staging, &target, &mut directories)?;
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                writer.copy(file, target, reader)
            },
        );
        let checked = check_verified(verified, accepted)
            .and_then(|()| write_head(&mut writer, staging, accepted));
        // A failed write explains a verification aborted by the writer
        // stopping, so it is reported first.
        let written = writer.finish();
        written.map_err(|(path, error)| Error::state("write", &path)(error))?;
        checked
    })?;
    fsync_staged_dirs(directories)
}

/// Fsyncs every directory a staging pass created, deepest first, so that each directory's
/// entries are on disk before the entry naming it in its parent is: the last step of staging,
/// shared by a bundle read from the inbox and one fetched from a registry.
pub(crate) fn fsync_staged_dirs(directories: HashSet<PathBuf>) -> Result<()> {
    failpoint::hit(Failpoint::StageFsyncDirs);
    let mut directories: Vec<PathBuf> = directories.into_iter().collect();
    directories.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    for directory in &directories {
        durable::fsync_dir(directory).map_err(Error::state("fsync", directory))?;
    }
    Ok(())
}

/// The outcome of the verifying pass: every payload byte checked, and the
/// manifest the same as the one accepted (a bundle swapped under edged
/// between the passes is refused).
fn check_verified(
    verified: std::result::Result<edge_bundle::VerifiedBundle, edge_bundle::BundleError>,
    accepted: &Accepted,
) -> Result<()> {
    let verified = verified.map_err(|error| Error::Refused(error.to_string()))?;
    if verified.manifest_digest != accepted.digest {
        return Err(Error::Refused(
            "the bundle changed while it was being read (manifest differs between passes)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Creates the missing parent directories of `target` inside `staging` and
/// remembers each, so that all of them are fsynced once staging is complete.
/// The set makes each lookup constant time: a bundle may hold a hundred
/// thousand files, each in a directory of its own.
pub(crate) fn create_parents(
    staging: &Path,
    target: &Path,
    directories: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    let Some(parent) = target.parent() else {
        return Ok(());
    };
    if directories.contains(parent) {
        return Ok(());
    }
    fs::create_dir_all(parent)?;
    let mut ancestor = parent;
    while ancestor != staging && directories.insert(ancestor.to_owned()) {
        ancestor = ancestor.parent().unwrap_or(staging);
    }
    Ok(())
}

/// Writes the manifest and signature file next to the payload through the
/// writer, so that they are flushed together with the last payload file.
fn write_head(writer: &mut Writer<'_>, staging: &Path, accepted: &Accepted) -> Result<()> {
    for (name, bytes) in [
        (MANIFEST_PATH, &accepted.manifest_bytes),
        (SIGNATURES_PATH, &accepted.signature_bytes),
    ] {
        let path = staging.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::state("create", &path))?;
        writer
            .copy(file, path.clone(), &mut bytes.as_slice())
            .map_err(Error::state("write", &path))?;
    }
    Ok(())
}

/// Re-checks an installed deployment directory against its own manifest:
/// every listed file present with its size and digest. Used before
/// switching back to a slot and by the crash tests' invariant.
pub fn check_installed(deployment_dir: &Path) -> Result<BundleManifest> {
    let manifest_path = deployment_dir.join(MANIFEST_PATH);
    let bytes = fs::read(&manifest_path).map_err(Error::state("read", &manifest_path))?;
    let manifest = BundleManifest::from_canonical_bytes(&bytes)
        .map_err(|error| Error::CorruptState(format!("{}: {error}", manifest_path.display())))?;
    for listed in &manifest.payload {
        let path = deployment_dir.join(&listed.path);
        let file = File::open(&path).map_err(Error::state("read", &path))?;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut reader = BufReader::with_capacity(BUFFER, file);
        let mut size = 0_u64;
        let mut buffer = vec![0_u8; BUFFER];
        loop {
            let count = reader
                .read(&mut buffer)
                .map_err(Error::state("read", &path))?;
            if count == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buffer[..count]);
            size += count as u64;
        }
        let digest = hex::encode(sha2::Digest::finalize(hasher));
        if size != listed.size || digest != listed.sha256 {
            return Err(Error::CorruptState(format!(
                "{} does not match its manifest (size {size}, sha256 {digest})",
                path.display()
            )));
        }
    }
    Ok(manifest)
}
