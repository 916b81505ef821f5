//! Routes inside a deployment: the route language's own checks, then the names a route uses
//! against the deployment's modules, outputs and inputs, and outputs or inputs no route touches.
//!
//! Route texts are parsed by `edge-route`, the same library the device runtime evaluates them
//! with, so a route means the same thing at compile time and on the device. Its spans are offsets
//! into the route text; [`route_text_span`] maps them back into the `.edge` file, through escapes.

use std::collections::BTreeMap;
use std::ops::Range;

use edge_route::{BodySchema, ParsedRoute, RouteError, Sink, SourceKind, SourceSchema};

use super::Definition;
use super::context::Checker;
use super::model::{Module, Route};
use super::types::Type;
use crate::diagnostic::{Diagnostic, DiagnosticKind, LabelRole};
use crate::span::{Location, Span};
use crate::suggest::closest;
use crate::syntax::ast::{Entry, ValueKind};

/// What a deployment's routes are checked against.
pub struct RouteScope<'s> {
    pub deployment: &'s str,
    /// The models of the deployment's modules (those whose definitions checked).
    pub deployed: &'s [&'s Module],
    /// The names in the deployment's `modules` list.
    pub deployment_modules: &'s [String],
    pub known_modules: &'s BTreeMap<String, Definition<'s>>,
}

pub fn check_routes(
    checker: &mut Checker<'_>,
    scope: &RouteScope<'_>,
    routes: &[(&Entry, &Route)],
) {
    let mut parsed_routes = Vec::new();
    for (entry, route) in routes {
        let file = route.location.file;
        let map = |range: Range<usize>| Location::new(file, route_text_span(entry, range));
        let report = |checker: &mut Checker<'_>, error: RouteError| {
            let mut diagnostic = Diagnostic::new(
                DiagnosticKind::Route(error.clone()),
                map(error.span.clone()),
            );
            if let Some(related) = error.secondary_span.clone() {
                diagnostic = diagnostic.with_label(map(related), LabelRole::RouteRelated);
            }
            checker.diagnostics.push(diagnostic);
        };
        let parsed = match edge_route::parse_route(&route.text) {
            Ok(parsed) => parsed,
            Err(error) => {
                report(checker, error);
                continue;
            }
        };
        if let Some(condition) = &parsed.condition
            && let Err(errors) = edge_route::compile_condition(condition, &parsed.source.path.kind)
        {
            errors.into_iter().for_each(|error| report(checker, error));
        }
        let source_schema = source_schema(scope, &parsed);
        for error in edge_route::check_route(&parsed, source_schema.as_ref()) {
            report(checker, error);
        }
        check_source(checker, scope, &parsed, &map);
        check_sink(checker, scope, &parsed, &route.text, &map);
        parsed_routes.push(parsed);
    }
    check_coverage(checker, scope, &parsed_routes);
}

/// What is declared about the messages a route reads: known only when the route names one output
/// of one module and that output declares a schema.
fn source_schema(scope: &RouteScope<'_>, parsed: &ParsedRoute) -> Option<SourceSchema> {
    let SourceKind::ModuleOutput {
        module: Some(module),
        output: Some(output),
    } = &parsed.source.path.kind
    else {
        return None;
    };
    let module = find_module(scope.deployed, module, false)?;
    let (_, declared) = module
        .outputs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(output))?;
    match declared.schema.as_ref()? {
        Type::Binary => Some(SourceSchema {
            is_json: false,
            body: None,
        }),
        schema => Some(SourceSchema {
            is_json: true,
            body: Some(body_schema(schema)),
        }),
    }
}

/// The route library's view of a declared type: only the shape matters for `$body` paths.
fn body_schema(declared: &Type) -> BodySchema {
    match declared {
        Type::String { .. } => BodySchema::String,
        Type::Integer(_) | Type::Float(_) | Type::Size(_) | Type::Duration(_) => BodySchema::Number,
        Type::Bool => BodySchema::Bool,
        Type::List(element) => BodySchema::Array(Box::new(body_schema(element))),
        Type::Object(fields) => BodySchema::Object(
            fields
                .iter()
                .map(|field| (field.name.clone(), body_schema(&field.field_type)))
                .collect(),
        ),
        Type::OneOf(options) if options.iter().all(serde_json::Value::is_string) => {
            BodySchema::String
        }
        Type::OneOf(options) if options.iter().all(serde_json::Value::is_number) => {
            BodySchema::Number
        }
        Type::Optional(inner) => body_schema(inner),
        Type::OneOf(_) | Type::Any | Type::Binary => BodySchema::Any,
    }
}

/// The `.edge` span of `range` within the route text of `entry`'s string literal.
fn route_text_span(entry: &Entry, range: Range<usize>) -> Span {
    let Some(value) = &entry.value else {
        return entry.span;
    };
    match &value.kind {
        ValueKind::String(literal) => match literal.plain_part() {
            Some(part) => {
                let start = part.source_offset(range.start);
                let end = part.source_offset(range.end).max(start);
                Span { start, end }
            }
            None => value.span,
        },
        _ => value.span,
    }
}

fn find_module<'m>(
    deployed: &[&'m Module],
    name: &str,
    case_sensitive: bool,
) -> Option<&'m Module> {
    deployed.iter().copied().find(|module| {
        if case_sensitive {
            module.name == name
        } else {
            module.name.eq_ignore_ascii_case(name)
        }
    })
}

