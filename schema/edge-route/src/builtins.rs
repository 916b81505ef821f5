//! Built-in functions: their typed signatures and their behaviour on values.
//!
//! Signatures follow the hub's executors: arguments must match a signature's types exactly,
//! except that body values are accepted wherever a concrete type is expected, and checked again
//! per message (a body value of the wrong type makes the result undefined). String positions and
//! lengths count UTF-16 code units, as .NET strings do.

use std::borrow::Cow;

use crate::static_type::StaticType;
use crate::value::Value;

/// The built-in functions of the routing language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Abs,
    Exp,
    Power,
    Square,
    Ceiling,
    Floor,
    Sign,
    Sqrt,
    AsNumber,
    IsBool,
    IsDefined,
    IsNull,
    IsNumber,
    IsString,
    Concat,
    Length,
    Lower,
    Upper,
    Substring,
    IndexOf,
    StartsWith,
    EndsWith,
    Contains,
    TwinChangeIncludes,
}

/// Every built-in with its lowercase name.
pub(crate) const BUILTINS: &[(&str, Builtin)] = &[
    ("abs", Builtin::Abs),
    ("exp", Builtin::Exp),
    ("power", Builtin::Power),
    ("square", Builtin::Square),
    ("ceiling", Builtin::Ceiling),
    ("floor", Builtin::Floor),
    ("sign", Builtin::Sign),
    ("sqrt", Builtin::Sqrt),
    ("as_number", Builtin::AsNumber),
    ("is_bool", Builtin::IsBool),
    ("is_defined", Builtin::IsDefined),
    ("is_null", Builtin::IsNull),
    ("is_number", Builtin::IsNumber),
    ("is_string", Builtin::IsString),
    ("concat", Builtin::Concat),
    ("length", Builtin::Length),
    ("lower", Builtin::Lower),
    ("upper", Builtin::Upper),
    ("substring", Builtin::Substring),
    ("index_of", Builtin::IndexOf),
    ("starts_with", Builtin::StartsWith),
    ("ends_with", Builtin::EndsWith),
    ("contains", Builtin::Contains),
    ("twin_change_includes", Builtin::TwinChangeIncludes),
];

/// A parameter list: fixed types, or at least `parameters.len()` arguments all of the last type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signature {
    parameters: &'static [StaticType],
    variadic: bool,
    pub(crate) result: StaticType,
}

use StaticType::{Bool, Number, String as Text};

const fn fixed(parameters: &'static [StaticType], result: StaticType) -> Signature {
    Signature {
        parameters,
        variadic: false,
        result,
    }
}

/// Marker for the `is_*` checks, which accept one argument of any type.
const ANY_ONE: &[StaticType] = &[StaticType::Dynamic];

impl Builtin {
    /// Finds a built-in by name, ignoring case.
    pub(crate) fn lookup(name: &str) -> Option<Self> {
        BUILTINS
            .iter()
            .find(|(builtin_name, _)| builtin_name.eq_ignore_ascii_case(name))
            .map(|(_, builtin)| *builtin)
    }

