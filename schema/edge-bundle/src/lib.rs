//! The edgec deployment bundle format: a signed, reproducible tar that
//! carries an IoT Edge deployment, its route table, module images as OCI
//! layouts and optionally an operating system image.
//!
//! The compiler builds, verifies and inspects bundles with this crate; the
//! device runtime verifies them with the same code. See `schema/BUNDLE.md`
//! for the format itself.
//!
//! Building (the bundle builder, OCI image packaging, layers, signers, key
//! generation) is behind the `build` feature, which edgec and edge-image
//! enable; without it the crate is what a device needs to verify and read
//! bundles, and does not link oci-spec, flate2 or time.

/// Canonical JSON lives in its own crate so the compiler core can use it without the bundle
/// machinery; it is re-exported here because bundle users hash with it.
pub use canonical_json;
pub mod display;
pub mod error;
pub mod grammar;
pub mod manifest;
pub mod pkcs11;

#[cfg(feature = "build")]
mod builder;
mod digest;
#[cfg(feature = "build")]
mod image;
mod keys;
#[cfg(feature = "build")]
mod layer;
#[cfg(feature = "build")]
mod payload;
#[cfg(feature = "build")]
mod pkcs11_signer;
mod signature;
#[cfg(feature = "build")]
mod signer;
#[cfg(feature = "build")]
mod stamp;
mod tar_guard;
mod verify;

#[cfg(feature = "build")]
pub use builder::{BuiltBundle, BundleBuilder, BundleHeader, OsImage};
pub use digest::Sha256Digest;
pub use ed25519_dalek::{Signature, VerifyingKey};
pub use error::{BundleError, SignerError};
#[cfg(feature = "build")]
pub use image::ImageConfig;
#[cfg(feature = "build")]
pub use keys::{KeyPair, generate_keypair};
pub use keys::{key_id, load_public_key_pem, public_key_pem};
pub use manifest::{
    Architecture, BundleManifest, OsPayload, PackagedImage, PayloadFile, RegistryImage,
};
#[cfg(feature = "build")]
pub use payload::LayerCompression;
#[cfg(feature = "build")]
pub use pkcs11::Pkcs11Signer;
pub use pkcs11::Pkcs11Uri;
pub use signature::{SignatureEntry, SignatureFile};
#[cfg(feature = "build")]
pub use signer::{FileSigner, Signer};
pub use tar_guard::{MAX_LONG_NAME_RECORD, TarGuard};
pub use verify::{
    BundleInspection, VerifiedBundle, inspect_bundle, verify_bundle, verify_bundle_with,
};
