//! Container image references as the checker and the importer read them: the
//! `image-reference` crate's parser of the distribution reference grammar, the one edge-bundle
//! and edged check the references of a bundle with, plus the wording of E0213 and the
//! architecture a conventional tag names.

pub use image_reference::Reference;

use crate::check::model::Architecture;

/// Parses `text`, or says in words (for E0213) why it is not a reference.
pub fn parse(text: &str) -> Result<Reference, &'static str> {
    Reference::parse(text).map_err(|_| {
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
        assert_eq!(
            parse("registry.io/sensor@sha256:1234").unwrap_err(),
            "it does not match `[registry/]repository[:tag][@sha256:digest]`"
        );
    }

    #[test]
    fn the_grammar_decides_where_the_checker_pattern_disagreed() {
        // The checker's own pattern refused double separators and took any host characters
        // and any name length.
        assert!(parse("registry.io/a__b:1").is_ok());
        assert!(parse("registry.io/a--b:1").is_ok());
        assert!(parse("-registry.io/sensor:1").is_err());
        assert!(parse(&format!("registry.io/{}:1", "a".repeat(256))).is_err());
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
