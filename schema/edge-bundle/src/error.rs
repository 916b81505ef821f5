//! Every way packaging, signing and verification can fail, as data, with the
//! wording shown to users in one place.

use std::io;
use std::path::PathBuf;

use crate::display::{escaped, escaped_message};

/// Why a key could not be loaded or a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The key file does not exist.
    #[error("key file {path} does not exist")]
    KeyFileMissing {
        /// The path that was given.
        path: PathBuf,
    },
    /// The key file exists but could not be read.
    #[error("cannot read key file {path}: {source}")]
    KeyFileUnreadable {
        /// The path that was given.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The text is not a PKCS#8 PEM ed25519 private key.
    #[error("not a PKCS#8 PEM ed25519 private key: {reason}")]
    MalformedPrivateKey {
        /// What the decoder objected to.
        reason: String,
    },
    /// The text is not a PEM SubjectPublicKeyInfo ed25519 public key.
    #[error("not a PEM ed25519 public key (\"BEGIN PUBLIC KEY\"): {reason}")]
    MalformedPublicKey {
        /// What the decoder objected to.
        reason: String,
    },
    /// The operating system could not provide randomness for a new key.
    #[error("cannot gather randomness for a new key: {reason}")]
    Randomness {
        /// The operating system's reason.
        reason: String,
    },
    /// The `pkcs11:` URI could not be understood.
    #[error("invalid PKCS#11 URI {uri:?}: {reason}")]
    InvalidPkcs11Uri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The PKCS#11 module (shared library) could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {reason}")]
    Pkcs11Module {
        /// The module path that was given.
        module: PathBuf,
        /// The loader's or module's reason.
        reason: String,
    },
    /// No slot holds a token with the requested label.
    #[error("no PKCS#11 token labelled {label:?} (tokens present: {present})")]
    TokenNotFound {
        /// The label from the URI.
        label: String,
        /// The labels that were found, to help spot typos.
        present: String,
    },
    /// The token refused the PIN.
    #[error("wrong PIN for PKCS#11 token {token:?}")]
    WrongPin {
        /// The token label.
        token: String,
    },
    /// The token has locked the user PIN after too many failures.
    #[error("the user PIN of PKCS#11 token {token:?} is locked")]
    PinLocked {
        /// The token label.
        token: String,
    },
    /// The token holds no ed25519 private key (or no matching public key)
    /// with the requested label.
    #[error("PKCS#11 token {token:?} has no ed25519 {class} key labelled {object:?}")]
    KeyNotFound {
        /// The token label.
        token: String,
        /// The object label from the URI.
        object: String,
        /// `private` or `public`.
        class: &'static str,
    },
    /// Several keys carry the requested label, so the choice would be a guess.
    #[error("PKCS#11 token {token:?} has several {class} keys labelled {object:?}")]
    AmbiguousKey {
        /// The token label.
        token: String,
        /// The object label from the URI.
        object: String,
        /// `private` or `public`.
        class: &'static str,
    },
    /// The public key object's CKA_EC_POINT is not an ed25519 point.
    #[error("PKCS#11 public key {object:?} has a malformed CKA_EC_POINT")]
    MalformedTokenPublicKey {
        /// The object label.
        object: String,
    },
    /// Any other PKCS#11 failure, with the function that failed.
    #[error("PKCS#11 {operation} failed: {reason}")]
    Pkcs11 {
        /// What was being done.
        operation: &'static str,
        /// The module's reason.
        reason: String,
    },
    /// The signer returned something that is not a valid signature by its
    /// own public key.
    #[error("signer {key_id} returned a signature that does not verify with its public key")]
    BadSignature {
        /// The key id of the misbehaving signer.
        key_id: String,
    },
}

