//! The device CA and the hub's TLS server certificate.
//!
//! Modules trust the hub through the device CA: the SDK fetches it from the
//! workload API's `/trust-bundle` and checks the hub's certificate against
//! it, with the gateway host name as the expected name. The CA is created on
//! first start, with its key either in `{hub dir}/ca/ca.key.pem` (mode 0600)
//! or on the PKCS#11 token, where it never leaves the token and every
//! signature is made by the token. The server certificate is issued for 90
//! days and reissued when fewer than 30 days are left, when the host name
//! changed or when the CA changed, so a long-running edged never serves an
//! expired certificate.
//!
//! The CA's subject is a fixed name, so the issuer of every certificate can
//! be rebuilt from the CA key alone without parsing the stored certificate;
//! issued certificates name the CA's key through the authority key
//! identifier, which is what chain building matches on.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber,
    SigningKey,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::pkcs11_keys::TokenEcKey;

/// The CA certificate's subject common name.
const CA_COMMON_NAME: &str = "edged device CA";
/// How long the device CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid.
const SERVER_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// A server certificate with less than this left is reissued.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Certificates start to be valid a little in the past, so a module whose
/// clock is slightly behind the device's still accepts a fresh one.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// The token label of the CA key pair when it lives on a PKCS#11 token.
pub const CA_TOKEN_LABEL: &str = "edged-device-ca";

/// Where the device CA's private key lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaKeySource {
    /// `{hub dir}/ca/ca.key.pem`, mode 0600.
    File,
    /// An EC P-256 key pair labelled [`CA_TOKEN_LABEL`] on a PKCS#11 token,
    /// generated there on first start.
    Pkcs11 {
        /// The PKCS#11 module (shared library).
        module: PathBuf,
        /// The token label.
        token: String,
        /// A file holding the user PIN.
        pin_file: PathBuf,
    },
}

/// Why the certificates could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// A stored key or certificate is not what it should be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating or signing a certificate failed.
    #[error("cannot {action}: {reason}")]
    Generate {
        /// What was being made.
        action: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The PKCS#11 token refused or failed.
    #[error("device CA key on the token: {0}")]
    Token(String),
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// `rcgen::SigningKey` as an object, so both kinds of CA key (a
/// [`KeyPair`] from the file, a [`TokenEcKey`]) sign through one issuer.
trait SigningKeyObject: Send + Sync {
    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error>;
    fn public_der(&self) -> &[u8];
}

impl<K: SigningKey + Send + Sync> SigningKeyObject for K {
    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.sign(message)
    }
    fn public_der(&self) -> &[u8] {
        self.der_bytes()
    }
}

/// Adapts a [`SigningKeyObject`] back to rcgen's traits.
struct DynKey<'a>(&'a dyn SigningKeyObject);

impl PublicKeyData for DynKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_der()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        // Both CA key kinds are ECDSA P-256 keys; nothing else is created
        // or loaded (a file key of another kind is refused on load).
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for DynKey<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign_message(message)
    }
}

/// A certificate and its private key, both PEM, as the workload API hands
/// them to a module.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// The certificate followed by the device CA's.
    pub certificate_pem: String,
    /// The PKCS#8 private key.
    pub private_key_pem: String,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

/// The device CA, the hub's server certificate and the TLS configuration
/// built from them.
pub struct Certificates {
    ca_key: Box<dyn SigningKeyObject>,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_dir: PathBuf,
    hostname: String,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ServerCertResolver>,
}

impl Certificates {
    /// Loads the device CA from `{dir}/ca/` (creating it on first start)
    /// and the server certificate for `hostname` from `{dir}/server/`
    /// (issuing it when missing, expiring within [`RENEW_BEFORE`], for
    /// another name or from another CA).
    pub fn open(dir: &Path, hostname: &str, source: &CaKeySource) -> Result<Self, CertError> {
        let ca_dir = dir.join("ca");
        create_dir(&ca_dir, 0o700)?;
        let ca_key: Box<dyn SigningKeyObject> = match source {
            CaKeySource::File => Box::new(load_or_create_file_key(&ca_dir.join("ca.key.pem"))?),
            CaKeySource::Pkcs11 {
                module,
                token,
                pin_file,
            } => Box::new(
                TokenEcKey::open_or_generate(module, token, pin_file, CA_TOKEN_LABEL)
                    .map_err(|error| CertError::Token(error.to_string()))?,
            ),
        };
        let ca_path = ca_dir.join("ca.pem");
        let ca_pem = load_or_create_ca(&ca_path, ca_key.as_ref())?;
        let ca_der = pem_certificates(&ca_path, &ca_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Invalid {
                path: ca_path.clone(),
                reason: "holds no certificate".to_owned(),
            })?;
        let server_dir = dir.join("server");
        create_dir(&server_dir, 0o700)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = Self {
            ca_key,
            ca_pem,
            ca_der,
            server_dir,
            hostname: hostname.to_owned(),
            provider,
            resolver: Arc::new(ServerCertResolver {
                current: RwLock::new(None),
            }),
        };
        let key = certificates.load_or_issue_server()?;
        certificates.resolver.set(key);
        Ok(certificates)
    }

