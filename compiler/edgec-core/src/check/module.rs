//! Modules: image, policies, environment, create options, limits, endpoints and twin.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::context::Checker;
use super::model::*;
use super::naming::{is_reserved_module_name, is_valid_module_name};
use super::reader::{BlockReader, malformed};
use super::types::Bounds;
use super::{Definition, ParsedFile, environment, twin};
use crate::diagnostic::DiagnosticKind;
use crate::image_reference;
use crate::span::{FileId, Location};
use crate::syntax::ast::{Value, ValueKind};

const ATTRIBUTES: &[&str] = &[
    "image",
    "platform",
    "version",
    "status",
    "restart",
    "startup_order",
    "after",
    "pull",
    "env",
    "create_options",
    "limits",
    "twin",
];
const REPEATABLE: &[&str] = &["input", "output"];
const LIMIT_ATTRIBUTES: &[&str] = &["memory", "cpus"];
/// Docker's smallest memory limit.
const MINIMUM_MEMORY_LIMIT: u64 = 6 * 1024 * 1024;
/// The largest CPU limit accepted, matching the largest CPU count of a hardware profile.
const MAXIMUM_CPUS: f64 = 1024.0;

/// Checks one module. A module whose attributes have errors still yields a model (with defaults
/// where values were wrong) so that the deployments using it are checked too; only a missing or
/// invalid image drops it. Emitters run only on programs without errors.
pub fn check<'a>(
    checker: &mut Checker<'a>,
    name: &str,
    definition: &Definition<'a>,
    files: &[ParsedFile<'a>],
) -> Option<Module> {
    let block = definition.entry.block.as_ref()?;
    let file = definition.file;
    if is_reserved_module_name(name) {
        checker.report(
            DiagnosticKind::ReservedModuleName {
                name: name.to_owned(),
            },
            file,
            definition.name_span,
        );
    } else if !is_valid_module_name(name) {
        checker.report(
            DiagnosticKind::InvalidModuleName {
                name: name.to_owned(),
            },
            file,
            definition.name_span,
        );
    }
    let reader = BlockReader::new(
        checker,
        file,
        "a module",
        definition.name_span,
        block,
        ATTRIBUTES,
        REPEATABLE,
    );

    let image_value = reader.required_value(checker, "image");
    let declared_in = files
        .iter()
        .find(|parsed| parsed.id == file)
        .map_or("", |parsed| parsed.name);
    let image = image_value.and_then(|value| image_source(checker, file, value, declared_in));
    let image_architecture = match reader.value(checker, "platform") {
        Some(value) => checker
            .keyword(file, value, "architecture", Architecture::NAMES)
            .and_then(Architecture::parse)
            .map(|architecture| (architecture, Location::new(file, value.span))),
        None => match (&image, image_value) {
            (Some(ImageSource::Registry { reference, .. }), Some(value)) => {
                image_reference::parse(reference)
                    .ok()
                    .as_ref()
                    .and_then(image_reference::architecture_from_tag)
                    .map(|architecture| (architecture, Location::new(file, value.span)))
            }
            _ => None,
        },
    };
    let version = reader
        .value(checker, "version")
        .and_then(|value| checker.string(file, value));
    let status = match reader.value(checker, "status") {
        Some(value) => match checker.keyword(file, value, "status", &["running", "stopped"]) {
            Some("stopped") => DesiredStatus::Stopped,
            _ => DesiredStatus::Running,
        },
        None => DesiredStatus::Running,
    };
    let restart = match reader.value(checker, "restart") {
        Some(value) => match checker.keyword(file, value, "restart policy", RestartPolicy::NAMES) {
            Some("never") => RestartPolicy::Never,
            Some("on-failure") => RestartPolicy::OnFailure,
            Some("on-unhealthy") => RestartPolicy::OnUnhealthy,
            _ => RestartPolicy::Always,
        },
        None => RestartPolicy::Always,
    };
    let pull = reader.value(checker, "pull").map(|value| {
        match checker.keyword(file, value, "image pull policy", &["on-create", "never"]) {
            Some("never") => PullPolicy::Never,
            _ => PullPolicy::OnCreate,
        }
    });
    let startup = startup(checker, &reader, name).unwrap_or(StartupSpecification::Unspecified);
    let env = reader
        .block(checker, "env")
        .map(|block| environment::variables(checker, file, block))
        .unwrap_or_default();
    let mut create_options = match reader.block(checker, "create_options") {
        Some(block) => checker.json_object(file, block).unwrap_or_default(),
        None => Json::Object(serde_json::Map::new()),
    };
    let memory_limit = match reader.block(checker, "limits") {
        Some(block) => limits(checker, file, block, &mut create_options).flatten(),
        None => None,
    };
    let (inputs, outputs) = endpoints(checker, &reader);
    let desired_properties = reader
        .block(checker, "twin")
        .map(|block| twin::desired_properties(checker, name, file, block))
        .unwrap_or_default();

    Some(Module {
        name: name.to_owned(),
        image: image?,
        image_architecture,
        version,
        status,
        restart,
        startup,
        pull,
        env,
        create_options,
        memory_limit,
        inputs,
        outputs,
        desired_properties,
        location: definition.location(),
        image_location: Location::new(file, image_value?.span),
    })
}

