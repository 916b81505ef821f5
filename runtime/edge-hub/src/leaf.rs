//! Leaf (downstream) devices: the devices of `[hub] leaf_devices` that
//! connect to the hub as a transparent gateway, with the credentials IoT
//! Hub would check — a SAS token signed with the device's symmetric key, or
//! a client certificate whose thumbprint is the device's.
//!
//! The MQTT listener asks every client for a certificate but does not
//! require one (modules present none). A presented certificate is taken at
//! the TLS layer whatever issued it, since leaf certificates are
//! self-signed, but the client must still prove it holds the certificate's
//! key: the handshake signature (`CertificateVerify`) is checked with the
//! crypto provider's algorithms. Whether the certificate is the leaf
//! device's is decided at CONNECT, by its thumbprint, so that a refusal is a
//! CONNACK 5 with the reason in the log like every other.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::Digest as _;

/// A leaf device the hub lets connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafDevice {
    /// Its device id: the MQTT client id it connects with.
    pub id: String,
    /// How it authenticates.
    pub credential: LeafCredential,
}

/// How a leaf device authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafCredential {
    /// SAS tokens signed with this key.
    SymmetricKey(SymmetricKey),
    /// A client certificate with one of these thumbprints.
    X509Thumbprints(Vec<Thumbprint>),
}

/// A leaf device's symmetric key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SymmetricKey(Vec<u8>);

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SymmetricKey(…)")
    }
}

/// Why a leaf device credential does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The key is not base64, or empty.
    #[error(
        "the key is not base64 (write the primary key exactly as IoT Hub shows it, e.g. from `az iot hub device-identity show`)"
    )]
    BadKey,
    /// The thumbprint is not 40 or 64 hex digits.
    #[error(
        "the thumbprint {0:?} is not a SHA-1 (40 hex digits) or SHA-256 (64 hex digits) fingerprint of the certificate"
    )]
    BadThumbprint(String),
}

impl SymmetricKey {
    /// Reads a key as IoT Hub issues it: base64 (surrounding white space,
    /// such as a file's last newline, is ignored).
    pub fn from_base64(text: &str) -> Result<Self, CredentialError> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| CredentialError::BadKey)?;
        if key.is_empty() {
            return Err(CredentialError::BadKey);
        }
        Ok(Self(key))
    }

    /// The key's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The fingerprint of a certificate (its DER encoding), as IoT Hub keeps it
/// for a device with self-signed X.509 authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Thumbprint {
    /// SHA-1, 20 bytes.
    Sha1(Vec<u8>),
    /// SHA-256, 32 bytes.
    Sha256(Vec<u8>),
}

impl Thumbprint {
    /// Reads a thumbprint in hex, upper or lower case: 40 digits are SHA-1,
    /// 64 SHA-256.
    pub fn parse(text: &str) -> Result<Self, CredentialError> {
        let bad = || CredentialError::BadThumbprint(text.to_owned());
        let bytes = hex::decode(text).map_err(|_| bad())?;
        match bytes.len() {
            20 => Ok(Self::Sha1(bytes)),
            32 => Ok(Self::Sha256(bytes)),
            _ => Err(bad()),
        }
    }

    /// Whether this is the thumbprint of `certificate`.
    pub fn matches(&self, certificate: &[u8]) -> bool {
        match self {
            Self::Sha1(expected) => sha1::Sha1::digest(certificate).as_slice() == expected,
            Self::Sha256(expected) => sha2::Sha256::digest(certificate).as_slice() == expected,
        }
    }
}

/// The SHA-256 thumbprint of `certificate` in hex, for the log.
pub fn sha256_thumbprint(certificate: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(certificate))
}

/// The client certificate verifier of the MQTT listener (see the module
/// documentation): certificates are optional, any certificate is taken,
/// and the handshake signature is checked.
#[derive(Debug)]
pub struct LeafCertificateVerifier {
    provider: Arc<CryptoProvider>,
}

impl LeafCertificateVerifier {
    /// A verifier checking signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for LeafCertificateVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Leaf certificates are self-signed: there is no issuer to hint.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Which device the certificate belongs to is decided at CONNECT by
        // its thumbprint; the signature checks below prove the client holds
        // its key.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_of_both_kinds_match_only_their_certificate() {
        let certificate = b"a DER certificate";
        let sha1 = hex::encode(sha1::Sha1::digest(certificate)).to_uppercase();
        let sha256 = sha256_thumbprint(certificate);
        for text in [sha1.as_str(), sha256.as_str()] {
            let thumbprint = Thumbprint::parse(text).expect("a thumbprint");
            assert!(thumbprint.matches(certificate));
            assert!(!thumbprint.matches(b"another certificate"));
        }
        for bad in ["", "abc", "zz", &sha256[..62], &format!("{sha256}00")] {
            assert!(Thumbprint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_base64_and_never_printed() {
        let key = SymmetricKey::from_base64("c2VjcmV0\n").expect("base64");
        assert_eq!(key.bytes(), b"secret");
        assert!(!format!("{key:?}").contains("c2VjcmV0"));
        assert_eq!(
            SymmetricKey::from_base64("not base64!"),
            Err(CredentialError::BadKey)
        );
        assert_eq!(SymmetricKey::from_base64(""), Err(CredentialError::BadKey));
    }
}
