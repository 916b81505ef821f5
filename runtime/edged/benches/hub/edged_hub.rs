//! The edge hub as a device runs it: a release `edged run --runtime none`
//! process serving a deployment whose route carries a `$body` condition.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use edge_bundle::{Architecture, BundleBuilder, BundleHeader, FileSigner, generate_keypair};
use edge_hub::{FileKeys, KeyStore};

use crate::load::{ClientSpec, Target};

/// The device id, and the IoT Hub host name edged derives from it (or the
/// upstream host's, with one).
pub const DEVICE: &str = "bench";
/// The benchmark's hub ports (loopback only).
pub const MQTT_PORT: u16 = 22884;
const HTTPS_PORT: u16 = 22443;
pub const METRICS_PORT: u16 = 22960;

/// A running edged with its state directory.
pub struct EdgedHub {
    child: Child,
    state: PathBuf,
    iothub: String,
}

/// What the device runs: its modules, routes and `device.toml` additions.
pub struct Setup<'a> {
    /// Sensor modules (`sensor0` …).
    pub senders: usize,
    /// Idle modules for the many-connections run.
    pub idle: usize,
    /// `[hub] store_limit`.
    pub store_limit: &'a str,
    /// The route table.
    pub routes: serde_json::Value,
    /// A `[hub.upstream]` table, or nothing.
    pub upstream: String,
}

/// The routes of the local benchmark: sensors to the sink, the loader to a
/// module that never connects.
pub fn local_routes() -> serde_json::Value {
    serde_json::json!([
        {"name": "telemetry", "route": ROUTE, "priority": 0, "timeToLiveSecs": 0},
        {"name": "backlog", "route": OFFLINE_ROUTE, "priority": 1, "timeToLiveSecs": 0},
    ])
}

/// The route every benchmark message takes: a condition on the body, as
/// the issue prescribes, to the sink module's input. The queue-growth
/// run's loader is left out, so that its backlog has one queue only and the
/// store can be seen to empty once that queue is delivered.
const ROUTE: &str = r#"FROM /messages/modules/* WHERE $body.temperature > 20 AND $connectionModuleId <> 'loader' INTO BrokeredEndpoint("/modules/sink/inputs/telemetry")"#;
/// The queue-growth run's messages go to a module that never connects.
const OFFLINE_ROUTE: &str = r#"FROM /messages/modules/loader/outputs/* INTO BrokeredEndpoint("/modules/offline/inputs/backlog")"#;

fn module_names(senders: usize, idle: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..senders).map(|index| format!("sensor{index}")).collect();
    names.extend(["sink", "loader", "offline"].map(str::to_owned));
    names.extend((0..idle).map(|index| format!("idle{index}")));
    names
}

/// A signed bundle with the modules and both routes.
fn bundle(
    root: &Path,
    signer: &FileSigner,
    modules: &[String],
    routes: &serde_json::Value,
) -> PathBuf {
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: "hubbench".into(),
        compatible: "bench".into(),
        architecture: Architecture::Amd64,
        version: 1,
        source_date_epoch: 0,
    })
    .expect("bundle header");
    let image = format!("edgec.local/bench@sha256:{}", "0".repeat(64));
    let mut desired = serde_json::Map::new();
    for module in modules {
        desired.insert(
            module.clone(),
            serde_json::json!({"type": "docker", "status": "running", "restartPolicy": "always",
                               "settings": {"image": image, "createOptions": "{}"}}),
        );
        builder
            .add_registry_image(module, &image)
            .expect("module image");
    }
    builder.iot_edge_manifest(serde_json::json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {"modules": desired}},
    }}));
    builder.route_table(routes.clone());
    let path = root.join("hubbench.edgebundle");
    let file = File::create(&path).expect("bundle file");
    builder
        .build(&[signer], io::BufWriter::new(file))
        .expect("bundle");
    path
}

fn edged(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edged"));
    command
        .arg("--state-dir")
        .arg(root.join("state"))
        .arg("--device-config")
        .arg(root.join("device.toml"))
        .arg("--trust")
        .arg(root.join("fleet.pub"))
        .arg("--runtime")
        .arg("none");
    command
}

impl EdgedHub {
    /// Applies the benchmark deployment (with `idle` extra modules for the
    /// many-connections run) and starts `edged run`.
    pub fn start(root: &Path, senders: usize, idle: usize, store_limit: &str) -> Self {
        Self::start_with(
            root,
            &Setup {
                senders,
                idle,
                store_limit,
                routes: local_routes(),
                upstream: String::new(),
            },
        )
    }

