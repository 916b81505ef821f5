//! `edged status`: the device's state in the shape IoT Edge's agent reports
//! as reported properties, so fleet tooling can read either.

use serde_json::{Map, Value, json};

use crate::runtime::{Loaded, ModuleStatus};
use crate::state::State;
use crate::supervision::SupervisionFailure;

/// Builds the status document.
pub fn report(
    state: &State,
    active: Option<&Loaded>,
    modules: &[(String, ModuleStatus)],
    supervision: Option<&SupervisionFailure>,
) -> Value {
    let mut module_map = Map::new();
    for (name, status) in modules {
        let mut entry = serde_json::to_value(status).unwrap_or(Value::Null);
        if let Some(spec) =
            active.and_then(|loaded| loaded.modules.iter().find(|module| &module.name == name))
        {
            entry["version"] = json!(spec.version);
            entry["status"] = json!(if spec.running { "running" } else { "stopped" });
            entry["restartPolicy"] = json!(spec.restart.as_str());
            entry["settings"] = json!({ "image": spec.image });
        }
        module_map.insert(name.clone(), entry);
    }
    json!({
        "schemaVersion": "1.1",
        "lastDesiredStatus": {
            "code": state.last_desired_status.code,
            "description": state.last_desired_status.description,
        },
        "lastDesiredVersion": state.active.as_ref().map(|active| active.version),
        "deployment": {
            "name": state.active.as_ref().map(|active| active.deployment.clone()),
            "version": state.active.as_ref().map(|active| active.version),
            "slot": state.active.as_ref().map(|active| active.slot.name()),
            "manifestDigest": state.active.as_ref().map(|active| active.manifest_digest.clone()),
            "committedVersion": state.committed_version,
            "transaction": state.transaction.as_ref().map(|transaction| serde_json::to_value(transaction).unwrap_or(Value::Null)),
        },
        "modules": module_map,
        "supervision": supervision,
    })
}

/// The same document for people.
pub fn human(report: &Value) -> String {
    let mut text = String::new();
    let deployment = &report["deployment"];
    match deployment["version"].as_u64() {
        Some(version) => text.push_str(&format!(
            "deployment {} version {version} (slot {}), committed version {}\n",
            deployment["name"].as_str().unwrap_or("?"),
            deployment["slot"].as_str().unwrap_or("?"),
            deployment["committedVersion"]
        )),
        None => text.push_str("no deployment installed\n"),
    }
    if let Some(transaction) = deployment["transaction"].as_object() {
        text.push_str(&format!(
            "transaction: {} of version {} in progress\n",
            transaction["phase"].as_str().unwrap_or("?"),
            transaction["target"]["version"]
        ));
    }
    text.push_str(&format!(
        "last change: {} {}\n",
        report["lastDesiredStatus"]["code"],
        report["lastDesiredStatus"]["description"]
            .as_str()
            .unwrap_or("")
    ));
    if let Some(modules) = report["modules"].as_object() {
        for (name, module) in modules {
            text.push_str(&format!(
                "  {name:<20} {:<8} exit {} restarts {}\n",
                module["runtimeStatus"].as_str().unwrap_or("?"),
                module["exitCode"],
                module["restartCount"]
            ));
        }
    }
    text
}
