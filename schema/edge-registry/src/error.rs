//! What can go wrong talking to a registry, by the step that failed, so `edgec` and `edged`
//! can tell an operator what to do. No variant carries a password: credentials never leave
//! [`crate::client::Credentials`], and registry answers are shown without request headers.

use std::path::PathBuf;
use std::time::Duration;

use edge_bundle::{BundleError, Sha256Digest};

use crate::artifact::LayoutError;

/// The step a registry operation failed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The client could not be set up: an unusable CA file, no I/O runtime.
    Setup,
    /// The reference does not parse or names no tag or digest.
    Reference,
    /// The registry refused the credentials (or asked for some and none were given).
    Auth,
    /// The TLS handshake failed: an unknown CA, a wrong host name, a bad CA file.
    Tls,
    /// The registry could not be reached.
    Connect,
    /// The tag, manifest or blob does not exist.
    NotFound,
    /// A blob's content did not match its digest.
    Digest,
    /// A document or blob is larger than the bound for it.
    TooLarge,
    /// The operation ran past its deadline or a read timed out.
    Timeout,
    /// The registry's manifest is not a bundle layout, or not this bundle's.
    Layout,
    /// The bundle file (or a fetched `bundle.json`) is malformed.
    Bundle,
    /// A local file could not be read or written.
    Io,
    /// The registry answered something else unexpected, or a transfer broke off.
    Registry,
}

/// A failed registry operation.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The client could not be set up.
    #[error("cannot set up the registry client: {detail}")]
    Setup {
        /// Why.
        detail: String,
    },
    /// The reference is not `host[:port]/repository:tag` (or `@sha256:…`).
    #[error("invalid registry reference {reference}: {reason}")]
    InvalidReference {
        /// The reference, escaped for display.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The registry refused the credentials.
    #[error("registry {registry} refused the credentials ({detail}); check the user and password")]
    Auth {
        /// The registry host.
        registry: String,
        /// What it said.
        detail: String,
    },
    /// TLS failed.
    #[error(
        "TLS with registry {registry} failed ({detail}); check the CA certificate and the host name"
    )]
    Tls {
        /// The registry host.
        registry: String,
        /// The TLS error.
        detail: String,
    },
    /// The registry could not be reached.
    #[error("cannot reach registry {registry}: {detail}")]
    Connect {
        /// The registry host.
        registry: String,
        /// The connection error.
        detail: String,
    },
    /// Something does not exist.
    #[error("{what} not found in registry {registry}")]
    NotFound {
        /// The registry host.
        registry: String,
        /// What was looked for, e.g. `manifest fleet/gateway:v2`.
        what: String,
    },
    /// A blob's content does not match its digest; a downloaded one was deleted.
    #[error("{what} does not match its digest: expected {}, got {}", expected.oci(), actual.oci())]
    DigestMismatch {
        /// The blob, e.g. `blob sha256:… (payload/os/rootfs.img)`.
        what: String,
        /// The digest it should have.
        expected: Sha256Digest,
        /// The digest it has.
        actual: Sha256Digest,
    },
    /// A document or blob is larger than allowed.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// The operation took too long.
    #[error("{operation} timed out after {}", humanize(*after))]
    Timeout {
        /// What was being done.
        operation: String,
        /// How long it was given.
        after: Duration,
    },
    /// The registry's manifest is not usable.
    #[error("{reference}: {source}")]
    Layout {
        /// The reference it was fetched from.
        reference: String,
        /// Why.
        #[source]
        source: LayoutError,
    },
    /// A bundle (file or fetched `bundle.json`) is malformed.
    #[error("{what}: {source}")]
    Bundle {
        /// The bundle file or reference.
        what: String,
        /// Why.
        #[source]
        source: BundleError,
    },
    /// A local file could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// `read`, `write`, …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another failure from the registry, or a transfer that broke off after its retries.
    #[error("registry {registry}: {detail}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What happened.
        detail: String,
        /// Whether trying again may succeed (a broken connection, a 5xx answer).
        transient: bool,
    },
}

impl RegistryError {
    /// The step that failed.
    pub fn step(&self) -> Step {
        match self {
            RegistryError::Setup { .. } => Step::Setup,
            RegistryError::InvalidReference { .. } => Step::Reference,
            RegistryError::Auth { .. } => Step::Auth,
            RegistryError::Tls { .. } => Step::Tls,
            RegistryError::Connect { .. } => Step::Connect,
            RegistryError::NotFound { .. } => Step::NotFound,
            RegistryError::DigestMismatch { .. } => Step::Digest,
            RegistryError::TooLarge { .. } => Step::TooLarge,
            RegistryError::Timeout { .. } => Step::Timeout,
            RegistryError::Layout { .. } => Step::Layout,
            RegistryError::Bundle { .. } => Step::Bundle,
            RegistryError::Io { .. } => Step::Io,
            RegistryError::Registry { .. } => Step::Registry,
        }
    }

    /// Whether trying the same operation again may succeed: the link or the registry, not the
    /// content, credentials or configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connect { .. } | RegistryError::Timeout { .. } => true,
            RegistryError::Registry { transient, .. } => *transient,
            _ => false,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        RegistryError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn humanize(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
