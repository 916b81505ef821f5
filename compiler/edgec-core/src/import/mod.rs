//! `edgec import`: an existing Azure IoT Edge deployment manifest (or deployment template) as
//! one idiomatic `.edge` file, so that fleets already described in JSON can move to edgec.
//!
//! The import is pure, JSON text in and `.edge` text out, and aims at a round trip: `edgec build`
//! of the result writes a manifest equal to the original once create options are parsed and the
//! template's placeholders are given values. What `.edge` cannot say is listed in
//! [`Imported::notes`] and at the top of the file instead of being dropped silently.

mod error;
mod fields;
mod lines;
mod modules;
mod routes;
mod system;
mod text;
mod twin;

use serde_json::{Map, Value as Json};

use crate::check::model::Architecture;
use crate::image_reference;

pub use error::{ImportError, NotAManifest, Note};

use fields::{optional_object, required_object};
use lines::Lines;
use text::Context;

/// The name of the hardware profile the imported deployment targets.
const HARDWARE: &str = "imported";

/// An imported manifest: the formatted `.edge` source and what it leaves out.
#[derive(Debug, Clone)]
pub struct Imported {
    pub source: String,
    /// The deployment's name, as `edgec build` names its output directory.
    pub deployment: String,
    pub notes: Vec<Note>,
}

/// Imports the manifest `json`, read from a file named `file_name` (which names the deployment).
pub fn import_manifest(json: &str, file_name: &str) -> Result<Imported, ImportError> {
    let document: Json =
        serde_json::from_str(json.trim_start_matches('\u{feff}')).map_err(|error| {
            ImportError::NotJson {
                line: error.line(),
                column: error.column(),
                reason: error_reason(&error),
            }
        })?;
    let mut context = Context::default();
    let modules_content = modules_content(&document, &mut context)?;
    let agent = desired(modules_content, "$edgeAgent")?.ok_or(ImportError::NotAManifest {
        reason: NotAManifest::NoEdgeAgent,
    })?;
    let hub = desired(modules_content, "$edgeHub")?;
    let deployment = deployment_name(file_name);

    let module_entries = optional_object(agent, "modules", "$edgeAgent")?.cloned();
    let module_entries = module_entries.unwrap_or_default();
    let module_names: Vec<&String> = module_entries.keys().collect();
    for module in &module_names {
        modules::check_module_name(module)?;
    }
    for key in modules_content.keys() {
        if !key.starts_with('$') && !module_entries.contains_key(key) {
            context.notes.push(Note::TwinWithoutModule {
                module: key.clone(),
            });
        }
    }
    let routes = routes::routes(hub, &mut context)?;
    let endpoints = routes::endpoints(&routes, &module_names);

    let mut body = Lines::default();
    for (module, entry) in &module_entries {
        let entry = entry
            .as_object()
            .ok_or_else(|| fields::malformed("$edgeAgent.modules", module, "an object"))?;
        body.blank();
        modules::module(
            module,
            entry,
            module_twin(modules_content, module, &mut context)?,
            endpoints.get(module.as_str()),
            &mut body,
            &mut context,
        )?;
    }
    body.blank();
    body.open(format!("deployment {deployment}"));
    body.line(format!("target = {HARDWARE}"));
    body.line("version = 1");
    body.line(modules::module_list(&module_names));
    let runtime = system::runtime_settings(agent, &mut context)?;
    system::edge_agent(agent, runtime, &mut body, &mut context)?;
    system::edge_hub(agent, hub, &mut body, &mut context)?;
    system::registries(runtime, &mut body, &mut context)?;
    for route in &routes {
        routes::write(route, &mut body);
    }
    body.close();

    let source = header(file_name, &module_entries, &mut context) + &body.into_text();
    let source = crate::format_source(&source, crate::span::FileId(0)).map_err(|errors| {
        ImportError::Unwritable {
            syntax_errors: errors.len(),
        }
    })?;
    Ok(Imported {
        source,
        deployment,
        notes: context.notes,
    })
}

/// serde_json's message without its own " at line L column C", which the error carries apart.
fn error_reason(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(position) => message[..position].to_owned(),
        None => message,
    }
}