    /// The device CA certificate (PEM): what `/trust-bundle` returns.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The device CA certificate (DER).
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The TLS configuration of the HTTPS gateway: TLS 1.2 and 1.3, no
    /// client certificates (modules authenticate with
    /// SAS tokens), the current server certificate (reissued in place by
    /// [`Certificates::renew_if_needed`]).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CertError> {
        let config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| CertError::Tls(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        Ok(Arc::new(config))
    }

    /// The TLS configuration of the MQTT listener: as
    /// [`Certificates::server_config`], but asking clients for a
    /// certificate without requiring one, so that leaf devices with X.509
    /// authentication can present theirs (see [`crate::leaf`]).
    pub fn mqtt_server_config(&self) -> Result<Arc<ServerConfig>, CertError> {
        let verifier = crate::leaf::LeafCertificateVerifier::new(self.provider.clone());
        let config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| CertError::Tls(error.to_string()))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(self.resolver.clone());
        Ok(Arc::new(config))
    }

    /// Reissues the server certificate if it expires within
    /// [`RENEW_BEFORE`]; returns whether it did. Connections made after it
    /// get the new certificate.
    pub fn renew_if_needed(&self) -> Result<bool, CertError> {
        self.renew_if_needed_at(SystemTime::now())
    }

    /// [`Certificates::renew_if_needed`] as if it were `now`.
    fn renew_if_needed_at(&self, now: SystemTime) -> Result<bool, CertError> {
        let current = self.resolver.get();
        if let Some(current) = &current
            && let Some(leaf) = current.cert.first()
            && self.server_cert_is_good(leaf, now)
        {
            return Ok(false);
        }
        let key = self.issue_server()?;
        self.resolver.set(key);
        Ok(true)
    }

    /// Issues a server certificate for a module (workload API
    /// `certificate/server`): subject `common_name`, SANs `common_name` and
    /// `module`, valid until `not_after` but never longer than the hub's
    /// own 90 days.
    pub fn issue_for_module(
        &self,
        common_name: &str,
        module: &str,
        not_after: SystemTime,
    ) -> Result<IssuedCertificate, CertError> {
        let now = SystemTime::now();
        let not_after = not_after.min(now + SERVER_VALIDITY);
        let mut names = vec![common_name.to_owned()];
        if module != common_name {
            names.push(module.to_owned());
        }
        let key = generate_key()?;
        let pem = self.sign_server(&names, &key, not_after)?;
        Ok(IssuedCertificate {
            certificate_pem: format!("{pem}{}", self.ca_pem),
            private_key_pem: key.serialize_pem(),
            not_after,
        })
    }

    fn issuer_params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name();
        params.key_usages = ca_key_usages();
        params
    }

    fn sign_server(
        &self,
        names: &[String],
        key: &KeyPair,
        not_after: SystemTime,
    ) -> Result<String, CertError> {
        let generate = |reason: rcgen::Error| CertError::Generate {
            action: "issue a server certificate",
            reason: reason.to_string(),
        };
        let mut params = CertificateParams::new(names.to_vec()).map_err(generate)?;
        let mut subject = DistinguishedName::new();
        subject.push(
            DnType::CommonName,
            names.first().map(String::as_str).unwrap_or_default(),
        );
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        let signer = DynKey(self.ca_key.as_ref());
        let issuer = Issuer::new(self.issuer_params(), signer);
        let certificate = params.signed_by(key, &issuer).map_err(generate)?;
        Ok(certificate.pem())
    }

    /// Whether `leaf` is a certificate this hub may keep serving: it chains
    /// to the current CA and names the host name, still so 30 days from now.
    fn server_cert_is_good(&self, leaf: &CertificateDer<'_>, now: SystemTime) -> bool {
        match self.verify_server(leaf, now + RENEW_BEFORE) {
            Ok(()) => true,
            Err(reason) => {
                tracing::info!(%reason, hostname = %self.hostname, "the hub's server certificate will be reissued");
                false
            }
        }
    }

    /// Checks `leaf` as a module's TLS client would at time `at`.
    pub fn verify_server(&self, leaf: &CertificateDer<'_>, at: SystemTime) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|error| error.to_string())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| error.to_string())?;
        let name =
            ServerName::try_from(self.hostname.clone()).map_err(|error| error.to_string())?;
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|error| error.to_string())?;
        verifier
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::since_unix_epoch(seconds))
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    fn load_or_issue_server(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let cert_path = self.server_dir.join("server.pem");
        let key_path = self.server_dir.join("server.key.pem");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read_text(&cert_path)?;
            let certs = pem_certificates(&cert_path, &cert_pem)?;
            if let Some(leaf) = certs.first()
                && self.server_cert_is_good(leaf, SystemTime::now())
            {
                let key_pem = read_text(&key_path)?;
                match self.certified_key(certs, &key_path, &key_pem) {
                    Ok(key) => return Ok(key),
                    Err(error) => {
                        tracing::warn!(%error, "the hub's server key is unusable; reissuing");
                    }
                }
            }
        }
        self.issue_server()
    }

    fn issue_server(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let key = generate_key()?;
        let cert_pem = self.sign_server(
            std::slice::from_ref(&self.hostname),
            &key,
            SystemTime::now() + SERVER_VALIDITY,
        )?;
        let key_pem = key.serialize_pem();
        let cert_path = self.server_dir.join("server.pem");
        let key_path = self.server_dir.join("server.key.pem");
        // The key first: a crash between the two leaves a new key beside
        // the old certificate, which fails the key check on the next
        // start and is reissued, never a certificate without its key.
        write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
        tracing::info!(hostname = %self.hostname, path = %cert_path.display(), "issued the hub's server certificate");
        let certs = pem_certificates(&cert_path, &cert_pem)?;
        self.certified_key(certs, &key_path, &key_pem)
    }

    fn certified_key(
        &self,
        certs: Vec<CertificateDer<'static>>,
        key_path: &Path,
        key_pem: &str,
    ) -> Result<Arc<CertifiedKey>, CertError> {
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|error| CertError::Invalid {
                path: key_path.to_owned(),
                reason: error.to_string(),
            })?
            .ok_or_else(|| CertError::Invalid {
                path: key_path.to_owned(),
                reason: "holds no private key".to_owned(),
            })?;
        let certified = CertifiedKey::from_der(certs, key, &self.provider).map_err(|error| {
            CertError::Invalid {
                path: key_path.to_owned(),
                reason: format!("does not match the certificate: {error}"),
            }
        })?;
        Ok(Arc::new(certified))
    }
}

