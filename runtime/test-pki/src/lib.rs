//! A test certificate authority for the dev crates that stand in for the
//! device's peers (mosquitto as the cloud, a registry): the servers'
//! certificates and the devices' client certificates come from one CA
//! a test makes for itself.

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub certificate_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A test CA that issues the broker's server certificate and the devices'
/// client certificates.
pub struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        Self {
            ca_pem: ca.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The CA certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `names`.
    pub fn server(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names).expect("server params");
        let key = rcgen::KeyPair::generate().expect("server key");
        let certificate = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate with `common_name` (mosquitto takes it as the
    /// user name) and a new P-256 key.
    pub fn client(&self, common_name: &str) -> Issued {
        let key = rcgen::KeyPair::generate().expect("client key");
        let certificate = self
            .client_params(common_name)
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate for a P-256 public key held elsewhere (on a
    /// PKCS#11 token), given as its uncompressed point `04 || x || y` (the
    /// last 65 bytes of its DER SubjectPublicKeyInfo).
    pub fn client_for_p256_point(&self, common_name: &str, point: &[u8]) -> String {
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        self.client_params(common_name)
            .signed_by(&P256Point(point.to_vec()), &self.issuer)
            .expect("client certificate")
            .pem()
    }

    fn client_params(&self, common_name: &str) -> rcgen::CertificateParams {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("client params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params
    }
}

/// A P-256 public key by its point, as a certificate's subject key.
struct P256Point(Vec<u8>);

impl rcgen::PublicKeyData for P256Point {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}
