//! SAS authentication on CONNECT: the user name
//! `{hub}/{device}/{module}/?api-version=…` of a module, or
//! `{hub}/{leaf}/?api-version=…` of a leaf device, and the SAS token password
//! `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`.
//!
//! The token's signature is HMAC-SHA256, under the module's key (a leaf
//! device's: the symmetric key IoT Hub issued it), of the
//! URL-encoded resource and the expiry, `urlenc(sr) + "\n" + se`. The
//! URL-encoded resource is the `sr` field exactly as the token carries it
//! (the SDKs put the very string they signed there), so no re-encoding can
//! make a valid token fail; the resource it names is then compared
//! URL-decoded with the one the module may use.

use std::sync::Arc;

use percent_encoding::percent_decode_str;

use base64::Engine as _;

use crate::keys::{Digest, KeyError, KeyStore};

/// The longest user name or password accepted.
pub const MAXIMUM_CREDENTIAL_BYTES: usize = 2048;

/// A parsed MQTT user name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserName<'a> {
    /// The IoT Hub host name.
    pub hub: &'a str,
    /// The device id.
    pub device: &'a str,
    /// The module id; `None` in a device's user name (a leaf device's).
    pub module: Option<&'a str>,
    /// The `api-version` the SDK sent.
    pub api_version: &'a str,
}

/// A parsed SAS token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasToken<'a> {
    /// The `sr` field as sent (URL-encoded); the signed string starts with it.
    pub encoded_resource: &'a str,
    /// The resource, URL-decoded.
    pub resource: String,
    /// The signature, URL- and base64-decoded.
    pub signature: Vec<u8>,
    /// The `se` field as sent; the signed string ends with it.
    pub encoded_expiry: &'a str,
    /// The expiry in seconds since the Unix epoch.
    pub expiry: u64,
    /// The `skn` key name, if any (module tokens have none).
    pub key_name: Option<&'a str>,
}

