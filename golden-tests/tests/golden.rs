//! The golden-file harness: runs every case under `cases/` and compares what edgec prints with
//! the expectation files beside it.
//!
//! Suites, each a folder of `cases/`:
//! - `check/`: `NAME.edge`, or a folder `NAME/` whose `main.edge` imports the rest, checked as
//!   `edgec check` would check it, with the `name=value` lines of an optional `NAME.set` as
//!   `--set` overrides. Expected: `NAME.stderr` (the human rendering) and `NAME.json` (JSON
//!   Lines), both empty for a clean case.
//! - `fmt/`: `NAME.edge`, formatted as `edgec fmt` would. Expected: `NAME.formatted`, or
//!   `NAME.stderr` when the file has syntax errors and is not formatted.
//! - `generated/`: inputs listed in [`GENERATED`], made at test time because they are too large
//!   or too odd to commit. Expected as for `check/`.
//! - `build/`: every recipe folder of `../recipes` that defines deployments, built as
//!   `edgec build` would. Expected: `build/RECIPE/DEPLOYMENT.json`, the emitted IoT Edge
//!   manifest. Registry credentials read from the build environment appear as `${NAME}`.
//!
//! `EDGEC_BLESS=1 cargo test -p golden-tests` rewrites the expectations from the actual output.
//! Names are relative to the crate, so output is the same on every machine. Arguments that do
//! not start with `-` run only the cases whose names contain them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use edgec::load::{Loader, load};
use edgec_core::check::source_rejection;
use edgec_core::diagnostic::{Code, Diagnostic, Severity, sort_diagnostics};
use edgec_core::render::{render_human, render_json};
use edgec_core::source::{MAXIMUM_SOURCE_BYTES, SourceFile, SourceSet, decode_source};

/// Makes the bytes of a generated input.
type Generator = fn() -> Vec<u8>;

/// Inputs made at test time rather than committed: a source over the size limit would add 64 MiB
/// to the repository, and generating the other rejected encodings keeps their bytes visible here.
const GENERATED: &[(&str, Generator)] = &[
    ("too-large", too_large),
    ("latin-1", || {
        b"// caf\xe9 menu\nhardware cafe {}\n".to_vec()
    }),
    ("nul-byte", || {
        b"module sensor {\n  image = \"a\0b\"\n}\n".to_vec()
    }),
    ("utf-16", || {
        "param a: int = 1\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect()
    }),
];

/// One byte over the limit, made of lines that would otherwise be a valid program.
fn too_large() -> Vec<u8> {
    let line = b"// a generated comment line that pads the file past the size limit\n";
    let mut bytes: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(MAXIMUM_SOURCE_BYTES)
        .collect();
    bytes.push(b'\n');
    bytes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    Check,
    Format,
    Generated,
}

impl Suite {
    const ALL: [Suite; 3] = [Suite::Check, Suite::Format, Suite::Generated];

    fn directory(self) -> &'static str {
        match self {
            Suite::Check => "cases/check",
            Suite::Format => "cases/fmt",
            Suite::Generated => "cases/generated",
        }
    }

    /// The extensions of the files a case of this suite is compared with.
    fn expectations(self) -> &'static [&'static str] {
        match self {
            Suite::Check | Suite::Generated => &["stderr", "json"],
            Suite::Format => &["formatted", "stderr"],
        }
    }

    /// The extensions of files beside a case that belong to it without being inputs.
    fn companions(self) -> &'static [&'static str] {
        match self {
            Suite::Check => &["stderr", "json", "set"],
            Suite::Format => &["formatted", "stderr"],
            Suite::Generated => &["stderr", "json"],
        }
    }
}

enum Input {
    /// A single `.edge` file.
    File(String),
    /// The `main.edge` of a folder, whose imports are followed.
    Program(String),
    /// Bytes made by the harness, shown under this file name.
    Generated(String, Generator),
}

struct Case {
    suite: Suite,
    /// The case's path without extension, relative to the crate: `cases/check/NAME`.
    stem: String,
    input: Input,
}

