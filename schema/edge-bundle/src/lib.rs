//! The edgec deployment bundle format: a signed, reproducible tar that
//! carries an IoT Edge deployment, its route table, module images as OCI
//! layouts and optionally an operating system image.
//!
//! The compiler builds, verifies and inspects bundles with this crate; the
//! device runtime verifies them with the same code. See `schema/BUNDLE.md`
//! for the format itself.

/// Canonical JSON lives in its own crate so the compiler core can use it without the bundle
/// machinery; it is re-exported here because bundle users hash with it.
pub use canonical_json;
pub mod display;
pub mod error;
pub mod grammar;
pub mod manifest;
pub mod pkcs11;

mod builder;
mod digest;
mod image;
mod keys;
mod layer;
mod payload;
mod signature;
mod signer;
mod stamp;
mod tar_guard;
mod verify;

pub use builder::{BuiltBundle, BundleBuilder, BundleHeader, OsImage};
pub use digest::Sha256Digest;
pub use ed25519_dalek::{Signature, VerifyingKey};
pub use error::{BundleError, SignerError};
pub use image::ImageConfig;
pub use keys::{KeyPair, generate_keypair, key_id, load_public_key_pem, public_key_pem};
pub use manifest::{
    Architecture, BundleManifest, OsPayload, PackagedImage, PayloadFile, RegistryImage,
};
pub use payload::LayerCompression;
pub use pkcs11::{Pkcs11Signer, Pkcs11Uri};
pub use signature::{SignatureEntry, SignatureFile};
pub use signer::{FileSigner, Signer};
pub use tar_guard::{MAX_LONG_NAME_RECORD, TarGuard};
pub use verify::{
    BundleInspection, VerifiedBundle, inspect_bundle, verify_bundle, verify_bundle_with,
};
