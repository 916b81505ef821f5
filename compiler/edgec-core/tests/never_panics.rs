//! The parser, the checker, the formatter and the renderers must turn every input into a result or
//! diagnostics, never a panic or a stack overflow: `edgec` runs them on whatever files it is given.
//!
//! Three kinds of input are tried: arbitrary strings, sequences of `.edge` tokens (which get far
//! past the lexer into the checker), and small mutations of the quickstart recipe (which keep most
//! of a real program intact). Every property runs on a thread with an explicit 2 MiB stack, the
//! size of a Rust test thread and less than a main thread gets, so deep inputs that only work
//! thanks to a large stack are caught here.

use edgec_core::render::{render_human, render_json};
use edgec_core::source::{SourceFile, SourceSet};
use edgec_core::span::FileId;
use edgec_core::syntax::parse;
use edgec_core::{compile, format_source};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

const STACK_BYTES: usize = 2 * 1024 * 1024;

const QUICKSTART: &str = include_str!("../../../recipes/quickstart/quickstart.edge");
const GATEWAY: &str = include_str!("../../../recipes/hardware/gateway-x86.edge");

/// Runs every stage on `text` as the file `fuzz.edge`, next to the gateway hardware file that the
/// quickstart imports, so mutated quickstarts still resolve their target.
fn exercise(text: &str) {
    let mut sources = SourceSet::default();
    let gateway = sources.add(SourceFile::new("gateway-x86.edge", GATEWAY));
    let id = sources.add(SourceFile::new("fuzz.edge", text));
    let trees = vec![(gateway, parse(GATEWAY)), (id, parse(text))];
    let (_, mut diagnostics) = compile(&mut sources, &trees, &[]);
    format_and_reparse(text, id, &mut diagnostics);
    // Human rendering costs time proportional to the file for every diagnostic, so it is limited
    // to the first few; they are rendered the same way as the rest.
    let shown = diagnostics.len().min(HUMAN_RENDERED);
    let _ = render_human(&diagnostics[..shown], &sources, true);
    let _ = render_json(&diagnostics, &sources);
}

const HUMAN_RENDERED: usize = 50;

/// Formats `text`; output that does not parse again would be a formatter bug, so it fails the
/// property. Syntax errors are added to `diagnostics` so they are rendered too.
fn format_and_reparse(
    text: &str,
    id: FileId,
    diagnostics: &mut Vec<edgec_core::diagnostic::Diagnostic>,
) {
    match format_source(text, id) {
        Ok(formatted) => {
            let errors = parse(&formatted).errors;
            assert!(
                errors.is_empty(),
                "formatted output does not parse: {errors:?}\n{formatted}"
            );
        }
        Err(syntax_errors) => diagnostics.extend(syntax_errors),
    }
}

/// Runs `property` on `cases` values of the strategy that `strategy` builds, on a thread with a
/// [`STACK_BYTES`] stack, and fails with the shrunk input if any case panics. The strategy is built
/// on that thread because recursive strategies cannot be sent between threads.
fn check_on_small_stack<S>(
    cases: u32,
    strategy: impl FnOnce() -> S + Send + 'static,
    property: fn(&str),
) where
    S: Strategy<Value = String>,
{
    let outcome = std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let strategy = strategy();
            let config = Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            };
            TestRunner::new(config)
                .run(&strategy, |input| {
                    property(&input);
                    Ok(())
                })
                .map_err(|failure| failure.to_string())
        })
        .expect("spawn a test thread")
        .join()
        .expect("proptest reports panics as failures");
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// Runs `property` once on `input` on a thread with a [`STACK_BYTES`] stack; a stack overflow
/// aborts the whole test binary, which fails the test run just as loudly.
fn run_on_small_stack(input: String, property: fn(&str)) {
    std::thread::Builder::new()
        .stack_size(STACK_BYTES)
        .spawn(move || property(&input))
        .expect("spawn a test thread")
        .join()
        .unwrap_or_else(|_| panic!("panicked on a deep input"));
}

// (a) Arbitrary strings.

#[test]
fn arbitrary_strings_never_panic() {
    check_on_small_stack(300, any::<String>, exercise);
}

#[test]
fn arbitrary_printable_ascii_never_panics() {
    check_on_small_stack(300, || "[ -~\n\t]{0,400}", exercise);
}

// (b) Sequences of `.edge` tokens.

const WORDS: &[&str] = &[
    "import",
    "param",
    "hardware",
    "schema",
    "module",
    "deployment",
    "image",
    "platform",
    "version",
    "status",
    "restart",
    "startup_order",
    "after",
    "pull",
    "env",
    "create_options",
    "HostConfig",
    "limits",
    "input",
    "output",
    "twin",
    "target",
    "modules",
    "route",
    "priority",
    "ttl",
    "edge_agent",
    "edge_hub",
    "schema_version",
    "store_and_forward_ttl",
    "registry",
    "address",
    "username",
    "password",
    "arch",
    "cpus",
    "memory",
    "storage",
    "security",
    "compatible",
    "amd64",
    "arm64",
    "arm32v7",
    "running",
    "stopped",
    "always",
    "never",
    "on-failure",
    "on-create",
    "local",
    "pkcs11",
    "tpm",
    "none",
    "int",
    "float",
    "string",
    "bool",
    "size",
    "duration",
    "any",
    "binary",
    "pattern",
    "length",
    "true",
    "false",
    "null",
    "a",
    "m",
    "x",
    "gw",
    "Telemetry",
    "temperature",
    "input1",
    "output1",
    "_",
    "é",
];

