//! Writing JSON values as `.edge` literals: names, strings with template placeholders turned into
//! `${param}` interpolations, numbers, lists, objects and durations.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::error::{ImportError, Note};

/// How deeply a JSON value may nest below the entry that holds it. The parser's limit counts
/// every bracket from the top of the file; the deepest importer entry sits four levels down
/// (`module { create_options { … } }` inside nothing else), so this leaves a safe margin.
pub const MAXIMUM_VALUE_DEPTH: usize = crate::syntax::MAXIMUM_NESTING - 8;

/// What an import collects on its way through the manifest: the parameters the placeholders need
/// and the notes about what was left out.
#[derive(Debug, Default)]
pub struct Context {
    pub parameters: BTreeSet<String>,
    pub notes: Vec<Note>,
}

/// One piece of a string value from a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    /// A placeholder, by the name written inside it (`Build.BuildNumber` for
    /// `<Build.BuildNumber>`).
    Placeholder(&'a str),
}

/// Splits a string into text and placeholders: `${NAME}` and `$NAME` (the Azure IoT Edge dev
/// tools substitute these from the environment) and `<Name>` (Azure DevOps pipeline variables).
pub fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut text_start = 0;
    let mut position = 0;
    while position < text.len() {
        match placeholder_at(&text[position..]) {
            Some((length, name)) => {
                if text_start < position {
                    pieces.push(Piece::Text(&text[text_start..position]));
                }
                pieces.push(Piece::Placeholder(name));
                position += length;
                text_start = position;
            }
            None => {
                position += text[position..].chars().next().map_or(1, char::len_utf8);
            }
        }
    }
    if text_start < text.len() {
        pieces.push(Piece::Text(&text[text_start..]));
    }
    pieces
}

/// The length and name of a placeholder at the start of `text`.
fn placeholder_at(text: &str) -> Option<(usize, &str)> {
    let dotted_name = |rest: &str| {
        let length = name_length(rest, |character| {
            character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-')
        });
        (length > 0).then_some(length)
    };
    if let Some(rest) = text.strip_prefix("${") {
        let length = dotted_name(rest)?;
        return rest[length..]
            .starts_with('}')
            .then(|| (length + 3, &rest[..length]));
    }
    if let Some(rest) = text.strip_prefix('$') {
        let length = name_length(rest, |character| {
            character.is_ascii_alphanumeric() || character == '_'
        });
        return (length > 0).then(|| (length + 1, &rest[..length]));
    }
    let rest = text.strip_prefix('<')?;
    let length = dotted_name(rest)?;
    rest[length..]
        .starts_with('>')
        .then(|| (length + 2, &rest[..length]))
}

/// The length of a name that starts with a letter or `_` and continues with `continues`.
fn name_length(text: &str, continues: impl Fn(char) -> bool) -> usize {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) if first.is_ascii_alphabetic() || first == '_' => {
            1 + characters
                .take_while(|&character| continues(character))
                .count()
        }
        _ => 0,
    }
}

/// The identifier a placeholder becomes: `Build.BuildNumber` is `Build_BuildNumber`.
pub fn parameter_name(placeholder: &str) -> String {
    placeholder
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '_' {
                character
            } else {
                '_'
            }
        })
        .collect()
}

/// The whole string is one placeholder: its parameter name.
pub fn sole_placeholder(text: &str) -> Option<String> {
    match pieces(text).as_slice() {
        [Piece::Placeholder(name)] => Some(parameter_name(name)),
        _ => None,
    }
}

/// `.edge` identifiers: `[A-Za-z_][A-Za-z0-9_-]*`, except the literal words, which would read as
/// values where a name is listed.
fn is_identifier(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|character| {
            character.is_ascii_alphanumeric() || character == '_' || character == '-'
        })
        && !matches!(name, "true" | "false" | "null")
}

/// A key, label or listed name: bare when it is an identifier, quoted otherwise.
pub fn name(name: &str) -> String {
    if is_identifier(name) {
        name.to_owned()
    } else {
        quoted(name)
    }
}

/// A string literal of exactly `text`, with no interpolation.
pub fn quoted(text: &str) -> String {
    let mut literal = String::from("\"");
    escape_into(text, &mut literal);
    literal.push('"');
    literal
}

/// A string literal of `text` in which every placeholder becomes a `${parameter}` interpolation
/// (and the parameter is recorded in `context`).
pub fn template_string(text: &str, context: &mut Context) -> String {
    let mut literal = String::from("\"");
    for piece in pieces(text) {
        match piece {
            Piece::Text(text) => escape_into(text, &mut literal),
            Piece::Placeholder(placeholder) => {
                let parameter = parameter_name(placeholder);
                literal.push_str("${");
                literal.push_str(&parameter);
                literal.push('}');
                context.parameters.insert(parameter);
            }
        }
    }
    literal.push('"');
    literal
}

