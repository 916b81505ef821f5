//! The detached signature file (`bundle.sig.json`).

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::grammar::check_key_id;
use crate::keys::key_id;
#[cfg(feature = "build")]
use crate::signer::Signer;
#[cfg(feature = "build")]
use canonical_json::to_canonical_bytes;

/// The only signature algorithm of format version 1.
pub const ED25519: &str = "ed25519";

/// All signatures over one manifest.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// The bundle format version, as in the manifest.
    pub format_version: u64,
    /// One entry per signing key, sorted by key id.
    pub signatures: Vec<SignatureEntry>,
}

/// One detached signature over the canonical manifest bytes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// Hex SHA-256 of the raw 32-byte public key.
    pub key_id: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The 64-byte signature in lower-case hex.
    pub signature: String,
}

impl SignatureFile {
    /// Signs `manifest` with every signer, checking each signature against
    /// the signer's own public key before accepting it.
    #[cfg(feature = "build")]
    pub(crate) fn sign(manifest: &[u8], signers: &[&dyn Signer]) -> Result<Self, BundleError> {
        if signers.is_empty() {
            return Err(BundleError::NoSigners);
        }
        let mut signatures = Vec::with_capacity(signers.len());
        for signer in signers {
            let public = signer.public_key();
            let id = key_id(&public);
            let signature = signer.sign(manifest)?;
            if public.verify_strict(manifest, &signature).is_err() {
                return Err(crate::error::SignerError::BadSignature { key_id: id }.into());
            }
            signatures.push(SignatureEntry {
                key_id: id,
                algorithm: ED25519.to_owned(),
                signature: hex::encode(signature.to_bytes()),
            });
        }
        signatures.sort_by(|left, right| left.key_id.cmp(&right.key_id));
        if let Some(pair) = signatures
            .windows(2)
            .find(|pair| pair[0].key_id == pair[1].key_id)
        {
            return Err(BundleError::DuplicateSigner(pair[0].key_id.clone()));
        }
        Ok(Self {
            format_version: crate::manifest::FORMAT_VERSION,
            signatures,
        })
    }

    #[cfg(feature = "build")]
    /// Returns the canonical bytes stored as `bundle.sig.json`.
    pub(crate) fn to_canonical_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let value = serde_json::to_value(self)
            .map_err(|error| BundleError::MalformedSignatures(error.to_string()))?;
        Ok(to_canonical_bytes(&value))
    }

    /// Parses `bundle.sig.json`; every key id must be a key id (64 lower-case hex digits),
    /// since key ids are shown when a bundle is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let file: Self = serde_json::from_slice(bytes)
            .map_err(|error| BundleError::MalformedSignatures(error.to_string()))?;
        for entry in &file.signatures {
            check_key_id(&entry.key_id)?;
        }
        Ok(file)
    }

    /// Returns the key ids of the trusted keys whose signature over
    /// `manifest` is valid; each key counts once however often it appears.
    /// Entries with unknown keys or algorithms are ignored, not fatal, so a
    /// bundle can carry signatures for several fleets.
    pub(crate) fn trusted_signers(
        &self,
        manifest: &[u8],
        trusted: &[VerifyingKey],
    ) -> BTreeSet<String> {
        let mut valid = BTreeSet::new();
        for entry in &self.signatures {
            if entry.algorithm != ED25519 {
                continue;
            }
            let Some(key) = trusted.iter().find(|key| key_id(key) == entry.key_id) else {
                continue;
            };
            let mut bytes = [0_u8; 64];
            if hex::decode_to_slice(&entry.signature, &mut bytes).is_err() {
                continue;
            }
            if key
                .verify_strict(manifest, &Signature::from_bytes(&bytes))
                .is_ok()
            {
                valid.insert(entry.key_id.clone());
            }
        }
        valid
    }
}
