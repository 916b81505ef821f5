//! Over the air through a real registry: `edged run` polls the tag `[update]` names (Debian's
//! docker-registry on loopback, TLS from a test CA, an htpasswd user), verifies `bundle.json`
//! and its signatures before it fetches any payload, fetches only the blobs it lacks, resumes a
//! cut transfer, and refuses what a registry must not be able to make it run: an older version,
//! the same version with other contents, a bundle signed by another key, a corrupted blob. A
//! registry that stalls fails a poll within its timeout while the device keeps its deployment.
//!
//! The bundles carry ten "module" files of 256 KiB each, so an update that changes one module
//! has one blob to fetch. The modules run nowhere (`--runtime none`): what is tested is the
//! distribution, the transaction is the same as for `edged apply`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Key, TestDevice, bundle, manifest};
use edge_registry::{Credentials, RegistryClient, RegistryOptions};
use serde_json::Value;
use test_registry::{Authority, Fault, PASSWORD, Proxy, Registry, USER};

const REPOSITORY: &str = "fleet/plant";
const MODULE_SIZE: usize = 256 * 1024;

/// The payload of a version: ten module files, module `changed` (if any) with other content.
fn modules(version_of: impl Fn(usize) -> u64) -> BTreeMap<String, Vec<u8>> {
    (0..10)
        .map(|module| {
            let seed = format!("module {module} version {}", version_of(module));
            let content: Vec<u8> = seed.bytes().cycle().take(MODULE_SIZE).collect();
            (format!("payload/modules/m{module}.bin"), content)
        })
        .collect()
}

/// A signed bundle of `version` with `payload`, written under `dir`.
fn write_bundle(
    dir: &Path,
    name: &str,
    version: u64,
    payload: &BTreeMap<String, Vec<u8>>,
    key: &Key,
) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bundle(&manifest(version, payload), payload, &[key])).unwrap();
    path
}

struct Fleet {
    registry: Registry,
    client: RegistryClient,
    dir: tempfile::TempDir,
    work: PathBuf,
}

