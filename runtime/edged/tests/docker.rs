//! End to end on a real Docker engine, from `.edge` sources through the
//! real compiler: `edgec keygen` and `edgec build --key` turn a small
//! project (a busybox root filesystem as `local("rootfs")`, commands in
//! `create_options`) into signed bundles; `edged apply` runs them, rolls
//! back by itself when a module crash-loops or fails its health command,
//! and `edged status` reports the restarts `edged run` made. Skips (and
//! says so) when no engine answers; CI starts one (`.ci/setup`).

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{COMPATIBLE, TestDevice, build_plant, device_trusting_edgec_key, succeeded};

/// A module of a generated project.
struct Module<'a> {
    name: &'a str,
    /// The shell command the container runs.
    script: &'a str,
    /// A Docker health command (`CMD-SHELL`), checked every second.
    health: Option<&'a str>,
}

/// A shell loop that stops at once on SIGTERM, so containers are replaced
/// without Docker's ten-second kill timeout.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Writes a project for deployment `version` into `dir` and builds its
/// signed bundle with `edgec build --key`; returns the bundle.
fn build(dir: &Path, key: &Path, version: u64, suffix: &str, modules: &[Module<'_>]) -> PathBuf {
    let project = dir.join(format!("v{version}"));
    let rootfs = project.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    symlink("busybox", rootfs.join("bin/sh")).unwrap();
    let mut source = format!(
        "hardware gateway {{\n  arch = amd64\n  cpus = 2\n  memory = 1GiB\n  storage = 8GiB\n  security = none\n  compatible = \"{COMPATIBLE}\"\n}}\n"
    );
    for (order, module) in modules.iter().enumerate() {
        let health = module.health.map_or_else(String::new, |test| {
            format!(
                "    Healthcheck {{\n      Test = [\"CMD-SHELL\", \"{test}\"]\n      Interval = 1000000000\n      Retries = 1\n    }}\n"
            )
        });
        source.push_str(&format!(
            "module {} {{\n  image = local(\"rootfs\")\n  version = \"{version}.0-{suffix}\"\n  restart = always\n  startup_order = {order}\n  env {{\n    EDGE_VERSION = \"{version}\"\n  }}\n  create_options {{\n    Cmd = [\"/bin/sh\", \"-c\", \"{}\"]\n{health}  }}\n}}\n",
            module.name, module.script
        ));
    }
    let names: Vec<&str> = modules.iter().map(|module| module.name).collect();
    source.push_str(&format!(
        "deployment plant {{\n  target = gateway\n  version = {version}\n  modules = [{}]\n}}\n",
        names.join(", ")
    ));
    build_plant(&project, &source, key)
}

/// A device for `instance` that trusts a fresh `edgec keygen` key; returns
/// it with the private key.
fn device(dir: &Path, instance: &str) -> (TestDevice, PathBuf) {
    device_trusting_edgec_key(
        dir,
        &format!(
            "instance = \"{instance}\"\n[health]\nwindow = \"2s\"\n[restart]\nbackoff_base = \"200ms\"\n"
        ),
    )
}

/// `running version` of a module's container, from Docker.
fn container(instance: &str, module: &str) -> String {
    docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{index .Config.Labels \"io.edgec.version\"}}",
        &format!("{instance}.{module}"),
    ])
}

fn status(device: &TestDevice) -> serde_json::Value {
    let output = device.edged("docker", &["status", "--json"]);
    serde_json::from_slice(&succeeded(&output).stdout).unwrap()
}

