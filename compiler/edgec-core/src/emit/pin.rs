//! Pinning tag-only registry images (W0214) to digests.
//!
//! A bundle must name every registry image by digest: the signature covers the reference, and
//! a tag could later name bytes nobody signed. Resolving a tag needs the network, so the core
//! only lists what needs a digest ([`unpinned_images`]) and writes in the digests the caller
//! resolved ([`pin_images`]); `edgec build --resolve-digests` does the resolving.

use std::collections::BTreeMap;

use crate::check::Program;
use crate::check::model::{Deployment, ImageSource, Module};

/// The tag-only registry image references of `deployment`'s modules, each once, sorted.
pub fn unpinned_images(program: &Program, deployment: &Deployment) -> Vec<String> {
    let mut references: Vec<String> = deployment
        .modules
        .iter()
        .filter_map(|name| program.modules.get(name))
        .filter_map(|module| match &module.image {
            ImageSource::Registry {
                reference,
                digest: None,
            } => Some(reference.clone()),
            _ => None,
        })
        .collect();
    references.sort();
    references.dedup();
    references
}

/// Pins every tag-only registry image of `modules` (a program's) whose reference `resolved` maps to a digest
/// (`sha256:<hex>`): the reference becomes `name:tag@sha256:<hex>`, in the IoT Edge manifest
/// and in the bundle alike. Images not in `resolved` are left as they are.
pub fn pin_images(modules: &mut BTreeMap<String, Module>, resolved: &BTreeMap<String, String>) {
    for module in modules.values_mut() {
        if let ImageSource::Registry {
            reference,
            digest: None,
        } = &module.image
            && let Some(digest) = resolved.get(reference)
        {
            module.image = ImageSource::Registry {
                reference: format!("{reference}@{digest}"),
                digest: Some(digest.clone()),
            };
        }
    }
}
