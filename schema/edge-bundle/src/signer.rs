//! The signing abstraction: a key that can sign canonical manifest bytes,
//! wherever it lives.

use std::fs;
use std::io;
use std::path::Path;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::SignerError;

/// Something that can make ed25519 signatures: a key file, a PKCS#11 token.
pub trait Signer {
    /// The public half, used for the key id and to check every signature
    /// before it is written, so a broken token cannot produce a bad bundle.
    fn public_key(&self) -> VerifyingKey;

    /// Signs `message` with pure ed25519 (no pre-hashing).
    fn sign(&self, message: &[u8]) -> Result<Signature, SignerError>;
}

/// A private key held in memory, loaded from a PKCS#8 PEM file.
pub struct FileSigner {
    key: SigningKey,
}

impl FileSigner {
    /// Parses a PKCS#8 PEM ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Self, SignerError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|error| {
            SignerError::MalformedPrivateKey {
                reason: error.to_string(),
            }
        })?;
        Ok(Self { key })
    }

    /// Reads and parses a key file, telling a missing file apart from an
    /// unreadable one.
    pub fn from_file(path: &Path) -> Result<Self, SignerError> {
        let text = fs::read_to_string(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                SignerError::KeyFileMissing {
                    path: path.to_owned(),
                }
            } else {
                SignerError::KeyFileUnreadable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::from_pem(&Zeroizing::new(text))
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SignerError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_keypair;
    use ed25519_dalek::Verifier as _;

    #[test]
    fn file_signer_signs_with_the_generated_key() {
        let pair = generate_keypair().unwrap();
        let signer = FileSigner::from_pem(&pair.private_pem).unwrap();
        let signature = signer.sign(b"manifest").unwrap();
        let public = crate::keys::load_public_key_pem(&pair.public_pem).unwrap();
        assert_eq!(signer.public_key(), public);
        public.verify(b"manifest", &signature).unwrap();
    }

    #[test]
    fn malformed_pem_and_missing_files_are_told_apart() {
        let error =
            FileSigner::from_pem("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
                .err()
                .unwrap();
        assert!(
            matches!(error, SignerError::MalformedPrivateKey { .. }),
            "{error}"
        );
        let error = FileSigner::from_file(Path::new("/nonexistent/edge.key"))
            .err()
            .unwrap();
        assert!(
            matches!(error, SignerError::KeyFileMissing { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("/nonexistent/edge.key"));
    }
}
