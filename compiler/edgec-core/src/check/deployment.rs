//! Deployments: target, version, modules, system module settings, registries and routes; then
//! the whole-deployment checks (startup order, architecture, memory).

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::context::Checker;
use super::model::*;
use super::reader::{BlockReader, malformed};
use super::types::Bounds;
use super::{Definition, routes, startup};
use crate::diagnostic::{Diagnostic, DiagnosticKind, LabelRole};
use crate::span::{FileId, Location};
use crate::suggest::closest;
use crate::syntax::ast::{Entry, ValueKind};

const ATTRIBUTES: &[&str] = &["target", "version", "modules", "edge_agent", "edge_hub"];
const REPEATABLE: &[&str] = &["route", "registry"];
const AGENT_ATTRIBUTES: &[&str] = &["schema_version", "image", "create_options"];
const HUB_ATTRIBUTES: &[&str] = &[
    "schema_version",
    "image",
    "create_options",
    "store_and_forward_ttl",
];
const ROUTE_ATTRIBUTES: &[&str] = &["priority", "ttl"];
const REGISTRY_ATTRIBUTES: &[&str] = &["address", "username", "password"];

pub const DEFAULT_AGENT_IMAGE: &str = "mcr.microsoft.com/azureiotedge-agent:1.5";
pub const DEFAULT_HUB_IMAGE: &str = "mcr.microsoft.com/azureiotedge-hub:1.5";
/// IoT Edge's own default for how long the hub keeps undelivered messages.
pub const DEFAULT_STORE_AND_FORWARD_SECONDS: u64 = 7200;

pub fn check<'a>(
    checker: &mut Checker<'a>,
    name: &str,
    definition: &Definition<'a>,
    program: &Program,
    known_modules: &BTreeMap<String, Definition<'a>>,
) -> Option<Deployment> {
    let block = definition.entry.block.as_ref()?;
    let file = definition.file;
    let reader = BlockReader::new(
        checker,
        file,
        "a deployment",
        definition.name_span,
        block,
        ATTRIBUTES,
        REPEATABLE,
    );

    let target_value = reader.required_value(checker, "target");
    let target = target_value.and_then(|value| hardware_reference(checker, file, value, program));
    let version = reader.required_value(checker, "version").and_then(|value| {
        checker.integer(
            file,
            value,
            "deployment version",
            Bounds {
                low: Some(1.0),
                high: None,
            },
        )
    });
    let modules_value = reader.required_value(checker, "modules");
    let module_names = modules_value
        .and_then(|value| checker.names(file, value))
        .unwrap_or_default();
    let mut modules: Vec<String> = Vec::new();
    let mut sites: BTreeMap<&str, Location> = BTreeMap::new();
    for (module, location) in &module_names {
        if let Some(first) = sites.insert(module, *location) {
            checker.report_duplicate("module in this deployment", module, *location, first);
        } else if known_modules.contains_key(module) {
            modules.push(module.clone());
        } else {
            let suggestion = closest(module, known_modules.keys().map(String::as_str));
            checker.report(
                DiagnosticKind::UnknownName {
                    namespace: "module",
                    name: module.clone(),
                    suggestion,
                },
                location.file,
                location.span,
            );
        }
    }
    let edge_agent = system_module(
        checker,
        &reader,
        "edge_agent",
        "`edge_agent`",
        AGENT_ATTRIBUTES,
        &["1.0", "1.1"],
        "1.1",
        DEFAULT_AGENT_IMAGE,
    );
    let edge_hub = system_module(
        checker,
        &reader,
        "edge_hub",
        "`edge_hub`",
        HUB_ATTRIBUTES,
        &["1.0", "1.1", "1.2"],
        "1.2",
        DEFAULT_HUB_IMAGE,
    );
    let store_and_forward = reader
        .block(checker, "edge_hub")
        .and_then(|block| {
            block
                .entries
                .iter()
                .find(|entry| entry.key.name == "store_and_forward_ttl")
        })
        .and_then(|entry| entry.value.as_ref())
        .map_or(Some(DEFAULT_STORE_AND_FORWARD_SECONDS), |value| {
            checker.duration(file, value)
        });
    let registries = reader
        .repeated("registry")
        .iter()
        .filter_map(|entry| registry(checker, file, entry))
        .collect();
    let route_entries = reader.repeated("route");
    let mut route_list = Vec::new();
    let mut route_sites: BTreeMap<&str, Location> = BTreeMap::new();
    for entry in route_entries {
        let Some(route) = route(checker, file, entry) else {
            continue;
        };
        if let Some(first) = route_sites.get(route.name.as_str()) {
            checker.report_duplicate("route", &route.name, route.location, *first);
            continue;
        }
        route_sites.insert(&entry.label.as_ref()?.name, route.location);
        route_list.push(route);
    }

    let deployed: Vec<&Module> = modules
        .iter()
        .filter_map(|module| program.modules.get(module))
        .collect();
    let startup_orders = startup::startup_orders(checker, name, &deployed, &modules);
    let scope = routes::RouteScope {
        deployment: name,
        deployed: &deployed,
        deployment_modules: &modules,
        known_modules,
    };
    routes::check_routes(
        checker,
        &scope,
        &route_entries_with_routes(route_entries, &route_list),
    );
    if let (Some(hardware), Some(modules_value)) = (
        target
            .as_ref()
            .and_then(|target| program.hardware.get(target)),
        modules_value,
    ) {
        check_against_hardware(
            checker,
            name,
            hardware,
            &deployed,
            Location::new(file, modules_value.span),
        );
    }

    Some(Deployment {
        name: name.to_owned(),
        target: target?,
        version: version?,
        modules,
        startup_orders,
        routes: route_list,
        edge_agent: edge_agent?,
        edge_hub: edge_hub?,
        store_and_forward_time_to_live_seconds: store_and_forward?,
        registries,
        location: definition.location(),
    })
}

