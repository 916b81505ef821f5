//! The command line: `edged apply|status|rollback|recover|run|trust`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, DeviceConfig};
use crate::daemon::{self, Daemon};
use crate::device::Device;
use crate::docker::DockerEngine;
use crate::duration::Bounds;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::lock::{StateLock, Wait};
use crate::logging::{self, LogFormat};
use crate::output;
use crate::runtime::{ModuleRuntime, NoEngine};
use crate::status;
use crate::trust::{AnchorSource, TrustStore};
use crate::view::DeviceView;

/// `edged --version`, which says whether this is a test build that obeys
/// `EDGED_FAILPOINT`.
const VERSION: &str = if failpoint::COMPILED_IN {
    concat!(env!("CARGO_PKG_VERSION"), " (test build: failpoints)")
} else {
    env!("CARGO_PKG_VERSION")
};

/// The edgec device runtime.
#[derive(Parser)]
#[command(name = "edged", version = VERSION, about)]
pub struct Cli {
    /// The state directory holding the deployment slots and state record.
    #[arg(long, global = true, default_value = "/var/lib/edged")]
    pub state_dir: PathBuf,
    /// The device configuration file.
    #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
    pub device_config: PathBuf,
    /// An extra trusted public key (PEM), for development.
    #[arg(long = "trust", global = true, value_name = "KEY.pub")]
    pub trust: Vec<PathBuf>,
    /// Where modules run: `docker`, or `none` to exercise the transaction
    /// without an engine (tests, benchmarks).
    #[arg(long, global = true, value_enum, default_value_t = RuntimeKind::Docker)]
    pub runtime: RuntimeKind,
    /// How long a command that changes the state directory waits for
    /// another one to finish (`30s`, `5m`); without it, it exits at once
    /// with code 9 (busy).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_wait)]
    pub wait: Option<Duration>,
    /// How events are logged to stderr: text (`auto` colours it on a
    /// terminal) or JSON lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The module runtime to use.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// The local Docker engine.
    Docker,
    /// No engine: modules are not run and deployments count as healthy.
    None,
    /// No engine, and every health check fails (exercises rollback in
    /// tests; not shown in the help).
    #[value(hide = true)]
    Failing,
}

/// Parses `--interval`: often enough to notice a stopped module, never a
/// busy loop.
fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    Bounds {
        name: "--interval",
        min: Duration::from_millis(10),
        max: Duration::from_secs(3600),
    }
    .parse(text)
}

/// Parses `--wait`.
fn parse_wait(text: &str) -> std::result::Result<Duration, String> {
    Bounds {
        name: "--wait",
        min: Duration::ZERO,
        max: Duration::from_secs(24 * 3600),
    }
    .parse(text)
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Verify, install and run a bundle; roll back if it is unhealthy.
    Apply {
        /// The `.edgebundle` file.
        bundle: PathBuf,
    },
    /// Show the deployment and its modules.
    Status {
        /// Print the IoT Edge reported-properties JSON.
        #[arg(long)]
        json: bool,
    },
    /// Go back to the deployment in the other slot.
    Rollback,
    /// Finish or undo a transaction interrupted by a crash (every command
    /// does this first).
    Recover,
    /// Run as a daemon: supervise modules and apply bundles arriving in the inbox.
    Run {
        /// The inbox directory; bundles are applied in file-name order.
        #[arg(long)]
        inbox: Option<PathBuf>,
        /// Time between supervision passes (`1s`, `500ms`).
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        /// Process the inbox and supervise once, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Inspect or extend the trust anchors.
    Trust {
        /// What to do with them.
        #[command(subcommand)]
        action: TrustAction,
    },
}

/// Trust anchor actions.
#[derive(Subcommand)]
pub enum TrustAction {
    /// List the trusted keys and where they are stored.
    List,
    /// Add a PEM public key (onto the token when one is configured).
    Add {
        /// The public key file.
        key: PathBuf,
    },
}

/// Parses the command line, runs it and reports errors with a hint.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_closed_output() => ExitCode::SUCCESS,
        Err(error) => {
            report(&error, cli.log_format);
            ExitCode::from(error.exit_code())
        }
    }
}

/// Reports the error that ends the command: two lines for people, or one
/// event for a log collector. A closed stderr loses the report, not the
/// exit code.
fn report(error: &Error, format: LogFormat) {
    if format.is_json() {
        tracing::error!(
            exit_code = error.exit_code(),
            hint = error.hint(),
            "{error}"
        );
    } else {
        let _ = writeln!(
            std::io::stderr().lock(),
            "edged: error: {error}\nhint: {}",
            error.hint()
        );
    }
}