/// Why a module's credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The user name is not `{hub}/{device}[/{module}]/?api-version=…`.
    #[error("the user name is not {{hub}}/{{device}}[/{{module}}]/?api-version=…: {0}")]
    BadUserName(&'static str),
    /// The password is not a SAS token.
    #[error("the password is not a SAS token: {0}")]
    BadToken(&'static str),
    /// The token names another resource than the client's.
    #[error("the SAS token is for {found:?}, not {expected:?}")]
    WrongResource {
        /// The decoded `sr`.
        found: String,
        /// What the module may use.
        expected: String,
    },
    /// The token expired.
    #[error("the SAS token expired at {expiry} (now {now})")]
    Expired {
        /// Its `se`.
        expiry: u64,
        /// The time it was checked at.
        now: u64,
    },
    /// The signature is not the client key's.
    #[error("the SAS token's signature does not match the client's key")]
    BadSignature,
    /// The key store could not sign (unknown module, token failure).
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl<'a> UserName<'a> {
    /// Reads a user name: three segments and a query
    /// (`hub/device/module/?api-version=…`), or the same with the query
    /// directly after the module (`hub/device/module?api-version=…`), or
    /// two segments (`hub/device/?api-version=…`, a device's);
    /// `api-version` is required, other query parameters (`DeviceClientType`,
    /// `model-id`) are accepted and ignored.
    pub fn parse(text: &'a str) -> Result<Self, AuthError> {
        if text.len() > MAXIMUM_CREDENTIAL_BYTES {
            return Err(AuthError::BadUserName("too long"));
        }
        let (path, query) = text
            .split_once('?')
            .ok_or(AuthError::BadUserName("no query with api-version"))?;
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segments = path.split('/');
        let (Some(hub), Some(device), module, None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(AuthError::BadUserName(
                "not two or three segments before the query",
            ));
        };
        if hub.is_empty() || device.is_empty() || module.is_some_and(str::is_empty) {
            return Err(AuthError::BadUserName("an empty segment"));
        }
        let api_version = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("api-version="))
            .filter(|version| !version.is_empty())
            .ok_or(AuthError::BadUserName("no api-version"))?;
        Ok(Self {
            hub,
            device,
            module,
            api_version,
        })
    }
}

impl<'a> SasToken<'a> {
    /// Reads a `SharedAccessSignature sr=…&sig=…&se=…` token; the fields may
    /// come in any order, each once.
    pub fn parse(text: &'a str) -> Result<Self, AuthError> {
        if text.len() > MAXIMUM_CREDENTIAL_BYTES {
            return Err(AuthError::BadToken("too long"));
        }
        let fields = text
            .strip_prefix("SharedAccessSignature ")
            .ok_or(AuthError::BadToken("no SharedAccessSignature prefix"))?;
        let (mut resource, mut signature, mut expiry, mut key_name) = (None, None, None, None);
        for pair in fields.split('&') {
            let (name, value) = pair
                .split_once('=')
                .ok_or(AuthError::BadToken("a field without ="))?;
            let slot = match name {
                "sr" => &mut resource,
                "sig" => &mut signature,
                "se" => &mut expiry,
                "skn" => &mut key_name,
                _ => return Err(AuthError::BadToken("an unknown field")),
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::BadToken("a field given twice"));
            }
        }
        let encoded_resource = resource.ok_or(AuthError::BadToken("no sr"))?;
        let encoded_signature = signature.ok_or(AuthError::BadToken("no sig"))?;
        let encoded_expiry = expiry.ok_or(AuthError::BadToken("no se"))?;
        let resource = percent_decode_str(encoded_resource)
            .decode_utf8()
            .map_err(|_| AuthError::BadToken("sr is not UTF-8"))?
            .into_owned();
        let signature: Vec<u8> = percent_decode_str(encoded_signature).collect();
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| AuthError::BadToken("sig is not base64"))?;
        // Only digits: `u64::from_str` would also take a leading `+`, which
        // the signed string would then carry too, harmlessly, but no SDK
        // writes one.
        if encoded_expiry.is_empty() || !encoded_expiry.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(AuthError::BadToken("se is not a number"));
        }
        let expiry = encoded_expiry
            .parse()
            .map_err(|_| AuthError::BadToken("se is out of range"))?;
        Ok(Self {
            encoded_resource,
            resource,
            signature,
            encoded_expiry,
            expiry,
            key_name,
        })
    }

    /// Checks that this token lets `module` of `device` on `hub` connect at
    /// `now` (seconds since the Unix epoch): the resource is the module's
    /// (host name compared case-insensitively), it has not expired, and it
    /// is signed with the module's key. With keys that sign on a device
    /// ([`KeyStore::signs_on_device`], a PKCS#11 token) the signature is
    /// computed on a blocking thread, so the caller's runtime worker is not
    /// held while the token works; with key files, in place.
    pub async fn verify(
        &self,
        hub: &str,
        device: &str,
        module: &str,
        keys: &Arc<dyn KeyStore>,
        now: u64,
    ) -> Result<(), AuthError> {
        let signed = self.check_claims(&format!("{hub}/devices/{device}/modules/{module}"), now)?;
        let digest = if keys.signs_on_device() {
            let (keys, module) = (Arc::clone(keys), module.to_owned());
            let location = keys.location();
            tokio::task::spawn_blocking(move || keys.sign(&module, signed.as_bytes()))
                .await
                .map_err(|error| KeyError::Store {
                    location,
                    message: format!("the signing task failed: {error}"),
                })??
        } else {
            keys.sign(module, signed.as_bytes())?
        };
        self.check_signature(&digest)
    }

    /// Checks that this token lets the leaf device `device` connect through
    /// the hub of IoT Hub `hub` at `now`: the resource is the device's
    /// (`{hub}/devices/{device}`, as IoT Hub signs device tokens), it has not
    /// expired, and it is signed with `key`, the device's symmetric key.
    pub fn verify_device(
        &self,
        hub: &str,
        device: &str,
        key: &[u8],
        now: u64,
    ) -> Result<(), AuthError> {
        let signed = self.check_claims(&format!("{hub}/devices/{device}"), now)?;
        self.check_signature(&crate::keys::hmac_sha256(key, signed.as_bytes()))
    }

    /// Checks the resource against `expected` (its host name compared
    /// case-insensitively) and the expiry; returns the string the signature
    /// is over.
    fn check_claims(&self, expected: &str, now: u64) -> Result<String, AuthError> {
        let expected = expected.to_owned();
        let matches = self
            .resource
            .split_once('/')
            .zip(expected.split_once('/'))
            .is_some_and(|((found_host, found_path), (host, path))| {
                found_host.eq_ignore_ascii_case(host) && found_path == path
            });
        if !matches {
            return Err(AuthError::WrongResource {
                found: self.resource.clone(),
                expected,
            });
        }
        if self.expiry < now {
            return Err(AuthError::Expired {
                expiry: self.expiry,
                now,
            });
        }
        Ok(format!(
            "{}\n{}",
            self.encoded_resource, self.encoded_expiry
        ))
    }

    fn check_signature(&self, digest: &Digest) -> Result<(), AuthError> {
        if constant_time_eq(digest, &self.signature) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// Compares a digest with a presented signature in time that depends only
/// on their lengths, so a forger learns nothing from how fast a guess fails.
fn constant_time_eq(digest: &Digest, presented: &[u8]) -> bool {
    if presented.len() != digest.len() {
        return false;
    }
    let difference = digest
        .iter()
        .zip(presented)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b));
    // `black_box` keeps the optimizer from turning the fold into an early
    // exit.
    std::hint::black_box(difference) == 0
}

