//! Condition parser: a hand-written Pratt parser over the tokens of `lexer.rs`.
//!
//! nom is the workspace's parser library, but the routing language is defined by an ANTLR lexer
//! whose maximal-munch tokenization does not map onto nom's ordered-choice combinators, and the
//! compiler needs precise spans for operators and operands. A token-based Pratt parser gives both
//! with a few hundred lines, stops at the first syntax error with an exact span, and caps nesting
//! depth so that hostile input (10,000 parentheses, endless operator chains) produces a diagnostic
//! instead of overflowing the stack of the parser, the type checker or the evaluator.

use std::ops::Range;

use crate::error::{Expectation, RouteError, RouteErrorKind};
use crate::lexer::{Token, TokenKind};
use crate::string_literal::unescape_string_literal;
use crate::syntax::{BinaryOperator, Expression, ExpressionKind, Literal, UnaryOperator};

/// Deepest recursion the parser allows for parentheses, prefix operators and call arguments.
pub const MAXIMUM_NESTING_DEPTH: usize = 128;

/// Deepest expression tree allowed, which bounds long operator chains such as `a OR b OR ...`.
pub const MAXIMUM_EXPRESSION_DEPTH: usize = 512;

/// A cursor over the tokens of one route or condition text.
pub(crate) struct TokenCursor<'t> {
    pub(crate) text: &'t str,
    pub(crate) tokens: Vec<Token>,
    pub(crate) position: usize,
    nesting: usize,
}

/// A parsed expression together with the depth of its tree.
struct Parsed {
    expression: Expression,
    depth: usize,
}