impl Fleet {
    fn start() -> Option<Self> {
        if !test_registry::available() {
            eprintln!(
                "SKIPPED: {} is not installed (.ci/setup installs it)",
                test_registry::PROGRAM
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(
            &dir.path().join("registry"),
            Arc::new(Authority::new("ota test CA")),
        );
        let client = RegistryClient::new(RegistryOptions {
            ca_pem: Some(registry.authority().ca_pem().as_bytes().to_vec()),
            credentials: Some(Credentials {
                user: USER.to_owned(),
                password: PASSWORD.to_owned(),
            }),
            ..RegistryOptions::default()
        })
        .unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Some(Self {
            registry,
            client,
            dir,
            work,
        })
    }

    /// Pushes `bundle` to the channel tag `stable`.
    fn publish(&self, bundle: &Path) {
        let reference = edge_registry::parse_reference(&format!(
            "{}/{REPOSITORY}:stable",
            self.registry.host()
        ))
        .unwrap();
        self.client.push_bundle(bundle, &reference).unwrap();
    }

    /// A device that polls `host` (the registry, or a proxy in front of it) every 10 s.
    fn device(&self, key: &Key, host: &str, timeout: &str) -> TestDevice {
        self.device_on(tempfile::tempdir().unwrap(), key, host, timeout)
    }

    /// [`Self::device`] polling the registry, in `root`.
    fn device_in(&self, root: tempfile::TempDir, key: &Key, timeout: &str) -> TestDevice {
        self.device_on(root, key, &self.registry.host(), timeout)
    }

    fn device_on(
        &self,
        root: tempfile::TempDir,
        key: &Key,
        host: &str,
        timeout: &str,
    ) -> TestDevice {
        let password = self.work.join(format!("password-{host}"));
        std::fs::write(&password, PASSWORD).unwrap();
        TestDevice::new_in(
            root,
            &[key],
            &format!(
                "[update]\nreference = \"{host}/{REPOSITORY}:stable\"\ninterval = \"10s\"\njitter = \"0s\"\nca = \"{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\ntimeout = \"{timeout}\"\n",
                self.registry.ca_path().display(),
                password.display()
            ),
        )
    }

    /// Bytes of blob downloads the registry served after request number `since`.
    fn blob_bytes_since(&self, since: usize) -> u64 {
        let prefix = format!("/v2/{REPOSITORY}/blobs/");
        self.registry.requests()[since..]
            .iter()
            .filter(|request| request.method == "GET" && request.uri.starts_with(&prefix))
            .map(|request| request.written)
            .sum()
    }
}

/// The bytes of `bundle.json` and `bundle.sig.json` in a bundle: the two blobs of its head.
fn head_size(bundle: &Path) -> u64 {
    let mut archive = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .filter(|entry| {
            let path = entry.path().unwrap().into_owned();
            path == Path::new("bundle.json") || path == Path::new("bundle.sig.json")
        })
        .map(|entry| entry.size())
        .sum()
}

/// `edged run` over `device`, stopped (and its output shown on failure) when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(device: &TestDevice) -> Self {
        Self(
            device
                .command("none", &["run", "--interval", "200ms"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(device: &TestDevice) -> Value {
    let output = device.edged("none", &["status", "--json"]);
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// Waits (at most a minute) until the update record's last result satisfies `done`; returns
/// the status.
fn until_update(device: &TestDevice, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = status(device);
        if done(&report["update"]["lastResult"]) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "waited a minute for {what}; status: {report:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_result(result: &Value, kind: &str) -> bool {
    result["result"] == kind
}

#[test]
fn a_device_follows_its_tag_fetching_only_what_changed_and_refusing_what_it_must() {
    let Some(fleet) = Fleet::start() else {
        return;
    };
    let key = Key::new(&fleet.work, "fleet");
    let device = fleet.device(&key, &fleet.registry.host(), "2m");
    let v1 = write_bundle(&fleet.work, "v1.edgebundle", 1, &modules(|_| 1), &key);
    fleet.publish(&v1);
    let _daemon = Daemon::start(&device);

    let report = until_update(&device, "version 1", |result| {
        is_result(result, "fetched") && result["version"] == 1
    });
    assert_eq!(report["deployment"]["version"], 1, "{report:#}");
    assert_eq!(device.state().committed_version, 1);
    assert!(
        report["update"]["lastManifestDigest"]
            .as_str()
            .is_some_and(|digest| digest.starts_with("sha256:")),
        "{report:#}"
    );
    // The fetched directory is gone once applied.
    let downloads = device.state.join("downloads");
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);

    // Version 2 changes one module of ten: the device fetches that module's blob and the two
    // head documents, nothing else.
    let v2_payload = modules(|module| if module == 3 { 2 } else { 1 });
    let v2 = write_bundle(&fleet.work, "v2.edgebundle", 2, &v2_payload, &key);
    let mark = fleet.registry.requests().len();
    fleet.publish(&v2);
    until_update(&device, "version 2", |result| {
        is_result(result, "fetched") && result["version"] == 2
    });
    assert_eq!(device.state().committed_version, 2);
    let head_bytes = head_size(&v2);
    let fetched = fleet.blob_bytes_since(mark);
    assert_eq!(
        fetched,
        MODULE_SIZE as u64 + head_bytes,
        "the update fetched {fetched} bytes, not one module ({MODULE_SIZE}) and the head ({head_bytes})"
    );

    // The tag moved back to version 1: refused as older, nothing fetched beyond the head.
    let mark = fleet.registry.requests().len();
    fleet.publish(&v1);
    let report = until_update(&device, "the refusal of version 1", |result| {
        is_result(result, "refused")
    });
    let reason = report["update"]["lastResult"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("older"), "{reason}");
    assert_eq!(device.state().committed_version, 2);
    assert!(fleet.blob_bytes_since(mark) < MODULE_SIZE as u64);

    // The same version with other contents: refused too.
    let other_v2 = write_bundle(
        &fleet.work,
        "v2-other.edgebundle",
        2,
        &modules(|module| if module == 5 { 9 } else { 1 }),
        &key,
    );
    fleet.publish(&other_v2);
    let report = until_update(&device, "the refusal of another version 2", |result| {
        is_result(result, "refused")
            && result["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("same version"))
    });
    assert_eq!(report["deployment"]["version"], 2);
    assert_eq!(device.state().committed_version, 2);
}

#[test]
fn another_key_a_cut_transfer_a_corrupted_blob_and_a_stalled_registry() {
    let Some(fleet) = Fleet::start() else {
        return;
    };
    let key = Key::new(&fleet.work, "fleet");
    let intruder = Key::new(&fleet.work, "intruder");
    let proxy = Proxy::start(fleet.registry.port());
    let device = fleet.device(&key, &proxy.host(), "2m");

    // Signed by a key the device does not trust: refused before any payload is fetched.
    let forged = write_bundle(
        &fleet.work,
        "forged.edgebundle",
        1,
        &modules(|_| 7),
        &intruder,
    );
    let mark = fleet.registry.requests().len();
    fleet.publish(&forged);
    let daemon = Daemon::start(&device);
    let report = until_update(&device, "the refusal of the forged bundle", |result| {
        is_result(result, "refused")
    });
    assert!(report["deployment"]["version"].is_null(), "{report:#}");
    assert!(
        fleet.blob_bytes_since(mark) < MODULE_SIZE as u64,
        "payload was fetched before the signatures were checked"
    );
    drop(daemon);

    // A link that drops every 100 KiB: the blobs arrive in pieces, resumed with range
    // requests, and version 1 is applied whole.
    let v1 = write_bundle(&fleet.work, "v1.edgebundle", 1, &modules(|_| 1), &key);
    fleet.publish(&v1);
    proxy.set_fault(Fault::CutAfter(100 * 1024));
    let mark = fleet.registry.requests().len();
    let daemon = Daemon::start(&device);
    until_update(&device, "version 1 through a cut link", |result| {
        is_result(result, "fetched") && result["version"] == 1
    });
    assert_eq!(device.state().committed_version, 1);
    // Every blob is asked for with a range; one cut off is asked for again from where it
    // stopped, so there are more blob requests than blobs (ten modules and the head's two).
    let prefix = format!("/v2/{REPOSITORY}/blobs/");
    let blob_requests = fleet.registry.requests()[mark..]
        .iter()
        .filter(|request| request.method == "GET" && request.uri.starts_with(&prefix))
        .count();
    assert!(
        blob_requests > 12,
        "only {blob_requests} blob requests: nothing was resumed"
    );
    proxy.set_fault(Fault::None);

    // A blob corrupted in the registry's storage: refused, nothing applied.
    let v2_payload = modules(|module| if module == 0 { 2 } else { 1 });
    let v2 = write_bundle(&fleet.work, "v2.edgebundle", 2, &v2_payload, &key);
    fleet.publish(&v2);
    // Nothing is polled until the next interval, so the blob is corrupted in time.
    let changed = edge_bundle::Sha256Digest::of(&v2_payload["payload/modules/m0.bin"]).hex();
    let stored = fleet.registry_blob_path(&changed);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    let report = until_update(&device, "the refusal of a corrupted blob", |result| {
        is_result(result, "failed") && result["step"] == "fetch-payload"
    });
    assert!(
        report["update"]["lastResult"]["error"]
            .as_str()
            .is_some_and(|error| error.contains(&changed)),
        "{report:#}"
    );
    assert_eq!(device.state().committed_version, 1);

    drop(daemon);

    // A registry that accepts connections and never answers: the poll of a device with a
    // short timeout fails at it, and the device keeps its deployment and answers `edged
    // status`.
    proxy.set_fault(Fault::Stall);
    let impatient = fleet.device(&key, &proxy.host(), "2s");
    common::succeeded(&impatient.edged("none", &["apply", v1.to_str().unwrap()]));
    let _daemon = Daemon::start(&impatient);
    let started = Instant::now();
    let report = until_update(&impatient, "a poll that timed out", |result| {
        is_result(result, "failed") && result["step"] == "fetch-head"
    });
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        report["update"]["lastResult"]["error"]
            .as_str()
            .is_some_and(|error| error.contains("timed out after 2.0 s")),
        "{report:#}"
    );
    assert_eq!(report["deployment"]["version"], 1);
    assert_eq!(impatient.state().committed_version, 1);
}

impl Fleet {
    /// Where the registry stores the blob with sha256 `hex`.
    fn registry_blob_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("registry/data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

#[test]
fn a_disk_that_fills_during_a_fetch_fails_the_poll_cleanly_and_keeps_the_deployment() {
    let Some(fleet) = Fleet::start() else {
        return;
    };
    let disk = match test_tmpfs::Tmpfs::mount(&fleet.work.join("disk"), 4 << 20) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED: a full disk needs a tmpfs mount ({why})");
            return;
        }
    };
    let key = Key::new(&fleet.work, "fleet");
    // The device's state, configuration and trust on the small disk, polling the registry.
    let device = fleet.device_in(tempfile::tempdir_in(disk.path()).unwrap(), &key, "2m");

    // Version 1 (2.5 MiB) fits; version 2 changes every module and does not fit beside it.
    let v1 = write_bundle(&fleet.work, "v1.edgebundle", 1, &modules(|_| 1), &key);
    fleet.publish(&v1);
    let _daemon = Daemon::start(&device);
    until_update(&device, "version 1", |result| {
        is_result(result, "fetched") && result["version"] == 1
    });
    let v2 = write_bundle(&fleet.work, "v2.edgebundle", 2, &modules(|_| 2), &key);
    fleet.publish(&v2);
    let report = until_update(&device, "a fetch that filled the disk", |result| {
        is_result(result, "failed") && result["step"] == "fetch-payload"
    });
    let error = report["update"]["lastResult"]["error"].as_str().unwrap();
    assert!(error.contains("No space left"), "{error}");
    assert_eq!(report["deployment"]["version"], 1);
    assert_eq!(device.state().committed_version, 1);
    // What was fetched of version 2 is deleted, so the disk is not left full.
    let downloads = device.state.join("downloads");
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);
}
