//! Diagnostics as data.
//!
//! A [`Diagnostic`] records what went wrong ([`DiagnosticKind`], with the names and values
//! involved) and where (a primary [`Location`] and secondary ones, each with a [`LabelRole`]). It
//! holds no prose: [`wording`] turns it into the message, labels and help that users read, so all
//! the wording of the compiler is in one module and can be reviewed as a whole.

mod code;
mod kind;
pub mod wording;

pub use code::{Code, Severity};
pub use kind::{DiagnosticKind, LabelRole};

use crate::span::Location;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub kind: DiagnosticKind,
    pub primary: Location,
    pub secondary: Vec<(Location, LabelRole)>,
}

impl Diagnostic {
    pub fn new(kind: DiagnosticKind, primary: Location) -> Self {
        Diagnostic {
            kind,
            primary,
            secondary: Vec::new(),
        }
    }

    pub fn with_label(mut self, location: Location, role: LabelRole) -> Self {
        self.secondary.push((location, role));
        self
    }

    pub fn code(&self) -> Code {
        self.kind.code()
    }

    pub fn severity(&self) -> Severity {
        self.code().severity()
    }
}

/// Sorts diagnostics by position (file, then offset) and drops exact repeats, so that output is
/// stable whatever order the checks ran in.
pub fn sort_diagnostics(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|left, right| {
        (
            left.primary.file,
            left.primary.span.start,
            left.primary.span.end,
            left.code(),
        )
            .cmp(&(
                right.primary.file,
                right.primary.span.start,
                right.primary.span.end,
                right.code(),
            ))
    });
    diagnostics.dedup();
}

/// Whether any diagnostic is an error (warnings do not fail a check).
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics
        .iter()
        .any(|diagnostic| diagnostic.severity() == Severity::Error)
}