    /// The accepted signatures, tried in order.
    pub(crate) fn signatures(self) -> &'static [Signature] {
        const NUMBER_TO_NUMBER: &[Signature] = &[fixed(&[Number], Number)];
        const NUMBER_PAIR_TO_NUMBER: &[Signature] = &[fixed(&[Number, Number], Number)];
        const AS_NUMBER: &[Signature] = &[fixed(&[Text], Number), fixed(&[Number], Number)];
        const CHECK: &[Signature] = &[fixed(ANY_ONE, Bool)];
        const CONCAT: &[Signature] = &[Signature {
            parameters: &[Text, Text],
            variadic: true,
            result: Text,
        }];
        const STRING_TO_NUMBER: &[Signature] = &[fixed(&[Text], Number)];
        const STRING_TO_STRING: &[Signature] = &[fixed(&[Text], Text)];
        const SUBSTRING: &[Signature] = &[
            fixed(&[Text, Number], Text),
            fixed(&[Text, Number, Number], Text),
        ];
        const STRING_PAIR_TO_NUMBER: &[Signature] = &[fixed(&[Text, Text], Number)];
        const STRING_PAIR_TO_BOOL: &[Signature] = &[fixed(&[Text, Text], Bool)];
        const PATH_TO_BOOL: &[Signature] = &[fixed(&[Text], Bool)];
        match self {
            Self::Abs
            | Self::Exp
            | Self::Square
            | Self::Ceiling
            | Self::Floor
            | Self::Sign
            | Self::Sqrt => NUMBER_TO_NUMBER,
            Self::Power => NUMBER_PAIR_TO_NUMBER,
            Self::AsNumber => AS_NUMBER,
            Self::IsBool | Self::IsDefined | Self::IsNull | Self::IsNumber | Self::IsString => {
                CHECK
            }
            Self::Concat => CONCAT,
            Self::Length => STRING_TO_NUMBER,
            Self::Lower | Self::Upper => STRING_TO_STRING,
            Self::Substring => SUBSTRING,
            Self::IndexOf => STRING_PAIR_TO_NUMBER,
            Self::StartsWith | Self::EndsWith | Self::Contains => STRING_PAIR_TO_BOOL,
            Self::TwinChangeIncludes => PATH_TO_BOOL,
        }
    }

    /// Tells whether the `is_*` family, which accepts any single argument, is meant.
    fn accepts_any_single_argument(self) -> bool {
        matches!(
            self,
            Self::IsBool | Self::IsDefined | Self::IsNull | Self::IsNumber | Self::IsString
        )
    }

    /// Picks the first signature the argument types match.
    pub(crate) fn resolve(self, arguments: &[StaticType]) -> Option<Signature> {
        if self.accepts_any_single_argument() {
            return (arguments.len() == 1).then_some(self.signatures()[0]);
        }
        self.signatures()
            .iter()
            .find(|signature| signature.accepts(arguments))
            .copied()
    }

    /// Describes the accepted signatures for diagnostics, such as `substring(string, number)`.
    pub(crate) fn describe_signatures(self, name: &str) -> Vec<String> {
        if self.accepts_any_single_argument() {
            return vec![format!("{name}(any)")];
        }
        self.signatures()
            .iter()
            .map(|signature| {
                let mut parameters: Vec<&str> = signature
                    .parameters
                    .iter()
                    .map(|parameter| parameter.name())
                    .collect();
                if signature.variadic {
                    parameters.push("...");
                }
                format!("{name}({})", parameters.join(", "))
            })
            .collect()
    }

    /// Applies the built-in to evaluated arguments.
    pub(crate) fn apply<'a>(self, arguments: &mut [Value<'a>]) -> Value<'a> {
        let number = |index: usize| arguments.get(index).and_then(Value::as_number);
        match self {
            Self::Abs => unary_math(number(0), f64::abs),
            Self::Exp => unary_math(number(0), f64::exp),
            Self::Square => unary_math(number(0), |value| value * value),
            Self::Ceiling => unary_math(number(0), f64::ceil),
            Self::Floor => unary_math(number(0), f64::floor),
            Self::Sqrt => unary_math(number(0), f64::sqrt),
            Self::Sign => unary_math(number(0), |value| {
                if value > 0.0 {
                    1.0
                } else if value < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }),
            Self::Power => match (number(0), number(1)) {
                (Some(base), Some(exponent)) => Value::Number(base.powf(exponent)),
                _ => Value::Undefined,
            },
            Self::AsNumber => match &arguments[0] {
                Value::Text(text) => {
                    parse_dotnet_number(text).map_or(Value::Undefined, Value::Number)
                }
                Value::Number(value) => Value::Number(*value),
                _ => Value::Undefined,
            },
            Self::IsBool => Value::Bool(matches!(arguments[0], Value::Bool(_))),
            Self::IsDefined => Value::Bool(arguments[0].is_defined()),
            Self::IsNull => Value::Bool(matches!(arguments[0], Value::Null)),
            Self::IsNumber => {
                Value::Bool(matches!(arguments[0], Value::Number(value) if value.is_finite()))
            }
            Self::IsString => Value::Bool(matches!(arguments[0], Value::Text(_))),
            Self::Concat => concatenate(arguments),
            Self::Length => match arguments[0].as_text() {
                Some(text) => Value::Number(utf16_length(text) as f64),
                None => Value::Undefined,
            },
            Self::Lower => map_text(&arguments[0], str::to_lowercase),
            Self::Upper => map_text(&arguments[0], str::to_uppercase),
            Self::Substring => substring(arguments),
            Self::IndexOf => match (arguments[0].as_text(), arguments[1].as_text()) {
                (Some(text), Some(needle)) => Value::Number(utf16_index_of(text, needle)),
                _ => Value::Undefined,
            },
            Self::StartsWith => text_predicate(arguments, |text, needle| text.starts_with(needle)),
            Self::EndsWith => text_predicate(arguments, |text, needle| text.ends_with(needle)),
            Self::Contains => text_predicate(arguments, |text, needle| text.contains(needle)),
            Self::TwinChangeIncludes => Value::Undefined,
        }
    }
}

