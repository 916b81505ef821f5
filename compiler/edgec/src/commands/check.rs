//! `edgec check`.

use std::path::PathBuf;

use edgec_core::diagnostic::{has_errors, sort_diagnostics};

use crate::output::{print_diagnostics, summary, usage_error};
use crate::{DiagnosticFormat, Status};
use edgec::load::{LoadedProgram, load};

/// Loads and checks a program; shared by every command that compiles.
pub fn check_program(
    paths: &[PathBuf],
    overrides: &[String],
) -> Result<
    (
        LoadedProgram,
        edgec_core::check::Program,
        Vec<edgec_core::diagnostic::Diagnostic>,
    ),
    String,
> {
    let assignments = parse_overrides(overrides)?;
    let mut loaded = load(paths).map_err(|error| error.0)?;
    let (program, diagnostics) =
        edgec_core::compile(&mut loaded.sources, &loaded.trees, &assignments);
    let mut all = std::mem::take(&mut loaded.diagnostics);
    all.extend(diagnostics);
    sort_diagnostics(&mut all);
    Ok((loaded, program, all))
}

fn parse_overrides(overrides: &[String]) -> Result<Vec<(String, String)>, String> {
    overrides
        .iter()
        .map(|assignment| match assignment.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.to_owned()))
            }
            _ => Err(format!(
                "`--set {assignment}` must be written `--set name=value`"
            )),
        })
        .collect()
}

pub fn run(paths: &[PathBuf], format: DiagnosticFormat, overrides: &[String]) -> Status {
    let (loaded, _, diagnostics) = match check_program(paths, overrides) {
        Ok(checked) => checked,
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    print_diagnostics(&diagnostics, &loaded.sources, format);
    if let (DiagnosticFormat::Human, Some(summary)) = (format, summary(&diagnostics)) {
        err!("{summary}");
    }
    if has_errors(&diagnostics) {
        Status::Errors
    } else {
        Status::Clean
    }
}
