//! The device's credentials for one connection attempt: the MQTT user name
//! and password (a SAS token) or an X.509 client certificate, and the TLS
//! configuration that trusts the cloud's CA.
//!
//! Everything is read from its files at every attempt (on a blocking
//! thread: the files may be slow, and a PKCS#11 token is), so a rotated
//! secret takes effect at the next reconnect without a restart.

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ClientConfig, RootCertStore, SignatureAlgorithm, SignatureScheme};

use super::config::{ClientKey, UpstreamAuth, UpstreamConfig};
use crate::pkcs11_keys::TokenEcKey;
use crate::sas;

/// The IoT Hub MQTT API version edged speaks (device identity, telemetry,
/// twin and method topics).
pub const API_VERSION: &str = "2021-04-12";

/// The user agent IoT Hub records for the device's connection.
const CLIENT_TYPE: &str = concat!("edged%2F", env!("CARGO_PKG_VERSION"));

/// What one connection attempt presents.
pub(crate) struct Credentials {
    /// The MQTT user name: `{iothub}/{device}/?api-version=…`.
    pub username: String,
    /// The SAS token, if the device authenticates with one.
    pub password: Option<String>,
    /// When the token stops being valid; the connection is renewed before.
    pub expires: Option<SystemTime>,
    /// TLS: the cloud's CA and, with X.509, the client certificate.
    pub tls: Arc<ClientConfig>,
}

/// Reads the credentials `config` names; the error says which file and
/// what to do.
pub(crate) fn load(config: &UpstreamConfig) -> Result<Credentials, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = read_roots(&config.ca_file)?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots);
    let username = format!(
        "{}/{}/?api-version={API_VERSION}&DeviceClientType={CLIENT_TYPE}",
        config.iothub_hostname, config.device_id
    );
    let resource = format!("{}/devices/{}", config.iothub_hostname, config.device_id);
    let (password, expires, tls) = match &config.auth {
        UpstreamAuth::SasKey { key_file } => {
            let key = read_secret(key_file, "the device's SAS key")?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(key.trim())
                .map_err(|error| {
                    format!(
                        "the SAS key in {} is not base64 ({error}); put the device's primary key there as IoT Hub shows it",
                        key_file.display()
                    )
                })?;
            let expires = SystemTime::now() + config.token_lifetime;
            let token = sas::device_token(&key, &resource, unix_seconds(expires));
            (Some(token), Some(expires), builder.with_no_client_auth())
        }
        UpstreamAuth::SasToken { token_file } => {
            let token = read_secret(token_file, "the SAS token")?.trim().to_owned();
            let expires = token_expiry(&token).ok_or_else(|| {
                format!(
                    "{} does not hold a SAS token (SharedAccessSignature sr=…&sig=…&se=…)",
                    token_file.display()
                )
            })?;
            if expires <= SystemTime::now() {
                return Err(format!(
                    "the SAS token in {} has expired; renew it",
                    token_file.display()
                ));
            }
            (Some(token), Some(expires), builder.with_no_client_auth())
        }
        UpstreamAuth::X509 {
            certificate_file,
            key,
        } => {
            let chain = read_certificates(certificate_file)?;
            let tls = match key {
                ClientKey::File(path) => {
                    let key = read_private_key(path)?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|error| {
                            format!(
                                "the client certificate {} and key {} do not make a TLS identity: {error}",
                                certificate_file.display(),
                                path.display()
                            )
                        })?
                }
                ClientKey::Pkcs11 {
                    module,
                    token,
                    pin_file,
                    key_label,
                } => {
                    let key = TokenEcKey::open(module, token, pin_file, key_label)
                        .map_err(|error| error.to_string())?;
                    let certified =
                        CertifiedKey::new(chain, Arc::new(TokenSigningKey(Arc::new(key))));
                    builder.with_client_cert_resolver(Arc::new(OneClientCertificate(Arc::new(
                        certified,
                    ))))
                }
            };
            (None, None, tls)
        }
    };
    Ok(Credentials {
        username,
        password,
        expires,
        tls: Arc::new(tls),
    })
}

/// The `se` of a SAS token.
fn token_expiry(token: &str) -> Option<SystemTime> {
    let fields = token.strip_prefix("SharedAccessSignature ")?;
    let seconds = fields
        .split('&')
        .find_map(|field| field.strip_prefix("se="))?
        .parse::<u64>()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(seconds))
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_secs())
}

/// A secret file's text; a file others may read is refused, since the
/// secret must be assumed known.
fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = fs::metadata(path)
        .map_err(|error| format!("cannot read {what} from {}: {error}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} ({what}) may be read by other users; chmod 600 it",
            path.display()
        ));
    }
    fs::read_to_string(path)
        .map_err(|error| format!("cannot read {what} from {}: {error}", path.display()))
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|error| {
            format!(
                "a CA certificate in {} is unusable: {error}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = fs::File::open(path)
        .map_err(|error| format!("cannot read certificates from {}: {error}", path.display()))?;
    let certificates = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{} is not PEM: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certificates)
}

fn read_private_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, String> {
    let text = read_secret(path, "the client certificate's private key")?;
    rustls_pemfile::private_key(&mut text.as_bytes())
        .map_err(|error| format!("{} is not PEM: {error}", path.display()))?
        .ok_or_else(|| format!("{} holds no PEM private key", path.display()))
}

/// The client certificate, whatever the server asks for; the server
/// decides whether it trusts it.
#[derive(Debug)]
struct OneClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for OneClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client key on a PKCS#11 token, as rustls signs with it: P-256 ECDSA
/// with SHA-256 only, which TLS 1.2 and 1.3 both offer.
struct TokenSigningKey(Arc<TokenEcKey>);

impl std::fmt::Debug for TokenSigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenSigningKey")
    }
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TokenSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

struct TokenSigner(Arc<TokenEcKey>);

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TokenSigner")
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign_sha256(message)
            .map_err(|error| rustls::Error::General(error.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tokens_are_signed_as_the_python_sdk_signs_them() {
        // azure-iot-device 2.14's RenewableSasToken, given this key (its
        // SymmetricKeySigningMechanism), resource and expiry, makes exactly
        // this token.
        let key = base64::engine::general_purpose::STANDARD
            .decode("c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU2Nzg=")
            .expect("base64");
        let token = sas::device_token(&key, "hub.example/devices/gw-1", 1_900_000_000);
        assert_eq!(
            token,
            "SharedAccessSignature sr=hub.example%2Fdevices%2Fgw-1&sig=MzJEoDKsjp8wqm8v8d96ny9vGjG1stTKuzrj7f3EsbA%3D&se=1900000000"
        );
        assert_eq!(
            token_expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000))
        );
        assert_eq!(token_expiry("SharedAccessSignature sr=a&sig=b"), None);
        assert_eq!(token_expiry("sr=a&sig=b&se=1"), None);
    }
}