/// A token naming `resource` (`{hub}/devices/{device}/modules/{module}`),
/// signed with `module`'s key and valid until `expiry` (seconds since the
/// Unix epoch), built as the SDKs build it. The hub only verifies module
/// tokens; this is for edged's own clients: the tests and the benchmark's
/// load generator.
pub fn token(
    keys: &dyn KeyStore,
    module: &str,
    resource: &str,
    expiry: u64,
) -> Result<String, KeyError> {
    signed_token(resource, expiry, |data| keys.sign(module, data))
}

/// A device token naming `resource` (`{hub}/devices/{device}`), signed with
/// the device's symmetric `key`, as the SDKs build it: what a leaf device
/// presents to the hub, and what the upstream connection presents to the
/// cloud.
pub fn device_token(key: &[u8], resource: &str, expiry: u64) -> String {
    signed_token(resource, expiry, |data| {
        Ok::<_, std::convert::Infallible>(crate::keys::hmac_sha256(key, data))
    })
    .unwrap_or_else(|never| match never {})
}

/// A token naming `resource`, valid until `expiry`, with the HMAC-SHA256
/// signature `sign` makes of the string IoT Hub signs:
/// `urlencode(resource) + "\n" + expiry`.
fn signed_token<E>(
    resource: &str,
    expiry: u64,
    sign: impl FnOnce(&[u8]) -> Result<Digest, E>,
) -> Result<String, E> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // What Python's `urllib.parse.quote(…, safe="")` leaves alone (the SDK
    // encodes with it): IoT Hub checks the signature of the resource as
    // presented, so edged's tokens encode it exactly as the SDKs do.
    const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encoded = utf8_percent_encode(resource, QUOTE).to_string();
    let digest = sign(format!("{encoded}\n{expiry}").as_bytes())?;
    let signature = base64::engine::general_purpose::STANDARD.encode(digest);
    let signature = utf8_percent_encode(&signature, QUOTE);
    Ok(format!(
        "SharedAccessSignature sr={encoded}&sig={signature}&se={expiry}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FileKeys;

    #[test]
    fn user_names() {
        let name =
            UserName::parse("hub.example/dev1/mod1/?api-version=2019-10-01&DeviceClientType=x")
                .expect("valid");
        assert_eq!(
            name,
            UserName {
                hub: "hub.example",
                device: "dev1",
                module: Some("mod1"),
                api_version: "2019-10-01"
            }
        );
        assert!(UserName::parse("hub.example/dev1/mod1?api-version=1").is_ok());
        assert_eq!(
            UserName::parse("hub.example/leaf1/?api-version=2019-10-01&DeviceClientType=x")
                .expect("a device's user name"),
            UserName {
                hub: "hub.example",
                device: "leaf1",
                module: None,
                api_version: "2019-10-01"
            }
        );
        for bad in [
            "hub.example/dev1/mod1/",
            "hub.example/dev1/mod1/?x=1",
            "hub.example/?api-version=1",
            "hub.example/dev1//?api-version=1",
            "hub.example/dev1/mod1/extra/?api-version=1",
            "hub.example//mod1/?api-version=1",
            "hub.example/dev1/mod1/?api-version=",
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_tokens_verify_only_for_their_device_and_key_until_they_expire() {
        let key = b"leaf key of 32 bytes, as issued.";
        let good = device_token(key, "Hub.Example/devices/leaf1", 2000);
        let parsed = SasToken::parse(&good).expect("parses");
        assert!(
            parsed
                .verify_device("hub.example", "leaf1", key, 1000)
                .is_ok()
        );
        assert!(matches!(
            parsed.verify_device("hub.example", "leaf1", key, 2001),
            Err(AuthError::Expired { .. })
        ));
        assert!(matches!(
            parsed.verify_device("hub.example", "leaf2", key, 1000),
            Err(AuthError::WrongResource { .. })
        ));
        assert!(matches!(
            parsed.verify_device("hub.example", "leaf1", b"another key", 1000),
            Err(AuthError::BadSignature)
        ));
        // A module's resource is not a device's, even with the device's key.
        let module_resource = device_token(key, "hub.example/devices/leaf1/modules/m", 2000);
        assert!(matches!(
            SasToken::parse(&module_resource)
                .expect("parses")
                .verify_device("hub.example", "leaf1", key, 1000),
            Err(AuthError::WrongResource { .. })
        ));
    }

    #[tokio::test]
    async fn tokens_verify_only_for_their_module_until_they_expire() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file_keys = FileKeys::open(dir.path()).expect("keys");
        file_keys.ensure("mod1").expect("key");
        file_keys.ensure("mod2").expect("key");
        let keys: Arc<dyn KeyStore> = Arc::new(file_keys);
        let resource = "Hub.Example/devices/dev1/modules/mod1";
        let good = token(keys.as_ref(), "mod1", resource, 2000).expect("sign");
        let parsed = SasToken::parse(&good).expect("parses");
        assert_eq!(parsed.resource, resource);
        assert_eq!(parsed.key_name, None);
        parsed
            .verify("hub.example", "dev1", "mod1", &keys, 1000)
            .await
            .expect("valid");
        assert!(matches!(
            parsed
                .verify("hub.example", "dev1", "mod1", &keys, 2001)
                .await,
            Err(AuthError::Expired { .. })
        ));
        assert!(matches!(
            parsed
                .verify("hub.example", "dev1", "mod2", &keys, 1000)
                .await,
            Err(AuthError::WrongResource { .. })
        ));
        let foreign = token(keys.as_ref(), "mod2", resource, 2000).expect("sign");
        assert!(matches!(
            SasToken::parse(&foreign)
                .expect("parses")
                .verify("hub.example", "dev1", "mod1", &keys, 1000)
                .await,
            Err(AuthError::BadSignature)
        ));
        // The same signature with a later expiry is not valid.
        let extended = good.replace("se=2000", "se=3000");
        assert!(matches!(
            SasToken::parse(&extended)
                .expect("parses")
                .verify("hub.example", "dev1", "mod1", &keys, 1000)
                .await,
            Err(AuthError::BadSignature)
        ));
        // Field order does not matter.
        let (prefix, fields) = good.split_once(' ').expect("a space");
        let mut fields: Vec<&str> = fields.split('&').collect();
        fields.reverse();
        let reordered = format!("{prefix} {}&skn=x", fields.join("&"));
        let reordered = SasToken::parse(&reordered).expect("parses");
        assert_eq!(reordered.key_name, Some("x"));
        reordered
            .verify("hub.example", "dev1", "mod1", &keys, 1000)
            .await
            .expect("valid in any order");
    }

    /// File keys that note the thread each signature is computed on, and
    /// that may claim to sign on a device, which is slow.
    struct ObservedKeys {
        keys: FileKeys,
        on_device: bool,
        signed_on: std::sync::Mutex<Vec<std::thread::ThreadId>>,
    }

    impl KeyStore for ObservedKeys {
        fn ensure(&self, module: &str) -> Result<(), KeyError> {
            self.keys.ensure(module)
        }
        fn remove(&self, module: &str) -> Result<(), KeyError> {
            self.keys.remove(module)
        }
        fn sign(&self, module: &str, data: &[u8]) -> Result<Digest, KeyError> {
            self.signed_on
                .lock()
                .expect("lock")
                .push(std::thread::current().id());
            if self.on_device {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            self.keys.sign(module, data)
        }
        fn location(&self) -> String {
            self.keys.location()
        }
        fn signs_on_device(&self) -> bool {
            self.on_device
        }
    }

    /// A token's signature is checked off the runtime's only thread when
    /// the keys sign on a device, so the thread keeps serving meanwhile;
    /// with key files it is checked in place.
    #[tokio::test(flavor = "current_thread")]
    async fn device_signatures_are_checked_on_a_blocking_thread() {
        for on_device in [true, false] {
            let dir = tempfile::tempdir().expect("temporary directory");
            let observed = Arc::new(ObservedKeys {
                keys: FileKeys::open(dir.path()).expect("keys"),
                on_device,
                signed_on: std::sync::Mutex::default(),
            });
            observed.ensure("mod1").expect("key");
            let resource = "hub.example/devices/dev1/modules/mod1";
            let text = token(observed.as_ref(), "mod1", resource, 2000).expect("sign");
            observed.signed_on.lock().expect("lock").clear();
            let keys: Arc<dyn KeyStore> = observed.clone();
            let parsed = SasToken::parse(&text).expect("parses");
            let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            };
            parsed
                .verify("hub.example", "dev1", "mod1", &keys, 1000)
                .await
                .expect("valid");
            ticker.abort();
            let signed_on = observed.signed_on.lock().expect("lock").clone();
            assert_eq!(signed_on.len(), 1);
            let here = std::thread::current().id();
            if on_device {
                assert_ne!(signed_on[0], here, "signed on the runtime's thread");
                assert!(
                    ticks.load(std::sync::atomic::Ordering::Relaxed) >= 5,
                    "the runtime's thread was held while the token signed"
                );
            } else {
                assert_eq!(signed_on[0], here, "file keys sign in place");
            }
        }
    }

    #[test]
    fn malformed_tokens() {
        for bad in [
            "",
            "sr=a&sig=b&se=1",
            "SharedAccessSignature sr=a&sig=AAAA",
            "SharedAccessSignature sr=a&sig=AAAA&se=x",
            "SharedAccessSignature sr=a&sig=AAAA&se=+1",
            "SharedAccessSignature sr=a&sig=!!!&se=1",
            "SharedAccessSignature sr=a&sr=a&sig=AAAA&se=1",
            "SharedAccessSignature sr=a&sig=AAAA&se=1&other=1",
            "SharedAccessSignature sr=%ff&sig=AAAA&se=1",
            "SharedAccessSignature sr=a&sig=AAAA&se=99999999999999999999999",
        ] {
            assert!(
                matches!(SasToken::parse(bad), Err(AuthError::BadToken(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let digest = [7u8; 32];
        assert!(constant_time_eq(&digest, &[7u8; 32]));
        let mut last = [7u8; 32];
        last[31] = 8;
        assert!(!constant_time_eq(&digest, &last));
        assert!(!constant_time_eq(&digest, &[7u8; 31]));
    }
}