/// Runs `test` unless no engine answers, then removes the instance's
/// containers and the images of `modules` in any case.
fn with_engine(instance: &str, modules: &[&str], test: impl FnOnce() + std::panic::UnwindSafe) {
    if !edged::docker::engine_available() {
        eprintln!(
            "SKIPPED: no Docker engine with API 1.41+ answers; start dockerd to run the edged Docker tests (CI does)"
        );
        return;
    }
    let result = std::panic::catch_unwind(test);
    let _ = edged::docker::remove_instance(instance);
    let suffix = std::process::id();
    for module in modules {
        for version in [1, 2] {
            docker(&[
                "rmi",
                "-f",
                &format!("edgec.local/{module}:{version}.0-{suffix}"),
            ]);
        }
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn recipe_to_running_modules_and_automatic_rollback_of_a_crash_loop() {
    let instance = format!("edgedtest{}", std::process::id());
    let suffix = std::process::id().to_string();
    with_engine(&instance.clone(), &["sensor", "filter"], move || {
        let dir = tempfile::tempdir().unwrap();
        let (device, key) = device(dir.path(), &instance);
        let good = build(
            dir.path(),
            &key,
            1,
            &suffix,
            &[
                Module {
                    name: "sensor",
                    script: SERVE,
                    health: Some("test -d /bin"),
                },
                Module {
                    name: "filter",
                    script: SERVE,
                    health: None,
                },
            ],
        );
        let bad = build(
            dir.path(),
            &key,
            2,
            &suffix,
            &[
                Module {
                    name: "sensor",
                    script: SERVE,
                    health: Some("test -d /bin"),
                },
                Module {
                    name: "filter",
                    script: "echo broken; exit 1",
                    health: None,
                },
            ],
        );

        succeeded(&device.edged("docker", &["apply", good.to_str().unwrap()]));
        let version = format!("1.0-{suffix}");
        for module in ["sensor", "filter"] {
            let inspect = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{index .Config.Labels \"io.edgec.module\"}} {{index .Config.Labels \"io.edgec.deployment\"}} {{index .Config.Labels \"io.edgec.instance\"}} {{.Config.Image}}",
                &format!("{instance}.{module}"),
            ]);
            assert_eq!(
                inspect,
                format!("true {module} plant {instance} edgec.local/{module}:{version}")
            );
            assert_eq!(container(&instance, module), format!("true {version}"));
        }
        // The commit waited for the health command: `starting` delays it.
        assert_eq!(
            docker(&[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &format!("{instance}.sensor"),
            ]),
            "healthy"
        );
        let bystander = format!("{instance}-bystander");
        docker(&[
            "create",
            "--name",
            &bystander,
            &format!("edgec.local/sensor:{version}"),
            "/bin/sh",
            "-c",
            SERVE,
        ]);

        let output = device.edged("docker", &["apply", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains("module filter exited with code 1"),
            "{stderr}"
        );
        for module in ["sensor", "filter"] {
            assert_eq!(
                container(&instance, module),
                format!("true {version}"),
                "{module} is not back on version 1"
            );
        }
        assert_eq!(
            docker(&["inspect", "--format", "{{.Name}}", &bystander]),
            format!("/{bystander}"),
            "edged touched an unlabelled container"
        );
        docker(&["rm", "-f", &bystander]);
        let report = status(&device);
        assert_eq!(report["deployment"]["version"], 1);
        assert_eq!(report["deployment"]["committedVersion"], 1);
        assert_eq!(report["lastDesiredStatus"]["code"], 400);
        assert_eq!(report["modules"]["sensor"]["runtimeStatus"], "running");
        assert_eq!(report["modules"]["sensor"]["restartCount"], 0);

        // `edged run` restarts a module that dies, and `edged status` in a
        // process of its own reports the restart.
        docker(&["kill", &format!("{instance}.sensor")]);
        let mut daemon = device
            .command("docker", &["run", "--interval", "100ms"])
            .spawn()
            .unwrap();
        let mut running = String::new();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            running = container(&instance, "sensor");
            if running.starts_with("true") {
                break;
            }
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
        assert_eq!(
            running,
            format!("true {version}"),
            "edged run did not restart the killed module"
        );
        let report = status(&device);
        assert_eq!(report["modules"]["sensor"]["restartCount"], 1, "{report}");
        assert_eq!(report["modules"]["filter"]["restartCount"], 0, "{report}");
    });
}

#[test]
fn a_failing_health_command_rolls_the_update_back() {
    let instance = format!("edgedhealth{}", std::process::id());
    let suffix = std::process::id().to_string();
    with_engine(&instance.clone(), &["probe"], move || {
        let dir = tempfile::tempdir().unwrap();
        let (device, key) = device(dir.path(), &instance);
        let good = build(
            dir.path(),
            &key,
            1,
            &suffix,
            &[Module {
                name: "probe",
                script: SERVE,
                health: Some("true"),
            }],
        );
        let sick = build(
            dir.path(),
            &key,
            2,
            &suffix,
            &[Module {
                name: "probe",
                script: SERVE,
                health: Some("exit 1"),
            }],
        );
        succeeded(&device.edged("docker", &["apply", good.to_str().unwrap()]));
        assert_eq!(container(&instance, "probe"), format!("true 1.0-{suffix}"));

        let output = device.edged("docker", &["apply", sick.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains("module probe failed its health check"),
            "{stderr}"
        );
        assert_eq!(
            container(&instance, "probe"),
            format!("true 1.0-{suffix}"),
            "probe is not back on version 1"
        );
        // The restored container starts its health checks afresh.
        let mut health = String::new();
        for _ in 0..50 {
            health = docker(&[
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                &format!("{instance}.probe"),
            ]);
            if health != "starting" {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(health, "healthy");
        let report = status(&device);
        assert_eq!(report["deployment"]["version"], 1);
        assert_eq!(report["modules"]["probe"]["health"], "healthy", "{report}");
    });
}

/// A unix socket forwarding to the engine's, which a test can take away
/// (connections cut, socket removed) and bring back, as an engine that
/// restarts or hangs would.
struct EngineProxy {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EngineProxy {
    fn start(path: &Path) -> Self {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let upstream = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut open: Vec<UnixStream> = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(engine) = UnixStream::connect(&upstream) else {
                            continue;
                        };
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), engine.try_clone().unwrap()),
                            (engine.try_clone().unwrap(), client.try_clone().unwrap()),
                        ] {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                        open.extend([client, engine]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for stream in open {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Self {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// A device of `instance` running version 1 of a one-module deployment, `ticker`.
fn running_ticker(dir: &Path, instance: &str, suffix: &str) -> TestDevice {
    let (device, key) = device(dir, instance);
    let bundle = build(
        dir,
        &key,
        1,
        suffix,
        &[Module {
            name: "ticker",
            script: SERVE,
            health: None,
        }],
    );
    succeeded(&device.edged("docker", &["apply", bundle.to_str().unwrap()]));
    device
}

/// Polls `condition` every 100 ms for at most `seconds`.
fn eventually(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn supervision_outlives_an_engine_that_goes_away_and_comes_back() {
    let instance = format!("edgedflaky{}", std::process::id());
    let suffix = std::process::id().to_string();
    with_engine(&instance.clone(), &["ticker"], move || {
        let dir = tempfile::tempdir().unwrap();
        let device = running_ticker(dir.path(), &instance, &suffix);
        let socket = dir.path().join("engine.sock");
        let proxy = EngineProxy::start(&socket);
        let mut daemon = device
            .command("docker", &["run", "--interval", "100ms"])
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));

        // The engine goes away: the daemon records the failing passes and
        // stays up.
        drop(proxy);
        let failure = device.state.join("supervision-failure.json");
        assert!(
            eventually(20, || failure.exists()),
            "no failure was recorded"
        );
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "edged run ended when the engine went away"
        );
        let report = status(&device);
        assert!(
            report["supervision"]["consecutiveFailures"].as_u64() >= Some(1),
            "{report}"
        );
        assert!(
            report["supervision"]["lastError"]
                .as_str()
                .is_some_and(|error| !error.is_empty()),
            "{report}"
        );
        docker(&["kill", &format!("{instance}.ticker")]);

        // The engine is back: supervision carries on and restarts the
        // module that died meanwhile.
        let _proxy = EngineProxy::start(&socket);
        assert!(
            eventually(60, || !failure.exists()
                && container(&instance, "ticker").starts_with("true")),
            "supervision did not resume"
        );
        assert!(daemon.try_wait().unwrap().is_none());
        let _ = daemon.kill();
        let _ = daemon.wait();
        let report = status(&device);
        assert!(report["supervision"].is_null(), "{report}");
        assert_eq!(report["modules"]["ticker"]["restartCount"], 1, "{report}");
    });
}

#[test]
fn a_daemon_started_before_its_engine_waits_for_it() {
    let instance = format!("edgedlate{}", std::process::id());
    let suffix = format!("late{}", std::process::id());
    with_engine(&instance.clone(), &["ticker"], move || {
        let dir = tempfile::tempdir().unwrap();
        let device = running_ticker(dir.path(), &instance, &suffix);
        docker(&["kill", &format!("{instance}.ticker")]);

        // The engine's socket is not there yet, as on a device whose engine
        // starts after edged: the daemon waits instead of exiting.
        let socket = dir.path().join("engine.sock");
        let mut daemon = device
            .command("docker", &["run", "--interval", "100ms"])
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let failure = device.state.join("supervision-failure.json");
        assert!(
            eventually(20, || failure.exists()),
            "no failure was recorded"
        );
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "edged run ended because the engine was not up"
        );
        let report = status(&device);
        assert!(
            report["supervision"]["lastError"]
                .as_str()
                .is_some_and(|error| error.contains("container engine")),
            "{report}"
        );

        // The engine comes up: the daemon connects and supervises.
        let _proxy = EngineProxy::start(&socket);
        assert!(
            eventually(90, || !failure.exists()
                && container(&instance, "ticker").starts_with("true")),
            "the daemon did not connect to the engine once it was up"
        );
        let _ = daemon.kill();
        let _ = daemon.wait();
    });
}
