//! The checker: from syntax trees to a [`Program`], reporting every problem on the way.
//!
//! The passes run in dependency order: top-level definitions and duplicates ([`items`]),
//! parameters, message schemas, hardware profiles, modules, then deployments, which check routes,
//! startup order and resources against everything before them. Each pass keeps going after an
//! error, so one run reports all of them.

mod context;
mod deployment;
mod environment;
mod hardware;
mod items;
pub mod model;
mod module;
mod naming;
mod parameters;
mod reader;
mod routes;
mod startup;
mod system_modules;
mod twin;
pub mod types;
mod typing;

use crate::diagnostic::{Diagnostic, DiagnosticKind, sort_diagnostics};
use crate::span::{FileId, Location, Span};
use crate::syntax::ast::SyntaxTree;
use context::Checker;
pub use model::Program;
pub use parameters::{overrides_source, string_parameters};

/// One parsed source file, with its display name (import-relative paths are resolved by the CLI).
#[derive(Debug, Clone, Copy)]
pub struct ParsedFile<'a> {
    pub id: FileId,
    pub name: &'a str,
    pub text: &'a str,
    pub tree: &'a SyntaxTree,
}

/// Checks a whole program: every file, plus the `--set` overrides (parsed from
/// [`overrides_source`]). Diagnostics come back sorted by position.
pub fn check(
    files: &[ParsedFile<'_>],
    overrides: Option<ParsedFile<'_>>,
) -> (Program, Vec<Diagnostic>) {
    let mut checker = Checker::new();
    for file in files.iter().chain(overrides.as_ref()) {
        for error in &file.tree.errors {
            checker.report(
                DiagnosticKind::Syntax(error.kind.clone()),
                file.id,
                error.span,
            );
        }
    }
    for file in files {
        if file.text.trim().is_empty() {
            checker.report(
                DiagnosticKind::EmptyFile,
                file.id,
                Span::new(0, file.text.len()),
            );
        }
    }
    let definitions = items::collect(&mut checker, files);
    parameters::bind(&mut checker, &definitions, overrides);
    let mut program = Program::default();
    for name in checker.schema_names() {
        if let Some(schema) = checker.schema_type(&name) {
            program.schemas.insert(name, schema);
        }
    }
    for (name, definition) in &definitions.hardware {
        if let Some(profile) = hardware::check(&mut checker, name, definition) {
            program.hardware.insert(name.clone(), profile);
        }
    }
    for (name, definition) in &definitions.modules {
        if let Some(module) = module::check(&mut checker, name, definition, files) {
            program.modules.insert(name.clone(), module);
        }
    }
    for (name, definition) in &definitions.deployments {
        let known_modules = &definitions.modules;
        if let Some(deployment) =
            deployment::check(&mut checker, name, definition, &program, known_modules)
        {
            program.deployments.insert(name.clone(), deployment);
        }
    }
    let mut diagnostics = checker.diagnostics;
    sort_diagnostics(&mut diagnostics);
    (program, diagnostics)
}

/// Where a definition is: its file, the whole entry and its name.
#[derive(Debug, Clone, Copy)]
pub struct Definition<'a> {
    pub file: FileId,
    pub entry: &'a crate::syntax::ast::Entry,
    pub name_span: Span,
}

impl Definition<'_> {
    pub fn location(&self) -> Location {
        Location::new(self.file, self.name_span)
    }
}

/// Diagnostics for problems found before parsing, in the same form as the rest.
pub fn source_rejection(file: FileId, rejection: &crate::source::SourceRejection) -> Diagnostic {
    use crate::source::{MAXIMUM_SOURCE_BYTES, SourceRejection};
    let (kind, span) = match rejection {
        SourceRejection::NotUtf8 { offset } => {
            (DiagnosticKind::NotUtf8 { offset: *offset }, Span::new(0, 0))
        }
        SourceRejection::TooLarge { size } => (
            DiagnosticKind::FileTooLarge {
                size: *size,
                limit: MAXIMUM_SOURCE_BYTES,
            },
            Span::new(0, 0),
        ),
        SourceRejection::Binary { offset } => (
            DiagnosticKind::BinaryFile { offset: *offset },
            Span::new(0, 0),
        ),
    };
    Diagnostic::new(kind, Location::new(file, span))
}
