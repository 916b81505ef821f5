//! The golden-file machinery shared by the repository's expectation-file suites: finding the
//! cases of a suite folder and the files that belong to none, comparing what a case produced
//! with its expectation files (with a line diff), blessing, and the run's summary.
//!
//! A suite is a folder of cases. A case is an input (a file `NAME.INPUT`, or a sub-folder with
//! an entry file) and the expectation files beside it, `NAME.EXTENSION`. The suites that use
//! it are this crate's `tests/golden.rs` (what edgec prints and emits) and edged's
//! `tests/operator_golden.rs` (what edged's operator commands print); see `README.md`.
//!
//! What fails a run, whatever the suite: output that differs from an expectation, an
//! expectation that is missing, a stale expectation (the case no longer produces it), an
//! orphaned expectation (its input is missing) and a stray file that belongs to no case.
//! `EDGEC_BLESS=1` rewrites the expectations from the output; it neither creates inputs nor
//! deletes orphans, which need a person to decide.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

/// Whether `EDGEC_BLESS` asks this run to rewrite the expectations (any value but empty and `0`).
pub fn bless_requested() -> bool {
    std::env::var("EDGEC_BLESS").is_ok_and(|value| !value.is_empty() && value != "0")
}

/// The test binary's arguments that select cases: those not starting with `-`, since cargo
/// passes its own options (`--nocapture`) to a harness-less test as well.
pub fn filters() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|argument| !argument.starts_with('-'))
        .collect()
}

/// Whether the case named `stem` is selected by `filters` (every case when there are none).
pub fn selected(filters: &[String], stem: &str) -> bool {
    filters.is_empty() || filters.iter().any(|filter| stem.contains(filter.as_str()))
}

/// A folder's entries as (name, is a folder), sorted so that runs are reproducible.
pub fn sorted_entries(directory: &Path) -> std::io::Result<Vec<(String, bool)>> {
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

/// How the files of a suite folder are laid out.
pub struct Layout<'a> {
    /// The folder, relative to the root the suite runs in.
    pub directory: &'a str,
    /// The extension of single-file inputs (`edge`), or `None` when the suite's inputs are not
    /// files of the folder.
    pub input: Option<&'a str>,
    /// The entry file that makes a sub-folder a case (`main.edge`), or `None` when sub-folders
    /// are not cases.
    pub folder_entry: Option<&'a str>,
    /// The extensions of files beside a case that belong to it without being its input.
    pub companions: &'a [&'a str],
}

/// A case found in a suite folder.
pub enum Found {
    /// `NAME.INPUT`: the stem `DIRECTORY/NAME` and the input's path.
    File { stem: String, path: String },
    /// A sub-folder `NAME/`: the stem `DIRECTORY/NAME` and the path of its entry file.
    Folder { stem: String, entry: String },
}

impl Found {
    /// The case's path without extension, relative to the root.
    pub fn stem(&self) -> &str {
        match self {
            Found::File { stem, .. } | Found::Folder { stem, .. } => stem,
        }
    }
}

/// What a suite folder holds.
pub struct Listing {
    /// The cases, in name order.
    pub cases: Vec<Found>,
    /// The problems of the layout so far: stray files, case folders without their entry file.
    pub problems: Vec<String>,
    /// The companion files, as (the stem they belong to, their path).
    companions: Vec<(String, String)>,
}

impl Layout<'_> {
    /// Lists the suite folder under `root`. A file that is neither an input nor a companion, and
    /// a sub-folder of a suite without folder cases, is a problem.
    pub fn list(&self, root: &Path) -> Result<Listing, String> {
        let directory = self.directory;
        let entries = sorted_entries(&root.join(directory))
            .map_err(|error| format!("cannot list `{directory}`: {error}"))?;
        let mut listing = Listing {
            cases: Vec::new(),
            problems: Vec::new(),
            companions: Vec::new(),
        };
        for (file_name, is_directory) in entries {
            let relative = format!("{directory}/{file_name}");
            let (stem, extension) = file_name.rsplit_once('.').unwrap_or((&file_name, ""));
            let stem = format!("{directory}/{stem}");
            match self.folder_entry {
                Some(entry) if is_directory => {
                    if root.join(&relative).join(entry).is_file() {
                        listing.cases.push(Found::Folder {
                            entry: format!("{relative}/{entry}"),
                            stem: relative,
                        });
                    } else {
                        listing
                            .problems
                            .push(format!("`{relative}` is a case folder without `{entry}`"));
                    }
                }
                _ if !is_directory && self.input == Some(extension) => {
                    listing.cases.push(Found::File {
                        stem,
                        path: relative,
                    });
                }
                _ if !is_directory && self.companions.contains(&extension) => {
                    listing.companions.push((stem, relative));
                }
                _ => listing
                    .problems
                    .push(format!("`{relative}` is not part of any case")),
            }
        }
        Ok(listing)
    }
}

