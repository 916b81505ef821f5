//! PKCS#11 tokens (HSM, smart card, SoftHSM in tests): loading the module,
//! finding a token by label and reading ed25519 public keys, which edged's
//! trust anchors use too, and (with the `build` feature) signing with a key
//! that never leaves the token.

use std::path::Path;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::slot::Slot;
use ed25519_dalek::VerifyingKey;

use crate::error::SignerError;
#[cfg(feature = "build")]
pub use crate::pkcs11_signer::Pkcs11Signer;

/// The parts of an RFC 7512 `pkcs11:` URI this signer uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Pkcs11Uri {
    /// The token label (`token=`); tokens are found by label because slot
    /// ids change between module loads.
    pub token: String,
    /// The key label (`object=`), shared by the private and public key.
    pub object: String,
}

impl Pkcs11Uri {
    /// Parses `pkcs11:token=LABEL;object=LABEL`, with percent-encoding and
    /// optional other path attributes (`type=private`, `id=...`) ignored.
    /// Query attributes such as `pin-value` are refused: the PIN is given
    /// separately so it never ends up in configuration files.
    pub fn parse(uri: &str) -> Result<Self, SignerError> {
        let invalid = |reason| SignerError::InvalidPkcs11Uri {
            uri: uri.to_owned(),
            reason,
        };
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid("must start with \"pkcs11:\""))?;
        if rest.contains('?') {
            return Err(invalid(
                "query attributes are not supported; pass the PIN separately",
            ));
        }
        let mut token = None;
        let mut object = None;
        for attribute in rest.split(';').filter(|attribute| !attribute.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| invalid("attribute without \"=\""))?;
            let value = percent_decode(value).ok_or_else(|| invalid("bad percent-encoding"))?;
            match name {
                "token" => token = Some(value),
                "object" => object = Some(value),
                _ => {}
            }
        }
        Ok(Self {
            token: token.ok_or_else(|| invalid("missing token=LABEL"))?,
            object: object.ok_or_else(|| invalid("missing object=LABEL"))?,
        })
    }
}

/// Decodes `%XX` escapes; `None` if an escape is malformed or the result is
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let pair = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(pair, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Wraps an unexpected PKCS#11 failure with the function that failed.
pub(crate) fn other(operation: &'static str, error: &CryptokiError) -> SignerError {
    SignerError::Pkcs11 {
        operation,
        reason: error.to_string(),
    }
}

/// Loads a PKCS#11 module and initialises it; a module another part of the process already
/// initialised is used as it is.
pub fn load_module(module: &Path) -> Result<Pkcs11, SignerError> {
    let module_error = |reason: String| SignerError::Pkcs11Module {
        module: module.to_owned(),
        reason,
    };
    let context = Pkcs11::new(module).map_err(|error| module_error(error.to_string()))?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(error) => Err(module_error(error.to_string())),
    }
}

/// Finds the slot whose token carries `label` (padding trimmed). Tokens are found by label
/// because slot ids change between module loads.
pub fn find_token(context: &Pkcs11, label: &str) -> Result<Slot, SignerError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|error| other("C_GetSlotList", &error))?;
    let mut present = Vec::new();
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|error| other("C_GetTokenInfo", &error))?;
        let found = info.label().trim_end();
        if found == label {
            return Ok(slot);
        }
        present.push(format!("{found:?}"));
    }
    Err(SignerError::TokenNotFound {
        label: label.to_owned(),
        present: if present.is_empty() {
            "none".to_owned()
        } else {
            present.join(", ")
        },
    })
}

/// The DER OCTET STRING header of a 32-byte ed25519 point.
const OCTET_STRING_32: [u8; 2] = [0x04, 0x20];

/// Decodes an ed25519 CKA_EC_POINT. PKCS#11 3.0 specifies a DER OCTET STRING (`04 20` and the
/// 32 bytes), which SoftHSM2 and most modules return; some modules return the raw 32 bytes,
/// which is accepted too (the two cannot be confused: they differ in length). `None` for any
/// other length or a point that is not on the curve.
pub fn decode_ec_point(point: &[u8]) -> Option<VerifyingKey> {
    let raw = match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        raw if raw.len() == 32 => raw,
        _ => return None,
    };
    VerifyingKey::from_bytes(raw.try_into().ok()?).ok()
}

/// The CKA_EC_POINT of an ed25519 key in the DER form PKCS#11 3.0 specifies.
pub fn encode_ec_point(key: &VerifyingKey) -> Vec<u8> {
    let mut point = OCTET_STRING_32.to_vec();
    point.extend_from_slice(key.as_bytes());
    point
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_token_and_object() {
        let uri = Pkcs11Uri::parse("pkcs11:token=edge%20fleet;object=bundle-signing;type=private")
            .unwrap();
        assert_eq!(
            uri,
            Pkcs11Uri {
                token: "edge fleet".to_owned(),
                object: "bundle-signing".to_owned()
            }
        );
    }

    #[cfg(feature = "build")]
    #[test]
    fn ec_points_decode_in_der_and_raw_form() {
        let key =
            crate::FileSigner::from_pem(&crate::generate_keypair().unwrap().private_pem).unwrap();
        let key = crate::Signer::public_key(&key);
        let der = encode_ec_point(&key);
        assert_eq!(der[..2], [0x04, 0x20]);
        assert_eq!(der.len(), 34);
        assert_eq!(decode_ec_point(&der), Some(key));
        assert_eq!(decode_ec_point(key.as_bytes()), Some(key));
    }

    #[test]
    fn other_ec_points_are_refused() {
        let key = [9_u8; 32];
        let mut wrong_tag = vec![0x03, 0x20];
        wrong_tag.extend_from_slice(&key);
        let mut wrong_length = vec![0x04, 0x21];
        wrong_length.extend_from_slice(&key);
        wrong_length.push(0);
        // y = 2 is not the y-coordinate of a point on edwards25519.
        let mut off_curve = [0_u8; 32];
        off_curve[0] = 2;
        for point in [
            &[][..],
            &key[..31],
            &[0x04, 0x20],
            &wrong_tag,
            &wrong_length,
            &off_curve,
        ] {
            assert_eq!(decode_ec_point(point), None, "{point:02x?}");
        }
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (uri, expected) in [
            ("token=a;object=b", "must start"),
            ("pkcs11:object=b", "missing token"),
            ("pkcs11:token=a", "missing object"),
            ("pkcs11:token=a;object=b?pin-value=1", "query"),
            ("pkcs11:token=%zz;object=b", "percent"),
        ] {
            let error = Pkcs11Uri::parse(uri).unwrap_err();
            assert!(error.to_string().contains(expected), "{uri}: {error}");
        }
    }
}