const PUNCTUATION: &[&str] = &[
    "{", "}", "[", "]", "(", ")", "=", ":", ",", "|", "?", "..", "\n", "\n", " ", "//c\n", "/*",
    "*/", ";", "$", "#", "\"",
];

const LITERALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "3.5",
    "-0.0",
    "1e309",
    "99999999999999999999",
    "0x1f",
    "256MiB",
    "8GiB",
    "1TiB",
    "0B",
    "1.5KiB",
    "18446744073709551616TiB",
    "1h",
    "30s",
    "2d",
    "5m",
    "-1h",
    "\"a:1\"",
    "\"\"",
    "\"${a}\"",
    "\"${\"",
    "\"\\u{110000}\"",
    "\"\\q\"",
    "r#\"x\"#",
    "r#\"unterminated",
    "local(\"dir\")",
    "env(\"VAR\")",
    "pkcs11(\"label\")",
    "int(1..10)",
    "1..",
    "..2",
    "string(pattern = \"^a\", length = 1..64)",
    "\"a\" | \"b\"",
];

/// A route condition: comparisons on body fields, system and application properties, combined
/// with the logical operators and built-in functions, nested to a small depth.
fn condition() -> impl Strategy<Value = String> {
    let operand = prop::sample::select(vec![
        "$body.machine.temperature",
        "$body.ambient.humidity",
        "$body.timeCreated",
        "$body.missing.field",
        "$body",
        "temperature",
        "$connectionDeviceId",
        "$contentType",
        "25",
        "-1.5",
        "'text'",
        "true",
        "null",
        "undefined",
        "LENGTH($body.timeCreated)",
        "IS_DEFINED($body.machine)",
        "UPPER('a')",
    ]);
    let comparison = prop::sample::select(vec![
        "=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "||",
    ]);
    let leaf =
        (operand.clone(), comparison, operand).prop_map(|(a, op, b)| format!("{a} {op} {b}"));
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} AND {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) OR ({b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

/// A route string with a random source, an optional random condition and a random sink.
fn route_string() -> impl Strategy<Value = String> {
    let source = prop::sample::select(vec![
        "/messages/*",
        "/messages/modules/SimulatedTemperatureSensor/outputs/temperatureOutput",
        "/messages/modules/filter/outputs/output1",
        "/messages/modules/filter/outputs/*",
        "/twinChangeNotifications",
        "/messages/modules/nope/outputs/x",
        "/bogus",
    ]);
    let sink = prop::sample::select(vec![
        "$upstream",
        "BrokeredEndpoint(\\\"/modules/filter/inputs/input1\\\")",
        "BrokeredEndpoint(\\\"/modules/nope/inputs/x\\\")",
        "nowhere",
    ]);
    (source, proptest::option::of(condition()), sink).prop_map(|(source, condition, sink)| {
        let condition = condition.map_or_else(String::new, |c| format!(" WHERE {c}"));
        format!("\"FROM {source}{condition} INTO {sink}\"")
    })
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(WORDS).prop_map(str::to_owned),
        4 => prop::sample::select(PUNCTUATION).prop_map(str::to_owned),
        2 => prop::sample::select(LITERALS).prop_map(str::to_owned),
        1 => route_string(),
    ]
}

fn token_sequence(length: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(token(), length).prop_map(|tokens| tokens.join(" "))
}

#[test]
fn token_sequences_never_panic() {
    check_on_small_stack(400, || token_sequence(0..120), exercise);
}

/// Token sequences inside a well-formed construct header, so the checker's per-construct code
/// (attributes, twins, routes) sees them rather than the top-level "unknown construct" check.
#[test]
fn token_sequences_inside_constructs_never_panic() {
    check_on_small_stack(400, constructs_with_token_bodies, exercise);
}

fn constructs_with_token_bodies() -> impl Strategy<Value = String> {
    let construct = prop::sample::select(vec![
        "hardware gw",
        "schema Telemetry",
        "module m",
        "deployment d",
        "module m { twin",
        "deployment d { edge_hub",
        "module m { create_options",
        "param p:",
    ]);
    (construct, token_sequence(0..60))
        .prop_map(|(header, body)| format!("{header} {{\n{body}\n}}\n"))
}

#[test]
fn routes_with_random_conditions_never_panic() {
    check_on_small_stack(300, quickstarts_with_random_routes, exercise);
}

fn quickstarts_with_random_routes() -> impl Strategy<Value = String> {
    prop::collection::vec(route_string(), 1..6).prop_map(|routes| {
        let routes: String = routes
            .iter()
            .enumerate()
            .map(|(index, route)| format!("  route r{index} = {route}\n"))
            .collect();
        QUICKSTART.replace("  edge_hub {", &format!("{routes}  edge_hub {{"))
    })
}

// (c) Mutations of the quickstart recipe.

#[derive(Debug, Clone)]
enum Mutation {
    Delete(Index, usize),
    InsertByte(Index, u8),
    InsertToken(Index, String),
    Duplicate(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1..8usize).prop_map(|(at, length)| Mutation::Delete(at, length)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::InsertByte(at, byte)),
        (any::<Index>(), token()).prop_map(|(at, token)| Mutation::InsertToken(at, token)),
        (any::<Index>(), 1..40usize).prop_map(|(at, length)| Mutation::Duplicate(at, length)),
    ]
}

