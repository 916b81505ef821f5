//! Module images pulled from a registry by digest, on the real Docker
//! engine and Debian's docker-registry (`test-registry`): a busybox module
//! built by `edgec build` as an OCI layout is pushed with skopeo, and
//! deployments pinning it (`localhost:PORT/…@sha256:…`, with the
//! registry's credentials in `registry … {}`) are built by edgec and
//! applied by edged. Skips (and says so) without an engine or the registry;
//! CI has both (`.ci/setup`).

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{COMPATIBLE, TestDevice, build_plant, device_trusting_edgec_key, succeeded};
use test_registry::{Authority, PASSWORD, Registry, USER};

/// A shell loop that stops at once on SIGTERM.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// The busybox module image as an OCI layout, built once per test binary
/// (by `edgec build` of a `local("rootfs")` module, taken out of its bundle).
fn layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let project = dir.join("image");
        let rootfs = project.join("rootfs");
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        symlink("busybox", rootfs.join("bin/sh")).unwrap();
        let key = dir.join("builder");
        succeeded(
            &Command::new(common::edgec())
                .arg("keygen")
                .arg("--output")
                .arg(&key)
                .output()
                .unwrap(),
        );
        let source = format!(
            "{}module sensor {{\n  image = local(\"rootfs\")\n  version = \"1.0\"\n}}\ndeployment plant {{\n  target = gateway\n  version = 1\n  modules = [sensor]\n}}\n",
            hardware()
        );
        let bundle = build_plant(&project, &source, &key);
        let layout = dir.join("layout");
        let mut archive = tar::Archive::new(fs::File::open(bundle).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            if let Ok(inside) = path.strip_prefix("payload/images/sensor") {
                let target = layout.join(inside);
                if entry.header().entry_type().is_dir() {
                    fs::create_dir_all(&target).unwrap();
                } else {
                    fs::create_dir_all(target.parent().unwrap()).unwrap();
                    entry.unpack(&target).unwrap();
                }
            }
        }
        assert!(layout.join("index.json").is_file(), "no OCI layout in the bundle");
        layout
    })
}

fn hardware() -> String {
    format!(
        "hardware gateway {{\n  arch = amd64\n  cpus = 2\n  memory = 1GiB\n  storage = 8GiB\n  security = none\n  compatible = \"{COMPATIBLE}\"\n}}\n"
    )
}