fn image_source<'a>(
    checker: &mut Checker<'a>,
    file: FileId,
    value: &'a Value,
    declared_in: &str,
) -> Option<ImageSource> {
    if let ValueKind::Call {
        function,
        arguments,
    } = &value.kind
        && function.name == "local"
    {
        let [path] = arguments.as_slice() else {
            checker.report(
                DiagnosticKind::TypeMismatch {
                    expected: "one path: `local(\"./images/name\")`".into(),
                    found: format!("{} arguments", arguments.len()),
                },
                file,
                value.span,
            );
            return None;
        };
        let path = checker.string(file, path)?;
        return Some(ImageSource::Local {
            path,
            declared_in: declared_in.to_owned(),
        });
    }
    let reference = checker.string(file, value)?;
    let parsed = match image_reference::parse(&reference) {
        Ok(parsed) => parsed,
        Err(reason) => {
            checker.report(
                DiagnosticKind::InvalidImageReference { reference, reason },
                file,
                value.span,
            );
            return None;
        }
    };
    let digest = parsed.digest().map(str::to_owned);
    if digest.is_none() {
        // A tag can move: two devices given the same deployment could run different bytes.
        checker.report(
            DiagnosticKind::RegistryImageWithoutDigest {
                reference: reference.clone(),
            },
            file,
            value.span,
        );
    }
    Some(ImageSource::Registry { reference, digest })
}

fn startup<'a>(
    checker: &mut Checker<'a>,
    reader: &BlockReader<'a>,
    module: &str,
) -> Option<StartupSpecification> {
    let order = reader.value(checker, "startup_order");
    let after = reader.value(checker, "after");
    match (order, after) {
        (Some(_), Some(after_value)) => {
            checker.report(
                DiagnosticKind::StartupOrderConflict {
                    module: module.to_owned(),
                },
                reader.file,
                after_value.span,
            );
            None
        }
        (Some(value), None) => checker
            .integer(
                reader.file,
                value,
                "startup order",
                Bounds {
                    low: Some(0.0),
                    high: Some(u32::MAX as f64),
                },
            )
            .map(StartupSpecification::Order),
        (None, Some(value)) => checker
            .names(reader.file, value)
            .map(StartupSpecification::After),
        (None, None) => Some(StartupSpecification::Unspecified),
    }
}

