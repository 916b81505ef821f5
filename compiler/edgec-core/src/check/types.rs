//! Value types: parameters, twin properties and message schemas share one type language.

use regex::Regex;
use serde_json::Value as Json;

/// Inclusive numeric bounds from a refinement such as `int(1..3600)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bounds {
    pub low: Option<f64>,
    pub high: Option<f64>,
}

impl Bounds {
    pub fn contains(&self, value: f64) -> bool {
        self.low.is_none_or(|low| value >= low) && self.high.is_none_or(|high| value <= high)
    }

    pub fn is_unbounded(&self) -> bool {
        self.low.is_none() && self.high.is_none()
    }

    pub fn describe(&self, render: impl Fn(f64) -> String) -> String {
        match (self.low, self.high) {
            (Some(low), Some(high)) => format!("between {} and {}", render(low), render(high)),
            (Some(low), None) => format!("at least {}", render(low)),
            (None, Some(high)) => format!("at most {}", render(high)),
            (None, None) => "any value".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StringPattern {
    pub source: String,
    pub regex: Regex,
}

#[derive(Debug, Clone)]
pub enum Type {
    String {
        pattern: Option<StringPattern>,
        length: Bounds,
    },
    Integer(Bounds),
    Float(Bounds),
    Bool,
    Size(Bounds),
    Duration(Bounds),
    List(Box<Type>),
    Object(Vec<Field>),
    /// One of these JSON literals.
    OneOf(Vec<Json>),
    /// Any JSON value.
    Any,
    /// Not JSON at all (a message body of raw bytes).
    Binary,
    Optional(Box<Type>),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub field_type: Type,
    pub default: Option<Json>,
}

/// The built-in type names, for suggestions.
pub const BUILT_IN_TYPES: &[&str] = &[
    "string", "int", "float", "bool", "size", "duration", "any", "binary",
];

impl Type {
    /// How users write this type, for "expected …" messages.
    pub fn describe(&self) -> String {
        match self {
            Type::String { .. } => "a string".into(),
            Type::Integer(_) => "an integer".into(),
            Type::Float(_) => "a number".into(),
            Type::Bool => "a boolean".into(),
            Type::Size(_) => "a size such as `512MiB`".into(),
            Type::Duration(_) => "a duration such as `30s`".into(),
            Type::List(element) => format!("a list of {}", element.describe_plural()),
            Type::Object(_) => "an object".into(),
            Type::OneOf(options) => {
                format!(
                    "one of {}",
                    options
                        .iter()
                        .map(Json::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Type::Any => "any value".into(),
            Type::Binary => "raw bytes".into(),
            Type::Optional(inner) => inner.describe(),
        }
    }

    fn describe_plural(&self) -> String {
        match self {
            Type::String { .. } => "strings".into(),
            Type::Integer(_) => "integers".into(),
            Type::Float(_) => "numbers".into(),
            Type::Bool => "booleans".into(),
            other => other.describe(),
        }
    }
}
