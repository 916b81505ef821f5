//! Module identity keys and the device CA key on a PKCS#11 token.
//!
//! Every key is generated on the token and marked sensitive and not
//! extractable, so it never exists outside it: module keys are 32-byte
//! generic secrets (`CKK_GENERIC_SECRET`) used with `CKM_SHA256_HMAC`, the CA
//! key is an EC P-256 key pair used with `CKM_ECDSA`. Tokens are found by
//! label (slot ids change between module loads) through the same helpers as
//! edged's trust anchors.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use edge_bundle::pkcs11::{find_token, load_module};
use sha2::Digest as _;

use crate::keys::{Digest, KeyError, KeyStore};

/// The label prefix of module key objects: `edged-module-{module}`.
const MODULE_LABEL_PREFIX: &str = "edged-module-";
/// The length of a generated module key.
const KEY_BYTES: u64 = 32;
/// DER of the prime256v1 curve OID 1.2.840.10045.3.1.7, for CKA_EC_PARAMS.
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A failure talking to the token.
#[derive(Debug, thiserror::Error)]
#[error("PKCS#11 token {token:?}: {message}")]
pub struct TokenError {
    /// The token label.
    pub token: String,
    /// What failed.
    pub message: String,
}

/// A logged-in read-write session on a token. PKCS#11 sessions may not be
/// used from two threads at once, so every use goes through the lock.
struct TokenSession {
    token: String,
    session: Mutex<Session>,
}

impl TokenSession {
    fn open(module: &Path, token: &str, pin_file: &Path) -> Result<Self, TokenError> {
        let error = |message: String| TokenError {
            token: token.to_owned(),
            message,
        };
        let context = load_module(module).map_err(|e| error(e.to_string()))?;
        let slot = find_token(&context, token).map_err(|e| error(e.to_string()))?;
        let session = context
            .open_rw_session(slot)
            .map_err(|e| error(format!("C_OpenSession: {e}")))?;
        let pin = std::fs::read_to_string(pin_file).map_err(|e| {
            error(format!(
                "cannot read the PIN file {}: {e}",
                pin_file.display()
            ))
        })?;
        match session.login(UserType::User, Some(&AuthPin::from(pin.trim()))) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CryptokiError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(error(format!("the PIN in {} is wrong", pin_file.display())));
            }
            Err(e) => return Err(error(format!("C_Login: {e}"))),
        }
        Ok(Self {
            token: token.to_owned(),
            session: Mutex::new(session),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves the session as usable as
        // before: every operation on it is a single PKCS#11 call.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, operation: &str, error: &CryptokiError) -> TokenError {
        TokenError {
            token: self.token.clone(),
            message: format!("{operation}: {error}"),
        }
    }

    fn find(
        &self,
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, TokenError> {
        let handles = session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| self.error("C_FindObjects", &e))?;
        match handles.as_slice() {
            [] => Ok(None),
            [handle] => Ok(Some(*handle)),
            _ => Err(TokenError {
                token: self.token.clone(),
                message: format!(
                    "{} objects are labelled {label:?}; expected one",
                    handles.len()
                ),
            }),
        }
    }
}

/// Module keys on a PKCS#11 token.
pub struct Pkcs11Keys {
    token: TokenSession,
}

impl Pkcs11Keys {
    /// Opens a session on the token labelled `token` of `module`, logged in
    /// with the PIN in `pin_file`.
    pub fn open(module: &Path, token: &str, pin_file: &Path) -> Result<Self, KeyError> {
        let token =
            TokenSession::open(module, token, pin_file).map_err(|error| KeyError::Store {
                location: format!("PKCS#11 token {token:?}"),
                message: error.message,
            })?;
        Ok(Self { token })
    }

    fn label(module: &str) -> String {
        format!("{MODULE_LABEL_PREFIX}{module}")
    }

    fn store_error(&self, error: TokenError) -> KeyError {
        KeyError::Store {
            location: self.location(),
            message: error.message,
        }
    }
}

impl KeyStore for Pkcs11Keys {
    fn signs_on_device(&self) -> bool {
        true
    }

