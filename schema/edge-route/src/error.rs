//! Diagnostics as data.
//!
//! Every problem the crate can report is a [`RouteError`]: a kind with its facts, a byte span into
//! the text the caller passed, an optional secondary span and a severity. No wording lives here;
//! `describe.rs` turns errors into text so that the compiler can render them in its own style and
//! shift the spans into the `.edge` file.

use std::ops::Range;

use crate::static_type::StaticType;

/// Whether a diagnostic stops compilation or only warns about a route that cannot behave as meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The route is rejected.
    Error,
    /// The route compiles but a part of it can never be true or never applies.
    Warning,
}

/// One diagnostic about a route, a condition or a route table entry.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteError {
    /// What went wrong, with the facts needed to explain it; boxed so that results carrying a
    /// diagnostic stay small on the parser's hot path.
    pub kind: Box<RouteErrorKind>,
    /// Byte range of the offending characters in the text passed to the crate.
    pub span: Range<usize>,
    /// Byte range of a related place, such as the operand whose type is wrong.
    pub secondary_span: Option<Range<usize>>,
    /// Whether this diagnostic is an error or a warning.
    pub severity: Severity,
}

impl RouteError {
    /// Creates an error-severity diagnostic without a secondary span.
    pub fn error(kind: RouteErrorKind, span: Range<usize>) -> Self {
        Self {
            kind: Box::new(kind),
            span,
            secondary_span: None,
            severity: Severity::Error,
        }
    }

    /// Creates a warning-severity diagnostic without a secondary span.
    pub fn warning(kind: RouteErrorKind, span: Range<usize>) -> Self {
        Self {
            kind: Box::new(kind),
            span,
            secondary_span: None,
            severity: Severity::Warning,
        }
    }

    /// Attaches a secondary span pointing at a related piece of text.
    pub fn with_secondary_span(mut self, span: Range<usize>) -> Self {
        self.secondary_span = Some(span);
        self
    }

    /// Returns the stable code of this diagnostic's kind, such as `R0003`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Moves every span by `offset` bytes, for callers that embed the route text in a larger file.
    pub fn shifted(mut self, offset: usize) -> Self {
        self.span = self.span.start + offset..self.span.end + offset;
        self.secondary_span = self
            .secondary_span
            .map(|span| span.start + offset..span.end + offset);
        self
    }
}

/// The kinds of diagnostics, each with a stable code (see [`RouteErrorKind::code`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RouteErrorKind {
    /// `R0001`: a character that starts no token of the language.
    UnrecognizedCharacter {
        /// The offending character.
        character: char,
    },
    /// `R0002`: a string literal without its closing quote.
    UnterminatedString,
    /// `R0003`: a token that does not fit the grammar at this place.
    UnexpectedToken {
        /// The offending token's text.
        found: String,
        /// What the parser would have accepted instead.
        expected: Expectation,
    },
    /// `R0004`: the text ends where more was required.
    UnexpectedEndOfInput {
        /// What the parser would have accepted.
        expected: Expectation,
    },
    /// `R0005`: a `)` without a matching `(`.
    UnmatchedClosingParenthesis,
    /// `R0006`: a `(` whose `)` never comes; the span is the opening parenthesis.
    MissingClosingParenthesis,
    /// `R0007`: expressions nested deeper than the parser allows.
    NestingTooDeep {
        /// The maximum nesting depth.
        limit: usize,
    },
    /// `R0008`: text after the end of a complete route or condition.
    TrailingInput,
    /// `R0009`: a sink that is neither `$upstream` nor `BrokeredEndpoint(...)`.
    UnknownSink {
        /// The sink as written.
        name: String,
    },
    /// `R0010`: a `BrokeredEndpoint` address that is not `/modules/{module}/inputs/{input}`.
    InvalidEndpointAddress {
        /// The address as written, after unescaping.
        address: String,
    },
    /// `R0011`: a function name that is not a built-in.
    UnknownFunction {
        /// The function name as written.
        name: String,
        /// The closest built-in name, if any is close.
        closest: Option<&'static str>,
    },
    /// `R0012`: a built-in that exists but not for this route's source.
    FunctionNotAvailableForSource {
        /// The function name as written.
        name: String,
    },
    /// `R0013`: a built-in called with arguments of the wrong number or types.
    InvalidArguments {
        /// The function name as written.
        function: String,
        /// The static types of the arguments given.
        given: Vec<StaticType>,
        /// The accepted signatures, each as a list of parameter type names.
        accepted: Vec<String>,
    },
    /// `R0014`: an operator applied to operands of types it does not accept.
    InvalidOperands {
        /// The operator's canonical spelling.
        operator: &'static str,
        /// The static types of the operands.
        given: Vec<StaticType>,
        /// The types the operator accepts for these operands.
        expected: Vec<StaticType>,
    },
    /// `R0015`: a `$body` query that is not a supported JSON path (`a.b[0].c`).
    InvalidBodyQuery {
        /// The path after `$body.`.
        query: String,
    },
    /// `R0016`: a `twin_change_includes` argument that is not a supported path.
    InvalidTwinChangePath {
        /// The argument text.
        path: String,
    },
    /// `R0017`: a route table entry whose priority is outside 0–9.
    InvalidPriority {
        /// The priority given.
        priority: u8,
    },
    /// `R0018`: two route table entries with the same name.
    DuplicateRouteName {
        /// The repeated name.
        name: String,
    },
    /// `R0101`: a `$body` path naming a field the body schema does not declare.
    UnknownBodyField {
        /// The path up to and including the unknown field.
        path: String,
        /// The unknown field.
        field: String,
        /// The fields declared at that level of the schema.
        candidates: Vec<String>,
        /// The candidate closest to the unknown field, when one is close enough.
        closest: Option<String>,
    },
    /// `R0102`: a `$body` path that indexes a non-array or selects a field of a non-object.
    BodyPathShapeMismatch {
        /// The path up to the offending step.
        path: String,
        /// The schema's type at that step.
        found: &'static str,
    },
    /// `R0103`: a numeric body field compared with a string, or a string field with a number.
    MixedTypeBodyComparison {
        /// The body path.
        path: String,
        /// The field's declared type.
        field_type: &'static str,
        /// The other operand's type.
        other_type: &'static str,
    },
    /// `R0104`: a number compared with an application property, whose values are strings.
    NumberComparedWithApplicationProperty {
        /// The property name.
        property: String,
    },
    /// `R0105`: a `$body` query on a source whose messages are declared not to be JSON.
    BodyQueryOnNonJsonSource {
        /// The body path.
        path: String,
    },
}