/// Applies byte-level mutations to `text`; the result is decoded lossily because the CLI would
/// have refused invalid UTF-8 before the core saw it.
fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for mutation in mutations {
        let length = bytes.len();
        match mutation {
            Mutation::Delete(at, count) if length > 0 => {
                let start = at.index(length);
                bytes.drain(start..(start + count).min(length));
            }
            Mutation::Delete(..) => {}
            Mutation::InsertByte(at, byte) => bytes.insert(at.index(length + 1), *byte),
            Mutation::InsertToken(at, token) => {
                let start = at.index(length + 1);
                bytes.splice(start..start, token.bytes());
            }
            Mutation::Duplicate(at, count) if length > 0 => {
                let start = at.index(length);
                let copy = bytes[start..(start + count).min(length)].to_vec();
                bytes.splice(start..start, copy);
            }
            Mutation::Duplicate(..) => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutations_of_the_quickstart_never_panic() {
    check_on_small_stack(400, mutated_quickstarts, exercise);
}

fn mutated_quickstarts() -> impl Strategy<Value = String> {
    prop::collection::vec(mutation(), 1..6).prop_map(|mutations| mutate(QUICKSTART, &mutations))
}

#[test]
fn the_unmutated_quickstart_checks_cleanly() {
    // Guards the mutation test: if the quickstart itself did not check, mutations of it would
    // exercise only the error paths.
    let mut sources = SourceSet::default();
    let gateway = sources.add(SourceFile::new("gateway-x86.edge", GATEWAY));
    let id = sources.add(SourceFile::new("quickstart.edge", QUICKSTART));
    let trees = vec![(gateway, parse(GATEWAY)), (id, parse(QUICKSTART))];
    let (_, diagnostics) = compile(&mut sources, &trees, &[]);
    assert!(
        diagnostics.is_empty(),
        "{}",
        render_human(&diagnostics, &sources, false)
    );
}

// Deep inputs, each run once on the small stack.

const DEPTH: usize = 10_000;

#[test]
fn deeply_nested_lists_objects_and_blocks_do_not_overflow_the_stack() {
    for input in [
        format!("x = {}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        format!("x = {}{}", "{ a = ".repeat(DEPTH), "}".repeat(DEPTH)),
        format!("module m {}{}", "{ a ".repeat(DEPTH), "}".repeat(DEPTH)),
        format!("x = {}", "[".repeat(DEPTH)),
        format!("x = f{}{}", "(".repeat(DEPTH), ")".repeat(DEPTH)),
    ] {
        run_on_small_stack(input, exercise);
    }
}

#[test]
fn deeply_nested_types_do_not_overflow_the_stack() {
    for input in [
        format!("param p: {}int{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        format!("param p: int{}", "?".repeat(DEPTH)),
        format!(
            "schema S {{ f: {}int{} }}",
            "{ g: ".repeat(DEPTH),
            "}".repeat(DEPTH)
        ),
        format!("param p: {}", vec!["\"a\""; DEPTH].join(" | ")),
    ] {
        run_on_small_stack(input, exercise);
    }
}

#[test]
fn deeply_nested_route_conditions_do_not_overflow_the_stack() {
    for condition in [
        format!(
            "{}$body.machine.temperature > 1{}",
            "(".repeat(DEPTH),
            ")".repeat(DEPTH)
        ),
        format!("{}true", "NOT ".repeat(DEPTH)),
        vec!["$body.machine.temperature > 1"; DEPTH].join(" AND "),
        format!("{}1{}", "LENGTH(".repeat(DEPTH), ")".repeat(DEPTH)),
        format!("1{}", " + 1".repeat(DEPTH)),
    ] {
        let route = format!(
            "  route deep = \"FROM /messages/modules/filter/outputs/output1 WHERE {condition} INTO $upstream\"\n  edge_hub {{"
        );
        run_on_small_stack(QUICKSTART.replace("  edge_hub {", &route), exercise);
    }
}

#[test]
fn long_flat_inputs_do_not_overflow_the_stack() {
    for input in [
        "x = 1\n".repeat(DEPTH),
        format!("x = [{}]", "1, ".repeat(DEPTH)),
        format!("x = \"{}\"", "${a}".repeat(DEPTH)),
        "// comment\n".repeat(DEPTH),
        format!("module m {{ after = [{}] }}", "m, ".repeat(DEPTH)),
    ] {
        run_on_small_stack(input, exercise);
    }
}
