//! `edgec push` and the registry options `edgec build --push` and `--resolve-digests` share.
//! The work is `edge-registry`'s; this module turns options into a client and results into
//! lines and exit statuses.

use std::path::{Path, PathBuf};

use edge_registry::{
    Credentials, PushReport, RegistryClient, RegistryError, RegistryOptions, Step,
};
use image_reference::Reference;

use crate::Status;
use crate::output::usage_error;

/// The environment variable with the registry user, when `--registry-user` is not given.
pub const USER_VARIABLE: &str = "EDGEC_REGISTRY_USER";
/// The environment variable with the registry password, when `--registry-password-file` is not
/// given. There is no option for the password itself: a command line is visible to every user
/// of the machine.
pub const PASSWORD_VARIABLE: &str = "EDGEC_REGISTRY_PASSWORD";

#[derive(Default, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Trust this CA certificate (PEM) for the registry instead of the system's.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The registry user (default: `EDGEC_REGISTRY_USER`).
    #[arg(long = "registry-user", value_name = "USER")]
    pub user: Option<String>,
    /// A file holding the registry password (default: `EDGEC_REGISTRY_PASSWORD`).
    #[arg(long = "registry-password-file", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// A client for the options, or the message that says what to fix.
pub fn client(args: &RegistryArgs) -> Result<RegistryClient, String> {
    let ca_pem = match &args.ca {
        Some(path) => Some(std::fs::read(path).map_err(|error| {
            format!("cannot read the registry CA `{}`: {error}", path.display())
        })?),
        None => None,
    };
    let credentials = credentials(args)?;
    RegistryClient::new(RegistryOptions {
        ca_pem,
        credentials,
        ..RegistryOptions::default()
    })
    .map_err(|error| error.to_string())
}

fn credentials(args: &RegistryArgs) -> Result<Option<Credentials>, String> {
    let user = args.user.clone().or_else(|| {
        std::env::var(USER_VARIABLE)
            .ok()
            .filter(|user| !user.is_empty())
    });
    let password = match &args.password_file {
        Some(path) => Some(read_password(path)?),
        None => std::env::var(PASSWORD_VARIABLE)
            .ok()
            .filter(|password| !password.is_empty()),
    };
    match (user, password) {
        (Some(user), Some(password)) => Ok(Some(Credentials { user, password })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(format!(
            "a registry user needs a password: --registry-password-file FILE or {PASSWORD_VARIABLE}"
        )),
        (None, Some(_)) => Err(format!(
            "a registry password needs a user: --registry-user USER or {USER_VARIABLE}"
        )),
    }
}

/// The password file's content without its final line break.
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "cannot read the registry password file `{}`: {error}",
            path.display()
        )
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(format!(
            "the registry password file `{}` is empty",
            path.display()
        ));
    }
    Ok(password.to_owned())
}

/// `edgec push BUNDLE REFERENCE`.
pub fn push(bundle: &Path, reference: &str, args: &RegistryArgs) -> Status {
    let reference = match edge_registry::parse_reference(reference) {
        Ok(reference) => reference,
        Err(error) => {
            usage_error(&error.to_string());
            return Status::Failure;
        }
    };
    let client = match client(args) {
        Ok(client) => client,
        Err(message) => {
            usage_error(&message);
            return Status::Failure;
        }
    };
    match push_one(&client, bundle, &reference) {
        Ok(()) => Status::Clean,
        Err(status) => status,
    }
}

/// Pushes one bundle and prints what happened; the error is the exit status.
pub fn push_one(
    client: &RegistryClient,
    bundle: &Path,
    reference: &Reference,
) -> Result<(), Status> {
    match client.push_bundle(bundle, reference) {
        Ok(report) => {
            print_report(bundle, reference, &report);
            Ok(())
        }
        Err(error) => {
            usage_error(&format!(
                "cannot push `{}` to {}: {error}",
                bundle.display(),
                reference.whole()
            ));
            Err(status_of(&error))
        }
    }
}

fn print_report(bundle: &Path, reference: &Reference, report: &PushReport) {
    out!("pushed {} to {}", bundle.display(), reference.whole());
    out!("  digest  {}", report.manifest_digest.oci());
    out!(
        "  blobs   {} uploaded ({} bytes), {} already present",
        report.blobs_uploaded,
        report.bytes_uploaded,
        report.blobs_present
    );
}

/// A malformed bundle is an error in the input (1), like `edgec verify` finding one; the
/// registry, the network, credentials and local files are the environment (2).
pub fn status_of(error: &RegistryError) -> Status {
    match error.step() {
        Step::Bundle | Step::Layout => Status::Errors,
        _ => Status::Failure,
    }
}