/// What running a case produced: the text of each expectation file, and what it reported.
#[derive(Default)]
struct Outcome {
    files: BTreeMap<&'static str, String>,
    codes: BTreeSet<Code>,
    has_errors: bool,
}

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = std::env::var("EDGEC_BLESS").is_ok_and(|value| !value.is_empty() && value != "0");
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect();
    let (cases, mut failures) = discover(root);
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|case| filters.is_empty() || filters.iter().any(|f| case.stem.contains(f)))
        .collect();
    let mut codes = BTreeSet::new();
    let (mut passed, mut failed, mut error_cases) = (0, 0, 0);
    for case in &selected {
        let case_failures = match run(root, case) {
            Ok(outcome) => {
                codes.extend(outcome.codes.iter().copied());
                error_cases += usize::from(outcome.has_errors && case.suite != Suite::Format);
                compare(root, case, &outcome, bless)
            }
            Err(message) => vec![format!("{}: {message}", case.stem)],
        };
        if case_failures.is_empty() {
            passed += 1;
        } else {
            println!("FAILED {}", case.stem);
            failed += 1;
            failures.extend(case_failures);
        }
    }
    if filters.is_empty() {
        failures.extend(missing_codes(&codes));
    }
    let (build_passed, build_failed) = run_build_suite(root, &filters, bless, &mut failures);
    passed += build_passed;
    failed += build_failed;
    for failure in &failures {
        println!("\n{failure}");
    }
    let check_cases = selected
        .iter()
        .filter(|case| case.suite != Suite::Format)
        .count();
    println!(
        "\n{check_cases} check cases ({error_cases} with errors), {} format cases, {} of {} codes seen",
        selected.len() - check_cases,
        codes.len(),
        Code::ALL.len()
    );
    if bless {
        println!("expectations blessed (EDGEC_BLESS is set)");
    }
    println!("golden: {passed} passed, {failed} failed");
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The codes of `Code::ALL` that no case reported, as a failure.
fn missing_codes(seen: &BTreeSet<Code>) -> Option<String> {
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|code| !seen.contains(code))
        .map(|code| code.as_str())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "no case reports these codes; add a case for each: {}",
            missing.join(", ")
        )
    })
}

/// Every case of every suite, and the problems with the layout of `cases/` (orphaned
/// expectations, stray files), which fail the run like a mismatch would.
fn discover(root: &Path) -> (Vec<Case>, Vec<String>) {
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for suite in Suite::ALL {
        let directory = suite.directory();
        let entries = match sorted_entries(&root.join(directory)) {
            Ok(entries) => entries,
            Err(error) => {
                problems.push(format!("cannot list `{directory}`: {error}"));
                continue;
            }
        };
        let mut companions: Vec<(String, String)> = Vec::new();
        let first_case = cases.len();
        if suite == Suite::Generated {
            cases.extend(GENERATED.iter().map(|(name, make)| Case {
                suite,
                stem: format!("{directory}/{name}"),
                input: Input::Generated(format!("{directory}/{name}.edge"), *make),
            }));
        }
        for (file_name, is_directory) in entries {
            let relative = format!("{directory}/{file_name}");
            let (stem, extension) = file_name.rsplit_once('.').unwrap_or((&file_name, ""));
            let stem_path = format!("{directory}/{stem}");
            if is_directory && suite == Suite::Check {
                if root.join(&relative).join("main.edge").is_file() {
                    cases.push(Case {
                        suite,
                        stem: relative.clone(),
                        input: Input::Program(format!("{relative}/main.edge")),
                    });
                } else {
                    problems.push(format!("`{relative}` is a case folder without `main.edge`"));
                }
            } else if !is_directory && extension == "edge" && suite != Suite::Generated {
                cases.push(Case {
                    suite,
                    stem: stem_path,
                    input: Input::File(relative),
                });
            } else if !is_directory && suite.companions().contains(&extension) {
                companions.push((stem_path, relative));
            } else {
                problems.push(format!("`{relative}` is not part of any case"));
            }
        }
        let stems: BTreeSet<&str> = cases[first_case..]
            .iter()
            .map(|case| case.stem.as_str())
            .collect();
        problems.extend(
            companions
                .iter()
                .filter(|(stem, _)| !stems.contains(stem.as_str()))
                .map(|(_, file)| format!("`{file}` is orphaned: its case's input is missing")),
        );
    }
    (cases, problems)
}

