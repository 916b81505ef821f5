//! Resolving type expressions and checking values against types.

use regex::Regex;
use serde_json::Value as Json;

use super::context::{Checker, describe_value};
use super::types::{BUILT_IN_TYPES, Bounds, Field, StringPattern, Type};
use crate::diagnostic::DiagnosticKind;
use crate::diagnostic::wording::{human_bytes, human_duration};
use crate::span::FileId;
use crate::suggest::closest;
use crate::syntax::ast::{Block, Refinement, TypeExpression, TypeKind, Value, ValueKind};

impl<'a> Checker<'a> {
    /// The type a type expression denotes. Errors are reported and give [`Type::Any`], so that
    /// checking continues without cascading errors.
    pub fn resolve_type(&mut self, file: FileId, expression: &'a TypeExpression) -> Type {
        match &expression.kind {
            TypeKind::Named(key) => match key.name.as_str() {
                "string" => Type::String {
                    pattern: None,
                    length: Bounds::default(),
                },
                "int" => Type::Integer(Bounds::default()),
                "float" => Type::Float(Bounds::default()),
                "bool" => Type::Bool,
                "size" => Type::Size(Bounds::default()),
                "duration" => Type::Duration(Bounds::default()),
                "any" => Type::Any,
                "binary" => Type::Binary,
                name => match self.schema_type(name) {
                    Some(schema) => schema,
                    None => {
                        let candidates: Vec<String> = BUILT_IN_TYPES
                            .iter()
                            .map(|name| name.to_string())
                            .chain(self.schema_names())
                            .collect();
                        let suggestion = closest(name, candidates.iter().map(String::as_str));
                        self.report(
                            DiagnosticKind::UnknownName {
                                namespace: "type",
                                name: name.to_owned(),
                                suggestion,
                            },
                            file,
                            key.span,
                        );
                        Type::Any
                    }
                },
            },
            TypeKind::List(element) => Type::List(Box::new(self.resolve_type(file, element))),
            TypeKind::Object(block) => Type::Object(self.fields(file, block)),
            TypeKind::Union(alternatives) => {
                let mut options = Vec::new();
                for alternative in alternatives {
                    match &alternative.kind {
                        ValueKind::String(_)
                        | ValueKind::Integer(_)
                        | ValueKind::Float(_)
                        | ValueKind::Bool(_) => {
                            if let Some(json) = self.json(file, alternative) {
                                options.push(json);
                            }
                        }
                        _ => {
                            self.report(
                                DiagnosticKind::TypeMismatch {
                                    expected: "a literal in a union".into(),
                                    found: describe_value(alternative),
                                },
                                file,
                                alternative.span,
                            );
                        }
                    }
                }
                Type::OneOf(options)
            }
            TypeKind::Refined { base, refinements } => {
                let base = self.resolve_type(file, base);
                self.refine(file, base, refinements)
            }
            TypeKind::Optional(inner) => Type::Optional(Box::new(self.resolve_type(file, inner))),
            TypeKind::Error => Type::Any,
        }
    }

    /// The fields of an object type: `name: type [= default]`, or `name = value` for a field whose
    /// type is whatever its value is.
    pub fn fields(&mut self, file: FileId, block: &'a Block) -> Vec<Field> {
        let mut fields: Vec<Field> = Vec::new();
        let mut sites = std::collections::BTreeMap::new();
        for entry in &block.entries {
            if let Some(first) = sites.insert(entry.key.name.as_str(), entry.key.span) {
                self.report_duplicate(
                    "field",
                    &entry.key.name,
                    crate::span::Location::new(file, entry.key.span),
                    crate::span::Location::new(file, first),
                );
                continue;
            }
            let field = match (
                &entry.label,
                &entry.type_annotation,
                &entry.value,
                &entry.block,
            ) {
                (None, Some(annotation), value, None) => {
                    let field_type = self.resolve_type(file, annotation);
                    let default = value
                        .as_ref()
                        .and_then(|value| self.check_value(file, value, &field_type));
                    Field {
                        name: entry.key.name.clone(),
                        field_type,
                        default,
                    }
                }
                (None, None, Some(value), None) => {
                    let default = self.json(file, value);
                    Field {
                        name: entry.key.name.clone(),
                        field_type: Type::Any,
                        default,
                    }
                }
                (None, None, None, Some(nested)) => Field {
                    name: entry.key.name.clone(),
                    field_type: Type::Object(self.fields(file, nested)),
                    default: None,
                },
                _ => {
                    super::reader::malformed(self, file, entry, "name: type = default");
                    continue;
                }
            };
            fields.push(field);
        }
        fields
    }

