//! Tests of the canonical formatter: before/after examples, and the properties every output must
//! have (idempotence, comment preservation, and a re-parse that yields the same tree).

use edgec_core::syntax::ast::*;
use edgec_core::syntax::format::format;
use edgec_core::syntax::parse;
use proptest::prelude::*;

/// Parses `source`, which must be well-formed, and formats it.
fn formatted(source: &str) -> String {
    let tree = parse(source);
    assert!(tree.errors.is_empty(), "{:?} in\n{source}", tree.errors);
    format(source, &tree)
}

/// Checks that `source` formats to `expected` and that the output has every formatter property.
fn check(source: &str, expected: &str) {
    let output = formatted(source);
    assert_eq!(output, expected, "formatting\n{source}");
    if let Err(failure) = properties(source) {
        panic!("{failure}");
    }
}

/// Checks idempotence, comment preservation, and that the output re-parses to the same tree.
fn properties(source: &str) -> Result<(), String> {
    let tree = parse(source);
    let output = format(source, &tree);
    let reparsed = parse(&output);
    if !reparsed.errors.is_empty() {
        return Err(format!(
            "{:?} re-parsing\n{output}\nformatted from\n{source}",
            reparsed.errors
        ));
    }
    if shape(&tree.entries) != shape(&reparsed.entries) {
        return Err(format!("tree changed: \n{source}\nformatted as\n{output}"));
    }
    if comment_texts(source, &tree) != comment_texts(&output, &reparsed) {
        return Err(format!(
            "comments changed: \n{source}\nformatted as\n{output}"
        ));
    }
    let again = format(&output, &reparsed);
    if again != output {
        return Err(format!(
            "not idempotent:\n{output}\nformatted again as\n{again}"
        ));
    }
    let final_newline = output.is_empty() || output.ends_with('\n') && !output.ends_with("\n\n");
    if output.lines().any(|line| line != line.trim_end()) || !final_newline {
        return Err(format!(
            "trailing whitespace or missing final newline in\n{output}"
        ));
    }
    Ok(())
}

/// The comments' texts, sorted, with the trailing whitespace that the formatter removes trimmed.
fn comment_texts(source: &str, tree: &SyntaxTree) -> Vec<String> {
    let mut texts: Vec<String> = tree
        .comments
        .iter()
        .map(|comment| source[comment.span.range()].trim_end().to_owned())
        .collect();
    texts.sort();
    texts
}

// A span-free rendering of the tree, for structural comparison.

fn shape(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(entry_shape)
        .collect::<Vec<_>>()
        .join(";")
}

fn entry_shape(entry: &Entry) -> String {
    format!(
        "entry({} {} : {} = {} {})",
        key_shape(&entry.key),
        entry.label.as_ref().map_or_else(String::new, key_shape),
        entry
            .type_annotation
            .as_ref()
            .map_or_else(String::new, type_shape),
        entry.value.as_ref().map_or_else(String::new, value_shape),
        entry
            .block
            .as_ref()
            .map_or_else(String::new, |block| format!(
                "{{{}}}",
                shape(&block.entries)
            )),
    )
}

fn key_shape(key: &Key) -> String {
    format!("{}{:?}", if key.quoted { "quoted" } else { "" }, key.name)
}

fn value_shape(value: &Value) -> String {
    match &value.kind {
        ValueKind::String(literal) => string_shape(literal),
        ValueKind::Integer(integer) => format!("int {integer}"),
        ValueKind::Float(float) => format!("float {}", float.to_bits()),
        ValueKind::Bool(boolean) => format!("bool {boolean}"),
        ValueKind::Null => "null".to_owned(),
        ValueKind::Size(bytes) => format!("size {bytes}"),
        ValueKind::Duration(seconds) => format!("duration {seconds}"),
        ValueKind::List(elements) => format!("[{}]", values_shape(elements)),
        ValueKind::Object(block) => format!("object{{{}}}", shape(&block.entries)),
        ValueKind::Reference(key) => format!("reference {}", key_shape(key)),
        ValueKind::Call {
            function,
            arguments,
        } => format!("call {}({})", key_shape(function), values_shape(arguments)),
        ValueKind::Range { low, high } => format!(
            "range {}..{}",
            low.as_deref().map_or_else(String::new, value_shape),
            high.as_deref().map_or_else(String::new, value_shape)
        ),
        ValueKind::Error => "error".to_owned(),
    }
}

