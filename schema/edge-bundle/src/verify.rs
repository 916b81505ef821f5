//! Checking a bundle: signatures first, then every payload byte, in one
//! streaming pass over the tar.

use std::io::{self, Read};

use ed25519_dalek::VerifyingKey;
use tar::EntryType;

use crate::digest::{HashingReader, Sha256Digest, copy_large};
use crate::display::escaped;
use crate::error::BundleError;
use crate::grammar::check_payload_path;
use crate::manifest::{BundleManifest, MANIFEST_PATH, PayloadFile, SIGNATURES_PATH};
use crate::signature::SignatureFile;
use crate::tar_guard::TarGuard;

/// The largest `bundle.json` or `bundle.sig.json` read into memory; far
/// above real manifests, low enough to stop a hostile bundle.
const MAX_HEAD_ENTRY: u64 = 16 << 20;

/// A bundle whose signatures and payload have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    /// The signed manifest.
    pub manifest: BundleManifest,
    /// SHA-256 of the canonical manifest bytes.
    pub manifest_digest: Sha256Digest,
    /// The trusted keys that signed, sorted, each once.
    pub trusted_key_ids: Vec<String>,
}

/// What a bundle claims, without any checking.
#[derive(Clone, Debug)]
pub struct BundleInspection {
    /// The manifest as stored.
    pub manifest: BundleManifest,
    /// SHA-256 of the canonical manifest bytes.
    pub manifest_digest: Sha256Digest,
    /// The key ids of all signatures, in file order.
    pub signature_key_ids: Vec<String>,
}

/// Reads the manifest and signature key ids from the start of a bundle
/// without verifying anything, for `edgec inspect`.
pub fn inspect_bundle<R: Read>(reader: R) -> Result<BundleInspection, BundleError> {
    let mut archive = tar::Archive::new(TarGuard::new(reader));
    let mut entries = archive.entries().map_err(BundleError::Read)?;
    let (manifest_bytes, signatures) = read_head(&mut entries)?;
    Ok(BundleInspection {
        manifest: BundleManifest::from_canonical_bytes(&manifest_bytes)?,
        manifest_digest: Sha256Digest::of(&manifest_bytes),
        signature_key_ids: signatures
            .signatures
            .into_iter()
            .map(|entry| entry.key_id)
            .collect(),
    })
}

/// Verifies a bundle: at least `threshold` distinct `trusted` keys must have
/// signed the canonical manifest, and the tar must hold exactly the listed
/// payload files with the listed sizes and digests, and nothing unsafe.
pub fn verify_bundle<R: Read>(
    reader: R,
    trusted: &[VerifyingKey],
    threshold: usize,
) -> Result<VerifiedBundle, BundleError> {
    verify_bundle_with(reader, trusted, threshold, |_, _| Ok(()))
}

