//! The deployment-wide settings: `edge_agent` and `edge_hub` from the system modules and
//! `$edgeHub`, and `registry` blocks from the runtime's registry credentials.

use serde_json::{Map, Value as Json};

use super::error::{ImportError, Note};
use super::fields::{
    note_unknown_keys, optional_integer, optional_object, optional_string, path, required_object,
    required_string,
};
use super::lines::Lines;
use super::modules::{create_options, create_options_block, environment, note_non_docker};
use super::text::{Context, duration, name, quoted, sole_placeholder, template_string};

const AGENT_DESIRED_KEYS: &[&str] = &["schemaVersion", "runtime", "systemModules", "modules"];
const RUNTIME_KEYS: &[&str] = &["type", "settings"];
const RUNTIME_SETTINGS_KEYS: &[&str] =
    &["minDockerVersion", "loggingOptions", "registryCredentials"];
const AGENT_MODULE_KEYS: &[&str] = &["type", "settings", "env"];
const HUB_MODULE_KEYS: &[&str] = &["type", "status", "restartPolicy", "settings", "env"];
const HUB_DESIRED_KEYS: &[&str] = &["schemaVersion", "routes", "storeAndForwardConfiguration"];
const REGISTRY_KEYS: &[&str] = &["address", "username", "password"];

/// The runtime settings under `$edgeAgent`, which both `edge_agent` and the registries read.
pub fn runtime_settings<'a>(
    agent: &'a Map<String, Json>,
    context: &mut Context,
) -> Result<Option<&'a Map<String, Json>>, ImportError> {
    let at = "$edgeAgent";
    note_unknown_keys(agent, AGENT_DESIRED_KEYS, at, context);
    let Some(runtime) = optional_object(agent, "runtime", at)? else {
        return Ok(None);
    };
    let runtime_at = path(at, "runtime");
    note_unknown_keys(runtime, RUNTIME_KEYS, &runtime_at, context);
    if runtime.get("type").is_some_and(|kind| kind != "docker") {
        context.notes.push(Note::DroppedKey {
            at: path(&runtime_at, "type"),
        });
    }
    let settings = optional_object(runtime, "settings", &runtime_at)?;
    if let Some(settings) = settings {
        let settings_at = path(&runtime_at, "settings");
        note_unknown_keys(settings, RUNTIME_SETTINGS_KEYS, &settings_at, context);
    }
    Ok(settings)
}

/// `edge_agent { … }`.
pub fn edge_agent(
    agent: &Map<String, Json>,
    runtime: Option<&Map<String, Json>>,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let at = "$edgeAgent.systemModules";
    let system_modules = required_object(agent, "systemModules", "$edgeAgent")?;
    let module = required_object(system_modules, "edgeAgent", at)?;
    let module_at = path(at, "edgeAgent");
    note_unknown_keys(module, AGENT_MODULE_KEYS, &module_at, context);
    note_non_docker(module, &module_at, context);
    lines.open("edge_agent");
    if let Some(version) = optional_string(agent, "schemaVersion", "$edgeAgent")? {
        lines.line(format!("schema_version = {}", quoted(version)));
    }
    system_module_settings(module, "edgeAgent", &module_at, lines, context)?;
    let runtime_at = "$edgeAgent.runtime.settings";
    if let Some(runtime) = runtime {
        if let Some(version) = optional_string(runtime, "minDockerVersion", runtime_at)? {
            let version = template_string(version, context);
            lines.line(format!("min_docker_version = {version}"));
        }
        if let Some(options) = optional_string(runtime, "loggingOptions", runtime_at)? {
            let options = template_string(options, context);
            lines.line(format!("logging_options = {options}"));
        }
    }
    lines.close();
    Ok(())
}

/// `image`, `env` and `create_options` of a system module. The create options are always
/// written, even when empty, because leaving them out would give the hub edgec's default port
/// bindings instead of what the manifest says.
fn system_module_settings(
    module: &Map<String, Json>,
    module_name: &str,
    at: &str,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let settings = required_object(module, "settings", at)?;
    let settings_at = path(at, "settings");
    let image = required_string(settings, "image", &settings_at)?;
    lines.line(format!("image = {}", template_string(image, context)));
    environment(module, at, lines, context)?;
    let options = create_options(settings, module_name, &settings_at, context)?;
    if options.is_empty() {
        lines.line("create_options {}");
    } else {
        create_options_block(&options, &settings_at, lines, context)?;
    }
    Ok(())
}