/// Runs one command. Readers (`status`, `trust list`) only read; every
/// other command holds the state directory's lock while it may write.
pub fn run(cli: &Cli) -> Result<()> {
    let config = DeviceConfig::load(&cli.device_config)?;
    let trust = TrustStore::new(&config.trust, &cli.trust);
    let wait = cli.wait.map_or(Wait::No, Wait::AtMost);
    match &cli.command {
        Command::Trust {
            action: TrustAction::List,
        } => return list_trust(&trust),
        Command::Trust {
            action: TrustAction::Add { key },
        } => {
            let _lock = StateLock::acquire(&cli.state_dir, "trust add", wait)?;
            return add_trust(&trust, key);
        }
        Command::Status { json } => {
            let runtime = open_runtime(cli, &config)?;
            let mut view = DeviceView::open(&cli.state_dir, config, runtime)?;
            return show_status(&mut view, *json);
        }
        _ => {}
    }
    let runtime = open_runtime(cli, &config)?;
    // The lock is declared first so that it is released last, once the
    // device has finished deleting what the command replaced.
    // The daemon waits for a command from the shell to finish rather than
    // exit (which on an OS image would reboot the device).
    let wait = if matches!(cli.command, Command::Run { .. }) {
        Wait::Forever
    } else {
        wait
    };
    let lock = StateLock::acquire(&cli.state_dir, cli.command.name(), wait)?;
    let (mut device, recovered) = Device::open(&cli.state_dir, config, trust, runtime)?;
    if let Some(what) = recovered {
        tracing::warn!(phase = "recover", "recovered an interrupted update: {what}");
    }
    match &cli.command {
        Command::Apply { bundle } => apply(&mut device, bundle),
        Command::Rollback => {
            let previous = device.rollback()?;
            output::line(&format!(
                "rolled back to deployment {} version {} (slot {})",
                previous.deployment, previous.version, previous.slot
            ))
        }
        Command::Run {
            inbox,
            interval,
            once,
        } => {
            let inbox = inbox.clone().unwrap_or_else(|| cli.state_dir.join("inbox"));
            // The daemon takes the lock for each pass and sleeps without it.
            drop(lock);
            Daemon::new(&mut device, &cli.state_dir, &inbox, *interval).run(*once)
        }
        Command::Recover | Command::Status { .. } | Command::Trust { .. } => Ok(()),
    }
}

impl Command {
    /// The command's name, as the lock file records it.
    fn name(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "apply",
            Self::Status { .. } => "status",
            Self::Rollback => "rollback",
            Self::Recover => "recover",
            Self::Run { .. } => "run",
            Self::Trust { .. } => "trust",
        }
    }
}

fn open_runtime(cli: &Cli, config: &DeviceConfig) -> Result<Box<dyn ModuleRuntime>> {
    Ok(match cli.runtime {
        RuntimeKind::None => Box::new(NoEngine { healthy: true }),
        RuntimeKind::Failing => Box::new(NoEngine { healthy: false }),
        RuntimeKind::Docker => {
            match DockerEngine::connect(&config.instance, config.restart.clone()) {
                Ok(engine) => Box::new(engine),
                // Status must work on a device whose engine is down.
                Err(error) if matches!(cli.command, Command::Status { .. }) => {
                    tracing::warn!("{error}; module states are unknown");
                    Box::new(NoEngine { healthy: true })
                }
                // The daemon waits for an engine that is not up yet; the
                // first attempt of the wait reports why.
                Err(_) if matches!(cli.command, Command::Run { once: false, .. }) => {
                    Box::new(daemon::until_connected(&cli.state_dir, || {
                        DockerEngine::connect(&config.instance, config.restart.clone())
                    }))
                }
                Err(error) => return Err(error),
            }
        }
    })
}

fn apply(device: &mut Device, bundle: &Path) -> Result<()> {
    let applied = logging::apply_span(bundle).in_scope(|| device.apply(bundle))?;
    let from = applied.previous_version.map_or_else(
        || "no deployment".to_owned(),
        |version| format!("version {version}"),
    );
    output::line(&format!(
        "applied deployment {} version {} (slot {}), replacing {from}",
        applied.installed.deployment, applied.installed.version, applied.installed.slot
    ))?;
    if let Some(slot) = applied.os_slot {
        output::line(&format!(
            "OS update written to slot {slot}: reboot to run it"
        ))?;
    }
    Ok(())
}

fn show_status(device: &mut DeviceView, json: bool) -> Result<()> {
    let state = device.state()?;
    // A damaged active deployment is reported, not a reason to report
    // nothing: the operator needs the record, the floor and the daemon's
    // failure to decide what to do. The command still exits with the error.
    let (active, modules, damage) = match device.active() {
        Ok(active) => {
            let modules = device.module_status()?;
            (active, modules, None)
        }
        Err(error) => (None, Vec::new(), Some(error)),
    };
    let supervision = device.supervision_failure();
    let shown_active = match &damage {
        None => Ok(active.as_ref()),
        Some(error) => Err(error.to_string()),
    };
    let report = status::report(&state, shown_active, &modules, supervision);
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|error| Error::CorruptState(format!("cannot encode the status: {error}")))?;
        output::line(&text)?;
    } else {
        output::print(&status::human(&report))?;
    }
    damage.map_or(Ok(()), Err)
}

fn list_trust(trust: &TrustStore) -> Result<()> {
    let mut text = String::new();
    for anchor in trust.anchors()? {
        let source = match anchor.source {
            AnchorSource::Token => "token",
            AnchorSource::File => "file",
        };
        text.push_str(&format!(
            "{} {source} {}\n",
            edge_bundle::key_id(&anchor.key),
            anchor.location
        ));
    }
    text.push_str(&format!("threshold {}\n", trust.threshold()));
    output::print(&text)
}

fn add_trust(trust: &TrustStore, key: &Path) -> Result<()> {
    let anchor = trust.add(key)?;
    output::line(&format!(
        "added {} to {}",
        edge_bundle::key_id(&anchor.key),
        anchor.location
    ))
}
