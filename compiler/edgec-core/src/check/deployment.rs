//! Deployments: target, version, modules, system module settings, registries and routes; then
//! the whole-deployment checks (startup order, architecture, memory).

use std::collections::BTreeMap;

use super::context::Checker;
use super::model::*;
use super::reader::{BlockReader, malformed};
use super::types::Bounds;
use super::{Definition, routes, startup, system_modules};
use crate::diagnostic::{Diagnostic, DiagnosticKind, LabelRole};
use crate::span::{FileId, Location};
use crate::suggest::closest;
use crate::syntax::ast::{Entry, ValueKind};

const ATTRIBUTES: &[&str] = &["target", "version", "modules", "edge_agent", "edge_hub"];
const REPEATABLE: &[&str] = &["route", "registry"];
const ROUTE_ATTRIBUTES: &[&str] = &["priority", "ttl"];
const REGISTRY_ATTRIBUTES: &[&str] = &["address", "username", "password"];

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
            checker.diagnostics.push(
                Diagnostic::new(
                    DiagnosticKind::ListedTwice {
                        list: "the deployment's modules",
                        name: module.clone(),
                    },
                    *location,
                )
                .with_label(first, LabelRole::FirstListed),
            );
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
    let agent_block = reader.block(checker, "edge_agent");
    let edge_agent = system_modules::edge_agent(checker, file, agent_block);
    let hub_block = reader.block(checker, "edge_hub");
    let edge_hub = system_modules::edge_hub(checker, file, hub_block);
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
        edge_agent,
        edge_hub,
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
    {
        let [variable] = arguments.as_slice() else {
            checker.report(
                DiagnosticKind::TypeMismatch {
                    expected: "one environment variable name: `env(\"NAME\")`".into(),
                    found: format!("{} arguments", arguments.len()),
                },
                file,
                value.span,
            );
            return None;
        };
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
    let text = checker.string(file, value);
    let (mut priority, mut time_to_live_seconds, mut attributes_valid) = (None, None, true);
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
            let bounds = Bounds {
                low: Some(0.0),
                high: Some(9.0),
            };
            priority = checker.integer(file, value, "route priority", bounds);
            attributes_valid &= priority.is_some();
        }
        if let Some(value) = reader.value(checker, "ttl") {
            time_to_live_seconds = checker.duration(file, value);
            attributes_valid &= time_to_live_seconds.is_some();
        }
    }
    // Both attributes are checked before giving up, so one run reports both problems.
    let text = text.filter(|_| attributes_valid)?;
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
