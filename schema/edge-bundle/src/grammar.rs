//! What the strings and numbers of a manifest may be (`schema/BUNDLE.md`, "The manifest"):
//! names that become path components or container names, image references, payload paths,
//! digests and versions. A manifest that breaks any rule is refused when it is parsed, so no
//! caller ever sees, prints or writes a name outside the grammar.

use image_reference::{Reference, ReferenceError};

use crate::display::escaped;
use crate::error::BundleError;

/// The highest deployment version: 2^53 − 1, the largest integer every JSON consumer (a
/// JavaScript fleet dashboard, say) reads exactly, so that all of them agree on the
/// anti-rollback order. A version at `u64::MAX` would also leave no newer version to ship.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// The longest payload path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The most components (`/`-separated parts) of a payload path.
pub const MAX_PATH_DEPTH: usize = 64;
/// The longest component of a payload path, in bytes (`NAME_MAX` on Linux).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// The longest device `compatible` string.
pub const MAX_COMPATIBLE_BYTES: usize = 256;

/// Deployment and module names become path components, file names and container names, so
/// they are 1–128 characters from `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn check_name(what: &'static str, value: &str) -> Result<(), BundleError> {
    let valid = (1..=128).contains(&value.len())
        && !value.starts_with(['.', '-'])
        && value.bytes().all(portable);
    if valid {
        Ok(())
    } else {
        Err(BundleError::InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

/// The POSIX portable file name characters.
fn portable(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"._-".contains(&byte)
}

/// The device `compatible` string (devicetree style, `vendor,model`): 1–256 characters from
/// `A-Z a-z 0-9 , . _ + - / :`.
pub fn check_compatible(value: &str) -> Result<(), BundleError> {
    let valid = (1..=MAX_COMPATIBLE_BYTES).contains(&value.len())
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b",._+-/:".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(BundleError::MalformedManifest(format!(
            "compatible {} must be 1-{MAX_COMPATIBLE_BYTES} characters from A-Z a-z 0-9 , . _ + - / :",
            escaped(value)
        )))
    }
}

/// The version must be at most [`MAX_VERSION`].
pub fn check_version(version: u64) -> Result<(), BundleError> {
    if version <= MAX_VERSION {
        Ok(())
    } else {
        Err(BundleError::VersionOutOfRange(version))
    }
}

/// The length of a time in the one form bundles write, `YYYY-MM-DDTHH:MM:SSZ`.
pub const UTC_TIME_BYTES: usize = 20;

/// Reads a time in the one form `edgec build` writes, RFC 3339 in UTC to the second
/// (`2023-11-14T22:13:20Z`, exactly [`UTC_TIME_BYTES`] characters, from 1970 to 9999), as
/// seconds since 1970. Every other spelling of the same instant (an offset, a fraction, lower
/// case) is refused, so a signed time has one byte string and every reader, however small its
/// date library, agrees on the instant.
pub fn utc_time_seconds(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != UTC_TIME_BYTES
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
        || bytes[19] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = &bytes[range];
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0, |value, digit| value * 10 + u64::from(digit - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_since_1970(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The days from 1970-01-01 to a date of the proleptic Gregorian calendar from 1970 on
/// (Howard Hinnant's `days_from_civil`, with years counted from March so that the leap day
/// ends the year).
fn days_since_1970(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 is the day count from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The optional `expires` of a manifest: a time in the one form [`utc_time_seconds`] reads,
/// later than `created` (when `created` is in that form too, as every bundle `edgec build`
/// writes has it), since a bundle that expires before it was made can never be applied.
pub fn check_expires(expires: &str, created: &str) -> Result<(), BundleError> {
    let Some(at) = utc_time_seconds(expires) else {
        return Err(BundleError::MalformedManifest(format!(
            "expires {} is not an RFC 3339 UTC time of the form 2030-01-31T00:00:00Z",
            escaped(expires)
        )));
    };
    if utc_time_seconds(created).is_some_and(|created| at <= created) {
        return Err(BundleError::MalformedManifest(format!(
            "expires {expires} is not after created {created}"
        )));
    }
    Ok(())
}

/// `text` is exactly `digits` lower-case hex digits.
pub fn is_lower_hex(text: &str, digits: usize) -> bool {
    text.len() == digits
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Parses the reference a packaged image is loaded under (the distribution grammar, through
/// `image_reference`, as the compiler reads it): it must name its tag, since `docker load`
/// tags the image with it and a `latest` filled in would hide a missing version.
pub fn tagged_reference(reference: &str) -> Result<Reference, BundleError> {
    let invalid = |reason| BundleError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    let parsed = Reference::parse(reference).map_err(|error| invalid(reference_reason(error)))?;
    if parsed.tag().is_none() {
        return Err(invalid("needs a tag, as in name:tag"));
    }
    Ok(parsed)
}

/// Checks that a reference has the `name:tag` form `docker load` needs.
pub fn check_tagged_reference(reference: &str) -> Result<(), BundleError> {
    tagged_reference(reference).map(drop)
}

/// Checks a registry image reference pinned by digest, `name[:tag]@sha256:<64 hex digits>`
/// (lower-case hex, the form [`Sha256Digest`](crate::Sha256Digest) writes).
pub fn check_registry_reference(reference: &str) -> Result<(), BundleError> {
    let pinned = Reference::parse(reference).is_ok_and(|parsed| {
        parsed
            .digest()
            .and_then(|digest| digest.strip_prefix("sha256:"))
            .is_some_and(|hex| is_lower_hex(hex, 64))
    });
    if pinned {
        Ok(())
    } else {
        Err(BundleError::InvalidReference {
            reference: reference.to_owned(),
            reason: "registry images must be pinned as name@sha256:<64 lower-case hex digits>, the name from a-z 0-9 . _ - / (and host:port)",
        })
    }
}

/// The words for why a reference does not parse.
fn reference_reason(error: ReferenceError) -> &'static str {
    match error {
        ReferenceError::InvalidTag => "the tag may only use A-Z a-z 0-9 . _ - (at most 128)",
        ReferenceError::InvalidDigest => "the digest must be sha256:<64 hex digits>",
        ReferenceError::Empty
        | ReferenceError::Uppercase
        | ReferenceError::NameTooLong
        | ReferenceError::InvalidName => {
            "the name may only use a-z 0-9 . _ - / (and host:port), at most 255 characters"
        }
    }
}

/// Payload paths are relative, at most [`MAX_PATH_BYTES`] long and [`MAX_PATH_DEPTH`]
/// components deep, each component 1–255 characters from `A-Z a-z 0-9 . _ -` and neither `.`
/// nor `..`: no entry can land outside an extraction directory, and none takes unbounded work
/// to create.
pub fn check_payload_path(path: &str) -> Result<(), BundleError> {
    let unsafe_entry = |reason| BundleError::UnsafeEntry {
        path: path.to_owned(),
        reason,
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(unsafe_entry("path is longer than 4096 bytes"));
    }
    if path.starts_with('/') {
        return Err(unsafe_entry("absolute path"));
    }
    if path.contains(['\\', '\0']) {
        return Err(unsafe_entry("backslash or NUL in path"));
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        if depth > MAX_PATH_DEPTH {
            return Err(unsafe_entry("path is more than 64 components deep"));
        }
        match component {
            ".." => return Err(unsafe_entry("parent directory component")),
            "." | "" => return Err(unsafe_entry("empty or current directory component")),
            _ if component.len() > MAX_COMPONENT_BYTES => {
                return Err(unsafe_entry("path component is longer than 255 bytes"));
            }
            _ if !component.bytes().all(portable) => {
                return Err(unsafe_entry(
                    "path components may only use A-Z a-z 0-9 . _ -",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A signature's key id: the lower-case hex SHA-256 of the raw public key.
pub fn check_key_id(key_id: &str) -> Result<(), BundleError> {
    if is_lower_hex(key_id, 64) {
        Ok(())
    } else {
        Err(BundleError::MalformedSignatures(format!(
            "key id {} is not 64 lower-case hex digits",
            escaped(key_id)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted_to_portable_characters() {
        assert!(check_name("module name", "temp-sensor_2.v1").is_ok());
        for bad in [
            "",
            ".hidden",
            "-flag",
            "a/b",
            "../x",
            "a b",
            "é",
            "nul\0",
            "esc\u{1b}[2J",
            "bidi\u{202e}",
            &"x".repeat(129),
        ] {
            assert!(check_name("module name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(check_payload_path("payload/images/a/index.json").is_ok());
        let deep = vec!["d"; 64].join("/");
        assert!(check_payload_path(&deep).is_ok());
        for bad in [
            "/etc/passwd",
            "payload/../x",
            "payload//x",
            "./payload/x",
            "payload/x/",
            "a\\b",
            "payload/\u{1b}[31m",
            "payload/evil\u{202e}gpj.exe",
            &format!("{deep}/d"),
            &format!("payload/{}", "x".repeat(256)),
            &format!("payload/{}", "x/".repeat(2100)),
        ] {
            assert!(check_payload_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references_follow_the_docker_grammar() {
        assert!(check_tagged_reference("edgec.local/sensor:1").is_ok());
        assert!(check_tagged_reference("localhost:5000/a/b:v1.2").is_ok());
        assert!(check_tagged_reference("sensor\u{1b}:1").is_err());
        for bad in [
            "../x:1",
            "a/../b:1",
            "a//b:1",
            "-a:1",
            "a.:1",
            "host:port/a:1",
            ":5000/a:1",
        ] {
            assert!(check_tagged_reference(bad).is_err(), "{bad}");
        }
        let digest = "0".repeat(64);
        assert!(check_registry_reference(&format!("mcr.microsoft.com/a@sha256:{digest}")).is_ok());
        assert!(check_registry_reference(&format!("a\u{202e}@sha256:{digest}")).is_err());
        assert!(check_registry_reference("a@sha256:00").is_err());
        assert!(
            check_registry_reference(&format!("mcr.microsoft.com/a:1.5@sha256:{digest}")).is_ok()
        );
        assert!(check_registry_reference(&format!("a:\u{1b}@sha256:{digest}")).is_err());
    }

    #[test]
    fn packaged_images_need_a_written_tag_and_containerd_gets_the_whole_name() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(check_tagged_reference(&format!("edgec.local/sensor:1.0@{digest}")).is_ok());
        for untagged in [
            "edgec/sensor".to_owned(),
            "localhost:5000/sensor".to_owned(),
            format!("edgec.local/sensor@{digest}"),
        ] {
            assert!(check_tagged_reference(&untagged).is_err(), "{untagged}");
        }
        let reference = tagged_reference("sensor:1.0").unwrap();
        assert_eq!(reference.whole(), "docker.io/library/sensor:1.0");
        // Only the text after the last `@sha256:` used to be looked at.
        for invalid in [
            format!("my registry/agent@{digest}"),
            format!("Agent@{digest}"),
            format!("agent@sha256:{}", "A".repeat(64)),
            format!("agent@sha512:{}", "a".repeat(128)),
        ] {
            assert!(check_registry_reference(&invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn utc_times_have_one_spelling_and_count_seconds_from_1970() {
        assert_eq!(utc_time_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            utc_time_seconds("2023-11-14T22:13:20Z"),
            Some(1_700_000_000)
        );
        assert_eq!(utc_time_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(
            utc_time_seconds("2106-02-07T06:28:15Z"),
            Some(u64::from(u32::MAX))
        );
        assert_eq!(
            utc_time_seconds("9999-12-31T23:59:59Z"),
            Some(253_402_300_799)
        );
        for other in [
            "2023-11-14T22:13:20+00:00",
            "2023-11-14T22:13:20.0Z",
            "2023-11-14t22:13:20z",
            "2023-11-14 22:13:20Z",
            "1969-12-31T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-00-01T00:00:00Z",
            "2023-04-31T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T23:60:00Z",
            "2023-11-14T23:59:60Z",
            "+023-11-14T22:13:20Z",
            "",
        ] {
            assert_eq!(utc_time_seconds(other), None, "{other}");
        }
    }

    #[test]
    fn an_expiry_is_a_utc_time_after_the_creation() {
        assert!(check_expires("2024-01-01T00:00:00Z", "2023-11-14T22:13:20Z").is_ok());
        for (expires, created, expected) in [
            (
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z",
                "not after created",
            ),
            (
                "2020-01-01T00:00:00Z",
                "2023-11-14T22:13:20Z",
                "not after created",
            ),
            (
                "2030-01-01",
                "2023-11-14T22:13:20Z",
                "not an RFC 3339 UTC time",
            ),
            (
                "2030-01-01T00:00:00+01:00",
                "2023-11-14T22:13:20Z",
                "not an RFC 3339",
            ),
        ] {
            let error = check_expires(expires, created).unwrap_err().to_string();
            assert!(error.contains(expected), "{expires}: {error}");
        }
    }

    #[test]
    fn versions_stay_below_two_to_the_53() {
        assert!(check_version(1).is_ok());
        assert!(check_version(MAX_VERSION).is_ok());
        for bad in [MAX_VERSION + 1, u64::MAX] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