/// `edge_hub { … }` from the hub's system module and `$edgeHub`'s desired properties.
pub fn edge_hub(
    agent: &Map<String, Json>,
    hub: Option<&Map<String, Json>>,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let at = "$edgeAgent.systemModules";
    let system_modules = required_object(agent, "systemModules", "$edgeAgent")?;
    let module = required_object(system_modules, "edgeHub", at)?;
    let module_at = path(at, "edgeHub");
    note_unknown_keys(module, HUB_MODULE_KEYS, &module_at, context);
    note_non_docker(module, &module_at, context);
    for (key, fixed, what) in [
        ("status", "running", "status"),
        ("restartPolicy", "always", "restart policy"),
    ] {
        if let Some(found) = module.get(key).filter(|found| *found != fixed) {
            context.notes.push(Note::FixedHubSetting {
                key: what,
                value: found
                    .as_str()
                    .map_or_else(|| found.to_string(), str::to_owned),
            });
        }
    }
    lines.open("edge_hub");
    if let Some(hub) = hub {
        note_unknown_keys(hub, HUB_DESIRED_KEYS, "$edgeHub", context);
        if let Some(version) = optional_string(hub, "schemaVersion", "$edgeHub")? {
            lines.line(format!("schema_version = {}", quoted(version)));
        }
    }
    system_module_settings(module, "edgeHub", &module_at, lines, context)?;
    let store_and_forward = match hub {
        Some(hub) => optional_object(hub, "storeAndForwardConfiguration", "$edgeHub")?,
        None => None,
    };
    if let Some(configuration) = store_and_forward {
        let configuration_at = "$edgeHub.storeAndForwardConfiguration";
        note_unknown_keys(
            configuration,
            &["timeToLiveSecs"],
            configuration_at,
            context,
        );
        let seconds = optional_integer(
            configuration,
            "timeToLiveSecs",
            configuration_at,
            (0, u64::MAX),
            "a whole number of seconds",
        )?;
        if let Some(seconds) = seconds {
            lines.line(format!("store_and_forward_ttl = {}", duration(seconds)));
        }
    }
    lines.close();
    Ok(())
}

/// `registry NAME { address, username, password = env("…") }` for each registry credential.
/// Passwords never enter the `.edge` file: a password that is a placeholder is read from the
/// environment variable of that name, any other from `REGISTRY_<NAME>_PASSWORD`.
pub fn registries(
    runtime: Option<&Map<String, Json>>,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let at = "$edgeAgent.runtime.settings";
    let Some(credentials) = runtime
        .map(|runtime| optional_object(runtime, "registryCredentials", at))
        .transpose()?
        .flatten()
    else {
        return Ok(());
    };
    let credentials_at = path(at, "registryCredentials");
    for (registry, credential) in credentials {
        let registry_at = path(&credentials_at, registry);
        let credential = credential.as_object().ok_or(ImportError::Malformed {
            at: registry_at.clone(),
            expected: "an object",
        })?;
        note_unknown_keys(credential, REGISTRY_KEYS, &registry_at, context);
        let address = required_string(credential, "address", &registry_at)?;
        let username = required_string(credential, "username", &registry_at)?;
        let password = required_string(credential, "password", &registry_at)?;
        lines.open(format!("registry {}", name(registry)));
        lines.line(format!("address = {}", template_string(address, context)));
        let username = match sole_placeholder(username) {
            Some(variable) => environment_variable(&variable),
            None => template_string(username, context),
        };
        lines.line(format!("username = {username}"));
        let password_variable =
            sole_placeholder(password).unwrap_or_else(|| password_variable(registry));
        lines.line(format!(
            "password = {}",
            environment_variable(&password_variable)
        ));
        lines.close();
    }
    Ok(())
}

fn environment_variable(variable: &str) -> String {
    format!("env({})", quoted(variable))
}

/// `REGISTRY_<NAME>_PASSWORD`, the name upper-cased with anything but letters and digits as `_`.
fn password_variable(registry: &str) -> String {
    let sanitized: String = registry
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("REGISTRY_{sanitized}_PASSWORD")
}
