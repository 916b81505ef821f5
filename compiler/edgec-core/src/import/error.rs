//! What can stop an import, what an import leaves out, and the wording of both (in one place, like
//! the diagnostics' wording).

use std::fmt;

/// Why a manifest could not be imported. Every variant is a problem with the input, not with
/// edgec: the CLI reports it as a usage failure and writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The text is not JSON at all.
    NotJson {
        line: usize,
        column: usize,
        reason: String,
    },
    /// The JSON is not a deployment manifest: the top level is not an object, or it has no
    /// `modulesContent` (directly or under `content`), or that has no `$edgeAgent`.
    NotAManifest { reason: NotAManifest },
    /// A field has the wrong JSON type or a value IoT Edge does not define.
    Malformed { at: String, expected: &'static str },
    /// A module's create options (after joining their chunks) are not a JSON object.
    CreateOptions { module: String, reason: String },
    /// A module name that IoT Edge refuses, so no `.edge` module can carry it.
    InvalidModuleName { name: String },
    /// A number `.edge` cannot write exactly (integers beyond the 64-bit signed range).
    UnrepresentableNumber { at: String, number: String },
    /// JSON nested more deeply than `.edge` source may nest.
    TooDeep { at: String, limit: usize },
    /// The generated source did not parse: a bug in the importer, reported rather than written.
    Unwritable { syntax_errors: usize },
}

/// Which part of the manifest shape is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAManifest {
    /// The top level is an array, string, number, boolean or null.
    TopLevel(&'static str),
    NoModulesContent,
    NoEdgeAgent,
}

/// Something in the manifest that the `.edge` file does not carry. The import still succeeds;
/// notes go to the top of the file as comments and to standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A key edgec has no attribute for.
    DroppedKey { at: String },
    /// A module twin in `modulesContent` for a module that `$edgeAgent` does not deploy.
    TwinWithoutModule { module: String },
    /// The edge hub's status or restart policy, which edgec always emits as `running`/`always`.
    FixedHubSetting { key: &'static str, value: String },
    /// The images name different architectures, so one hardware profile cannot match them all.
    MixedArchitectures { architectures: Vec<&'static str> },
}

impl fmt::Display for ImportError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&describe_error(self))
    }
}

impl fmt::Display for Note {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&describe_note(self))
    }
}

impl std::error::Error for ImportError {}

fn describe_error(error: &ImportError) -> String {
    match error {
        ImportError::NotJson {
            line,
            column,
            reason,
        } => format!("this is not JSON (line {line}, column {column}: {reason})"),
        ImportError::NotAManifest { reason } => {
            let why = match reason {
                NotAManifest::TopLevel(found) => {
                    format!("the top level is {found}, not an object")
                }
                NotAManifest::NoModulesContent => {
                    "it has neither `modulesContent` nor `content.modulesContent`".to_owned()
                }
                NotAManifest::NoEdgeAgent => "its `modulesContent` has no `$edgeAgent`".to_owned(),
            };
            format!("this is not an IoT Edge deployment manifest: {why}")
        }
        ImportError::Malformed { at, expected } => format!("`{at}` must be {expected}"),
        ImportError::CreateOptions { module, reason } => {
            format!("the createOptions of module `{module}` are not a JSON object: {reason}")
        }
        ImportError::InvalidModuleName { name } => format!(
            "the module name `{name}` is not allowed (IoT Edge module names are letters, digits, \
             `_` and `-`, and not `edgeAgent`, `edgeHub` or `$…`)"
        ),
        ImportError::UnrepresentableNumber { at, number } => format!(
            "`{at}` holds {number}, which is outside the 64-bit integer range `.edge` can write"
        ),
        ImportError::TooDeep { at, limit } => {
            format!("`{at}` nests more than {limit} levels deep, more than `.edge` allows")
        }
        ImportError::Unwritable { syntax_errors } => format!(
            "the `.edge` text made from this manifest has {syntax_errors} syntax error(s); this \
             is a bug in `edgec import`, please report it with the manifest"
        ),
    }
}

fn describe_note(note: &Note) -> String {
    match note {
        Note::DroppedKey { at } => format!("`{at}` has no `.edge` equivalent and was left out"),
        Note::TwinWithoutModule { module } => format!(
            "the twin of `{module}` was left out: `$edgeAgent` deploys no module of that name"
        ),
        Note::FixedHubSetting { key, value } => format!(
            "the edge hub's {key} `{value}` was left out: edgec always runs the hub `running` \
             with restart policy `always`"
        ),
        Note::MixedArchitectures { architectures } => format!(
            "the images are built for different architectures ({}); the hardware profile says \
             amd64, so split the deployment per architecture",
            architectures.join(", ")
        ),
    }
}
