//! Trust anchors: the public keys a bundle must be signed by. On a real
//! device they are public key objects in the security element, and
//! signatures are checked by the element itself (C_Verify with CKM_EDDSA),
//! so replacing a file cannot replace an anchor. A directory of PEM keys
//! serves development.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use edge_bundle::display::escaped;
use edge_bundle::{Signature, SignatureFile, VerifyingKey, key_id, load_public_key_pem, pkcs11};

use crate::config::{Pkcs11Config, TrustConfig};
use crate::error::{Error, Result};

/// DER of the edwards25519 curve OID 1.3.101.112, for CKA_EC_PARAMS.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where an anchor lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AnchorSource {
    /// A public key object on the PKCS#11 token.
    Token,
    /// A PEM file (development).
    File,
}

/// One trusted key.
#[derive(Clone, Debug)]
pub struct Anchor {
    /// The public key.
    pub key: VerifyingKey,
    /// Where it is stored.
    pub source: AnchorSource,
    /// The token object label or the file path.
    pub location: String,
}

/// The configured trust anchors and threshold.
pub struct TrustStore {
    threshold: usize,
    files: Vec<PathBuf>,
    dir: Option<PathBuf>,
    token: Option<Pkcs11Config>,
}

impl TrustStore {
    /// Builds the store from the configuration plus extra `--trust` files.
    pub fn new(config: &TrustConfig, extra_files: &[PathBuf]) -> Self {
        Self {
            threshold: config.threshold,
            files: extra_files.to_vec(),
            dir: config.dir.clone(),
            token: config.pkcs11.clone(),
        }
    }

    /// The signature threshold.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Lists every anchor, token objects first.
    pub fn anchors(&self) -> Result<Vec<Anchor>> {
        let mut anchors = Vec::new();
        if let Some(token) = &self.token {
            let session = TokenSession::open(token)?;
            for (key, _, label) in session.public_keys()? {
                anchors.push(Anchor {
                    key,
                    source: AnchorSource::Token,
                    location: label,
                });
            }
        }
        for path in self.file_paths()? {
            anchors.push(Anchor {
                key: read_key_file(&path)?,
                source: AnchorSource::File,
                location: path.display().to_string(),
            });
        }
        if anchors.is_empty() {
            return Err(Error::Trust(
                "no trust anchors are configured: set [trust.pkcs11] or trust.dir in the device configuration, or pass --trust KEY.pub".to_owned(),
            ));
        }
        Ok(anchors)
    }

    /// Checks the signatures over `manifest`, on the token for token
    /// anchors, and returns the distinct trusted keys whose signature is
    /// valid, or a refusal if there are fewer than the threshold.
    pub fn verify(&self, manifest: &[u8], signatures: &SignatureFile) -> Result<Vec<VerifyingKey>> {
        let mut valid: BTreeMap<String, VerifyingKey> = BTreeMap::new();
        let wanted = |key: &VerifyingKey| -> Option<Signature> {
            let id = key_id(key);
            signatures
                .signatures
                .iter()
                .filter(|entry| entry.key_id == id && entry.algorithm == "ed25519")
                .find_map(|entry| {
                    let mut bytes = [0_u8; 64];
                    hex::decode_to_slice(&entry.signature, &mut bytes).ok()?;
                    Some(Signature::from_bytes(&bytes))
                })
        };
        let mut known = 0;
        if let Some(token) = &self.token {
            let session = TokenSession::open(token)?;
            for (key, handle, _) in session.public_keys()? {
                known += 1;
                if let Some(signature) = wanted(&key)
                    && session.verify(handle, manifest, &signature)
                {
                    valid.insert(key_id(&key), key);
                }
            }
        }
        for path in self.file_paths()? {
            let key = read_key_file(&path)?;
            known += 1;
            if let Some(signature) = wanted(&key)
                && key.verify_strict(manifest, &signature).is_ok()
            {
                valid.insert(key_id(&key), key);
            }
        }
        if known == 0 {
            return Err(Error::Trust(
                "no trust anchors are configured: set [trust.pkcs11] or trust.dir in the device configuration, or pass --trust KEY.pub".to_owned(),
            ));
        }
        if valid.len() < self.threshold {
            return Err(Error::Refused(format!(
                "signed by {} trusted key(s), {} required (bundle signature key ids: {})",
                valid.len(),
                self.threshold,
                shown_key_ids(signatures)
            )));
        }
        Ok(valid.into_values().collect())
    }

    /// Adds a trust anchor: onto the token when one is configured (so it is
    /// protected by the token's PIN), otherwise into the trust directory.
    pub fn add(&self, pem_path: &Path) -> Result<Anchor> {
        let key = read_key_file(pem_path)?;
        let id = key_id(&key);
        if let Some(token) = &self.token {
            let session = TokenSession::open(token)?;
            let label = format!("edged-anchor-{}", &id[..16]);
            session.add_public_key(token, &key, &label)?;
            return Ok(Anchor {
                key,
                source: AnchorSource::Token,
                location: label,
            });
        }
        let dir = self.dir.as_ref().ok_or_else(|| {
            Error::Config(
                "neither [trust.pkcs11] nor trust.dir is configured, so there is nowhere to add an anchor".to_owned(),
            )
        })?;
        std::fs::create_dir_all(dir).map_err(Error::state("create", dir))?;
        let target = dir.join(format!("{id}.pub"));
        let pem = std::fs::read(pem_path).map_err(Error::state("read", pem_path))?;
        std::fs::write(&target, pem).map_err(Error::state("write", &target))?;
        Ok(Anchor {
            key,
            source: AnchorSource::File,
            location: target.display().to_string(),
        })
    }

