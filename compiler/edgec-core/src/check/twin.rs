//! Module twins: typed desired properties with defaults, and IoT Hub's twin limits.

use serde_json::Value as Json;

use super::context::Checker;
use super::naming::twin_key_problem;
use super::types::{Field, Type};
use crate::diagnostic::DiagnosticKind;
use crate::span::{FileId, Span};
use crate::syntax::ast::{Block, ValueKind};

/// IoT Hub's limit on the nesting of desired properties.
pub const MAXIMUM_TWIN_DEPTH: usize = 10;
/// IoT Hub's limit on the size of a module's desired properties.
pub const MAXIMUM_TWIN_BYTES: usize = 32 * 1024;

/// Checks a `twin { … }` block and returns the desired properties, defaults applied.
pub fn desired_properties<'a>(
    checker: &mut Checker<'a>,
    module: &str,
    file: FileId,
    block: &'a Block,
) -> serde_json::Map<String, Json> {
    check_keys(checker, file, block);
    let fields = checker.fields(file, block);
    let desired = defaults(&fields);
    let depth = depth(&Json::Object(desired.clone()));
    if depth > MAXIMUM_TWIN_DEPTH {
        checker.report(
            DiagnosticKind::TwinTooDeep {
                module: module.to_owned(),
                depth,
                limit: MAXIMUM_TWIN_DEPTH,
            },
            file,
            opening(block),
        );
    }
    let size = serde_json::to_vec(&desired).map_or(0, |bytes| bytes.len());
    if size > MAXIMUM_TWIN_BYTES {
        checker.report(
            DiagnosticKind::TwinTooLarge {
                module: module.to_owned(),
                size,
                limit: MAXIMUM_TWIN_BYTES,
            },
            file,
            opening(block),
        );
    }
    desired
}

fn opening(block: &Block) -> Span {
    Span {
        start: block.span.start,
        end: block.span.start + 1,
    }
}

/// The desired properties the defaults give: a field's own default, or for an object field
/// without one, the defaults of its fields.
fn defaults(fields: &[Field]) -> serde_json::Map<String, Json> {
    let mut object = serde_json::Map::new();
    for field in fields {
        let value = match (&field.default, &field.field_type) {
            (Some(default), _) => Some(default.clone()),
            (None, Type::Object(nested)) => Some(Json::Object(defaults(nested)))
                .filter(|value| value.as_object().is_some_and(|map| !map.is_empty())),
            (None, _) => None,
        };
        if let Some(value) = value {
            object.insert(field.name.clone(), value);
        }
    }
    object
}

/// Nesting depth of objects: `{"a": 1}` is 1, `{"a": {"b": 1}}` is 2. Arrays do not add a level,
/// matching how IoT Hub counts.
fn depth(value: &Json) -> usize {
    match value {
        Json::Object(object) => 1 + object.values().map(depth).max().unwrap_or(0),
        Json::Array(items) => items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks every property name, including those inside object values, at its own span.
fn check_keys(checker: &mut Checker<'_>, file: FileId, block: &Block) {
    for entry in &block.entries {
        if let Some(reason) = twin_key_problem(&entry.key.name) {
            checker.report(
                DiagnosticKind::InvalidTwinKey {
                    key: entry.key.name.clone(),
                    reason,
                },
                file,
                entry.key.span,
            );
        }
        if let Some(nested) = &entry.block {
            check_keys(checker, file, nested);
        }
        if let Some(crate::syntax::ast::TypeExpression {
            kind: crate::syntax::ast::TypeKind::Object(nested),
            ..
        }) = &entry.type_annotation
        {
            check_keys(checker, file, nested);
        }
        if let Some(value) = &entry.value {
            check_value_keys(checker, file, value);
        }
    }
}

fn check_value_keys(checker: &mut Checker<'_>, file: FileId, value: &crate::syntax::ast::Value) {
    match &value.kind {
        ValueKind::Object(nested) => check_keys(checker, file, nested),
        ValueKind::List(items) => {
            for item in items {
                check_value_keys(checker, file, item);
            }
        }
        _ => {}
    }
}
