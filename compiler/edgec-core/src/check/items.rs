//! Collecting top-level definitions across all files, and the shape of top-level entries.

use std::collections::BTreeMap;

use super::context::Checker;
use super::reader::malformed;
use super::{Definition, ParsedFile};
use crate::diagnostic::DiagnosticKind;
use crate::span::Location;
use crate::suggest::closest;

const TOP_LEVEL: &[&str] = &[
    "import",
    "param",
    "hardware",
    "schema",
    "module",
    "deployment",
];

#[derive(Debug, Default)]
pub struct Definitions<'a> {
    pub parameters: BTreeMap<String, Definition<'a>>,
    pub hardware: BTreeMap<String, Definition<'a>>,
    pub modules: BTreeMap<String, Definition<'a>>,
    pub deployments: BTreeMap<String, Definition<'a>>,
}

pub fn collect<'a>(checker: &mut Checker<'a>, files: &[ParsedFile<'a>]) -> Definitions<'a> {
    let mut definitions = Definitions::default();
    let mut schema_sites: BTreeMap<String, Location> = BTreeMap::new();
    for file in files {
        for entry in &file.tree.entries {
            let keyword = entry.key.name.as_str();
            if !TOP_LEVEL.contains(&keyword) || entry.key.quoted {
                let suggestion = closest(keyword, TOP_LEVEL.iter().copied());
                checker.report(
                    DiagnosticKind::UnknownTopLevel {
                        name: keyword.to_owned(),
                        suggestion,
                    },
                    file.id,
                    entry.key.span,
                );
                continue;
            }
            // A module name may be quoted, so that a name IoT Edge refuses (`"temp.sensor"`) is
            // reported by the module naming rules (E0202) rather than as a malformed entry.
            let label = entry
                .label
                .as_ref()
                .filter(|label| !label.quoted || matches!(keyword, "import" | "module"));
            let well_formed = match keyword {
                "import" => {
                    label.is_some_and(|label| label.quoted)
                        && entry.type_annotation.is_none()
                        && entry.value.is_none()
                        && entry.block.is_none()
                }
                "param" => {
                    label.is_some() && entry.type_annotation.is_some() && entry.block.is_none()
                }
                _ => {
                    label.is_some()
                        && entry.type_annotation.is_none()
                        && entry.value.is_none()
                        && entry.block.is_some()
                }
            };
            if !well_formed {
                let form = match keyword {
                    "import" => "import \"path.edge\"",
                    "param" => "param name: type = default",
                    "hardware" => "hardware name { … }",
                    "schema" => "schema Name { field: type … }",
                    "module" => "module name { … }",
                    _ => "deployment name { … }",
                };
                malformed(checker, file.id, entry, form);
                continue;
            }
            let Some(label) = label else { continue };
            if keyword == "import" {
                continue;
            }
            let definition = Definition {
                file: file.id,
                entry,
                name_span: label.span,
            };
            let (namespace, what) = match keyword {
                "param" => (&mut definitions.parameters, "parameter"),
                "hardware" => (&mut definitions.hardware, "hardware profile"),
                "module" => (&mut definitions.modules, "module"),
                "deployment" => (&mut definitions.deployments, "deployment"),
                _ => {
                    let location = definition.location();
                    if let Some(first) = schema_sites.get(&label.name) {
                        checker.report_duplicate("message schema", &label.name, location, *first);
                    } else if let Some(block) = &entry.block {
                        schema_sites.insert(label.name.clone(), location);
                        checker
                            .schema_definitions
                            .insert(label.name.clone(), (file.id, block));
                    }
                    continue;
                }
            };
            if let Some(first) = namespace.get(&label.name) {
                checker.report_duplicate(
                    what,
                    &label.name,
                    definition.location(),
                    first.location(),
                );
            } else {
                namespace.insert(label.name.clone(), definition);
            }
        }
    }
    definitions
}
