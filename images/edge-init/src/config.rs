//! What the image builder tells the init (`/etc/edge-init.json` in the initramfs), and the root
//! hash signature that sits in each slot's `root-X-verity-sig` partition.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Where the init finds its configuration inside the initramfs.
pub const CONFIG_PATH: &str = "/etc/edge-init.json";
/// Where the init finds the public key that must have signed the root hash.
pub const ROOT_KEY_PATH: &str = "/etc/edge-init/root-hash.pub";
/// Where the kernel modules sit inside the initramfs, as `NAME.ko`.
pub const MODULE_DIR: &str = "/lib/modules";

/// The init's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// The boot disk; partition N is `{disk}{N}`.
    pub disk: String,
    /// Kernel modules to load, in order (file names without `.ko`).
    pub modules: Vec<String>,
    /// The data partition's file system type, as `mount` names it.
    pub data_fs: String,
    /// How edged is started inside the verified root.
    pub edged: EdgedLaunch,
}

/// How to run edged in the root file system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgedLaunch {
    /// The edged executable.
    pub program: String,
    /// Options placed before every command (`--runtime none`, `--device-config …`).
    pub options: Vec<String>,
    /// The state directory; the data partition is mounted there.
    pub state_dir: String,
    /// The bundle applied on first boot, when the state directory has no deployment yet.
    pub initial_bundle: String,
}

/// The content of a `root-X-verity-sig` partition: the DPS JSON object with its `rootHash`,
/// except that `signature` is a hex ed25519 signature over the 32 root hash bytes (not PKCS#7),
/// and `keyId` names the key. The rest of the partition is zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootHashSignature {
    /// The dm-verity root hash, hex.
    pub root_hash: String,
    /// The SHA-256 of the public key, hex (informational: the init tries its own key).
    pub key_id: String,
    /// The ed25519 signature over the root hash bytes, hex.
    pub signature: String,
}

/// Why a root hash signature is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The partition holds no readable signature object.
    #[error("the signature partition holds no valid JSON signature object: {0}")]
    Malformed(String),
    /// The signature does not verify against the built-in key.
    #[error("the root hash {0} is not signed by the trusted key")]
    Untrusted(String),
}

impl RootHashSignature {
    /// Reads the object from the partition's bytes (JSON, then zero padding).
    pub fn from_partition(bytes: &[u8]) -> Result<Self, SignatureError> {
        let end = bytes
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(bytes.len());
        serde_json::from_slice(&bytes[..end])
            .map_err(|error| SignatureError::Malformed(error.to_string()))
    }

    /// The root hash bytes if the signature verifies against `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<[u8; 32], SignatureError> {
        let malformed = |what: &str| SignatureError::Malformed(format!("{what} is not valid hex"));
        let root: [u8; 32] = hex::decode(&self.root_hash)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("rootHash"))?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("signature"))?;
        key.verify_strict(&root, &Signature::from_bytes(&signature))
            .map_err(|_| SignatureError::Untrusted(self.root_hash.clone()))?;
        Ok(root)
    }
}
