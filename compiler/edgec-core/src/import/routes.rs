//! `$edgeHub` routes: kept verbatim as raw strings, and read (with the same route parser the
//! checker uses) for the inputs and outputs the modules must declare.

use std::collections::BTreeMap;

use edge_route::{Sink, SourceKind};
use serde_json::{Map, Value as Json};

use super::error::ImportError;
use super::fields::{malformed, note_unknown_keys, optional_integer, path};
use super::lines::Lines;
use super::modules::Endpoints;
use super::text::{Context, duration, name, raw_string};

const ROUTE_KEYS: &[&str] = &["route", "priority", "timeToLiveSecs"];

/// One route: its text and, in the object form, its priority and time to live.
#[derive(Debug)]
pub struct RouteEntry<'a> {
    pub name: &'a str,
    pub text: &'a str,
    pub priority: Option<u64>,
    pub time_to_live_seconds: Option<u64>,
}

/// The routes of `$edgeHub`, in manifest order.
pub fn routes<'a>(
    hub: Option<&'a Map<String, Json>>,
    context: &mut Context,
) -> Result<Vec<RouteEntry<'a>>, ImportError> {
    let Some(routes) = hub.and_then(|hub| hub.get("routes")) else {
        return Ok(Vec::new());
    };
    let routes = routes
        .as_object()
        .ok_or_else(|| malformed("$edgeHub", "routes", "an object"))?;
    let at = "$edgeHub.routes";
    routes
        .iter()
        .map(|(route_name, route)| match route {
            Json::String(text) => Ok(RouteEntry {
                name: route_name,
                text,
                priority: None,
                time_to_live_seconds: None,
            }),
            Json::Object(object) => {
                let route_at = path(at, route_name);
                note_unknown_keys(object, ROUTE_KEYS, &route_at, context);
                let text = object
                    .get("route")
                    .and_then(Json::as_str)
                    .ok_or_else(|| malformed(&route_at, "route", "a string"))?;
                Ok(RouteEntry {
                    name: route_name,
                    text,
                    priority: optional_integer(
                        object,
                        "priority",
                        &route_at,
                        (0, 9),
                        "an integer from 0 to 9",
                    )?,
                    time_to_live_seconds: optional_integer(
                        object,
                        "timeToLiveSecs",
                        &route_at,
                        (0, u64::MAX),
                        "a whole number of seconds",
                    )?,
                })
            }
            _ => Err(malformed(at, route_name, "a route string or object")),
        })
        .collect()
}

/// `route NAME = r"…" { priority = N, ttl = D }`.
pub fn write(route: &RouteEntry<'_>, lines: &mut Lines) {
    let mut attributes = Vec::new();
    if let Some(priority) = route.priority {
        attributes.push(format!("priority = {priority}"));
    }
    if let Some(seconds) = route.time_to_live_seconds {
        attributes.push(format!("ttl = {}", duration(seconds)));
    }
    let head = format!("route {} = {}", name(route.name), raw_string(route.text));
    if attributes.is_empty() {
        lines.line(head);
    } else {
        lines.line(format!("{head} {{ {} }}", attributes.join(", ")));
    }
}

/// The outputs routes read from (`/messages/modules/M/outputs/O`; a wildcard output declares
/// nothing) and the inputs they deliver to (`BrokeredEndpoint("/modules/M/inputs/I")`), per
/// deployed module. The hub matches sources ignoring case and sinks exactly, and so does this.
pub fn endpoints<'m>(
    routes: &[RouteEntry<'_>],
    modules: &[&'m String],
) -> BTreeMap<&'m str, Endpoints> {
    let mut endpoints: BTreeMap<&str, Endpoints> = BTreeMap::new();
    for route in routes {
        let Ok(parsed) = edge_route::parse_route(route.text) else {
            continue;
        };
        if let SourceKind::ModuleOutput {
            module: Some(source),
            output: Some(output),
        } = &parsed.source.path.kind
            && let Some(module) = modules
                .iter()
                .find(|module| module.eq_ignore_ascii_case(source))
        {
            let outputs = &mut endpoints.entry(module.as_str()).or_default().outputs;
            if !outputs
                .iter()
                .any(|known| known.eq_ignore_ascii_case(output))
            {
                outputs.push(output.clone());
            }
        }
        if let Sink::ModuleInput {
            module: target,
            input,
        } = &parsed.sink.sink
            && let Some(module) = modules.iter().find(|module| **module == target)
        {
            let inputs = &mut endpoints.entry(module.as_str()).or_default().inputs;
            if !inputs.contains(input) {
                inputs.push(input.clone());
            }
        }
    }
    endpoints
}
