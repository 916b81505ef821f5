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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SourceFile, SourceSet};

    fn program(text: &str) -> Program {
        let mut sources = SourceSet::default();
        let id = sources.add(SourceFile::new("pin.edge", text.to_owned()));
        let tree = crate::syntax::parse(text);
        crate::compile(&mut sources, &[(id, tree)], &[]).0
    }

    const SOURCE: &str = r#"hardware gateway {
  arch = amd64
  compatible = "example,gateway"
}

module sensor {
  image = "registry.example.com/sensor:1.0"
}

module filter {
  image = "registry.example.com/filter:2.0@sha256:bf7cb4c56da8c66919fc995712ad3dfcc7adc79b5adb341533bee339d51756d0"
}

module sink {
  image = "registry.example.com/sensor:1.0"
}

deployment plant {
  target = gateway
  version = 1
  modules = [sensor, filter, sink]
}
"#;

    #[test]
    fn tag_only_images_are_listed_once_and_pinned_where_resolved() {
        let mut program = program(SOURCE);
        let plant = program.deployments["plant"].clone();
        assert_eq!(
            unpinned_images(&program, &plant),
            vec!["registry.example.com/sensor:1.0".to_owned()]
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let resolved =
            BTreeMap::from([("registry.example.com/sensor:1.0".to_owned(), digest.clone())]);
        pin_images(&mut program.modules, &resolved);
        for name in ["sensor", "sink"] {
            assert_eq!(
                program.modules[name].image,
                ImageSource::Registry {
                    reference: format!("registry.example.com/sensor:1.0@{digest}"),
                    digest: Some(digest.clone()),
                }
            );
        }
        assert!(unpinned_images(&program, &plant).is_empty());
        assert!(matches!(
            &program.modules["filter"].image,
            ImageSource::Registry { reference, .. } if reference.ends_with("@sha256:bf7cb4c56da8c66919fc995712ad3dfcc7adc79b5adb341533bee339d51756d0")
        ));
    }
}
