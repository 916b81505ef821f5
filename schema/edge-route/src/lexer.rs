//! Tokenizer shared by route and condition parsing.
//!
//! The hub's lexer is an ANTLR grammar (`GrammarLexer.g4`). ANTLR picks the longest match at
//! every position and breaks ties by rule order, which gives the language some surprising but
//! observable behaviour: identifier characters include `-`, `+`, `*`, `!`, `|` and `'`, so `a+1`
//! is one property name and `-undefined` is a property, not a negation. This lexer reproduces that
//! maximal-munch rule by computing the match length of every rule and keeping the longest, so
//! conditions tokenize exactly as they do on the device.

use std::ops::Range;

/// The kinds of tokens of the routing language, in the hub's rule priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    OpenBrace,
    CloseBrace,
    Select,
    From,
    Where,
    Into,
    String,
    UnterminatedString,
    Integer,
    Hex,
    Real,
    True,
    False,
    Null,
    Undefined,
    OpenParen,
    CloseParen,
    Comma,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    And,
    Or,
    Not,
    Equal,
    NotEqual,
    NotEqualAlternative,
    LessOrEqual,
    GreaterOrEqual,
    Greater,
    Less,
    Concatenate,
    Coalesce,
    SystemProperty,
    Identifier,
    QueryPath,
    Unknown,
    EndOfInput,
}

/// One token with its byte span in the text that was tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) span: Range<usize>,
}

/// Splits `text` into tokens, skipping whitespace and `/* */` comments, and ending with an
/// [`TokenKind::EndOfInput`] token whose span is empty at the end of the text.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut position = 0;
    while position < text.len() {
        let rest = &text[position..];
        let whitespace = whitespace_length(rest);
        if whitespace > 0 {
            position += whitespace;
            continue;
        }
        let (kind, length) = longest_match(rest);
        let comment = comment_length(rest);
        if comment > length {
            position += comment;
            continue;
        }
        tokens.push(Token {
            kind,
            span: position..position + length,
        });
        position += length;
    }
    tokens.push(Token {
        kind: TokenKind::EndOfInput,
        span: text.len()..text.len(),
    });
    tokens
}

/// Returns the token kind and byte length of the longest rule match at the start of `rest`.
fn longest_match(rest: &str) -> (TokenKind, usize) {
    let first_char_length = rest.chars().next().map_or(1, char::len_utf8);
    let mut best = (TokenKind::Unknown, first_char_length);
    let mut consider = |kind: TokenKind, length: usize| {
        if length > 0 && (length > best.1 || (length == best.1 && best.0 == TokenKind::Unknown)) {
            best = (kind, length);
        }
    };
    // Candidates are offered in rule priority order, so an equal-length later rule never wins.
    for (kind, literal) in FIXED_TOKENS {
        if rest.starts_with(literal) {
            consider(*kind, literal.len());
        }
    }
    for (kind, keyword) in KEYWORDS {
        if rest.len() >= keyword.len()
            && rest.as_bytes()[..keyword.len()].eq_ignore_ascii_case(keyword.as_bytes())
        {
            consider(*kind, keyword.len());
        }
    }
    let (string_kind, string_length) = string_length(rest);
    consider(string_kind, string_length);
    consider(TokenKind::Integer, integer_length(rest));
    consider(TokenKind::Hex, hex_length(rest));
    consider(TokenKind::Real, real_length(rest));
    for (kind, literal) in LOWERCASE_LITERALS {
        if rest.starts_with(literal) {
            consider(*kind, literal.len());
        }
    }
    for (kind, literal) in OPERATORS {
        if rest.starts_with(literal) {
            consider(*kind, literal.len());
        }
    }
    if let Some(after_dollar) = rest.strip_prefix('$') {
        let path = run_length(after_dollar, is_query_path_char);
        if path > 0 {
            consider(TokenKind::SystemProperty, 1 + path);
        }
    }
    consider(TokenKind::Identifier, run_length(rest, is_identifier_char));
    consider(TokenKind::QueryPath, run_length(rest, is_query_path_char));
    best
}

