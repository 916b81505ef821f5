//! Packaging module images as OCI image layouts that Docker 20.10 can also
//! `docker load` (thanks to a docker-archive `manifest.json` beside
//! `index.json`).
//!
//! Every generated JSON document is canonicalised before hashing because
//! oci-spec keeps annotations and similar maps in `HashMap`s.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder, ImageIndex,
    ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, OciLayout, Os,
    RootFsBuilder,
};
use serde::Serialize;
use serde_json::json;

use crate::digest::{Sha256Digest, hash_file};
use crate::error::BundleError;
use crate::grammar::tagged_reference;
use crate::layer::LayerPlan;
use crate::manifest::{Architecture, PackagedImage};
use crate::payload::{LayerCompression, LayerSource, Payload, PayloadSource};
use crate::stamp::FileStamp;
use canonical_json::to_canonical_bytes;

/// The largest manifest or index document read into memory.
const MAX_DOCUMENT: u64 = 4 << 20;

/// How to run an image built from a root filesystem directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ImageConfig {
    /// The `name:tag` the image is loaded under.
    pub reference: String,
    /// The image's CPU architecture; must equal the bundle's.
    pub architecture: Architecture,
    /// The image operating system, normally `linux`.
    pub os: String,
    /// The entry point (`ENTRYPOINT`).
    pub entrypoint: Vec<String>,
    /// Default arguments (`CMD`).
    pub cmd: Vec<String>,
    /// Environment variables as `NAME=value`.
    pub env: Vec<String>,
    /// The working directory, if not `/`.
    pub working_dir: Option<String>,
    /// How the generated layer is stored.
    pub compression: LayerCompression,
}

/// An image ready to be written: its manifest listing and payload files.
#[derive(Clone, Debug)]
pub(crate) struct PreparedImage {
    pub(crate) listing: PackagedImage,
    pub(crate) payloads: Vec<Payload>,
}

/// Builds a one-layer image from a root filesystem directory.
pub(crate) fn prepare_rootfs_image(
    module: &str,
    root: &Path,
    config: &ImageConfig,
    epoch: u64,
    created: &str,
) -> Result<PreparedImage, BundleError> {
    tagged_reference(&config.reference)?;
    let metadata_error = |error: oci_spec::OciSpecError| BundleError::ImageMetadata {
        module: module.to_owned(),
        reason: error.to_string(),
    };
    let layer = LayerSource {
        plan: LayerPlan::scan(root)?,
        compression: config.compression,
        epoch,
    };
    let digests = layer.measure()?;
    let (architecture, variant) = config.architecture.oci_platform();
    let mut run = ConfigBuilder::default()
        .entrypoint(config.entrypoint.clone())
        .cmd(config.cmd.clone())
        .env(config.env.clone());
    if let Some(directory) = &config.working_dir {
        run = run.working_dir(directory.clone());
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![digests.diff_id.oci()])
        .build()
        .map_err(metadata_error)?;
    let mut image_config = ImageConfigurationBuilder::default()
        .created(created.to_owned())
        .architecture(Arch::from(architecture))
        .os(Os::from(config.os.as_str()))
        .config(run.build().map_err(metadata_error)?)
        .rootfs(rootfs);
    if let Some(variant) = variant {
        image_config = image_config.variant(variant);
    }
    let config_bytes = canonical(module, &image_config.build().map_err(metadata_error)?)?;
    let layer_media_type = match config.compression {
        LayerCompression::None => MediaType::ImageLayer,
        LayerCompression::Gzip => MediaType::ImageLayerGzip,
    };
    let layer_descriptor =
        descriptor(layer_media_type, digests.blob, digests.size).map_err(metadata_error)?;
    let layer_payload = Payload {
        path: String::new(),
        digest: digests.blob,
        size: digests.size,
        source: PayloadSource::Layer(layer),
    };
    let config_digest = Sha256Digest::of(&config_bytes);
    let config_descriptor = descriptor(
        MediaType::ImageConfig,
        config_digest,
        config_bytes.len() as u64,
    )
    .map_err(metadata_error)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2_u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(vec![layer_descriptor])
        .build()
        .map_err(metadata_error)?;
    let manifest_bytes = canonical(module, &manifest)?;
    let manifest = (
        MediaType::ImageManifest,
        Payload::bytes(String::new(), manifest_bytes),
    );
    let blobs = vec![Payload::bytes(String::new(), config_bytes), layer_payload];
    assemble(
        module,
        &config.reference,
        manifest,
        config_digest,
        &[digests.blob],
        blobs,
    )
}

