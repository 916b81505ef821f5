//! Taking in a bundle fetched from a registry, which arrives as a directory rather than a tar:
//!
//! ```text
//! DIR/bundle.json            the exact bytes of the signed manifest
//! DIR/bundle.sig.json        the exact bytes of the signatures
//! DIR/blobs/sha256/<hex>     one file per distinct payload sha256, not yet verified
//! ```
//!
//! The head is accepted with the same checks as a bundle file's ([`intake::accept_head`]);
//! then every payload path of the listing is staged from its blob: the blob is hashed and its
//! size checked against the signed listing, fsynced, and renamed into `staging/payload/…` where
//! the listing uses it once (hard-linked where it uses it under several paths, the last of them
//! renamed; copied where the directory is on another file system). What staging holds is thus
//! exactly what the tar extraction would have written, and the shared install, switch and trial
//! follow.
//!
//! A refusal or failure removes staging and leaves the fetched directory fit for the next
//! attempt: blobs already verified and renamed into staging are renamed back, a blob that does
//! not match the listing is deleted (so the fetcher downloads it again), and missing blobs are
//! named. A crash instead loses the blobs renamed into staging (recovery removes staging); the
//! next attempt fetches them again.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use edge_bundle::PayloadFile;
use edge_bundle::display::escaped;
use edge_bundle::manifest::{MANIFEST_PATH, SIGNATURES_PATH};

use crate::config::DeviceConfig;
use crate::durable;
use crate::error::{Error, Result};
use crate::failpoint::{self, Failpoint};
use crate::intake::{self, Accepted, create_parents};
use crate::trust::TrustStore;

/// Where a fetched directory keeps its payload blobs.
pub const BLOBS: &str = "blobs/sha256";
/// The largest head file read, as for a bundle file's head entries.
const MAX_HEAD_FILE: u64 = 16 << 20;
/// The read buffer for hashing and copying blobs.
const BUFFER: usize = 1 << 20;

/// Reads `bundle.json` and `bundle.sig.json` of a fetched directory.
pub fn read_head(dir: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok((
        read_small(&dir.join(MANIFEST_PATH))?,
        read_small(&dir.join(SIGNATURES_PATH))?,
    ))
}

/// Checks the head of a fetched directory exactly as [`intake::accept`] checks a bundle's.
pub fn accept(
    dir: &Path,
    config: &DeviceConfig,
    trust: &TrustStore,
    committed_version: u64,
) -> Result<Accepted> {
    let (manifest, signatures) = read_head(dir)?;
    intake::accept_head(manifest, signatures, config, trust, committed_version)
}