/// Implicit parser literals come first in ANTLR's priority order.
const FIXED_TOKENS: &[(TokenKind, &str)] =
    &[(TokenKind::OpenBrace, "{"), (TokenKind::CloseBrace, "}")];

/// Case-insensitive keywords: the route clauses and the logical operators. They only tie with
/// identifiers, which come later in priority, so their position in this list does not matter.
const KEYWORDS: &[(TokenKind, &str)] = &[
    (TokenKind::Select, "select"),
    (TokenKind::From, "from"),
    (TokenKind::Where, "where"),
    (TokenKind::Into, "into"),
    (TokenKind::And, "and"),
    (TokenKind::Or, "or"),
    (TokenKind::Not, "not"),
];

/// Literal keywords, which the hub only recognises in lowercase.
const LOWERCASE_LITERALS: &[(TokenKind, &str)] = &[
    (TokenKind::True, "true"),
    (TokenKind::False, "false"),
    (TokenKind::Null, "null"),
    (TokenKind::Undefined, "undefined"),
];

/// Punctuation and symbolic operators.
const OPERATORS: &[(TokenKind, &str)] = &[
    (TokenKind::OpenParen, "("),
    (TokenKind::CloseParen, ")"),
    (TokenKind::Comma, ","),
    (TokenKind::Plus, "+"),
    (TokenKind::Minus, "-"),
    (TokenKind::Star, "*"),
    (TokenKind::Slash, "/"),
    (TokenKind::Percent, "%"),
    (TokenKind::Equal, "="),
    (TokenKind::NotEqual, "!="),
    (TokenKind::NotEqualAlternative, "<>"),
    (TokenKind::LessOrEqual, "<="),
    (TokenKind::GreaterOrEqual, ">="),
    (TokenKind::Greater, ">"),
    (TokenKind::Less, "<"),
    (TokenKind::Concatenate, "||"),
    (TokenKind::Coalesce, "??"),
];

/// Characters that end a `$` property path (`QUERY_PATH_CHARS` in the hub grammar).
fn is_query_path_char(character: char) -> bool {
    !matches!(
        character,
        '(' | ')'
            | '<'
            | '>'
            | '@'
            | ','
            | ';'
            | ':'
            | '\\'
            | '"'
            | '/'
            | '?'
            | '='
            | '{'
            | '}'
            | ' '
            | '\t'
            | '\n'
            | '\r'
    )
}

/// Identifier characters (`ID_CHARS`): query path characters minus the brackets.
pub(crate) fn is_identifier_char(character: char) -> bool {
    is_query_path_char(character) && character != '[' && character != ']'
}

fn run_length(rest: &str, accept: fn(char) -> bool) -> usize {
    rest.char_indices()
        .find(|(_, character)| !accept(*character))
        .map_or(rest.len(), |(index, _)| index)
}

fn whitespace_length(rest: &str) -> usize {
    rest.bytes()
        .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
        .count()
}

fn comment_length(rest: &str) -> usize {
    if !rest.starts_with("/*") {
        return 0;
    }
    rest[2..].find("*/").map_or(0, |end| end + 4)
}

/// Matches a quoted string; an unterminated one extends as far as its characters are valid.
fn string_length(rest: &str) -> (TokenKind, usize) {
    let bytes = rest.as_bytes();
    let Some(&quote) = bytes.first().filter(|byte| matches!(byte, b'\'' | b'"')) else {
        return (TokenKind::String, 0);
    };
    let mut index = 1;
    while index < bytes.len() {
        match bytes[index] {
            byte if byte == quote => return (TokenKind::String, index + 1),
            b'\\' => match escape_length(&bytes[index..]) {
                Some(length) => index += length,
                None => break,
            },
            _ => index += 1,
        }
    }
    (TokenKind::UnterminatedString, index)
}