/// Copies an existing OCI image layout, blobs byte for byte, after checking
/// every blob against its descriptor.
pub(crate) fn prepare_oci_layout(
    module: &str,
    layout: &Path,
    reference: &str,
    architecture: Architecture,
) -> Result<PreparedImage, BundleError> {
    tagged_reference(reference)?;
    let invalid = |reason: String| BundleError::InvalidOciLayout {
        path: layout.to_owned(),
        reason,
    };
    let marker = OciLayout::from_file(layout.join("oci-layout"))
        .map_err(|error| invalid(format!("oci-layout: {error}")))?;
    if marker.image_layout_version() != "1.0.0" {
        return Err(invalid(format!(
            "unsupported imageLayoutVersion {:?}",
            marker.image_layout_version()
        )));
    }
    let index = ImageIndex::from_file(layout.join("index.json"))
        .map_err(|error| invalid(format!("index.json: {error}")))?;
    let mut candidates = Vec::new();
    for entry in index.manifests() {
        if *entry.media_type() == MediaType::ImageIndex {
            let bytes = read_document(layout, entry)?;
            let nested: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|error| invalid(format!("nested index {}: {error}", entry.digest())))?;
            candidates.extend(nested.manifests().iter().cloned());
        } else {
            candidates.push(entry.clone());
        }
    }
    let chosen = choose_manifest(candidates, architecture).map_err(invalid)?;
    let manifest_bytes = read_document(layout, &chosen)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|error| invalid(format!("manifest {}: {error}", chosen.digest())))?;
    let config = check_blob(layout, manifest.config())?;
    let config_digest = config.digest;
    let mut blobs = vec![config.into_payload()];
    let mut layer_digests = Vec::new();
    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        if media_type.contains("zstd") {
            return Err(invalid(format!(
                "layer {} is zstd-compressed, which Docker 20.10 cannot load",
                layer.digest()
            )));
        }
        let blob = check_blob(layout, layer)?;
        layer_digests.push(blob.digest);
        blobs.push(blob.into_payload());
    }
    let manifest = (
        chosen.media_type().clone(),
        Payload::bytes(String::new(), manifest_bytes),
    );
    assemble(
        module,
        reference,
        manifest,
        config_digest,
        &layer_digests,
        blobs,
    )
}

/// Picks the one image manifest for `architecture`: the only one if there is
/// just one, otherwise the one whose platform matches.
fn choose_manifest(
    candidates: Vec<Descriptor>,
    architecture: Architecture,
) -> Result<Descriptor, String> {
    let manifests: Vec<Descriptor> = candidates
        .into_iter()
        .filter(|entry| {
            *entry.media_type() == MediaType::ImageManifest
                || entry.media_type().to_string()
                    == "application/vnd.docker.distribution.manifest.v2+json"
        })
        .collect();
    if let [only] = manifests.as_slice() {
        return Ok(only.clone());
    }
    let (wanted, variant) = architecture.oci_platform();
    let matching: Vec<&Descriptor> = manifests
        .iter()
        .filter(|entry| {
            entry.platform().as_ref().is_some_and(|platform| {
                platform.architecture().to_string() == wanted
                    && (variant.is_none()
                        || platform.variant().is_none()
                        || platform.variant().as_deref() == variant)
            })
        })
        .collect();
    match matching.as_slice() {
        [only] => Ok((*only).clone()),
        [] => Err(format!("no image manifest for {}", architecture.as_str())),
        _ => Err(format!(
            "several image manifests for {}",
            architecture.as_str()
        )),
    }
}

