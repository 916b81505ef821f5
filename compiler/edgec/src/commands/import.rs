//! `edgec import MANIFEST [-o FILE.edge] [--force]`: an IoT Edge deployment manifest as `.edge`.
//!
//! Every failure here is a problem with the input or the command line, so it exits with status 2
//! and writes nothing.

use std::path::Path;

use edgec_core::import::import_manifest;

use crate::Status;
use crate::atomic_file::{Existing, write_atomically};
use crate::output::usage_error;

pub fn run(file: &Path, output: Option<&Path>, force: bool) -> Status {
    match import(file, output, force) {
        Ok(()) => Status::Clean,
        Err(message) => {
            usage_error(&message);
            Status::Failure
        }
    }
}

fn import(file: &Path, output: Option<&Path>, force: bool) -> Result<(), String> {
    let bytes = std::fs::read(file)
        .map_err(|error| format!("cannot read `{}`: {error}", file.display()))?;
    let json = String::from_utf8(bytes)
        .map_err(|_| format!("`{}` is not UTF-8 text, so it is not JSON", file.display()))?;
    let file_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let imported = import_manifest(&json, &file_name)
        .map_err(|error| format!("`{}`: {error}", file.display()))?;
    for note in &imported.notes {
        err!("warning: {note}");
    }
    let Some(output) = output else {
        out_raw!("{}", imported.source);
        return Ok(());
    };
    write_output(output, imported.source.as_bytes(), force)?;
    err!(
        "wrote {} (deployment `{}`)",
        output.display(),
        imported.deployment
    );
    Ok(())
}

/// Writes the source all at once. Without `force` an existing file is never replaced, even one
/// that another process creates meanwhile.
fn write_output(output: &Path, contents: &[u8], force: bool) -> Result<(), String> {
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    write_atomically(output, contents, existing).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists && !force {
            format!("`{}` exists; pass --force to replace it", output.display())
        } else {
            format!("cannot write `{}`: {error}", output.display())
        }
    })
}