/// A folder's entries as (name, is a folder), sorted so that runs are reproducible.
fn sorted_entries(directory: &Path) -> std::io::Result<Vec<(String, bool)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        entries.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.file_type()?.is_dir(),
        ));
    }
    entries.sort();
    Ok(entries)
}

fn run(root: &Path, case: &Case) -> Result<Outcome, String> {
    match case.suite {
        Suite::Check | Suite::Generated => run_check(root, case),
        Suite::Format => run_format(root, case),
    }
}

/// Loads and checks a case the way `edgec check` does, and renders what it reports.
fn run_check(root: &Path, case: &Case) -> Result<Outcome, String> {
    // Loaded by the CLI's own loader; cargo runs tests in the crate folder, so the names it
    // gives files are the relative paths used here.
    let mut loader = Loader::default();
    match &case.input {
        Input::File(path) | Input::Program(path) => {
            let bytes = std::fs::read(root.join(path))
                .map_err(|error| format!("cannot read `{path}`: {error}"))?;
            loader.add_root(Path::new(path), &bytes);
        }
        Input::Generated(name, make) => loader.add_root(Path::new(name), &make()),
    }
    let mut loader = loader.finish();
    let overrides = read_overrides(&root.join(format!("{}.set", case.stem)))?;
    let (_, diagnostics) = edgec_core::compile(&mut loader.sources, &loader.trees, &overrides);
    let mut all = loader.diagnostics;
    all.extend(diagnostics);
    sort_diagnostics(&mut all);
    Ok(Outcome {
        files: BTreeMap::from([
            ("stderr", render_human(&all, &loader.sources, false)),
            ("json", render_json(&all, &loader.sources)),
        ]),
        codes: all.iter().map(Diagnostic::code).collect(),
        has_errors: all.iter().any(|d| d.severity() == Severity::Error),
    })
}

/// `name=value` lines, as `--set name=value` arguments; blank lines are skipped.
fn read_overrides(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("cannot read `{}`: {error}", path.display())),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match line.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.to_owned()))
            }
            _ => Err(format!(
                "`{line}` in `{}` is not `name=value`",
                path.display()
            )),
        })
        .collect()
}

/// Formats a case the way `edgec fmt` does; the output must also be stable under formatting.
fn run_format(root: &Path, case: &Case) -> Result<Outcome, String> {
    let Input::File(path) = &case.input else {
        return Err("format cases are single files".into());
    };
    let bytes = std::fs::read(root.join(path)).map_err(|error| format!("cannot read: {error}"))?;
    let mut sources = SourceSet::default();
    let rendered = |diagnostics: &[Diagnostic], sources: &SourceSet| Outcome {
        files: BTreeMap::from([("stderr", render_human(diagnostics, sources, false))]),
        codes: diagnostics.iter().map(Diagnostic::code).collect(),
        has_errors: true,
    };
    let text = match decode_source(&bytes) {
        Ok(text) => text,
        Err(rejection) => {
            let id = sources.add(SourceFile::new(path.clone(), String::new()));
            return Ok(rendered(&[source_rejection(id, &rejection)], &sources));
        }
    };
    let id = sources.add(SourceFile::new(path.clone(), text.clone()));
    match edgec_core::format_source(&text, id) {
        Ok(formatted) => {
            match edgec_core::format_source(&formatted, id) {
                Ok(again) if again == formatted => {}
                Ok(again) => {
                    return Err(format!(
                        "formatting is not idempotent; formatting the output again changes it:\n{}",
                        diff(&formatted, &again)
                    ));
                }
                Err(_) => return Err("the formatted output has syntax errors".into()),
            }
            Ok(Outcome {
                files: BTreeMap::from([("formatted", formatted)]),
                ..Outcome::default()
            })
        }
        Err(diagnostics) => Ok(rendered(&diagnostics, &sources)),
    }
}

