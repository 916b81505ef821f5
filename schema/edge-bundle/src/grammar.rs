//! What the strings and numbers of a manifest may be (`schema/BUNDLE.md`, "The manifest"):
//! names that become path components or container names, image references, payload paths,
//! digests and versions. A manifest that breaks any rule is refused when it is parsed, so no
//! caller ever sees, prints or writes a name outside the grammar.

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

/// Checks that a reference has the `name:tag` form `docker load` needs.
pub fn check_tagged_reference(reference: &str) -> Result<(), BundleError> {
    let invalid = |reason| BundleError::InvalidReference {
        reference: reference.to_owned(),
        reason,
    };
    let name_end = reference.rfind('/').map_or(0, |slash| slash + 1);
    let (name, tag) = reference[name_end..]
        .rsplit_once(':')
        .map(|(name, tag)| (&reference[..name_end + name.len()], tag))
        .ok_or_else(|| invalid("needs a tag, as in name:tag"))?;
    if !image_name(name) {
        return Err(invalid("the name may only use a-z 0-9 . _ - / (and :port)"));
    }
    let tag_ok = !tag.is_empty() && tag.len() <= 128 && tag.bytes().all(portable);
    if !tag_ok {
        return Err(invalid(
            "the tag may only use A-Z a-z 0-9 . _ - (at most 128)",
        ));
    }
    Ok(())
}

/// Checks a registry image reference pinned by digest, `name[:tag]@sha256:<64 hex digits>`.
pub fn check_registry_reference(reference: &str) -> Result<(), BundleError> {
    let pinned = reference
        .rsplit_once("@sha256:")
        .is_some_and(|(name, digest)| {
            is_lower_hex(digest, 64) && (image_name(name) || check_tagged_reference(name).is_ok())
        });
    if pinned {
        Ok(())
    } else {
        Err(BundleError::InvalidReference {
            reference: reference.to_owned(),
            reason: "registry images must be pinned as name@sha256:<64 hex digits>, the name from a-z 0-9 . _ - / (and :port)",
        })
    }
}

/// An image name as Docker reads it, at most 255 characters: `/`-separated components of
/// `a-z 0-9 . _ -`, each starting and ending with a letter or digit, the first optionally
/// followed by `:port` when more components follow (a registry host).
fn image_name(name: &str) -> bool {
    let component = |part: &str| {
        let bytes = part.as_bytes();
        let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
        bytes.first().is_some_and(alphanumeric)
            && bytes.last().is_some_and(alphanumeric)
            && bytes
                .iter()
                .all(|byte| alphanumeric(byte) || b"._-".contains(byte))
    };
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let first_ok = match first.split_once(':') {
        Some((host, port)) => {
            !rest.is_empty()
                && component(host)
                && !port.is_empty()
                && port.bytes().all(|byte| byte.is_ascii_digit())
        }
        None => component(first),
    };
    (1..=255).contains(&name.len()) && first_ok && rest.into_iter().all(component)
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
    fn versions_stay_below_two_to_the_53() {
        assert!(check_version(1).is_ok());
        assert!(check_version(MAX_VERSION).is_ok());
        for bad in [MAX_VERSION + 1, u64::MAX] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