/// Why a bundle could not be built, verified or inspected.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A source file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    ReadSource {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Writing the bundle failed.
    #[error("cannot write the bundle: {0}")]
    Write(io::Error),
    /// Reading the bundle failed (truncated, not a tar, I/O error).
    #[error("cannot read the bundle: {}", escaped_message(&.0.to_string()))]
    Read(io::Error),
    /// A name that becomes part of a path or a file name is not allowed.
    #[error(
        "invalid {what} {}: use 1-128 characters from A-Z a-z 0-9 . _ - and do not start with . or -",
        escaped(value)
    )]
    InvalidName {
        /// Which name (deployment, module).
        what: &'static str,
        /// The rejected value.
        value: String,
    },
    /// An image reference is not in the form the format needs.
    #[error("invalid image reference {}: {reason}", escaped(reference))]
    InvalidReference {
        /// The rejected reference.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same module was given two images.
    #[error("module {} already has an image in this bundle", escaped(.0))]
    DuplicateModule(String),
    /// An image was built for another architecture than the bundle's.
    #[error("image for module {module:?} is {image}, but the bundle targets {bundle}")]
    ArchitectureMismatch {
        /// The module.
        module: String,
        /// The image's architecture.
        image: String,
        /// The bundle's architecture.
        bundle: String,
    },
    /// The image metadata could not be assembled (a bug or an impossible
    /// configuration value).
    #[error("cannot assemble the image metadata of module {module:?}: {reason}")]
    ImageMetadata {
        /// The module.
        module: String,
        /// What went wrong.
        reason: String,
    },
    /// The expiry given to the builder is not after the creation time.
    #[error(
        "the expiry {expires} is not after its creation at {created} (SOURCE_DATE_EPOCH); a bundle must expire later than it is made"
    )]
    ExpiryNotAfterCreation {
        /// The expiry asked for.
        expires: String,
        /// The creation time.
        created: String,
    },
    /// The source date epoch cannot be expressed as a date.
    #[error("SOURCE_DATE_EPOCH {0} is out of range")]
    InvalidEpoch(u64),
    /// A path inside an image root filesystem is not UTF-8.
    #[error("{path}: file name is not valid UTF-8")]
    NonUtf8Path {
        /// The offending path.
        path: PathBuf,
    },
    /// A symbolic link in an image root filesystem points outside it.
    #[error("{path}: symbolic link to {target:?} escapes the image directory")]
    SymlinkEscapes {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: String,
    },
    /// A file type that has no place in a bundled image.
    #[error("{path}: {kind} cannot be packaged into an image layer")]
    UnsupportedFileType {
        /// The offending path.
        path: PathBuf,
        /// Device node, socket, fifo, ...
        kind: &'static str,
    },
    /// A directory meant as an OCI image layout is not one.
    #[error("{path}: not a usable OCI image layout: {reason}")]
    InvalidOciLayout {
        /// The layout directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blob in an OCI image layout does not hash to its name.
    #[error(
        "{path}: blob does not match its descriptor (expected {expected}, found sha256:{actual} with {size} bytes)"
    )]
    BlobMismatch {
        /// The blob file.
        path: PathBuf,
        /// The descriptor's digest and size.
        expected: String,
        /// The digest of the file.
        actual: String,
        /// The size of the file.
        size: u64,
    },
    /// A source changed between hashing it and writing it into the bundle.
    #[error("{path} changed while the bundle was being written; build again")]
    SourceChanged {
        /// The file or image directory.
        path: PathBuf,
    },
    /// Building needs at least one signer.
    #[error("a bundle needs at least one signature, but no signer was given")]
    NoSigners,
    /// The same key was given twice as a signer.
    #[error("key {0} was given twice as a signer")]
    DuplicateSigner(String),
    /// Signing failed.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// The first entries of the bundle are not the manifest and signatures.
    #[error("bundle must start with {expected}, found {found}")]
    MissingHeaderEntry {
        /// The expected entry name.
        expected: &'static str,
        /// What was there instead, already escaped for display.
        found: String,
    },
    /// bundle.json does not parse or is not a manifest of this format.
    #[error("bundle.json is not a valid bundle manifest: {}", escaped_message(.0))]
    MalformedManifest(String),
    /// bundle.json parses but is not in canonical form, so its bytes are
    /// ambiguous.
    #[error("bundle.json is not canonical JSON")]
    NonCanonicalManifest,
    /// The manifest's format version is not one this library reads.
    #[error("unsupported bundle format version {0}")]
    UnsupportedFormatVersion(u64),
    /// The deployment version is above [`crate::grammar::MAX_VERSION`].
    #[error(
        "deployment version {version} is above the highest version, 2^53 - 1 = {max}",
        version = .0,
        max = crate::grammar::MAX_VERSION
    )]
    VersionOutOfRange(u64),
    /// bundle.sig.json does not parse.
    #[error("bundle.sig.json is not a valid signature file: {}", escaped_message(.0))]
    MalformedSignatures(String),
    /// A verification threshold of zero would accept unsigned bundles.
    #[error("the signature threshold must be at least 1")]
    ZeroThreshold,
    /// Too few distinct trusted keys produced a valid signature.
    #[error("bundle is signed by {valid} trusted key(s), {threshold} required")]
    NotEnoughSignatures {
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// The threshold that was asked for.
        threshold: usize,
    },
    /// A tar entry or manifest path that is unsafe to extract.
    #[error("unsafe bundle entry {}: {reason}", escaped(path))]
    UnsafeEntry {
        /// The entry path as far as it could be decoded.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A tar entry the manifest does not list.
    #[error("bundle entry {} is not listed in bundle.json", escaped(.0))]
    UnlistedEntry(String),
    /// A tar entry or manifest path that occurs twice.
    #[error("{} occurs twice in the bundle", escaped(.0))]
    DuplicateEntry(String),
    /// A payload whose size differs from the manifest.
    #[error(
        "bundle entry {} has {actual} bytes, bundle.json says {expected}",
        escaped(path)
    )]
    SizeMismatch {
        /// The entry.
        path: String,
        /// The size from the manifest.
        expected: u64,
        /// The size in the tar.
        actual: u64,
    },
    /// A payload whose content differs from the manifest.
    #[error(
        "bundle entry {} has sha256 {actual}, bundle.json says {expected}",
        escaped(path)
    )]
    DigestMismatch {
        /// The entry.
        path: String,
        /// The digest from the manifest.
        expected: String,
        /// The digest of the content.
        actual: String,
    },
    /// A payload listed in the manifest is absent from the tar.
    #[error("payload {} is listed in bundle.json but missing from the bundle", escaped(.0))]
    MissingEntry(String),
    /// The caller's entry visitor failed.
    #[error("processing bundle entry {} failed: {source}", escaped(path))]
    Visitor {
        /// The entry.
        path: String,
        /// The visitor's error.
        source: io::Error,
    },
}