/// Compares what a case produced with its expectation files, or rewrites them when blessing.
/// An expectation file the case no longer produces is stale, and fails like a mismatch.
fn compare(root: &Path, case: &Case, outcome: &Outcome, bless: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for extension in case.suite.expectations() {
        let relative = format!("{}.{extension}", case.stem);
        let path = root.join(&relative);
        let expected = std::fs::read(&path)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let result = match (outcome.files.get(extension), expected) {
            (Some(actual), Some(expected)) if *actual == expected => Ok(()),
            (None, None) => Ok(()),
            (Some(actual), _) if bless => std::fs::write(&path, actual)
                .map_err(|error| format!("cannot write `{relative}`: {error}")),
            (None, Some(_)) if bless => std::fs::remove_file(&path)
                .map_err(|error| format!("cannot remove `{relative}`: {error}")),
            (Some(actual), Some(expected)) => Err(format!(
                "`{relative}` does not match the output (EDGEC_BLESS=1 to accept it):\n{}",
                diff(&expected, actual)
            )),
            (Some(actual), None) => Err(format!(
                "`{relative}` is missing (EDGEC_BLESS=1 to create it); the output is:\n{actual}"
            )),
            (None, Some(_)) => Err(format!(
                "`{relative}` is stale: the case no longer produces it (EDGEC_BLESS=1 removes it)"
            )),
        };
        failures.extend(result.err());
    }
    failures
}

/// A line diff of `expected` against `actual`: changed lines with three lines of context.
fn diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    if old.len().saturating_mul(new.len()) > 4_000_000 {
        return format!("--- expected\n{expected}\n+++ actual\n{actual}");
    }
    let operations = line_operations(&old, &new);
    let near_change = |index: usize| {
        let low = index.saturating_sub(3);
        let high = (index + 3).min(operations.len() - 1);
        operations[low..=high]
            .iter()
            .any(|(marker, _)| *marker != ' ')
    };
    let mut output = String::from("--- expected\n+++ actual\n");
    let mut skipped = false;
    for (index, (marker, line)) in operations.iter().enumerate() {
        if near_change(index) {
            if skipped {
                output.push_str("@@ … @@\n");
                skipped = false;
            }
            output.push_str(&format!("{marker}{line}\n"));
        } else {
            skipped = true;
        }
    }
    if operations.iter().all(|(marker, _)| *marker == ' ') {
        output.push_str("(the texts differ only in line endings or the final newline)\n");
    }
    output
}

