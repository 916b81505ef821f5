//! Hardware profiles.

use super::Definition;
use super::context::Checker;
use super::model::{Architecture, HardwareProfile, SecurityElement};
use super::reader::BlockReader;
use crate::diagnostic::DiagnosticKind;
use crate::span::Location;
use crate::syntax::ast::ValueKind;

const ATTRIBUTES: &[&str] = &[
    "arch",
    "cpus",
    "memory",
    "storage",
    "security",
    "compatible",
];
const SECURITY_ELEMENTS: &[&str] = &["pkcs11", "tpm", "none"];

pub fn check<'a>(
    checker: &mut Checker<'a>,
    name: &str,
    definition: &Definition<'a>,
) -> Option<HardwareProfile> {
    let block = definition.entry.block.as_ref()?;
    let file = definition.file;
    let reader = BlockReader::new(
        checker,
        file,
        "a hardware profile",
        definition.name_span,
        block,
        ATTRIBUTES,
        &[],
    );

    let architecture_value = reader.required_value(checker, "arch");
    let architecture = architecture_value
        .and_then(|value| checker.keyword(file, value, "architecture", Architecture::NAMES))
        .and_then(Architecture::parse);
    let cpus = reader.value(checker, "cpus").and_then(|value| {
        checker.integer(
            file,
            value,
            "CPU count",
            super::types::Bounds {
                low: Some(1.0),
                high: Some(1024.0),
            },
        )
    });
    let memory = reader
        .value(checker, "memory")
        .and_then(|value| checker.size(file, value));
    let storage = reader
        .value(checker, "storage")
        .and_then(|value| checker.size(file, value));
    let security = match reader.value(checker, "security") {
        None => Some(SecurityElement::None),
        Some(value) => security_element(checker, file, value),
    };
    let compatible = reader
        .required_value(checker, "compatible")
        .and_then(|value| checker.string(file, value));

    Some(HardwareProfile {
        name: name.to_owned(),
        architecture: architecture?,
        cpus,
        memory,
        storage,
        security: security?,
        compatible: compatible?,
        location: definition.location(),
        architecture_location: Location::new(file, architecture_value?.span),
        memory_location: reader.location("memory"),
    })
}

/// `pkcs11("token label")`, `tpm` or `none`.
fn security_element<'a>(
    checker: &mut Checker<'a>,
    file: crate::span::FileId,
    value: &'a crate::syntax::ast::Value,
) -> Option<SecurityElement> {
    if let ValueKind::Call {
        function,
        arguments,
    } = &value.kind
        && function.name == "pkcs11"
    {
        return match arguments.as_slice() {
            [label] => checker
                .string(file, label)
                .map(|token_label| SecurityElement::Pkcs11 { token_label }),
            _ => {
                checker.report(
                    DiagnosticKind::TypeMismatch {
                        expected: "one token label: `pkcs11(\"label\")`".into(),
                        found: format!("{} arguments", arguments.len()),
                    },
                    file,
                    value.span,
                );
                None
            }
        };
    }
    match checker.keyword(file, value, "security element", SECURITY_ELEMENTS)? {
        "tpm" => Some(SecurityElement::Tpm),
        "none" => Some(SecurityElement::None),
        _ => {
            checker.report(
                DiagnosticKind::TypeMismatch {
                    expected: "`pkcs11(\"token label\")`".into(),
                    found: "`pkcs11` without a token label".into(),
                },
                file,
                value.span,
            );
            None
        }
    }
}