/// Adds the layout files around the blobs and names every payload.
fn assemble(
    module: &str,
    reference: &str,
    manifest: (MediaType, Payload),
    config_digest: Sha256Digest,
    layer_digests: &[Sha256Digest],
    blobs: Vec<Payload>,
) -> Result<PreparedImage, BundleError> {
    let metadata_error = |error: oci_spec::OciSpecError| BundleError::ImageMetadata {
        module: module.to_owned(),
        reason: error.to_string(),
    };
    let base = format!("payload/images/{module}");
    let (manifest_media_type, manifest) = manifest;
    let manifest_digest = manifest.digest;
    let parsed = tagged_reference(reference)?;
    let annotations = HashMap::from([
        (
            "org.opencontainers.image.ref.name".to_owned(),
            parsed.tag().unwrap_or_default().to_owned(),
        ),
        // containerd names images in full (`docker.io/library/sensor:1.0`).
        ("io.containerd.image.name".to_owned(), parsed.whole()),
    ]);
    let mut manifest_descriptor =
        descriptor(manifest_media_type, manifest_digest, manifest.size).map_err(metadata_error)?;
    manifest_descriptor.set_annotations(Some(annotations));
    let index = ImageIndexBuilder::default()
        .schema_version(2_u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()
        .map_err(metadata_error)?;
    let blob_path = |digest: &Sha256Digest| format!("blobs/sha256/{}", digest.hex());
    let docker_manifest = json!([{
        "Config": blob_path(&config_digest),
        "RepoTags": [reference],
        "Layers": layer_digests.iter().map(blob_path).collect::<Vec<_>>(),
    }]);
    let mut files: BTreeMap<String, Payload> = BTreeMap::new();
    for mut blob in blobs.into_iter().chain([manifest]) {
        blob.path = format!("{base}/{}", blob_path(&blob.digest));
        files.insert(blob.path.clone(), blob);
    }
    for (name, bytes) in [
        (
            "oci-layout",
            to_canonical_bytes(&json!({"imageLayoutVersion": "1.0.0"})),
        ),
        ("index.json", canonical(module, &index)?),
        ("manifest.json", to_canonical_bytes(&docker_manifest)),
    ] {
        let payload = Payload::bytes(format!("{base}/{name}"), bytes);
        files.insert(payload.path.clone(), payload);
    }
    Ok(PreparedImage {
        listing: PackagedImage {
            module: module.to_owned(),
            reference: reference.to_owned(),
            path: base,
            manifest_digest: manifest_digest.oci(),
        },
        payloads: files.into_values().collect(),
    })
}

/// Serialises an oci-spec value canonically.
fn canonical<T: Serialize>(module: &str, value: &T) -> Result<Vec<u8>, BundleError> {
    let value = serde_json::to_value(value).map_err(|error| BundleError::ImageMetadata {
        module: module.to_owned(),
        reason: error.to_string(),
    })?;
    Ok(to_canonical_bytes(&value))
}

/// Builds a descriptor for a blob.
fn descriptor(
    media_type: MediaType,
    digest: Sha256Digest,
    size: u64,
) -> Result<Descriptor, oci_spec::OciSpecError> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest.oci().parse::<oci_spec::image::Digest>()?)
        .size(size)
        .build()
}

/// The path of a blob named by a descriptor, refusing non-sha256 digests.
fn blob_path(layout: &Path, entry: &Descriptor) -> Result<(PathBuf, Sha256Digest), BundleError> {
    let digest = Sha256Digest::from_oci(entry.digest().as_ref()).ok_or_else(|| {
        BundleError::InvalidOciLayout {
            path: layout.to_owned(),
            reason: format!("unsupported digest {}", entry.digest()),
        }
    })?;
    Ok((layout.join("blobs/sha256").join(digest.hex()), digest))
}

/// Streams a blob through SHA-256 and compares digest and size with its
/// descriptor.
fn check_blob(layout: &Path, entry: &Descriptor) -> Result<CheckedBlob, BundleError> {
    let (path, expected) = blob_path(layout, entry)?;
    let (actual, stamp) = hash_file(&path)?;
    if actual != expected || stamp.size() != entry.size() {
        return Err(BundleError::BlobMismatch {
            path,
            expected: format!("{} with {} bytes", entry.digest(), entry.size()),
            actual: actual.hex(),
            size: stamp.size(),
        });
    }
    Ok(CheckedBlob {
        path,
        digest: actual,
        stamp,
    })
}

/// A layout blob whose content matched its descriptor.
struct CheckedBlob {
    path: PathBuf,
    digest: Sha256Digest,
    stamp: FileStamp,
}

impl CheckedBlob {
    /// The payload that copies this blob into the bundle.
    fn into_payload(self) -> Payload {
        Payload {
            path: String::new(),
            digest: self.digest,
            size: self.stamp.size(),
            source: PayloadSource::File(self.path, self.stamp),
        }
    }
}

/// Reads a small JSON blob (manifest, nested index) after checking it.
fn read_document(layout: &Path, entry: &Descriptor) -> Result<Vec<u8>, BundleError> {
    let (path, _) = blob_path(layout, entry)?;
    if entry.size() > MAX_DOCUMENT {
        return Err(BundleError::InvalidOciLayout {
            path: layout.to_owned(),
            reason: format!(
                "{} is {} bytes, too large for a manifest",
                entry.digest(),
                entry.size()
            ),
        });
    }
    let digest = check_blob(layout, entry)?.digest;
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|file| file.take(MAX_DOCUMENT).read_to_end(&mut bytes))
        .map_err(|source| BundleError::ReadSource {
            path: path.clone(),
            source,
        })?;
    if Sha256Digest::of(&bytes) != digest {
        return Err(BundleError::SourceChanged { path });
    }
    Ok(bytes)
}
