//! Parameters: declarations, defaults, and `--set name=value` overrides.
//!
//! Overrides arrive as a small `.edge` source of `name = value` lines (see [`overrides_source`]),
//! so they are parsed by the same parser and their diagnostics point into the command line.

use std::collections::{BTreeMap, BTreeSet};

use super::ParsedFile;
use super::context::{Checker, Parameter};
use super::items::Definitions;
use super::reader::malformed;
use crate::diagnostic::{DiagnosticKind, LabelRole};
use crate::span::Location;
use crate::suggest::closest;
use crate::syntax::ast::{SyntaxTree, TypeExpression, TypeKind, ValueKind};

/// Turns `--set` assignments into `.edge` source text. A value for a string parameter is always
/// taken as a string, so `--set tag=1.5` means `"1.5"`; any other value that reads as a literal
/// (`3`, `true`, `"text"`, `512MiB`, `[1, 2]`) is kept as written; anything else (`1.2.3`,
/// `fast`) is taken as a string, so shell users never need escaped quotes.
pub fn overrides_source(
    assignments: &[(String, String)],
    string_parameters: &BTreeSet<String>,
) -> String {
    let mut source = String::new();
    for (name, value) in assignments {
        let trimmed = value.trim();
        let quoted_already =
            trimmed.starts_with('"') || trimmed.starts_with("r\"") || trimmed.starts_with("r#");
        let literal = if string_parameters.contains(name) {
            quoted_already
        } else {
            let tree = crate::syntax::parse(&format!("x = {trimmed}"));
            tree.errors.is_empty()
                && matches!(
                    tree.entries.as_slice(),
                    [entry] if entry.block.is_none()
                        && entry.value.as_ref().is_some_and(|value| {
                            !matches!(value.kind, ValueKind::Reference(_) | ValueKind::Call { .. })
                        })
                )
        };
        let rendered = if literal {
            trimmed.to_owned()
        } else {
            format!("{value:?}").replace("${", "\\${")
        };
        source.push_str(&format!("{name} = {rendered}\n"));
    }
    source
}

/// The parameters declared with a string type (`string`, a refinement of it, a union of string
/// literals, or an optional of those), read from the syntax alone because overrides are parsed
/// before checking.
pub fn string_parameters<'t>(trees: impl IntoIterator<Item = &'t SyntaxTree>) -> BTreeSet<String> {
    fn is_string(expression: &TypeExpression) -> bool {
        match &expression.kind {
            TypeKind::Named(key) => key.name == "string",
            TypeKind::Refined { base, .. } | TypeKind::Optional(base) => is_string(base),
            TypeKind::Union(alternatives) => alternatives
                .iter()
                .all(|alternative| matches!(alternative.kind, ValueKind::String(_))),
            _ => false,
        }
    }
    trees
        .into_iter()
        .flat_map(|tree| &tree.entries)
        .filter(|entry| {
            entry.key.name == "param" && entry.type_annotation.as_ref().is_some_and(is_string)
        })
        .filter_map(|entry| entry.label.as_ref().map(|label| label.name.clone()))
        .collect()
}

pub fn bind<'a>(
    checker: &mut Checker<'a>,
    definitions: &Definitions<'a>,
    overrides: Option<ParsedFile<'a>>,
) {
    let mut override_values = BTreeMap::new();
    if let Some(overrides) = overrides {
        for entry in &overrides.tree.entries {
            let Some(value) = entry
                .value
                .as_ref()
                .filter(|_| entry.label.is_none() && entry.block.is_none())
            else {
                malformed(checker, overrides.id, entry, "name=value");
                continue;
            };
            if !definitions.parameters.contains_key(&entry.key.name) {
                let suggestion = closest(
                    &entry.key.name,
                    definitions.parameters.keys().map(String::as_str),
                );
                checker.report(
                    DiagnosticKind::UnknownName {
                        namespace: "parameter",
                        name: entry.key.name.clone(),
                        suggestion,
                    },
                    overrides.id,
                    entry.key.span,
                );
                continue;
            }
            override_values.insert(entry.key.name.clone(), (overrides.id, value));
        }
    }
    for (name, definition) in &definitions.parameters {
        let value = override_values.get(name).copied().or_else(|| {
            definition
                .entry
                .value
                .as_ref()
                .map(|value| (definition.file, value))
        });
        checker.parameters.insert(name.clone(), Parameter { value });
    }
    for (name, definition) in &definitions.parameters {
        let Some(annotation) = &definition.entry.type_annotation else {
            continue;
        };
        let parameter_type = checker.resolve_type(definition.file, annotation);
        let Some((file, value)) = checker.parameters[name].value else {
            checker.report(
                DiagnosticKind::MissingParameterValue { name: name.clone() },
                definition.file,
                definition.name_span,
            );
            continue;
        };
        let before = checker.diagnostics.len();
        if checker.check_value(file, value, &parameter_type).is_none() {
            if file != definition.file {
                for diagnostic in &mut checker.diagnostics[before..] {
                    diagnostic.secondary.push((
                        Location::new(definition.file, annotation.span),
                        LabelRole::DeclaredHere,
                    ));
                }
            }
            if let Some(parameter) = checker.parameters.get_mut(name) {
                parameter.value = None;
            }
        }
    }
}
