//! What an operator sees: every refusal, rollback, commit, restart and
//! back-off is one `tracing` event on stderr, with its reason and the
//! deployment, version, module and phase it concerns as fields. People read
//! it as text on a terminal; a log collector takes JSON lines
//! (`--log-format json`).

use std::io::IsTerminal;
use std::path::Path;

use clap::ValueEnum;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log events are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text, coloured when stderr is a terminal.
    Auto,
    /// Text without colours.
    Human,
    /// One JSON object a line: `timestamp`, `level`, `message`, the event's
    /// fields and those of the spans it happened in (`span`, `spans`).
    Json,
}

impl LogFormat {
    /// Whether errors are reported as a JSON event rather than as text.
    pub fn is_json(self) -> bool {
        self == Self::Json
    }
}

/// Installs the process's log subscriber. A write error on stderr (a closed
/// pipe) loses the event rather than stopping edged.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_span_events(FmtSpan::NONE)
        .log_internal_errors(false);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Human => builder.with_ansi(false).try_init(),
        LogFormat::Auto => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A subscriber is already installed when edged runs inside a test
    // harness; its own then receives the events.
    drop(installed);
    // A panic is an event too, so that a log collector sees it.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "edged panicked");
    }));
}

/// The span of one apply; [`crate::intake::accept`] fills in the deployment
/// and version the bundle's manifest claims as soon as it is read.
pub fn apply_span(bundle: &Path) -> tracing::Span {
    tracing::info_span!(
        "apply",
        bundle = %bundle.display(),
        deployment = tracing::field::Empty,
        version = tracing::field::Empty,
    )
}