impl Listing {
    /// A problem for each companion file whose case is not among `stems` (the cases found, and
    /// any the suite makes itself): it is orphaned, its input is missing.
    pub fn orphans<'s>(&self, stems: impl IntoIterator<Item = &'s str>) -> Vec<String> {
        let stems: BTreeSet<&str> = stems.into_iter().collect();
        self.companions
            .iter()
            .filter(|(stem, _)| !stems.contains(stem.as_str()))
            .map(|(_, file)| format!("`{file}` is orphaned: its case's input is missing"))
            .collect()
    }
}

/// Compares what a case produced, by extension, with its expectation files `STEM.EXTENSION`
/// for each of `extensions`, or rewrites them when blessing. An expectation file the case no
/// longer produces is stale, and fails like a mismatch.
pub fn compare_files(
    root: &Path,
    stem: &str,
    extensions: &[&str],
    produced: &BTreeMap<&str, String>,
    bless: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for extension in extensions {
        let relative = format!("{stem}.{extension}");
        let path = root.join(&relative);
        let expected = std::fs::read(&path)
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let result = match (produced.get(extension), expected) {
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

/// Compares the files a case produced, by name, with the files of its expectation folder
/// `STEM/`: a produced file without expectation is missing, an expectation nothing produced is
/// stale.
pub fn compare_directory(
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

/// A line diff of `expected` against `actual`: changed lines with three lines of context.
pub fn diff(expected: &str, actual: &str) -> String {
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

/// The cases a run passed and failed, and every failure to print at the end.
#[derive(Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    /// Failure messages, printed after the cases; layout problems count here without failing a
    /// case.
    pub failures: Vec<String>,
}

impl Tally {
    /// Counts the case named `stem` as passed when it had no failures, and otherwise prints
    /// `FAILED stem` at once (so a slow suite shows progress) and keeps its failures.
    pub fn record(&mut self, stem: &str, failures: Vec<String>) {
        if failures.is_empty() {
            self.passed += 1;
        } else {
            println!("FAILED {stem}");
            self.failed += 1;
            self.failures.extend(failures);
        }
    }

    /// Prints the failures, then `details` (a suite's own summary line, if not empty), then the
    /// last line `golden: N passed, M failed`; the run fails when there was any failure.
    pub fn finish(self, details: &str, bless: bool) -> ExitCode {
        for failure in &self.failures {
            println!("\n{failure}");
        }
        if !details.is_empty() {
            println!("\n{details}");
        }
        if bless {
            println!("expectations blessed (EDGEC_BLESS is set)");
        }
        println!("golden: {} passed, {} failed", self.passed, self.failed);
        if self.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_changed_lines_with_context_and_elides_the_rest() {
        let expected = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let actual = "a\nb\nc\nd\ne\nf\ng\nH\ni\n";
        assert_eq!(
            diff(expected, actual),
            "--- expected\n+++ actual\n@@ … @@\n e\n f\n g\n-h\n+H\n i\n"
        );
        assert!(diff("a\n", "a").ends_with("only in line endings or the final newline)\n"));
    }

    #[test]
    fn a_listing_finds_cases_strays_and_orphans() {
        let root = std::env::temp_dir().join(format!("golden-listing-{}", std::process::id()));
        let suite = root.join("suite");
        std::fs::create_dir_all(suite.join("folder")).unwrap();
        std::fs::create_dir_all(suite.join("empty")).unwrap();
        for file in [
            "one.in",
            "one.out",
            "two.out",
            "stray.txt",
            "folder/main.in",
        ] {
            std::fs::write(suite.join(file), "").unwrap();
        }
        let layout = Layout {
            directory: "suite",
            input: Some("in"),
            folder_entry: Some("main.in"),
            companions: &["out"],
        };
        let listing = layout.list(&root).unwrap();
        let stems: Vec<&str> = listing.cases.iter().map(Found::stem).collect();
        assert_eq!(stems, ["suite/folder", "suite/one"]);
        assert_eq!(
            listing.problems,
            [
                "`suite/empty` is a case folder without `main.in`",
                "`suite/stray.txt` is not part of any case"
            ]
        );
        assert_eq!(
            listing.orphans(stems.iter().copied()),
            ["`suite/two.out` is orphaned: its case's input is missing"]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn comparing_reports_mismatched_missing_and_stale_files_and_blessing_fixes_them() {
        let root = std::env::temp_dir().join(format!("golden-compare-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("case.a"), "old\n").unwrap();
        std::fs::write(root.join("case.c"), "stale\n").unwrap();
        let produced = BTreeMap::from([("a", "new\n".to_owned()), ("b", "made\n".to_owned())]);
        let failures = compare_files(&root, "case", &["a", "b", "c"], &produced, false);
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(failures[0].starts_with("`case.a` does not match"));
        assert!(failures[1].starts_with("`case.b` is missing"));
        assert!(failures[2].starts_with("`case.c` is stale"));
        assert!(compare_files(&root, "case", &["a", "b", "c"], &produced, true).is_empty());
        assert!(compare_files(&root, "case", &["a", "b", "c"], &produced, false).is_empty());
        assert!(!root.join("case.c").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