/// A registry with the test CA, which Docker is told to trust for its port
/// (`/etc/docker/certs.d/localhost:PORT/ca.crt`, removed on drop). Docker
/// also counts 127.0.0.0/8 as an insecure registry by default and would
/// skip the verification; the CA makes the test hold where it does not.
struct Served {
    registry: Registry,
    certs: PathBuf,
    /// A directory holding only the CA, for skopeo's `--dest-cert-dir`.
    skopeo_certs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(
            &dir.path().join("registry"),
            Arc::new(Authority::new("edged pull test CA")),
        );
        let certs = PathBuf::from(format!("/etc/docker/certs.d/{}", registry.host()));
        fs::create_dir_all(&certs).unwrap();
        fs::copy(registry.ca_path(), certs.join("ca.crt")).unwrap();
        let skopeo_certs = dir.path().join("skopeo-certs");
        fs::create_dir_all(&skopeo_certs).unwrap();
        fs::copy(registry.ca_path(), skopeo_certs.join("ca.crt")).unwrap();
        Self {
            registry,
            certs,
            skopeo_certs,
            _dir: dir,
        }
    }

    /// Pushes the module image to `repository`; returns its digest.
    fn push(&self, repository: &str) -> String {
        let digest_file = self.skopeo_certs.with_file_name("digest");
        succeeded(
            &Command::new("skopeo")
                .arg("copy")
                .arg("--quiet")
                .arg("--dest-cert-dir")
                .arg(&self.skopeo_certs)
                .arg("--dest-creds")
                .arg(format!("{USER}:{PASSWORD}"))
                .arg("--digestfile")
                .arg(&digest_file)
                .arg(format!("oci:{}", layout().display()))
                .arg(format!("docker://{}/{repository}:1", self.registry.host()))
                .output()
                .expect("skopeo (.ci/setup installs it)"),
        );
        fs::read_to_string(digest_file).unwrap().trim().to_owned()
    }

    /// How often the registry served `repository`'s manifest (the layers
    /// may be in the engine already, from another repository's pull).
    fn manifests_served(&self, repository: &str) -> usize {
        let prefix = format!("/v2/{repository}/manifests/");
        self.registry
            .requests()
            .iter()
            .filter(|request| {
                request.method == "GET" && request.status == 200 && request.uri.starts_with(&prefix)
            })
            .count()
    }

    /// `localhost:PORT/repository@digest`.
    fn reference(&self, repository: &str, digest: &str) -> String {
        format!("{}/{repository}@{digest}", self.registry.host())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.certs);
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Builds version `version` of deployment `plant` whose module `sensor`
/// runs `image`, with the registry credentials `password` for the
/// registry at `host`.
fn build(dir: &Path, key: &Path, version: u64, image: &str, host: &str, password: &str) -> PathBuf {
    let project = dir.join(format!("v{version}"));
    fs::create_dir_all(&project).unwrap();
    let source = format!(
        "{}module sensor {{\n  image = \"{image}\"\n  version = \"{version}.0\"\n  restart = always\n  create_options {{\n    Cmd = [\"/bin/sh\", \"-c\", \"{SERVE}\"]\n  }}\n}}\ndeployment plant {{\n  target = gateway\n  version = {version}\n  modules = [sensor]\n  registry fleet {{\n    address = \"{host}\"\n    username = \"{USER}\"\n    password = env(\"EDGED_TEST_REGISTRY_PASSWORD\")\n  }}\n}}\n",
        hardware()
    );
    let file = project.join("plant.edge");
    fs::write(&file, &source).unwrap();
    let output = project.join("build");
    succeeded(
        &Command::new(common::edgec())
            .arg("build")
            .arg(&file)
            .arg("--output")
            .arg(&output)
            .arg("--key")
            .arg(key)
            .env("SOURCE_DATE_EPOCH", "0")
            .env("EDGED_TEST_REGISTRY_PASSWORD", password)
            .output()
            .unwrap(),
    );
    output.join("plant.edgebundle")
}

fn status(device: &TestDevice) -> serde_json::Value {
    let output = device.edged("docker", &["status", "--json"]);
    serde_json::from_slice(&succeeded(&output).stdout).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `test` with an engine and the registry, or says why it skips;
/// removes the instance's containers and the pulled images in any case.
fn with_parts(instance: &str, test: impl FnOnce(&mut Vec<String>) + std::panic::UnwindSafe) {
    if !edged::docker::engine_available() {
        eprintln!(
            "SKIPPED: no Docker engine with API 1.41+ answers; start dockerd to run the edged registry tests (CI does)"
        );
        return;
    }
    if !test_registry::available() {
        eprintln!(
            "SKIPPED: {} is not installed; install docker-registry (.ci/setup does) to run the edged registry tests",
            test_registry::PROGRAM
        );
        return;
    }
    let mut pulled = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&mut pulled)));
    let _ = edged::docker::remove_instance(instance);
    for image in &pulled {
        docker(&["rmi", "-f", image]);
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn device(dir: &Path, instance: &str, extra: &str) -> (TestDevice, PathBuf) {
    device_trusting_edgec_key(
        dir,
        &format!("instance = \"{instance}\"\n[health]\nwindow = \"1s\"\n{extra}"),
    )
}

/// Asserts that a failed apply left the device on `version`, saying
/// `reason` on stderr and in `edged status`, with exit code 12.
fn assert_not_applied(device: &TestDevice, output: &Output, version: u64, reason: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(12), "{text}");
    assert!(text.contains(reason), "{text}");
    assert!(text.contains("hint: the device is unchanged"), "{text}");
    let report = status(device);
    assert_eq!(report["deployment"]["version"], version, "{report}");
    assert_eq!(report["lastDesiredStatus"]["code"], 400, "{report}");
    let description = report["lastDesiredStatus"]["description"].as_str().unwrap();
    assert!(description.contains(reason), "{description}");
    assert!(
        report.get("pull").is_none(),
        "a pull record outlived its pull: {report}"
    );
    for slot in ["a", "b"] {
        assert!(
            !device
                .state
                .join("slots")
                .join(slot)
                .join("staging")
                .exists()
        );
    }
}