/// `limits { memory = 256MiB, cpus = 1.5 }`, merged into the Docker host configuration.
/// Returns `Some(memory limit)`, or `None` when the block had errors.
fn limits<'a>(
    checker: &mut Checker<'a>,
    file: FileId,
    block: &'a crate::syntax::ast::Block,
    create_options: &mut Json,
) -> Option<Option<(u64, Location)>> {
    let anchor = crate::span::Span {
        start: block.span.start,
        end: block.span.start + 1,
    };
    let reader = BlockReader::new(
        checker,
        file,
        "`limits`",
        anchor,
        block,
        LIMIT_ATTRIBUTES,
        &[],
    );
    let memory = reader.value(checker, "memory").map(|value| {
        let bytes = checker.size(file, value)?;
        // Docker reads 0 as "no limit" and refuses limits below 6 MiB when it creates the
        // container; both would surprise a user who wrote a limit.
        if bytes < MINIMUM_MEMORY_LIMIT {
            checker.report(
                DiagnosticKind::OutOfRange {
                    what: "memory limit".into(),
                    value: crate::diagnostic::wording::human_bytes(bytes),
                    bounds: format!(
                        "at least {}",
                        crate::diagnostic::wording::human_bytes(MINIMUM_MEMORY_LIMIT)
                    ),
                },
                file,
                value.span,
            );
            return None;
        }
        Some((bytes, value.span))
    });
    let cpus = reader.value(checker, "cpus").map(|value| {
        let cpus = checker.number(file, value)?;
        // Docker reads a NanoCpus of 0 as "no limit", so zero or less must not slip through.
        if cpus <= 0.0 || cpus > MAXIMUM_CPUS {
            checker.report(
                DiagnosticKind::OutOfRange {
                    what: "CPU limit".into(),
                    value: cpus.to_string(),
                    bounds: format!("greater than 0 and at most {MAXIMUM_CPUS}"),
                },
                file,
                value.span,
            );
            return None;
        }
        Some((cpus, value.span))
    });
    let host_config = create_options.as_object_mut().map(|options| {
        options
            .entry("HostConfig")
            .or_insert_with(|| Json::Object(serde_json::Map::new()))
    });
    let host_config = host_config.and_then(Json::as_object_mut);
    let memory = match memory {
        Some(Some((bytes, span))) => {
            if let Some(host_config) = host_config {
                host_config.insert("Memory".into(), Json::from(bytes));
                if let Some((cpus, _)) = cpus.flatten() {
                    host_config.insert("NanoCpus".into(), Json::from((cpus * 1e9).round() as u64));
                }
            }
            Some((bytes, Location::new(file, span)))
        }
        Some(None) => return None,
        None => {
            if let (Some((cpus, _)), Some(host_config)) = (cpus.flatten(), host_config) {
                host_config.insert("NanoCpus".into(), Json::from((cpus * 1e9).round() as u64));
            }
            None
        }
    };
    Some(memory)
}

/// `input name` and `output name[: Schema]` entries.
fn endpoints<'a>(
    checker: &mut Checker<'a>,
    reader: &BlockReader<'a>,
) -> (BTreeMap<String, Location>, BTreeMap<String, Output>) {
    let file = reader.file;
    let mut inputs: BTreeMap<String, Location> = BTreeMap::new();
    for entry in reader.repeated("input") {
        let Some(label) = entry.label.as_ref().filter(|_| {
            entry.type_annotation.is_none() && entry.value.is_none() && entry.block.is_none()
        }) else {
            malformed(checker, file, entry, "input name");
            continue;
        };
        let location = Location::new(file, label.span);
        if let Some(first) = inputs.get(&label.name) {
            checker.report_duplicate("input", &label.name, location, *first);
        } else {
            inputs.insert(label.name.clone(), location);
        }
    }
    let mut outputs: BTreeMap<String, Output> = BTreeMap::new();
    for entry in reader.repeated("output") {
        let Some(label) = entry
            .label
            .as_ref()
            .filter(|_| entry.value.is_none() && entry.block.is_none())
        else {
            malformed(checker, file, entry, "output name: Schema");
            continue;
        };
        let location = Location::new(file, label.span);
        if let Some(first) = outputs.get(&label.name) {
            checker.report_duplicate("output", &label.name, location, first.location);
            continue;
        }
        let schema = entry
            .type_annotation
            .as_ref()
            .map(|annotation| checker.resolve_type(file, annotation));
        outputs.insert(label.name.clone(), Output { schema, location });
    }
    (inputs, outputs)
}