fn values_shape(values: &[Value]) -> String {
    values.iter().map(value_shape).collect::<Vec<_>>().join(",")
}

fn string_shape(literal: &StringLiteral) -> String {
    let parts: Vec<String> = literal
        .parts
        .iter()
        .map(|part| match part {
            StringPart::Text(text) => format!("{:?}", text.text),
            StringPart::Interpolation(key) => format!("${{{}}}", key_shape(key)),
        })
        .collect();
    format!("string raw={} {}", literal.raw, parts.join("+"))
}

fn type_shape(type_expression: &TypeExpression) -> String {
    match &type_expression.kind {
        TypeKind::Named(key) => format!("named {}", key_shape(key)),
        TypeKind::List(element) => format!("[{}]", type_shape(element)),
        TypeKind::Object(block) => format!("object type{{{}}}", shape(&block.entries)),
        TypeKind::Union(alternatives) => format!("union {}", values_shape(alternatives)),
        TypeKind::Refined { base, refinements } => {
            let refinements: Vec<String> = refinements
                .iter()
                .map(|refinement| {
                    format!(
                        "{}={}",
                        refinement.name.as_ref().map_or_else(String::new, key_shape),
                        value_shape(&refinement.value)
                    )
                })
                .collect();
            format!("{}({})", type_shape(base), refinements.join(","))
        }
        TypeKind::Optional(inner) => format!("{}?", type_shape(inner)),
        TypeKind::Error => "error".to_owned(),
    }
}

// Examples.

#[test]
fn formats_the_quickstart_pipeline() {
    let source = r##"// Quickstart pipeline.
import "../hardware/gateway.edge"

param threshold: float(0..100) = 25.5
module SimulatedTemperatureSensor {
  image = "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"
  restart = always
  env { MessageCount = "-1" }
  create_options {
    HostConfig { PortBindings { "5671/tcp" = [{ HostPort = "5671" }] } }
  }
  output temperatureOutput: Telemetry
  twin {
    SendInterval: int(1..3600) = 5 // seconds
  }
}
deployment quickstart {
  route sensorToFilter = r#"FROM /messages/* INTO $upstream"# { priority = 0, ttl = 1h }
}
"##;
    let expected = r##"// Quickstart pipeline.
import "../hardware/gateway.edge"

param threshold: float(0..100) = 25.5

module SimulatedTemperatureSensor {
  image = "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"
  restart = always
  env {
    MessageCount = "-1"
  }
  create_options {
    HostConfig {
      PortBindings {
        "5671/tcp" = [{ HostPort = "5671" }]
      }
    }
  }
  output temperatureOutput: Telemetry
  twin {
    SendInterval: int(1..3600) = 5 // seconds
  }
}

deployment quickstart {
  route sensorToFilter = r#"FROM /messages/* INTO $upstream"# {
    priority = 0
    ttl = 1h
  }
}
"##;
    check(source, expected);
}

#[test]
fn spaces_operators_and_separators() {
    check(
        "a=1\nb:int(1..3,step=2)?=5\nc:\"x\"|\"y\"|3\nd=env(\"X\",1)\ne:[string]\n",
        "a = 1\nb: int(1..3, step = 2)? = 5\nc: \"x\" | \"y\" | 3\nd = env(\"X\", 1)\ne: [string]\n",
    );
}

#[test]
fn keeps_literals_and_keys_as_written() {
    let source =
        "\"quoted key\" = 0512MiB\nb = 1e3\nc = \"\\u{41}\\t${p}\"\nd = r\"x\"\ne = ..5\nf = 90m\n";
    check(source, source);
}

#[test]
fn prints_short_lists_and_objects_inline() {
    check(
        "a = [\n  1,\n  2\n]\nb = {\n  x = 1; y = [ ]\n  z = { }\n}\n",
        "a = [1, 2]\nb = { x = 1, y = [], z = {} }\n",
    );
}

#[test]
fn breaks_long_lists_one_element_per_line() {
    let element = "\"abcdefghijklmnopqrstuvwxyz\"";
    let source = format!("list = [{element}, {element}, {element}, {element}]\n");
    let expected = format!("list = [\n  {element},\n  {element},\n  {element},\n  {element},\n]\n");
    check(&source, &expected);
}

