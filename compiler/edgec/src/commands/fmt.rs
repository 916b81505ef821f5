//! `edgec fmt [--check]`.

use std::path::{Path, PathBuf};

use edgec_core::source::{SourceFile, SourceSet, decode_source};

use crate::Status;
use crate::atomic_file::{Existing, write_atomically};
use crate::output::{colour_on_stderr, usage_error};
use edgec::load::expand_paths;

pub fn run(paths: &[PathBuf], check_only: bool) -> Status {
    let files = match expand_paths(paths) {
        Ok(files) => files,
        Err(error) => {
            usage_error(&error.0);
            return Status::Failure;
        }
    };
    let mut status = Status::Clean;
    for path in files {
        let outcome = format_file(&path, check_only);
        status = match (status, outcome) {
            (Status::Failure, _) | (_, Status::Failure) => Status::Failure,
            (Status::Errors, _) | (_, Status::Errors) => Status::Errors,
            _ => Status::Clean,
        };
    }
    status
}

fn format_file(path: &Path, check_only: bool) -> Status {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            usage_error(&format!("cannot read `{}`: {error}", path.display()));
            return Status::Failure;
        }
    };
    let mut sources = SourceSet::default();
    let text = match decode_source(&bytes) {
        Ok(text) => text,
        Err(rejection) => {
            let id = sources.add(SourceFile::new(path.display().to_string(), String::new()));
            let diagnostic = edgec_core::check::source_rejection(id, &rejection);
            err_raw!(
                "{}",
                edgec_core::render::render_human(&[diagnostic], &sources, colour_on_stderr())
            );
            return Status::Errors;
        }
    };
    let id = sources.add(SourceFile::new(path.display().to_string(), text.clone()));
    let formatted = match edgec_core::format_source(&text, id) {
        Ok(formatted) => formatted,
        Err(diagnostics) => {
            err_raw!(
                "{}",
                edgec_core::render::render_human(&diagnostics, &sources, colour_on_stderr())
            );
            err!(
                "not formatting `{}`: fix its syntax errors first",
                path.display()
            );
            return Status::Errors;
        }
    };
    if formatted == text {
        return Status::Clean;
    }
    if check_only {
        out!("would reformat {}", path.display());
        return Status::Errors;
    }
    // Replaced all at once, keeping the file's permissions: an interrupted run never leaves a
    // half-written source.
    match write_atomically(path, formatted.as_bytes(), Existing::Replace) {
        Ok(()) => {
            out!("formatted {}", path.display());
            Status::Clean
        }
        Err(error) => {
            usage_error(&format!("cannot write `{}`: {error}", path.display()));
            Status::Failure
        }
    }
}
