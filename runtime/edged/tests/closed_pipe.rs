//! `edged status | head -1`: a reader that closes the pipe early ends edged
//! quietly, never with a panic.

mod common;

use std::process::Stdio;

use common::{Key, TestDevice, bundle, files, manifest};
use serde_json::json;

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let payload = files("v1");
    let mut manifest = manifest(1, &payload);
    let modules: serde_json::Map<String, serde_json::Value> = (0..20)
        .map(|index| {
            (
                format!("module{index}"),
                json!({"type": "docker", "status": "running", "restartPolicy": "always", "settings": {"image": "m:1"}}),
            )
        })
        .collect();
    manifest.iot_edge_manifest =
        json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": modules}}}});
    let v1 = device.write_bundle("v1.edgebundle", &bundle(&manifest, &payload, &[&key]));
    let applied = device.edged("none", &["apply", v1.to_str().unwrap()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    for args in [
        &["status"][..],
        &["status", "--json"],
        &["trust", "list"],
        &["--log-format", "json", "status"],
    ] {
        let mut child = device
            .command("none", args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before edged writes a byte.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}
