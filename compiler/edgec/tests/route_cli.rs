//! `edgec route test` and `edgec route eval`, run as a user would.

use std::path::PathBuf;
use std::process::Command;

fn edgec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgec"))
}

fn conformance_corpora() -> Vec<PathBuf> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/conformance");
    let mut corpora: Vec<PathBuf> = std::fs::read_dir(&directory)
        .expect("the conformance corpora are in testdata/conformance")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("route-"))
        })
        .collect();
    corpora.sort();
    corpora
}

fn scratch_file(name: &str, contents: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("edgec-route-cli-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a scratch directory");
    let path = directory.join(name);
    std::fs::write(&path, contents).expect("a scratch file");
    path
}

#[test]
fn every_conformance_corpus_case_passes() {
    let corpora = conformance_corpora();
    assert!(
        corpora.len() >= 2,
        "expected the route corpora, found {corpora:?}"
    );
    let output = edgec()
        .arg("route")
        .arg("test")
        .args(&corpora)
        .output()
        .expect("edgec runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let last_line = stdout.lines().last().unwrap_or_default();
    assert!(last_line.ends_with(" passed, 0 failed"), "{last_line}");
    let passed: usize = last_line
        .split(' ')
        .next()
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 130, "{last_line}");
}

#[test]
fn a_failing_case_is_printed_with_expected_and_actual_and_fails_the_run() {
    let corpus = scratch_file(
        "wrong.json",
        r#"{"message": {"source": "/messages", "app_properties": {"k": "v"}},
            "cases": [{"condition": "k = 'v'", "expected": "false"},
                      {"condition": "k = 'v'", "expected": "true"}]}"#,
    );
    let output = edgec()
        .args(["route", "test"])
        .arg(&corpus)
        .output()
        .expect("edgec runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("expected: false") && stdout.contains("actual:   true"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("1 passed, 1 failed"),
        "{stdout}"
    );
}

#[test]
fn a_corpus_that_is_not_json_is_a_usage_failure() {
    let corpus = scratch_file("broken.json", "{ not json");
    let output = edgec()
        .args(["route", "test"])
        .arg(&corpus)
        .output()
        .expect("edgec runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a route corpus"));
}

#[test]
fn eval_prints_the_three_valued_result() {
    let message = scratch_file(
        "message.json",
        r#"{"source": "/messages", "app_properties": {"level": "7"}}"#,
    );
    for (condition, expected) in [
        ("as_number(level) > 5", "true"),
        ("as_number(level) > 9", "false"),
        ("missing = 'x'", "undefined"),
    ] {
        let output = edgec()
            .args(["route", "eval", condition, "--message"])
            .arg(&message)
            .output()
            .expect("edgec runs");
        assert!(
            output.status.success(),
            "{condition}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            expected,
            "{condition}"
        );
    }
}

#[test]
fn eval_reports_a_type_error_with_its_code_and_exits_one() {
    let output = edgec()
        .args(["route", "eval", "'a' + 'b' = 'ab'"])
        .env("NO_COLOR", "1")
        .output()
        .expect("edgec runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("R0014"), "{stderr}");
}

#[test]
fn eval_rejects_an_unknown_message_key_naming_it_and_the_accepted_keys() {
    let message = scratch_file(
        "misspelt.json",
        r#"{"source": "/messages", "app_propertes": {"level": "7"}}"#,
    );
    let output = edgec()
        .args(["route", "eval", "as_number(level) > 5", "--message"])
        .arg(&message)
        .output()
        .expect("edgec runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "no truth value is printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("misspelt.json"), "{stderr}");
    assert!(stderr.contains("unknown field `app_propertes`"), "{stderr}");
    for accepted in ["source", "body", "app_properties", "system_properties"] {
        assert!(stderr.contains(&format!("`{accepted}`")), "{stderr}");
    }
}
