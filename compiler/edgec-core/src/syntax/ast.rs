//! The syntax tree of a `.edge` file.
//!
//! The grammar is deliberately generic, like HCL's: a file is a list of [`Entry`]s, and an entry is
//! `key [label] [: type] [= value] [{ block }]`. The parser knows nothing about modules or routes;
//! the checker gives entries their meaning. That keeps the parser small, lets the formatter treat
//! every construct alike, and turns "unknown attribute" into a checker diagnostic with suggestions
//! rather than a syntax error. Every node carries the [`Span`] of its source text.

use crate::span::Span;

/// A parsed file. Parsing never fails: what could not be parsed is recorded in `errors` and the
/// rest of the file is still parsed.
#[derive(Debug, Clone, Default)]
pub struct SyntaxTree {
    pub entries: Vec<Entry>,
    pub comments: Vec<Comment>,
    pub errors: Vec<SyntaxError>,
}

/// `// …` or `/* … */`, kept so that the formatter can put it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub span: Span,
    /// Whether code precedes the comment on its line (a trailing comment).
    pub trailing: bool,
}

/// One `key [label] [: type] [= value] [{ block }]` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Key,
    pub label: Option<Key>,
    pub type_annotation: Option<TypeExpression>,
    pub value: Option<Value>,
    pub block: Option<Block>,
    pub span: Span,
}

/// An entry's key or label: an identifier, or a string when the name is not an identifier
/// (`"5671/tcp" = …` in Docker create options).
#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub quoted: bool,
    pub span: Span,
}

/// `{ entries }`: the body of a block, or an object value.
#[derive(Debug, Clone)]
pub struct Block {
    pub entries: Vec<Entry>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum ValueKind {
    String(StringLiteral),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Null,
    /// A size such as `512MiB`, in bytes.
    Size(u64),
    /// A duration such as `30s`, in seconds.
    Duration(u64),
    List(Vec<Value>),
    Object(Block),
    /// A bare identifier: a parameter, a definition, or a keyword such as `always`.
    Reference(Key),
    /// `name(arguments)`, e.g. `env("PASSWORD")` or `local("./images/filter")`.
    Call {
        function: Key,
        arguments: Vec<Value>,
    },
    /// `low..high`, either side optional; only meaningful inside type refinements.
    Range {
        low: Option<Box<Value>>,
        high: Option<Box<Value>>,
    },
    /// A value that could not be parsed; its error is in [`SyntaxTree::errors`].
    Error,
}

/// A string literal, decoded, with what is needed to map decoded offsets back to the source.
#[derive(Debug, Clone)]
pub struct StringLiteral {
    pub parts: Vec<StringPart>,
    /// `r"…"` or `r#"…"#`: no escapes, no interpolation.
    pub raw: bool,
}

#[derive(Debug, Clone)]
pub enum StringPart {
    Text(TextPart),
    /// `${name}` interpolation of a parameter.
    Interpolation(Key),
}

/// Decoded text and the source offsets of its bytes.
#[derive(Debug, Clone)]
pub struct TextPart {
    pub text: String,
    /// Source offset of the first decoded byte.
    pub source_start: u32,
    /// Where escapes make decoded and source offsets diverge: pairs of (decoded offset, source
    /// offset), sorted, each valid until the next. Empty when the text had no escapes.
    pub breakpoints: Vec<(u32, u32)>,
}

impl TextPart {
    /// The source offset of the decoded byte at `decoded_offset`.
    pub fn source_offset(&self, decoded_offset: usize) -> u32 {
        let decoded_offset = decoded_offset as u32;
        match self
            .breakpoints
            .partition_point(|&(decoded, _)| decoded <= decoded_offset)
        {
            0 => self.source_start + decoded_offset,
            index => {
                let (decoded, source) = self.breakpoints[index - 1];
                source + (decoded_offset - decoded)
            }
        }
    }
}

impl StringLiteral {
    /// The text when the literal has no interpolation.
    pub fn as_plain_text(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [StringPart::Text(part)] => Some(&part.text),
            _ => None,
        }
    }

    /// The single text part, when the literal has no interpolation.
    pub fn plain_part(&self) -> Option<&TextPart> {
        match self.parts.as_slice() {
            [StringPart::Text(part)] => Some(part),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TypeExpression {
    pub kind: TypeKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum TypeKind {
    /// `string`, `int`, … or the name of a message schema.
    Named(Key),
    /// `[T]`.
    List(Box<TypeExpression>),
    /// `{ field: T … }`.
    Object(Block),
    /// `"a" | "b" | 3`: one of the listed literals.
    Union(Vec<Value>),
    /// `T(refinement, …)`: `int(1..10)`, `string(pattern = "^a")`.
    Refined {
        base: Box<TypeExpression>,
        refinements: Vec<Refinement>,
    },
    /// `T?`: the value may be absent.
    Optional(Box<TypeExpression>),
    /// A type that could not be parsed.
    Error,
}

/// One refinement inside `T(…)`: a bare range, or `name = value`.
#[derive(Debug, Clone)]
pub struct Refinement {
    pub name: Option<Key>,
    pub value: Value,
    pub span: Span,
}

/// A syntax error, as data; the wording is in the diagnostics renderer.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub kind: SyntaxErrorKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SyntaxErrorKind {
    /// Something else was found where `expected` was needed.
    Expected {
        expected: &'static str,
        found: String,
    },
    UnterminatedString,
    UnterminatedComment,
    InvalidEscape {
        escape: String,
    },
    InvalidNumber {
        text: String,
    },
    UnknownUnit {
        unit: String,
        quantity_units: &'static str,
    },
    NestingTooDeep {
        limit: usize,
    },
    UnclosedDelimiter {
        delimiter: char,
    },
    UnexpectedClosingDelimiter {
        delimiter: char,
    },
}
