//! The artifact layout of a bundle in an OCI registry, without any I/O.
//!
//! A bundle is stored as one OCI image manifest whose config is the exact bytes of
//! `bundle.json`, whose first layer is `bundle.sig.json` and whose further layers are the payload
//! files in the order of the signed `payload` listing (`schema/BUNDLE.md`, "In an OCI
//! registry"). The registry's manifest is not signed, so a fetched layout is only ever trusted
//! as far as [`BundleLayout::check_listing`] ties it to a `bundle.json` whose signatures the
//! device verifies.

use std::collections::BTreeMap;

use edge_bundle::display::escaped;
use edge_bundle::{BundleManifest, Sha256Digest};
use serde::Deserialize;
use serde_json::json;

/// The media type of the manifest: a plain OCI image manifest, which every registry stores.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.edgec.bundle.v1";
/// The config descriptor's media type: the blob is `bundle.json`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.edgec.bundle.manifest.v1+json";
/// The first layer's media type: the blob is `bundle.sig.json`.
pub const SIGNATURES_MEDIA_TYPE: &str = "application/vnd.edgec.bundle.signatures.v1+json";
/// The media type of every further layer: one payload file, byte for byte.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.edgec.bundle.payload.v1";
/// The layer annotation that names a payload file's path.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// The manifest annotation that repeats `created`.
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// The manifest annotation that repeats `deployment`.
pub const DEPLOYMENT_ANNOTATION: &str = "io.edgec.bundle.deployment";
/// The manifest annotation that repeats `version`.
pub const VERSION_ANNOTATION: &str = "io.edgec.bundle.version";

/// The largest registry manifest read: a layer descriptor with a long path takes a few hundred
/// bytes, so this holds thousands of payload files, and a hostile registry cannot make a device
/// parse more.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest `bundle.json` or `bundle.sig.json` read, the bound `verify_bundle` applies to the
/// same two documents in a bundle file.
pub const MAX_HEAD_BLOB_BYTES: u64 = 16 << 20;
/// The most payload layers a fetched manifest may list. The bundle format bounds the payload
/// listing only through the 16 MiB `bundle.json`; a payload descriptor takes at least about 190
/// bytes, so the 4 MiB manifest alone would still let a registry hand over some 22,000 of them.
pub const MAX_PAYLOAD_LAYERS: usize = 16_384;

/// A blob the layout refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Its SHA-256.
    pub digest: Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// A payload layer: a file of the bundle's `payload` listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadLayer {
    /// The payload path, from the layer's title annotation.
    pub path: String,
    /// The blob.
    pub blob: Blob,
}

/// The typed content of a bundle's registry manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleLayout {
    /// The config blob: `bundle.json`.
    pub config: Blob,
    /// The first layer: `bundle.sig.json`.
    pub signatures: Blob,
    /// The further layers, in manifest order.
    pub payload: Vec<PayloadLayer>,
    /// The manifest annotations, informational only (they are not signed).
    pub annotations: BTreeMap<String, String>,
}

/// Why a registry manifest is not a bundle layout, or not the layout of a given bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error("the registry manifest is {size} bytes, more than the {MAX_MANIFEST_BYTES} read")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The manifest is not an OCI image manifest of the bundle artifact type.
    #[error("the registry manifest is not an edgec bundle: {0}")]
    NotABundle(String),
    /// The manifest lists more layers than [`MAX_PAYLOAD_LAYERS`] payload files.
    #[error(
        "the registry manifest lists {count} payload layers, more than the {MAX_PAYLOAD_LAYERS} read"
    )]
    TooManyLayers {
        /// How many it lists.
        count: usize,
    },
    /// The layers are not the payload listing of the signed `bundle.json`.
    #[error("the registry manifest does not match the signed payload listing: {0}")]
    ListingMismatch(String),
}