    fn refine(&mut self, file: FileId, base: Type, refinements: &'a [Refinement]) -> Type {
        let mut refined = base;
        for refinement in refinements {
            let name = refinement.name.as_ref().map(|key| key.name.as_str());
            refined = match (name, refined) {
                (None, Type::Integer(_)) => Type::Integer(self.bounds(file, &refinement.value)),
                (None, Type::Float(_)) => Type::Float(self.bounds(file, &refinement.value)),
                (None, Type::Size(_)) => Type::Size(self.bounds(file, &refinement.value)),
                (None, Type::Duration(_)) => Type::Duration(self.bounds(file, &refinement.value)),
                (Some("length"), Type::String { pattern, .. }) => Type::String {
                    pattern,
                    length: self.bounds(file, &refinement.value),
                },
                (Some("pattern"), Type::String { length, .. }) => {
                    let pattern = self.pattern(file, &refinement.value);
                    Type::String { pattern, length }
                }
                (_, other) => {
                    self.report(
                        DiagnosticKind::TypeMismatch {
                            expected: refinement_expectation(&other).into(),
                            found: "this refinement".into(),
                        },
                        file,
                        refinement.span,
                    );
                    other
                }
            };
        }
        refined
    }

    fn bounds(&mut self, file: FileId, value: &'a Value) -> Bounds {
        let ValueKind::Range { low, high } = &value.kind else {
            self.report(
                DiagnosticKind::TypeMismatch {
                    expected: "a range such as `1..10`".into(),
                    found: describe_value(value),
                },
                file,
                value.span,
            );
            return Bounds::default();
        };
        let bound = |bound: &Option<Box<Value>>| {
            bound.as_ref().and_then(|bound| match bound.kind {
                ValueKind::Integer(integer) => Some(integer as f64),
                ValueKind::Float(float) => Some(float),
                ValueKind::Size(bytes) => Some(bytes as f64),
                ValueKind::Duration(seconds) => Some(seconds as f64),
                _ => None,
            })
        };
        let bounds = Bounds {
            low: bound(low),
            high: bound(high),
        };
        if let (Some(low), Some(high)) = (bounds.low, bounds.high)
            && low > high
        {
            self.report(
                DiagnosticKind::OutOfRange {
                    what: "range".into(),
                    value: format!("{low}..{high}"),
                    bounds: "written low..high".into(),
                },
                file,
                value.span,
            );
            // An inverted range would also reject every value checked against it.
            return Bounds::default();
        }
        bounds
    }

    fn pattern(&mut self, file: FileId, value: &'a Value) -> Option<StringPattern> {
        let source = self.string(file, value)?;
        match Regex::new(&source) {
            Ok(regex) => Some(StringPattern { source, regex }),
            Err(error) => {
                let reason = error
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                self.report(
                    DiagnosticKind::InvalidPattern {
                        pattern: source,
                        reason,
                    },
                    file,
                    value.span,
                );
                None
            }
        }
    }

