//! `$edgeAgent` module entries (and their twins) as `module` blocks, plus what modules and the
//! system modules share: environment variables and create options.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::error::{ImportError, Note};
use super::fields::{
    note_unknown_keys, optional_integer, optional_keyword, optional_object, optional_string, path,
    required_object, required_string,
};
use super::lines::Lines;
use super::text::{Context, check_depth, name, template_string, value};
use super::twin;

/// The inputs and outputs the routes use, per module (see [`super::routes::endpoints`]).
#[derive(Debug, Default)]
pub struct Endpoints {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

const MODULE_KEYS: &[&str] = &[
    "version",
    "type",
    "status",
    "restartPolicy",
    "startupOrder",
    "imagePullPolicy",
    "env",
    "settings",
];

/// One `module` block. `entry` is the module's `$edgeAgent` entry; `twin` its desired properties.
pub fn module(
    module_name: &str,
    entry: &Map<String, Json>,
    twin: Option<&Map<String, Json>>,
    endpoints: Option<&Endpoints>,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let at = format!("$edgeAgent.modules.{module_name}");
    note_unknown_keys(entry, MODULE_KEYS, &at, context);
    note_non_docker(entry, &at, context);
    lines.open(format!("module {}", name(module_name)));
    let settings = required_object(entry, "settings", &at)?;
    let settings_at = path(&at, "settings");
    let image = required_string(settings, "image", &settings_at)?;
    lines.line(format!("image = {}", template_string(image, context)));
    if let Some(version) = optional_string(entry, "version", &at)? {
        lines.line(format!("version = {}", template_string(version, context)));
    }
    let status = optional_keyword(
        entry,
        "status",
        &at,
        &["running", "stopped"],
        "`running` or `stopped`",
    )?;
    if let Some(status) = status {
        lines.line(format!("status = {status}"));
    }
    let restart = optional_keyword(
        entry,
        "restartPolicy",
        &at,
        &["never", "on-failure", "on-unhealthy", "always"],
        "`never`, `on-failure`, `on-unhealthy` or `always`",
    )?;
    if let Some(restart) = restart {
        lines.line(format!("restart = {restart}"));
    }
    let startup_order = optional_integer(
        entry,
        "startupOrder",
        &at,
        (0, u64::from(u32::MAX)),
        "an integer from 0 to 4294967295",
    )?;
    if let Some(order) = startup_order {
        lines.line(format!("startup_order = {order}"));
    }
    let pull = optional_keyword(
        entry,
        "imagePullPolicy",
        &at,
        &["on-create", "never"],
        "`on-create` or `never`",
    )?;
    if let Some(pull) = pull {
        lines.line(format!("pull = {pull}"));
    }
    environment(entry, &at, lines, context)?;
    let options = create_options(settings, module_name, &settings_at, context)?;
    if !options.is_empty() {
        create_options_block(&options, &settings_at, lines, context)?;
    }
    for input in endpoints.iter().flat_map(|endpoints| &endpoints.inputs) {
        lines.line(format!("input {}", name(input)));
    }
    for output in endpoints.iter().flat_map(|endpoints| &endpoints.outputs) {
        lines.line(format!("output {}", name(output)));
    }
    if let Some(desired) = twin.filter(|desired| !desired.is_empty()) {
        lines.open("twin");
        for field in twin::fields(
            desired,
            &format!("{module_name}.properties.desired"),
            context,
        )? {
            lines.line(field);
        }
        lines.close();
    }
    lines.close();
    Ok(())
}

/// edgec emits every module as `"type": "docker"`, the only type IoT Edge runs.
pub fn note_non_docker(entry: &Map<String, Json>, at: &str, context: &mut Context) {
    if entry.get("type").is_some_and(|kind| kind != "docker") {
        context.notes.push(Note::DroppedKey {
            at: path(at, "type"),
        });
    }
}

/// `env { NAME = value }` from `{"NAME": {"value": …}}`; nothing for an absent or empty `env`.
pub fn environment(
    entry: &Map<String, Json>,
    at: &str,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let Some(env) = optional_object(entry, "env", at)?.filter(|env| !env.is_empty()) else {
        return Ok(());
    };
    let env_at = path(at, "env");
    lines.open("env");
    for (variable, setting) in env {
        let variable_at = path(&env_at, variable);
        let scalar = setting
            .as_object()
            .filter(|setting| setting.len() == 1)
            .and_then(|setting| setting.get("value"))
            .filter(|value| value.is_string() || value.is_number() || value.is_boolean())
            .ok_or(ImportError::Malformed {
                at: variable_at.clone(),
                expected: "`{\"value\": …}` with a string, number or boolean",
            })?;
        lines.line(format!(
            "{} = {}",
            name(variable),
            value(scalar, &variable_at, context)?
        ));
    }
    lines.close();
    Ok(())
}

const SETTINGS_KEYS: &[&str] = &["image", "createOptions"];

/// The create options of a module's `settings`: the `createOptions`, `createOptions01` …
/// chunks joined in order and parsed, or an object where templates write one directly. An empty
/// string or no `createOptions` at all means no options.
pub fn create_options(
    settings: &Map<String, Json>,
    module: &str,
    at: &str,
    context: &mut Context,
) -> Result<Map<String, Json>, ImportError> {
    let mut chunks: BTreeMap<u32, &Json> = BTreeMap::new();
    for (key, chunk) in settings {
        match chunk_index(key) {
            Some(index) => {
                chunks.insert(index, chunk);
            }
            None if !SETTINGS_KEYS.contains(&key.as_str()) => {
                context.notes.push(Note::DroppedKey { at: path(at, key) });
            }
            None => {}
        }
    }
    let refuse = |reason: String| ImportError::CreateOptions {
        module: module.to_owned(),
        reason,
    };
    if let [Json::Object(options)] = chunks.values().copied().collect::<Vec<_>>().as_slice() {
        return Ok(options.clone());
    }
    let mut text = String::new();
    for chunk in chunks.values() {
        let Json::String(chunk) = chunk else {
            return Err(refuse(
                "its chunks must be strings (or the whole options one object)".to_owned(),
            ));
        };
        text.push_str(chunk);
    }
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Json>(&text) {
        Ok(Json::Object(options)) => Ok(options),
        Ok(_) => Err(refuse("they are JSON, but not an object".to_owned())),
        Err(error) => Err(refuse(error.to_string())),
    }
}

/// `createOptions` is chunk 0 and `createOptions01` … `createOptions99` follow.
fn chunk_index(key: &str) -> Option<u32> {
    let suffix = key.strip_prefix("createOptions")?;
    if suffix.is_empty() {
        return Some(0);
    }
    (suffix.len() == 2 && suffix.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| suffix.parse().ok())
        .flatten()
        .filter(|index| *index > 0)
}

/// `create_options { … }` with nested objects as nested blocks, the way Docker options read best.
pub fn create_options_block(
    options: &Map<String, Json>,
    at: &str,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    let at = path(at, "createOptions");
    check_depth(&Json::Object(options.clone()), &at)?;
    lines.open("create_options");
    object_entries(options, &at, lines, context)?;
    lines.close();
    Ok(())
}

fn object_entries(
    object: &Map<String, Json>,
    at: &str,
    lines: &mut Lines,
    context: &mut Context,
) -> Result<(), ImportError> {
    for (key, item) in object {
        match item {
            Json::Object(nested) if !nested.is_empty() => {
                lines.open(name(key));
                object_entries(nested, at, lines, context)?;
                lines.close();
            }
            _ => lines.line(format!("{} = {}", name(key), value(item, at, context)?)),
        }
    }
    Ok(())
}

/// Whether IoT Edge accepts `name` as a module name: letters, digits, `_` and `-`, and not one of
/// the names the runtime keeps for itself.
pub fn check_module_name(module_name: &str) -> Result<(), ImportError> {
    let valid = !module_name.is_empty()
        && module_name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    let reserved = ["edgeAgent", "edgeHub"]
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(module_name));
    if valid && !reserved {
        Ok(())
    } else {
        Err(ImportError::InvalidModuleName {
            name: module_name.to_owned(),
        })
    }
}

/// `modules = [a, "3d-printer"]`.
pub fn module_list(names: &[&String]) -> String {
    let listed: Vec<String> = names.iter().map(|module| name(module)).collect();
    format!("modules = [{}]", listed.join(", "))
}
