//! The edge hub against the real Azure IoT Python SDK (`azure-iot-device`
//! 2.14 from PyPI, unmodified), end to end: `.edge` projects built and
//! signed by `edgec`, applied to a device whose `edged run` serves the hub,
//! and modules written only against the SDK's public API
//! (`IoTHubModuleClient.create_from_edge_environment()`, `tests/sdk/*.py`).
//!
//! The crash test's sink is `ordered_sink.py`, a plain MQTT subscriber with
//! the module's identity, because the SDK neither keeps the hub's order
//! (handlers run on a thread pool) nor keeps the first messages of an input
//! `receive_message_on_input` has not asked for yet.
//!
//! Each scenario runs twice: with the modules as plain processes
//! (`--runtime none`, each given `edged module env`), and as Docker
//! containers of the test image `tests/sdk/image.sh` builds once
//! (mmdebstrap's Debian bookworm with python3 and the SDK, `docker import`).
//!
//! The SDK connects to the fixed ports 8883 (MQTT) and 443 (method
//! invocations), so the plain-process tests run edged and their modules in
//! a network namespace of their own (`ip netns`), where nothing else
//! listens. Containers reach the hub through the host's address on the
//! Docker bridge, so the Docker test serves the hub in the host's
//! namespace, one test process at a time (a lock file).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{COMPATIBLE, TestDevice, build_plant, device_trusting_edgec_key, succeeded};
use serde_json::Value;

/// The module programs and the image recipe.
fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

/// The host python of a venv with the SDK, made once per target directory.
fn sdk_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("edged-sdk-venv");
        let output = Command::new("bash")
            .arg(sdk_dir().join("image.sh"))
            .arg("venv")
            .arg(&venv)
            .output()
            .unwrap();
        PathBuf::from(String::from_utf8_lossy(&succeeded(&output).stdout).trim())
    })
}

/// The test module image's tag, built unless Docker has it.
fn sdk_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(sdk_dir().join("image.sh"))
            .arg("image")
            .output()
            .unwrap();
        let tag = String::from_utf8_lossy(&succeeded(&output).stdout)
            .trim()
            .to_owned();
        eprintln!("test module image {tag} ready in {:?}", started.elapsed());
        tag
    })
}

/// A module of a generated project.
struct Module<'a> {
    name: &'a str,
    /// The program and its arguments, run in `/opt/sdk` of the container.
    args: &'a [&'a str],
    inputs: &'a [&'a str],
    outputs: &'a [&'a str],
    /// `twin { … }` body.
    twin: &'a str,
    /// `always`, or `never` for a module that runs once.
    restart: &'a str,
}

const ROUTES: &[(&str, &str)] = &[
    (
        "toFilter",
        r#"FROM /messages/modules/sensor/outputs/temperature WHERE $body.temperature > 25 INTO BrokeredEndpoint("/modules/filter/inputs/input1")"#,
    ),
    (
        "toSink",
        r#"FROM /messages/modules/filter/outputs/output1 INTO BrokeredEndpoint("/modules/sink/inputs/filtered")"#,
    ),
];