#[test]
fn images_are_pulled_by_digest_before_the_switch_and_failures_keep_the_deployment() {
    let instance = format!("edgedpull{}", std::process::id());
    with_parts(&instance.clone(), move |pulled| {
        let served = Served::start();
        let mut served = served;
        let host = served.registry.host();
        let digest = served.push("fleet/sensor");
        served.push("fleet/other");
        served.push("fleet/tampered");
        let dir = tempfile::tempdir().unwrap();
        let (device, key) = device(dir.path(), &instance, "");
        let sensor = served.reference("fleet/sensor", &digest);
        let other = served.reference("fleet/other", &digest);
        pulled.extend([sensor.clone(), other.clone()]);

        // Pulled with the deployment's credentials, then run.
        let v1 = build(dir.path(), &key, 1, &sensor, &host, PASSWORD);
        succeeded(&device.edged("docker", &["apply", v1.to_str().unwrap()]));
        assert_eq!(
            docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.Config.Image}}",
                &format!("{instance}.sensor")
            ]),
            format!("true {sensor}")
        );
        assert!(
            docker(&["image", "inspect", "--format", "{{.RepoDigests}}", &sensor])
                .contains(&digest)
        );
        let served_once = served.manifests_served("fleet/sensor");
        assert!(served_once > 0, "nothing was pulled");

        // Refused credentials.
        let v2 = build(dir.path(), &key, 2, &other, &host, "wrong");
        let output = device.edged("docker", &["apply", v2.to_str().unwrap()]);
        assert_not_applied(&device, &output, 1, "the registry refused the credentials");
        assert!(
            stderr(&output).contains("registry credentials"),
            "{}",
            stderr(&output)
        );

        // An image the registry does not hold.
        let missing = served.reference("fleet/other", &format!("sha256:{}", "0".repeat(64)));
        let v3 = build(dir.path(), &key, 3, &missing, &host, PASSWORD);
        let output = device.edged("docker", &["apply", v3.to_str().unwrap()]);
        assert_not_applied(
            &device,
            &output,
            1,
            "the registry does not hold the pinned image",
        );

        // With the registry gone, an image already present is not pulled:
        // a new version applies and a rollback works.
        served.registry.stop();
        let v4 = build(dir.path(), &key, 4, &sensor, &host, PASSWORD);
        succeeded(&device.edged("docker", &["apply", v4.to_str().unwrap()]));
        assert_eq!(status(&device)["deployment"]["version"], 4);
        succeeded(&device.edged("docker", &["rollback"]));
        assert_eq!(status(&device)["deployment"]["version"], 1);
        assert!(
            docker(&[
                "inspect",
                "--format",
                "{{.State.Running}}",
                &format!("{instance}.sensor")
            ]) == "true"
        );
        served.registry.start_again();
        // Nor is it pulled again with the registry back.
        let v4b = build(dir.path(), &key, 5, &sensor, &host, PASSWORD);
        succeeded(&device.edged("docker", &["apply", v4b.to_str().unwrap()]));
        assert_eq!(served.manifests_served("fleet/sensor"), served_once);

        // The device's own credentials win over the deployment's wrong ones.
        let password_file = dir.path().join("registry.password");
        fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).unwrap();
        let mut config = fs::read_to_string(&device.config).unwrap();
        config.push_str(&format!(
            "[[registry_credentials]]\naddress = \"{host}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
            password_file.display()
        ));
        fs::write(&device.config, config).unwrap();
        let v5 = build(dir.path(), &key, 6, &other, &host, "wrong");
        succeeded(&device.edged("docker", &["apply", v5.to_str().unwrap()]));
        assert_eq!(
            docker(&[
                "inspect",
                "--format",
                "{{.Config.Image}}",
                &format!("{instance}.sensor")
            ]),
            other
        );

        // The image removed from the engine behind edged's back (`docker
        // image prune -a`): the next supervision pass pulls it again and
        // the module runs.
        docker(&["rm", "-f", &format!("{instance}.sensor")]);
        docker(&["rmi", "-f", &other]);
        succeeded(&device.edged("docker", &["run", "--once"]));
        assert_eq!(
            docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.Config.Image}}",
                &format!("{instance}.sensor")
            ]),
            format!("true {other}")
        );

        // A registry serving other bytes under the pinned digest: the
        // manifest blob is changed in the registry's storage.
        let hex = digest.strip_prefix("sha256:").unwrap();
        let blob = served
            .registry
            .ca_path()
            .with_file_name("data")
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut manifest = fs::read(&blob).unwrap();
        manifest.extend_from_slice(b"\n ");
        fs::write(&blob, manifest).unwrap();
        let tampered = served.reference("fleet/tampered", &digest);
        pulled.push(tampered.clone());
        let v6 = build(dir.path(), &key, 7, &tampered, &host, PASSWORD);
        let output = device.edged("docker", &["apply", v6.to_str().unwrap()]);
        assert_not_applied(&device, &output, 6, "digest mismatch");
    });
}

