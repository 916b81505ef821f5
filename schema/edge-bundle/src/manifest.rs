//! The bundle manifest (`bundle.json`): what the signatures cover.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Sha256Digest;
use crate::display::escaped;
use crate::error::BundleError;
use crate::grammar::{
    check_compatible, check_expires, check_name, check_payload_path, check_registry_reference,
    check_tagged_reference, check_version, is_lower_hex,
};
use canonical_json::to_canonical_bytes;

/// The format version this library writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The first tar entry: the canonical manifest.
pub const MANIFEST_PATH: &str = "bundle.json";
/// The second tar entry: the detached signatures.
pub const SIGNATURES_PATH: &str = "bundle.sig.json";
/// Every other entry lives under this prefix.
pub const PAYLOAD_PREFIX: &str = "payload/";

/// The CPU architectures IoT Edge runs on, named as Docker names them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// x86-64.
    Amd64,
    /// 64-bit ARM.
    Arm64,
    /// 32-bit ARMv7 with hard float.
    Arm32v7,
}

impl Architecture {
    /// The name used in bundle manifests and by IoT Edge.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
            Self::Arm32v7 => "arm32v7",
        }
    }

    /// The OCI platform `architecture` and `variant` for image configs.
    pub fn oci_platform(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Amd64 => ("amd64", None),
            Self::Arm64 => ("arm64", Some("v8")),
            Self::Arm32v7 => ("arm", Some("v7")),
        }
    }
}

/// One file inside the bundle, as the signatures pin it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadFile {
    /// Path inside the tar, always under `payload/`.
    pub path: String,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A module image packaged into the bundle as an OCI image layout that
/// `docker load` also accepts.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagedImage {
    /// The IoT Edge module that runs this image.
    pub module: String,
    /// The `name:tag` the image is loaded under (docker `RepoTags`).
    pub reference: String,
    /// The layout directory inside the bundle, e.g. `payload/images/sensor`.
    pub path: String,
    /// The digest of the image manifest blob (`sha256:...`).
    pub manifest_digest: String,
}

/// A module image pulled from a registry by digest rather than carried.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryImage {
    /// The IoT Edge module that runs this image.
    pub module: String,
    /// A digest reference, `registry/repository@sha256:...`.
    pub reference: String,
}

/// An optional operating system image carried next to the deployment, so a
/// single signed artifact can update both.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsPayload {
    /// The root filesystem image.
    pub rootfs: PayloadFile,
    /// The dm-verity hash tree for `rootfs`.
    pub verity: PayloadFile,
    /// The dm-verity root hash (hex).
    pub root_hash: String,
    /// The ed25519 signature over the root hash bytes (hex) that the init checks against
    /// its built-in key, if the OS build made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash_signature: Option<String>,
}

impl OsPayload {
    /// The root hash and its signature are hex, and both images are listed payload.
    fn check(&self, manifest: &BundleManifest) -> Result<(), BundleError> {
        if !is_lower_hex(&self.root_hash, 64) {
            return Err(BundleError::MalformedManifest(
                "os root_hash is not 64 lower-case hex digits".to_owned(),
            ));
        }
        if let Some(signature) = &self.root_hash_signature
            && !is_lower_hex(signature, 128)
        {
            return Err(BundleError::MalformedManifest(
                "os root_hash_signature is not 128 lower-case hex digits (ed25519)".to_owned(),
            ));
        }
        for file in [&self.rootfs, &self.verity] {
            if manifest.payload_file(&file.path) != Some(file) {
                return Err(BundleError::MalformedManifest(format!(
                    "os payload {} is not listed",
                    escaped(&file.path)
                )));
            }
        }
        Ok(())
    }
}

/// The signed description of a bundle.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Always [`FORMAT_VERSION`] for bundles this library writes.
    pub format_version: u64,
    /// The deployment name, also the bundle file name.
    pub deployment: String,
    /// The device `compatible` string the bundle is meant for.
    pub compatible: String,
    /// The device CPU architecture.
    pub architecture: Architecture,
    /// The monotonic deployment version; devices refuse to go back.
    pub version: u64,
    /// Creation time in RFC 3339 UTC, derived from `SOURCE_DATE_EPOCH`.
    pub created: String,
    /// The time after which devices refuse to take the bundle in, RFC 3339 UTC to the second
    /// (`2030-01-31T00:00:00Z`), later than `created`; absent, the bundle never expires. It
    /// bounds how long a registry or an attacker can keep serving this release as the latest
    /// (`schema/BUNDLE.md`, "Expiry").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The IoT Edge deployment manifest, as the compiler produced it.
    pub iot_edge_manifest: Value,
    /// The compiled route table, as the compiler produced it.
    pub route_table: Value,
    /// Module images carried in the bundle, sorted by module.
    pub images: Vec<PackagedImage>,
    /// Module images referenced by registry digest, sorted by module.
    pub registry_images: Vec<RegistryImage>,
    /// The operating system image, if the bundle carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsPayload>,
    /// Every payload file, sorted by path.
    pub payload: Vec<PayloadFile>,
}

