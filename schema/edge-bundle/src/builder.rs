//! Assembling, signing and writing a bundle.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest::{Sha256Digest, hash_file};
use crate::error::BundleError;
use crate::grammar::{check_compatible, check_name, check_registry_reference, check_version};
use crate::image::{ImageConfig, PreparedImage, prepare_oci_layout, prepare_rootfs_image};
use crate::manifest::{
    Architecture, BundleManifest, FORMAT_VERSION, MANIFEST_PATH, OsPayload, RegistryImage,
    SIGNATURES_PATH,
};
use crate::payload::{Payload, PayloadSource, append_payload, regular_header};
use crate::signature::SignatureFile;
use crate::signer::Signer;

/// The write buffer in front of the caller's writer.
const WRITE_BUFFER: usize = 1 << 20;

/// What identifies a bundle; everything else is content.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BundleHeader {
    /// The deployment name (also the bundle's file name).
    pub deployment: String,
    /// The device `compatible` string.
    pub compatible: String,
    /// The device CPU architecture.
    pub architecture: Architecture,
    /// The monotonic deployment version (anti-rollback).
    pub version: u64,
    /// `SOURCE_DATE_EPOCH` (or 0): the only time that enters the bundle.
    /// The caller reads the environment; this library never does.
    pub source_date_epoch: u64,
}

/// An operating system image to carry in the bundle.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct OsImage {
    /// The root filesystem image file.
    pub rootfs: PathBuf,
    /// The dm-verity hash tree file.
    pub verity: PathBuf,
    /// The dm-verity root hash (hex).
    pub root_hash: String,
    /// The root hash signature, if the OS build made one.
    pub root_hash_signature: Option<String>,
}

/// What [`BundleBuilder::build`] returns besides the written bytes.
#[derive(Debug)]
pub struct BuiltBundle<W> {
    /// The manifest that was signed.
    pub manifest: BundleManifest,
    /// The SHA-256 of the canonical manifest: the bundle's identity.
    pub manifest_digest: Sha256Digest,
    /// The key ids that signed, sorted.
    pub key_ids: Vec<String>,
    /// The caller's writer, flushed.
    pub writer: W,
}

/// Collects a bundle's content, hashing large inputs as they are added, and
/// writes the signed bundle.
#[derive(Debug)]
pub struct BundleBuilder {
    header: BundleHeader,
    created: String,
    expires: Option<String>,
    iot_edge_manifest: Value,
    route_table: Value,
    images: BTreeMap<String, PreparedImage>,
    registry_images: BTreeMap<String, String>,
    os: Option<(OsPayload, Vec<Payload>)>,
}

impl BundleBuilder {
    /// Starts a bundle, checking the names that end up in paths.
    pub fn new(header: BundleHeader) -> Result<Self, BundleError> {
        check_name("deployment name", &header.deployment)?;
        check_compatible(&header.compatible)?;
        check_version(header.version)?;
        let created = rfc3339(header.source_date_epoch)?;
        Ok(Self {
            header,
            created,
            expires: None,
            iot_edge_manifest: Value::Object(serde_json::Map::new()),
            route_table: Value::Object(serde_json::Map::new()),
            images: BTreeMap::new(),
            registry_images: BTreeMap::new(),
            os: None,
        })
    }

    /// Signs an expiry into the bundle: devices refuse to take it in after `epoch` (seconds
    /// since 1970) by their clock. It must be later than the creation time
    /// (`source_date_epoch`), so that the bundle is ever usable.
    pub fn expires_at(&mut self, epoch: u64) -> Result<&mut Self, BundleError> {
        if epoch <= self.header.source_date_epoch {
            return Err(BundleError::ExpiryNotAfterCreation {
                expires: rfc3339(epoch).unwrap_or_else(|_| epoch.to_string()),
                created: self.created.clone(),
            });
        }
        let beyond = || {
            BundleError::MalformedManifest(format!(
                "the expiry {epoch} (seconds since 1970) is after the year 9999"
            ))
        };
        let expires = rfc3339(epoch).map_err(|_| beyond())?;
        crate::grammar::check_expires(&expires, &self.created).map_err(|_| beyond())?;
        self.expires = Some(expires);
        Ok(self)
    }