/// Stops `edged run` with SIGTERM on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_daemon_retries_a_pull_while_the_registry_is_down_and_applies_once_it_is_back() {
    let instance = format!("edgedretry{}", std::process::id());
    with_parts(&instance.clone(), move |pulled| {
        let mut served = Served::start();
        let host = served.registry.host();
        let digest = served.push("fleet/retry");
        let reference = served.reference("fleet/retry", &digest);
        pulled.push(reference.clone());
        let dir = tempfile::tempdir().unwrap();
        let (device, key) = device(dir.path(), &instance, "");
        let bundle = build(dir.path(), &key, 1, &reference, &host, PASSWORD);
        served.registry.stop();

        let inbox = dir.path().join("inbox");
        fs::create_dir_all(&inbox).unwrap();
        let daemon = Daemon(
            device
                .command(
                    "docker",
                    &[
                        "run",
                        "--inbox",
                        inbox.to_str().unwrap(),
                        "--interval",
                        "100ms",
                    ],
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        fs::copy(&bundle, inbox.join("v1.edgebundle.part")).unwrap();
        fs::rename(
            inbox.join("v1.edgebundle.part"),
            inbox.join("v1.edgebundle"),
        )
        .unwrap();

        // It waits, says so, and keeps the bundle; attempts go on.
        wait_until(
            "the daemon reports a second failed attempt",
            Duration::from_secs(20),
            || {
                let report = status(&device);
                report["lastDesiredStatus"]["description"]
                    .as_str()
                    .is_some_and(|text| {
                        text.contains("waiting for the registry") && text.contains("attempt 2")
                    })
            },
        );
        let report = status(&device);
        assert_eq!(report["lastDesiredStatus"]["code"], 417, "{report}");
        assert!(
            report["lastDesiredStatus"]["description"]
                .as_str()
                .unwrap()
                .contains("the registry cannot be reached"),
            "{report}"
        );
        assert!(inbox.join("v1.edgebundle").exists());
        assert!(report["deployment"]["version"].is_null());

        served.registry.start_again();
        wait_until("the bundle is applied", Duration::from_secs(30), || {
            inbox.join("applied/v1.edgebundle").exists()
        });
        drop(daemon);
        let report = status(&device);
        assert_eq!(report["deployment"]["version"], 1, "{report}");
        assert_eq!(report["lastDesiredStatus"]["code"], 200, "{report}");
        assert!(served.manifests_served("fleet/retry") > 0);
        assert_eq!(
            docker(&[
                "inspect",
                "--format",
                "{{.State.Running}}",
                &format!("{instance}.sensor")
            ]),
            "true"
        );
    });
}
