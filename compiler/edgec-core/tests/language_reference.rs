//! The language reference (`schema/LANGUAGE.md`) and the project's `README.md` are tested like
//! code: every ```edge block in them is compiled, so neither can drift from what the parser and
//! checker do.
//!
//! A block tagged `edge` must be a complete program that checks with no diagnostics at all; one
//! tagged `edge,fails=CODE` must produce that code; one tagged `edge,fragment` is a snippet that
//! must at least parse. Imports in a block are followed on disk relative to the document's
//! directory, exactly as `edgec check` follows them relative to the importing file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use edgec_core::diagnostic::{Code, Diagnostic};
use edgec_core::source::{SourceFile, SourceSet};
use edgec_core::span::FileId;
use edgec_core::syntax::ast::SyntaxTree;

/// Where the reference lives; its imports resolve against this file's directory.
fn reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/LANGUAGE.md")
}

/// The project's front page, whose first example is what most readers try first.
fn readme_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")
}

fn document_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

fn reference_text() -> String {
    document_text(&reference_path())
}

/// What a block claims about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expectation {
    Clean,
    Fails(Code),
    Fragment,
}

/// One ```edge block: the line its text starts on, its tag and its text.
struct Block {
    line: usize,
    expectation: Result<Expectation, String>,
    text: String,
}

/// Every fenced block whose info string starts with `edge`, in order.
fn edge_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(info) = line.trim_end().strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, line)| line)
            .take_while(|line| !line.starts_with("```"))
            .collect();
        if info == "edge" || info.starts_with("edge,") {
            blocks.push(Block {
                line: index + 2,
                expectation: expectation(info),
                text: body.iter().map(|line| format!("{line}\n")).collect(),
            });
        }
    }
    blocks
}

/// Reads a block's info string; an unknown tag is an error, so that a typo cannot silently turn
/// an example into one that is never checked.
fn expectation(info: &str) -> Result<Expectation, String> {
    match info.strip_prefix("edge").unwrap_or(info) {
        "" => Ok(Expectation::Clean),
        ",fragment" => Ok(Expectation::Fragment),
        tag => match tag.strip_prefix(",fails=") {
            Some(code) => Code::parse(code)
                .map(Expectation::Fails)
                .ok_or_else(|| format!("`{code}` is not a diagnostic code")),
            None => Err(format!("unknown tag `{info}`")),
        },
    }
}

/// Adds `text` and, transitively, the files it imports (each once) to `sources`.
fn load(
    sources: &mut SourceSet,
    name: String,
    text: String,
    directory: &Path,
    seen: &mut BTreeSet<PathBuf>,
) -> Result<Vec<(FileId, SyntaxTree)>, String> {
    let tree = edgec_core::syntax::parse(&text);
    let imports = edgec_core::imports(&tree);
    let mut trees = vec![(sources.add(SourceFile::new(name, text)), tree)];
    for (import, _) in imports {
        let path = directory.join(&import);
        let canonical = path
            .canonicalize()
            .map_err(|error| format!("cannot import `{import}`: {error}"))?;
        if !seen.insert(canonical.clone()) {
            continue;
        }
        let imported = std::fs::read_to_string(&canonical)
            .map_err(|error| format!("cannot import `{import}`: {error}"))?;
        let parent = canonical.parent().unwrap_or(Path::new(""));
        trees.extend(load(
            sources,
            path.display().to_string(),
            imported,
            parent,
            seen,
        )?);
    }
    Ok(trees)
}

/// Compiles a block of `document` as `edgec check` would, returning its diagnostics rendered for
/// a report.
fn compile(document: &Path, block: &Block) -> Result<(Vec<Diagnostic>, String), String> {
    let mut sources = SourceSet::default();
    let directory = document.parent().unwrap_or(Path::new(""));
    let file_name = document.file_name().unwrap_or_default().to_string_lossy();
    let name = format!("{file_name}:{}", block.line);
    let trees = load(
        &mut sources,
        name,
        block.text.clone(),
        directory,
        &mut BTreeSet::new(),
    )?;
    let (_, diagnostics) = edgec_core::compile(&mut sources, &trees, &[]);
    let rendered = edgec_core::render::render_human(&diagnostics, &sources, false);
    Ok((diagnostics, rendered))
}

/// What is wrong with one block of `document`, if anything.
fn problem(document: &Path, block: &Block) -> Option<String> {
    let expectation = match &block.expectation {
        Ok(expectation) => *expectation,
        Err(problem) => return Some(problem.clone()),
    };
    if expectation == Expectation::Fragment {
        let errors = edgec_core::syntax::parse(&block.text).errors;
        return (!errors.is_empty()).then(|| format!("the fragment does not parse: {errors:?}"));
    }
    let (diagnostics, rendered) = match compile(document, block) {
        Ok(compiled) => compiled,
        Err(problem) => return Some(problem),
    };
    match expectation {
        Expectation::Clean if !diagnostics.is_empty() => {
            Some(format!("expected no diagnostics, got:\n{rendered}"))
        }
        Expectation::Fails(code) if !diagnostics.iter().any(|found| found.code() == code) => {
            Some(format!("expected {}, got:\n{rendered}", code.as_str()))
        }
        _ => None,
    }
}

/// Every block of `document` that is wrong, with its line, for the failure report.
fn failures(document: &Path, blocks: &[Block]) -> Vec<String> {
    blocks
        .iter()
        .filter_map(|block| {
            problem(document, block)
                .map(|problem| format!("block at line {}: {problem}", block.line))
        })
        .collect()
}

#[test]
fn every_example_in_the_reference_means_what_its_tag_says() {
    let blocks = edge_blocks(&reference_text());
    assert!(
        blocks.len() >= 30,
        "only {} ```edge blocks found; is the fence syntax right?",
        blocks.len()
    );
    let failures = failures(&reference_path(), &blocks);
    assert!(
        failures.is_empty(),
        "{} of {} blocks are wrong:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_example_in_the_readme_means_what_its_tag_says() {
    let readme = readme_path();
    let blocks = edge_blocks(&document_text(&readme));
    assert!(
        !blocks.is_empty(),
        "README.md has no ```edge block; is the fence syntax right?"
    );
    let failures = failures(&readme, &blocks);
    assert!(
        failures.is_empty(),
        "{} of {} README.md blocks are wrong:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
}

#[test]
fn fragments_are_at_most_a_quarter_of_the_examples() {
    let blocks = edge_blocks(&reference_text());
    let fragments = blocks
        .iter()
        .filter(|block| block.expectation == Ok(Expectation::Fragment))
        .count();
    assert!(
        fragments * 4 <= blocks.len(),
        "{fragments} of {} blocks are fragments; prefer complete examples",
        blocks.len()
    );
}

#[test]
fn the_diagnostic_table_lists_every_code_once() {
    let text = reference_text();
    let problems: Vec<String> = Code::ALL
        .iter()
        .filter_map(|code| {
            let row = format!("| `{}` |", code.as_str());
            match text.lines().filter(|line| line.starts_with(&row)).count() {
                1 => None,
                count => Some(format!("{} appears in {count} table rows", code.as_str())),
            }
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_block_reader_reports_unknown_tags() {
    let blocks =
        edge_blocks("```edge,fails=E9999\nx\n```\n```edge,frag\ny\n```\n```text\nz\n```\n");
    assert_eq!(blocks.len(), 2);
    assert!(blocks.iter().all(|block| block.expectation.is_err()));
    assert_eq!(blocks[0].line, 2);
    assert_eq!(blocks[1].text, "y\n");
}