    fn ensure(&self, module: &str) -> Result<(), KeyError> {
        let label = Self::label(module);
        let session = self.token.lock();
        if self
            .token
            .find(&session, ObjectClass::SECRET_KEY, &label)
            .map_err(|e| self.store_error(e))?
            .is_some()
        {
            return Ok(());
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(KEY_BYTES.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Label(label.into_bytes()),
        ];
        session
            .generate_key(&Mechanism::GenericSecretKeyGen, &template)
            .map_err(|e| self.store_error(self.token.error("C_GenerateKey", &e)))?;
        tracing::info!(module, token = %self.token.token, "created the module's key on the token");
        Ok(())
    }

    fn remove(&self, module: &str) -> Result<(), KeyError> {
        let session = self.token.lock();
        if let Some(handle) = self
            .token
            .find(&session, ObjectClass::SECRET_KEY, &Self::label(module))
            .map_err(|e| self.store_error(e))?
        {
            session
                .destroy_object(handle)
                .map_err(|e| self.store_error(self.token.error("C_DestroyObject", &e)))?;
        }
        Ok(())
    }

    fn sign(&self, module: &str, data: &[u8]) -> Result<Digest, KeyError> {
        let session = self.token.lock();
        let handle = self
            .token
            .find(&session, ObjectClass::SECRET_KEY, &Self::label(module))
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| KeyError::Unknown(module.to_owned()))?;
        let digest = session
            .sign(&Mechanism::Sha256Hmac, handle, data)
            .map_err(|e| self.store_error(self.token.error("C_Sign", &e)))?;
        digest
            .try_into()
            .map_err(|digest: Vec<u8>| KeyError::Store {
                location: self.location(),
                message: format!(
                    "CKM_SHA256_HMAC returned {} bytes instead of 32",
                    digest.len()
                ),
            })
    }

    fn location(&self) -> String {
        format!("PKCS#11 token {:?}", self.token.token)
    }
}

/// An EC P-256 key pair on the token, each signature made by the token:
/// the device CA's, through which rcgen signs certificates (its
/// `SigningKey`), and the upstream connection's X.509 client key, through
/// which rustls signs handshakes.
pub(crate) struct TokenEcKey {
    token: TokenSession,
    private_key: ObjectHandle,
    /// The uncompressed point `04 || x || y`: what an X.509
    /// SubjectPublicKeyInfo carries.
    public_point: Vec<u8>,
}

impl TokenEcKey {
    /// Finds the key pair labelled `label`, generating it on the token on
    /// first use.
    pub(crate) fn open_or_generate(
        module: &Path,
        token: &str,
        pin_file: &Path,
        label: &str,
    ) -> Result<Self, TokenError> {
        Self::open_labelled(module, token, pin_file, label, true)
    }

    /// Finds the key pair labelled `label`, which must be on the token.
    pub(crate) fn open(
        module: &Path,
        token: &str,
        pin_file: &Path,
        label: &str,
    ) -> Result<Self, TokenError> {
        Self::open_labelled(module, token, pin_file, label, false)
    }

    fn open_labelled(
        module: &Path,
        token: &str,
        pin_file: &Path,
        label: &str,
        generate: bool,
    ) -> Result<Self, TokenError> {
        let token = TokenSession::open(module, token, pin_file)?;
        let (private_key, public_key) = {
            let session = token.lock();
            let private_key = token.find(&session, ObjectClass::PRIVATE_KEY, label)?;
            let public_key = token.find(&session, ObjectClass::PUBLIC_KEY, label)?;
            match (private_key, public_key) {
                (Some(private_key), Some(public_key)) => (private_key, public_key),
                (None, None) if !generate => {
                    return Err(TokenError {
                        token: token.token.clone(),
                        message: format!(
                            "no EC key pair labelled {label:?} is on the token; create it (for example with pkcs11-tool --keypairgen --key-type EC:prime256v1 --label {label:?}) and have its certificate issued"
                        ),
                    });
                }
                (None, None) => {
                    let public_template = [
                        Attribute::Token(true),
                        Attribute::Verify(true),
                        Attribute::EcParams(P256_OID.to_vec()),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ];
                    let private_template = [
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::Label(label.as_bytes().to_vec()),
                    ];
                    let (public_key, private_key) = session
                        .generate_key_pair(
                            &Mechanism::EccKeyPairGen,
                            &public_template,
                            &private_template,
                        )
                        .map_err(|e| token.error("C_GenerateKeyPair", &e))?;
                    tracing::info!(token = %token.token, label, "generated the device CA key on the token");
                    (private_key, public_key)
                }
                _ => {
                    return Err(TokenError {
                        token: token.token.clone(),
                        message: format!(
                            "only one half of the key pair {label:?} is on the token; remove it to have a new one generated"
                        ),
                    });
                }
            }
        };
        let public_point = {
            let session = token.lock();
            let attributes = session
                .get_attributes(public_key, &[AttributeType::EcPoint])
                .map_err(|e| token.error("C_GetAttributeValue", &e))?;
            let point = attributes
                .into_iter()
                .find_map(|attribute| match attribute {
                    Attribute::EcPoint(point) => Some(point),
                    _ => None,
                });
            point
                .and_then(|point| decode_p256_point(&point))
                .ok_or_else(|| TokenError {
                    token: token.token.clone(),
                    message: format!("the public key {label:?} is not an uncompressed P-256 point"),
                })?
        };
        Ok(Self {
            token,
            private_key,
            public_point,
        })
    }

