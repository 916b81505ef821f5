//! Rendering diagnostics for people (through miette) and for machines (JSON).
//!
//! Rendering is pure: it produces a `String` and the CLI decides where it goes. Colour is a
//! parameter so that the CLI can honour terminals and `NO_COLOR`, and tests get plain text.

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError, MietteSpanContents,
    SourceCode, SourceSpan, SpanContents,
};
use serde_json::json;

use crate::diagnostic::{Diagnostic, Severity, wording};
use crate::source::{SourceFile, SourceSet};
use crate::span::Location;

/// Width the human renderer wraps at, fixed so that output does not depend on the terminal.
const RENDER_WIDTH: usize = 100;

/// A source file as miette reads it. miette's own `str` source scans from the start of the text
/// for every label, which makes a file with thousands of diagnostics quadratic; this view cuts the
/// few lines around the label out first, using the line table, and lets miette read only those.
#[derive(Debug, Clone, Copy)]
struct SourceView<'s> {
    file: &'s SourceFile,
}

impl SourceCode for SourceView<'_> {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let file = self.file;
        let start = span.offset().min(file.text.len());
        let end = (span.offset() + span.len()).min(file.text.len());
        let first_line = file
            .line_index(start as u32)
            .saturating_sub(context_lines_before);
        let last_line =
            file.line_index(end.saturating_sub(1).max(start) as u32) + context_lines_after + 1;
        let window_start = file.line_start(first_line);
        let window_end = file.line_start(last_line + 1);
        let window = &file.text[window_start..window_end];
        let relative = SourceSpan::new((start - window_start).into(), span.len());
        let contents = window.read_span(&relative, context_lines_before, context_lines_after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            file.name.clone(),
            contents.data(),
            SourceSpan::new(
                (contents.span().offset() + window_start).into(),
                contents.span().len(),
            ),
            contents.line() + first_line,
            contents.column(),
            contents.line_count() + first_line,
        )))
    }
}

/// One diagnostic in the shape miette renders.
#[derive(Debug)]
struct Report<'s> {
    message: String,
    code: &'static str,
    severity: miette::Severity,
    help: Option<String>,
    source: SourceView<'s>,
    labels: Vec<LabeledSpan>,
    related: Vec<Report<'s>>,
}

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        (!self.code.is_empty()).then(|| Box::new(self.code) as Box<dyn std::fmt::Display>)
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|help| Box::new(help) as Box<dyn std::fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        (!self.related.is_empty()).then(|| {
            Box::new(
                self.related
                    .iter()
                    .map(|report| report as &dyn miette::Diagnostic),
            ) as Box<_>
        })
    }
}

fn source_span(location: Location) -> SourceSpan {
    SourceSpan::new((location.span.start as usize).into(), location.span.len())
}

fn named_source(sources: &SourceSet, location: Location) -> SourceView<'_> {
    SourceView {
        file: sources.get(location.file),
    }
}

fn report<'s>(diagnostic: &Diagnostic, sources: &'s SourceSet) -> Report<'s> {
    let primary = diagnostic.primary;
    let mut labels = vec![LabeledSpan::new_primary_with_span(
        Some(wording::primary_label(diagnostic)),
        source_span(primary),
    )];
    let mut related = Vec::new();
    for (location, role) in &diagnostic.secondary {
        let text = wording::secondary_label(role);
        if location.file == primary.file {
            labels.push(LabeledSpan::new_with_span(
                Some(text),
                source_span(*location),
            ));
        } else {
            related.push(Report {
                message: text.clone(),
                code: "",
                severity: miette::Severity::Advice,
                help: None,
                source: named_source(sources, *location),
                labels: vec![LabeledSpan::new_with_span(
                    Some(text),
                    source_span(*location),
                )],
                related: Vec::new(),
            });
        }
    }
    Report {
        message: wording::message(diagnostic),
        code: diagnostic.code().as_str(),
        severity: match diagnostic.severity() {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        },
        help: wording::help(diagnostic),
        source: named_source(sources, primary),
        labels,
        related,
    }
}

/// Renders diagnostics for a terminal or a log, each followed by a blank line.
pub fn render_human(diagnostics: &[Diagnostic], sources: &SourceSet, colour: bool) -> String {
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(RENDER_WIDTH)
        .with_links(false);
    let mut output = String::new();
    for diagnostic in diagnostics {
        let report = report(diagnostic, sources);
        if handler.render_report(&mut output, &report).is_err() {
            output.push_str(&format!("{}: {}\n", report.code, report.message));
        }
        output.push('\n');
    }
    output
}

/// Renders diagnostics as JSON Lines: one object per diagnostic.
pub fn render_json(diagnostics: &[Diagnostic], sources: &SourceSet) -> String {
    let position = |location: Location| {
        let file = sources.get(location.file);
        let (line, column) = file.line_column(location.span.start);
        json!({
            "file": file.name,
            "line": line,
            "column": column,
            "span": {"start": location.span.start, "end": location.span.end},
        })
    };
    let mut output = String::new();
    for diagnostic in diagnostics {
        let mut object = position(diagnostic.primary);
        let mut labels = vec![{
            let mut label = position(diagnostic.primary);
            label["message"] = json!(wording::primary_label(diagnostic));
            label["primary"] = json!(true);
            label
        }];
        for (location, role) in &diagnostic.secondary {
            let mut label = position(*location);
            label["message"] = json!(wording::secondary_label(role));
            label["primary"] = json!(false);
            labels.push(label);
        }
        object["code"] = json!(diagnostic.code().as_str());
        object["severity"] = json!(match diagnostic.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
        });
        object["message"] = json!(wording::message(diagnostic));
        object["labels"] = json!(labels);
        object["help"] = json!(wording::help(diagnostic));
        output.push_str(&object.to_string());
        output.push('\n');
    }
    output
}