/// Pairs each checked route with the string literal it came from, for span mapping.
fn route_entries_with_routes<'r, 'a>(
    entries: &[&'a Entry],
    routes: &'r [Route],
) -> Vec<(&'a Entry, &'r Route)> {
    routes
        .iter()
        .filter_map(|route| {
            entries
                .iter()
                .find(|entry| {
                    entry
                        .label
                        .as_ref()
                        .is_some_and(|label| label.name == route.name)
                })
                .map(|entry| (*entry, route))
        })
        .collect()
}

fn hardware_reference<'a>(
    checker: &mut Checker<'a>,
    file: FileId,
    value: &'a crate::syntax::ast::Value,
    program: &Program,
) -> Option<String> {
    let (name, span) = match &value.kind {
        ValueKind::Reference(key) => (key.name.clone(), key.span),
        _ => (checker.string(file, value)?, value.span),
    };
    if program.hardware.contains_key(&name) {
        return Some(name);
    }
    let suggestion = closest(&name, program.hardware.keys().map(String::as_str));
    checker.report(
        DiagnosticKind::UnknownName {
            namespace: "hardware profile",
            name,
            suggestion,
        },
        file,
        span,
    );
    None
}

#[allow(clippy::too_many_arguments)]
fn system_module<'a>(
    checker: &mut Checker<'a>,
    reader: &BlockReader<'a>,
    attribute: &str,
    description: &'static str,
    attributes: &'static [&'static str],
    schema_versions: &'static [&'static str],
    default_schema_version: &str,
    default_image: &str,
) -> Option<SystemModuleSettings> {
    let file = reader.file;
    let Some(block) = reader.block(checker, attribute) else {
        return Some(SystemModuleSettings {
            schema_version: default_schema_version.to_owned(),
            image: default_image.to_owned(),
            create_options: default_create_options(attribute),
        });
    };
    let anchor = crate::span::Span {
        start: block.span.start,
        end: block.span.start + 1,
    };
    let settings = BlockReader::new(checker, file, description, anchor, block, attributes, &[]);
    let schema_version = match settings.value(checker, "schema_version") {
        Some(value) => checker
            .keyword(file, value, "schema version", schema_versions)?
            .to_owned(),
        None => default_schema_version.to_owned(),
    };
    let image = match settings.value(checker, "image") {
        Some(value) => checker.string(file, value)?,
        None => default_image.to_owned(),
    };
    let create_options = match settings.block(checker, "create_options") {
        Some(block) => checker.json_object(file, block)?,
        None => default_create_options(attribute),
    };
    Some(SystemModuleSettings {
        schema_version,
        image,
        create_options,
    })
}

/// The hub publishes AMQP, MQTT and HTTPS to leaf devices by default, as IoT Edge's templates do.
fn default_create_options(system_module: &str) -> Json {
    if system_module == "edge_hub" {
        json!({"HostConfig": {"PortBindings": {
            "443/tcp": [{"HostPort": "443"}],
            "5671/tcp": [{"HostPort": "5671"}],
            "8883/tcp": [{"HostPort": "8883"}],
        }}})
    } else {
        json!({})
    }
}

