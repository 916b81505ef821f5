//! The command line: `edged apply|status|rollback|recover|run|trust`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use edge_hub::CallTimeouts;
use edge_init::status::HubReport;
use std::sync::Arc;

use crate::config::{self, DeviceConfig};
use crate::control::RemoteHub;
use crate::daemon::{self, Daemon};
use crate::device::Device;
use crate::docker::DockerEngine;
use crate::duration::Bounds;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::hub::{self, HubRuntime, ModuleHub, Place};
use crate::hub_server;
use crate::lock::{DAEMON_WAIT, DaemonLock, StateLock, Wait};
use crate::logging::{self, LogFormat};
use crate::output;
use crate::runtime::{ModuleRuntime, NoEngine};
use crate::status;
use crate::stop::StopSignals;
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
    /// another one to finish (`30s`, `5m`); without it, it waits up to 30s
    /// for a pass of `edged run` and exits at once with code 9 (busy) if
    /// another command holds the directory. For `edged run`: how long it
    /// waits for a daemon that still runs to exit (default 30s).
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
        /// Take BUNDLE as a directory a registry fetch wrote (`bundle.json`,
        /// `bundle.sig.json`, `blobs/sha256/…`) rather than a bundle file.
        /// Internal: the registry poller applies such directories itself; the
        /// flag lets the crash tests interrupt that path.
        #[arg(long, hide = true)]
        fetched: bool,
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
    /// Module twins, as the hub of `edged run` keeps them.
    Twin {
        /// What to do.
        #[command(subcommand)]
        action: TwinAction,
    },
    /// Direct methods on modules, through the hub of `edged run`.
    Method {
        /// What to do.
        #[command(subcommand)]
        action: MethodAction,
    },
    /// Modules as the hub of `edged run` knows them.
    Module {
        /// What to do.
        #[command(subcommand)]
        action: ModuleAction,
    },
}

/// Twin actions.
#[derive(Subcommand)]
pub enum TwinAction {
    /// Print a module's twin: desired and reported properties, as JSON.
    Show {
        /// The module.
        module: String,
    },
}

/// Direct method actions.
#[derive(Subcommand)]
pub enum MethodAction {
    /// Invoke a module's direct method; prints the status it answered and
    /// its payload.
    Invoke {
        /// The module.
        module: String,
        /// The method name.
        name: String,
        /// The payload, as JSON.
        #[arg(long, default_value = "null", value_parser = parse_payload)]
        payload: serde_json::Value,
        /// How long to wait for the module's answer (`30s`).
        #[arg(long, default_value = "30s", value_parser = parse_method_timeout)]
        timeout: Duration,
        /// How long to wait for the module to connect and listen for
        /// methods when it does not (`0s`: fail at once, as IoT Hub's
        /// default connectTimeoutInSeconds).
        #[arg(long, default_value = "0s", value_parser = parse_connect_timeout)]
        connect_timeout: Duration,
    },
}

/// Module actions.
#[derive(Subcommand)]
pub enum ModuleAction {
    /// Print the environment a module gets (`KEY=VALUE` lines), with a
    /// workload socket a plain process on this host can use: run the module
    /// with it to develop or debug it without a container.
    Env {
        /// The module.
        module: String,
    },
}

/// Parses `--payload`.
fn parse_payload(text: &str) -> std::result::Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|error| format!("--payload is not JSON: {error}"))
}

/// Parses `method invoke --timeout`: IoT Hub allows 5 s to 300 s; the
/// lower bound is relaxed to 1 s for scripts that probe a module.
fn parse_method_timeout(text: &str) -> std::result::Result<Duration, String> {
    Bounds {
        name: "--timeout",
        min: Duration::from_secs(1),
        max: Duration::from_secs(300),
    }
    .parse(text)
}

