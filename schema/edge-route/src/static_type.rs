//! The static types of condition expressions.
//!
//! The hub type-checks conditions while compiling them: every operator and built-in has typed
//! signatures, and both operands of a binary operator must have the same type. Values read from a
//! JSON body have no static type, so they get [`StaticType::Dynamic`], which is accepted wherever
//! a number, string, boolean or null is and is checked again when the message is evaluated.

/// The compile-time type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaticType {
    /// A double-precision number; `NaN` counts as undefined.
    Number,
    /// A string; application and system properties are strings that may be null or missing.
    String,
    /// A three-valued boolean.
    Bool,
    /// The `null` literal and expressions that can only be null.
    Null,
    /// The `undefined` literal and expressions that can only be undefined.
    Undefined,
    /// A value read from the message body, whose type is only known per message.
    Dynamic,
}

impl StaticType {
    /// Returns the type's name as the language documentation spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Number => "number",
            Self::String => "string",
            Self::Bool => "bool",
            Self::Null => "null",
            Self::Undefined => "undefined",
            Self::Dynamic => "body value",
        }
    }

    /// Tells whether a value of type `self` may be passed where `required` is expected, counting
    /// body values as matching any concrete type the hub can compare them with.
    pub(crate) fn matches(self, required: StaticType) -> bool {
        self == required
            || (self == Self::Dynamic && required.is_body_comparable())
            || (required == Self::Dynamic && self.is_body_comparable())
    }

    fn is_body_comparable(self) -> bool {
        matches!(self, Self::Number | Self::String | Self::Bool | Self::Null)
    }
}