    /// An ecdsa-with-SHA256 signature of `message`, DER-encoded as X.509
    /// and TLS carry it.
    pub(crate) fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        // CKM_ECDSA signs a hash the caller computed and returns r || s.
        let hash = sha2::Sha256::digest(message);
        let session = self.token.lock();
        let raw = session
            .sign(&Mechanism::Ecdsa, self.private_key, &hash)
            .map_err(|error| self.token.error("C_Sign", &error))?;
        ecdsa_signature_der(&raw).ok_or_else(|| TokenError {
            token: self.token.token.clone(),
            message: format!(
                "the token's ECDSA signature is {} bytes, not the 64 of P-256",
                raw.len()
            ),
        })
    }
}

impl rcgen::PublicKeyData for TokenEcKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TokenEcKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign_sha256(message).map_err(|error| {
            tracing::error!(%error, "the token failed to sign with the device CA key");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// The uncompressed point from a CKA_EC_POINT: PKCS#11 specifies a DER
/// OCTET STRING around it (`04 41 04 …`); some modules return it bare.
fn decode_p256_point(point: &[u8]) -> Option<Vec<u8>> {
    let raw = match point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        raw if raw.len() == 65 => raw,
        _ => return None,
    };
    (raw[0] == 0x04).then(|| raw.to_vec())
}

/// `SEQUENCE { INTEGER r, INTEGER s }` from a 64-byte `r || s`. Both
/// integers are at most 33 bytes, so every length fits one byte.
fn ecdsa_signature_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let integer = |bytes: &[u8]| {
        let start = bytes
            .iter()
            .position(|byte| *byte != 0)
            .unwrap_or(bytes.len() - 1);
        let bytes = &bytes[start..];
        let mut out = vec![0x02];
        if bytes[0] & 0x80 != 0 {
            // A leading zero keeps a high first bit from reading as negative.
            out.push(u8::try_from(bytes.len() + 1).unwrap_or(u8::MAX));
            out.push(0);
        } else {
            out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
        }
        out.extend_from_slice(bytes);
        out
    };
    let (r, s) = raw.split_at(32);
    let body: Vec<u8> = [integer(r), integer(s)].concat();
    let mut der = vec![0x30, u8::try_from(body.len()).ok()?];
    der.extend(body);
    Some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_are_der_integers() {
        let mut raw = [0_u8; 64];
        raw[0] = 0x80;
        raw[31] = 1;
        raw[63] = 5;
        let der = ecdsa_signature_der(&raw).expect("64 bytes");
        assert_eq!(&der[..4], &[0x30, (2 + 33) + 3, 0x02, 33]);
        assert_eq!(der[4], 0, "a zero before a high bit");
        assert_eq!(
            &der[der.len() - 3..],
            &[0x02, 1, 5],
            "leading zeros dropped"
        );
        assert!(ecdsa_signature_der(&raw[..63]).is_none());
        let zero = ecdsa_signature_der(&[0; 64]).expect("zeros");
        assert_eq!(zero, vec![0x30, 6, 0x02, 1, 0, 0x02, 1, 0]);
    }

    #[test]
    fn ec_points_decode_wrapped_or_bare() {
        let mut bare = vec![0x04];
        bare.extend([7_u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&bare);
        assert_eq!(decode_p256_point(&wrapped), Some(bare.clone()));
        assert_eq!(decode_p256_point(&bare), Some(bare.clone()));
        assert_eq!(decode_p256_point(&bare[..64]), None);
        let mut compressed = bare.clone();
        compressed[0] = 0x02;
        assert_eq!(decode_p256_point(&compressed), None);
    }
}
