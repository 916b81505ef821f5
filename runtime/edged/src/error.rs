//! Every way an edged command can fail, with the exit code and a hint a
//! field technician can act on.

use std::io;
use std::path::{Path, PathBuf};

use crate::pull::PullFailure;

/// Why an edged command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or device configuration is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The bundle was refused; nothing on the device changed.
    #[error("bundle refused: {0}")]
    Refused(String),
    /// The bundle's signed expiry has passed by this device's clock; nothing
    /// on the device changed.
    #[error(
        "bundle refused: deployment {} version {version} expired at {expires}; this device's clock says {now}",
        edge_bundle::display::escaped(deployment)
    )]
    Expired {
        /// The deployment name.
        deployment: String,
        /// Its version.
        version: u64,
        /// The signed expiry, RFC 3339 UTC.
        expires: String,
        /// The device's clock, RFC 3339 UTC.
        now: String,
    },
    /// The new deployment was installed but unhealthy, and the device went
    /// back to the previous one.
    #[error("deployment version {version} was unhealthy and has been rolled back: {reason}")]
    RolledBack {
        /// The version that failed.
        version: u64,
        /// What made it unhealthy.
        reason: String,
    },
    /// There is no previous deployment to go back to.
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    /// The Docker engine is unreachable or too old.
    #[error("container engine: {0}")]
    Docker(String),
    /// The trust anchors (PKCS#11 token or key files) cannot be read.
    #[error("trust anchors: {0}")]
    Trust(String),
    /// Reading or writing the state directory failed.
    #[error("state directory: cannot {action} {path}: {source}")]
    State {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The state directory holds something edged did not write.
    #[error("state directory: {0}")]
    CorruptState(String),
    /// The command's output could not be written to stdout.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
    /// The edge hub refused a request or could not serve it (a module not
    /// deployed or not connected, a method that timed out).
    #[error("hub: {0}")]
    Hub(String),
    /// No `edged run` serves the hub this command asks.
    #[error("the hub is not running: {0}")]
    HubNotRunning(String),
    /// A module image the bundle pins could not be pulled; the device
    /// stays on its current deployment.
    #[error("cannot pull the image of module {module} ({reference}): {failure}: {detail}")]
    Pull {
        /// The module.
        module: String,
        /// The pinned reference.
        reference: String,
        /// Why, as a class.
        failure: crate::pull::PullFailure,
        /// The engine's or registry's words.
        detail: String,
    },
    /// Another edged process is changing the state directory.
    #[error("the state directory is busy: {holder} is changing it")]
    Busy {
        /// Who holds the lock, as its lock file names it.
        holder: String,
    },
    /// Another `edged run` serves the state directory (and its hub) and
    /// did not exit within the wait.
    #[error(
        "another daemon serves this state directory: {holder} holds {} and did not exit within {}",
        lock.display(),
        humantime::format_duration(*waited)
    )]
    DaemonRunning {
        /// Who holds the daemon lock, as its lock file names it.
        holder: String,
        /// The daemon lock file.
        lock: PathBuf,
        /// How long this daemon waited for it.
        waited: std::time::Duration,
    },
}

impl Error {
    /// The process exit code: distinct per class so scripts and technicians
    /// can tell a refused bundle from a broken device.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Refused(_) => 3,
            Self::RolledBack { .. } => 4,
            Self::NothingToRollBack(_) => 5,
            Self::Docker(_) => 6,
            Self::Trust(_) => 7,
            Self::State { .. } | Self::CorruptState(_) => 8,
            Self::Busy { .. } | Self::DaemonRunning { .. } => 9,
            Self::Hub(_) => 10,
            Self::HubNotRunning(_) => 11,
            Self::Pull { .. } => 12,
            Self::Expired { .. } => 13,
            Self::Output(_) => 1,
        }
    }

    /// What to do about it, in one sentence.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Config(_) => "fix the command line or the device configuration file and retry",
            Self::Refused(_) => {
                "the device is unchanged; obtain a correctly signed, newer bundle built for this device"
            }
            Self::Expired { .. } => {
                "the device is unchanged; ask for the release re-signed with a later expiry (edgec build --expires), or check this device's clock (date -u) if the expiry cannot have passed"
            }
            Self::RolledBack { .. } => {
                "the device runs the previous deployment again; check the module logs (`docker logs`) and ship a fixed bundle with a higher version"
            }
            Self::NothingToRollBack(_) => "the device keeps its current deployment",
            Self::Docker(_) => {
                "start the Docker engine (`systemctl start docker`) or upgrade it to API 1.41 (Docker 20.10) or newer"
            }
            Self::Trust(_) => {
                "check that the security element is present and the trust settings in the device configuration"
            }
            Self::State { .. } | Self::CorruptState(_) => {
                "check the disk (free space, read-only file system); do not edit the state directory by hand"
            }
            Self::Hub(_) => {
                "check that the module is in the deployment and connected (`edged status`), and the daemon's log"
            }
            Self::HubNotRunning(_) => {
                "start `edged run` (with `--runtime none` to run the modules as plain processes), and check [hub] enabled in the device configuration"
            }
            Self::Output(_) => "check where the output goes (a full disk, a closed terminal)",
            Self::Pull { failure, .. } => match failure {
                PullFailure::Auth => {
                    "the device is unchanged; check the registry credentials in the deployment (registryCredentials) or the device's [[registry_credentials]] for this registry"
                }
                PullFailure::NotFound => {
                    "the device is unchanged; push the pinned image to the registry, or ship a bundle pinning the digest that was pushed"
                }
                PullFailure::DigestMismatch => {
                    "the device is unchanged; a pulled image whose digest differs from the pinned one is refused: check what the registry serves for this reference"
                }
                PullFailure::Network | PullFailure::Registry | PullFailure::Engine => {
                    "the device is unchanged; check the network and the registry, then apply again (`edged run` retries by itself)"
                }
            },
            Self::Busy { .. } => {
                "retry when it is done, pass --wait 5m to wait for it, or, while `edged run` is running, drop the bundle into its inbox"
            }
            Self::DaemonRunning { .. } => {
                "one `edged run` serves a state directory: stop the other one (`systemctl stop edged`, or `kill` the pid named), or pass --wait 2m to wait longer for it to exit"
            }
        }
    }

    /// Whether the failure can pass by itself (a registry that cannot be
    /// reached now), so that the daemon keeps the bundle and retries.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Pull { failure, .. } if failure.is_transient())
    }

    /// Whether this is stdout closed by its reader (`edged status | head`):
    /// the reader has what it wanted, so the command ends quietly.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, Self::Output(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Wraps an I/O error on a state-directory path.
    pub fn state<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::State {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The result type of edged operations.
pub type Result<T> = std::result::Result<T, Error>;
