//! Container image references, `[registry[:port]/]path[:tag][@algorithm:digest]`, read by one
//! parser: `oci_spec::distribution::Reference`, which follows the distribution reference
//! grammar (registry host names and ports, lowercase path components joined by `.`, `_`, `__`
//! or dashes, tags of at most 128 characters, digests whose length fits their algorithm,
//! repository names of at most 255 characters) and fills in what Docker fills in: `docker.io`
//! for a reference without a registry, `library/` for a single path component, and the tag
//! `latest` when neither tag nor digest is given. The checker and the importer read references
//! through this module; edge-bundle, which cannot depend on the compiler core, calls the same
//! parser for the images it packages and lists.

use oci_spec::distribution::Reference;

use crate::check::model::Architecture;

/// Parses `text`, or says in words (for E0213) why it is not a reference.
pub fn parse(text: &str) -> Result<Reference, &'static str> {
    text.parse::<Reference>().map_err(|_| {
        if text.chars().any(char::is_whitespace) {
            "it contains whitespace"
        } else if text.chars().any(|character| character.is_ascii_uppercase())
            && !text.contains('/')
        {
            "repository names must be lowercase"
        } else {
            "it does not match `[registry/]repository[:tag][@sha256:digest]`"
        }
    })
}

/// The architecture a conventional tag names (`1.5-linux-arm32v7`, `…-arm64v8`, `…-amd64`).
pub fn architecture_from_tag(reference: &Reference) -> Option<Architecture> {
    let tag = reference.tag()?.to_ascii_lowercase();
    if tag.contains("arm32v7") {
        Some(Architecture::Arm32v7)
    } else if tag.contains("arm64") || tag.contains("aarch64") {
        Some(Architecture::Arm64)
    } else if tag.contains("amd64") || tag.contains("x86_64") {
        Some(Architecture::Amd64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (String, String, Option<String>, Option<String>) {
        let reference = parse(text).unwrap();
        (
            reference.registry().to_owned(),
            reference.repository().to_owned(),
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
    }

    #[test]
    fn docker_hub_is_the_default_registry() {
        assert_eq!(
            parts("sensor"),
            (
                "docker.io".into(),
                "library/sensor".into(),
                Some("latest".into()),
                None
            )
        );
        // A first component without a dot, colon or `localhost` is a path, not a host.
        assert_eq!(parts("team/sensor:2").0, "docker.io");
        assert_eq!(parts("team/sensor:2").1, "team/sensor");
    }

    #[test]
    fn the_grammar_decides_where_the_copies_disagreed() {
        // Accepted by the grammar; the checker's own pattern refused double separators.
        for valid in [
            "registry.io/a__b:1",
            "registry.io/a--b:1",
            "Registry.IO/sensor:1",
        ] {
            assert!(parse(valid).is_ok(), "{valid}");
        }
        // Refused by the grammar; the checker's pattern took any host characters and any
        // length, and a tag split at the last colon read `5000/sensor` as a tag.
        let long = format!("registry.io/{}:1", "a".repeat(256));
        for invalid in [
            "-registry.io/sensor:1",
            "registry.io/sensor::1.0",
            "registry.io/sensor@sha256:1234",
            long.as_str(),
        ] {
            assert!(parse(invalid).is_err(), "{invalid}");
        }
        assert_eq!(parts("localhost:5000/sensor").2, Some("latest".into()));
    }

    #[test]
    fn invalid_references_say_why() {
        assert_eq!(
            parse("my sensor:1.0").unwrap_err(),
            "it contains whitespace"
        );
        assert_eq!(
            parse("Sensor:1.0").unwrap_err(),
            "repository names must be lowercase"
        );
    }

    #[test]
    fn architectures_come_from_tags() {
        let architecture = |text: &str| architecture_from_tag(&parse(text).unwrap());
        assert_eq!(
            architecture("reg:5000/m:1.0-linux-arm32v7"),
            Some(Architecture::Arm32v7)
        );
        assert_eq!(architecture("m:1.0-arm64v8"), Some(Architecture::Arm64));
        assert_eq!(architecture("m:1.0-AMD64"), Some(Architecture::Amd64));
        assert_eq!(architecture("m:1.0"), None);
        assert_eq!(architecture("host:5000/m"), None);
    }
}
