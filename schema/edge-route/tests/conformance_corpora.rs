//! Every case of the route corpora in `testdata/conformance/` must pass through the public conformance API.

use edge_route::conformance::{CaseResult, parse_corpus, run_corpus};

fn run_corpus_file(file_name: &str) -> Vec<CaseResult> {
    let path = format!(
        "{}/../../testdata/conformance/{file_name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"));
    let corpus = parse_corpus(&text).unwrap_or_else(|error| panic!("parsing {path}: {error}"));
    run_corpus(&corpus)
}

fn assert_all_pass(file_name: &str) {
    let results = run_corpus_file(file_name);
    assert!(!results.is_empty(), "{file_name} has no cases");
    let failures: Vec<String> = results
        .iter()
        .filter(|result| !result.passed)
        .map(|result| {
            format!(
                "{}: expected {}, got {}",
                result.description, result.expected, result.actual
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

#[test]
fn body_query_corpus_passes() {
    assert_all_pass("route-body-queries.json");
}

#[test]
fn source_corpus_passes() {
    assert_all_pass("route-sources.json");
}