    /// Sets the IoT Edge deployment manifest (opaque to the bundle).
    pub fn iot_edge_manifest(&mut self, manifest: Value) -> &mut Self {
        self.iot_edge_manifest = manifest;
        self
    }

    /// Sets the compiled route table (opaque to the bundle).
    pub fn route_table(&mut self, routes: Value) -> &mut Self {
        self.route_table = routes;
        self
    }

    /// Packages a root filesystem directory as a one-layer image for
    /// `module`. The directory is scanned and the layer hashed now; it is
    /// read again by [`build`](Self::build).
    pub fn add_local_image(
        &mut self,
        module: &str,
        root: &Path,
        config: &ImageConfig,
    ) -> Result<&mut Self, BundleError> {
        self.check_new_module(module)?;
        if config.architecture != self.header.architecture {
            return Err(BundleError::ArchitectureMismatch {
                module: module.to_owned(),
                image: config.architecture.as_str().to_owned(),
                bundle: self.header.architecture.as_str().to_owned(),
            });
        }
        let image = prepare_rootfs_image(
            module,
            root,
            config,
            self.header.source_date_epoch,
            &self.created,
        )?;
        self.images.insert(module.to_owned(), image);
        Ok(self)
    }

    /// Packages an existing OCI image layout directory for `module`, blobs
    /// byte for byte, loaded as `reference` (`name:tag`).
    pub fn add_oci_layout(
        &mut self,
        module: &str,
        layout: &Path,
        reference: &str,
    ) -> Result<&mut Self, BundleError> {
        self.check_new_module(module)?;
        let image = prepare_oci_layout(module, layout, reference, self.header.architecture)?;
        self.images.insert(module.to_owned(), image);
        Ok(self)
    }

    /// Lists a module image that the device pulls from a registry by digest.
    pub fn add_registry_image(
        &mut self,
        module: &str,
        reference: &str,
    ) -> Result<&mut Self, BundleError> {
        self.check_new_module(module)?;
        check_registry_reference(reference)?;
        self.registry_images
            .insert(module.to_owned(), reference.to_owned());
        Ok(self)
    }

    /// Carries an operating system image (root filesystem and dm-verity
    /// tree), hashed now and copied by [`build`](Self::build).
    pub fn add_os_payload(&mut self, os: &OsImage) -> Result<&mut Self, BundleError> {
        let rootfs = file_payload("payload/os/rootfs.img", &os.rootfs)?;
        let verity = file_payload("payload/os/verity.img", &os.verity)?;
        let listing = OsPayload {
            rootfs: rootfs.listing(),
            verity: verity.listing(),
            root_hash: os.root_hash.clone(),
            root_hash_signature: os.root_hash_signature.clone(),
        };
        self.os = Some((listing, vec![rootfs, verity]));
        Ok(self)
    }

