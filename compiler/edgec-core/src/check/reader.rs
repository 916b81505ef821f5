//! Reading the entries of a block as attributes, with duplicate and unknown-name checks.
//!
//! Each construct declares its attribute names once; [`BlockReader::new`] reports repeated and
//! unknown entries (with a suggestion from the declared names), and the getters report entries
//! written in the wrong form. Entries that may repeat (`input`, `route`, …) are read by
//! [`BlockReader::repeated`].

use std::collections::BTreeMap;

use super::context::Checker;
use crate::diagnostic::DiagnosticKind;
use crate::span::{FileId, Location, Span};
use crate::suggest::closest;
use crate::syntax::ast::{Block, Entry, Value};

pub struct BlockReader<'a> {
    pub file: FileId,
    /// How the block is named in messages, e.g. "a module".
    pub description: &'static str,
    single: BTreeMap<&'a str, &'a Entry>,
    repeated: BTreeMap<&'a str, Vec<&'a Entry>>,
    /// Where to point "missing attribute" diagnostics.
    pub anchor: Span,
}

impl<'a> BlockReader<'a> {
    pub fn new(
        checker: &mut Checker<'a>,
        file: FileId,
        description: &'static str,
        anchor: Span,
        block: &'a Block,
        attributes: &'static [&'static str],
        repeatable: &'static [&'static str],
    ) -> Self {
        let mut single: BTreeMap<&'a str, &'a Entry> = BTreeMap::new();
        let mut repeated: BTreeMap<&'a str, Vec<&'a Entry>> = BTreeMap::new();
        for entry in &block.entries {
            let name = entry.key.name.as_str();
            if repeatable.contains(&name) {
                repeated.entry(name).or_default().push(entry);
            } else if attributes.contains(&name) {
                if let Some(first) = single.get(name) {
                    checker.report_duplicate(
                        "attribute",
                        name,
                        Location::new(file, entry.key.span),
                        Location::new(file, first.key.span),
                    );
                } else {
                    single.insert(name, entry);
                }
            } else {
                let suggestion = closest(name, attributes.iter().chain(repeatable).copied());
                checker.report(
                    DiagnosticKind::UnknownAttribute {
                        block: description,
                        name: name.to_owned(),
                        suggestion,
                    },
                    file,
                    entry.key.span,
                );
            }
        }
        BlockReader {
            file,
            description,
            single,
            repeated,
            anchor,
        }
    }

    pub fn entry(&self, name: &str) -> Option<&'a Entry> {
        self.single.get(name).copied()
    }

    pub fn location(&self, name: &str) -> Option<Location> {
        self.entry(name)
            .map(|entry| Location::new(self.file, entry.span))
    }

    /// `name = value`.
    pub fn value(&self, checker: &mut Checker<'a>, name: &str) -> Option<&'a Value> {
        let entry = self.entry(name)?;
        match (
            &entry.label,
            &entry.type_annotation,
            &entry.value,
            &entry.block,
        ) {
            (None, None, Some(value), None) => Some(value),
            _ => {
                malformed(checker, self.file, entry, "name = value");
                None
            }
        }
    }

    /// `name = value`, reporting its absence.
    pub fn required_value(
        &self,
        checker: &mut Checker<'a>,
        name: &'static str,
    ) -> Option<&'a Value> {
        if self.entry(name).is_none() {
            checker.report(
                DiagnosticKind::MissingAttribute {
                    block: self.description,
                    name,
                },
                self.file,
                self.anchor,
            );
            return None;
        }
        self.value(checker, name)
    }

    /// `name { … }` (or `name = { … }`).
    pub fn block(&self, checker: &mut Checker<'a>, name: &str) -> Option<&'a Block> {
        let entry = self.entry(name)?;
        match (
            &entry.label,
            &entry.type_annotation,
            &entry.value,
            &entry.block,
        ) {
            (None, None, None, Some(block)) => Some(block),
            (
                None,
                None,
                Some(Value {
                    kind: crate::syntax::ast::ValueKind::Object(block),
                    ..
                }),
                None,
            ) => Some(block),
            _ => {
                malformed(checker, self.file, entry, "name { … }");
                None
            }
        }
    }

    pub fn repeated(&self, name: &str) -> &[&'a Entry] {
        self.repeated.get(name).map_or(&[], Vec::as_slice)
    }
}

pub fn malformed(
    checker: &mut Checker<'_>,
    file: FileId,
    entry: &Entry,
    expected_form: &'static str,
) {
    checker.report(
        DiagnosticKind::MalformedEntry {
            entry: entry.key.name.clone(),
            expected_form,
        },
        file,
        entry.span,
    );
}