    /// The `--trust` files and every `*.pub` in the trust directory.
    fn file_paths(&self) -> Result<Vec<PathBuf>> {
        let mut paths = self.files.clone();
        if let Some(dir) = &self.dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                        .filter(|path| path.extension().is_some_and(|ext| ext == "pub"))
                        .collect();
                    found.sort();
                    paths.extend(found);
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(Error::Trust(format!(
                        "cannot list {}: {error}",
                        dir.display()
                    )));
                }
            }
        }
        Ok(paths)
    }
}

/// The most signature key ids a refusal lists.
const SHOWN_KEY_IDS: usize = 8;

/// The bundle's signature key ids for a refusal: the first 16 characters of each (cut by
/// characters, never through one, and escaped: they come from the unsigned signature file),
/// at most [`SHOWN_KEY_IDS`] of them.
fn shown_key_ids(signatures: &SignatureFile) -> String {
    let entries = &signatures.signatures;
    if entries.is_empty() {
        return "none".to_owned();
    }
    let mut shown: Vec<String> = entries
        .iter()
        .take(SHOWN_KEY_IDS)
        .map(|entry| escaped(&entry.key_id.chars().take(16).collect::<String>()))
        .collect();
    if entries.len() > SHOWN_KEY_IDS {
        shown.push(format!("and {} more", entries.len() - SHOWN_KEY_IDS));
    }
    shown.join(", ")
}

/// Reads a PEM public key file.
fn read_key_file(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| Error::Trust(format!("cannot read {}: {error}", path.display())))?;
    load_public_key_pem(&text).map_err(|error| Error::Trust(format!("{}: {error}", path.display())))
}

/// An open session on the trust token.
struct TokenSession {
    session: Session,
}

impl TokenSession {
    /// Loads the module and opens a session on the token found by label
    /// (slot ids change between module loads).
    fn open(config: &Pkcs11Config) -> Result<Self> {
        let trust_error = |error: edge_bundle::SignerError| Error::Trust(error.to_string());
        let context = pkcs11::load_module(&config.module).map_err(trust_error)?;
        let slot = pkcs11::find_token(&context, &config.token).map_err(trust_error)?;
        let session = context
            .open_rw_session(slot)
            .or_else(|_| context.open_ro_session(slot))
            .map_err(|error| {
                Error::Trust(format!(
                    "C_OpenSession failed ({}): {error}",
                    config.module.display()
                ))
            })?;
        Ok(Self { session })
    }

    /// Every ed25519 public key object with its handle and label.
    fn public_keys(&self) -> Result<Vec<(VerifyingKey, ObjectHandle, String)>> {
        let template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
        ];
        let handles = self
            .session
            .find_objects(&template)
            .map_err(|error| Error::Trust(format!("C_FindObjects failed: {error}")))?;
        let mut keys = Vec::new();
        for handle in handles {
            let attributes = self
                .session
                .get_attributes(handle, &[AttributeType::EcPoint, AttributeType::Label])
                .map_err(|error| Error::Trust(format!("C_GetAttributeValue failed: {error}")))?;
            let mut point = None;
            let mut label = String::new();
            for attribute in attributes {
                match attribute {
                    Attribute::EcPoint(bytes) => point = Some(bytes),
                    Attribute::Label(bytes) => label = String::from_utf8_lossy(&bytes).into_owned(),
                    _ => {}
                }
            }
            if let Some(key) = point.as_deref().and_then(pkcs11::decode_ec_point) {
                keys.push((key, handle, label));
            }
        }
        Ok(keys)
    }

    /// Verifies on the token; any failure counts as "not valid".
    fn verify(&self, handle: ObjectHandle, message: &[u8], signature: &Signature) -> bool {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        self.session
            .verify(&mechanism, handle, message, &signature.to_bytes())
            .is_ok()
    }

    /// Creates a token public key object for `key`; needs the user PIN.
    fn add_public_key(&self, config: &Pkcs11Config, key: &VerifyingKey, label: &str) -> Result<()> {
        let pin_file = config.pin_file.as_ref().ok_or_else(|| {
            Error::Config(
                "trust.pkcs11.pin_file is needed to add an anchor to the token".to_owned(),
            )
        })?;
        let pin = std::fs::read_to_string(pin_file).map_err(|error| {
            Error::Trust(format!("cannot read {}: {error}", pin_file.display()))
        })?;
        match self
            .session
            .login(UserType::User, Some(&AuthPin::from(pin.trim())))
        {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(error) => return Err(Error::Trust(format!("cannot log in to the token: {error}"))),
        }
        self.session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC_EDWARDS),
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::Private(false),
                Attribute::EcParams(ED25519_OID.to_vec()),
                Attribute::EcPoint(pkcs11::encode_ec_point(key)),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|error| Error::Trust(format!("C_CreateObject failed: {error}")))?;
        Ok(())
    }
}