#[test]
fn breaks_objects_that_hold_entries_with_blocks() {
    check(
        "a = { b { c = 1 }, d = 2 }\n",
        "a = {\n  b {\n    c = 1\n  }\n  d = 2\n}\n",
    );
}

#[test]
fn prints_empty_blocks_compactly() {
    check("a {\n\n}\nb { }\n", "a {}\n\nb {}\n");
}

#[test]
fn keeps_one_blank_line_where_the_source_has_some() {
    check(
        "a {\n\n  x = 1\n\n\n  y = 2\n  z = 3\n\n}\nb = 1\nc = 2\n\n\nd = 3\n",
        "a {\n  x = 1\n\n  y = 2\n  z = 3\n}\n\nb = 1\nc = 2\n\nd = 3\n",
    );
}

#[test]
fn keeps_leading_trailing_and_dangling_comments() {
    check(
        "// head\n\n/* doc */ a = [ // first\n  1, /* one */ 2 // two\n  // end\n] // after\nb { // open\n  c = 1 //  c   \n  // last\n}\n",
        "// head\n\n/* doc */\na = [\n  // first\n  1, /* one */\n  2, // two\n  // end\n] // after\n\nb {\n  // open\n  c = 1 //  c\n  // last\n}\n",
    );
}

#[test]
fn moves_comments_in_unusual_places_before_their_entry() {
    check(
        "x {\n  a /* key */ = // value\n    f(/* argument */ 1)\n  b: \"x\" /* union */ | \"y\"\n}\n",
        "x {\n  /* key */\n  // value\n  /* argument */\n  a = f(1)\n  /* union */\n  b: \"x\" | \"y\"\n}\n",
    );
}

#[test]
fn breaks_lists_that_contain_comments() {
    check(
        "a = [1, f(/* c */ 2)]\n",
        "a = [\n  1,\n  /* c */\n  f(2),\n]\n",
    );
}

#[test]
fn formats_object_types() {
    check(
        "twin: { interval: int(1..3600) = 5, mode: \"a\"|\"b\" }?\n",
        "twin: { interval: int(1..3600) = 5, mode: \"a\" | \"b\" }?\n",
    );
    check(
        "twin: { interval: int = 5 // seconds\n }\n",
        "twin: {\n  interval: int = 5 // seconds\n}\n",
    );
}

#[test]
fn keeps_multi_line_raw_strings_verbatim() {
    check("a = [r\"x\n  y\"]\n", "a = [\n  r\"x\n  y\",\n]\n");
}

#[test]
fn ends_with_exactly_one_newline() {
    check("a = 1", "a = 1\n");
    check("a = 1\n\n\n", "a = 1\n");
    check("\n\n// only a comment\n\n", "// only a comment\n");
    assert_eq!(formatted(""), "");
}

// Property test over generated well-formed sources.

/// Whitespace and comments that may separate any two tokens.
fn trivia() -> BoxedStrategy<String> {
    prop_oneof![
        Just(""),
        Just(" "),
        Just("\n"),
        Just("\n\n"),
        Just(" /* block */ "),
        Just(" // line\n"),
        Just("\n  // own line\n"),
        Just(" /* two\n lines */ "),
    ]
    .prop_map(str::to_owned)
    .boxed()
}

/// What may separate two entries: a newline or a comma, with comments around.
fn entry_separator() -> BoxedStrategy<String> {
    prop_oneof![
        Just(","),
        Just(", "),
        Just("\n"),
        Just(";\n"),
        Just("\n\n\n"),
        Just(" // after\n"),
        Just(", /* between */ "),
        Just("\n/* alone */\n"),
    ]
    .prop_map(str::to_owned)
    .boxed()
}

fn literal() -> BoxedStrategy<String> {
    prop_oneof![
        Just("42"),
        Just("-7"),
        Just("2.5"),
        Just("1e3"),
        Just("512MiB"),
        Just("30s"),
        Just("true"),
        Just("null"),
        Just("always"),
        Just("\"text\""),
        Just("\"a${p}b\""),
        Just("\"q\\\"q\""),
        Just("r#\"raw \"q\"\"#"),
        Just("r\"two\n  lines\""),
        Just("\"a rather long string value that takes up a good share of the line width\""),
    ]
    .prop_map(str::to_owned)
    .boxed()
}

