//! String and number literals.

use nom::Parser as _;

use super::ast::*;
use super::lexical::{is_identifier_continue, is_identifier_start};
use super::parser::{Input, ParseResult, Parser, advance, decimal_digits, fail, offset};
use crate::span::Span;

/// Size units and their multipliers, in bytes.
pub const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Duration units and their multipliers, in seconds.
pub const DURATION_UNITS: &[(&str, u64)] = &[("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];

/// Accumulates decoded text while remembering where escapes shift offsets.
struct TextBuilder {
    part: TextPart,
}

impl TextBuilder {
    fn starting_at(source_start: usize) -> Self {
        TextBuilder {
            part: TextPart {
                text: String::new(),
                source_start: source_start as u32,
                breakpoints: Vec::new(),
            },
        }
    }

    /// The finished part, without the slack of character-by-character growth.
    fn finish(mut self) -> TextPart {
        self.part.text.shrink_to_fit();
        self.part.breakpoints.shrink_to_fit();
        self.part
    }

    fn push_escaped(&mut self, decoded: char, source_after_escape: usize) {
        self.part.text.push(decoded);
        self.part
            .breakpoints
            .push((self.part.text.len() as u32, source_after_escape as u32));
    }
}

/// `"…"`: escapes `\" \\ \n \r \t \$ \u{…}`, `${name}` interpolation, one line only so that a
/// missing quote is reported on its own line instead of swallowing the rest of the file.
pub fn parse_string<'a>(parser: &Parser<'_>, input: Input<'a>) -> ParseResult<'a, StringLiteral> {
    let start = offset(&input);
    let fragment = *input.fragment();
    let mut parts = Vec::new();
    let mut builder = TextBuilder::starting_at(start + 1);
    let mut characters = fragment.char_indices().skip(1).peekable();
    let mut end = fragment.len();
    let mut terminated = false;
    while let Some((index, character)) = characters.next() {
        match character {
            '"' => {
                end = index + 1;
                terminated = true;
                break;
            }
            '\n' => {
                end = index;
                break;
            }
            '\\' => {
                let Some((escape_index, escape)) = characters.next() else {
                    break;
                };
                let decoded = match escape {
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    '$' => Some('$'),
                    'u' => decode_unicode_escape(&fragment[escape_index + 1..]).map(
                        |(character, length)| {
                            for _ in 0..length {
                                characters.next();
                            }
                            character
                        },
                    ),
                    _ => None,
                };
                let after = characters.peek().map_or(fragment.len(), |&(next, _)| next);
                match decoded {
                    Some(decoded) => builder.push_escaped(decoded, start + after),
                    None => {
                        parser.error(
                            SyntaxErrorKind::InvalidEscape {
                                escape: fragment[index..after].to_owned(),
                            },
                            Span::new(start + index, start + after),
                        );
                        builder.push_escaped('\u{FFFD}', start + after);
                    }
                }
            }
            '$' if characters.peek().map(|&(_, next)| next) == Some('{') => {
                let name_start = index + 2;
                let name_length = fragment[name_start..]
                    .char_indices()
                    .take_while(|&(position, character)| {
                        if position == 0 {
                            is_identifier_start(character)
                        } else {
                            is_identifier_continue(character)
                        }
                    })
                    .count();
                let name_end = name_start + name_length;
                if name_length == 0 || !fragment[name_end..].starts_with('}') {
                    // Report it and keep the text as written: failing here would make recovery
                    // resume inside the string, where a `}` would close the enclosing block.
                    let found = fragment[name_end..]
                        .chars()
                        .next()
                        .map_or("end of string".to_owned(), |next| format!("`{next}`"));
                    parser.error(
                        SyntaxErrorKind::Expected {
                            expected: "a parameter name and `}` in `${…}`",
                            found,
                        },
                        Span::new(start + index, start + name_end + 1),
                    );
                    builder.part.text.push('$');
                    continue;
                }
                characters.next();
                while characters
                    .peek()
                    .is_some_and(|&(position, _)| position <= name_end)
                {
                    characters.next();
                }
                let finished =
                    std::mem::replace(&mut builder, TextBuilder::starting_at(start + name_end + 1));
                if !finished.part.text.is_empty() {
                    parts.push(StringPart::Text(finished.finish()));
                }
                parts.push(StringPart::Interpolation(Key {
                    name: fragment[name_start..name_end].to_owned(),
                    quoted: false,
                    span: Span::new(start + name_start, start + name_end),
                }));
            }
            _ => builder.part.text.push(character),
        }
    }
    if !terminated {
        parser.error(
            SyntaxErrorKind::UnterminatedString,
            Span::new(start, start + 1),
        );
    }
    if !builder.part.text.is_empty() || parts.is_empty() {
        parts.push(StringPart::Text(builder.finish()));
    }
    parts.shrink_to_fit();
    Ok((advance(input, end), StringLiteral { parts, raw: false }))
}

/// `{XXXX}` after `\u`: the character and the number of source characters consumed.
fn decode_unicode_escape(after_u: &str) -> Option<(char, usize)> {
    let inner = after_u.strip_prefix('{')?;
    let close = inner.find('}')?;
    let digits = &inner[..close];
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    let character = char::from_u32(u32::from_str_radix(digits, 16).ok()?)?;
    Some((character, close + 2))
}

/// `r"…"` or `r#"…"#` (any number of `#`): verbatim text, which may span lines. Routes pasted from
/// IoT Edge manifests contain `"` and `$`, and raw strings take them as they are.
pub fn parse_raw_string<'a>(
    parser: &Parser<'_>,
    input: Input<'a>,
) -> ParseResult<'a, StringLiteral> {
    let start = offset(&input);
    let fragment = *input.fragment();
    let hashes = fragment[1..]
        .chars()
        .take_while(|&character| character == '#')
        .count();
    if !fragment[1 + hashes..].starts_with('"') {
        return fail(&input, "`\"` to open the raw string");
    }
    let body_start = 2 + hashes;
    let terminator = format!("\"{}", "#".repeat(hashes));
    let (text_end, end) = match fragment[body_start..].find(&terminator) {
        Some(position) => (
            body_start + position,
            body_start + position + terminator.len(),
        ),
        None => {
            parser.error(
                SyntaxErrorKind::UnterminatedString,
                Span::new(start, start + body_start),
            );
            (fragment.len(), fragment.len())
        }
    };
    let part = TextPart {
        text: fragment[body_start..text_end].to_owned(),
        source_start: (start + body_start) as u32,
        breakpoints: Vec::new(),
    };
    Ok((
        advance(input, end),
        StringLiteral {
            parts: vec![StringPart::Text(part)],
            raw: true,
        },
    ))
}