/// What a parser wanted when it met something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// An operand: literal, property, function call, `(`, `-` or `NOT`.
    Expression,
    /// A `)` closing a group or argument list.
    ClosingParenthesis,
    /// The `FROM` keyword.
    From,
    /// The `*` after `SELECT`.
    SelectStar,
    /// A `/`-separated source path.
    SourcePath,
    /// A path segment after `/`.
    PathSegment,
    /// `WHERE` or `INTO`.
    WhereOrInto,
    /// `INTO`.
    Into,
    /// A sink: `$upstream` or `BrokeredEndpoint("...")`.
    Sink,
    /// A `(` after the endpoint function name.
    OpeningParenthesis,
    /// A quoted endpoint address.
    EndpointAddress,
    /// A `$property` inside `{ }`.
    SystemPropertyInBraces,
    /// A `}` closing `{$property}`.
    ClosingBrace,
}

impl RouteErrorKind {
    /// Returns the stable code of this kind; the compiler wraps these in its own codes.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnrecognizedCharacter { .. } => "R0001",
            Self::UnterminatedString => "R0002",
            Self::UnexpectedToken { .. } => "R0003",
            Self::UnexpectedEndOfInput { .. } => "R0004",
            Self::UnmatchedClosingParenthesis => "R0005",
            Self::MissingClosingParenthesis => "R0006",
            Self::NestingTooDeep { .. } => "R0007",
            Self::TrailingInput => "R0008",
            Self::UnknownSink { .. } => "R0009",
            Self::InvalidEndpointAddress { .. } => "R0010",
            Self::UnknownFunction { .. } => "R0011",
            Self::FunctionNotAvailableForSource { .. } => "R0012",
            Self::InvalidArguments { .. } => "R0013",
            Self::InvalidOperands { .. } => "R0014",
            Self::InvalidBodyQuery { .. } => "R0015",
            Self::InvalidTwinChangePath { .. } => "R0016",
            Self::InvalidPriority { .. } => "R0017",
            Self::DuplicateRouteName { .. } => "R0018",
            Self::UnknownBodyField { .. } => "R0101",
            Self::BodyPathShapeMismatch { .. } => "R0102",
            Self::MixedTypeBodyComparison { .. } => "R0103",
            Self::NumberComparedWithApplicationProperty { .. } => "R0104",
            Self::BodyQueryOnNonJsonSource { .. } => "R0105",
        }
    }
}