/// `modulesContent`, directly or (for at-scale and layered deployments) under `content`. The
/// other keys of an at-scale deployment (`id`, `targetCondition`, `priority`, …) belong to IoT
/// Hub, not to the devices, and are noted as left out.
fn modules_content<'a>(
    document: &'a Json,
    context: &mut Context,
) -> Result<&'a Map<String, Json>, ImportError> {
    let top = document.as_object().ok_or(ImportError::NotAManifest {
        reason: NotAManifest::TopLevel(json_kind(document)),
    })?;
    let not_a_manifest = ImportError::NotAManifest {
        reason: NotAManifest::NoModulesContent,
    };
    if let Some(content) = top.get("modulesContent") {
        fields::note_unknown_keys(top, &["modulesContent"], "", context);
        return content.as_object().ok_or(not_a_manifest);
    }
    let content = top
        .get("content")
        .and_then(Json::as_object)
        .ok_or(not_a_manifest.clone())?;
    let modules_content = content
        .get("modulesContent")
        .and_then(Json::as_object)
        .ok_or(not_a_manifest)?;
    fields::note_unknown_keys(top, &["content"], "", context);
    fields::note_unknown_keys(content, &["modulesContent"], "content", context);
    Ok(modules_content)
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `modulesContent.<key>["properties.desired"]`, when `key` is present.
fn desired<'a>(
    modules_content: &'a Map<String, Json>,
    key: &str,
) -> Result<Option<&'a Map<String, Json>>, ImportError> {
    optional_object(modules_content, key, "")?
        .map(|twin| required_object(twin, "properties.desired", key))
        .transpose()
}

/// A module's desired properties, noting any other key of its twin entry (such as the
/// `properties.desired.…` paths of layered deployments).
fn module_twin<'a>(
    modules_content: &'a Map<String, Json>,
    module: &str,
    context: &mut Context,
) -> Result<Option<&'a Map<String, Json>>, ImportError> {
    let Some(twin) = optional_object(modules_content, module, "")? else {
        return Ok(None);
    };
    fields::note_unknown_keys(twin, &["properties.desired"], module, context);
    optional_object(twin, "properties.desired", module)
}

/// The deployment's name: the file name without `.json`, as an identifier.
fn deployment_name(file_name: &str) -> String {
    let stem = file_name.strip_suffix(".json").unwrap_or(file_name);
    let mut name: String = stem
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || character == '_' || character == '-' {
                character
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|first: char| first.is_ascii_alphabetic() || first == '_') {
        name.insert(0, '_');
    }
    if matches!(name.as_str(), "true" | "false" | "null") {
        name.push('_');
    }
    name
}

/// The opening comment, the parameters the placeholders need, and the hardware profile.
fn header(file_name: &str, modules: &Map<String, Json>, context: &mut Context) -> String {
    let architecture = architecture(modules, context);
    let mut lines = Lines::default();
    let file_name: String = file_name.chars().filter(|c| !c.is_control()).collect();
    lines.line(format!("// Imported by `edgec import` from {file_name}."));
    for note in &context.notes {
        lines.line(format!("// Note: {note}"));
    }
    if !context.parameters.is_empty() {
        lines.blank();
        lines.line("// The template's placeholders: give each a value with `--set NAME=VALUE`.");
        for parameter in &context.parameters {
            lines.line(format!("param {parameter}: string"));
        }
    }
    lines.blank();
    lines.line("// A deployment manifest does not say which devices it is for. Describe them here");
    lines.line("// (arch, cpus, memory, storage, security) so `edgec check` can hold the modules");
    lines.line("// against them; the architecture was inferred from the image tags.");
    lines.open(format!("hardware {HARDWARE}"));
    lines.line(format!("arch = {architecture}"));
    lines.line(format!("compatible = {}", text::quoted(HARDWARE)));
    lines.close();
    lines.into_text()
}

/// The architecture the module images' tags agree on (`…-arm32v7`, `…-arm64v8`, `…-amd64`),
/// read the way the checker reads them; amd64 when no tag says, or when tags disagree (noted).
fn architecture(modules: &Map<String, Json>, context: &mut Context) -> &'static str {
    let mut found: Vec<&'static str> = modules
        .values()
        .filter_map(|entry| entry.pointer("/settings/image")?.as_str())
        .filter_map(tag_architecture)
        .collect();
    found.sort_unstable();
    found.dedup();
    match found.as_slice() {
        [] => "amd64",
        [single] => single,
        _ => {
            context.notes.push(Note::MixedArchitectures {
                architectures: found,
            });
            "amd64"
        }
    }
}

/// The architecture a module's image tag names. A reference that does not parse, such as a
/// template's `${MODULES.filter}` or `$REGISTRY/filter:1.0`, names none.
fn tag_architecture(reference: &str) -> Option<&'static str> {
    let reference = image_reference::parse(reference).ok()?;
    image_reference::architecture_from_tag(&reference).map(Architecture::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names_come_from_file_names() {
        assert_eq!(
            deployment_name("deployment.template.json"),
            "deployment_template"
        );
        assert_eq!(deployment_name("2024-fleet.json"), "_2024-fleet");
        assert_eq!(deployment_name("null.json"), "null_");
    }

    #[test]
    fn architectures_come_from_tags_of_references_that_parse() {
        assert_eq!(
            tag_architecture("reg:5000/m:1.0-linux-arm32v7"),
            Some("arm32v7")
        );
        assert_eq!(tag_architecture("m:1.0-arm64v8"), Some("arm64"));
        assert_eq!(tag_architecture("m:1.0"), None);
        assert_eq!(tag_architecture("$REGISTRY/m:1.0-arm64v8"), None);
    }
}
