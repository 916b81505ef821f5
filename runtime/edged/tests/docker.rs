//! End to end on a real Docker engine: apply a bundle, see the modules run
//! with edged's labels, apply a newer bundle whose module crash-loops, and
//! see edged roll back by itself to the old modules. Skips (and says so)
//! when no engine answers; CI starts one.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::{COMPATIBLE, Key, TestDevice};
use edge_bundle::{Architecture, BundleBuilder, BundleHeader, ImageConfig, LayerCompression};
use serde_json::json;

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Builds a bundle whose modules run busybox shell commands.
fn build_bundle(
    dir: &Path,
    key: &Key,
    tag: &str,
    version: u64,
    modules: &[(&str, &str)],
) -> Vec<u8> {
    let rootfs = dir.join("rootfs");
    if !rootfs.exists() {
        fs::create_dir_all(rootfs.join("bin")).unwrap();
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        symlink("busybox", rootfs.join("bin/sh")).unwrap();
    }
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: format!("plant-{tag}"),
        compatible: COMPATIBLE.to_owned(),
        architecture: Architecture::Amd64,
        version,
        source_date_epoch: 0,
    })
    .unwrap();
    let mut desired = serde_json::Map::new();
    for (order, (name, script)) in modules.iter().enumerate() {
        let reference = format!("edgec.local/{tag}-{name}:{version}");
        let config = ImageConfig {
            reference: reference.clone(),
            architecture: Architecture::Amd64,
            os: "linux".into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            compression: LayerCompression::None,
        };
        builder.add_local_image(name, &rootfs, &config).unwrap();
        let create = json!({"Cmd": ["/bin/sh", "-c", script]}).to_string();
        desired.insert(
            (*name).to_owned(),
            json!({
                "type": "docker",
                "version": version.to_string(),
                "status": "running",
                "restartPolicy": "always",
                "startupOrder": order,
                "env": {"EDGE_VERSION": {"value": version.to_string()}},
                "settings": {"image": reference, "createOptions": create},
            }),
        );
    }
    builder.iot_edge_manifest(json!({"modulesContent": {"$edgeAgent": {"properties.desired": {
        "modules": desired,
        "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}}},
    }}}}));
    builder.build(&[&key.signer], Vec::new()).unwrap().writer
}

#[test]
fn apply_run_and_automatic_rollback_on_docker() {
    if !edged::docker::engine_available() {
        eprintln!(
            "SKIPPED: no Docker engine with API 1.41+ answers; start dockerd to run the edged Docker tests (CI does)"
        );
        return;
    }
    let tag = format!("edgedtest{}", std::process::id());
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(
        &[&key],
        &format!(
            "instance = \"{tag}\"\n[health]\nwindow_secs = 2\n[restart]\nbackoff_base_secs = 0.2\n"
        ),
    );
    let good = build_bundle(
        keys.path(),
        &key,
        &tag,
        1,
        &[("sensor", "sleep 1000"), ("filter", "sleep 1000")],
    );
    let bad = build_bundle(
        keys.path(),
        &key,
        &tag,
        2,
        &[("sensor", "sleep 1000"), ("filter", "echo broken; exit 1")],
    );
    let good = device.write_bundle("good.edgebundle", &good);
    let bad = device.write_bundle("bad.edgebundle", &bad);

    let result = std::panic::catch_unwind(|| {
        let output = device.edged("docker", &["apply", good.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for module in ["sensor", "filter"] {
            let name = format!("{tag}.{module}");
            let inspect = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{index .Config.Labels \"io.edgec.module\"}} {{index .Config.Labels \"io.edgec.version\"}} {{index .Config.Labels \"io.edgec.deployment\"}}",
                &name,
            ]);
            assert_eq!(inspect, format!("true {module} 1 plant-{tag}"), "{name}");
        }
        let unlabelled = format!("{tag}-bystander");
        docker(&[
            "create",
            "--name",
            &unlabelled,
            &format!("edgec.local/{tag}-sensor:1"),
            "/bin/sh",
            "-c",
            "sleep 1000",
        ]);

        let output = device.edged("docker", &["apply", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{stderr}");
        assert!(
            stderr.contains("module filter exited with code 1"),
            "{stderr}"
        );
        for module in ["sensor", "filter"] {
            let name = format!("{tag}.{module}");
            let inspect = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{index .Config.Labels \"io.edgec.version\"}}",
                &name,
            ]);
            assert_eq!(inspect, "true 1", "{name} is not back on version 1");
        }
        assert_eq!(
            docker(&["inspect", "--format", "{{.Name}}", &unlabelled]),
            format!("/{unlabelled}"),
            "edged touched an unlabelled container"
        );
        docker(&["rm", "-f", &unlabelled]);

        let output = device.edged("docker", &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(status["deployment"]["version"], 1);
        assert_eq!(status["modules"]["sensor"]["runtimeStatus"], "running");
        assert!(
            status["modules"]["filter"]["lastStartTimeUtc"].is_string(),
            "{status}"
        );
        assert_eq!(status["lastDesiredStatus"]["code"], 400);

        // Supervision restarts a module that dies, after the back-off.
        docker(&["kill", &format!("{tag}.sensor")]);
        let output = device
            .command("docker", &["run", "--interval", "0.1"])
            .spawn();
        let mut daemon = output.unwrap();
        let mut running = String::new();
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            running = docker(&[
                "inspect",
                "--format",
                "{{.State.Running}}",
                &format!("{tag}.sensor"),
            ]);
            if running == "true" {
                break;
            }
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
        assert_eq!(
            running, "true",
            "edged run did not restart the killed module"
        );
    });
    let _ = edged::docker::remove_instance(&tag);
    for module in ["sensor", "filter"] {
        for version in [1, 2] {
            docker(&[
                "rmi",
                "-f",
                &format!("edgec.local/{tag}-{module}:{version}"),
            ]);
        }
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