/// Parses `method invoke --connect-timeout`: 0 s to 300 s, IoT Hub's
/// bounds of connectTimeoutInSeconds.
fn parse_connect_timeout(text: &str) -> std::result::Result<Duration, String> {
    Bounds {
        name: "--connect-timeout",
        min: Duration::ZERO,
        max: Duration::from_secs(300),
    }
    .parse(text)
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
    let wait = cli.wait.map_or(Wait::ForDaemonPass, Wait::AtMost);
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
            let hub = config
                .hub
                .enabled
                .then(|| hub_report(&RemoteHub::new(&hub::hub_dir(&cli.state_dir))));
            let update = config
                .update
                .as_ref()
                .map(|settings| update_report(&cli.state_dir, &settings.reference));
            let runtime = open_runtime(cli, &config, None)?;
            let mut view = DeviceView::open(&cli.state_dir, config, runtime)?;
            return show_status(&mut view, *json, hub, update);
        }
        Command::Twin {
            action: TwinAction::Show { module },
        } => {
            let twin = served_hub(cli, &config)?.twin(module)?;
            return output::line(&pretty(&twin)?);
        }
        Command::Method {
            action:
                MethodAction::Invoke {
                    module,
                    name,
                    payload,
                    timeout,
                    connect_timeout,
                },
        } => {
            let timeouts = CallTimeouts {
                connect: *connect_timeout,
                response: *timeout,
            };
            let outcome =
                served_hub(cli, &config)?.invoke(module, name, payload.clone(), timeouts)?;
            return output::print(&format!(
                "status {}\n{}\n",
                outcome.status,
                pretty(&outcome.payload)?
            ));
        }
        Command::Module {
            action: ModuleAction::Env { module },
        } => {
            let environment = served_hub(cli, &config)?
                .environment(module, Place::Process)?
                .ok_or_else(|| {
                    Error::Hub(format!(
                        "module {} is not in the running deployment",
                        edge_bundle::display::escaped_message(module)
                    ))
                })?;
            let mut text = String::new();
            for (key, value) in &environment.variables {
                text.push_str(&format!("{key}={value}\n"));
            }
            return output::print(&text);
        }
        _ => {}
    }
    // A command that changes the deployment from a shell while `edged run`
    // serves the hub deploys the hub through the daemon; without a daemon,
    // the modules start without it and get its environment when `edged run`
    // starts (its first pass recreates their containers).
    // `edged run` serves the hub itself (and keeps serving it, with its
    // control socket, until it exits).
    // The daemon watches for SIGTERM and SIGINT before it serves anything,
    // so a stop request while it starts still ends it cleanly.
    let stop = match cli.command {
        Command::Run { once: false, .. } => StopSignals::watch_or_warn(),
        _ => None,
    };
    // One daemon at a time: a second `edged run` waits for the first to
    // exit before it opens the hub's store or binds its ports, and the lock
    // is released last, after the hub has stopped.
    let _daemon = match cli.command {
        Command::Run { .. } => Some(DaemonLock::acquire(
            &cli.state_dir,
            cli.wait.unwrap_or(DAEMON_WAIT),
        )?),
        _ => None,
    };
    let served = match cli.command {
        Command::Run { .. } if config.hub.enabled => Some(hub_server::start(
            &config,
            &cli.state_dir,
            cli.runtime != RuntimeKind::Docker,
        )?),
        _ => None,
    };
    let hub: Option<Arc<dyn ModuleHub>> = match &served {
        Some((local, _control)) => Some(Arc::clone(local) as Arc<dyn ModuleHub>),
        None => {
            let remote = RemoteHub::new(&hub::hub_dir(&cli.state_dir));
            (config.hub.enabled && remote.answers()).then(|| Arc::new(remote) as Arc<dyn ModuleHub>)
        }
    };
    let runtime = open_runtime(cli, &config, hub)?;
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
        Command::Apply { bundle, fetched } => apply(&mut device, bundle, *fetched),
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
            let poller = device
                .config()
                .update
                .as_ref()
                .map(|settings| crate::poll::Poller::new(settings, &cli.state_dir));
            Daemon::new(&mut device, &cli.state_dir, &inbox, *interval)
                .with_poller(poller)
                .run(*once, stop.as_ref())
        }
        Command::Recover
        | Command::Status { .. }
        | Command::Trust { .. }
        | Command::Twin { .. }
        | Command::Method { .. }
        | Command::Module { .. } => Ok(()),
    }
}

