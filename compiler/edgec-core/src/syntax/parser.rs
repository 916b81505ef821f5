//! The `.edge` parser: nom combinators over a located input, with recovery.
//!
//! Parsing never fails. When an entry, list element or value cannot be parsed, the parser records
//! a [`SyntaxError`], skips to the next synchronisation point (a newline, `,` or `;` outside
//! brackets, or the closing bracket of the enclosing block) and carries on, so one run reports every
//! syntax error. Nesting is capped at [`MAXIMUM_NESTING`]; deeper input is skipped by an iterative
//! scanner, so no input can overflow the stack.

use std::cell::RefCell;
use std::collections::BTreeMap;

use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::{char, digit1, one_of};
use nom::combinator::{opt, recognize};
use nom::sequence::pair;
use nom::{IResult, Parser as _};
use nom_locate::LocatedSpan;

use super::ast::*;
use super::lexical::{is_identifier_continue, is_identifier_start, skip_balanced};
use super::literal::{parse_number, parse_raw_string, parse_string};
use crate::span::Span;

/// How deeply lists, objects and types may nest. Twin documents are limited to depth 10 by IoT
/// Edge and Docker create options rarely exceed 6, so 64 leaves ample room while keeping recursion
/// well inside a 2 MiB thread stack.
pub const MAXIMUM_NESTING: usize = 64;

pub(super) type Input<'a> = LocatedSpan<&'a str>;

/// The failure of one sub-parser: where, and what would have been accepted there.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Expectation {
    pub offset: usize,
    pub expected: &'static str,
}

impl<'a> nom::error::ParseError<Input<'a>> for Expectation {
    fn from_error_kind(input: Input<'a>, _kind: nom::error::ErrorKind) -> Self {
        Expectation {
            offset: input.location_offset(),
            expected: "valid syntax",
        }
    }

    fn append(_input: Input<'a>, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

pub(super) type ParseResult<'a, T> = IResult<Input<'a>, T, Expectation>;

pub(super) fn offset(input: &Input<'_>) -> usize {
    input.location_offset()
}

pub(super) fn fail<T>(input: &Input<'_>, expected: &'static str) -> ParseResult<'static, T> {
    Err(nom::Err::Error(Expectation {
        offset: offset(input),
        expected,
    }))
}

/// Parses a whole file.
pub fn parse(source: &str) -> SyntaxTree {
    let parser = Parser {
        source,
        errors: RefCell::default(),
        comments: RefCell::default(),
    };
    let (_, entries) = parser.entries(Input::new(source), None, 0);
    let mut errors = parser.errors.into_inner();
    errors.sort_by_key(|error| (error.span.start, error.span.end));
    errors.dedup();
    SyntaxTree {
        entries,
        comments: parser.comments.into_inner().into_values().collect(),
        errors,
    }
}

pub(super) struct Parser<'s> {
    pub(super) source: &'s str,
    errors: RefCell<Vec<SyntaxError>>,
    /// Keyed by start offset, because backtracking may scan the same comment twice.
    comments: RefCell<BTreeMap<u32, Comment>>,
}

impl<'s> Parser<'s> {
    pub(super) fn error(&self, kind: SyntaxErrorKind, span: Span) {
        self.errors.borrow_mut().push(SyntaxError { kind, span });
    }

    fn found_at(&self, at: usize) -> String {
        match self.source[at..].chars().next() {
            None => "end of file".to_owned(),
            Some('\n' | '\r') => "end of line".to_owned(),
            Some(character) if character.is_whitespace() && character != ' ' => {
                format!("{:?}", character).trim_matches('\'').to_owned()
            }
            Some(character) => format!("`{character}`"),
        }
    }

    fn expected_error(&self, expectation: &Expectation) {
        let found = self.found_at(expectation.offset);
        let end = expectation.offset
            + self.source[expectation.offset..]
                .chars()
                .next()
                .map_or(0, char::len_utf8);
        self.error(
            SyntaxErrorKind::Expected {
                expected: expectation.expected,
                found,
            },
            Span::new(expectation.offset, end),
        );
    }

