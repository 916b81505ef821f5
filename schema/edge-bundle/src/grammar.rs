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
    fn versions_stay_below_two_to_the_53() {
        assert!(check_version(1).is_ok());
        assert!(check_version(MAX_VERSION).is_ok());
        for bad in [MAX_VERSION + 1, u64::MAX] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
