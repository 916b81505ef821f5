//! The checker's shared state and the typed reading of values.
//!
//! Values in the syntax tree may refer to parameters (`threshold`, `"${tag}"`); every typed read
//! goes through [`Checker::resolve`] so parameters are substituted in one place.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::types::{Bounds, Type};
use crate::diagnostic::{Diagnostic, DiagnosticKind, LabelRole};
use crate::span::{FileId, Location, Span};
use crate::suggest::closest;
use crate::syntax::ast::{Block, StringPart, Value, ValueKind};

/// A declared parameter and the value it takes (its default or a `--set` override).
#[derive(Debug, Clone)]
pub struct Parameter<'a> {
    pub value: Option<(FileId, &'a Value)>,
}

pub struct Checker<'a> {
    pub diagnostics: Vec<Diagnostic>,
    pub parameters: BTreeMap<String, Parameter<'a>>,
    pub schema_definitions: BTreeMap<String, (FileId, &'a Block)>,
    resolved_schemas: BTreeMap<String, Type>,
    schemas_being_resolved: BTreeSet<String>,
}

impl<'a> Checker<'a> {
    pub fn new() -> Self {
        Checker {
            diagnostics: Vec::new(),
            parameters: BTreeMap::new(),
            schema_definitions: BTreeMap::new(),
            resolved_schemas: BTreeMap::new(),
            schemas_being_resolved: BTreeSet::new(),
        }
    }

    /// The type of the message schema `name`, resolved once. A schema that refers to itself is
    /// treated as `any` where it recurs, since JSON bodies can nest without bound.
    pub fn schema_type(&mut self, name: &str) -> Option<Type> {
        if let Some(resolved) = self.resolved_schemas.get(name) {
            return Some(resolved.clone());
        }
        let (file, block) = *self.schema_definitions.get(name)?;
        if !self.schemas_being_resolved.insert(name.to_owned()) {
            return Some(Type::Any);
        }
        let resolved = Type::Object(self.fields(file, block));
        self.schemas_being_resolved.remove(name);
        self.resolved_schemas
            .insert(name.to_owned(), resolved.clone());
        Some(resolved)
    }

    pub fn schema_names(&self) -> Vec<String> {
        self.schema_definitions.keys().cloned().collect()
    }

