//! Container image references, `[host[:port]/]path[:tag][@algorithm:hex]`, in the grammar of
//! the distribution project's `reference` package (which Docker, containerd and the OCI
//! distribution tools read references with):
//!
//! - the host is dot-separated components of `A-Z a-z 0-9 -`, each starting and ending with a
//!   letter or digit, optionally with a numeric port; the first `/`-separated component is the
//!   host only when more follow and it has a `.` or `:`, is `localhost`, or has an upper-case
//!   letter, as Docker decides (IPv6 literals are not supported);
//! - path components are lower-case letters and digits, joined by `.`, `_`, `__` or dashes;
//! - the tag is 1–128 characters of `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`;
//! - the digest is `algorithm:hex`, the hex at least 32 digits, 64 for sha256;
//! - the whole name (host and path) is at most 255 characters.
//!
//! [`Reference::whole`] fills in what Docker fills in: `docker.io` as the registry, `library/`
//! before a single path component on it, and `latest` when neither tag nor digest is given.
//! No dependencies, so the device runtime can check the references of a manifest with the
//! same code the compiler and the bundle builder use.

use std::fmt;

/// The registry a reference without a host names.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
/// The longest name (host and path), in characters.
pub const MAX_NAME_LENGTH: usize = 255;
/// The longest tag, in characters.
pub const MAX_TAG_LENGTH: usize = 128;

/// Why a text is not an image reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceError {
    /// The text is empty.
    Empty,
    /// A path component has an upper-case letter.
    Uppercase,
    /// Host and path are longer than [`MAX_NAME_LENGTH`].
    NameTooLong,
    /// The host or a path component breaks the grammar.
    InvalidName,
    /// The tag breaks the grammar.
    InvalidTag,
    /// The digest breaks the grammar.
    InvalidDigest,
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            ReferenceError::Empty => "the reference is empty",
            ReferenceError::Uppercase => "repository names must be lowercase",
            ReferenceError::NameTooLong => "the name is longer than 255 characters",
            ReferenceError::InvalidName => {
                "the name must be [host[:port]/]path with path components of a-z 0-9 joined by . _ __ or -"
            }
            ReferenceError::InvalidTag => {
                "the tag must be 1-128 characters of A-Z a-z 0-9 _ . - not starting with . or -"
            }
            ReferenceError::InvalidDigest => {
                "the digest must be algorithm:hex (sha256 with 64 hex digits)"
            }
        })
    }
}

impl std::error::Error for ReferenceError {}