/// The modules of the scenarios: `sensor → filter ($body condition) → sink`,
/// a twin module, a method responder and caller, and a spy.
fn scenario_modules(docker: bool) -> Vec<Module<'static>> {
    // In containers, the once-only modules run at deployment; as plain
    // processes the test starts each when it needs it.
    let once = if docker { "never" } else { "always" };
    vec![
        Module {
            name: "sensor",
            args: &["sensor.py", "20", "--prefix", "auto"],
            inputs: &[],
            outputs: &["temperature"],
            twin: "",
            restart: once,
        },
        Module {
            name: "filter",
            args: &["filter.py"],
            inputs: &["input1"],
            outputs: &["output1"],
            twin: "",
            restart: "always",
        },
        Module {
            name: "sink",
            args: &["sink.py"],
            inputs: &["filtered"],
            outputs: &[],
            twin: "",
            restart: "always",
        },
        Module {
            name: "twin",
            args: &["twin.py", r#"{"state": "ready"}"#],
            inputs: &[],
            outputs: &[],
            twin: "threshold: int = 25\n    mode: string = \"auto\"",
            restart: "always",
        },
        Module {
            name: "responder",
            args: &["method.py", "serve"],
            inputs: &[],
            outputs: &[],
            twin: "",
            restart: "always",
        },
        Module {
            name: "caller",
            args: &["method.py", "invoke", "responder", "ping", r#"{"n": 7}"#],
            inputs: &[],
            outputs: &[],
            twin: "",
            restart: once,
        },
        Module {
            name: "spy",
            args: &["spy.py", "sink"],
            inputs: &[],
            outputs: &[],
            twin: "",
            restart: once,
        },
    ]
}

/// A JSON string literal for `.edge` source.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Writes and builds (`edgec build --key`) deployment `version` of
/// `modules` with `routes`; returns the bundle.
fn build(
    dir: &Path,
    key: &Path,
    version: u64,
    image: &str,
    modules: &[Module<'_>],
    routes: &[(&str, &str)],
) -> PathBuf {
    let project = dir.join(format!("v{version}"));
    fs::create_dir_all(&project).unwrap();
    let mut source = format!(
        "hardware gateway {{\n  arch = amd64\n  cpus = 2\n  memory = 1GiB\n  storage = 8GiB\n  security = none\n  compatible = \"{COMPATIBLE}\"\n}}\n"
    );
    let sdk = sdk_dir();
    for module in modules {
        let mut cmd = vec![quoted("python3"), quoted("-u")];
        cmd.extend(module.args.iter().map(|arg| quoted(arg)));
        let mut text = format!(
            "module {} {{\n  image = {}\n  version = \"1.0\"\n  restart = {}\n",
            module.name,
            quoted(image),
            module.restart
        );
        for input in module.inputs {
            text.push_str(&format!("  input {input}\n"));
        }
        for output in module.outputs {
            text.push_str(&format!("  output {output}\n"));
        }
        if !module.twin.is_empty() {
            text.push_str(&format!("  twin {{\n    {}\n  }}\n", module.twin));
        }
        text.push_str(&format!(
            "  create_options {{\n    Cmd = [{}]\n    WorkingDir = \"/opt/sdk\"\n    HostConfig {{\n      Binds = [{}]\n    }}\n  }}\n}}\n",
            cmd.join(", "),
            quoted(&format!("{}:/opt/sdk:ro", sdk.display()))
        ));
        source.push_str(&text);
    }
    let names: Vec<&str> = modules.iter().map(|module| module.name).collect();
    source.push_str(&format!(
        "deployment plant {{\n  target = gateway\n  version = {version}\n  modules = [{}]\n",
        names.join(", ")
    ));
    for (name, route) in routes {
        source.push_str(&format!("  route {name} = r#\"{route}\"#\n"));
    }
    source.push_str("}\n");
    build_plant(&project, &source, key)
}

/// A device trusting a fresh `edgec keygen` key, with the hub on.
fn device(dir: &Path, hub: &str, extra: &str) -> (TestDevice, PathBuf) {
    device_trusting_edgec_key(
        dir,
        &format!(
            "{extra}\n[health]\nwindow = \"2s\"\n[restart]\nbackoff_base = \"10s\"\n[hub]\ndevice_id = \"gw-test\"\nmetrics_listen = \"off\"\nstore_limit = \"64MiB\"\n{hub}\n"
        ),
    )
}

/// Polls `condition` every 200 ms for up to `seconds`.
fn eventually(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    condition()
}

/// The JSON events a module printed (its stdout lines that parse).
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|event| event["event"] == kind)
        .collect()
}

