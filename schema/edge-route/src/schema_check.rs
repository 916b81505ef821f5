//! Compile-time checks of a route against the declared body schema of its source.
//!
//! The hub cannot know what a module's messages look like; edgec can, because manifests declare
//! output schemas. These checks catch typos in `$body` paths and comparisons that can never be
//! true, which on the device would silently drop messages.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::body_path::{BodyPath, BodyPathStep};
use crate::error::{RouteError, RouteErrorKind};
use crate::route_syntax::ParsedRoute;
use crate::suggest::closest_name;
use crate::syntax::{Expression, ExpressionKind, Literal};

/// The declared shape of a message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySchema {
    /// An object with exactly these fields.
    Object(BTreeMap<String, BodySchema>),
    /// An array whose elements have this shape.
    Array(Box<BodySchema>),
    /// A number.
    Number,
    /// A string.
    String,
    /// A boolean.
    Bool,
    /// Anything; paths below it are not checked.
    Any,
}

/// What is known about the messages of a route's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSchema {
    /// Whether the source's messages are JSON at all.
    pub is_json: bool,
    /// The body's shape, when declared.
    pub body: Option<BodySchema>,
}

impl BodySchema {
    fn type_name(&self) -> &'static str {
        match self {
            Self::Object(_) => "object",
            Self::Array(_) => "array",
            Self::Number => "number",
            Self::String => "string",
            Self::Bool => "bool",
            Self::Any => "any",
        }
    }
}

/// Checks a parsed route against its source's schema; with no schema only nothing can be said.
pub fn check_route(route: &ParsedRoute, schema: Option<&SourceSchema>) -> Vec<RouteError> {
    let (Some(schema), Some(condition)) = (schema, route.condition.as_ref()) else {
        return Vec::new();
    };
    let mut diagnostics = Vec::new();
    condition.walk(&mut |expression| {
        if let Some((path_text, path)) = body_reference(expression) {
            if schema.is_json {
                if let (Some(body), Some(path)) = (&schema.body, &path)
                    && let Err(error) = resolve(body, path, &path_text, &expression.span)
                {
                    diagnostics.push(error);
                }
            } else {
                diagnostics.push(RouteError::warning(
                    RouteErrorKind::BodyQueryOnNonJsonSource { path: path_text },
                    expression.span.clone(),
                ));
            }
        }
        if let ExpressionKind::Binary {
            operator,
            operator_span,
            left,
            right,
        } = &expression.kind
            && operator.is_comparison()
        {
            check_comparison(schema, operator_span, left, right, &mut diagnostics);
            check_comparison(schema, operator_span, right, left, &mut diagnostics);
        }
    });
    diagnostics
}

/// Returns the body path text and parsed path if the expression reads the body.
fn body_reference(expression: &Expression) -> Option<(String, Option<BodyPath>)> {
    let name = match &expression.kind {
        ExpressionKind::DollarProperty { name }
        | ExpressionKind::EscapedSystemProperty { name, .. } => name,
        _ => return None,
    };
    let prefix = name.get(..5)?;
    prefix
        .eq_ignore_ascii_case("body.")
        .then(|| (name[5..].to_owned(), BodyPath::parse(&name[5..])))
}

fn resolve<'s>(
    schema: &'s BodySchema,
    path: &BodyPath,
    path_text: &str,
    span: &Range<usize>,
) -> Result<&'s BodySchema, RouteError> {
    let mut current = schema;
    let mut walked = String::new();
    for step in path.steps() {
        current = match (step, current) {
            (_, BodySchema::Any) => return Ok(current),
            (BodyPathStep::Member(name), BodySchema::Object(fields)) => {
                if !walked.is_empty() {
                    walked.push('.');
                }
                walked.push_str(name);
                match fields.get(&**name) {
                    Some(field) => field,
                    None => {
                        let candidates: Vec<String> = fields.keys().cloned().collect();
                        let closest = closest_name(name, candidates.iter().map(String::as_str))
                            .map(str::to_owned);
                        return Err(RouteError::error(
                            RouteErrorKind::UnknownBodyField {
                                path: walked,
                                field: name.to_string(),
                                candidates,
                                closest,
                            },
                            span.clone(),
                        ));
                    }
                }
            }
            (BodyPathStep::Element(index), BodySchema::Array(element)) => {
                walked.push_str(&format!("[{index}]"));
                element
            }
            (_, other) => {
                return Err(RouteError::error(
                    RouteErrorKind::BodyPathShapeMismatch {
                        path: if walked.is_empty() {
                            path_text.to_owned()
                        } else {
                            walked
                        },
                        found: other.type_name(),
                    },
                    span.clone(),
                ));
            }
        };
    }
    Ok(current)
}

/// The static kind of an operand that matters for mixed-type comparisons.
fn literal_kind(expression: &Expression) -> Option<&'static str> {
    match &expression.kind {
        ExpressionKind::Literal(Literal::Number(_)) => Some("number"),
        ExpressionKind::Literal(Literal::String(_)) => Some("string"),
        ExpressionKind::ApplicationProperty { .. } => Some("application property"),
        ExpressionKind::DollarProperty { name }
            if !name.to_ascii_lowercase().starts_with("body.") =>
        {
            Some("application property")
        }
        _ => None,
    }
}

fn check_comparison(
    schema: &SourceSchema,
    operator_span: &Range<usize>,
    body_side: &Expression,
    other_side: &Expression,
    diagnostics: &mut Vec<RouteError>,
) {
    let (Some(body), Some((path_text, Some(path)))) = (&schema.body, body_reference(body_side))
    else {
        return;
    };
    let Ok(field) = resolve(body, &path, &path_text, &body_side.span) else {
        return;
    };
    let other = literal_kind(other_side);
    match (field, other) {
        (BodySchema::Number, Some("string")) | (BodySchema::String, Some("number")) => {
            diagnostics.push(
                RouteError::error(
                    RouteErrorKind::MixedTypeBodyComparison {
                        path: path_text,
                        field_type: field.type_name(),
                        other_type: other.unwrap_or("string"),
                    },
                    operator_span.clone(),
                )
                .with_secondary_span(other_side.span.clone()),
            );
        }
        (BodySchema::Number, Some("application property")) => {
            let property = match &other_side.kind {
                ExpressionKind::ApplicationProperty { name } => name.clone(),
                ExpressionKind::DollarProperty { name } => format!("${name}"),
                _ => String::new(),
            };
            diagnostics.push(
                RouteError::warning(
                    RouteErrorKind::NumberComparedWithApplicationProperty { property },
                    other_side.span.clone(),
                )
                .with_secondary_span(body_side.span.clone()),
            );
        }
        _ => {}
    }
}
