//! Restart counts survive the process that observed them: `edged run`
//! records them in `supervision.json`, and a device opened by another
//! process (`edged status`, or the daemon after a restart) reports them and
//! counts on. A runtime that restarts a module on every supervision pass
//! stands in for Docker; `tests/docker.rs` checks the same on a real engine.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Key, TestDevice, bundle, files, manifest};
use edged::device::Device;
use edged::runtime::{Loaded, ModuleRuntime, ModuleStatus};
use edged::supervision::SupervisionRecord;
use serde_json::json;

/// Restarts the module `sensor` on every supervision pass.
#[derive(Default)]
struct CrashingSensor {
    restarts: BTreeMap<String, u32>,
}

impl ModuleRuntime for CrashingSensor {
    fn fetch_images(
        &mut self,
        _pull: &edged::pull::ImagePull,
        _progress: &mut edged::pull::Progress,
    ) -> edged::Result<()> {
        Ok(())
    }

    fn reconcile(&mut self, _deployment: Option<&Loaded>) -> edged::Result<()> {
        self.restarts.clear();
        Ok(())
    }

    fn health(&mut self, _deployment: &Loaded, _window: Duration) -> Result<(), String> {
        Ok(())
    }

    fn supervise(&mut self, _deployment: Option<&Loaded>) -> edged::Result<()> {
        *self.restarts.entry("sensor".to_owned()).or_default() += 1;
        Ok(())
    }

    fn status(
        &mut self,
        deployment: Option<&Loaded>,
    ) -> edged::Result<Vec<(String, ModuleStatus)>> {
        Ok(deployment
            .into_iter()
            .flat_map(|loaded| &loaded.modules)
            .map(|module| {
                let status = ModuleStatus {
                    runtime_status: "running".to_owned(),
                    restart_count: self.restarts.get(&module.name).copied().unwrap_or(0),
                    ..ModuleStatus::default()
                };
                (module.name.clone(), status)
            })
            .collect())
    }

    fn restart_counts(&self) -> BTreeMap<String, u32> {
        self.restarts.clone()
    }

    fn restore_restart_counts(&mut self, counts: &BTreeMap<String, u32>) {
        self.restarts.clone_from(counts);
    }
}

/// A signed bundle of `version` with the one module `sensor`.
fn sensor_bundle(device: &TestDevice, key: &Key, version: u64) -> std::path::PathBuf {
    let payload = files(&format!("v{version}"));
    let mut manifest = manifest(version, &payload);
    manifest.iot_edge_manifest = json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {
        "sensor": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "sensor:1"}},
    }}}}});
    device.write_bundle(
        &format!("v{version}.edgebundle"),
        &bundle(&manifest, &payload, &[key]),
    )
}

/// The device in this process, its sensor crashing on every pass.
fn open(device: &TestDevice) -> Device {
    device.open(Box::new(CrashingSensor::default()))
}

fn sensor_restarts(device: &mut Device) -> u32 {
    let modules = device.module_status().unwrap();
    let (name, status) = &modules[0];
    assert_eq!(name, "sensor");
    status.restart_count
}

#[test]
fn restart_counts_outlive_the_supervising_process() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let mut daemon = open(&device);
    daemon.apply(&sensor_bundle(&device, &key, 1)).unwrap();
    for _ in 0..3 {
        daemon.supervise().unwrap();
    }
    assert_eq!(sensor_restarts(&mut daemon), 3);

    // `edged status` in another process: a fresh runtime knows nothing.
    assert_eq!(sensor_restarts(&mut open(&device)), 3);
    let record = SupervisionRecord::load(&device.state).unwrap();
    assert_eq!(
        record.manifest_digest,
        device.state().active.unwrap().manifest_digest
    );

    // A restarted daemon counts on from the record.
    drop(daemon);
    let mut daemon = open(&device);
    daemon.supervise().unwrap();
    assert_eq!(sensor_restarts(&mut open(&device)), 4);

    // A new deployment starts from zero; the old counts do not carry over.
    daemon.apply(&sensor_bundle(&device, &key, 2)).unwrap();
    assert_eq!(sensor_restarts(&mut open(&device)), 0);
    daemon.supervise().unwrap();
    assert_eq!(sensor_restarts(&mut open(&device)), 1);
}

#[test]
fn counts_start_afresh_when_another_process_changes_the_deployment() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let mut daemon = open(&device);
    daemon.apply(&sensor_bundle(&device, &key, 1)).unwrap();
    for _ in 0..3 {
        daemon.supervise().unwrap();
    }
    assert_eq!(sensor_restarts(&mut open(&device)), 3);
    // `edged apply` from the shell, between two passes of the daemon.
    open(&device)
        .apply(&sensor_bundle(&device, &key, 2))
        .unwrap();
    daemon.supervise().unwrap();
    assert_eq!(sensor_restarts(&mut open(&device)), 1);
    assert_eq!(sensor_restarts(&mut daemon), 1);
}