/// A parsed reference, each part as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    host: Option<String>,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest)?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |slash| slash + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(colon) => {
                let tag = &rest[last_slash + colon + 1..];
                check_tag(tag)?;
                (&rest[..last_slash + colon], Some(tag))
            }
            None => (rest, None),
        };
        if name.chars().count() > MAX_NAME_LENGTH {
            return Err(ReferenceError::NameTooLong);
        }
        let (host, path) = split_host(name);
        if let Some(host) = host
            && !is_host(host)
        {
            return Err(ReferenceError::InvalidName);
        }
        for component in path.split('/') {
            if component.bytes().any(|byte| byte.is_ascii_uppercase()) {
                return Err(ReferenceError::Uppercase);
            }
            if !is_path_component(component) {
                return Err(ReferenceError::InvalidName);
            }
        }
        Ok(Self {
            host: host.map(str::to_owned),
            path: path.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }

    /// The registry: the host as written, or [`DEFAULT_REGISTRY`].
    pub fn registry(&self) -> &str {
        self.host.as_deref().unwrap_or(DEFAULT_REGISTRY)
    }

    /// The repository path on the registry; on Docker Hub a single component is in `library/`.
    pub fn repository(&self) -> String {
        if self.registry() == DEFAULT_REGISTRY && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// The tag as written, if any (no [`DEFAULT_TAG`] filled in).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest as written (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The fully qualified reference, `registry/repository[:tag][@digest]`, with the tag
    /// `latest` when neither tag nor digest was written: the name containerd stores images
    /// under.
    pub fn whole(&self) -> String {
        let mut whole = format!("{}/{}", self.registry(), self.repository());
        match (&self.tag, &self.digest) {
            (Some(tag), _) => {
                whole.push(':');
                whole.push_str(tag);
            }
            (None, None) => {
                whole.push(':');
                whole.push_str(DEFAULT_TAG);
            }
            (None, Some(_)) => {}
        }
        if let Some(digest) = &self.digest {
            whole.push('@');
            whole.push_str(digest);
        }
        whole
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Splits off the host as Docker does (`splitDockerDomain`): the first component is one when
/// more follow and it has a `.` or `:`, is `localhost`, or is not all lower case.
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|byte| byte.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]`: dot-separated components of letters, digits and inner dashes.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let component = |part: &str| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
    };
    name.split('.').all(component)
        && port
            .is_none_or(|port| !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Lower-case letters and digits, with `.`, `_`, `__` or any run of dashes between them.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    if !bytes.first().is_some_and(alphanumeric) || !bytes.last().is_some_and(alphanumeric) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        if alphanumeric(&bytes[index]) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && !alphanumeric(&bytes[index]) {
            index += 1;
        }
        let separator = &component[start..index];
        let valid =
            matches!(separator, "." | "_" | "__") || separator.bytes().all(|byte| byte == b'-');
        if !valid {
            return false;
        }
    }
    true
}

fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    let word = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'_';
    let bytes = tag.as_bytes();
    let valid = (1..=MAX_TAG_LENGTH).contains(&bytes.len())
        && bytes.first().is_some_and(word)
        && bytes
            .iter()
            .all(|byte| word(byte) || *byte == b'.' || *byte == b'-');
    if valid {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag)
    }
}

/// `algorithm:hex`: algorithm components of letters and digits (starting with a letter) joined
/// by `+ . _ -`, then at least 32 hex digits, exactly 64 for sha256.
fn check_digest(digest: &str) -> Result<(), ReferenceError> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(ReferenceError::InvalidDigest);
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|component| {
        let bytes = component.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.iter().all(u8::is_ascii_alphanumeric)
    });
    let hex_ok = hex.len() >= 32
        && hex.bytes().all(|byte| byte.is_ascii_hexdigit())
        && (algorithm != "sha256" || hex.len() == 64);
    if algorithm_ok && hex_ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidDigest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (String, String, Option<String>, Option<String>) {
        let reference = Reference::parse(text).unwrap();
        (
            reference.registry().to_owned(),
            reference.repository(),
            reference.tag().map(str::to_owned),
            reference.digest().map(str::to_owned),
        )
    }

    #[test]
    fn references_split_into_registry_path_tag_and_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parts("localhost:5000/team/sensor:1.0"),
            (
                "localhost:5000".into(),
                "team/sensor".into(),
                Some("1.0".into()),
                None
            )
        );
        assert_eq!(
            parts(&format!("mcr.microsoft.com/agent@{digest}")),
            (
                "mcr.microsoft.com".into(),
                "agent".into(),
                None,
                Some(digest.clone())
            )
        );
        assert_eq!(
            parts(&format!("mcr.microsoft.com/agent:1.5@{digest}")).2,
            Some("1.5".into())
        );
        // The port is not a tag: the tag comes after the last `/`.
        assert_eq!(parts("localhost:5000/sensor").2, None);
    }

    #[test]
    fn docker_hub_library_and_latest_are_filled_in() {
        assert_eq!(
            parts("sensor"),
            ("docker.io".into(), "library/sensor".into(), None, None)
        );
        assert_eq!(
            Reference::parse("sensor").unwrap().whole(),
            "docker.io/library/sensor:latest"
        );
        assert_eq!(
            Reference::parse("team/sensor:2").unwrap().whole(),
            "docker.io/team/sensor:2"
        );
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            Reference::parse(&format!("edgec.local/sensor@{digest}"))
                .unwrap()
                .whole(),
            format!("edgec.local/sensor@{digest}")
        );
        // An upper-case first component is a host, as Docker reads it.
        assert_eq!(parts("Registry/sensor:1").0, "Registry");
    }

    #[test]
    fn the_grammar_accepts() {
        for valid in [
            "a",
            "registry.io/a__b:1",
            "registry.io/a--b:1",
            "registry.io/a.b_c-d:1",
            "Registry.IO:443/sensor:1",
            "sensor:_tag",
            &format!("sensor:{}", "t".repeat(128)),
            &format!("sensor@sha512:{}", "c".repeat(128)),
        ] {
            assert!(Reference::parse(valid).is_ok(), "{valid}");
        }
    }

    #[test]
    fn the_grammar_refuses() {
        let digest = "d".repeat(64);
        for (invalid, error) in [
            ("", ReferenceError::Empty),
            ("Sensor:1.0", ReferenceError::Uppercase),
            ("my sensor:1.0", ReferenceError::InvalidName),
            ("my sensor", ReferenceError::InvalidName),
            ("-registry.io/sensor:1", ReferenceError::InvalidName),
            ("host:port/a:1", ReferenceError::InvalidName),
            (":5000/a:1", ReferenceError::InvalidName),
            ("../x:1", ReferenceError::InvalidName),
            ("a/../b:1", ReferenceError::InvalidName),
            ("a//b:1", ReferenceError::InvalidName),
            ("a___b", ReferenceError::InvalidName),
            ("a.:1", ReferenceError::InvalidName),
            ("sensor\u{1b}:1", ReferenceError::InvalidName),
            ("registry.io/sensor::1.0", ReferenceError::InvalidName),
            ("sensor:-1", ReferenceError::InvalidTag),
            ("sensor:.1", ReferenceError::InvalidTag),
            ("a:\u{1b}", ReferenceError::InvalidTag),
            (
                "registry.io/sensor@sha256:1234",
                ReferenceError::InvalidDigest,
            ),
            ("sensor@sha256", ReferenceError::InvalidDigest),
            ("a@b@sha256:00", ReferenceError::InvalidDigest),
        ] {
            assert_eq!(Reference::parse(invalid), Err(error), "{invalid:?}");
        }
        let long = format!("registry.io/{}:1", "a".repeat(250));
        assert_eq!(Reference::parse(&long), Err(ReferenceError::NameTooLong));
        let long_tag = format!("sensor:{}", "t".repeat(129));
        assert_eq!(Reference::parse(&long_tag), Err(ReferenceError::InvalidTag));
        assert_eq!(
            Reference::parse(&format!("a\u{202e}@sha256:{digest}")),
            Err(ReferenceError::InvalidName)
        );
    }
}