impl BundleLayout {
    /// The layout of a bundle: `bundle_json` is the exact `bundle.json` bytes that `manifest` was
    /// parsed from, `signatures_json` the exact `bundle.sig.json` bytes.
    pub fn of_bundle(
        manifest: &BundleManifest,
        bundle_json: &[u8],
        signatures_json: &[u8],
    ) -> Result<Self, LayoutError> {
        let payload = manifest
            .payload
            .iter()
            .map(|file| {
                let digest = Sha256Digest::from_hex(&file.sha256).ok_or_else(|| {
                    LayoutError::ListingMismatch(format!(
                        "payload {} has no SHA-256",
                        escaped(&file.path)
                    ))
                })?;
                Ok(PayloadLayer {
                    path: file.path.clone(),
                    blob: Blob {
                        digest,
                        size: file.size,
                    },
                })
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;
        let annotations = BTreeMap::from([
            (CREATED_ANNOTATION.to_owned(), manifest.created.clone()),
            (
                DEPLOYMENT_ANNOTATION.to_owned(),
                manifest.deployment.clone(),
            ),
            (VERSION_ANNOTATION.to_owned(), manifest.version.to_string()),
        ]);
        Ok(Self {
            config: blob_of(bundle_json),
            signatures: blob_of(signatures_json),
            payload,
            annotations,
        })
    }

    /// The manifest as canonical JSON, so the same bundle always has the same manifest digest.
    pub fn to_manifest_bytes(&self) -> Vec<u8> {
        let descriptor = |media_type: &str, blob: &Blob| json!({"mediaType": media_type, "digest": blob.digest.oci(), "size": blob.size});
        let mut layers = vec![descriptor(SIGNATURES_MEDIA_TYPE, &self.signatures)];
        for layer in &self.payload {
            let mut value = descriptor(PAYLOAD_MEDIA_TYPE, &layer.blob);
            value["annotations"] = json!({ TITLE_ANNOTATION: layer.path });
            layers.push(value);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, &self.config),
            "layers": layers,
            "annotations": self.annotations,
        });
        canonical_json::to_canonical_bytes(&manifest)
    }