/// The ids a sensor run had acknowledged whose temperature passes the
/// route's `$body.temperature > 25`.
fn expected_through_filter(sensor: &[Value]) -> BTreeSet<String> {
    of_kind(sensor, "acked")
        .into_iter()
        .filter(|event| event["seq"].as_u64().is_some_and(|seq| seq % 10 >= 6))
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

fn received_ids(sink: &[Value]) -> BTreeSet<String> {
    of_kind(sink, "received")
        .into_iter()
        .map(|event| event["id"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// `edged status --json`.
fn status(device: &TestDevice, runtime: &str) -> Value {
    let output = device.edged(runtime, &["status", "--json"]);
    serde_json::from_slice(&succeeded(&output).stdout).unwrap()
}

/// Checks what the sink got from one sensor run: exactly the messages the
/// condition lets through (duplicates allowed), with the sensor's
/// properties and the filter's mark.
fn check_filtered(sensor: &[Value], sink: &[Value]) {
    let expected = expected_through_filter(sensor);
    assert_eq!(expected.len(), 8, "the sensor acknowledged: {sensor:?}");
    let received = received_ids(sink);
    assert!(
        expected.is_subset(&received),
        "missing at the sink: {:?}",
        expected.difference(&received).collect::<Vec<_>>()
    );
    let prefix = expected.iter().next().unwrap().split('-').next().unwrap();
    let from_this_run: BTreeSet<_> = received
        .iter()
        .filter(|id| id.starts_with(&format!("{prefix}-")))
        .cloned()
        .collect();
    assert_eq!(
        from_this_run, expected,
        "the $body condition let other messages through"
    );
    for event in of_kind(sink, "received") {
        assert_eq!(event["input"], "filtered");
        assert_eq!(event["content_type"], "application/json");
        assert_eq!(event["content_encoding"], "utf-8");
        assert_eq!(event["properties"]["sensor"], "sensor");
        assert_eq!(event["properties"]["filtered"], "yes");
        let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        assert!(body["temperature"].as_u64().unwrap() > 25, "{body}");
    }
}

/// What the spy module reported: it could neither sign with the sink's key,
/// nor connect as the sink, nor read the sink's inputs.
fn check_spy(spy: &[Value]) {
    let sign = of_kind(spy, "sign-other");
    assert_eq!(sign.len(), 1, "{spy:?}");
    assert_eq!(sign[0]["status"], 403, "signing with another module's key");
    let connect = of_kind(spy, "connect-as-other");
    assert_eq!(connect.len(), 1, "{spy:?}");
    assert_eq!(connect[0]["code"], 5, "CONNACK as another module");
    let subscribe = of_kind(spy, "subscribe-other");
    assert_eq!(subscribe.len(), 1, "{spy:?}");
    assert_ne!(
        subscribe[0]["granted"],
        serde_json::json!([1]),
        "subscribing to another module's inputs"
    );
    assert_eq!(subscribe[0]["messages"], 0);
}

fn check_method(caller: &[Value]) {
    let invoked = of_kind(caller, "invoked");
    assert_eq!(invoked.len(), 1, "{caller:?}");
    assert_eq!(invoked[0]["status"], 200);
    assert_eq!(invoked[0]["payload"]["module"], "responder");
    assert_eq!(invoked[0]["payload"]["echo"], serde_json::json!({"n": 7}));
}

// ---------------------------------------------------------------------
// Plain processes in a network namespace.

/// A network namespace of this test's own, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with its loopback up, or `None` (with the reason
    /// printed) where namespaces cannot be made (not root, no `ip`).
    fn new(tag: &str) -> Option<Self> {
        let name = format!("edged-{tag}-{}", std::process::id());
        let made = Command::new("ip").args(["netns", "add", &name]).output();
        match made {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                eprintln!(
                    "SKIPPED: cannot make a network namespace ({}); run as root with iproute2",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                return None;
            }
            Err(error) => {
                eprintln!("SKIPPED: cannot run ip ({error}); install iproute2");
                return None;
            }
        }
        let netns = Self { name };
        succeeded(
            &netns
                .command("ip")
                .args(["link", "set", "lo", "up"])
                .output()
                .unwrap(),
        );
        Some(netns)
    }

    /// `program` run inside the namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// `command` (already built) moved into the namespace.
    fn wrap(&self, command: &Command) -> Command {
        let mut wrapped = self.command(command.get_program());
        wrapped.args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        wrapped
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// A running child whose stdout lines are collected, killed on drop.
struct Process {
    child: Child,
    lines: Arc<Mutex<String>>,
    name: String,
}

impl Process {
    fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut all = lines.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        Self {
            child,
            lines,
            name: name.to_owned(),
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Value> {
        events(&self.text())
    }

    /// Waits for the process to exit; panics with its output after
    /// `seconds`.
    fn wait(&mut self, seconds: u64) {
        let exited = eventually(seconds, || self.child.try_wait().unwrap().is_some());
        assert!(exited, "{} did not finish:\n{}", self.name, self.text());
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "{} failed ({status}):\n{}",
            self.name,
            self.text()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A module of the running deployment as a plain process in `netns`, with
/// the environment `edged module env` prints.
fn run_module(device: &TestDevice, netns: &Netns, module: &Module<'_>) -> Process {
    let output = device.edged("none", &["module", "env", module.name]);
    let variables = String::from_utf8_lossy(&succeeded(&output).stdout).into_owned();
    let mut command = netns.command(sdk_python());
    command.arg("-u").args(module.args).current_dir(sdk_dir());
    for line in variables.lines() {
        let (key, value) = line.split_once('=').unwrap();
        command.env(key, value);
    }
    Process::spawn(module.name, command)
}

/// `edged run --runtime none` in `netns`.
fn run_edged(device: &TestDevice, netns: &Netns) -> Process {
    let process = Process::spawn(
        "edged",
        netns.wrap(&device.command("none", &["run", "--interval", "200ms"])),
    );
    // The control socket answers before the daemon's first pass has
    // installed the applied deployment in the hub; the modules' identities
    // (which `edged module env` reads) exist only from then on.
    let up = eventually(30, || {
        let hub = &status(device, "none")["hub"];
        hub["running"] == Value::Bool(true)
            && hub["modules"]
                .as_object()
                .is_some_and(|modules| !modules.is_empty())
    });
    assert!(
        up,
        "the hub did not start serving the deployment:\n{}",
        process.text()
    );
    process
}

fn module<'a>(modules: &'a [Module<'a>], name: &str) -> &'a Module<'a> {
    modules.iter().find(|module| module.name == name).unwrap()
}

#[test]
fn sdk_modules_as_plain_processes_route_twin_method_queue_and_are_isolated() {
    let Some(netns) = Netns::new("plain") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (device, key) = device(dir.path(), "gateway_hostname = \"localhost\"", "");
    let modules = scenario_modules(false);
    let v1 = build(
        dir.path(),
        &key,
        1,
        "edgec-test-python-sdk:plain",
        &modules,
        ROUTES,
    );
    succeeded(&device.edged("none", &["apply", v1.to_str().unwrap()]));
    let mut edged = run_edged(&device, &netns);

    // sensor → filter (only temperature > 25) → sink.
    let filter = run_module(&device, &netns, module(&modules, "filter"));
    let mut sink = run_module(&device, &netns, module(&modules, "sink"));
    let mut sensor = run_module(&device, &netns, module(&modules, "sensor"));
    sensor.wait(120);
    let first = sensor.events();
    let expected = expected_through_filter(&first);
    assert!(
        eventually(60, || expected.is_subset(&received_ids(&sink.events()))),
        "sink got {:?}, expected {expected:?}\nfilter:\n{}\nsink:\n{}\nedged:\n{}\nstatus: {}",
        received_ids(&sink.events()),
        filter.text(),
        sink.text(),
        edged.text(),
        status(&device, "none")["hub"]
    );
    check_filtered(&first, &sink.events());

    // The sink stops; what is routed to it meanwhile waits in its queue
    // (shown by `edged status`) and arrives when it comes back.
    sink.kill();
    assert!(eventually(30, || status(&device, "none")["hub"]["modules"]
        ["sink"]["connected"]
        == Value::Bool(false)));
    let mut sensor = run_module(&device, &netns, module(&modules, "sensor"));
    sensor.wait(120);
    let second = sensor.events();
    assert!(
        eventually(30, || {
            status(&device, "none")["hub"]["modules"]["sink"]["queues"]["sink/filtered"]
                .as_u64()
                .is_some_and(|depth| depth >= 8)
        }),
        "the sink's queue: {}",
        status(&device, "none")["hub"]
    );
    let sink = run_module(&device, &netns, module(&modules, "sink"));
    let expected = expected_through_filter(&second);
    assert!(
        eventually(60, || expected.is_subset(&received_ids(&sink.events()))),
        "the restarted sink got {:?}, expected {expected:?}",
        received_ids(&sink.events())
    );
    check_filtered(&second, &sink.events());

    // The twin: desired properties from the deployment, a reported patch in
    // `edged status` and `edged twin show`, a desired patch from v2.
    let twin = run_module(&device, &netns, module(&modules, "twin"));
    assert!(
        eventually(60, || !of_kind(&twin.events(), "reported").is_empty()),
        "{}",
        twin.text()
    );
    let shown = of_kind(&twin.events(), "twin")[0].clone();
    assert_eq!(shown["desired"]["threshold"], 25);
    assert_eq!(shown["desired"]["mode"], "auto");
    let report = status(&device, "none");
    assert_eq!(
        report["hub"]["modules"]["twin"]["reported"]["state"],
        "ready"
    );
    let human = device.edged("none", &["status"]);
    let human = String::from_utf8_lossy(&succeeded(&human).stdout).into_owned();
    assert!(human.contains("hub: running"), "{human}");
    assert!(human.contains(r#""state":"ready""#), "{human}");
    let shown = device.edged("none", &["twin", "show", "twin"]);
    let shown: Value = serde_json::from_slice(&succeeded(&shown).stdout).unwrap();
    assert_eq!(shown["desired"]["threshold"], 25);
    assert_eq!(shown["reported"]["state"], "ready");

    let mut v2_modules = scenario_modules(false);
    v2_modules
        .iter_mut()
        .find(|module| module.name == "twin")
        .unwrap()
        .twin = "threshold: int = 30\n    mode: string = \"auto\"";
    let v2 = build(
        dir.path(),
        &key,
        2,
        "edgec-test-python-sdk:plain",
        &v2_modules,
        ROUTES,
    );
    // Applied from a shell while the daemon runs: the daemon's hub is
    // deployed through its control socket.
    succeeded(&device.edged("none", &["apply", v2.to_str().unwrap()]));
    assert!(
        eventually(60, || of_kind(&twin.events(), "desired-patch")
            .iter()
            .any(|event| event["patch"]["threshold"] == 30)),
        "{}",
        twin.text()
    );

    // Direct methods: from `edged method invoke`, and module to module.
    let _responder = run_module(&device, &netns, module(&modules, "responder"));
    assert!(eventually(60, || status(&device, "none")["hub"]["modules"]
        ["responder"]["connected"]
        == Value::Bool(true)));
    let invoked = device.edged(
        "none",
        &[
            "method",
            "invoke",
            "responder",
            "ping",
            "--payload",
            r#"{"n": 1}"#,
        ],
    );
    let text = String::from_utf8_lossy(&succeeded(&invoked).stdout).into_owned();
    assert!(text.starts_with("status 200\n"), "{text}");
    assert!(text.contains(r#""module": "responder""#), "{text}");
    let mut caller = run_module(&device, &netns, module(&modules, "caller"));
    caller.wait(120);
    check_method(&caller.events());
    let absent = device.edged(
        "none",
        &["method", "invoke", "sink", "ping", "--timeout", "2s"],
    );
    assert_eq!(absent.status.code(), Some(10), "{absent:?}");
    assert!(String::from_utf8_lossy(&absent.stderr).contains("not connected"));

    // Isolation.
    let mut spy = run_module(&device, &netns, module(&modules, "spy"));
    spy.wait(120);
    check_spy(&spy.events());

    edged.kill();
    let gone = device.edged("none", &["twin", "show", "twin"]);
    assert_eq!(gone.status.code(), Some(11), "{gone:?}");
    let report = status(&device, "none");
    assert_eq!(report["hub"]["running"], false);
}

#[test]
fn sigkill_of_edged_while_sensors_publish_loses_no_acknowledged_message() {
    let Some(netns) = Netns::new("crash") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (device, key) = device(dir.path(), "gateway_hostname = \"localhost\"", "");
    let modules = [
        Module {
            name: "sensor",
            args: &["sensor.py", "3000", "--prefix", "c"],
            inputs: &[],
            outputs: &["temperature"],
            twin: "",
            restart: "always",
        },
        Module {
            name: "sink",
            args: &["ordered_sink.py", "all"],
            inputs: &["all"],
            outputs: &[],
            twin: "",
            restart: "always",
        },
    ];
    let routes = [(
        "all",
        r#"FROM /messages/modules/sensor/outputs/temperature INTO BrokeredEndpoint("/modules/sink/inputs/all")"#,
    )];
    let bundle = build(
        dir.path(),
        &key,
        1,
        "edgec-test-python-sdk:plain",
        &modules,
        &routes,
    );
    succeeded(&device.edged("none", &["apply", bundle.to_str().unwrap()]));
    let mut edged = run_edged(&device, &netns);
    let sink = run_module(&device, &netns, &modules[1]);
    let mut sensor = run_module(&device, &netns, &modules[0]);
    for round in 0..2 {
        let before = of_kind(&sensor.events(), "acked").len();
        assert!(
            eventually(120, || of_kind(&sensor.events(), "acked").len()
                > before + 300),
            "round {round}: the sensor is stuck:\n{}\nedged:\n{}",
            sensor.text(),
            edged.text()
        );
        // SIGKILL: nothing is flushed or closed by edged itself.
        edged.kill();
        edged = run_edged(&device, &netns);
    }
    sensor.wait(600);
    let acked: Vec<u64> = of_kind(&sensor.events(), "acked")
        .iter()
        .map(|event| event["seq"].as_u64().unwrap())
        .collect();
    let wanted: BTreeSet<u64> = acked.iter().copied().collect();
    let seqs = |sink: &Process| -> Vec<u64> {
        of_kind(&sink.events(), "received")
            .iter()
            .filter_map(|event| event["id"].as_str()?.strip_prefix("c-")?.parse().ok())
            .collect()
    };
    assert!(
        eventually(120, || {
            let got: BTreeSet<u64> = seqs(&sink).into_iter().collect();
            wanted.is_subset(&got)
        }),
        "acknowledged but never delivered: {:?}\nsink (last lines):\n{}",
        wanted
            .difference(&seqs(&sink).into_iter().collect())
            .take(20)
            .collect::<Vec<_>>(),
        sink.text()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // In order: each message's first delivery comes after the first
    // delivery of every message sent before it (redeliveries after a crash
    // may repeat earlier ones).
    let mut seen = BTreeSet::new();
    let mut firsts = Vec::new();
    for seq in seqs(&sink) {
        if seen.insert(seq) {
            firsts.push(seq);
        }
    }
    if let Some(index) = firsts.windows(2).position(|pair| pair[0] >= pair[1]) {
        let all = seqs(&sink);
        let at = all
            .iter()
            .position(|seq| *seq == firsts[index])
            .unwrap_or(0);
        panic!(
            "out of order: {} first delivered before {}; deliveries around it: {:?}; the sensor's retries: {:?}\nedged:\n{}",
            firsts[index],
            firsts[index + 1],
            &all[at.saturating_sub(10)..(at + 10).min(all.len())],
            of_kind(&sensor.events(), "send-retry"),
            edged.text()
        );
    }
}

// ---------------------------------------------------------------------
// Docker containers.

/// Serializes the tests that serve the hub in the host's network
/// namespace, across test processes.
struct HostPortsLock {
    _file: fs::File,
}

impl HostPortsLock {
    fn acquire() -> Self {
        let path = std::env::temp_dir().join("edged-hub-host-ports.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        file.lock().unwrap();
        Self { _file: file }
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn sdk_modules_in_docker_route_twin_method_queue_and_are_isolated() {
    if !edged::docker::engine_available() {
        eprintln!(
            "SKIPPED: no Docker engine with API 1.41+ answers; start dockerd to run the hub's Docker tests (CI does)"
        );
        return;
    }
    let _lock = HostPortsLock::acquire();
    let instance = format!("hubsdk{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let (device, key) = device(dir.path(), "", &format!("instance = \"{instance}\""));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let modules = scenario_modules(true);
        let v1 = build(dir.path(), &key, 1, sdk_image(), &modules, ROUTES);
        let edged = Process::spawn(
            "edged",
            device.command("docker", &["run", "--interval", "200ms"]),
        );
        assert!(
            eventually(60, || status(&device, "docker")["hub"]["running"]
                == Value::Bool(true)),
            "{}",
            edged.text()
        );
        fs::create_dir_all(device.state.join("inbox")).unwrap();
        fs::copy(&v1, device.state.join("inbox/1.edgebundle")).unwrap();
        let container = |module: &str| format!("{instance}.{module}");
        let logs = |module: &str| events(&docker(&["logs", &container(module)]));
        let finished = |module: &str| {
            eventually(120, || {
                docker(&["inspect", "-f", "{{.State.Status}}", &container(module)]).trim()
                    == "exited"
            })
        };
        assert!(
            finished("sensor"),
            "{}",
            docker(&["logs", &container("sensor")])
        );
        let first = logs("sensor");
        let expected = expected_through_filter(&first);
        assert!(
            eventually(60, || expected.is_subset(&received_ids(&logs("sink")))),
            "sink: {}\nedged: {}",
            docker(&["logs", &container("sink")]),
            edged.text()
        );
        check_filtered(&first, &logs("sink"));

        // Twin and method and isolation, from the modules that ran once.
        assert!(
            finished("caller"),
            "{}",
            docker(&["logs", &container("caller")])
        );
        check_method(&logs("caller"));
        assert!(finished("spy"), "{}", docker(&["logs", &container("spy")]));
        check_spy(&logs("spy"));
        assert!(eventually(
            60,
            || status(&device, "docker")["hub"]["modules"]["twin"]["reported"]["state"] == "ready"
        ));
        assert_eq!(
            of_kind(&logs("twin"), "twin")[0]["desired"]["threshold"],
            25
        );

        // The sink is killed; messages sent while it is down wait for it,
        // and edged's restart (after the 10 s back-off) delivers them.
        docker(&["kill", &container("sink")]);
        docker(&["start", &container("sensor")]);
        assert!(eventually(60, || of_kind(&logs("sensor"), "done").len() == 2));
        let running = docker(&["inspect", "-f", "{{.State.Running}}", &container("sink")]);
        assert_eq!(
            running.trim(),
            "false",
            "edged restarted the sink before the test could queue"
        );
        let second: Vec<Value> = {
            let all = logs("sensor");
            let split = all
                .iter()
                .position(|event| event["event"] == "done")
                .unwrap();
            all[split + 1..].to_vec()
        };
        let expected = expected_through_filter(&second);
        assert!(
            eventually(90, || expected.is_subset(&received_ids(&logs("sink")))),
            "after its restart the sink got {:?}, expected {expected:?}",
            received_ids(&logs("sink"))
        );
        let report = status(&device, "docker");
        assert!(report["modules"]["sink"]["restartCount"].as_u64().unwrap() >= 1);
    }));
    let _ = edged::docker::remove_instance(&instance);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Leaf devices on the SDK's `IoTHubDeviceClient` connect through the hub
/// as through a transparent gateway — one with a SAS connection string
/// (`GatewayHostName`), one with a self-signed certificate
/// (`gateway_hostname`), both verifying the hub with its CA
/// (`server_verification_cert`) — read their twins, report a property and
/// send telemetry that a module receives along a `FROM /messages` route.
#[test]
fn sdk_leaf_devices_connect_through_the_hub_with_sas_and_x509() {
    let Some(netns) = Netns::new("leaf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("thermo.key");
    // A symmetric key as IoT Hub issues one: 32 bytes in base64.
    let sas_key = "dGhlcm1vLTEgc3ltbWV0cmljIGtleSwgMzIgYnl0ZXM=";
    fs::write(&key_file, sas_key).unwrap();
    fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let camera_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "camera-1");
    let camera = params.self_signed(&camera_key).unwrap();
    let (cert_file, camera_key_file) =
        (dir.path().join("camera.pem"), dir.path().join("camera.key"));
    fs::write(&cert_file, camera.pem()).unwrap();
    fs::write(&camera_key_file, camera_key.serialize_pem()).unwrap();
    let thumbprint = edge_hub::leaf::sha256_thumbprint(camera.der());
    let leaves = format!(
        "[[hub.leaf_devices]]\nid = \"thermo-1\"\nsas_key_file = {}\n[[hub.leaf_devices]]\nid = \"camera-1\"\nx509_thumbprints = [\"{thumbprint}\"]\n",
        quoted(&key_file.display().to_string())
    );
    // The stand-in cloud, in the namespace with the hub: the leaf's
    // cloud-to-device message and desired patch come through it.
    let username = format!(
        "gw-test.local/gw-test/?api-version={}&DeviceClientType=edged%2F{}",
        edge_hub::upstream::API_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let token =
        "SharedAccessSignature sr=gw-test.local%2Fdevices%2Fgw-test&sig=dGVzdA%3D%3D&se=4102444800";
    let cloud = test_mosquitto::Mosquitto::start_in_netns(
        &dir.path().join("cloud"),
        std::sync::Arc::new(test_mosquitto::Authority::new("cloud CA")),
        test_mosquitto::DeviceAuth::Passwords(vec![(username, token.to_owned())]),
        &netns.name,
    );
    let token_file = dir.path().join("gateway.sas");
    fs::write(&token_file, token).unwrap();
    fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let upstream = format!(
        "[hub.upstream]\nhost = \"localhost\"\nport = {}\nca_file = {}\nsas_token_file = {}\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n",
        cloud.device_port(),
        quoted(&cloud.ca_file().display().to_string()),
        quoted(&token_file.display().to_string())
    );
    let (device, key) = device(
        dir.path(),
        &format!(
            "gateway_hostname = \"localhost\"\niothub_hostname = \"gw-test.local\"\n{leaves}{upstream}"
        ),
        "",
    );
    let sink = Module {
        name: "sink",
        args: &["sink.py"],
        inputs: &["filtered"],
        outputs: &[],
        twin: "",
        restart: "always",
    };
    let routes = [(
        "leaves",
        r#"FROM /messages WHERE $connectionDeviceId = 'thermo-1' OR $connectionDeviceId = 'camera-1' INTO BrokeredEndpoint("/modules/sink/inputs/filtered")"#,
    )];
    let v1 = build(
        dir.path(),
        &key,
        1,
        "edgec-test-python-sdk:plain",
        std::slice::from_ref(&sink),
        &routes,
    );
    succeeded(&device.edged("none", &["apply", v1.to_str().unwrap()]));
    let edged = run_edged(&device, &netns);
    let sink = run_module(&device, &netns, &sink);
    let ca = device.state.join("hub/ca/ca.pem");
    let ca = ca.to_str().unwrap();
    let run_leaf = |name: &str, args: &[&str]| {
        let mut command = netns.command(sdk_python());
        command
            .arg("-u")
            .arg("leaf.py")
            .args(args)
            .current_dir(sdk_dir());
        Process::spawn(name, command)
    };
    let connection_string = format!(
        "HostName=gw-test.local;DeviceId=thermo-1;SharedAccessKey={sas_key};GatewayHostName=localhost"
    );
    let mut thermo = run_leaf("thermo-1", &["sas", &connection_string, ca, "--cloud"]);
    let mut camera = run_leaf(
        "camera-1",
        &[
            "x509",
            "gw-test.local",
            "camera-1",
            cert_file.to_str().unwrap(),
            camera_key_file.to_str().unwrap(),
            "localhost",
            ca,
        ],
    );
    // Once the leaf listens and the gateway is connected, the cloud sends
    // it a message and a desired patch.
    assert!(
        eventually(120, || !of_kind(&thermo.events(), "listening").is_empty()),
        "thermo-1:\n{}\nedged:\n{}",
        thermo.text(),
        edged.text()
    );
    assert!(
        eventually(60, || {
            String::from_utf8_lossy(&device.edged("none", &["status"]).stdout).contains(&format!(
                "upstream localhost:{}: connected",
                cloud.device_port()
            ))
        }),
        "edged:\n{}",
        edged.text()
    );
    let published = netns
        .command(sdk_python())
        .arg("cloud.py")
        .arg(cloud.service_port().to_string())
        .arg(cloud.ca_file())
        .arg("thermo-1")
        .current_dir(sdk_dir())
        .output()
        .unwrap();
    succeeded(&published);
    thermo.wait(120);
    camera.wait(120);
    let arrived = thermo.events();
    let c2d = of_kind(&arrived, "c2d");
    assert_eq!(c2d.len(), 1, "{}", thermo.text());
    assert_eq!(c2d[0]["data"], "close it", "{}", thermo.text());
    assert_eq!(c2d[0]["properties"]["valve"], "shut", "{}", thermo.text());
    let desired = of_kind(&arrived, "desired");
    assert_eq!(desired.len(), 1, "{}", thermo.text());
    assert_eq!(desired[0]["patch"]["interval"], 30, "{}", thermo.text());
    for leaf in [&thermo, &camera] {
        let events = leaf.events();
        assert_eq!(
            of_kind(&events, "sent").len(),
            3,
            "{}\nedged:\n{}",
            leaf.text(),
            edged.text()
        );
        let twin = &of_kind(&events, "twin")[0]["twin"];
        assert_eq!(twin["desired"]["$version"], 1, "{twin}");
        assert_eq!(of_kind(&events, "reported").len(), 1);
    }
    // Three messages from each leaf reach the sink, with their properties.
    assert!(
        eventually(60, || of_kind(&sink.events(), "received").len() >= 6),
        "sink:\n{}\nedged:\n{}",
        sink.text(),
        edged.text()
    );
    let received = sink.events();
    let bodies: BTreeSet<String> = of_kind(&received, "received")
        .iter()
        .map(|event| format!("{} {}", event["input"], event["properties"]["seq"]))
        .collect();
    assert_eq!(
        bodies,
        BTreeSet::from([
            "\"filtered\" \"0\"".to_owned(),
            "\"filtered\" \"1\"".to_owned(),
            "\"filtered\" \"2\"".to_owned()
        ])
    );
}