fn escape_into(text: &str, literal: &mut String) {
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        match character {
            '"' => literal.push_str("\\\""),
            '\\' => literal.push_str("\\\\"),
            '\n' => literal.push_str("\\n"),
            '\r' => literal.push_str("\\r"),
            '\t' => literal.push_str("\\t"),
            '$' if characters.peek() == Some(&'{') => literal.push_str("\\$"),
            control if control.is_control() => {
                literal.push_str(&format!("\\u{{{:x}}}", control as u32));
            }
            other => literal.push(other),
        }
    }
}

/// A raw string `r#"…"#` with as many `#` as the text needs, so it is kept byte for byte.
pub fn raw_string(text: &str) -> String {
    let mut hashes = 0;
    while text.contains(&format!("\"{}", "#".repeat(hashes))) {
        hashes += 1;
    }
    let fence = "#".repeat(hashes);
    format!("r{fence}\"{text}\"{fence}")
}

/// A duration in its largest exact unit: `7200` is `2h`.
pub fn duration(seconds: u64) -> String {
    if seconds == 0 {
        return "0s".to_owned();
    }
    crate::syntax::DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, multiplier)| seconds.is_multiple_of(*multiplier))
        .map_or_else(
            || format!("{seconds}s"),
            |(unit, multiplier)| format!("{}{unit}", seconds / multiplier),
        )
}

/// Any JSON value as a `.edge` value; strings may carry placeholders. `at` names the value in
/// errors.
pub fn value(json: &Json, at: &str, context: &mut Context) -> Result<String, ImportError> {
    check_depth(json, at)?;
    render(json, at, context)
}

fn render(json: &Json, at: &str, context: &mut Context) -> Result<String, ImportError> {
    Ok(match json {
        Json::Null => "null".to_owned(),
        Json::Bool(boolean) => boolean.to_string(),
        Json::Number(number) => number_literal(number, at)?,
        Json::String(text) => template_string(text, context),
        Json::Array(items) => {
            let items: Result<Vec<String>, ImportError> =
                items.iter().map(|item| render(item, at, context)).collect();
            format!("[{}]", items?.join(", "))
        }
        Json::Object(object) if object.is_empty() => "{}".to_owned(),
        Json::Object(object) => {
            let entries: Result<Vec<String>, ImportError> = object
                .iter()
                .map(|(key, item)| Ok(format!("{} = {}", name(key), render(item, at, context)?)))
                .collect();
            format!("{{ {} }}", entries?.join(", "))
        }
    })
}

/// Integers as integers and everything else as a float literal that reads back to the same
/// `f64` (Rust's shortest round-trip form always has a `.` or an exponent).
pub fn number_literal(number: &serde_json::Number, at: &str) -> Result<String, ImportError> {
    if let Some(integer) = number.as_i64() {
        return Ok(integer.to_string());
    }
    if number.is_u64() {
        return Err(ImportError::UnrepresentableNumber {
            at: at.to_owned(),
            number: number.to_string(),
        });
    }
    let float = number.as_f64().unwrap_or_default();
    Ok(format!("{float:?}"))
}

/// Refuses values nested more deeply than the `.edge` parser reads.
pub fn check_depth(json: &Json, at: &str) -> Result<(), ImportError> {
    let mut stack = vec![(json, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAXIMUM_VALUE_DEPTH {
            return Err(ImportError::TooDeep {
                at: at.to_owned(),
                limit: MAXIMUM_VALUE_DEPTH,
            });
        }
        match value {
            Json::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Json::Object(object) => stack.extend(object.values().map(|item| (item, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_three_placeholder_forms() {
        assert_eq!(
            pieces("<Registry>/hub:${TAG}-$ARCH!"),
            vec![
                Piece::Placeholder("Registry"),
                Piece::Text("/hub:"),
                Piece::Placeholder("TAG"),
                Piece::Text("-"),
                Piece::Placeholder("ARCH"),
                Piece::Text("!"),
            ]
        );
        assert_eq!(
            pieces("cost $5 <3 ${}"),
            vec![Piece::Text("cost $5 <3 ${}")]
        );
    }

    #[test]
    fn template_strings_interpolate_and_escape() {
        let mut context = Context::default();
        assert_eq!(
            template_string("<Build.BuildNumber>\t\"${}\"", &mut context),
            r#""${Build_BuildNumber}\t\"\${}\"""#
        );
        assert_eq!(
            context.parameters.into_iter().collect::<Vec<_>>(),
            ["Build_BuildNumber"]
        );
    }

    #[test]
    fn raw_strings_have_enough_hashes() {
        assert_eq!(
            raw_string("FROM /* INTO $upstream"),
            r#"r"FROM /* INTO $upstream""#
        );
        assert_eq!(raw_string(r#"a "b""#), r##"r#"a "b""#"##);
        assert_eq!(raw_string(r##"x = "#1""##), r###"r##"x = "#1""##"###);
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert_eq!(name("temp-sensor_2"), "temp-sensor_2");
        assert_eq!(name("5671/tcp"), "\"5671/tcp\"");
        assert_eq!(name("true"), "\"true\"");
        assert_eq!(name("3d"), "\"3d\"");
    }

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(90), "90s");
        assert_eq!(duration(86400 * 7), "7d");
        assert_eq!(duration(0), "0s");
    }
}