    /// Checks `value` against `expected` and converts it to JSON.
    pub fn check_value(&mut self, file: FileId, value: &'a Value, expected: &Type) -> Option<Json> {
        let (file, value) = self.resolve(file, value)?;
        let mismatch = |checker: &mut Self| {
            checker.report(
                DiagnosticKind::TypeMismatch {
                    expected: expected.describe(),
                    found: describe_value(value),
                },
                file,
                value.span,
            );
            None
        };
        match (expected, &value.kind) {
            (_, ValueKind::Error) => None,
            (Type::Optional(_), ValueKind::Null) => Some(Json::Null),
            (Type::Optional(inner), _) => self.check_value(file, value, inner),
            (Type::Any, _) => self.json(file, value),
            (Type::String { pattern, length }, ValueKind::String(_)) => {
                let text = self.string(file, value)?;
                let characters = text.chars().count() as f64;
                if !length.contains(characters) {
                    self.out_of_range(file, value, "string length", characters, length);
                    return None;
                }
                if let Some(pattern) = pattern
                    && !pattern.regex.is_match(&text)
                {
                    self.report(
                        DiagnosticKind::ConstraintViolation {
                            value: format!("{text:?}"),
                            constraint: format!("the pattern `{}`", pattern.source),
                        },
                        file,
                        value.span,
                    );
                    return None;
                }
                Some(Json::String(text))
            }
            (Type::Integer(bounds), ValueKind::Integer(integer)) => self
                .within(file, value, *integer as f64, bounds)
                .then(|| Json::from(*integer)),
            (Type::Float(bounds), ValueKind::Integer(_) | ValueKind::Float(_)) => {
                let number = self.number(file, value)?;
                self.within(file, value, number, bounds)
                    .then(|| self.json(file, value))
                    .flatten()
            }
            (Type::Bool, ValueKind::Bool(boolean)) => Some(Json::Bool(*boolean)),
            (Type::Size(bounds), ValueKind::Size(bytes))
            | (Type::Duration(bounds), ValueKind::Duration(bytes)) => self
                .within(file, value, *bytes as f64, bounds)
                .then(|| Json::from(*bytes)),
            (Type::List(element), ValueKind::List(items)) => {
                let converted: Vec<Option<Json>> = items
                    .iter()
                    .map(|item| self.check_value(file, item, element))
                    .collect();
                converted
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Json::Array)
            }
            (Type::Object(fields), ValueKind::Object(block)) => {
                self.check_object(file, block, fields)
            }
            (
                Type::OneOf(options),
                ValueKind::String(_)
                | ValueKind::Integer(_)
                | ValueKind::Float(_)
                | ValueKind::Bool(_),
            ) => {
                let json = self.json(file, value)?;
                if options.contains(&json) {
                    return Some(json);
                }
                self.report(
                    DiagnosticKind::ConstraintViolation {
                        value: json.to_string(),
                        constraint: expected.describe(),
                    },
                    file,
                    value.span,
                );
                None
            }
            _ => mismatch(self),
        }
    }

    fn check_object(&mut self, file: FileId, block: &'a Block, fields: &[Field]) -> Option<Json> {
        let mut object = serde_json::Map::new();
        let mut complete = true;
        for entry in &block.entries {
            let Some(field) = fields.iter().find(|field| field.name == entry.key.name) else {
                let suggestion = closest(
                    &entry.key.name,
                    fields.iter().map(|field| field.name.as_str()),
                );
                self.report(
                    DiagnosticKind::UnknownAttribute {
                        block: "this object",
                        name: entry.key.name.clone(),
                        suggestion,
                    },
                    file,
                    entry.key.span,
                );
                complete = false;
                continue;
            };
            let converted = match (&entry.value, &entry.block) {
                (Some(value), None) => self.check_value(file, value, &field.field_type),
                (None, Some(nested)) => match &field.field_type {
                    Type::Object(nested_fields) => self.check_object(file, nested, nested_fields),
                    _ => self.json_object(file, nested),
                },
                _ => {
                    super::reader::malformed(self, file, entry, "name = value");
                    None
                }
            };
            match converted {
                Some(json) => {
                    object.insert(entry.key.name.clone(), json);
                }
                None => complete = false,
            }
        }
        for field in fields {
            if !object.contains_key(&field.name)
                && let Some(default) = &field.default
            {
                object.insert(field.name.clone(), default.clone());
            }
        }
        complete.then_some(Json::Object(object))
    }

    fn within(&mut self, file: FileId, value: &Value, number: f64, bounds: &Bounds) -> bool {
        if bounds.contains(number) {
            return true;
        }
        self.out_of_range(file, value, "value", number, bounds);
        false
    }

    fn out_of_range(
        &mut self,
        file: FileId,
        value: &Value,
        what: &str,
        number: f64,
        bounds: &Bounds,
    ) {
        // Sizes and durations read back in the units they are written in, not raw numbers.
        let render = |quantity: f64| match value.kind {
            ValueKind::Size(_) => human_bytes(quantity as u64),
            ValueKind::Duration(_) => human_duration(quantity as u64),
            _ => quantity.to_string(),
        };
        self.report(
            DiagnosticKind::OutOfRange {
                what: what.to_owned(),
                value: render(number),
                bounds: bounds.describe(render),
            },
            file,
            value.span,
        );
    }
}

fn refinement_expectation(base: &Type) -> &'static str {
    match base {
        Type::String { .. } => "`pattern = \"…\"` or `length = low..high`",
        Type::Integer(_) | Type::Float(_) | Type::Size(_) | Type::Duration(_) => {
            "a range such as `1..10`"
        }
        _ => "no refinement: only strings, numbers, sizes and durations can be refined",
    }
}