impl BundleManifest {
    /// Returns the canonical bytes that are stored as `bundle.json` and signed.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let value = serde_json::to_value(self)
            .map_err(|error| BundleError::MalformedManifest(error.to_string()))?;
        Ok(to_canonical_bytes(&value))
    }

    /// Parses `bundle.json` bytes, insisting that they are canonical so that
    /// exactly one byte string can carry a given signed meaning.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|error| BundleError::MalformedManifest(error.to_string()))?;
        let version = value.get("format_version").and_then(Value::as_u64);
        if let Some(version) = version.filter(|version| *version != FORMAT_VERSION) {
            return Err(BundleError::UnsupportedFormatVersion(version));
        }
        if to_canonical_bytes(&value) != bytes {
            return Err(BundleError::NonCanonicalManifest);
        }
        let manifest: Self = serde_json::from_value(value)
            .map_err(|error| BundleError::MalformedManifest(error.to_string()))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks every rule of `schema/BUNDLE.md` that the types alone do not: the grammar of
    /// names, references, paths and digests, the order of the lists, and that the OS slot
    /// points at listed files. Parsing runs it, so no manifest that breaks a rule reaches a
    /// caller; the builder runs it before signing.
    pub fn check(&self) -> Result<(), BundleError> {
        check_version(self.version)?;
        check_name("deployment name", &self.deployment)?;
        check_compatible(&self.compatible)?;
        let created_ok = (1..=40).contains(&self.created.len())
            && self
                .created
                .bytes()
                .all(|byte| byte.is_ascii_digit() || b"-:.TZ".contains(&byte));
        if !created_ok {
            return Err(BundleError::MalformedManifest(format!(
                "created {} is not an RFC 3339 UTC time",
                escaped(&self.created)
            )));
        }
        if let Some(expires) = &self.expires {
            check_expires(expires, &self.created)?;
        }
        self.check_images()?;
        self.check_listing()?;
        if let Some(os) = &self.os {
            os.check(self)?;
        }
        Ok(())
    }

    /// Image modules are valid names, each with one image, the lists sorted by module; packaged
    /// images live in `payload/images/<module>`.
    fn check_images(&self) -> Result<(), BundleError> {
        for image in &self.images {
            check_name("module name", &image.module)?;
            check_tagged_reference(&image.reference)?;
            if image.path != format!("payload/images/{}", image.module) {
                return Err(BundleError::MalformedManifest(format!(
                    "the image of module {} must be at payload/images/{}, not {}",
                    escaped(&image.module),
                    image.module,
                    escaped(&image.path)
                )));
            }
            let digest_ok = image
                .manifest_digest
                .strip_prefix("sha256:")
                .is_some_and(|hex| is_lower_hex(hex, 64));
            if !digest_ok {
                return Err(BundleError::MalformedManifest(format!(
                    "the image manifest digest of module {} is not sha256:<64 hex digits>",
                    escaped(&image.module)
                )));
            }
        }
        for image in &self.registry_images {
            check_name("module name", &image.module)?;
            check_registry_reference(&image.reference)?;
        }
        let sorted = |modules: &[&str]| modules.windows(2).all(|pair| pair[0] < pair[1]);
        let packaged: Vec<&str> = self
            .images
            .iter()
            .map(|image| image.module.as_str())
            .collect();
        let pulled: Vec<&str> = self
            .registry_images
            .iter()
            .map(|image| image.module.as_str())
            .collect();
        if !sorted(&packaged) || !sorted(&pulled) {
            return Err(BundleError::MalformedManifest(
                "images and registry_images must be sorted by module, each module once".to_owned(),
            ));
        }
        if let Some(module) = pulled
            .iter()
            .find(|module| packaged.binary_search(module).is_ok())
        {
            return Err(BundleError::DuplicateModule((*module).to_owned()));
        }
        Ok(())
    }

    /// Every listed path is safe and under `payload/`, with a well-formed digest; the listing
    /// is sorted and unique.
    fn check_listing(&self) -> Result<(), BundleError> {
        for file in &self.payload {
            check_payload_path(&file.path)?;
            if !file.path.starts_with(PAYLOAD_PREFIX) {
                return Err(BundleError::UnsafeEntry {
                    path: file.path.clone(),
                    reason: "payload paths must start with payload/",
                });
            }
            if Sha256Digest::from_hex(&file.sha256).is_none() {
                return Err(BundleError::MalformedManifest(format!(
                    "{}: sha256 is not 64 lower-case hex digits",
                    escaped(&file.path)
                )));
            }
        }
        for pair in self.payload.windows(2) {
            match pair[0].path.cmp(&pair[1].path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(BundleError::DuplicateEntry(pair[0].path.clone()));
                }
                std::cmp::Ordering::Greater => {
                    return Err(BundleError::MalformedManifest(
                        "payload is not sorted by path".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The signed expiry as seconds since 1970, if the bundle has one. Parsing checked its
    /// form, so a manifest that was parsed or checked always yields it.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires
            .as_deref()
            .and_then(crate::grammar::utc_time_seconds)
    }

    /// Finds the listing of a payload path.
    pub fn payload_file(&self, path: &str) -> Option<&PayloadFile> {
        self.payload
            .binary_search_by(|file| file.path.as_str().cmp(path))
            .ok()
            .map(|index| &self.payload[index])
    }

    /// Returns the digest of the canonical manifest, a handy bundle identity.
    pub fn digest(&self) -> Result<Sha256Digest, BundleError> {
        Ok(Sha256Digest::of(&self.to_canonical_bytes()?))
    }
}
