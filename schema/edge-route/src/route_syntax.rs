//! The outer structure of a route: `[SELECT *] FROM <path> [WHERE <condition>] INTO <sink>`.
//!
//! The compiler needs the source and sink as data (to check that modules and outputs exist and to
//! draw the message graph), each with a span, so this module parses them into [`ParsedRoute`]
//! alongside the condition's syntax tree.

use std::ops::Range;

use crate::condition_parser::TokenCursor;
use crate::error::{Expectation, RouteError, RouteErrorKind};
use crate::lexer::TokenKind;
use crate::source_path::{SourceKind, SourcePath};
use crate::string_literal::unescape_string_literal;
use crate::syntax::Expression;

/// A syntactically valid route, with spans into the text that was parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRoute {
    /// The `FROM` clause.
    pub source: SourceClause,
    /// The `WHERE` condition, if any.
    pub condition: Option<Expression>,
    /// The `INTO` clause.
    pub sink: SinkClause,
}

/// The source path of a route.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceClause {
    /// The path and the kind of messages it selects.
    pub path: SourcePath,
    /// Byte range of the path.
    pub span: Range<usize>,
}

/// Where a route sends matching messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sink {
    /// `$upstream`: IoT Hub.
    Upstream,
    /// `BrokeredEndpoint("/modules/{module}/inputs/{input}")`: a module's input.
    ModuleInput {
        /// The target module's name.
        module: String,
        /// The input's name.
        input: String,
    },
}

/// The sink of a route with its spans.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkClause {
    /// The sink.
    pub sink: Sink,
    /// Byte range of the whole sink expression.
    pub span: Range<usize>,
    /// Byte range of the quoted endpoint address, for module inputs.
    pub address_span: Option<Range<usize>>,
}

/// Parses a whole route text, reporting the first syntax error.
pub fn parse_route(text: &str) -> Result<ParsedRoute, RouteError> {
    let mut cursor = TokenCursor::new(text);
    if cursor.peek().kind == TokenKind::Select {
        cursor.advance();
        if cursor.peek().kind != TokenKind::Star {
            return Err(cursor.unexpected(Expectation::SelectStar));
        }
        cursor.advance();
    }
    if cursor.peek().kind != TokenKind::From {
        return Err(cursor.unexpected(Expectation::From));
    }
    cursor.advance();
    let source = parse_source(&mut cursor)?;
    let condition = match cursor.peek().kind {
        TokenKind::Where => {
            cursor.advance();
            Some(cursor.parse_condition_expression()?)
        }
        TokenKind::Into => None,
        _ => return Err(cursor.unexpected(Expectation::WhereOrInto)),
    };
    if cursor.peek().kind != TokenKind::Into {
        return Err(match cursor.peek().kind {
            TokenKind::CloseParen => RouteError::error(
                RouteErrorKind::UnmatchedClosingParenthesis,
                cursor.peek().span.clone(),
            ),
            _ => cursor.unexpected(Expectation::Into),
        });
    }
    cursor.advance();
    let sink = parse_sink(&mut cursor)?;
    cursor.expect_end()?;
    Ok(ParsedRoute {
        source,
        condition,
        sink,
    })
}

/// Parses `'/' item ('/' item)*` where an item is `*` or an identifier.
fn parse_source(cursor: &mut TokenCursor<'_>) -> Result<SourceClause, RouteError> {
    if cursor.peek().kind != TokenKind::Slash {
        return Err(cursor.unexpected(Expectation::SourcePath));
    }
    let start = cursor.peek().span.start;
    let mut end = start;
    let mut written = String::new();
    while cursor.peek().kind == TokenKind::Slash {
        cursor.advance();
        let item = cursor.peek().clone();
        if !matches!(item.kind, TokenKind::Star | TokenKind::Identifier) {
            return Err(cursor.unexpected(Expectation::PathSegment));
        }
        cursor.advance();
        written.push('/');
        written.push_str(cursor.token_text(&item));
        end = item.span.end;
    }
    Ok(SourceClause {
        path: SourcePath::new(&written),
        span: start..end,
    })
}

fn parse_sink(cursor: &mut TokenCursor<'_>) -> Result<SinkClause, RouteError> {
    let token = cursor.peek().clone();
    let text = cursor.token_text(&token);
    match token.kind {
        TokenKind::SystemProperty => {
            cursor.advance();
            if text.eq_ignore_ascii_case("$upstream") {
                Ok(SinkClause {
                    sink: Sink::Upstream,
                    span: token.span,
                    address_span: None,
                })
            } else {
                Err(RouteError::error(
                    RouteErrorKind::UnknownSink {
                        name: text.to_owned(),
                    },
                    token.span,
                ))
            }
        }
        TokenKind::Identifier => {
            cursor.advance();
            if !text.eq_ignore_ascii_case("BrokeredEndpoint") {
                return Err(RouteError::error(
                    RouteErrorKind::UnknownSink {
                        name: text.to_owned(),
                    },
                    token.span,
                ));
            }
            if cursor.peek().kind != TokenKind::OpenParen {
                return Err(cursor.unexpected(Expectation::OpeningParenthesis));
            }
            cursor.advance();
            let address = cursor.peek().clone();
            if address.kind != TokenKind::String {
                return Err(cursor.unexpected(Expectation::EndpointAddress));
            }
            cursor.advance();
            if cursor.peek().kind != TokenKind::CloseParen {
                return Err(cursor.unexpected(Expectation::ClosingParenthesis));
            }
            let close = cursor.advance();
            let address_text = cursor.token_text(&address);
            let unescaped = unescape_string_literal(&address_text[1..address_text.len() - 1]);
            let sink = parse_module_input_address(&unescaped).ok_or_else(|| {
                RouteError::error(
                    RouteErrorKind::InvalidEndpointAddress {
                        address: unescaped.clone(),
                    },
                    address.span.clone(),
                )
            })?;
            Ok(SinkClause {
                sink,
                span: token.span.start..close.span.end,
                address_span: Some(address.span),
            })
        }
        _ => Err(cursor.unexpected(Expectation::Sink)),
    }
}

/// Splits `/modules/{module}/inputs/{input}` into its names.
fn parse_module_input_address(address: &str) -> Option<Sink> {
    let mut segments = address.split('/');
    let (Some(""), Some(modules), Some(module), Some(inputs), Some(input), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return None;
    };
    let valid_name = |name: &str| !name.trim().is_empty();
    (modules.eq_ignore_ascii_case("modules")
        && inputs.eq_ignore_ascii_case("inputs")
        && valid_name(module)
        && valid_name(input))
    .then(|| Sink::ModuleInput {
        module: module.to_owned(),
        input: input.to_owned(),
    })
}

impl SourceClause {
    /// Returns the kind of messages this clause selects.
    pub fn kind(&self) -> &SourceKind {
        &self.path.kind
    }
}