    /// The digest of [`Self::to_manifest_bytes`].
    pub fn manifest_digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.to_manifest_bytes())
    }

    /// Parses a fetched manifest strictly: an OCI image manifest of [`ARTIFACT_TYPE`], exactly
    /// these media types, sha256 digests, every payload layer titled, at most
    /// [`MAX_PAYLOAD_LAYERS`] of them, no fields this layout does not define.
    pub fn parse(bytes: &[u8]) -> Result<Self, LayoutError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(LayoutError::TooLarge { size: bytes.len() });
        }
        let not_a_bundle = |message: String| LayoutError::NotABundle(message);
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|error| {
            not_a_bundle(format!("it is not a manifest of this layout ({error})"))
        })?;
        if raw.schema_version != 2 {
            return Err(not_a_bundle(format!(
                "schemaVersion is {}, not 2",
                raw.schema_version
            )));
        }
        expect(&raw.media_type, MANIFEST_MEDIA_TYPE, "mediaType")?;
        expect(&raw.artifact_type, ARTIFACT_TYPE, "artifactType")?;
        let config = raw.config.blob(CONFIG_MEDIA_TYPE, "config")?;
        if raw.config.annotations.is_some() {
            return Err(not_a_bundle("the config has annotations".to_owned()));
        }
        let mut layers = raw.layers.into_iter();
        let signatures = layers
            .next()
            .ok_or_else(|| not_a_bundle("it has no layers".to_owned()))?;
        if signatures.annotations.is_some() {
            return Err(not_a_bundle(
                "the signatures layer has annotations".to_owned(),
            ));
        }
        let signatures = signatures.blob(SIGNATURES_MEDIA_TYPE, "layer 0")?;
        if layers.len() > MAX_PAYLOAD_LAYERS {
            return Err(LayoutError::TooManyLayers {
                count: layers.len(),
            });
        }
        let payload = layers
            .enumerate()
            .map(|(index, layer)| {
                let name = format!("layer {}", index + 1);
                let blob = layer.blob(PAYLOAD_MEDIA_TYPE, &name)?;
                let mut annotations = layer.annotations.unwrap_or_default();
                let path = annotations.remove(TITLE_ANNOTATION).ok_or_else(|| {
                    not_a_bundle(format!("{name} has no {TITLE_ANNOTATION} annotation"))
                })?;
                if !annotations.is_empty() {
                    return Err(not_a_bundle(format!(
                        "{name} has annotations other than {TITLE_ANNOTATION}"
                    )));
                }
                Ok(PayloadLayer { path, blob })
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;
        Ok(Self {
            config,
            signatures,
            payload,
            annotations: raw.annotations.unwrap_or_default(),
        })
    }

    /// Checks the layers against the payload listing of `manifest`, the `bundle.json` carried as
    /// this layout's config: the same paths, digests and sizes in the same order, nothing more
    /// and nothing less. Only the listing is signed, so a layout that differs from it in any way
    /// is refused rather than reconciled.
    pub fn check_listing(&self, manifest: &BundleManifest) -> Result<(), LayoutError> {
        let mismatch = |message: String| Err(LayoutError::ListingMismatch(message));
        if self.payload.len() != manifest.payload.len() {
            return mismatch(format!(
                "it has {} payload layers, bundle.json lists {} files",
                self.payload.len(),
                manifest.payload.len()
            ));
        }
        for (index, (layer, file)) in self.payload.iter().zip(&manifest.payload).enumerate() {
            let number = index + 1;
            if layer.path != file.path {
                return mismatch(format!(
                    "layer {number} is {}, bundle.json lists {} there",
                    escaped(&layer.path),
                    escaped(&file.path)
                ));
            }
            if layer.blob.digest.hex() != file.sha256 || layer.blob.size != file.size {
                return mismatch(format!(
                    "layer {number} ({}) is {} of {} bytes, bundle.json lists sha256:{} of {} bytes",
                    escaped(&file.path),
                    layer.blob.digest.oci(),
                    layer.blob.size,
                    escaped(&file.sha256),
                    file.size
                ));
            }
        }
        Ok(())
    }

    /// Every blob of the layout, config first, then the layers in order, each distinct digest
    /// once (two payload files with the same content are one blob).
    pub fn blobs(&self) -> Vec<Blob> {
        let mut blobs: Vec<Blob> = Vec::with_capacity(self.payload.len() + 2);
        for blob in [self.config, self.signatures]
            .into_iter()
            .chain(self.payload.iter().map(|layer| layer.blob))
        {
            if !blobs.iter().any(|seen| seen.digest == blob.digest) {
                blobs.push(blob);
            }
        }
        blobs
    }
}

fn blob_of(bytes: &[u8]) -> Blob {
    Blob {
        digest: Sha256Digest::of(bytes),
        size: bytes.len() as u64,
    }
}

fn expect(found: &Option<String>, wanted: &str, field: &str) -> Result<(), LayoutError> {
    match found {
        Some(found) if found == wanted => Ok(()),
        Some(found) => Err(LayoutError::NotABundle(format!(
            "{field} is {}, not {wanted}",
            escaped(found)
        ))),
        None => Err(LayoutError::NotABundle(format!("it has no {field}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManifest {
    schema_version: u64,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: RawDescriptor,
    layers: Vec<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    annotations: Option<BTreeMap<String, String>>,
}

impl RawDescriptor {
    fn blob(&self, media_type: &str, name: &str) -> Result<Blob, LayoutError> {
        if self.media_type != media_type {
            return Err(LayoutError::NotABundle(format!(
                "{name} has media type {}, not {media_type}",
                escaped(&self.media_type)
            )));
        }
        let digest = Sha256Digest::from_oci(&self.digest).ok_or_else(|| {
            LayoutError::NotABundle(format!(
                "{name} has digest {}, not sha256:<64 lower-case hex digits>",
                escaped(&self.digest)
            ))
        })?;
        Ok(Blob {
            digest,
            size: self.size,
        })
    }
}
