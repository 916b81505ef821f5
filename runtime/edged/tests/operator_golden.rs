//! Golden tests of what edged's operator commands print: `twin show`, `method invoke` and the
//! hub part of `status`, against a real `edged run --runtime none` serving the hub.
//!
//! Each case is a file `tests/golden/NAME.case`: comment lines (`# …`), then a script of steps,
//! then after a line `--- plant.edge` the deployment as `.edge` source (modules, twins, routes
//! and `deployment plant`). The harness prepends the `hardware gateway` block that matches the
//! test device, builds and signs the deployment with `edgec build`, applies it, starts
//! `edged run` and waits until the hub serves the deployment's modules. Then it runs the steps:
//!
//! - `$ edged ARGUMENTS`: runs edged against the device (single quotes group an argument, as in
//!   a shell: `--payload '{"n": 1}'`) and records the command, its exit code, stdout and stderr;
//! - `stop daemon`: stops `edged run` with SIGTERM and waits for it to exit.
//!
//! The record is compared with `tests/golden/NAME.transcript` after [`normalise`]. The
//! machinery is the `golden-tests` library's: `EDGEC_BLESS=1` rewrites the transcripts, and a
//! differing, missing, stale or orphaned transcript, or a stray file, fails the run. Arguments
//! that do not start with `-` run only the cases whose names contain them.
//!
//! The hub listens on ephemeral ports of 127.0.0.1, so the suite needs no network namespace
//! and does not collide with another hub on the machine (a benchmark's, a device's).

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{COMPATIBLE, TestDevice, build_plant, device_trusting_edgec_key};
use golden_tests::{Found, Layout, Tally, bless_requested, compare_files, filters};
use regex::Regex;
use serde_json::Value;

/// The suite folder, relative to the crate.
const DIRECTORY: &str = "tests/golden";

/// The line that ends the script and starts the deployment's source.
const SOURCE_MARKER: &str = "--- plant.edge";

/// The device's configuration: a fixed device id (it is in twins and errors), the hub on
/// ephemeral ports, and a health window of zero so that `edged apply` commits at once.
const DEVICE_CONFIG: &str = "[health]\nwindow = \"0s\"\n[hub]\ndevice_id = \"gw-golden\"\ngateway_hostname = \"localhost\"\nmqtt_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\nstore_limit = \"64MiB\"\n";

/// A step of a case's script.
enum Step {
    /// `$ edged …`: the arguments after `edged`.
    Edged(Vec<String>),
    /// `stop daemon`.
    StopDaemon,
}

/// A parsed case file.
struct Script {
    steps: Vec<Step>,
    /// The deployment's `.edge` source, without the hardware block.
    source: String,
}

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bless = bless_requested();
    let filters = filters();
    let layout = Layout {
        directory: DIRECTORY,
        input: Some("case"),
        folder_entry: None,
        companions: &["transcript"],
    };
    let listing = match layout.list(root) {
        Ok(listing) => listing,
        Err(problem) => {
            println!("{problem}");
            return ExitCode::FAILURE;
        }
    };
    let mut tally = Tally {
        failures: listing.problems.clone(),
        ..Tally::default()
    };
    tally
        .failures
        .extend(listing.orphans(listing.cases.iter().map(Found::stem)));
    for found in &listing.cases {
        // The layout has no folder cases, so every case found is a file.
        let Found::File { stem, path } = found else {
            continue;
        };
        if !golden_tests::selected(&filters, stem) {
            continue;
        }
        let failures = match run_case(&root.join(path)) {
            Ok(transcript) => compare_files(
                root,
                stem,
                &["transcript"],
                &BTreeMap::from([("transcript", transcript)]),
                bless,
            ),
            Err(message) => vec![format!("{stem}: {message}")],
        };
        tally.record(stem, failures);
    }
    tally.finish("", bless)
}

/// Parses a case file: comments, steps, the source marker, the source.
fn parse(text: &str) -> Result<Script, String> {
    let (script, source) = text
        .split_once(&format!("\n{SOURCE_MARKER}\n"))
        .ok_or_else(|| format!("no `{SOURCE_MARKER}` line before the deployment's source"))?;
    let mut steps = Vec::new();
    for line in script.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(arguments) = line.strip_prefix("$ edged ") {
            steps.push(Step::Edged(split_arguments(arguments)?));
        } else if line == "stop daemon" {
            steps.push(Step::StopDaemon);
        } else {
            return Err(format!("`{line}` is neither `$ edged …` nor `stop daemon`"));
        }
    }
    if steps.is_empty() {
        return Err("the script has no steps".into());
    }
    Ok(Script {
        steps,
        source: source.to_owned(),
    })
}

/// Splits a command line at spaces; single quotes group what they enclose into one argument.
fn split_arguments(line: &str) -> Result<Vec<String>, String> {
    let mut arguments = Vec::new();
    let mut current: Option<String> = None;
    let mut quoted = false;
    for character in line.chars() {
        match character {
            '\'' => {
                quoted = !quoted;
                current.get_or_insert_with(String::new);
            }
            ' ' if !quoted => arguments.extend(current.take()),
            _ => current.get_or_insert_with(String::new).push(character),
        }
    }
    if quoted {
        return Err(format!("`{line}` has an unclosed quote"));
    }
    arguments.extend(current);
    Ok(arguments)
}

/// `edged run` of a case, stopped (SIGKILL) when the case ends however it ends.
struct Daemon {
    child: Child,
}

