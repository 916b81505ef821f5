//! `edged status --json` is read back by the OS image's init through the
//! one type both use, `edge_init::status::StatusReport`.

mod common;

use common::{Key, TestDevice, bundle, files, manifest};
use edge_init::status::StatusReport;
use serde_json::json;

#[test]
fn the_init_reads_what_status_prints() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let nothing = device.edged("none", &["status", "--json"]);
    let report = StatusReport::from_json(&nothing.stdout).unwrap();
    assert_eq!(report.deployment.version, None);
    assert_eq!(
        report.ready_line("a").unwrap_err(),
        "edged reports no deployment"
    );

    let payload = files("v1");
    let mut manifest = manifest(1, &payload);
    manifest.iot_edge_manifest = json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {
        "sensor": {"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "sensor:1"}},
        "filter": {"type": "docker", "status": "stopped", "restartPolicy": "never", "settings": {"image": "filter:1"}},
    }}}}});
    let v1 = device.write_bundle("v1.edgebundle", &bundle(&manifest, &payload, &[&key]));
    assert!(
        device
            .edged("none", &["apply", v1.to_str().unwrap()])
            .status
            .success()
    );
    let output = device.edged("none", &["status", "--json"]);
    assert!(output.status.success());
    let report = StatusReport::from_json(&output.stdout).unwrap();
    assert_eq!(
        report.ready_line("b").unwrap(),
        "edged: ready: deployment plant version 1 running (deployment slot a, 2 modules), OS slot b"
    );
    let filter = &report.modules["filter"];
    assert_eq!(filter.status, "stopped");
    assert_eq!(filter.restart_policy, "never");
    assert_eq!(filter.settings.image, "filter:1");
    assert_eq!(report.modules["sensor"].runtime_status, "unknown");
    assert_eq!(report.deployment.committed_version, 1);
    assert_eq!(report.last_desired_status.code, 200);
    assert!(report.supervision.is_none());
    // Printing the parsed report again gives the same document.
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(serde_json::to_value(&report).unwrap(), printed);
}

#[test]
fn a_damaged_active_deployment_is_reported_not_hidden() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let v1 = device.write_version(&key, 1);
    assert!(
        device
            .edged("none", &["apply", v1.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::write(device.state.join("slots/a/deployment/bundle.json"), b"{}").unwrap();

    let output = device.edged("none", &["status", "--json"]);
    assert_eq!(output.status.code(), Some(8), "{output:?}");
    let report = StatusReport::from_json(&output.stdout).unwrap();
    assert_eq!(report.deployment.version, Some(1));
    assert_eq!(report.deployment.committed_version, 1);
    let why = report.deployment.unusable.as_deref().unwrap();
    assert!(
        why.contains("not the manifest the state record names"),
        "{why}"
    );
    assert!(report.modules.is_empty());
    assert!(report.ready_line("b").unwrap_err().contains("unusable"));

    let human = device.edged("none", &["status"]);
    assert_eq!(human.status.code(), Some(8));
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(
        text.starts_with("deployment plant version 1 (slot a)"),
        "{text}"
    );
    assert!(
        text.contains("the active deployment is unusable:"),
        "{text}"
    );

    // A newer good bundle replaces it, and status is whole again.
    let v2 = device.write_version(&key, 2);
    assert!(
        device
            .edged("none", &["apply", v2.to_str().unwrap()])
            .status
            .success()
    );
    let output = device.edged("none", &["status", "--json"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        StatusReport::from_json(&output.stdout)
            .unwrap()
            .deployment
            .unusable
            .is_none()
    );
}
