//! Signing with an ed25519 key that never leaves a PKCS#11 token.

use std::path::Path;

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::SignerError;
use crate::pkcs11::{Pkcs11Uri, decode_ec_point, find_token, load_module, other};
use crate::signer::Signer;

/// A logged-in session on a token holding the signing key.
pub struct Pkcs11Signer {
    session: Session,
    private_key: ObjectHandle,
    public_key: VerifyingKey,
}

impl Pkcs11Signer {
    /// Loads `module`, finds the token by label, logs in with `pin`, and
    /// finds the ed25519 private and public key objects labelled as the
    /// URI says.
    pub fn open(module: &Path, uri: &Pkcs11Uri, pin: &str) -> Result<Self, SignerError> {
        let context = load_module(module)?;
        let slot = find_token(&context, &uri.token)?;
        let session = context
            .open_ro_session(slot)
            .map_err(|error| other("C_OpenSession", &error))?;
        let auth = AuthPin::from(pin);
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CryptokiError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(SignerError::WrongPin {
                    token: uri.token.clone(),
                });
            }
            Err(CryptokiError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(SignerError::PinLocked {
                    token: uri.token.clone(),
                });
            }
            Err(error) => return Err(other("C_Login", &error)),
        }
        let private_key = find_key(&session, uri, ObjectClass::PRIVATE_KEY, "private")?;
        let public_handle = find_key(&session, uri, ObjectClass::PUBLIC_KEY, "public")?;
        let public_key = read_public_key(&session, public_handle, &uri.object)?;
        Ok(Self {
            session,
            private_key,
            public_key,
        })
    }
}

impl Signer for Pkcs11Signer {
    fn public_key(&self) -> VerifyingKey {
        self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Signature, SignerError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let bytes = self
            .session
            .sign(&mechanism, self.private_key, message)
            .map_err(|error| other("C_Sign", &error))?;
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| SignerError::Pkcs11 {
                operation: "C_Sign",
                reason: format!(
                    "returned {} bytes instead of a 64-byte ed25519 signature",
                    bytes.len()
                ),
            })?;
        Ok(Signature::from_bytes(&bytes))
    }
}

/// Finds exactly one ed25519 key of `class` labelled as the URI's object.
fn find_key(
    session: &Session,
    uri: &Pkcs11Uri,
    class: ObjectClass,
    class_name: &'static str,
) -> Result<ObjectHandle, SignerError> {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Label(uri.object.as_bytes().to_vec()),
    ];
    let handles = session
        .find_objects(&template)
        .map_err(|error| other("C_FindObjects", &error))?;
    match handles.as_slice() {
        [handle] => Ok(*handle),
        [] => Err(SignerError::KeyNotFound {
            token: uri.token.clone(),
            object: uri.object.clone(),
            class: class_name,
        }),
        _ => Err(SignerError::AmbiguousKey {
            token: uri.token.clone(),
            object: uri.object.clone(),
            class: class_name,
        }),
    }
}

/// Reads CKA_EC_POINT of a public key object (see [`decode_ec_point`]).
fn read_public_key(
    session: &Session,
    handle: ObjectHandle,
    object: &str,
) -> Result<VerifyingKey, SignerError> {
    let malformed = || SignerError::MalformedTokenPublicKey {
        object: object.to_owned(),
    };
    let attributes = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(|error| other("C_GetAttributeValue", &error))?;
    let point = attributes
        .into_iter()
        .find_map(|attribute| match attribute {
            Attribute::EcPoint(point) => Some(point),
            _ => None,
        })
        .ok_or_else(malformed)?;
    decode_ec_point(&point).ok_or_else(malformed)
}