    /// Signs the manifest with every signer and writes the bundle tar:
    /// `bundle.json`, `bundle.sig.json`, then the payload in path order.
    pub fn build<W: Write>(
        &self,
        signers: &[&dyn Signer],
        writer: W,
    ) -> Result<BuiltBundle<W>, BundleError> {
        let mut payloads: Vec<&Payload> = self
            .images
            .values()
            .flat_map(|image| image.payloads.iter())
            .chain(self.os.iter().flat_map(|(_, payloads)| payloads.iter()))
            .collect();
        payloads.sort_by(|left, right| left.path.cmp(&right.path));
        let manifest = BundleManifest {
            format_version: FORMAT_VERSION,
            deployment: self.header.deployment.clone(),
            compatible: self.header.compatible.clone(),
            architecture: self.header.architecture,
            version: self.header.version,
            created: self.created.clone(),
            expires: self.expires.clone(),
            iot_edge_manifest: self.iot_edge_manifest.clone(),
            route_table: self.route_table.clone(),
            images: self
                .images
                .values()
                .map(|image| image.listing.clone())
                .collect(),
            registry_images: self
                .registry_images
                .iter()
                .map(|(module, reference)| RegistryImage {
                    module: module.clone(),
                    reference: reference.clone(),
                })
                .collect(),
            os: self.os.as_ref().map(|(listing, _)| listing.clone()),
            payload: payloads.iter().map(|payload| payload.listing()).collect(),
        };
        manifest.check()?;
        let manifest_bytes = manifest.to_canonical_bytes()?;
        let signatures = SignatureFile::sign(&manifest_bytes, signers)?;
        let signature_bytes = signatures.to_canonical_bytes()?;

        let epoch = self.header.source_date_epoch;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(WRITE_BUFFER, writer));
        for (path, bytes) in [
            (MANIFEST_PATH, &manifest_bytes),
            (SIGNATURES_PATH, &signature_bytes),
        ] {
            let mut header = regular_header(bytes.len() as u64, epoch);
            tar.append_data(&mut header, path, bytes.as_slice())
                .map_err(BundleError::Write)?;
        }
        for payload in payloads {
            append_payload(&mut tar, payload, epoch)?;
        }
        let writer = tar
            .into_inner()
            .map_err(BundleError::Write)?
            .into_inner()
            .map_err(|error| BundleError::Write(error.into_error()))?;
        Ok(BuiltBundle {
            manifest_digest: Sha256Digest::of(&manifest_bytes),
            key_ids: signatures
                .signatures
                .into_iter()
                .map(|entry| entry.key_id)
                .collect(),
            manifest,
            writer,
        })
    }

    /// Refuses bad or repeated module names, across all image kinds.
    fn check_new_module(&self, module: &str) -> Result<(), BundleError> {
        check_name("module name", module)?;
        if self.images.contains_key(module) || self.registry_images.contains_key(module) {
            return Err(BundleError::DuplicateModule(module.to_owned()));
        }
        Ok(())
    }
}

/// Hashes a file that will be copied into the bundle as it is.
fn file_payload(path: &str, source: &Path) -> Result<Payload, BundleError> {
    let (digest, stamp) = hash_file(source)?;
    Ok(Payload {
        path: path.to_owned(),
        digest,
        size: stamp.size(),
        source: PayloadSource::File(source.to_owned(), stamp),
    })
}

/// Formats the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
fn rfc3339(epoch: u64) -> Result<String, BundleError> {
    let seconds = i64::try_from(epoch).map_err(|_| BundleError::InvalidEpoch(epoch))?;
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .ok_or(BundleError::InvalidEpoch(epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_format_as_utc_rfc3339() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert!(matches!(
            rfc3339(u64::MAX),
            Err(BundleError::InvalidEpoch(_))
        ));
    }

    #[test]
    fn an_expiry_must_come_after_the_creation() {
        let header = BundleHeader {
            deployment: "line-7".to_owned(),
            compatible: "contoso,gateway".to_owned(),
            architecture: Architecture::Amd64,
            version: 1,
            source_date_epoch: 1_700_000_000,
        };
        let mut builder = BundleBuilder::new(header).unwrap();
        for too_early in [0, 1_700_000_000] {
            let error = builder.expires_at(too_early).unwrap_err().to_string();
            assert!(error.contains("not after its creation"), "{error}");
        }
        builder.expires_at(1_700_000_001).unwrap();
        assert_eq!(builder.expires.as_deref(), Some("2023-11-14T22:13:21Z"));
        // Beyond 9999 a time no longer has the one four-digit-year form.
        assert!(builder.expires_at(253_402_300_800).is_err());
    }
}