    /// Skips whitespace and comments, recording comments. Returns the rest and whether a newline
    /// was crossed.
    pub(super) fn trivia<'a>(&self, mut input: Input<'a>) -> (Input<'a>, bool) {
        let mut crossed_newline = false;
        loop {
            let (rest, spaces) = take_while::<_, _, Expectation>(char::is_whitespace)
                .parse(input)
                .unwrap_or((input, input));
            crossed_newline |= spaces.fragment().contains('\n');
            input = rest;
            let fragment = *input.fragment();
            let start = offset(&input);
            let comment_length = if fragment.starts_with("//") {
                fragment.find('\n').unwrap_or(fragment.len())
            } else if let Some(body) = fragment.strip_prefix("/*") {
                match body.find("*/") {
                    Some(end) => end + 4,
                    None => {
                        self.error(
                            SyntaxErrorKind::UnterminatedComment,
                            Span::new(start, start + 2),
                        );
                        fragment.len()
                    }
                }
            } else {
                return (input, crossed_newline);
            };
            let line_start = self.source[..start]
                .rfind('\n')
                .map_or(0, |newline| newline + 1);
            let trailing = !self.source[line_start..start].trim().is_empty();
            let span = Span::new(start, start + comment_length);
            self.comments
                .borrow_mut()
                .insert(span.start, Comment { span, trailing });
            input = advance(input, comment_length);
        }
    }

    /// Entries until `closing` (not consumed) or the end of input.
    pub(super) fn entries<'a>(
        &self,
        mut input: Input<'a>,
        closing: Option<char>,
        depth: usize,
    ) -> (Input<'a>, Vec<Entry>) {
        let mut entries = Vec::new();
        loop {
            input = self.trivia(input).0;
            let Some(next) = input.fragment().chars().next() else {
                break;
            };
            if Some(next) == closing {
                break;
            }
            if next == ',' || next == ';' {
                input = advance(input, 1);
                continue;
            }
            if matches!(next, '}' | ']' | ')') {
                if closing.is_some() {
                    // A mismatched closer ends this block; the caller reports it.
                    break;
                }
                let at = offset(&input);
                self.error(
                    SyntaxErrorKind::UnexpectedClosingDelimiter { delimiter: next },
                    Span::new(at, at + 1),
                );
                input = advance(input, 1);
                continue;
            }
            match self.entry(input, depth) {
                Ok((rest, entry)) => {
                    entries.push(entry);
                    input = rest;
                }
                Err(nom::Err::Error(expectation) | nom::Err::Failure(expectation)) => {
                    self.expected_error(&expectation);
                    input = self.recover(input, expectation.offset);
                }
                Err(nom::Err::Incomplete(_)) => break,
            }
        }
        // Trees of every file live for the whole check; growth slack would be a third of them.
        entries.shrink_to_fit();
        (input, entries)
    }

    /// Skips from the failure point to the next synchronisation point, always making progress.
    fn recover<'a>(&self, input: Input<'a>, failed_at: usize) -> Input<'a> {
        let start = offset(&input);
        let from = failed_at.max(start);
        let stop = skip_balanced(self.source, from, true);
        let stop = if stop == start {
            start
                + self.source[start..]
                    .chars()
                    .next()
                    .map_or(0, char::len_utf8)
        } else {
            stop
        };
        advance(input, stop - start)
    }

    fn entry<'a>(&self, input: Input<'a>, depth: usize) -> ParseResult<'a, Entry> {
        let start = offset(&input);
        let (mut input, key) = self.key(input).or_else(|_| fail(&input, "an entry name"))?;
        let mut end = key.span.end as usize;

        let mut label = None;
        let (probe, crossed_newline) = self.trivia(input);
        // A label must be on the key's line, so that `status` alone on a line followed by
        // `restart = always` is not read as `status restart = always`.
        if !crossed_newline && let Ok((rest, parsed)) = self.key(probe) {
            end = parsed.span.end as usize;
            label = Some(parsed);
            input = rest;
        }

        let mut type_annotation = None;
        let (probe, _) = self.trivia(input);
        if probe.fragment().starts_with(':') {
            let (rest, _) = self.trivia(advance(probe, 1));
            let (rest, parsed) = self.type_expression(rest, depth + 1)?;
            end = parsed.span.end as usize;
            type_annotation = Some(parsed);
            input = rest;
        }

        let mut value = None;
        let (probe, _) = self.trivia(input);
        if probe.fragment().starts_with('=') && !probe.fragment().starts_with("==") {
            let (rest, crossed_newline) = self.trivia(advance(probe, 1));
            // A value may continue on the next line, unless that line reads as an entry of its
            // own: then the value was forgotten, and taking the entry as the value would turn one
            // mistake into confusing errors about the next line (`x =` then `param y: int`).
            if crossed_newline && self.starts_entry(rest) {
                return fail(&advance(probe, 1), "a value after `=`");
            }
            let (rest, parsed) = self.value(rest, depth + 1)?;
            end = parsed.span.end as usize;
            value = Some(parsed);
            input = rest;
        }

        let mut block = None;
        let (probe, _) = self.trivia(input);
        if probe.fragment().starts_with('{') {
            let (rest, parsed) = self.block(probe, depth + 1);
            end = parsed.span.end as usize;
            block = Some(parsed);
            input = rest;
        }

        Ok((
            input,
            Entry {
                key,
                label,
                type_annotation,
                value,
                block,
                span: Span::new(start, end),
            },
        ))
    }

    /// Whether `input` begins like an entry (`name label`, `name =`, `name:`) rather than a
    /// value (`name`, `name(…)`, a literal). `name {` stays a value followed by a block, which is
    /// what the grammar makes of it on one line too.
    fn starts_entry(&self, input: Input<'_>) -> bool {
        if input.fragment().starts_with("r\"") || input.fragment().starts_with("r#") {
            return false;
        }
        let Ok((rest, _)) = self.key(input) else {
            return false;
        };
        let (after, crossed_newline) = self.trivia(rest);
        if crossed_newline {
            return false;
        }
        let fragment = *after.fragment();
        (fragment.starts_with('=') && !fragment.starts_with("=="))
            || fragment.starts_with([':', '"'])
            || fragment.chars().next().is_some_and(is_identifier_start)
    }

    /// An identifier or a string used as a name.
    fn key<'a>(&self, input: Input<'a>) -> ParseResult<'a, Key> {
        if input.fragment().starts_with('"') {
            let start = offset(&input);
            let (rest, literal) = parse_string(self, input)?;
            return match literal.as_plain_text() {
                Some(text) => Ok((
                    rest,
                    Key {
                        name: text.to_owned(),
                        quoted: true,
                        span: Span::new(start, offset(&rest)),
                    },
                )),
                None => fail(&input, "a name without `${…}`"),
            };
        }
        let (rest, name) = identifier(input)?;
        let start = offset(&input);
        Ok((
            rest,
            Key {
                name: name.fragment().to_string(),
                quoted: false,
                span: Span::new(start, offset(&rest)),
            },
        ))
    }

    /// `{ entries }`, with its own recovery; never fails once `{` is seen.
    pub(super) fn block<'a>(&self, input: Input<'a>, depth: usize) -> (Input<'a>, Block) {
        let start = offset(&input);
        if depth > MAXIMUM_NESTING {
            return self.too_deep(input, |span| Block {
                entries: Vec::new(),
                span,
            });
        }
        let (rest, entries) = self.entries(advance(input, 1), Some('}'), depth);
        let rest = self.close(rest, '{', '}', start);
        (
            rest,
            Block {
                entries,
                span: Span::new(start, offset(&rest)),
            },
        )
    }

    /// Consumes `closing` or reports the unclosed `opening` at `opened_at`.
    fn close<'a>(
        &self,
        input: Input<'a>,
        opening: char,
        closing: char,
        opened_at: usize,
    ) -> Input<'a> {
        if input.fragment().starts_with(closing) {
            return advance(input, 1);
        }
        self.error(
            SyntaxErrorKind::UnclosedDelimiter { delimiter: opening },
            Span::new(opened_at, opened_at + 1),
        );
        input
    }

    /// Records a nesting error and skips the whole over-deep construct without recursing.
    fn too_deep<'a, T>(&self, input: Input<'a>, make: impl FnOnce(Span) -> T) -> (Input<'a>, T) {
        let start = offset(&input);
        let end = skip_balanced(self.source, start, false);
        let end = end.max(start + 1);
        self.error(
            SyntaxErrorKind::NestingTooDeep {
                limit: MAXIMUM_NESTING,
            },
            Span::new(start, start + 1),
        );
        (advance(input, end - start), make(Span::new(start, end)))
    }

    pub(super) fn value<'a>(&self, input: Input<'a>, depth: usize) -> ParseResult<'a, Value> {
        let start = offset(&input);
        let fragment = *input.fragment();
        let Some(first) = fragment.chars().next() else {
            return fail(&input, "a value");
        };
        if depth > MAXIMUM_NESTING && matches!(first, '[' | '{') {
            return Ok(self.too_deep(input, |span| Value {
                kind: ValueKind::Error,
                span,
            }));
        }
        match first {
            '"' => {
                let (rest, literal) = parse_string(self, input)?;
                Ok((
                    rest,
                    Value {
                        kind: ValueKind::String(literal),
                        span: Span::new(start, offset(&rest)),
                    },
                ))
            }
            'r' if fragment.starts_with("r\"") || fragment.starts_with("r#") => {
                let (rest, literal) = parse_raw_string(self, input)?;
                Ok((
                    rest,
                    Value {
                        kind: ValueKind::String(literal),
                        span: Span::new(start, offset(&rest)),
                    },
                ))
            }
            '[' => Ok(self.list(input, depth)),
            '{' => {
                let (rest, block) = self.block(input, depth);
                let span = block.span;
                Ok((
                    rest,
                    Value {
                        kind: ValueKind::Object(block),
                        span,
                    },
                ))
            }
            '.' if fragment.starts_with("..") => self.range(input, None, start),
            '-' | '0'..='9' => {
                let (rest, number) = parse_number(self, input)?;
                if rest.fragment().starts_with("..") {
                    return self.range(rest, Some(number), start);
                }
                Ok((rest, number))
            }
            _ if is_identifier_start(first) => {
                let (rest, key) = self.key(input)?;
                let kind = match key.name.as_str() {
                    "true" => ValueKind::Bool(true),
                    "false" => ValueKind::Bool(false),
                    "null" => ValueKind::Null,
                    _ if rest.fragment().starts_with('(') => return self.call(rest, key, depth),
                    _ => ValueKind::Reference(key),
                };
                Ok((
                    rest,
                    Value {
                        kind,
                        span: Span::new(start, offset(&rest)),
                    },
                ))
            }
            _ => fail(&input, "a value"),
        }
    }

    fn range<'a>(
        &self,
        input: Input<'a>,
        low: Option<Value>,
        start: usize,
    ) -> ParseResult<'a, Value> {
        let after_dots = advance(input, 2);
        let (rest, high) = match after_dots.fragment().chars().next() {
            Some('-' | '0'..='9') => {
                let (rest, high) = parse_number(self, after_dots)?;
                (rest, Some(Box::new(high)))
            }
            _ if low.is_none() => return fail(&after_dots, "a number after `..`"),
            _ => (after_dots, None),
        };
        Ok((
            rest,
            Value {
                kind: ValueKind::Range {
                    low: low.map(Box::new),
                    high,
                },
                span: Span::new(start, offset(&rest)),
            },
        ))
    }

    fn call<'a>(&self, input: Input<'a>, function: Key, depth: usize) -> ParseResult<'a, Value> {
        let (rest, arguments) = self.sequence(input, '(', ')', "an argument", depth)?;
        let span = Span::new(function.span.start as usize, offset(&rest));
        Ok((
            rest,
            Value {
                kind: ValueKind::Call {
                    function,
                    arguments,
                },
                span,
            },
        ))
    }

    fn list<'a>(&self, input: Input<'a>, depth: usize) -> (Input<'a>, Value) {
        let start = offset(&input);
        match self.sequence(input, '[', ']', "a list element", depth) {
            Ok((rest, elements)) => (
                rest,
                Value {
                    kind: ValueKind::List(elements),
                    span: Span::new(start, offset(&rest)),
                },
            ),
            Err(_) => (
                advance(input, 1),
                Value {
                    kind: ValueKind::Error,
                    span: Span::new(start, start + 1),
                },
            ),
        }
    }

    /// `opening value, value … closing`, recovering from bad elements.
    fn sequence<'a>(
        &self,
        input: Input<'a>,
        opening: char,
        closing: char,
        element: &'static str,
        depth: usize,
    ) -> ParseResult<'a, Vec<Value>> {
        let opened_at = offset(&input);
        let mut input = advance(input, opening.len_utf8());
        let mut elements = Vec::new();
        loop {
            input = self.trivia(input).0;
            let Some(next) = input.fragment().chars().next() else {
                break;
            };
            if next == closing || matches!(next, '}' | ']' | ')') {
                break;
            }
            if next == ',' {
                input = advance(input, 1);
                continue;
            }
            match self.value(input, depth + 1) {
                Ok((rest, value)) => {
                    elements.push(value);
                    input = rest;
                }
                Err(nom::Err::Error(expectation) | nom::Err::Failure(expectation)) => {
                    let expectation = if expectation.offset == offset(&input) {
                        Expectation {
                            offset: expectation.offset,
                            expected: element,
                        }
                    } else {
                        expectation
                    };
                    self.expected_error(&expectation);
                    let stop =
                        skip_balanced(self.source, expectation.offset.max(offset(&input)), false);
                    let stop = stop.max(offset(&input) + 1).min(self.source.len());
                    input = advance(input, stop - offset(&input));
                }
                Err(nom::Err::Incomplete(_)) => break,
            }
        }
        let rest = self.close(input, opening, closing, opened_at);
        elements.shrink_to_fit();
        Ok((rest, elements))
    }

    pub(super) fn type_expression<'a>(
        &self,
        input: Input<'a>,
        depth: usize,
    ) -> ParseResult<'a, TypeExpression> {
        let start = offset(&input);
        if depth > MAXIMUM_NESTING && input.fragment().starts_with(['[', '{']) {
            return Ok(self.too_deep(input, |span| TypeExpression {
                kind: TypeKind::Error,
                span,
            }));
        }
        let fragment = *input.fragment();
        let (mut input, mut expression) = match fragment.chars().next() {
            Some('[') => {
                let (rest, _) = self.trivia(advance(input, 1));
                let (rest, element) = self.type_expression(rest, depth + 1)?;
                let (rest, _) = self.trivia(rest);
                let rest = self.close(rest, '[', ']', start);
                (
                    rest,
                    TypeExpression {
                        kind: TypeKind::List(Box::new(element)),
                        span: Span::new(start, offset(&rest)),
                    },
                )
            }
            Some('{') => {
                let (rest, block) = self.block(input, depth);
                (
                    rest,
                    TypeExpression {
                        kind: TypeKind::Object(block),
                        span: Span::new(start, offset(&rest)),
                    },
                )
            }
            Some('"' | '-' | '0'..='9') => self.union(input, depth)?,
            Some(character) if is_identifier_start(character) => {
                let (rest, key) = self.key(input)?;
                (
                    rest,
                    TypeExpression {
                        kind: TypeKind::Named(key),
                        span: Span::new(start, offset(&rest)),
                    },
                )
            }
            _ => return fail(&input, "a type"),
        };
        let mut suffixes = 0;
        loop {
            if input.fragment().starts_with(['(', '?']) && depth + suffixes > MAXIMUM_NESTING {
                return Ok(self.too_many_suffixes(input, expression));
            }
            suffixes += 1;
            if input.fragment().starts_with('(') {
                let (rest, refinements) = self.refinements(input, depth)?;
                expression = TypeExpression {
                    kind: TypeKind::Refined {
                        base: Box::new(expression),
                        refinements,
                    },
                    span: Span::new(start, offset(&rest)),
                };
                input = rest;
            } else if input.fragment().starts_with('?') {
                input = advance(input, 1);
                expression = TypeExpression {
                    kind: TypeKind::Optional(Box::new(expression)),
                    span: Span::new(start, offset(&input)),
                };
            } else {
                return Ok((input, expression));
            }
        }
    }

    /// Records a nesting error for a type with too many `?` and `(…)` suffixes (each one wraps the
    /// type once more, and everything that walks types recurses), and skips the rest of them
    /// without wrapping further.
    fn too_many_suffixes<'a>(
        &self,
        mut input: Input<'a>,
        expression: TypeExpression,
    ) -> (Input<'a>, TypeExpression) {
        let start = offset(&input);
        self.error(
            SyntaxErrorKind::NestingTooDeep {
                limit: MAXIMUM_NESTING,
            },
            Span::new(start, start + 1),
        );
        loop {
            let position = offset(&input);
            let end = match input.fragment().chars().next() {
                Some('?') => position + 1,
                Some('(') => skip_balanced(self.source, position, false),
                _ => return (input, expression),
            };
            input = advance(input, end - position);
        }
    }

    /// `"a" | "b" | …` (or numbers).
    fn union<'a>(&self, input: Input<'a>, depth: usize) -> ParseResult<'a, TypeExpression> {
        let start = offset(&input);
        let (mut input, first) = self.value(input, depth + 1)?;
        let mut alternatives = vec![first];
        loop {
            let (probe, _) = self.trivia(input);
            if !probe.fragment().starts_with('|') || probe.fragment().starts_with("||") {
                break;
            }
            let (rest, _) = self.trivia(advance(probe, 1));
            let (rest, alternative) = self.value(rest, depth + 1)?;
            alternatives.push(alternative);
            input = rest;
        }
        Ok((
            input,
            TypeExpression {
                kind: TypeKind::Union(alternatives),
                span: Span::new(start, offset(&input)),
            },
        ))
    }

    fn refinements<'a>(&self, input: Input<'a>, depth: usize) -> ParseResult<'a, Vec<Refinement>> {
        let opened_at = offset(&input);
        let mut input = advance(input, 1);
        let mut refinements = Vec::new();
        loop {
            input = self.trivia(input).0;
            match input.fragment().chars().next() {
                None | Some(')') => break,
                Some(',') => {
                    input = advance(input, 1);
                    continue;
                }
                _ => {}
            }
            let start = offset(&input);
            let mut name = None;
            if let Ok((rest, key)) = self.key(input) {
                let (probe, _) = self.trivia(rest);
                if probe.fragment().starts_with('=') {
                    name = Some(key);
                    input = self.trivia(advance(probe, 1)).0;
                }
            }
            let (rest, value) = self.value(input, depth + 1)?;
            refinements.push(Refinement {
                name,
                value,
                span: Span::new(start, offset(&rest)),
            });
            input = rest;
        }
        let rest = self.close(input, '(', ')', opened_at);
        Ok((rest, refinements))
    }
}

/// Moves `count` bytes forward; `count` must fall on a character boundary. (nom's `take` counts
/// characters, not bytes, so it would overshoot after non-ASCII text.)
pub(super) fn advance(input: Input<'_>, count: usize) -> Input<'_> {
    if input.fragment().is_char_boundary(count) {
        nom::Input::take_from(&input, count)
    } else {
        input
    }
}

/// `[A-Za-z_][A-Za-z0-9_-]*`.
pub(super) fn identifier(input: Input<'_>) -> ParseResult<'_, Input<'_>> {
    recognize(pair(
        take_while1(is_identifier_start),
        take_while(is_identifier_continue),
    ))
    .parse(input)
    .or_else(|_: nom::Err<Expectation>| fail(&input, "a name"))
}

/// The digits, fraction and exponent of a decimal number, without sign or unit.
pub(super) fn decimal_digits(input: Input<'_>) -> ParseResult<'_, Input<'_>> {
    recognize((
        digit1,
        opt(pair(char('.'), digit1)),
        opt((one_of("eE"), opt(one_of("+-")), digit1)),
    ))
    .parse(input)
    .or_else(|_: nom::Err<Expectation>| fail(&input, "a number"))
}