fn registry<'a>(checker: &mut Checker<'a>, file: FileId, entry: &'a Entry) -> Option<Registry> {
    let (Some(label), Some(block), None) = (&entry.label, &entry.block, &entry.value) else {
        malformed(
            checker,
            file,
            entry,
            "registry name { address = …, username = …, password = env(\"…\") }",
        );
        return None;
    };
    let reader = BlockReader::new(
        checker,
        file,
        "a registry",
        label.span,
        block,
        REGISTRY_ATTRIBUTES,
        &[],
    );
    let address = reader
        .required_value(checker, "address")
        .and_then(|value| checker.string(file, value));
    let username = reader
        .required_value(checker, "username")
        .and_then(|value| credential(checker, file, value, "username", false));
    let password = reader
        .required_value(checker, "password")
        .and_then(|value| credential(checker, file, value, "password", true));
    Some(Registry {
        name: label.name.clone(),
        address: address?,
        username: username?,
        password: password?,
    })
}

/// `env("NAME")`, or (for what is not secret) a string.
fn credential<'a>(
    checker: &mut Checker<'a>,
    file: FileId,
    value: &'a crate::syntax::ast::Value,
    field: &'static str,
    secret: bool,
) -> Option<Credential> {
    if let ValueKind::Call {
        function,
        arguments,
    } = &value.kind
        && function.name == "env"
        && let [variable] = arguments.as_slice()
    {
        return checker.string(file, variable).map(Credential::Environment);
    }
    if secret {
        checker.report(DiagnosticKind::InlineSecret { field }, file, value.span);
        return None;
    }
    checker.string(file, value).map(Credential::Literal)
}

fn route<'a>(checker: &mut Checker<'a>, file: FileId, entry: &'a Entry) -> Option<Route> {
    let (Some(label), Some(value), None) = (&entry.label, &entry.value, &entry.type_annotation)
    else {
        malformed(
            checker,
            file,
            entry,
            "route name = \"FROM … INTO …\" { priority = 0, ttl = 1h }",
        );
        return None;
    };
    let text = checker.string(file, value)?;
    let (mut priority, mut time_to_live_seconds) = (None, None);
    if let Some(block) = &entry.block {
        let reader = BlockReader::new(
            checker,
            file,
            "a route",
            label.span,
            block,
            ROUTE_ATTRIBUTES,
            &[],
        );
        if let Some(value) = reader.value(checker, "priority") {
            priority = Some(checker.integer(
                file,
                value,
                "route priority",
                Bounds {
                    low: Some(0.0),
                    high: Some(9.0),
                },
            )?);
        }
        if let Some(value) = reader.value(checker, "ttl") {
            time_to_live_seconds = Some(checker.duration(file, value)?);
        }
    }
    Some(Route {
        name: label.name.clone(),
        text,
        priority,
        time_to_live_seconds,
        location: Location::new(file, label.span),
    })
}

fn check_against_hardware(
    checker: &mut Checker<'_>,
    deployment: &str,
    hardware: &HardwareProfile,
    modules: &[&Module],
    modules_location: Location,
) {
    for module in modules {
        if let Some((architecture, location)) = module.image_architecture
            && architecture != hardware.architecture
        {
            checker.diagnostics.push(
                Diagnostic::new(
                    DiagnosticKind::ArchitectureMismatch {
                        module: module.name.clone(),
                        image_architecture: architecture.name().to_owned(),
                        hardware: hardware.name.clone(),
                        hardware_architecture: hardware.architecture.name().to_owned(),
                    },
                    location,
                )
                .with_label(
                    hardware.architecture_location,
                    LabelRole::HardwareArchitecture,
                ),
            );
        }
    }
    let Some(available) = hardware.memory else {
        return;
    };
    let total: u64 = modules
        .iter()
        .filter_map(|module| module.memory_limit.map(|(bytes, _)| bytes))
        .sum();
    if total > available {
        let mut diagnostic = Diagnostic::new(
            DiagnosticKind::MemoryOvercommit {
                deployment: deployment.to_owned(),
                total,
                available,
            },
            modules_location,
        );
        for module in modules {
            if let Some((bytes, location)) = module.memory_limit {
                diagnostic = diagnostic.with_label(
                    location,
                    LabelRole::MemoryLimit {
                        module: module.name.clone(),
                        bytes,
                    },
                );
            }
        }
        if let Some(location) = hardware.memory_location {
            diagnostic = diagnostic.with_label(location, LabelRole::HardwareMemory);
        }
        checker.diagnostics.push(diagnostic);
    }
}
