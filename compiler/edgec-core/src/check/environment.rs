//! `env { NAME = value }` blocks of modules and of the system modules.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::context::Checker;
use super::naming::is_valid_environment_name;
use super::reader::malformed;
use crate::diagnostic::DiagnosticKind;
use crate::span::{FileId, Location};
use crate::syntax::ast::{Block, ValueKind};

/// The variables of an `env` block. Values may be strings, numbers or booleans; IoT Edge passes
/// them on as written, and manifests in the wild use all three.
pub fn variables<'a>(
    checker: &mut Checker<'a>,
    file: FileId,
    block: &'a Block,
) -> BTreeMap<String, Json> {
    let mut env = BTreeMap::new();
    let mut sites = BTreeMap::new();
    for entry in &block.entries {
        let Some(value) = entry
            .value
            .as_ref()
            .filter(|_| entry.label.is_none() && entry.block.is_none())
        else {
            malformed(checker, file, entry, "NAME = \"value\"");
            continue;
        };
        let name = &entry.key.name;
        if !is_valid_environment_name(name) {
            checker.report(
                DiagnosticKind::InvalidEnvironmentName { name: name.clone() },
                file,
                entry.key.span,
            );
        }
        if let Some(first) = sites.insert(name.clone(), entry.key.span) {
            checker.report_duplicate(
                "environment variable",
                name,
                Location::new(file, entry.key.span),
                Location::new(file, first),
            );
            continue;
        }
        let Some((resolved_file, resolved)) = checker.resolve(file, value) else {
            continue;
        };
        let converted = match &resolved.kind {
            ValueKind::String(_)
            | ValueKind::Integer(_)
            | ValueKind::Float(_)
            | ValueKind::Bool(_) => checker.json(resolved_file, resolved),
            _ => {
                checker.report(
                    DiagnosticKind::TypeMismatch {
                        expected: "a string, number or boolean".into(),
                        found: super::context::describe_value(resolved),
                    },
                    resolved_file,
                    resolved.span,
                );
                None
            }
        };
        if let Some(converted) = converted {
            env.insert(name.clone(), converted);
        }
    }
    env
}