/// Like [`verify_bundle`], but hands every payload entry to `visit` while it
/// streams (the reader yields the entry's bytes; what `visit` leaves unread
/// is still hashed). The digest of an entry is only checked after `visit`
/// returns, and the whole bundle is only valid when this function returns
/// `Ok`, so a visitor must stage what it extracts and commit it only then.
/// Signatures are checked before the first payload entry is visited.
pub fn verify_bundle_with<R, F>(
    reader: R,
    trusted: &[VerifyingKey],
    threshold: usize,
    mut visit: F,
) -> Result<VerifiedBundle, BundleError>
where
    R: Read,
    F: FnMut(&PayloadFile, &mut dyn Read) -> io::Result<()>,
{
    if threshold == 0 {
        return Err(BundleError::ZeroThreshold);
    }
    let mut archive = tar::Archive::new(TarGuard::new(reader));
    let mut entries = archive.entries().map_err(BundleError::Read)?;
    let (manifest_bytes, signatures) = read_head(&mut entries)?;
    let manifest = BundleManifest::from_canonical_bytes(&manifest_bytes)?;
    let valid = signatures.trusted_signers(&manifest_bytes, trusted);
    if valid.len() < threshold {
        return Err(BundleError::NotEnoughSignatures {
            valid: valid.len(),
            threshold,
        });
    }

    let mut seen = vec![false; manifest.payload.len()];
    for entry in entries {
        let mut entry = entry.map_err(BundleError::Read)?;
        let path = entry_path(&entry)?;
        check_entry_type(&path, entry.header().entry_type())?;
        let index = manifest
            .payload
            .binary_search_by(|file| file.path.as_str().cmp(&path))
            .map_err(|_| BundleError::UnlistedEntry(path.clone()))?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(BundleError::DuplicateEntry(path));
        }
        let listed = &manifest.payload[index];
        let size = entry.size();
        if size != listed.size {
            return Err(BundleError::SizeMismatch {
                path,
                expected: listed.size,
                actual: size,
            });
        }
        let mut hashing = HashingReader::new(&mut entry);
        visit(listed, &mut hashing).map_err(|source| BundleError::Visitor {
            path: path.clone(),
            source,
        })?;
        copy_large(&mut hashing, &mut io::sink()).map_err(BundleError::Read)?;
        let (digest, actual) = hashing.finish();
        if actual != listed.size {
            return Err(BundleError::SizeMismatch {
                path,
                expected: listed.size,
                actual,
            });
        }
        if digest.hex() != listed.sha256 {
            return Err(BundleError::DigestMismatch {
                path,
                expected: listed.sha256.clone(),
                actual: digest.hex(),
            });
        }
    }
    if let Some(index) = seen.iter().position(|seen| !seen) {
        return Err(BundleError::MissingEntry(
            manifest.payload[index].path.clone(),
        ));
    }
    Ok(VerifiedBundle {
        manifest_digest: Sha256Digest::of(&manifest_bytes),
        manifest,
        trusted_key_ids: valid.into_iter().collect(),
    })
}

/// Reads `bundle.json` and `bundle.sig.json`, which must come first.
fn read_head<R: Read>(
    entries: &mut tar::Entries<'_, R>,
) -> Result<(Vec<u8>, SignatureFile), BundleError> {
    let manifest = read_small_entry(entries, MANIFEST_PATH)?;
    let signatures = read_small_entry(entries, SIGNATURES_PATH)?;
    Ok((manifest, SignatureFile::parse(&signatures)?))
}

/// Reads the next entry, which must be the regular file `expected`.
fn read_small_entry<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    expected: &'static str,
) -> Result<Vec<u8>, BundleError> {
    let missing = |found: String| BundleError::MissingHeaderEntry { expected, found };
    let entry = entries
        .next()
        .ok_or_else(|| missing("the end of the bundle".to_owned()))?;
    let entry = entry.map_err(BundleError::Read)?;
    let path = entry.path_bytes();
    if *path != *expected.as_bytes() || entry.header().entry_type() != EntryType::Regular {
        return Err(missing(escaped(&String::from_utf8_lossy(&path))));
    }
    if entry.size() > MAX_HEAD_ENTRY {
        return Err(missing(format!("{expected} of {} bytes", entry.size())));
    }
    let mut bytes = Vec::new();
    entry
        .take(MAX_HEAD_ENTRY)
        .read_to_end(&mut bytes)
        .map_err(BundleError::Read)?;
    Ok(bytes)
}

/// Decodes an entry path, refusing anything that is not a plain relative
/// UTF-8 path.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BundleError> {
    let bytes = entry.path_bytes();
    let path = std::str::from_utf8(&bytes).map_err(|_| BundleError::UnsafeEntry {
        path: String::from_utf8_lossy(&bytes).into_owned(),
        reason: "path is not UTF-8",
    })?;
    check_payload_path(path)?;
    Ok(path.to_owned())
}

/// Only regular files may appear: links and special files could redirect or
/// escape extraction.
fn check_entry_type(path: &str, entry_type: EntryType) -> Result<(), BundleError> {
    let reason = match entry_type {
        EntryType::Regular => return Ok(()),
        EntryType::Symlink | EntryType::Link => "links are not allowed",
        EntryType::Char | EntryType::Block => "device nodes are not allowed",
        EntryType::Fifo => "fifos are not allowed",
        EntryType::Directory => "directory entries are not allowed",
        _ => "only regular files are allowed",
    };
    Err(BundleError::UnsafeEntry {
        path: path.to_owned(),
        reason,
    })
}
