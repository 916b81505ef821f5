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
use golden_tests::{
    Found, Layout, Tally, bless_requested, compare_directory, compare_files, diff, filters,
    sorted_entries,
};

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
    let bless = bless_requested();
    let filters = filters();
    let (cases, problems) = discover(root);
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|case| golden_tests::selected(&filters, &case.stem))
        .collect();
    let mut tally = Tally {
        failures: problems,
        ..Tally::default()
    };
    let mut codes = BTreeSet::new();
    let mut error_cases = 0;
    for case in &selected {
        let case_failures = match run(root, case) {
            Ok(outcome) => {
                codes.extend(outcome.codes.iter().copied());
                error_cases += usize::from(outcome.has_errors && case.suite != Suite::Format);
                compare_files(
                    root,
                    &case.stem,
                    case.suite.expectations(),
                    &outcome.files,
                    bless,
                )
            }
            Err(message) => vec![format!("{}: {message}", case.stem)],
        };
        tally.record(&case.stem, case_failures);
    }
    if filters.is_empty() {
        tally.failures.extend(missing_codes(&codes));
    }
    run_build_suite(root, &filters, bless, &mut tally);
    let check_cases = selected
        .iter()
        .filter(|case| case.suite != Suite::Format)
        .count();
    let details = format!(
        "{check_cases} check cases ({error_cases} with errors), {} format cases, {} of {} codes seen",
        selected.len() - check_cases,
        codes.len(),
        Code::ALL.len()
    );
    tally.finish(&details, bless)
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
        let layout = Layout {
            directory,
            input: (suite != Suite::Generated).then_some("edge"),
            folder_entry: (suite == Suite::Check).then_some("main.edge"),
            companions: suite.companions(),
        };
        let listing = match layout.list(root) {
            Ok(listing) => listing,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let first_case = cases.len();
        if suite == Suite::Generated {
            cases.extend(GENERATED.iter().map(|(name, make)| Case {
                suite,
                stem: format!("{directory}/{name}"),
                input: Input::Generated(format!("{directory}/{name}.edge"), *make),
            }));
        }
        cases.extend(listing.cases.iter().map(|found| match found {
            Found::File { stem, path } => Case {
                suite,
                stem: stem.clone(),
                input: Input::File(path.clone()),
            },
            Found::Folder { stem, entry } => Case {
                suite,
                stem: stem.clone(),
                input: Input::Program(entry.clone()),
            },
        }));
        problems.extend(listing.problems.iter().cloned());
        problems.extend(listing.orphans(cases[first_case..].iter().map(|case| case.stem.as_str())));
    }
    (cases, problems)
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

/// The recipes' emitted manifests: one case per recipe folder, one expectation per deployment.
fn run_build_suite(root: &Path, filters: &[String], bless: bool, tally: &mut Tally) {
    let recipes = root.join("../recipes");
    let mut names: Vec<String> = match sorted_entries(&recipes) {
        Ok(entries) => entries
            .into_iter()
            .filter(|(_, is_directory)| *is_directory)
            .map(|(name, _)| name)
            .collect(),
        Err(error) => {
            tally.failed += 1;
            tally
                .failures
                .push(format!("cannot list the recipes: {error}"));
            return;
        }
    };
    names.retain(|name| golden_tests::selected(filters, &format!("cases/build/{name}")));
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
        let case_failures = outcome.unwrap_or_else(|message| vec![format!("{stem}: {message}")]);
        tally.record(&stem, case_failures);
    }
    if filters.is_empty() {
        let expected = sorted_entries(&root.join("cases/build")).unwrap_or_default();
        tally.failures.extend(
            expected
                .into_iter()
                .filter(|(name, _)| !built.contains(name))
                .map(|(name, _)| {
                    format!("`cases/build/{name}` is orphaned: no recipe folder builds it")
                }),
        );
    }
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
