//! `edgec route test` (conformance corpora) and `edgec route eval` (one condition).

use std::path::{Path, PathBuf};

use edge_route::conformance::{evaluate_condition_against_json, parse_corpus, run_corpus};
use edgec_core::diagnostic::{Diagnostic, DiagnosticKind};
use edgec_core::source::{SourceFile, SourceSet};
use edgec_core::span::{Location, Span};

use crate::Status;
use crate::output::{colour_on_stderr, usage_error};

/// The message a condition is evaluated against when `--message` is not given: device telemetry
/// without properties or body.
const DEFAULT_MESSAGE: &str = r#"{"source": "/messages"}"#;

pub fn test(files: &[PathBuf]) -> Status {
    let (mut passed, mut failed) = (0usize, 0usize);
    for path in files {
        let corpus = match read(path).and_then(|text| {
            parse_corpus(&text)
                .map_err(|error| format!("`{}` is not a route corpus: {error}", path.display()))
        }) {
            Ok(corpus) => corpus,
            Err(message) => {
                usage_error(&message);
                return Status::Failure;
            }
        };
        for result in run_corpus(&corpus) {
            if result.passed {
                passed += 1;
            } else {
                failed += 1;
                out!(
                    "FAIL {}: {}\n  expected: {}\n  actual:   {}",
                    path.display(),
                    result.description,
                    result.expected,
                    result.actual
                );
            }
        }
    }
    out!("{passed} passed, {failed} failed");
    if failed == 0 {
        Status::Clean
    } else {
        Status::Errors
    }
}

pub fn eval(condition: &str, message_path: Option<&Path>) -> Status {
    let message_json = match message_path.map(read).transpose() {
        Ok(json) => json.unwrap_or_else(|| DEFAULT_MESSAGE.to_owned()),
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    match evaluate_condition_against_json(condition, &message_json) {
        Err(error) => {
            let file = message_path.map_or("the message".to_owned(), |path| {
                format!("`{}`", path.display())
            });
            usage_error(&format!(
                "{file} is not a message in the corpus message format: {error}"
            ));
            Status::Failure
        }
        Ok(Ok(truth)) => {
            out!("{}", truth.as_str());
            Status::Clean
        }
        Ok(Err(errors)) => {
            let mut sources = SourceSet::default();
            let file = sources.add(SourceFile::new("condition", condition));
            let diagnostics: Vec<Diagnostic> = errors
                .into_iter()
                .map(|error| {
                    let span = Span::new(error.span.start, error.span.end);
                    Diagnostic::new(DiagnosticKind::Route(error), Location::new(file, span))
                })
                .collect();
            err_raw!(
                "{}",
                edgec_core::render::render_human(&diagnostics, &sources, colour_on_stderr())
            );
            Status::Errors
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read `{}`: {error}", path.display()))
}