fn value() -> BoxedStrategy<String> {
    literal()
        .prop_recursive(3, 24, 4, |inner| {
            let element = (trivia(), inner.clone(), trivia());
            prop_oneof![
                (prop::collection::vec(element.clone(), 0..4), any::<bool>()).prop_map(
                    |(elements, trailing_comma)| {
                        let elements: Vec<String> = elements
                            .into_iter()
                            .map(|(before, value, after)| format!("{before}{value}{after}"))
                            .collect();
                        let comma = if trailing_comma && !elements.is_empty() {
                            ","
                        } else {
                            ""
                        };
                        format!("[{}{comma}]", elements.join(","))
                    }
                ),
                prop::collection::vec(element, 0..3).prop_map(|arguments| {
                    let arguments: Vec<String> = arguments
                        .into_iter()
                        .map(|(before, value, after)| format!("{before}{value}{after}"))
                        .collect();
                    format!("f({})", arguments.join(","))
                }),
                (
                    trivia(),
                    prop::collection::vec((key(), trivia(), trivia(), inner), 0..3),
                    entry_separator(),
                )
                    .prop_map(|(before, entries, separator)| {
                        let entries: Vec<String> = entries
                            .into_iter()
                            .map(|(key, around, after, value)| {
                                format!("{key}{around}={after}{value}")
                            })
                            .collect();
                        format!("{{{before}{}}}", entries.join(&separator))
                    }),
            ]
        })
        .boxed()
}

fn key() -> BoxedStrategy<String> {
    prop_oneof![Just("a"), Just("b_c"), Just("module"), Just("\"5671/tcp\"")]
        .prop_map(str::to_owned)
        .boxed()
}

fn type_expression() -> BoxedStrategy<String> {
    let named = prop_oneof![Just("int"), Just("string"), Just("Telemetry")].prop_map(str::to_owned);
    named
        .prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                (trivia(), inner.clone(), trivia()).prop_map(|(a, t, b)| format!("[{a}{t}{b}]")),
                inner.clone().prop_map(|t| format!("{t}?")),
                inner
                    .clone()
                    .prop_map(|t| format!("{t}(1..10, pattern = \"^a\")")),
                trivia().prop_map(|around| format!("\"a\"{around}|{around}\"b\" | -1")),
                prop::collection::vec((key(), trivia(), inner), 0..3).prop_map(|fields| {
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(key, around, t)| format!("{key}{around}:{around}{t}"))
                        .collect();
                    format!("{{{}}}", fields.join("\n"))
                }),
            ]
        })
        .boxed()
}

fn entry() -> BoxedStrategy<String> {
    let simple = (
        key(),
        prop::option::of(prop_oneof![Just(" label"), Just(" /* c */ \"lbl\"")]),
        prop::option::of((trivia(), type_expression())),
        prop::option::of((trivia(), trivia(), value())),
    )
        .prop_map(|(key, label, type_expression, value)| {
            let mut text = key;
            text.push_str(label.unwrap_or_default());
            if let Some((before, type_expression)) = type_expression {
                text.push_str(&format!("{before}: {type_expression}"));
            }
            if let Some((before, after, value)) = value {
                text.push_str(&format!("{before}={after}{value}"));
            }
            text
        })
        .boxed();
    simple
        .clone()
        .prop_recursive(3, 16, 4, move |inner| {
            (
                simple.clone(),
                trivia(),
                trivia(),
                prop::collection::vec((inner, entry_separator()), 0..4),
            )
                .prop_map(|(head, before, inside, entries)| {
                    let body: String = entries
                        .into_iter()
                        .map(|(entry, separator)| format!("{entry}{separator}"))
                        .collect();
                    format!("{head}{before}{{{inside}{body}}}")
                })
        })
        .boxed()
}

fn file() -> BoxedStrategy<String> {
    (
        trivia(),
        prop::collection::vec((entry(), entry_separator()), 0..5),
    )
        .prop_map(|(before, entries)| {
            let body: String = entries
                .into_iter()
                .map(|(entry, separator)| format!("{entry}{separator}"))
                .collect();
            format!("{before}{body}")
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn formatting_is_idempotent_and_faithful(source in file()) {
        let tree = parse(&source);
        prop_assert!(tree.errors.is_empty(), "{:?} in generated\n{}", tree.errors, source);
        let result = properties(&source);
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
