//! The textual forms users type and veritysetup prints: root hashes and salts in lowercase hex,
//! UUIDs in the hyphenated 8-4-4-4-12 form.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::{DIGEST_SIZE, MAX_SALT_SIZE, VerityError};

/// The root hash: the one value that must be trusted (signed) for the whole tree to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootHash(pub [u8; DIGEST_SIZE]);

impl fmt::Display for RootHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&hex::encode(self.0))
    }
}

impl FromStr for RootHash {
    type Err = VerityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0; DIGEST_SIZE];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| VerityError::Syntax {
            text: text.to_owned(),
            expected: "a root hash (64 hexadecimal digits)",
        })?;
        Ok(RootHash(bytes))
    }
}

/// Parses a UUID the way veritysetup's `--uuid` does (libuuid's `uuid_parse`): only the
/// hyphenated 8-4-4-4-12 form, either case. The `uuid` crate also reads the braced, URN and
/// unhyphenated forms, which veritysetup refuses.
pub fn parse_uuid(text: &str) -> Result<Uuid, VerityError> {
    let error = || VerityError::Syntax {
        text: text.to_owned(),
        expected: "a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
    };
    if text.len() != uuid::fmt::Hyphenated::LENGTH {
        return Err(error());
    }
    Uuid::try_parse(text).map_err(|_| error())
}

/// Marks hash-derived bytes as a random (version 4, RFC 9562 variant) UUID, so that tools that
/// inspect the version see a well-formed one.
pub fn uuid_from_digest(digest: &[u8; 16]) -> Uuid {
    uuid::Builder::from_random_bytes(*digest).into_uuid()
}

/// Parses a salt the way veritysetup's `--salt` does: hexadecimal, or `-` for no salt.
pub fn parse_salt(text: &str) -> Result<Vec<u8>, VerityError> {
    if text == "-" {
        return Ok(Vec::new());
    }
    let salt = hex::decode(text).map_err(|_| VerityError::Syntax {
        text: text.to_owned(),
        expected: "a salt (hexadecimal digits, or `-` for none)",
    })?;
    if salt.len() > MAX_SALT_SIZE {
        return Err(VerityError::SaltTooLong { size: salt.len() });
    }
    Ok(salt)
}

/// Shows a salt the way veritysetup does: hexadecimal, or `-` when there is none.
pub fn format_salt(salt: &[u8]) -> String {
    if salt.is_empty() {
        "-".to_owned()
    } else {
        hex::encode(salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_reject_what_veritysetup_rejects() {
        let text = "12345678-1234-4234-8234-123456789abc";
        assert_eq!(parse_uuid(text).unwrap().to_string(), text);
        assert_eq!(
            parse_uuid("12345678-1234-4234-8234-123456789ABC")
                .unwrap()
                .to_string(),
            text
        );
        for bad in [
            "",
            "12345678123442348234123456789abc",
            "{12345678-1234-4234-8234-123456789abc}",
            "urn:uuid:12345678-1234-4234-8234-123456789abc",
            "12345678-1234-4234-8234-123456789abg",
            "1234567-81234-4234-8234-123456789abc",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_uuids_set_only_the_version_and_variant_bits() {
        let uuid = uuid_from_digest(&[0xff; 16]);
        assert_eq!(uuid.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let uuid = uuid_from_digest(&[0; 16]);
        assert_eq!(uuid.to_string(), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn salts_follow_veritysetup_syntax() {
        assert_eq!(parse_salt("-").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_salt("").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_salt("00ff").unwrap(), vec![0, 0xff]);
        assert!(parse_salt("0").is_err());
        assert!(parse_salt(&"00".repeat(257)).is_err());
        assert!(parse_salt(&"00".repeat(256)).is_ok());
        assert_eq!(format_salt(&[]), "-");
        assert_eq!(format_salt(&[0xab, 1]), "ab01");
    }

    #[test]
    fn root_hashes_need_exactly_64_hex_digits() {
        let text = "ab".repeat(32);
        assert_eq!(text.parse::<RootHash>().unwrap().to_string(), text);
        assert!("ab".repeat(31).parse::<RootHash>().is_err());
        assert!("zz".repeat(32).parse::<RootHash>().is_err());
    }
}
