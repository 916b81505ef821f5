//! Where and how output goes: colour only on a terminal, never with `NO_COLOR`.

use std::io::IsTerminal;

use edgec_core::diagnostic::Diagnostic;
use edgec_core::render::{render_human, render_json};
use edgec_core::source::SourceSet;

use crate::DiagnosticFormat;

pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// Human diagnostics go to standard error; JSON goes to standard output, for tools to read.
pub fn print_diagnostics(
    diagnostics: &[Diagnostic],
    sources: &SourceSet,
    format: DiagnosticFormat,
) {
    match format {
        DiagnosticFormat::Human => {
            err_raw!("{}", render_human(diagnostics, sources, colour_on_stderr()))
        }
        DiagnosticFormat::Json => out_raw!("{}", render_json(diagnostics, sources)),
    }
}

pub fn summary(diagnostics: &[Diagnostic]) -> Option<String> {
    use edgec_core::diagnostic::Severity;
    let errors = diagnostics
        .iter()
        .filter(|diagnostic| diagnostic.severity() == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    let plural =
        |count: usize, word: &str| format!("{count} {word}{}", if count == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => None,
        (0, warnings) => Some(plural(warnings, "warning")),
        (errors, 0) => Some(plural(errors, "error")),
        (errors, warnings) => Some(format!(
            "{}, {}",
            plural(errors, "error"),
            plural(warnings, "warning")
        )),
    }
}

pub fn usage_error(message: &str) {
    err!("error: {message}");
}