/// The longest-common-subsequence edit script: `' '` kept, `'-'` only expected, `'+'` only actual.
fn line_operations<'t>(old: &[&'t str], new: &[&'t str]) -> Vec<(char, &'t str)> {
    let width = new.len() + 1;
    let mut common = vec![0usize; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i * width + j] = if old[i] == new[j] {
                common[(i + 1) * width + j + 1] + 1
            } else {
                common[(i + 1) * width + j].max(common[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut operations = Vec::new();
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            operations.push((' ', old[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < old.len()
            && (j == new.len() || common[(i + 1) * width + j] >= common[i * width + j + 1])
        {
            operations.push(('-', old[i]));
            i += 1;
        } else {
            operations.push(('+', new[j]));
            j += 1;
        }
    }
    operations
}

/// The recipes' emitted manifests: one case per recipe folder, one expectation per deployment.
/// Returns (passed, failed) and adds the failures.
fn run_build_suite(
    root: &Path,
    filters: &[String],
    bless: bool,
    failures: &mut Vec<String>,
) -> (usize, usize) {
    let recipes = root.join("../recipes");
    let mut names: Vec<String> = match sorted_entries(&recipes) {
        Ok(entries) => entries
            .into_iter()
            .filter(|(_, is_directory)| *is_directory)
            .map(|(name, _)| name)
            .collect(),
        Err(error) => {
            failures.push(format!("cannot list the recipes: {error}"));
            return (0, 1);
        }
    };
    names.retain(|name| {
        filters.is_empty()
            || filters
                .iter()
                .any(|filter| format!("cases/build/{name}").contains(filter))
    });
    let (mut passed, mut failed) = (0, 0);
    let mut built = BTreeSet::new();
    for name in names {
        let stem = format!("cases/build/{name}");
        let outcome = build_recipe(&format!("../recipes/{name}")).map(|manifests| {
            if manifests.is_empty() {
                return Vec::new();
            }
            built.insert(name.clone());
            compare_directory(root, &stem, &manifests, bless)
        });
        match outcome {
            Ok(case_failures) if case_failures.is_empty() => passed += 1,
            Ok(case_failures) => {
                println!("FAILED {stem}");
                failed += 1;
                failures.extend(case_failures);
            }
            Err(message) => {
                println!("FAILED {stem}");
                failed += 1;
                failures.push(format!("{stem}: {message}"));
            }
        }
    }
    if filters.is_empty() {
        let expected = sorted_entries(&root.join("cases/build")).unwrap_or_default();
        failures.extend(
            expected
                .into_iter()
                .filter(|(name, _)| !built.contains(name))
                .map(|(name, _)| {
                    format!("`cases/build/{name}` is orphaned: no recipe folder builds it")
                }),
        );
    }
    (passed, failed)
}

/// Checks a recipe folder and emits every deployment's manifest, as `edgec build` writes it.
fn build_recipe(folder: &str) -> Result<BTreeMap<String, String>, String> {
    let mut loaded = load(&[PathBuf::from(folder)]).map_err(|error| error.0)?;
    let (program, diagnostics) = edgec_core::compile(&mut loaded.sources, &loaded.trees, &[]);
    let mut all = loaded.diagnostics;
    all.extend(diagnostics);
    sort_diagnostics(&mut all);
    if all
        .iter()
        .any(|diagnostic| diagnostic.severity() == Severity::Error)
    {
        return Err(format!(
            "the recipe does not check:\n{}",
            render_human(&all, &loaded.sources, false)
        ));
    }
    let environment = |variable: &str| Some(format!("${{{variable}}}"));
    let mut manifests = BTreeMap::new();
    for deployment in program.deployments.values() {
        let manifest =
            edgec_core::emit::manifest::deployment_manifest(&program, deployment, &environment)
                .map_err(|error| {
                    format!("deployment `{}` does not emit: {error:?}", deployment.name)
                })?;
        let text =
            String::from_utf8_lossy(&canonical_json::to_pretty_bytes(&manifest)).into_owned();
        manifests.insert(format!("{}.json", deployment.name), text);
    }
    Ok(manifests)
}

/// Compares the files a case produced with the files of its expectation folder: a produced file
/// without expectation is missing, an expectation nothing produced is stale.
fn compare_directory(
    root: &Path,
    stem: &str,
    produced: &BTreeMap<String, String>,
    bless: bool,
) -> Vec<String> {
    let directory = root.join(stem);
    let mut failures = Vec::new();
    if bless && let Err(error) = std::fs::create_dir_all(&directory) {
        return vec![format!("cannot create `{stem}`: {error}")];
    }
    let expected: BTreeSet<String> = sorted_entries(&directory)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for (name, actual) in produced {
        let relative = format!("{stem}/{name}");
        let path = directory.join(name);
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == *actual => {}
            _ if bless => {
                if let Err(error) = std::fs::write(&path, actual) {
                    failures.push(format!("cannot write `{relative}`: {error}"));
                }
            }
            Ok(expected) => failures.push(format!(
                "`{relative}` does not match the output (EDGEC_BLESS=1 to accept it):\n{}",
                diff(&expected, actual)
            )),
            Err(_) => failures.push(format!(
                "`{relative}` is missing (EDGEC_BLESS=1 to create it); the output is:\n{actual}"
            )),
        }
    }
    for name in expected.difference(&produced.keys().cloned().collect()) {
        let relative = format!("{stem}/{name}");
        if bless {
            if let Err(error) = std::fs::remove_file(directory.join(name)) {
                failures.push(format!("cannot remove `{relative}`: {error}"));
            }
        } else {
            failures.push(format!(
                "`{relative}` is stale: no deployment produces it (EDGEC_BLESS=1 removes it)"
            ));
        }
    }
    failures
}
