//! The syntax tree of conditions, with byte spans for every node and operator.
//!
//! The tree is what the compiler inspects for diagnostics and what the schema checks walk; the
//! evaluator never sees it, because compilation lowers it into `program::Node`s first.

use std::ops::Range;

/// A parsed condition expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// What the expression is.
    pub kind: ExpressionKind,
    /// Byte range of the whole expression in the route text.
    pub span: Range<usize>,
}

/// The forms an expression can take.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpressionKind {
    /// A literal value.
    Literal(Literal),
    /// A bare name: an application property.
    ApplicationProperty {
        /// The property name as written.
        name: String,
    },
    /// `$name`: the application property named `$name` if present, otherwise the system property
    /// `name`, or, for `$body.path`, the body query `path`.
    DollarProperty {
        /// The text after the `$`.
        name: String,
    },
    /// `{$name}`: the system property `name`, or for `{$body.path}` always the body query.
    EscapedSystemProperty {
        /// The text after the `$`.
        name: String,
        /// Byte range of the `$name` token inside the braces.
        name_span: Range<usize>,
    },
    /// A built-in function call.
    FunctionCall {
        /// The function name as written.
        name: String,
        /// Byte range of the function name.
        name_span: Range<usize>,
        /// The arguments.
        arguments: Vec<Expression>,
        /// The argument list's tokens joined without whitespace, which is how the hub passes the
        /// argument of `twin_change_includes`.
        argument_text: String,
    },
    /// A prefix operator.
    Unary {
        /// Which operator.
        operator: UnaryOperator,
        /// Byte range of the operator token.
        operator_span: Range<usize>,
        /// The operand.
        operand: Box<Expression>,
    },
    /// An infix operator.
    Binary {
        /// Which operator.
        operator: BinaryOperator,
        /// Byte range of the operator token.
        operator_span: Range<usize>,
        /// The left operand.
        left: Box<Expression>,
        /// The right operand.
        right: Box<Expression>,
    },
}

/// Literal values; all numbers are doubles, as in the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A number; literals the hub cannot parse (such as a bare exponent `e5`) become `undefined`.
    Number(f64),
    /// A string with its escapes resolved.
    String(String),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// `undefined`.
    Undefined,
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOperator {
    /// Arithmetic negation `-`.
    Negate,
    /// Logical `NOT`.
    Not,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOperator {
    /// `*`
    Multiply,
    /// `/`
    Divide,
    /// `%`
    Remainder,
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `||`, string concatenation.
    Concatenate,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `=`
    Equal,
    /// `!=` or `<>`
    NotEqual,
    /// `AND`
    And,
    /// `OR`
    Or,
    /// `??`, which yields the left operand when it is defined and the right one otherwise.
    Coalesce,
}

impl UnaryOperator {
    /// The operator's canonical spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Negate => "-",
            Self::Not => "NOT",
        }
    }
}

impl BinaryOperator {
    /// The operator's canonical spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Multiply => "*",
            Self::Divide => "/",
            Self::Remainder => "%",
            Self::Add => "+",
            Self::Subtract => "-",
            Self::Concatenate => "||",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::And => "AND",
            Self::Or => "OR",
            Self::Coalesce => "??",
        }
    }

    /// Binding strength; larger binds tighter. All binary operators are left-associative.
    pub(crate) fn precedence(self) -> u8 {
        match self {
            Self::Multiply | Self::Divide | Self::Remainder => 7,
            Self::Add | Self::Subtract | Self::Concatenate => 6,
            Self::Less | Self::LessOrEqual | Self::Greater | Self::GreaterOrEqual => 5,
            Self::Equal | Self::NotEqual => 4,
            Self::And => 3,
            Self::Or => 2,
            Self::Coalesce => 1,
        }
    }

    /// Tells whether the operator compares its operands and yields a boolean.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Less
                | Self::LessOrEqual
                | Self::Greater
                | Self::GreaterOrEqual
                | Self::Equal
                | Self::NotEqual
        )
    }
}

impl Expression {
    /// Calls `visit` on this expression and every sub-expression, parents before children.
    pub fn walk<'e>(&'e self, visit: &mut dyn FnMut(&'e Expression)) {
        visit(self);
        match &self.kind {
            ExpressionKind::FunctionCall { arguments, .. } => {
                for argument in arguments {
                    argument.walk(visit);
                }
            }
            ExpressionKind::Unary { operand, .. } => operand.walk(visit),
            ExpressionKind::Binary { left, right, .. } => {
                left.walk(visit);
                right.walk(visit);
            }
            ExpressionKind::Literal(_)
            | ExpressionKind::ApplicationProperty { .. }
            | ExpressionKind::DollarProperty { .. }
            | ExpressionKind::EscapedSystemProperty { .. } => {}
        }
    }
}