/// Reads one head file: a regular file (not a link) of at most 16 MiB.
fn read_small(path: &Path) -> Result<Vec<u8>> {
    let refused = |why: String| Error::Refused(format!("fetched bundle: {why}"));
    let file = open_regular(path)
        .map_err(|error| refused(format!("cannot open {}: {error}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_HEAD_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| refused(format!("cannot read {}: {error}", path.display())))?;
    if bytes.len() as u64 > MAX_HEAD_FILE {
        return Err(refused(format!("{} is larger than 16 MiB", path.display())));
    }
    Ok(bytes)
}

/// Opens a file for reading that must be a regular file: links are not followed and FIFOs do
/// not block the open.
fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// The blob file of a digest inside a fetched directory.
pub fn blob_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(BLOBS).join(sha256)
}

/// Stages the payload of an accepted fetched directory into `staging`, which must not exist.
/// On any failure staging is removed, verified blobs are put back and mismatching ones
/// deleted.
pub fn stage(dir: &Path, accepted: &Accepted, staging: &Path) -> Result<()> {
    let mut taken = Vec::new();
    let result = stage_into(dir, accepted, staging, &mut taken);
    if result.is_err() {
        give_back(&taken);
        let _ = durable::remove_tree(staging);
    }
    result
}

/// A blob renamed into staging, and its place in the fetched directory.
struct Taken {
    staged: PathBuf,
    blob: PathBuf,
}

/// Puts verified blobs back where the fetcher left them, for the next attempt. A blob that
/// cannot be renamed back is only logged: it is fetched again.
fn give_back(taken: &[Taken]) {
    for Taken { staged, blob } in taken {
        if let Err(error) = fs::rename(staged, blob) {
            tracing::warn!(
                blob = %blob.display(),
                "cannot put a verified blob back into the fetched directory: {error}; it is fetched again"
            );
        }
    }
}

fn stage_into(
    dir: &Path,
    accepted: &Accepted,
    staging: &Path,
    taken: &mut Vec<Taken>,
) -> Result<()> {
    let payload = &accepted.manifest.payload;
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for listed in payload {
        *uses.entry(listed.sha256.as_str()).or_default() += 1;
    }
    let missing: Vec<&PayloadFile> = payload
        .iter()
        .filter(|listed| fs::symlink_metadata(blob_path(dir, &listed.sha256)).is_err())
        .collect();
    if let Some(first) = missing.first() {
        let digests: HashSet<&str> = missing
            .iter()
            .map(|listed| listed.sha256.as_str())
            .collect();
        return Err(Error::Refused(format!(
            "fetched bundle: {} of its {} payload blobs are missing, the first sha256:{} for {}",
            digests.len(),
            uses.len(),
            first.sha256,
            escaped(&first.path)
        )));
    }
    failpoint::hit(Failpoint::StageCreate);
    fs::create_dir(staging).map_err(Error::state("create", staging))?;
    let mut directories: HashSet<PathBuf> = HashSet::from([staging.to_owned()]);
    // The open, verified blob of each digest, until its last use is placed.
    let mut verified: HashMap<&str, File> = HashMap::new();
    for listed in payload {
        let blob = blob_path(dir, &listed.sha256);
        if !verified.contains_key(listed.sha256.as_str()) {
            let file = verify_blob(&blob, listed)?;
            verified.insert(listed.sha256.as_str(), file);
        }
        let target = staging.join(&listed.path);
        create_parents(staging, &target, &mut directories)
            .map_err(Error::state("create", &target))?;
        let remaining = uses
            .get_mut(listed.sha256.as_str())
            .ok_or_else(|| Error::CorruptState("a digest the listing did not count".to_owned()))?;
        *remaining -= 1;
        let last = *remaining == 0;
        let source = if last {
            verified.remove(listed.sha256.as_str())
        } else {
            None
        };
        match source {
            Some(file) => {
                place(&blob, &target, listed, &file, Placement::Rename, taken)?;
            }
            None => {
                let file = verified
                    .get(listed.sha256.as_str())
                    .ok_or_else(|| Error::CorruptState("a blob verified once".to_owned()))?;
                place(&blob, &target, listed, file, Placement::Link, taken)?;
            }
        }
    }
    write_head(staging, accepted)?;
    crate::intake::fsync_staged_dirs(directories)
}

/// Hashes a blob and checks it against the signed listing, then fsyncs it (the fetcher may not
/// have): the staged file is this one, renamed or linked, and it must be on disk before the
/// switch. A blob that does not match is deleted, so that the next fetch downloads it again.
fn verify_blob(blob: &Path, listed: &PayloadFile) -> Result<File> {
    let refused = |why: String| {
        Error::Refused(format!(
            "fetched bundle: blob sha256:{} for {}: {why}",
            listed.sha256,
            escaped(&listed.path)
        ))
    };
    let mut file =
        open_regular(blob).map_err(|error| refused(format!("cannot open it: {error}")))?;
    let (digest, size) =
        hash(&mut file).map_err(|error| refused(format!("cannot read it: {error}")))?;
    if size != listed.size || digest != listed.sha256 {
        let removed = match fs::remove_file(blob) {
            Ok(()) => "deleted, to be fetched again",
            Err(_) => "could not be deleted",
        };
        return Err(refused(format!(
            "it is {size} bytes with sha256:{digest}, the signed listing says {} bytes ({removed})",
            listed.size
        )));
    }
    failpoint::hit(Failpoint::StageFsyncFile);
    file.sync_all().map_err(Error::state("fsync", blob))?;
    Ok(file)
}

/// Reads a file to its end, hashing it; returns the lower-case hex SHA-256 and the size.
pub(crate) fn hash(file: &mut File) -> io::Result<(String, u64)> {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buffer = vec![0_u8; BUFFER];
    let mut size = 0_u64;
    loop {
        let count = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        sha2::Digest::update(&mut hasher, &buffer[..count]);
        size += count as u64;
    }
    Ok((hex::encode(sha2::Digest::finalize(hasher)), size))
}

/// How a verified blob becomes a staged file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Its last use: the blob itself moves into staging.
    Rename,
    /// A use before the last: a second name for the same file.
    Link,
}

/// Renames or links the verified blob to `target`, copying it (and checking the copy) where the
/// two are on different file systems. The staged file is checked to be the very file that was
/// hashed (same device and inode), so a blob swapped after its verification is refused rather
/// than installed.
fn place(
    blob: &Path,
    target: &Path,
    listed: &PayloadFile,
    verified: &File,
    placement: Placement,
    taken: &mut Vec<Taken>,
) -> Result<()> {
    failpoint::hit(Failpoint::StageBlobPlace);
    let placed = match placement {
        Placement::Rename => fs::rename(blob, target),
        Placement::Link => fs::hard_link(blob, target),
    };
    match placed {
        Ok(()) => {
            if placement == Placement::Rename {
                taken.push(Taken {
                    staged: target.to_owned(),
                    blob: blob.to_owned(),
                });
            }
            let staged = fs::symlink_metadata(target).map_err(Error::state("stat", target))?;
            let hashed = verified.metadata().map_err(Error::state("stat", blob))?;
            if (staged.dev(), staged.ino()) != (hashed.dev(), hashed.ino()) {
                return Err(Error::Refused(format!(
                    "fetched bundle: blob sha256:{} was replaced while it was being staged",
                    listed.sha256
                )));
            }
            Ok(())
        }
        Err(error) if error.raw_os_error() == Some(libc::EXDEV) => {
            copy_blob(verified, target, listed)
        }
        Err(error) => Err(Error::state("stage", target)(error)),
    }
}

/// Copies a verified blob to `target` on another file system, hashing the copy as it is
/// written, and fsyncs it.
fn copy_blob(verified: &File, target: &Path, listed: &PayloadFile) -> Result<()> {
    let mut source = verified.try_clone().map_err(Error::state("read", target))?;
    io::Seek::rewind(&mut source).map_err(Error::state("read", target))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(Error::state("create", target))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buffer = vec![0_u8; BUFFER];
    let mut size = 0_u64;
    loop {
        let count = source
            .read(&mut buffer)
            .map_err(Error::state("read", target))?;
        if count == 0 {
            break;
        }
        io::Write::write_all(&mut output, &buffer[..count])
            .map_err(Error::state("write", target))?;
        if size == 0 {
            failpoint::hit(Failpoint::StageWrite);
        }
        sha2::Digest::update(&mut hasher, &buffer[..count]);
        size += count as u64;
    }
    let digest = hex::encode(sha2::Digest::finalize(hasher));
    if size != listed.size || digest != listed.sha256 {
        return Err(Error::Refused(format!(
            "fetched bundle: blob sha256:{} changed while it was copied into staging",
            listed.sha256
        )));
    }
    failpoint::hit(Failpoint::StageFsyncFile);
    output.sync_all().map_err(Error::state("fsync", target))
}

/// Writes the accepted head next to the payload and fsyncs it.
fn write_head(staging: &Path, accepted: &Accepted) -> Result<()> {
    for (name, bytes) in [
        (MANIFEST_PATH, &accepted.manifest_bytes),
        (SIGNATURES_PATH, &accepted.signature_bytes),
    ] {
        let path = staging.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::state("create", &path))?;
        io::Write::write_all(&mut file, bytes).map_err(Error::state("write", &path))?;
        failpoint::hit(Failpoint::StageFsyncFile);
        file.sync_all().map_err(Error::state("fsync", &path))?;
    }
    Ok(())
}
