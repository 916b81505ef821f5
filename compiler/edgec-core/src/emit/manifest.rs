//! Azure IoT Edge deployment manifests (`modulesContent` with `$edgeAgent`, `$edgeHub` and each
//! module's twin), as IoT Edge's own tooling expects them.
//!
//! The emitter is pure: registry passwords arrive already read from the build environment, so
//! nothing here looks at the process environment. Objects are `serde_json::Map`s built in sorted
//! order and serialized by the canonical writer, so the output never depends on insertion order.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json, json};

use crate::check::model::{
    Credential, Deployment, DesiredStatus, Module, Program, PullPolicy, RestartPolicy, Route,
};

/// IoT Edge splits `createOptions` into fields of at most this many characters.
pub const CREATE_OPTIONS_CHUNK: usize = 512;
/// `createOptions` plus `createOptions01` … `createOptions99`.
pub const MAXIMUM_CREATE_OPTIONS_CHUNKS: usize = 100;

/// Why a manifest could not be emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitError {
    /// A credential names an environment variable that the caller could not supply.
    MissingCredential { registry: String, variable: String },
    /// The create options of a module are longer than 100 chunks of 512 characters.
    CreateOptionsTooLong { module: String, characters: usize },
}

/// Emits the manifest of one deployment. `environment` resolves `env("NAME")` credentials.
pub fn deployment_manifest(
    program: &Program,
    deployment: &Deployment,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Json, EmitError> {
    let modules: Vec<&Module> = deployment
        .modules
        .iter()
        .filter_map(|name| program.modules.get(name))
        .collect();
    let mut modules_content = Map::new();
    modules_content.insert(
        "$edgeAgent".into(),
        json!({ "properties.desired": edge_agent(deployment, &modules, environment)? }),
    );
    modules_content.insert(
        "$edgeHub".into(),
        json!({ "properties.desired": edge_hub(deployment) }),
    );
    for module in &modules {
        modules_content.insert(
            module.name.clone(),
            json!({ "properties.desired": Json::Object(module.desired_properties.clone()) }),
        );
    }
    Ok(json!({ "modulesContent": Json::Object(modules_content) }))
}

/// Wraps a manifest for at-scale and layered deployments: `{"content": {"modulesContent": …}}`.
pub fn at_scale(manifest: Json) -> Json {
    json!({ "content": manifest })
}

fn edge_agent(
    deployment: &Deployment,
    modules: &[&Module],
    environment: &dyn Fn(&str) -> Option<String>,
) -> Result<Json, EmitError> {
    let mut registry_credentials = Map::new();
    for registry in &deployment.registries {
        let resolve = |credential: &Credential| match credential {
            Credential::Literal(text) => Ok(text.clone()),
            Credential::Environment(variable) => {
                environment(variable).ok_or_else(|| EmitError::MissingCredential {
                    registry: registry.name.clone(),
                    variable: variable.clone(),
                })
            }
        };
        registry_credentials.insert(
            registry.name.clone(),
            json!({
                "address": registry.address,
                "username": resolve(&registry.username)?,
                "password": resolve(&registry.password)?,
            }),
        );
    }
    let agent = &deployment.edge_agent;
    let mut runtime_settings = json!({ "minDockerVersion": agent.min_docker_version });
    if let Some(logging_options) = &agent.logging_options {
        runtime_settings["loggingOptions"] = json!(logging_options);
    }
    if !registry_credentials.is_empty() {
        runtime_settings["registryCredentials"] = Json::Object(registry_credentials);
    }
    let mut emitted_modules = Map::new();
    for module in modules {
        emitted_modules.insert(
            module.name.clone(),
            module_entry(module, deployment.startup_orders.get(&module.name))?,
        );
    }
    Ok(json!({
        "schemaVersion": deployment.edge_agent.schema_version,
        "runtime": { "type": "docker", "settings": runtime_settings },
        "systemModules": {
            "edgeAgent": system_module("edgeAgent", None, &agent.image, &agent.create_options, &agent.env)?,
            "edgeHub": system_module(
                "edgeHub",
                Some(("running", "always")),
                &deployment.edge_hub.image,
                &deployment.edge_hub.create_options,
                &deployment.edge_hub.env,
            )?,
        },
        "modules": Json::Object(emitted_modules),
    }))
}

/// A system module entry; the hub also carries a status and restart policy.
fn system_module(
    name: &str,
    status_and_restart: Option<(&str, &str)>,
    image: &str,
    create_options: &Json,
    env: &BTreeMap<String, Json>,
) -> Result<Json, EmitError> {
    let mut entry = Map::new();
    entry.insert("type".into(), json!("docker"));
    if let Some((status, restart)) = status_and_restart {
        entry.insert("status".into(), json!(status));
        entry.insert("restartPolicy".into(), json!(restart));
    }
    if !env.is_empty() {
        entry.insert("env".into(), environment(env));
    }
    let mut settings = Map::new();
    settings.insert("image".into(), json!(image));
    insert_create_options(&mut settings, name, create_options)?;
    entry.insert("settings".into(), Json::Object(settings));
    Ok(Json::Object(entry))
}

/// `{"NAME": {"value": …}}`, the shape IoT Edge gives environment variables.
fn environment(env: &BTreeMap<String, Json>) -> Json {
    Json::Object(
        env.iter()
            .map(|(name, value)| (name.clone(), json!({ "value": value })))
            .collect(),
    )
}

fn module_entry(module: &Module, startup_order: Option<&u64>) -> Result<Json, EmitError> {
    let mut entry = Map::new();
    if let Some(version) = &module.version {
        entry.insert("version".into(), json!(version));
    }
    entry.insert("type".into(), json!("docker"));
    entry.insert(
        "status".into(),
        json!(match module.status {
            DesiredStatus::Running => "running",
            DesiredStatus::Stopped => "stopped",
        }),
    );
    entry.insert(
        "restartPolicy".into(),
        json!(match module.restart {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::OnUnhealthy => "on-unhealthy",
            RestartPolicy::Always => "always",
        }),
    );
    if let Some(order) = startup_order {
        entry.insert("startupOrder".into(), json!(order));
    }
    if let Some(pull) = module.pull {
        let policy = match pull {
            PullPolicy::OnCreate => "on-create",
            PullPolicy::Never => "never",
        };
        entry.insert("imagePullPolicy".into(), json!(policy));
    }
    if !module.env.is_empty() {
        entry.insert("env".into(), environment(&module.env));
    }
    let mut settings = Map::new();
    settings.insert("image".into(), json!(image_reference(module)));
    insert_create_options(&mut settings, &module.name, &module.create_options)?;
    entry.insert("settings".into(), Json::Object(settings));
    Ok(Json::Object(entry))
}

/// The image reference a device pulls: registry images as written; local images under the name
/// `edgec build` loads them as on the device.
fn image_reference(module: &Module) -> String {
    match &module.image {
        crate::check::model::ImageSource::Registry { reference, .. } => reference.clone(),
        crate::check::model::ImageSource::Local { .. } => local_image_name(module),
    }
}

/// The name a packaged local image is loaded under on the device: the registry host
/// `edgec.local` cannot be pulled from, so the runtime always uses the image the bundle carries.
pub fn local_image_name(module: &Module) -> String {
    format!(
        "edgec.local/{}:{}",
        module.name.to_lowercase(),
        module.version.as_deref().unwrap_or("latest")
    )
}

/// Stringifies create options canonically and splits them into `createOptions`,
/// `createOptions01` … chunks of at most 512 characters, as IoT Edge reassembles them.
fn insert_create_options(
    settings: &mut Map<String, Json>,
    module: &str,
    options: &Json,
) -> Result<(), EmitError> {
    let text = String::from_utf8_lossy(&canonical_json::to_canonical_bytes(options)).into_owned();
    let characters: Vec<char> = text.chars().collect();
    let chunks: Vec<String> = characters
        .chunks(CREATE_OPTIONS_CHUNK)
        .map(|chunk| chunk.iter().collect())
        .collect();
    if chunks.len() > MAXIMUM_CREATE_OPTIONS_CHUNKS {
        return Err(EmitError::CreateOptionsTooLong {
            module: module.to_owned(),
            characters: characters.len(),
        });
    }
    for (index, chunk) in chunks.into_iter().enumerate() {
        let name = if index == 0 {
            "createOptions".to_owned()
        } else {
            format!("createOptions{index:02}")
        };
        settings.insert(name, Json::String(chunk));
    }
    Ok(())
}

fn edge_hub(deployment: &Deployment) -> Json {
    let routes: Map<String, Json> = deployment
        .routes
        .iter()
        .map(|route| (route.name.clone(), route_entry(route)))
        .collect();
    let mut desired = json!({
        "schemaVersion": deployment.edge_hub.schema_version,
        "routes": Json::Object(routes),
    });
    if let Some(seconds) = deployment.edge_hub.store_and_forward_time_to_live_seconds {
        desired["storeAndForwardConfiguration"] = json!({ "timeToLiveSecs": seconds });
    }
    desired
}

/// The plain string form unless the route has a priority or time-to-live, which need the object
/// form of `$edgeHub` schema 1.1 and later.
fn route_entry(route: &Route) -> Json {
    if route.priority.is_none() && route.time_to_live_seconds.is_none() {
        return json!(route.text);
    }
    let mut entry = Map::new();
    entry.insert("route".into(), json!(route.text));
    if let Some(priority) = route.priority {
        entry.insert("priority".into(), json!(priority));
    }
    if let Some(seconds) = route.time_to_live_seconds {
        entry.insert("timeToLiveSecs".into(), json!(seconds));
    }
    Json::Object(entry)
}
