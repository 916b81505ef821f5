//! Running the shared conformance corpora (`route-*.json`) without I/O.
//!
//! The CLI reads corpus files and prints the results; this module only interprets their JSON
//! format (documented in `testdata/conformance/README.md`) and reports each case's outcome.

use serde::Deserialize;

use crate::condition_parser::parse_condition;
use crate::error::RouteError;
use crate::message::Message;
use crate::route_syntax::parse_route;
use crate::source_path::SourcePath;
use crate::type_checker::compile_condition;
use crate::value::Truth;

/// A corpus file.
#[derive(Debug, Clone, Deserialize)]
pub struct Corpus {
    /// Where the cases come from.
    #[serde(default)]
    pub origin: Option<String>,
    /// The message every condition case is evaluated against.
    #[serde(default)]
    pub message: Option<CorpusMessage>,
    /// The cases.
    pub cases: Vec<CorpusCase>,
}

/// A message in the corpus format. An unknown key is an error naming it and the accepted keys,
/// so a misspelt `app_propertes` is reported rather than silently evaluated as an empty message.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusMessage {
    /// The message's source path.
    #[serde(default)]
    pub source: String,
    /// An optional JSON body.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Application properties: strings or null.
    #[serde(default)]
    pub app_properties: serde_json::Map<String, serde_json::Value>,
    /// System properties: strings or null.
    #[serde(default)]
    pub system_properties: serde_json::Map<String, serde_json::Value>,
}

/// One case of a corpus.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CorpusCase {
    /// A condition evaluated against the corpus message.
    Condition {
        /// The WHERE text.
        condition: String,
        /// `true`, `false`, `undefined` or `compile_error`.
        expected: String,
    },
    /// A whole route that must parse or not.
    Route {
        /// The route text.
        route: String,
        /// `valid` or `invalid`.
        expected: String,
    },
    /// A source path matched against a message source.
    Source {
        /// The FROM path.
        from: String,
        /// The message's source path.
        message_source: String,
        /// `match` or `no_match`.
        expected: String,
    },
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// A description of the case for reports.
    pub description: String,
    /// The expected outcome as spelled in the corpus.
    pub expected: String,
    /// The actual outcome in the same spelling.
    pub actual: String,
    /// Whether they agree.
    pub passed: bool,
}

/// The outcome of evaluating a condition: a truth value, or the reasons it does not compile.
pub type ConditionOutcome = Result<Truth, Vec<RouteError>>;

/// Parses a corpus file's text.
pub fn parse_corpus(json: &str) -> Result<Corpus, serde_json::Error> {
    serde_json::from_str(json)
}

/// Runs every case of a corpus.
pub fn run_corpus(corpus: &Corpus) -> Vec<CaseResult> {
    let message = corpus
        .message
        .as_ref()
        .map(corpus_message_to_message)
        .unwrap_or_default();
    corpus
        .cases
        .iter()
        .map(|case| {
            let (description, expected, actual) = match case {
                CorpusCase::Condition {
                    condition,
                    expected,
                } => {
                    let actual = match evaluate_condition(condition, &message) {
                        Ok(truth) => truth.as_str(),
                        Err(_) => "compile_error",
                    };
                    (format!("WHERE {condition}"), expected, actual)
                }
                CorpusCase::Route { route, expected } => {
                    let actual = if route_is_valid(route) {
                        "valid"
                    } else {
                        "invalid"
                    };
                    (route.clone(), expected, actual)
                }
                CorpusCase::Source {
                    from,
                    message_source,
                    expected,
                } => {
                    let actual = if SourcePath::new(from).matches(message_source) {
                        "match"
                    } else {
                        "no_match"
                    };
                    (format!("FROM {from} vs {message_source}"), expected, actual)
                }
            };
            CaseResult {
                description,
                expected: expected.clone(),
                actual: actual.to_owned(),
                passed: expected == actual,
            }
        })
        .collect()
}

/// Tells whether a whole route text parses and type-checks.
fn route_is_valid(route: &str) -> bool {
    parse_route(route).is_ok_and(|parsed| {
        parsed
            .condition
            .as_ref()
            .is_none_or(|condition| compile_condition(condition, &parsed.source.path.kind).is_ok())
    })
}

/// Compiles a condition for the message's source and evaluates it.
pub fn evaluate_condition(condition: &str, message: &Message) -> ConditionOutcome {
    let expression = parse_condition(condition).map_err(|error| vec![error])?;
    let source = SourcePath::new(&message.source);
    let compiled = compile_condition(&expression, &source.kind)?;
    Ok(compiled.evaluate(message))
}

/// Evaluates a condition against a message given in the corpus message JSON format, as
/// `edgec route eval` does.
pub fn evaluate_condition_against_json(
    condition: &str,
    message_json: &str,
) -> Result<ConditionOutcome, serde_json::Error> {
    let message: CorpusMessage = serde_json::from_str(message_json)?;
    Ok(evaluate_condition(
        condition,
        &corpus_message_to_message(&message),
    ))
}

/// Converts a corpus message; a JSON body defaults `contentType`/`contentEncoding` to JSON UTF-8
/// when the corpus does not set them.
pub fn corpus_message_to_message(corpus_message: &CorpusMessage) -> Message {
    let mut message = Message::new(corpus_message.source.clone());
    for (name, value) in &corpus_message.app_properties {
        message.set_application_property(name, property_text(value));
    }
    for (name, value) in &corpus_message.system_properties {
        message.set_system_property(name, property_text(value));
    }
    if let Some(body) = &corpus_message.body {
        message.set_body(body.to_string().into_bytes());
        let has = |name: &str| {
            corpus_message
                .system_properties
                .keys()
                .any(|key| key.eq_ignore_ascii_case(name))
        };
        if !has("contentType") {
            message.set_system_property("contentType", Some("application/json".to_owned()));
        }
        if !has("contentEncoding") {
            message.set_system_property("contentEncoding", Some("utf-8".to_owned()));
        }
    }
    message
}

fn property_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}