impl Signature {
    fn accepts(&self, arguments: &[StaticType]) -> bool {
        let count_matches = if self.variadic {
            arguments.len() >= self.parameters.len()
        } else {
            arguments.len() == self.parameters.len()
        };
        count_matches
            && arguments.iter().enumerate().all(|(index, argument)| {
                let parameter = self.parameters[index.min(self.parameters.len() - 1)];
                *argument == parameter || *argument == StaticType::Dynamic
            })
    }
}

fn unary_math<'a>(argument: Option<f64>, operation: impl Fn(f64) -> f64) -> Value<'a> {
    argument.map_or(Value::Undefined, |value| Value::Number(operation(value)))
}

fn map_text<'a>(argument: &Value<'a>, operation: impl Fn(&str) -> String) -> Value<'a> {
    argument.as_text().map_or(Value::Undefined, |text| {
        Value::Text(Cow::Owned(operation(text)))
    })
}

fn text_predicate<'a>(
    arguments: &[Value<'a>],
    predicate: impl Fn(&str, &str) -> bool,
) -> Value<'a> {
    match (arguments[0].as_text(), arguments[1].as_text()) {
        (Some(text), Some(needle)) => Value::Bool(predicate(text, needle)),
        _ => Value::Undefined,
    }
}

/// Joins string arguments; the compiler has already turned null string properties into `""`.
fn concatenate<'a>(arguments: &mut [Value<'a>]) -> Value<'a> {
    let mut joined = String::new();
    for argument in arguments.iter() {
        match argument.as_text() {
            Some(text) => joined.push_str(text),
            None => return Value::Undefined,
        }
    }
    Value::Text(Cow::Owned(joined))
}

fn utf16_length(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.encode_utf16().count()
    }
}

fn utf16_index_of(text: &str, needle: &str) -> f64 {
    match text.find(needle) {
        Some(byte_index) => utf16_length(&text[..byte_index]) as f64,
        None => -1.0,
    }
}

/// `substring(text, start[, length])` with the hub's bounds: out-of-range arguments give
/// undefined rather than clamping.
fn substring<'a>(arguments: &[Value<'a>]) -> Value<'a> {
    let Some(text) = arguments[0].as_text() else {
        return Value::Undefined;
    };
    let Some(start) = arguments[1].as_number() else {
        return Value::Undefined;
    };
    let units: Vec<u16> = text.encode_utf16().collect();
    let total = units.len() as f64;
    let range = match arguments.get(2) {
        None if (0.0..=total).contains(&start) => start as usize..units.len(),
        Some(length) => match length.as_number() {
            Some(length)
                if start >= 0.0 && start < total && length >= 0.0 && length <= total - start =>
            {
                start as usize..start as usize + length as usize
            }
            _ => return Value::Undefined,
        },
        None => return Value::Undefined,
    };
    Value::Text(Cow::Owned(String::from_utf16_lossy(&units[range])))
}