/// Serves the current server certificate to every handshake.
#[derive(Debug)]
struct ServerCertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ServerCertResolver {
    fn get(&self) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a complete value: it is only ever
        // replaced whole.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(key);
    }
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

fn ca_name() -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    name
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// Returns the stored CA certificate if it is for `key`, else makes and
/// stores a new self-signed one.
fn load_or_create_ca(path: &Path, key: &dyn SigningKeyObject) -> Result<String, CertError> {
    let signer = DynKey(key);
    let spki = signer.subject_public_key_info();
    if path.exists() {
        let pem = read_text(path)?;
        let der = pem_certificates(path, &pem)?;
        // The certificate embeds the key's SubjectPublicKeyInfo verbatim,
        // so containing it is exactly "certifies this key".
        if der
            .first()
            .is_some_and(|cert| cert.windows(spki.len()).any(|window| window == spki))
        {
            return Ok(pem);
        }
        tracing::warn!(path = %path.display(), "the device CA certificate does not match the CA key; making a new one, modules must fetch the trust bundle again");
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = ca_name();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    params.serial_number = Some(random_serial()?);
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + CA_VALIDITY).into();
    let certificate = params
        .self_signed(&signer)
        .map_err(|error| CertError::Generate {
            action: "create the device CA",
            reason: error.to_string(),
        })?;
    let pem = certificate.pem();
    write_atomically(path, pem.as_bytes(), 0o644)?;
    tracing::info!(path = %path.display(), "created the device CA");
    Ok(pem)
}

fn load_or_create_file_key(path: &Path) -> Result<KeyPair, CertError> {
    if path.exists() {
        let pem = read_text(path)?;
        let key = KeyPair::from_pem(&pem).map_err(|error| CertError::Invalid {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CertError::Invalid {
                path: path.to_owned(),
                reason: "is not an ECDSA P-256 key".to_owned(),
            });
        }
        return Ok(key);
    }
    let key = generate_key()?;
    write_atomically(path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(key)
}

fn generate_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|error| CertError::Generate {
        action: "generate an ECDSA P-256 key",
        reason: error.to_string(),
    })
}

