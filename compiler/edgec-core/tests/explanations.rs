//! Every diagnostic code's explanation (what `edgec explain CODE` prints) carries an example that
//! produces the code and a fix that checks clean. Compiling both here keeps the explanations true
//! as the checker changes: an example that stops producing its code fails this test.

use edgec_core::check::source_rejection;
use edgec_core::diagnostic::{Code, Diagnostic, has_errors};
use edgec_core::source::{MAXIMUM_SOURCE_BYTES, SourceFile, SourceSet, decode_source};
use edgec_core::span::FileId;

/// Codes whose examples are marked `edge,ignore`, because one in-memory source file cannot show
/// them. The byte-level codes and the empty file are exercised by the last two tests here instead;
/// the import codes come only from the `edgec` binary's loader, which follows imports on disk, and
/// are exercised through the binary in `compiler/edgec/tests/bad_input.rs`.
const NOT_CHECKED_IN_MEMORY: &[(Code, &str)] = &[
    (
        Code::E0010,
        "the bytes are not UTF-8, so they cannot be a Markdown example",
    ),
    (Code::E0011, "the file is larger than 64 MiB"),
    (Code::E0012, "the file contains NUL bytes"),
    (
        Code::W0013,
        "the example is an empty file, which reads as a missing example",
    ),
    (
        Code::E0014,
        "imports are resolved on disk by the `edgec` loader",
    ),
    (
        Code::E0015,
        "imports are resolved on disk by the `edgec` loader",
    ),
];

/// One fenced block of an explanation: its text and whether it is marked `ignore`.
struct Example {
    text: String,
    ignored: bool,
}

/// The first fenced block after the heading `## {section}`, if its info string is `edge` or
/// `edge,ignore`. Any other block there is reported as missing, so a typo in the tag is caught.
fn fenced_block(explanation: &str, section: &str) -> Option<Example> {
    let heading = format!("## {section}");
    let mut lines = explanation
        .lines()
        .skip_while(|line| line.trim_end() != heading)
        .skip(1)
        .skip_while(|line| !line.starts_with("```"));
    let ignored = match lines.next()?.trim_end() {
        "```edge" => false,
        "```edge,ignore" => true,
        _ => return None,
    };
    let body: Vec<&str> = lines.take_while(|line| !line.starts_with("```")).collect();
    Some(Example {
        text: body.iter().map(|line| format!("{line}\n")).collect(),
        ignored,
    })
}

/// Checks `text` as the only file of a program, the way `edgec check` would.
fn diagnostics_of(text: &str) -> Vec<Diagnostic> {
    let mut sources = SourceSet::default();
    let tree = edgec_core::syntax::parse(text);
    let id = sources.add(SourceFile::new("example.edge", text));
    edgec_core::compile(&mut sources, &[(id, tree)], &[]).1
}

fn codes_of(diagnostics: &[Diagnostic]) -> Vec<&'static str> {
    diagnostics
        .iter()
        .map(|diagnostic| diagnostic.code().as_str())
        .collect()
}

/// Everything wrong with one code's explanation, as lines for the failure report.
fn problems(code: Code) -> Vec<String> {
    let explanation = code.explanation();
    let mut problems = Vec::new();
    if !explanation.starts_with(&format!("# {}: ", code.as_str())) {
        problems.push(format!(
            "the first line is not `# {}: title`",
            code.as_str()
        ));
    }
    let allowed_to_ignore = NOT_CHECKED_IN_MEMORY
        .iter()
        .any(|(exception, _)| *exception == code);
    match fenced_block(explanation, "Example") {
        None => problems.push("no ```edge block under `## Example`".into()),
        Some(example) if example.ignored => {
            if !allowed_to_ignore {
                problems.push("the example is marked `ignore` but can be checked".into());
            }
        }
        Some(example) => {
            let found = codes_of(&diagnostics_of(&example.text));
            if !found.contains(&code.as_str()) {
                problems.push(format!("the example produces {found:?}, not the code"));
            }
        }
    }
    match fenced_block(explanation, "Fix") {
        None => problems.push("no ```edge block under `## Fix`".into()),
        Some(fix) if fix.ignored => {
            if !allowed_to_ignore {
                problems.push("the fix is marked `ignore` but can be checked".into());
            }
        }
        Some(fix) => {
            let diagnostics = diagnostics_of(&fix.text);
            if has_errors(&diagnostics) {
                problems.push(format!("the fix has errors: {:?}", codes_of(&diagnostics)));
            }
        }
    }
    problems
}

#[test]
fn every_explanation_has_a_title_an_example_that_produces_its_code_and_a_clean_fix() {
    let failures: Vec<String> = Code::ALL
        .iter()
        .flat_map(|code| {
            problems(*code)
                .into_iter()
                .map(move |problem| format!("{}: {problem}", code.as_str()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "broken explanations:\n{}",
        failures.join("\n")
    );
}

/// The exceptions stay few and each one is an example that really is marked `ignore`.
#[test]
fn only_the_listed_exceptions_have_unchecked_examples() {
    for (code, reason) in NOT_CHECKED_IN_MEMORY {
        let example = fenced_block(code.explanation(), "Example");
        assert!(
            example.is_some_and(|example| example.ignored),
            "{} is listed as unchecked ({reason}) but its example is not marked `ignore`",
            code.as_str()
        );
    }
}

#[test]
fn an_empty_file_produces_w0013() {
    assert_eq!(codes_of(&diagnostics_of("")), ["W0013"]);
    assert_eq!(codes_of(&diagnostics_of("  \n\t\n")), ["W0013"]);
}

/// The code the loader reports for `bytes`, as the `edgec` binary would before parsing.
fn rejection_code(bytes: &[u8]) -> Option<&'static str> {
    let rejection = decode_source(bytes).err()?;
    Some(source_rejection(FileId(0), &rejection).code().as_str())
}

#[test]
fn source_bytes_that_cannot_be_a_file_produce_e0010_e0011_and_e0012() {
    assert_eq!(rejection_code(b"module m {\xff}"), Some("E0010"));
    assert_eq!(
        rejection_code(&vec![b' '; MAXIMUM_SOURCE_BYTES + 1]),
        Some("E0011")
    );
    assert_eq!(rejection_code(b"module m {\0}"), Some("E0012"));
    assert_eq!(rejection_code(b"module m {}"), None);
}
