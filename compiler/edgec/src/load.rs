//! Reading sources from disk and following imports: the only place the compiler touches files
//! it compiles.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use edgec_core::check::source_rejection;
use edgec_core::diagnostic::{Diagnostic, DiagnosticKind};
use edgec_core::source::{SourceFile, SourceSet, decode_source};
use edgec_core::span::{FileId, Location};
use edgec_core::syntax::ast::SyntaxTree;

/// Every file of one compilation: the roots named on the command line and what they import.
#[derive(Default)]
pub struct LoadedProgram {
    pub sources: SourceSet,
    pub trees: Vec<(FileId, SyntaxTree)>,
    /// Problems found while loading: unreadable imports, non-UTF-8 files, self-imports.
    pub diagnostics: Vec<Diagnostic>,
}

/// A problem with the command line itself (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

/// Expands directories into the `.edge` files below them, sorted, so runs are reproducible.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, UsageError> {
    let mut files = Vec::new();
    for path in paths {
        let metadata = std::fs::metadata(path)
            .map_err(|error| UsageError(format!("cannot read `{}`: {error}", path.display())))?;
        if metadata.is_dir() {
            let mut found = edge_files_below(path)?;
            found.sort();
            if found.is_empty() {
                return Err(UsageError(format!(
                    "`{}` contains no `.edge` files",
                    path.display()
                )));
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// The `.edge` files below `directory`, following symbolic links. A link back to a directory
/// being read (`a -> .`) would make the walk endless, so it is an error naming the link; a
/// dangling link is skipped unless it is named like a source, whose read then reports it.
fn edge_files_below(directory: &Path) -> Result<Vec<PathBuf>, UsageError> {
    let is_edge_file = |path: &Path| {
        path.extension()
            .is_some_and(|extension| extension == "edge")
    };
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(directory)
        .follow_links(true)
        .sort_by_file_name()
    {
        match entry {
            Ok(entry) => {
                if !entry.file_type().is_dir() && is_edge_file(entry.path()) {
                    found.push(entry.into_path());
                }
            }
            Err(error) => match (error.path(), error.loop_ancestor()) {
                (Some(link), Some(ancestor)) => {
                    return Err(UsageError(format!(
                        "`{}` links back to `{}`, which contains it, so reading `{}` would never end; remove the link or name the directories to read",
                        link.display(),
                        ancestor.display(),
                        directory.display()
                    )));
                }
                (Some(path), None) if is_dangling_link(path) => {
                    if is_edge_file(path) {
                        found.push(path.to_owned());
                    }
                }
                _ => {
                    return Err(UsageError(format!(
                        "cannot list `{}`: {error}",
                        directory.display()
                    )));
                }
            },
        }
    }
    Ok(found)
}

/// A symbolic link whose target does not exist.
fn is_dangling_link(path: &Path) -> bool {
    path.symlink_metadata()
        .is_ok_and(|metadata| metadata.file_type().is_symlink())
        && std::fs::metadata(path).is_err()
}

/// Loads the root files and, transitively, everything they import. Each file is loaded once
/// however many files import it.
pub fn load(roots: &[PathBuf]) -> Result<LoadedProgram, UsageError> {
    let mut loader = Loader::default();
    for root in expand_paths(roots)? {
        let bytes = std::fs::read(&root)
            .map_err(|error| UsageError(format!("cannot read `{}`: {error}", root.display())))?;
        loader.add_root(&root, &bytes);
    }
    Ok(loader.finish())
}

/// Loading in steps, for callers that have a root file's bytes already (the golden tests make
/// some inputs in memory).
#[derive(Default)]
pub struct Loader {
    loaded: LoadedProgram,
    seen: BTreeSet<PathBuf>,
    /// Imports still to load, with where each was imported, so a read failure can point there.
    queue: Vec<(PathBuf, String, Location)>,
}

impl Loader {
    /// Adds a root file, named by `path`, unless it was added already.
    pub fn add_root(&mut self, path: &Path, bytes: &[u8]) {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.seen.insert(canonical) {
            add_file(
                &mut self.loaded,
                path,
                bytes,
                &mut self.queue,
                &mut self.seen,
            );
        }
    }

    /// Loads everything the roots import and returns the program.
    pub fn finish(mut self) -> LoadedProgram {
        while let Some((path, import, location)) = self.queue.pop() {
            match std::fs::read(&path) {
                Ok(bytes) => add_file(
                    &mut self.loaded,
                    &path,
                    &bytes,
                    &mut self.queue,
                    &mut self.seen,
                ),
                Err(error) => self.loaded.diagnostics.push(Diagnostic::new(
                    DiagnosticKind::ImportNotFound {
                        path: import,
                        reason: error.kind().to_string(),
                    },
                    location,
                )),
            }
        }
        self.loaded
    }
}

fn add_file(
    loaded: &mut LoadedProgram,
    path: &Path,
    bytes: &[u8],
    queue: &mut Vec<(PathBuf, String, Location)>,
    seen: &mut BTreeSet<PathBuf>,
) {
    let name = path.display().to_string();
    let text = match decode_source(bytes) {
        Ok(text) => text,
        Err(rejection) => {
            let id = loaded.sources.add(SourceFile::new(name, String::new()));
            loaded.diagnostics.push(source_rejection(id, &rejection));
            return;
        }
    };
    let tree = edgec_core::syntax::parse(&text);
    let id = loaded.sources.add(SourceFile::new(name, text));
    let own_path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let directory = path.parent().unwrap_or(Path::new(""));
    for (import, span) in edgec_core::imports(&tree) {
        let target = directory.join(&import);
        let location = Location::new(id, span);
        match target.canonicalize() {
            Ok(canonical) if canonical == own_path => {
                loaded.diagnostics.push(Diagnostic::new(
                    DiagnosticKind::SelfImport { path: import },
                    location,
                ));
            }
            Ok(canonical) => match std::fs::metadata(&canonical) {
                Ok(metadata) if metadata.is_file() => {
                    if seen.insert(canonical) {
                        queue.push((target, import, location));
                    }
                }
                _ => loaded.diagnostics.push(Diagnostic::new(
                    DiagnosticKind::ImportNotFound {
                        path: import,
                        reason: "it is not a file".into(),
                    },
                    location,
                )),
            },
            Err(error) => loaded.diagnostics.push(Diagnostic::new(
                DiagnosticKind::ImportNotFound {
                    path: import,
                    reason: error.kind().to_string(),
                },
                location,
            )),
        }
    }
    loaded.trees.push((id, tree));
}