/// A random positive 16-byte serial number (RFC 5280 allows up to 20).
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| CertError::Generate {
        action: "choose a serial number",
        reason: error.to_string(),
    })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn pem_certificates(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertError::Invalid {
            path: path.to_owned(),
            reason: error.to_string(),
        })
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn create_dir(path: &Path, mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    fs::create_dir_all(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

/// Writes `bytes` to `path` through a temporary file that is synced and
/// renamed, then syncs the directory, so a crash leaves the old file or the
/// new one, never a part.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let partial = path.with_extension("part");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&partial, path).map_err(io)?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;

    fn open(dir: &Path, hostname: &str) -> Certificates {
        Certificates::open(dir, hostname, &CaKeySource::File).expect("certificates")
    }

    fn leaf(certificates: &Certificates) -> CertificateDer<'static> {
        certificates
            .resolver
            .get()
            .expect("a server certificate")
            .cert[0]
            .clone()
    }

    #[test]
    fn the_server_certificate_chains_to_the_ca_and_names_the_host() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certificates = open(dir.path(), "edged");
        let server = leaf(&certificates);
        let now = SystemTime::now();
        certificates.verify_server(&server, now).expect("valid now");
        certificates
            .verify_server(&server, now + Duration::from_secs(89 * 24 * 3600))
            .expect("valid for 89 days");
        let expired = certificates
            .verify_server(&server, now + Duration::from_secs(91 * 24 * 3600))
            .expect_err("expired after 90 days");
        assert!(expired.to_lowercase().contains("expired"), "{expired}");

        let other = Certificates::open(dir.path(), "other-name", &CaKeySource::File)
            .expect("reopen for another name");
        let wrong_name = other.verify_server(&server, now).expect_err("old name");
        assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
        other
            .verify_server(&leaf(&other), now)
            .expect("reissued for the new name");

        let mode = fs::metadata(dir.path().join("ca/ca.key.pem"))
            .expect("CA key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(dir.path().join("server/server.key.pem"))
            .expect("server key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn reopening_keeps_the_ca_and_a_good_server_certificate() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let first = open(dir.path(), "edged");
        let second = open(dir.path(), "edged");
        assert_eq!(first.trust_bundle_pem(), second.trust_bundle_pem());
        assert_eq!(leaf(&first), leaf(&second));
        assert!(!second.renew_if_needed().expect("renew check"));
        // Sixty-one days on, fewer than thirty are left: a new certificate
        // is served, and stored for the next start.
        let later = SystemTime::now() + Duration::from_secs(61 * 24 * 3600);
        assert!(second.renew_if_needed_at(later).expect("renewal"));
        let renewed = leaf(&second);
        assert_ne!(renewed, leaf(&first));
        assert_eq!(leaf(&open(dir.path(), "edged")), renewed);
        // A certificate from another CA is replaced.
        let foreign = tempfile::tempdir().expect("temporary directory");
        open(foreign.path(), "edged");
        fs::copy(
            foreign.path().join("server/server.pem"),
            dir.path().join("server/server.pem"),
        )
        .expect("copy");
        let third = open(dir.path(), "edged");
        assert_eq!(third.trust_bundle_pem(), first.trust_bundle_pem());
        third
            .verify_server(&leaf(&third), SystemTime::now())
            .expect("reissued from the device CA");
    }

    #[test]
    fn openssl_agrees_the_chain_is_valid() {
        let dir = tempfile::tempdir().expect("temporary directory");
        open(dir.path(), "edged");
        let output = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.path().join("ca/ca.pem"))
            .arg("-verify_hostname")
            .arg("edged")
            .arg(dir.path().join("server/server.pem"))
            .output()
            .expect("openssl is installed");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let text = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(dir.path().join("ca/ca.pem"))
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("Certificate Sign"), "{text}");
    }

    #[test]
    fn module_certificates_name_the_module_and_chain_to_the_ca() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certificates = open(dir.path(), "edged");
        let wanted = SystemTime::now() + Duration::from_secs(7 * 24 * 3600);
        let issued = certificates
            .issue_for_module("web", "webmod", wanted)
            .expect("issue");
        assert_eq!(issued.not_after, wanted);
        assert!(matches!(
            rustls_pemfile::private_key(&mut issued.private_key_pem.as_bytes()),
            Ok(Some(PrivateKeyDer::Pkcs8(_)))
        ));
        let path = dir.path().join("module.pem");
        fs::write(&path, &issued.certificate_pem).expect("write");
        for name in ["web", "webmod"] {
            let output = std::process::Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(dir.path().join("ca/ca.pem"))
                .args(["-verify_hostname", name])
                .arg(&path)
                .output()
                .expect("openssl");
            assert!(
                output.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        let far = certificates
            .issue_for_module(
                "web",
                "webmod",
                wanted + Duration::from_secs(400 * 24 * 3600),
            )
            .expect("issue");
        assert!(far.not_after <= SystemTime::now() + SERVER_VALIDITY);
    }
}