    pub fn report(&mut self, kind: DiagnosticKind, file: FileId, span: Span) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(kind, Location::new(file, span)));
        self.diagnostics
            .last_mut()
            .expect("a diagnostic was just pushed")
    }

    pub fn report_duplicate(
        &mut self,
        what: &'static str,
        name: &str,
        again: Location,
        first: Location,
    ) {
        self.diagnostics.push(
            Diagnostic::new(
                DiagnosticKind::Duplicate {
                    what,
                    name: name.to_owned(),
                },
                again,
            )
            .with_label(first, LabelRole::FirstDefinition),
        );
    }

    /// Follows a reference to a parameter to the parameter's value. Other values are returned as
    /// they are. An unknown name is reported and yields `None`.
    pub fn resolve(&mut self, file: FileId, value: &'a Value) -> Option<(FileId, &'a Value)> {
        let ValueKind::Reference(key) = &value.kind else {
            return Some((file, value));
        };
        match self.parameters.get(&key.name) {
            Some(Parameter {
                value: Some(resolved),
                ..
            }) => Some(*resolved),
            Some(Parameter { value: None, .. }) => None,
            None => {
                let suggestion = closest(&key.name, self.parameters.keys().map(String::as_str));
                self.report(
                    DiagnosticKind::UnknownName {
                        namespace: "parameter",
                        name: key.name.clone(),
                        suggestion,
                    },
                    file,
                    key.span,
                );
                None
            }
        }
    }

    /// Reports a value of the wrong kind. A value that did not parse was reported as a syntax
    /// error already, so it is not reported again as "found an invalid value".
    fn mismatch(&mut self, file: FileId, value: &Value, expected: impl Into<String>) {
        if matches!(value.kind, ValueKind::Error) {
            return;
        }
        let found = describe_value(value);
        self.report(
            DiagnosticKind::TypeMismatch {
                expected: expected.into(),
                found,
            },
            file,
            value.span,
        );
    }

    /// A string, with `${…}` interpolations substituted.
    pub fn string(&mut self, file: FileId, value: &'a Value) -> Option<String> {
        let (file, value) = self.resolve(file, value)?;
        let ValueKind::String(literal) = &value.kind else {
            self.mismatch(file, value, "a string");
            return None;
        };
        let mut text = String::new();
        for part in &literal.parts {
            match part {
                StringPart::Text(part) => text.push_str(&part.text),
                StringPart::Interpolation(key) => {
                    let reference = Value {
                        kind: ValueKind::Reference(key.clone()),
                        span: key.span,
                    };
                    // The reference is rebuilt from the key, so it cannot borrow from the tree;
                    // resolve it by name here instead.
                    let parameter = self.parameters.get(&key.name).cloned();
                    match parameter {
                        Some(Parameter {
                            value: Some((parameter_file, parameter_value)),
                            ..
                        }) => {
                            text.push_str(
                                &self.interpolated_text(parameter_file, parameter_value)?,
                            );
                        }
                        Some(Parameter { value: None, .. }) => return None,
                        None => {
                            let suggestion =
                                closest(&key.name, self.parameters.keys().map(String::as_str));
                            self.report(
                                DiagnosticKind::UnknownName {
                                    namespace: "parameter",
                                    name: key.name.clone(),
                                    suggestion,
                                },
                                file,
                                reference.span,
                            );
                            return None;
                        }
                    }
                }
            }
        }
        Some(text)
    }

    /// The text a parameter contributes to an interpolation.
    fn interpolated_text(&mut self, file: FileId, value: &'a Value) -> Option<String> {
        match &value.kind {
            ValueKind::String(_) => self.string(file, value),
            ValueKind::Integer(integer) => Some(integer.to_string()),
            ValueKind::Float(float) => Some(float.to_string()),
            ValueKind::Bool(boolean) => Some(boolean.to_string()),
            _ => {
                self.mismatch(file, value, "a string, number or boolean to interpolate");
                None
            }
        }
    }

    /// A whole number within `bounds`; `what` names it in range errors.
    pub fn integer(
        &mut self,
        file: FileId,
        value: &'a Value,
        what: &str,
        bounds: Bounds,
    ) -> Option<u64> {
        let (file, value) = self.resolve(file, value)?;
        let ValueKind::Integer(integer) = value.kind else {
            self.mismatch(file, value, "an integer");
            return None;
        };
        let lowest = bounds.low.unwrap_or(0.0);
        if !bounds.contains(integer as f64) || (integer as f64) < lowest {
            let bounds = Bounds {
                low: Some(lowest),
                high: bounds.high,
            };
            self.report(
                DiagnosticKind::OutOfRange {
                    what: what.to_owned(),
                    value: integer.to_string(),
                    bounds: bounds.describe(|bound| format!("{bound}")),
                },
                file,
                value.span,
            );
            return None;
        }
        Some(integer as u64)
    }

    /// A scalar of one kind, after parameter substitution; anything else is a type mismatch
    /// described as `expected`.
    fn scalar<T>(
        &mut self,
        file: FileId,
        value: &'a Value,
        expected: &str,
        extract: impl Fn(&ValueKind) -> Option<T>,
    ) -> Option<T> {
        let (file, value) = self.resolve(file, value)?;
        let scalar = extract(&value.kind);
        if scalar.is_none() {
            self.mismatch(file, value, expected);
        }
        scalar
    }

    /// A number, written as an integer or a float.
    pub fn number(&mut self, file: FileId, value: &'a Value) -> Option<f64> {
        self.scalar(file, value, "a number", |kind| match *kind {
            ValueKind::Integer(integer) => Some(integer as f64),
            ValueKind::Float(float) => Some(float),
            _ => None,
        })
    }

    pub fn size(&mut self, file: FileId, value: &'a Value) -> Option<u64> {
        self.scalar(file, value, "a size such as `512MiB`", |kind| match *kind {
            ValueKind::Size(bytes) => Some(bytes),
            _ => None,
        })
    }

    pub fn duration(&mut self, file: FileId, value: &'a Value) -> Option<u64> {
        self.scalar(
            file,
            value,
            "a duration such as `30s`",
            |kind| match *kind {
                ValueKind::Duration(seconds) => Some(seconds),
                _ => None,
            },
        )
    }

    /// One of `allowed`, written bare (`restart = always`) or as a string or parameter.
    pub fn keyword(
        &mut self,
        file: FileId,
        value: &'a Value,
        what: &'static str,
        allowed: &'static [&'static str],
    ) -> Option<&'static str> {
        let (found, file, span) = match &value.kind {
            ValueKind::Reference(key) if allowed.contains(&key.name.as_str()) => {
                (key.name.clone(), file, value.span)
            }
            ValueKind::Reference(key) if !self.parameters.contains_key(&key.name) => {
                (key.name.clone(), file, value.span)
            }
            _ => {
                let (resolved_file, resolved) = self.resolve(file, value)?;
                match &resolved.kind {
                    ValueKind::String(_) => (
                        self.string(resolved_file, resolved)?,
                        resolved_file,
                        resolved.span,
                    ),
                    _ => {
                        self.mismatch(resolved_file, resolved, format!("a {what}"));
                        return None;
                    }
                }
            }
        };
        if let Some(keyword) = allowed.iter().find(|keyword| **keyword == found) {
            return Some(keyword);
        }
        let suggestion = closest(&found, allowed.iter().copied());
        self.report(
            DiagnosticKind::InvalidKeyword {
                what,
                found,
                allowed,
                suggestion,
            },
            file,
            span,
        );
        None
    }

    /// A list of bare names (`[sensor, filter]`) with their locations.
    pub fn names(&mut self, file: FileId, value: &'a Value) -> Option<Vec<(String, Location)>> {
        let ValueKind::List(elements) = &value.kind else {
            self.mismatch(file, value, "a list of names");
            return None;
        };
        let mut names = Vec::new();
        for element in elements {
            match &element.kind {
                ValueKind::Reference(key) => {
                    names.push((key.name.clone(), Location::new(file, key.span)))
                }
                ValueKind::String(literal) if literal.as_plain_text().is_some() => {
                    names.push((
                        literal.as_plain_text().unwrap_or_default().to_owned(),
                        Location::new(file, element.span),
                    ));
                }
                _ => self.mismatch(file, element, "a name"),
            }
        }
        Some(names)
    }

    /// Any value as JSON: sizes become bytes, durations seconds; parameters are substituted.
    pub fn json(&mut self, file: FileId, value: &'a Value) -> Option<Json> {
        let (file, value) = self.resolve(file, value)?;
        Some(match &value.kind {
            ValueKind::String(_) => Json::String(self.string(file, value)?),
            ValueKind::Integer(integer) => Json::from(*integer),
            ValueKind::Float(float) => serde_json::Number::from_f64(*float).map(Json::Number)?,
            ValueKind::Bool(boolean) => Json::Bool(*boolean),
            ValueKind::Null => Json::Null,
            ValueKind::Size(bytes) => Json::from(*bytes),
            ValueKind::Duration(seconds) => Json::from(*seconds),
            ValueKind::List(elements) => {
                let mut array = Vec::with_capacity(elements.len());
                let mut complete = true;
                for element in elements {
                    match self.json(file, element) {
                        Some(converted) => array.push(converted),
                        None => complete = false,
                    }
                }
                complete.then_some(Json::Array(array))?
            }
            ValueKind::Object(block) => self.json_object(file, block)?,
            ValueKind::Reference(_) | ValueKind::Call { .. } | ValueKind::Range { .. } => {
                self.mismatch(file, value, "a JSON value");
                return None;
            }
            ValueKind::Error => return None,
        })
    }

    /// An object written as `{ key = value … }`. A nested `name { … }` block means the same as
    /// `name = { … }`, so Docker create options can be written either way.
    pub fn json_object(&mut self, file: FileId, block: &'a Block) -> Option<Json> {
        let mut object = serde_json::Map::new();
        let mut first_sites: BTreeMap<&str, Span> = BTreeMap::new();
        let mut complete = true;
        for entry in &block.entries {
            let converted = match (
                &entry.label,
                &entry.type_annotation,
                &entry.value,
                &entry.block,
            ) {
                (None, None, Some(value), None) => self.json(file, value),
                (None, None, None, Some(nested)) => self.json_object(file, nested),
                _ => {
                    self.report(
                        DiagnosticKind::MalformedEntry {
                            entry: entry.key.name.clone(),
                            expected_form: "name = value",
                        },
                        file,
                        entry.span,
                    );
                    None
                }
            };
            if let Some(first) = first_sites.insert(&entry.key.name, entry.key.span) {
                self.report_duplicate(
                    "key",
                    &entry.key.name,
                    Location::new(file, entry.key.span),
                    Location::new(file, first),
                );
                complete = false;
            }
            match converted {
                Some(converted) => {
                    object.insert(entry.key.name.clone(), converted);
                }
                None => complete = false,
            }
        }
        complete.then_some(Json::Object(object))
    }
}

/// How a value reads in "found …".
pub fn describe_value(value: &Value) -> String {
    match &value.kind {
        ValueKind::String(_) => "a string".into(),
        ValueKind::Integer(integer) => format!("the integer {integer}"),
        ValueKind::Float(float) => format!("the number {float}"),
        ValueKind::Bool(boolean) => format!("`{boolean}`"),
        ValueKind::Null => "`null`".into(),
        ValueKind::Size(_) => "a size".into(),
        ValueKind::Duration(_) => "a duration".into(),
        ValueKind::List(_) => "a list".into(),
        ValueKind::Object(_) => "an object".into(),
        ValueKind::Reference(key) => format!("the name `{}`", key.name),
        ValueKind::Call { function, .. } => format!("a call of `{}`", function.name),
        ValueKind::Range { .. } => "a range".into(),
        ValueKind::Error => "an invalid value".into(),
    }
}
