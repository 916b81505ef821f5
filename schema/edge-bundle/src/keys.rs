//! Key generation and the key file formats.
//!
//! Private keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, RFC 8410) and
//! public keys are PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`,
//! RFC 8410), the forms `openssl genpkey -algorithm ed25519` and
//! `openssl pkey -pubout` use, so keys can be inspected with standard tools.

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePublicKey, EncodePublicKey};
#[cfg(feature = "build")]
use ed25519_dalek::{SigningKey, pkcs8::EncodePrivateKey};
#[cfg(feature = "build")]
use zeroize::Zeroizing;

use crate::digest::Sha256Digest;
use crate::error::SignerError;

/// A freshly generated key pair, as the bytes of the two key files.
#[cfg(feature = "build")]
pub struct KeyPair {
    /// The PKCS#8 PEM private key; wiped from memory on drop.
    pub private_pem: Zeroizing<String>,
    /// The PEM SubjectPublicKeyInfo public key.
    pub public_pem: String,
    /// The key id that signatures by this key will carry.
    pub key_id: String,
}

/// Generates an ed25519 key pair from the operating system's randomness.
#[cfg(feature = "build")]
pub fn generate_keypair() -> Result<KeyPair, SignerError> {
    let mut seed = Zeroizing::new([0_u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|error| SignerError::Randomness {
        reason: error.to_string(),
    })?;
    let signing_key = SigningKey::from_bytes(&seed);
    let private_pem = signing_key.to_pkcs8_pem(LineEnding::LF).map_err(|error| {
        SignerError::MalformedPrivateKey {
            reason: error.to_string(),
        }
    })?;
    let verifying_key = signing_key.verifying_key();
    Ok(KeyPair {
        private_pem,
        public_pem: public_key_pem(&verifying_key)?,
        key_id: key_id(&verifying_key),
    })
}

/// The key id: lower-case hex SHA-256 of the 32 raw public key bytes, so any
/// party holding the public key can compute it without a registry.
pub fn key_id(key: &VerifyingKey) -> String {
    Sha256Digest::of(key.as_bytes()).hex()
}

/// Encodes a public key as PEM SubjectPublicKeyInfo.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, SignerError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|error| SignerError::MalformedPublicKey {
            reason: error.to_string(),
        })
}

/// Parses a PEM SubjectPublicKeyInfo ed25519 public key (a `KEY.pub` file).
pub fn load_public_key_pem(pem: &str) -> Result<VerifyingKey, SignerError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|error| SignerError::MalformedPublicKey {
        reason: error.to_string(),
    })
}

#[cfg(all(test, feature = "build"))]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_their_files() {
        let pair = generate_keypair().unwrap();
        assert!(
            pair.private_pem
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let public = load_public_key_pem(&pair.public_pem).unwrap();
        assert_eq!(key_id(&public), pair.key_id);
        assert_eq!(pair.key_id.len(), 64);
    }

    #[test]
    fn key_ids_are_the_sha256_of_the_raw_public_key() {
        // RFC 8032, section 7.1, test 1.
        let mut raw = [0_u8; 32];
        hex::decode_to_slice(
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            &mut raw,
        )
        .unwrap();
        let key = VerifyingKey::from_bytes(&raw).unwrap();
        assert_eq!(
            key_id(&key),
            "21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9"
        );
    }

    #[test]
    fn malformed_public_keys_are_reported_as_such() {
        let error =
            load_public_key_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .unwrap_err();
        assert!(
            matches!(error, SignerError::MalformedPublicKey { .. }),
            "{error}"
        );
    }
}