impl<'t> TokenCursor<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Self {
            text,
            tokens: crate::lexer::tokenize(text),
            position: 0,
            nesting: 0,
        }
    }

    pub(crate) fn peek(&self) -> &Token {
        &self.tokens[self.position]
    }

    pub(crate) fn advance(&mut self) -> Token {
        let token = self.tokens[self.position].clone();
        if token.kind != TokenKind::EndOfInput {
            self.position += 1;
        }
        token
    }

    pub(crate) fn token_text(&self, token: &Token) -> &'t str {
        &self.text[token.span.clone()]
    }

    /// Builds the diagnostic for meeting the current token where `expected` was required.
    pub(crate) fn unexpected(&self, expected: Expectation) -> RouteError {
        let token = self.peek();
        let kind = match token.kind {
            TokenKind::EndOfInput => RouteErrorKind::UnexpectedEndOfInput { expected },
            TokenKind::Unknown => RouteErrorKind::UnrecognizedCharacter {
                character: self.token_text(token).chars().next().unwrap_or('\u{fffd}'),
            },
            TokenKind::UnterminatedString => RouteErrorKind::UnterminatedString,
            TokenKind::CloseParen if expected == Expectation::Expression => {
                RouteErrorKind::UnexpectedToken {
                    found: ")".to_owned(),
                    expected,
                }
            }
            _ => RouteErrorKind::UnexpectedToken {
                found: self.token_text(token).to_owned(),
                expected,
            },
        };
        RouteError::error(kind, token.span.clone())
    }

    /// Parses a full expression, stopping before the first token that cannot continue it.
    pub(crate) fn parse_condition_expression(&mut self) -> Result<Expression, RouteError> {
        self.parse_binary(0).map(|parsed| parsed.expression)
    }

    fn parse_binary(&mut self, minimum_precedence: u8) -> Result<Parsed, RouteError> {
        let mut left = self.parse_prefix()?;
        while let Some(operator) = binary_operator(self.peek().kind) {
            if operator.precedence() < minimum_precedence {
                break;
            }
            let operator_span = self.advance().span;
            let right = self.parse_binary(operator.precedence() + 1)?;
            let depth = 1 + left.depth.max(right.depth);
            if depth > MAXIMUM_EXPRESSION_DEPTH {
                return Err(RouteError::error(
                    RouteErrorKind::NestingTooDeep {
                        limit: MAXIMUM_EXPRESSION_DEPTH,
                    },
                    operator_span,
                ));
            }
            let span = left.expression.span.start..right.expression.span.end;
            left = Parsed {
                expression: Expression {
                    kind: ExpressionKind::Binary {
                        operator,
                        operator_span,
                        left: Box::new(left.expression),
                        right: Box::new(right.expression),
                    },
                    span,
                },
                depth,
            };
        }
        Ok(left)
    }

    /// Enters one level of recursive parsing, failing once the nesting limit is reached.
    fn enter_nesting(&mut self) -> Result<(), RouteError> {
        self.nesting += 1;
        if self.nesting > MAXIMUM_NESTING_DEPTH {
            return Err(RouteError::error(
                RouteErrorKind::NestingTooDeep {
                    limit: MAXIMUM_NESTING_DEPTH,
                },
                self.peek().span.clone(),
            ));
        }
        Ok(())
    }

    fn parse_prefix(&mut self) -> Result<Parsed, RouteError> {
        self.enter_nesting()?;
        let parsed = self.parse_prefix_unguarded();
        self.nesting -= 1;
        parsed
    }

    fn parse_prefix_unguarded(&mut self) -> Result<Parsed, RouteError> {
        let token = self.peek().clone();
        let text = self.token_text(&token);
        let leaf = |kind: ExpressionKind| {
            Ok(Parsed {
                expression: Expression {
                    kind,
                    span: token.span.clone(),
                },
                depth: 1,
            })
        };
        match token.kind {
            TokenKind::Minus | TokenKind::Not => {
                self.advance();
                let operator = if token.kind == TokenKind::Minus {
                    UnaryOperator::Negate
                } else {
                    UnaryOperator::Not
                };
                let operand = self.parse_prefix()?;
                let span = token.span.start..operand.expression.span.end;
                Ok(Parsed {
                    expression: Expression {
                        kind: ExpressionKind::Unary {
                            operator,
                            operator_span: token.span,
                            operand: Box::new(operand.expression),
                        },
                        span,
                    },
                    depth: operand.depth + 1,
                })
            }
            TokenKind::OpenParen => self.parse_parenthesized(),
            TokenKind::OpenBrace => self.parse_escaped_system_property(),
            TokenKind::Identifier
                if self.tokens[self.position + 1].kind == TokenKind::OpenParen =>
            {
                self.parse_function_call()
            }
            TokenKind::Identifier => {
                self.advance();
                leaf(ExpressionKind::ApplicationProperty {
                    name: text.to_owned(),
                })
            }
            TokenKind::SystemProperty => {
                self.advance();
                leaf(ExpressionKind::DollarProperty {
                    name: text[1..].to_owned(),
                })
            }
            TokenKind::String => {
                self.advance();
                let inner = &text[1..text.len() - 1];
                leaf(ExpressionKind::Literal(Literal::String(
                    unescape_string_literal(inner),
                )))
            }
            TokenKind::Integer | TokenKind::Real => {
                self.advance();
                leaf(ExpressionKind::Literal(parse_decimal_literal(text)))
            }
            TokenKind::Hex => {
                self.advance();
                leaf(ExpressionKind::Literal(parse_hex_literal(&text[2..])))
            }
            TokenKind::True | TokenKind::False => {
                self.advance();
                leaf(ExpressionKind::Literal(Literal::Bool(
                    token.kind == TokenKind::True,
                )))
            }
            TokenKind::Null => {
                self.advance();
                leaf(ExpressionKind::Literal(Literal::Null))
            }
            TokenKind::Undefined => {
                self.advance();
                leaf(ExpressionKind::Literal(Literal::Undefined))
            }
            _ => Err(self.unexpected(Expectation::Expression)),
        }
    }

    fn parse_parenthesized(&mut self) -> Result<Parsed, RouteError> {
        let open = self.advance();
        let inner = self.parse_binary(0)?;
        self.expect_closing_parenthesis(&open)?;
        Ok(inner)
    }

    fn expect_closing_parenthesis(&mut self, open: &Token) -> Result<Token, RouteError> {
        if self.peek().kind == TokenKind::CloseParen {
            return Ok(self.advance());
        }
        if matches!(
            self.peek().kind,
            TokenKind::Unknown | TokenKind::UnterminatedString
        ) {
            return Err(self.unexpected(Expectation::ClosingParenthesis));
        }
        Err(
            RouteError::error(RouteErrorKind::MissingClosingParenthesis, open.span.clone())
                .with_secondary_span(self.peek().span.clone()),
        )
    }

    fn parse_escaped_system_property(&mut self) -> Result<Parsed, RouteError> {
        let open = self.advance();
        if self.peek().kind != TokenKind::SystemProperty {
            return Err(self.unexpected(Expectation::SystemPropertyInBraces));
        }
        let property = self.advance();
        let name = self.token_text(&property)[1..].to_owned();
        if self.peek().kind != TokenKind::CloseBrace {
            return Err(self.unexpected(Expectation::ClosingBrace));
        }
        let close = self.advance();
        Ok(Parsed {
            expression: Expression {
                kind: ExpressionKind::EscapedSystemProperty {
                    name,
                    name_span: property.span,
                },
                span: open.span.start..close.span.end,
            },
            depth: 1,
        })
    }

    fn parse_function_call(&mut self) -> Result<Parsed, RouteError> {
        let name_token = self.advance();
        let open = self.advance();
        let first_argument_token = self.position;
        let mut arguments = Vec::new();
        let mut depth = 1;
        if self.peek().kind != TokenKind::CloseParen {
            loop {
                let argument = self.parse_binary(0)?;
                depth = depth.max(argument.depth + 1);
                arguments.push(argument.expression);
                if self.peek().kind != TokenKind::Comma {
                    break;
                }
                self.advance();
            }
        }
        let argument_text: String = self.tokens[first_argument_token..self.position]
            .iter()
            .map(|token| &self.text[token.span.clone()])
            .collect();
        let close = self.expect_closing_parenthesis(&open)?;
        Ok(Parsed {
            expression: Expression {
                kind: ExpressionKind::FunctionCall {
                    name: self.token_text(&name_token).to_owned(),
                    name_span: name_token.span.clone(),
                    arguments,
                    argument_text,
                },
                span: name_token.span.start..close.span.end,
            },
            depth,
        })
    }

    /// Reports any token left after a complete condition or route.
    pub(crate) fn expect_end(&self) -> Result<(), RouteError> {
        let token = self.peek();
        match token.kind {
            TokenKind::EndOfInput => Ok(()),
            TokenKind::CloseParen => Err(RouteError::error(
                RouteErrorKind::UnmatchedClosingParenthesis,
                token.span.clone(),
            )),
            TokenKind::Unknown | TokenKind::UnterminatedString => {
                Err(self.unexpected(Expectation::Expression))
            }
            _ => Err(RouteError::error(
                RouteErrorKind::TrailingInput,
                token.span.start..self.text.trim_end().len().max(token.span.end),
            )),
        }
    }
}