/// Parses a number the way .NET's `double.TryParse` with `NumberStyles.Any` and the invariant
/// culture does: surrounding whitespace, a leading or trailing sign, parentheses for negatives,
/// thousands separators, a decimal point, an exponent and the symbols `Infinity` and `NaN`.
pub(crate) fn parse_dotnet_number(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    let (negated, body) = match trimmed
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
    {
        Some(inner) => (true, inner.trim()),
        None => (false, trimmed),
    };
    let (trailing_negative, body) = match body.strip_suffix('-') {
        Some(rest) if !rest.is_empty() && !rest.ends_with(['e', 'E']) => (true, rest),
        _ => (
            false,
            body.strip_suffix('+')
                .filter(|rest| !rest.is_empty())
                .unwrap_or(body),
        ),
    };
    let unsigned = body.trim_start_matches(['+', '-']);
    let leading_negative = body.starts_with('-');
    if body.len() - unsigned.len() > 1 || (negated && (leading_negative || trailing_negative)) {
        return None;
    }
    let magnitude = if unsigned.eq_ignore_ascii_case("infinity") {
        f64::INFINITY
    } else if unsigned.eq_ignore_ascii_case("nan") {
        return None;
    } else {
        parse_plain_decimal(unsigned)?
    };
    let negative = negated || leading_negative || trailing_negative;
    Some(if negative { -magnitude } else { magnitude })
}

/// Parses digits with optional thousands separators in the integer part, a fraction and an
/// exponent; Rust's parser accepts words like `inf`, so the characters are checked first.
fn parse_plain_decimal(text: &str) -> Option<f64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(index) => (&text[..index], Some(&text[index + 1..])),
        None => (text, None),
    };
    let (integer, fraction) = match mantissa.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (mantissa, None),
    };
    let integer: String = integer
        .chars()
        .filter(|character| *character != ',')
        .collect();
    let digits_only = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let has_digits = !integer.is_empty() || fraction.is_some_and(|part| !part.is_empty());
    if !has_digits || !digits_only(&integer) || !fraction.is_none_or(digits_only) {
        return None;
    }
    if let Some(exponent) = exponent {
        let exponent_digits = exponent.trim_start_matches(['+', '-']);
        if exponent_digits.is_empty()
            || exponent.len() - exponent_digits.len() > 1
            || !digits_only(exponent_digits)
        {
            return None;
        }
    }
    let mut normalized = if integer.is_empty() {
        "0".to_owned()
    } else {
        integer
    };
    if let Some(fraction) = fraction.filter(|part| !part.is_empty()) {
        normalized.push('.');
        normalized.push_str(fraction);
    }
    if let Some(exponent) = exponent {
        normalized.push('e');
        normalized.push_str(exponent);
    }
    normalized.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_dotnet_number;

    #[test]
    fn parses_numbers_like_dotnet() {
        assert_eq!(parse_dotnet_number(" 3 "), Some(3.0));
        assert_eq!(parse_dotnet_number("1,000.5"), Some(1000.5));
        assert_eq!(parse_dotnet_number("(4)"), Some(-4.0));
        assert_eq!(parse_dotnet_number("10e1000"), Some(f64::INFINITY));
        assert_eq!(parse_dotnet_number("5-"), Some(-5.0));
        assert_eq!(parse_dotnet_number("inf"), None);
        assert_eq!(parse_dotnet_number("apple"), None);
        assert_eq!(parse_dotnet_number(""), None);
    }
}