impl Daemon {
    /// Sends SIGTERM, as systemd does, and waits for the daemon to exit.
    fn stop(&mut self) -> Result<(), String> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .map_err(|error| format!("cannot run kill: {error}"))?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        let status = poll(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        })
        .ok_or("edged run did not exit within 10 s of SIGTERM")?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("edged run exited with {status} after SIGTERM"))
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 50 ms until it gives a value or `limit` passes.
fn poll<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a case and returns its normalised transcript. The test helpers assert (panic) when
/// building or applying fails; that panic is turned into the case's failure so that the other
/// cases still run.
fn run_case(path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read the case: {error}"))?;
    let script = parse(&text)?;
    std::panic::catch_unwind(|| run_script(&script)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_default();
        Err(format!("the harness panicked: {message}"))
    })
}

fn run_script(script: &Script) -> Result<String, String> {
    let work = tempfile::tempdir().map_err(|error| error.to_string())?;
    let (device, key) = device_trusting_edgec_key(work.path(), DEVICE_CONFIG);
    let source = format!(
        "hardware gateway {{\n  arch = amd64\n  compatible = \"{COMPATIBLE}\"\n}}\n\n{}",
        script.source
    );
    let bundle = build_plant(work.path(), &source, &key);
    let applied = device.edged("none", &["apply", &bundle.to_string_lossy()]);
    if !applied.status.success() {
        return Err(format!("edged apply failed:\n{}", shown(&applied)));
    }
    let log_path = work.path().join("edged-run.log");
    let log = File::create(&log_path).map_err(|error| error.to_string())?;
    let child = device
        .command("none", &["run", "--interval", "100ms"])
        .stdout(log.try_clone().map_err(|error| error.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|error| format!("cannot start edged run: {error}"))?;
    let mut daemon = Daemon { child };
    let serving = poll(Duration::from_secs(30), || {
        let output = device.edged("none", &["status", "--json"]);
        let report: Value = serde_json::from_slice(&output.stdout).ok()?;
        let modules = report["hub"]["modules"].as_object()?;
        (!modules.is_empty()).then_some(())
    });
    if serving.is_none() {
        return Err(format!(
            "the hub did not serve the deployment within 30 s; edged run logged:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        ));
    }
    let mut transcript = String::new();
    for step in &script.steps {
        match step {
            Step::Edged(arguments) => {
                let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
                let output = device.edged("none", &arguments);
                transcript.push_str(&record(&arguments, &output));
            }
            Step::StopDaemon => {
                daemon.stop()?;
                transcript.push_str("stop daemon\n\n");
            }
        }
    }
    Ok(normalise(&transcript, &device, work.path()))
}

/// A command's record in the transcript: the command line, exit code, stdout and stderr, each
/// stream marked when it does not end with a newline so that a lost newline shows in a diff.
fn record(arguments: &[&str], output: &Output) -> String {
    let shown_arguments: Vec<String> = arguments
        .iter()
        .map(|argument| {
            if argument.contains([' ', '"', '{']) {
                format!("'{argument}'")
            } else {
                (*argument).to_owned()
            }
        })
        .collect();
    let code = output.status.code().map_or_else(
        || "none (killed by a signal)".to_owned(),
        |code| code.to_string(),
    );
    let mut text = format!("$ edged {}\n--- exit {code}\n", shown_arguments.join(" "));
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        text.push_str(&format!("--- {name}\n"));
        let stream = String::from_utf8_lossy(bytes);
        text.push_str(&stream);
        if !stream.is_empty() && !stream.ends_with('\n') {
            text.push_str("\n(no newline at the end)\n");
        }
    }
    text.push('\n');
    text
}

/// The output of a command that should have succeeded, for a failure message.
fn shown(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Replaces what differs between two runs of the same case with a placeholder, so that a
/// transcript compares equal on every run and machine. This is the only place that does so;
/// what it replaces, and why each differs:
///
/// - the device's temporary directory (state directory, control socket, configuration) →
///   `$DEVICE`, and the case's working directory (project, bundle, signing key) → `$WORK`:
///   both are fresh temporary directories;
/// - RFC 3339 times (`2026-01-01T00:00:00Z`, with or without fractions) → `<time>`: the clock;
/// - 64 hex digits → `<sha256>`: manifest digests and key ids, which depend on the fresh
///   signing key and on the edgec that built the bundle;
/// - 32 hex digits → `<generation-id>`: the hub draws a random generation id per module;
/// - `pid N` → `pid <pid>`: lock holders are named by process id;
/// - a port after `127.0.0.1:` → `<port>`: the hub listens on ephemeral ports;
/// - edged's own version (`CARGO_PKG_VERSION`) where a message names it → `<version>`, so that
///   a release does not change every transcript.
fn normalise(text: &str, device: &TestDevice, work: &Path) -> String {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        [
            (
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
                "<time>",
            ),
            (r"\b[0-9a-f]{64}\b", "<sha256>"),
            (r"\b[0-9a-f]{32}\b", "<generation-id>"),
            (r"\bpid \d+\b", "pid <pid>"),
            (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
            (
                &format!(r"\bedged {}\b", regex::escape(env!("CARGO_PKG_VERSION"))),
                "edged <version>",
            ),
        ]
        .into_iter()
        .map(|(pattern, replacement)| (Regex::new(pattern).unwrap(), replacement))
        .collect()
    });
    let mut text = text
        .replace(
            &device.root.path().to_string_lossy().into_owned(),
            "$DEVICE",
        )
        .replace(&work.to_string_lossy().into_owned(), "$WORK");
    for (pattern, replacement) in patterns {
        text = pattern.replace_all(&text, *replacement).into_owned();
    }
    text
}