    /// Applies a deployment as `setup` says and starts `edged run`.
    pub fn start_with(root: &Path, setup: &Setup<'_>) -> Self {
        let Setup {
            senders,
            idle,
            store_limit,
            ..
        } = *setup;
        fs::create_dir_all(root).expect("device directory");
        let pair = generate_keypair().expect("key pair");
        let signer = FileSigner::from_pem(&pair.private_pem).expect("signer");
        fs::write(root.join("fleet.pub"), &pair.public_pem).expect("public key");
        fs::write(
            root.join("device.toml"),
            format!(
                "compatible = \"bench\"\narchitecture = \"amd64\"\n[health]\nwindow = \"0s\"\n\
                 [hub]\ndevice_id = \"{DEVICE}\"\ngateway_hostname = \"localhost\"\n\
                 mqtt_listen = \"127.0.0.1:{MQTT_PORT}\"\nhttps_listen = \"127.0.0.1:{HTTPS_PORT}\"\n\
                 metrics_listen = \"127.0.0.1:{METRICS_PORT}\"\nstore_limit = \"{store_limit}\"\n{}",
                setup.upstream
            ),
        )
        .expect("device.toml");
        let modules = module_names(senders, idle);
        let bundle = bundle(root, &signer, &modules, &setup.routes);
        let applied = edged(root)
            .arg("apply")
            .arg(&bundle)
            .output()
            .expect("edged apply runs");
        assert!(
            applied.status.success(),
            "edged apply: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let child = edged(root)
            .args(["--log-format", "json", "run"])
            .stdout(Stdio::null())
            .stderr(File::create(root.join("edged.log")).expect("log file"))
            .spawn()
            .expect("edged run starts");
        crate::measure::wait_for_port(MQTT_PORT);
        let iothub = if setup.upstream.is_empty() {
            format!("{DEVICE}.local")
        } else {
            test_mosquitto::HOST.to_owned()
        };
        let hub = Self {
            child,
            state: root.join("state"),
            iothub,
        };
        hub.wait_for_deployment(modules.last().expect("modules"));
        hub
    }

    /// Waits until the daemon has deployed the hub: the listener comes up
    /// first, the module keys right after.
    fn wait_for_deployment(&self, last_module: &str) {
        let keys = FileKeys::open(&self.state.join("hub/keys")).expect("module keys");
        for _ in 0..600 {
            if keys.sign(last_module, b"ready").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("edged did not deploy the hub within 30 s; see edged.log");
    }

    /// The CA modules trust (the hub's `/trust-bundle`).
    pub fn ca_pem(&self) -> String {
        let ca = self.state.join("hub/ca/ca.pem");
        fs::read_to_string(&ca).unwrap_or_else(|error| panic!("{}: {error}", ca.display()))
    }

    /// A module's client, with a SAS token signed by its key file.
    pub fn client(&self, module: &str) -> ClientSpec {
        let keys = FileKeys::open(&self.state.join("hub/keys")).expect("module keys");
        let expiry = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 24 * 3600;
        let iothub = &self.iothub;
        let resource = format!("{iothub}/devices/{DEVICE}/modules/{module}");
        let password = edge_hub::sas::token(&keys as &dyn KeyStore, module, &resource, expiry)
            .expect("module key");
        ClientSpec {
            client_id: format!("{DEVICE}/{module}"),
            username: format!("{iothub}/{DEVICE}/{module}/?api-version=2020-09-30"),
            password,
        }
    }

    /// The topic a module publishes JSON telemetry to on `output`.
    pub fn output_topic(module: &str, output: &str) -> String {
        format!(
            "devices/{DEVICE}/modules/{module}/messages/events/%24.on={output}&%24.ct=application%2Fjson&%24.ce=utf-8"
        )
    }

    /// The filter a module subscribes to for its inputs.
    pub fn inputs_filter(module: &str) -> String {
        format!("devices/{DEVICE}/modules/{module}/inputs/#")
    }

    /// The throughput target: `senders` sensors → route → sink.
    pub fn target(&self, senders: usize) -> Target {
        Target {
            name: "edge hub".to_owned(),
            host: "localhost".to_owned(),
            port: MQTT_PORT,
            ca_pem: self.ca_pem(),
            senders: (0..senders)
                .map(|index| {
                    let module = format!("sensor{index}");
                    (
                        self.client(&module),
                        Self::output_topic(&module, "telemetry"),
                    )
                })
                .collect(),
            receiver: (self.client("sink"), Self::inputs_filter("sink")),
            receiver_broker: None,
        }
    }

    /// edged's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// edged's resident set size, in bytes.
    pub fn rss(&self) -> u64 {
        crate::measure::rss(self.child.id())
    }

    /// The store file's size in bytes.
    pub fn store_bytes(&self) -> u64 {
        fs::metadata(self.state.join("hub/store.redb"))
            .map(|metadata| metadata.len())
            .unwrap_or(0)
    }

    /// The depth of `endpoint`'s queue, from the metrics endpoint.
    pub fn queue_length(&self, endpoint: &str) -> u64 {
        let text = crate::measure::http_get(METRICS_PORT, "/metrics");
        text.lines()
            .filter(|line| line.starts_with("edgehub_queue_length{"))
            .filter(|line| line.contains(&format!("endpoint=\"{endpoint}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|value| value as u64)
            .sum()
    }

    /// Waits until idle: no more CPU used by edged for a second.
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_secs(2));
    }
}

impl Drop for EdgedHub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