fn binary_operator(kind: TokenKind) -> Option<BinaryOperator> {
    Some(match kind {
        TokenKind::Star => BinaryOperator::Multiply,
        TokenKind::Slash => BinaryOperator::Divide,
        TokenKind::Percent => BinaryOperator::Remainder,
        TokenKind::Plus => BinaryOperator::Add,
        TokenKind::Minus => BinaryOperator::Subtract,
        TokenKind::Concatenate => BinaryOperator::Concatenate,
        TokenKind::Less => BinaryOperator::Less,
        TokenKind::LessOrEqual => BinaryOperator::LessOrEqual,
        TokenKind::Greater => BinaryOperator::Greater,
        TokenKind::GreaterOrEqual => BinaryOperator::GreaterOrEqual,
        TokenKind::Equal => BinaryOperator::Equal,
        TokenKind::NotEqual | TokenKind::NotEqualAlternative => BinaryOperator::NotEqual,
        TokenKind::And => BinaryOperator::And,
        TokenKind::Or => BinaryOperator::Or,
        TokenKind::Coalesce => BinaryOperator::Coalesce,
        _ => return None,
    })
}

/// Parses integer and real literals as doubles; the hub turns unparsable ones into `undefined`.
fn parse_decimal_literal(text: &str) -> Literal {
    match text.parse::<f64>() {
        Ok(value) => Literal::Number(value),
        Err(_) => Literal::Undefined,
    }
}

/// Parses hex digits as a 64-bit two's complement integer, as .NET's `long.TryParse` does.
fn parse_hex_literal(digits: &str) -> Literal {
    let significant = digits.trim_start_matches('0');
    if significant.len() > 16 {
        return Literal::Undefined;
    }
    match u64::from_str_radix(
        if significant.is_empty() {
            "0"
        } else {
            significant
        },
        16,
    ) {
        Ok(value) => Literal::Number(i64::from_ne_bytes(value.to_ne_bytes()) as f64),
        Err(_) => Literal::Undefined,
    }
}

/// Parses a whole text as a standalone condition; empty text is the `undefined` condition.
pub fn parse_condition(text: &str) -> Result<Expression, RouteError> {
    let mut cursor = TokenCursor::new(text);
    if cursor.peek().kind == TokenKind::EndOfInput {
        let end: Range<usize> = text.len()..text.len();
        return Ok(Expression {
            kind: ExpressionKind::Literal(Literal::Undefined),
            span: end,
        });
    }
    let expression = cursor.parse_condition_expression()?;
    cursor.expect_end()?;
    Ok(expression)
}