/// Length of a valid escape sequence (`\"`, `\'`, `\\` or `\uXXXX`) at the start of `bytes`.
fn escape_length(bytes: &[u8]) -> Option<usize> {
    match bytes.get(1)? {
        b'"' | b'\'' | b'\\' => Some(2),
        b'u' if bytes.len() >= 6 && bytes[2..6].iter().all(u8::is_ascii_hexdigit) => Some(6),
        _ => None,
    }
}

fn digits(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count()
}

fn optional_minus(bytes: &[u8]) -> usize {
    usize::from(bytes.first() == Some(&b'-'))
}

fn integer_length(rest: &str) -> usize {
    let bytes = rest.as_bytes();
    let sign = optional_minus(bytes);
    let count = digits(&bytes[sign..]);
    if count == 0 { 0 } else { sign + count }
}

fn hex_length(rest: &str) -> usize {
    let bytes = rest.as_bytes();
    if bytes.len() < 3 || bytes[0] != b'0' || !matches!(bytes[1], b'x' | b'X') {
        return 0;
    }
    let count = bytes[2..]
        .iter()
        .take_while(|byte| byte.is_ascii_hexdigit())
        .count();
    if count == 0 { 0 } else { 2 + count }
}

/// Matches `-? [0-9]* '.' [0-9]+ EXP?` or `-? [0-9]* EXP`.
fn real_length(rest: &str) -> usize {
    let bytes = rest.as_bytes();
    let mut index = optional_minus(bytes);
    index += digits(&bytes[index..]);
    if bytes.get(index) == Some(&b'.') {
        let fraction = digits(&bytes[index + 1..]);
        if fraction == 0 {
            return 0;
        }
        index += 1 + fraction;
        return index + exponent_length(&bytes[index..]);
    }
    let exponent = exponent_length(&bytes[index..]);
    if exponent == 0 { 0 } else { index + exponent }
}

fn exponent_length(bytes: &[u8]) -> usize {
    if !matches!(bytes.first(), Some(b'e' | b'E')) {
        return 0;
    }
    let sign = usize::from(matches!(bytes.get(1), Some(b'+' | b'-')));
    let count = digits(&bytes[1 + sign..]);
    if count == 0 { 0 } else { 1 + sign + count }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text).into_iter().map(|token| token.kind).collect()
    }

    #[test]
    fn identifiers_swallow_operator_characters_like_the_hub() {
        assert_eq!(
            kinds("a+1 = -undefined"),
            vec![
                TokenKind::Identifier,
                TokenKind::Equal,
                TokenKind::Identifier,
                TokenKind::EndOfInput
            ]
        );
    }

    #[test]
    fn numbers_win_ties_against_identifiers() {
        assert_eq!(
            kinds("-1 1e-6 0x1F .5"),
            vec![
                TokenKind::Integer,
                TokenKind::Real,
                TokenKind::Hex,
                TokenKind::Real,
                TokenKind::EndOfInput
            ]
        );
    }

    #[test]
    fn keywords_are_case_insensitive_but_literals_are_not() {
        assert_eq!(
            kinds("AnD True true"),
            vec![
                TokenKind::And,
                TokenKind::Identifier,
                TokenKind::True,
                TokenKind::EndOfInput
            ]
        );
    }

    #[test]
    fn comments_are_skipped_and_strings_may_be_unterminated() {
        assert_eq!(
            kinds("/* x */ 'a\\'b' \"open"),
            vec![
                TokenKind::String,
                TokenKind::UnterminatedString,
                TokenKind::EndOfInput
            ]
        );
    }

    #[test]
    fn system_properties_keep_brackets_and_dots() {
        let tokens = tokenize("$body.a[0]=1");
        assert_eq!(tokens[0].kind, TokenKind::SystemProperty);
        assert_eq!(tokens[0].span, 0..10);
    }
}
