//! Runtime values and three-valued truth.
//!
//! Values borrow strings from the message, the parsed body or the compiled program, so evaluating
//! a condition allocates only when a built-in computes a new string (`lower`, `concat`, ...).

use std::borrow::Cow;
use std::cmp::Ordering;

/// The value of an expression for one message.
///
/// The static type of the expression gives `Null` its meaning: for property reads it is a
/// property whose value is null, for body reads a JSON `null`. Numbers that are `NaN` count as
/// undefined, as they do in the hub.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Value<'a> {
    /// No value: a missing property, a failed conversion, an undefined operation.
    #[default]
    Undefined,
    /// Null.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Number(f64),
    /// A string.
    Text(Cow<'a, str>),
}

/// The result of a condition: the route fires only on `True`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The condition could not be decided, for example because a property is missing.
    Undefined,
}

impl Truth {
    /// Returns the corpus spelling: `true`, `false` or `undefined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "true",
            Self::False => "false",
            Self::Undefined => "undefined",
        }
    }
}

impl From<bool> for Truth {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

impl Value<'_> {
    /// Tells whether the value is defined in the sense of `is_defined`.
    pub(crate) fn is_defined(&self) -> bool {
        match self {
            Self::Undefined => false,
            Self::Number(number) => !number.is_nan(),
            Self::Null | Self::Bool(_) | Self::Text(_) => true,
        }
    }

    /// Returns the text of a defined string value.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            _ => None,
        }
    }

    /// Returns a defined number.
    pub(crate) fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(number) if !number.is_nan() => Some(*number),
            _ => None,
        }
    }

    /// The hub's ordering of body value types, used when a body value is compared with a value of
    /// another type: bool < number < string < null. `None` means undefined.
    fn body_type_rank(&self) -> Option<u8> {
        match self {
            Self::Undefined => None,
            Self::Number(number) if number.is_nan() => None,
            Self::Bool(_) => Some(1),
            Self::Number(_) => Some(2),
            Self::Text(_) => Some(3),
            Self::Null => Some(4),
        }
    }

    /// Orders two body values the way the hub's `QueryValue.CompareTo` does; `None` when either
    /// is undefined.
    pub(crate) fn compare_as_body_values(&self, other: &Self) -> Option<Ordering> {
        let (left_rank, right_rank) = (self.body_type_rank()?, other.body_type_rank()?);
        if left_rank != right_rank {
            return Some(left_rank.cmp(&right_rank));
        }
        match (self, other) {
            (Self::Bool(left), Self::Bool(right)) => Some(left.cmp(right)),
            (Self::Number(left), Self::Number(right)) => left.partial_cmp(right),
            (Self::Text(left), Self::Text(right)) => Some(compare_ordinal(left, right)),
            _ => Some(Ordering::Equal),
        }
    }
}

/// Compares strings by UTF-16 code units, as .NET's ordinal comparison does.
pub(crate) fn compare_ordinal(left: &str, right: &str) -> Ordering {
    if left.is_ascii() && right.is_ascii() {
        return left.cmp(right);
    }
    left.encode_utf16().cmp(right.encode_utf16())
}