/// The hub of the `edged run` serving this state directory.
fn served_hub(cli: &Cli, config: &DeviceConfig) -> Result<RemoteHub> {
    if !config.hub.enabled {
        return Err(Error::Config(
            "the hub is disabled ([hub] enabled = false in the device configuration)".to_owned(),
        ));
    }
    Ok(RemoteHub::new(&hub::hub_dir(&cli.state_dir)))
}

/// The hub's part of `edged status`: what the daemon reports, or that none
/// answers.
fn hub_report(hub: &RemoteHub) -> HubReport {
    hub.report().unwrap_or_else(|error| {
        if !matches!(error, Error::HubNotRunning(_)) {
            tracing::warn!("cannot ask the hub for its report: {error}");
        }
        HubReport {
            running: false,
            modules: Default::default(),
            upstream_queue: 0,
            upstream: None,
            dropped: Default::default(),
        }
    })
}

fn pretty(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|error| Error::Hub(format!("cannot encode the answer: {error}")))
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
            Self::Twin { .. } => "twin",
            Self::Method { .. } => "method",
            Self::Module { .. } => "module",
        }
    }
}

/// The module runtime, with `hub` deployed ahead of it when there is one.
fn open_runtime(
    cli: &Cli,
    config: &DeviceConfig,
    hub: Option<Arc<dyn ModuleHub>>,
) -> Result<Box<dyn ModuleRuntime>> {
    let connect = || {
        DockerEngine::connect(&config.instance, config.restart.clone()).map(|engine| match &hub {
            Some(hub) => engine.with_hub(Arc::clone(hub)),
            None => engine,
        })
    };
    let runtime: Box<dyn ModuleRuntime> = match cli.runtime {
        RuntimeKind::None => Box::new(NoEngine { healthy: true }),
        RuntimeKind::Failing => Box::new(NoEngine { healthy: false }),
        RuntimeKind::Docker => {
            match connect() {
                Ok(engine) => Box::new(engine),
                // Status must work on a device whose engine is down.
                Err(error) if matches!(cli.command, Command::Status { .. }) => {
                    tracing::warn!("{error}; module states are unknown");
                    Box::new(NoEngine { healthy: true })
                }
                // The daemon waits for an engine that is not up yet; the
                // first attempt of the wait reports why.
                Err(_) if matches!(cli.command, Command::Run { once: false, .. }) => {
                    Box::new(daemon::until_connected(&cli.state_dir, connect))
                }
                Err(error) => return Err(error),
            }
        }
    };
    Ok(match hub {
        Some(hub) => Box::new(HubRuntime::new(runtime, hub)),
        None => runtime,
    })
}

fn apply(device: &mut Device, bundle: &Path, fetched: bool) -> Result<()> {
    let applied = logging::apply_span(bundle).in_scope(|| {
        if fetched {
            device.apply_fetched(bundle)
        } else {
            device.apply(bundle)
        }
    })?;
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

/// The poller's record for `edged status`; before the first poll (or when the record cannot be
/// read, which is logged) only the reference.
fn update_report(state_dir: &Path, reference: &str) -> edge_init::status::UpdateReport {
    match crate::update::load(state_dir) {
        Ok(Some(record)) => record,
        Ok(None) => crate::update::never_polled(reference),
        Err(error) => {
            tracing::warn!("{error}; it is replaced at the next poll");
            crate::update::never_polled(reference)
        }
    }
}

fn show_status(
    device: &mut DeviceView,
    json: bool,
    hub: Option<HubReport>,
    update: Option<edge_init::status::UpdateReport>,
) -> Result<()> {
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
    let mut report = status::report(&state, shown_active, &modules, supervision);
    report.hub = hub;
    report.pull = device.pull_progress();
    report.update = update;
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