/// Reports a module name that is unknown, or known but not in this deployment.
fn check_module_name(
    checker: &mut Checker<'_>,
    scope: &RouteScope<'_>,
    name: &str,
    location: Location,
    case_sensitive: bool,
) {
    // A deployed module whose own definition had errors has no model; it was reported already.
    // Sources match module names ignoring case, as the hub does; sinks must match exactly.
    let same = |deployed: &String| {
        if case_sensitive {
            deployed == name
        } else {
            deployed.eq_ignore_ascii_case(name)
        }
    };
    if scope.deployment_modules.iter().any(same) {
        return;
    }
    let known = scope.known_modules.keys().any(same);
    let kind = if known {
        DiagnosticKind::RouteModuleNotDeployed {
            module: name.to_owned(),
            deployment: scope.deployment.to_owned(),
        }
    } else {
        let suggestion = closest(
            name,
            scope.deployed.iter().map(|module| module.name.as_str()),
        );
        DiagnosticKind::RouteUnknownModule {
            module: name.to_owned(),
            suggestion,
        }
    };
    checker.report(kind, location.file, location.span);
}

fn check_source(
    checker: &mut Checker<'_>,
    scope: &RouteScope<'_>,
    parsed: &ParsedRoute,
    map: &dyn Fn(Range<usize>) -> Location,
) {
    let SourceKind::ModuleOutput {
        module: Some(module_name),
        output,
    } = &parsed.source.path.kind
    else {
        return;
    };
    let path_start = parsed.source.span.start;
    let written = &parsed.source.path.written;
    let segment = |index: usize| {
        segment_range(written, index).map(|range| range.start + path_start..range.end + path_start)
    };
    let module_location = map(segment(3).unwrap_or(parsed.source.span.clone()));
    // Sources match case-insensitively on the hub, so module and output names do too.
    let Some(module) = find_module(scope.deployed, module_name, false) else {
        check_module_name(checker, scope, module_name, module_location, false);
        return;
    };
    if let Some(output) = output
        && !module
            .outputs
            .keys()
            .any(|declared| declared.eq_ignore_ascii_case(output))
    {
        let location = map(segment(5).unwrap_or(parsed.source.span.clone()));
        let suggestion = closest(output, module.outputs.keys().map(String::as_str));
        checker.report(
            DiagnosticKind::RouteUnknownOutput {
                module: module.name.clone(),
                output: output.clone(),
                suggestion,
            },
            location.file,
            location.span,
        );
    }
}

fn check_sink(
    checker: &mut Checker<'_>,
    scope: &RouteScope<'_>,
    parsed: &ParsedRoute,
    text: &str,
    map: &dyn Fn(Range<usize>) -> Location,
) {
    let Sink::ModuleInput {
        module: module_name,
        input,
    } = &parsed.sink.sink
    else {
        return;
    };
    let address = parsed
        .sink
        .address_span
        .clone()
        .unwrap_or(parsed.sink.span.clone());
    // The address span includes its quotes; segments are counted inside them.
    let inner = address.start + 1..address.end.saturating_sub(1).max(address.start + 1);
    let address_text = text.get(inner.clone()).unwrap_or_default();
    let segment = |index: usize| {
        segment_range(address_text, index)
            .map(|range| range.start + inner.start..range.end + inner.start)
            .unwrap_or(address.clone())
    };
    let Some(module) = find_module(scope.deployed, module_name, true) else {
        check_module_name(checker, scope, module_name, map(segment(2)), true);
        return;
    };
    if !module.inputs.contains_key(input) {
        let location = map(segment(4));
        let suggestion = closest(input, module.inputs.keys().map(String::as_str));
        checker.report(
            DiagnosticKind::RouteUnknownInput {
                module: module.name.clone(),
                input: input.clone(),
                suggestion,
            },
            location.file,
            location.span,
        );
    }
}

/// The byte range of the `index`-th `/`-separated segment of `path` (`/a/b`: segment 1 is `a`).
fn segment_range(path: &str, index: usize) -> Option<Range<usize>> {
    let mut start = 0;
    for (position, segment) in path.split('/').enumerate() {
        if position == index {
            return Some(start..start + segment.len());
        }
        start += segment.len() + 1;
    }
    None
}

fn check_coverage(checker: &mut Checker<'_>, scope: &RouteScope<'_>, routes: &[ParsedRoute]) {
    let deployment = scope.deployment;
    for module in scope.deployed {
        for (output, declared) in &module.outputs {
            let source = format!("/messages/modules/{}/outputs/{output}", module.name);
            if !routes
                .iter()
                .any(|route| route.source.path.matches(&source))
            {
                checker.report(
                    DiagnosticKind::OutputNeverRouted {
                        module: module.name.clone(),
                        output: output.clone(),
                        deployment: deployment.to_owned(),
                    },
                    declared.location.file,
                    declared.location.span,
                );
            }
        }
        for (input, declared) in &module.inputs {
            let fed = routes.iter().any(|route| {
                matches!(&route.sink.sink, Sink::ModuleInput { module: target, input: target_input }
                    if *target == module.name && target_input == input)
            });
            if !fed {
                checker.report(
                    DiagnosticKind::InputNeverFed {
                        module: module.name.clone(),
                        input: input.clone(),
                        deployment: deployment.to_owned(),
                    },
                    declared.file,
                    declared.span,
                );
            }
        }
    }
}