/// A number with an optional unit: `42`, `-1.5e3`, `512MiB`, `30s`.
pub fn parse_number<'a>(parser: &Parser<'_>, input: Input<'a>) -> ParseResult<'a, Value> {
    let start = offset(&input);
    let negative = input.fragment().starts_with('-');
    let unsigned = if negative { advance(input, 1) } else { input };
    let (rest, digits) = decimal_digits(unsigned)?;
    let (rest, unit) =
        nom::bytes::complete::take_while::<_, _, super::parser::Expectation>(|character: char| {
            character.is_ascii_alphabetic()
        })
        .parse(rest)?;
    let span = Span::new(start, offset(&rest));
    let text = &parser.source[start..offset(&digits) + digits.fragment().len()];
    let is_integral_literal = !digits.fragment().contains(['.', 'e', 'E']);
    let invalid = |parser: &Parser<'_>| {
        parser.error(
            SyntaxErrorKind::InvalidNumber {
                text: parser.source[span.range()].to_owned(),
            },
            span,
        );
        Ok((
            rest,
            Value {
                kind: ValueKind::Error,
                span,
            },
        ))
    };
    let unit = *unit.fragment();
    if unit.is_empty() {
        let kind = if is_integral_literal {
            match text.parse::<i64>() {
                Ok(integer) => ValueKind::Integer(integer),
                Err(_) => return invalid(parser),
            }
        } else {
            match text.parse::<f64>() {
                Ok(float) if float.is_finite() => ValueKind::Float(float),
                _ => return invalid(parser),
            }
        };
        return Ok((rest, Value { kind, span }));
    }
    let (multiplier, make): (u64, fn(u64) -> ValueKind) = if let Some(&(_, multiplier)) =
        SIZE_UNITS.iter().find(|(name, _)| *name == unit)
    {
        (multiplier, ValueKind::Size)
    } else if let Some(&(_, multiplier)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) {
        (multiplier, ValueKind::Duration)
    } else {
        parser.error(
            SyntaxErrorKind::UnknownUnit {
                unit: unit.to_owned(),
                quantity_units: "B, KiB, MiB, GiB, TiB, s, m, h, d",
            },
            Span::new(offset(&rest) - unit.len(), offset(&rest)),
        );
        return Ok((
            rest,
            Value {
                kind: ValueKind::Error,
                span,
            },
        ));
    };
    if negative {
        return invalid(parser);
    }
    let amount = if is_integral_literal {
        digits
            .fragment()
            .parse::<u64>()
            .ok()
            .and_then(|count| count.checked_mul(multiplier))
    } else {
        digits
            .fragment()
            .parse::<f64>()
            .ok()
            .map(|count| count * multiplier as f64)
            .and_then(|total| {
                (total.is_finite() && total.fract() == 0.0 && total < u64::MAX as f64)
                    .then_some(total as u64)
            })
    };
    match amount {
        Some(amount) => Ok((
            rest,
            Value {
                kind: make(amount),
                span,
            },
        )),
        None => invalid(parser),
    }
}
