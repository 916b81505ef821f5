//! `$body` queries: the supported JSON path subset and its lookup.
//!
//! The hub accepts `name(.name)*` where each name may carry one array index (`a.b[0].c`), with
//! names made of any characters except `()<>@,;:\"/[]?={}.`, tabs and line breaks, and a name that
//! is only digits is rejected. Lookups follow Newtonsoft's `SelectTokens`: a missing member yields
//! null, objects and arrays yield undefined, and strings Newtonsoft would read as dates are not
//! plain strings to the hub either, so they yield undefined.

use std::borrow::Cow;

use crate::json_document::JsonNode;
use crate::value::Value;

/// A validated body path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyPath {
    steps: Box<[BodyPathStep]>,
}

/// One step of a body path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPathStep {
    /// Select an object member.
    Member(Box<str>),
    /// Select an array element.
    Element(usize),
}

impl BodyPath {
    /// Parses the text after `$body.`; `None` if it is not in the supported subset.
    pub fn parse(text: &str) -> Option<Self> {
        let mut steps = Vec::new();
        for segment in text.split('.') {
            let (name, index) = match segment.find('[') {
                Some(open) => {
                    let digits = segment[open + 1..].strip_suffix(']')?;
                    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                        return None;
                    }
                    (
                        &segment[..open],
                        Some(digits.parse::<usize>().unwrap_or(usize::MAX)),
                    )
                }
                None => (segment, None),
            };
            let valid_name = !name.is_empty()
                && !name.bytes().all(|byte| byte.is_ascii_digit())
                && name.chars().all(is_path_name_char);
            if !valid_name {
                return None;
            }
            steps.push(BodyPathStep::Member(name.into()));
            if let Some(index) = index {
                steps.push(BodyPathStep::Element(index));
            }
        }
        Some(Self {
            steps: steps.into_boxed_slice(),
        })
    }

    /// The steps of the path in order.
    pub fn steps(&self) -> &[BodyPathStep] {
        &self.steps
    }

    /// Finds the node the path selects.
    pub(crate) fn select<'d, 'a>(&self, document: &'d JsonNode<'a>) -> Option<&'d JsonNode<'a>> {
        self.steps
            .iter()
            .try_fold(document, |node, step| match step {
                BodyPathStep::Member(name) => node.member(name),
                BodyPathStep::Element(index) => node.element(*index),
            })
    }
}

/// The value a body query yields for the node a path selected, `None` when nothing was selected.
pub(crate) fn node_value<'d>(selected: Option<&'d JsonNode<'_>>) -> Value<'d> {
    match selected {
        None | Some(JsonNode::Null) => Value::Null,
        Some(JsonNode::Bool(value)) => Value::Bool(*value),
        Some(JsonNode::Number(value)) => Value::Number(*value),
        Some(JsonNode::String(text)) if is_newtonsoft_date(text) => Value::Undefined,
        Some(JsonNode::String(text)) => Value::Text(Cow::Borrowed(text)),
        Some(JsonNode::Array(_) | JsonNode::Object(_)) => Value::Undefined,
    }
}

fn is_path_name_char(character: char) -> bool {
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
            | '['
            | ']'
            | '?'
            | '='
            | '{'
            | '}'
            | '.'
            | '\t'
            | '\n'
            | '\r'
    )
}

/// Tells whether Newtonsoft.Json would read this string as a date (ISO 8601 with a `T`, or
/// `/Date(...)/`), in which case the hub does not see it as a string.
pub(crate) fn is_newtonsoft_date(text: &str) -> bool {
    if text.starts_with("/Date(") && text.ends_with(")/") && text.len() >= 9 {
        return true;
    }
    let bytes = text.as_bytes();
    (19..=40).contains(&bytes.len())
        && bytes[0].is_ascii_digit()
        && bytes[10] == b'T'
        && is_iso_date_time(bytes)
}

fn is_iso_date_time(bytes: &[u8]) -> bool {
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = bytes.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0, |total, digit| total * 10 + u32::from(digit - b'0'))
        })
    };
    let separators = bytes[4] == b'-' && bytes[7] == b'-' && bytes[13] == b':' && bytes[16] == b':';
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0..4),
        number(5..7),
        number(8..10),
        number(11..13),
        number(14..16),
        number(17..19),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let fields_valid = year >= 1
        && (1..=12).contains(&month)
        && (1..=days_in_month).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    separators && fields_valid && is_fraction_and_zone(&bytes[19..])
}

fn is_fraction_and_zone(mut rest: &[u8]) -> bool {
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    match rest {
        [] | [b'Z'] => true,
        [b'+' | b'-', zone @ ..] => {
            let all_digits = |slice: &[u8]| slice.iter().all(u8::is_ascii_digit);
            match zone {
                [h1, h2] => all_digits(&[*h1, *h2]),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => all_digits(&[*h1, *h2, *m1, *m2]),
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_subset() {
        assert!(BodyPath::parse("a.b[0].c").is_some());
        assert!(BodyPath::parse("properties[]").is_none());
        assert!(BodyPath::parse("a..b").is_none());
        assert!(BodyPath::parse("a.0").is_none());
        assert!(BodyPath::parse("a[1").is_none());
    }

    #[test]
    fn recognizes_dates_like_newtonsoft() {
        assert!(is_newtonsoft_date("2017-03-09T00:00:00.000Z"));
        assert!(is_newtonsoft_date("2017-03-09T00:00:00+01:00"));
        assert!(!is_newtonsoft_date("2017-03-09 00:00:00"));
        assert!(!is_newtonsoft_date("One Microsoft Way"));
    }
}
