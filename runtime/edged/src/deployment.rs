//! The modules a deployment asks for, read from the IoT Edge manifest the
//! bundle carries (`$edgeAgent` desired properties).

use std::collections::BTreeMap;

use edge_bundle::BundleManifest;
use edge_bundle::display::escaped;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// What the runtime does when a module's container stops.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RestartPolicy {
    /// Leave it stopped.
    Never,
    /// Restart after a non-zero exit.
    OnFailure,
    /// Restart after a non-zero exit or when its health check fails.
    OnUnhealthy,
    /// Restart whenever it stops.
    Always,
}

impl RestartPolicy {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "never" => Self::Never,
            "on-failure" => Self::OnFailure,
            "on-unhealthy" => Self::OnUnhealthy,
            "always" => Self::Always,
            _ => return None,
        })
    }

    /// The IoT Edge spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFailure => "on-failure",
            Self::OnUnhealthy => "on-unhealthy",
            Self::Always => "always",
        }
    }

    /// Whether a container that exited with `exit_code` is restarted.
    pub fn restarts_after(self, exit_code: i64, unhealthy: bool) -> bool {
        match self {
            Self::Never => false,
            Self::OnFailure => exit_code != 0,
            Self::OnUnhealthy => exit_code != 0 || unhealthy,
            Self::Always => true,
        }
    }
}

/// One module as the deployment wants it.
#[derive(Clone, PartialEq, Debug)]
pub struct ModuleSpec {
    /// The module name.
    pub name: String,
    /// The module version, if given.
    pub version: String,
    /// The image reference.
    pub image: String,
    /// Whether the module should run (`running`) or stay stopped.
    pub running: bool,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// Start order; lower first, IoT Edge's default is 4294967295.
    pub startup_order: u64,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Docker create options, re-joined from the `createOptions` chunks.
    pub create_options: Map<String, Value>,
}

/// Reads the user modules of a bundle, sorted by startup order then name.
/// The system modules (edgeAgent, edgeHub) are not included: edged plays
/// the agent itself.
pub fn modules(manifest: &BundleManifest) -> Result<Vec<ModuleSpec>> {
    let invalid = |what: String| Error::Refused(format!("IoT Edge manifest: {what}"));
    let agent = manifest
        .iot_edge_manifest
        .pointer("/modulesContent/$edgeAgent/properties.desired")
        .ok_or_else(|| invalid("no $edgeAgent desired properties".to_owned()))?;
    let mut specs = Vec::new();
    let Some(modules) = agent.get("modules") else {
        return Ok(specs);
    };
    let modules = modules
        .as_object()
        .ok_or_else(|| invalid("modules is not an object".to_owned()))?;
    for (name, module) in modules {
        // Module names become container names and labels, and are shown by `edged status`.
        edge_bundle::grammar::check_name("module name", name)
            .map_err(|error| invalid(error.to_string()))?;
        specs.push(
            module_spec(name, module).map_err(|what| invalid(format!("module {name}: {what}")))?,
        );
    }
    specs.sort_by(|left, right| {
        (left.startup_order, &left.name).cmp(&(right.startup_order, &right.name))
    });
    Ok(specs)
}

fn module_spec(name: &str, module: &Value) -> std::result::Result<ModuleSpec, String> {
    let text = |pointer: &str| module.pointer(pointer).and_then(Value::as_str);
    let image = text("/settings/image").ok_or("settings.image is missing")?;
    let restart = match text("/restartPolicy") {
        None => RestartPolicy::Always,
        Some(policy) => RestartPolicy::parse(policy)
            .ok_or(format!("unknown restartPolicy {}", escaped(policy)))?,
    };
    let running = match text("/status") {
        None | Some("running") => true,
        Some("stopped") => false,
        Some(other) => return Err(format!("unknown status {}", escaped(other))),
    };
    let mut env = BTreeMap::new();
    if let Some(variables) = module.get("env").and_then(Value::as_object) {
        for (key, value) in variables {
            let value = match value.get("value") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => return Err(format!("env {} has no value", escaped(key))),
            };
            env.insert(key.clone(), value);
        }
    }
    Ok(ModuleSpec {
        name: name.to_owned(),
        version: text("/version").unwrap_or("").to_owned(),
        image: image.to_owned(),
        running,
        restart,
        startup_order: module
            .get("startupOrder")
            .and_then(Value::as_u64)
            .unwrap_or(u64::from(u32::MAX)),
        env,
        create_options: create_options(module.get("settings").unwrap_or(&Value::Null))?,
    })
}

/// Joins `createOptions`, `createOptions01`, … in order, as IoT Edge does.
fn create_options(settings: &Value) -> std::result::Result<Map<String, Value>, String> {
    let mut text = String::new();
    if let Some(first) = settings.get("createOptions").and_then(Value::as_str) {
        text.push_str(first);
        for index in 1.. {
            match settings
                .get(format!("createOptions{index:02}"))
                .and_then(Value::as_str)
            {
                Some(chunk) => text.push_str(chunk),
                None => break,
            }
        }
    }
    if text.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("createOptions is not a JSON object".to_owned()),
        Err(error) => Err(format!("createOptions is not JSON: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunked_create_options_are_rejoined() {
        let settings = json!({
            "image": "x",
            "createOptions": "{\"Cmd\":[\"a\",",
            "createOptions01": "\"b\"]}",
        });
        let options = create_options(&settings).unwrap();
        assert_eq!(options["Cmd"], json!(["a", "b"]));
    }

    #[test]
    fn restart_policies_decide_by_exit_code() {
        assert!(!RestartPolicy::Never.restarts_after(1, true));
        assert!(RestartPolicy::OnFailure.restarts_after(1, false));
        assert!(!RestartPolicy::OnFailure.restarts_after(0, true));
        assert!(RestartPolicy::OnUnhealthy.restarts_after(0, true));
        assert!(RestartPolicy::Always.restarts_after(0, false));
    }
}
