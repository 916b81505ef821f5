//! The artifact layout without a registry: the manifest a bundle maps to, and the strict parse
//! and listing check a device applies to what a registry hands it.

mod common;

use common::{Spec, build_bundle, entries, manifest};
use edge_registry::artifact::{
    ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, MAX_MANIFEST_BYTES, PAYLOAD_MEDIA_TYPE,
    SIGNATURES_MEDIA_TYPE, TITLE_ANNOTATION,
};
use edge_registry::{BundleLayout, LayoutError};
use serde_json::Value;

fn layout_of(dir: &std::path::Path) -> (BundleLayout, edge_bundle::BundleManifest) {
    let bundle = build_bundle(
        dir,
        &Spec {
            deployment: "gateway",
            version: 7,
            modules: vec![("alpha", 1, 1000), ("beta", 2, 2000)],
            os_bytes: 4096,
        },
    );
    let entries = entries(&bundle);
    let manifest = manifest(&bundle);
    let layout = BundleLayout::of_bundle(
        &manifest,
        &entries["bundle.json"],
        &entries["bundle.sig.json"],
    )
    .unwrap();
    (layout, manifest)
}

fn edited(layout: &BundleLayout, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&layout.to_manifest_bytes()).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn a_bundle_maps_to_one_canonical_manifest_of_its_signed_listing() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_of(dir.path());
    let bytes = layout.to_manifest_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        canonical_json::to_canonical_bytes(&value),
        bytes,
        "canonical JSON"
    );
    assert_eq!(value["schemaVersion"], 2);
    assert_eq!(value["artifactType"], ARTIFACT_TYPE);
    assert_eq!(value["config"]["mediaType"], CONFIG_MEDIA_TYPE);
    assert_eq!(value["layers"][0]["mediaType"], SIGNATURES_MEDIA_TYPE);
    let layers = value["layers"].as_array().unwrap();
    assert_eq!(layers.len(), manifest.payload.len() + 1);
    for (layer, file) in layers[1..].iter().zip(&manifest.payload) {
        assert_eq!(layer["mediaType"], PAYLOAD_MEDIA_TYPE);
        assert_eq!(layer["digest"], format!("sha256:{}", file.sha256));
        assert_eq!(layer["size"], file.size);
        assert_eq!(layer["annotations"][TITLE_ANNOTATION], file.path.as_str());
    }
    assert_eq!(value["annotations"]["io.edgec.bundle.version"], "7");
    assert_eq!(
        value["annotations"]["org.opencontainers.image.created"],
        manifest.created.as_str()
    );

    let parsed = BundleLayout::parse(&bytes).unwrap();
    assert_eq!(parsed, layout);
    parsed.check_listing(&manifest).unwrap();

    // The same inputs built again give the same bundle and so the same manifest digest.
    let again = tempfile::tempdir().unwrap();
    assert_eq!(
        layout_of(again.path()).0.manifest_digest(),
        layout.manifest_digest()
    );
}

#[test]
fn a_manifest_outside_the_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, _) = layout_of(dir.path());
    let refusals: Vec<(&str, Vec<u8>)> = vec![
        (
            "artifact type",
            edited(&layout, |value| {
                value["artifactType"] = "application/x".into()
            }),
        ),
        (
            "schema version",
            edited(&layout, |value| value["schemaVersion"] = 1.into()),
        ),
        (
            "config type",
            edited(&layout, |value| {
                value["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into()
            }),
        ),
        (
            "layer type",
            edited(&layout, |value| {
                value["layers"][1]["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into()
            }),
        ),
        (
            "signatures type",
            edited(&layout, |value| {
                value["layers"][0]["mediaType"] = PAYLOAD_MEDIA_TYPE.into()
            }),
        ),
        (
            "unknown field",
            edited(&layout, |value| value["subject"] = serde_json::json!({})),
        ),
        (
            "unknown descriptor field",
            edited(&layout, |value| {
                value["layers"][1]["urls"] = serde_json::json!(["https://elsewhere"])
            }),
        ),
        (
            "no title",
            edited(&layout, |value| {
                value["layers"][1]["annotations"] = serde_json::json!({})
            }),
        ),
        (
            "another annotation",
            edited(&layout, |value| {
                value["layers"][1]["annotations"]["x"] = "y".into()
            }),
        ),
        (
            "not sha256",
            edited(&layout, |value| {
                value["layers"][1]["digest"] = format!("sha512:{}", "a".repeat(128)).into()
            }),
        ),
        (
            "no layers",
            edited(&layout, |value| value["layers"] = serde_json::json!([])),
        ),
        ("not JSON", b"{".to_vec()),
    ];
    for (case, bytes) in refusals {
        match BundleLayout::parse(&bytes) {
            Err(LayoutError::NotABundle(_)) => {}
            other => panic!("{case}: {other:?}"),
        }
    }
    let mut huge = layout.to_manifest_bytes();
    huge.resize(MAX_MANIFEST_BYTES + 1, b' ');
    assert!(matches!(
        BundleLayout::parse(&huge),
        Err(LayoutError::TooLarge { .. })
    ));
    let many = edited(&layout, |value| {
        let mut layer = value["layers"][1].clone();
        layer["annotations"][TITLE_ANNOTATION] = "payload/x".into();
        value["layers"] =
            Value::Array(vec![layer; edge_registry::artifact::MAX_PAYLOAD_LAYERS + 2]);
        value["layers"][0]["mediaType"] = SIGNATURES_MEDIA_TYPE.into();
        value["layers"][0]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
    });
    assert!(
        matches!(
            BundleLayout::parse(&many),
            Err(LayoutError::TooManyLayers { .. })
        ),
        "{:?}",
        BundleLayout::parse(&many)
    );
}

#[test]
fn layers_that_differ_from_the_signed_listing_in_any_way_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_of(dir.path());
    let mut cases: Vec<(&str, BundleLayout)> = Vec::new();
    let mut dropped = layout.clone();
    dropped.payload.pop();
    cases.push(("a layer missing", dropped));
    let mut extra = layout.clone();
    extra.payload.push(layout.payload[0].clone());
    cases.push(("a layer more", extra));
    let mut swapped = layout.clone();
    swapped.payload.swap(0, 1);
    cases.push(("two layers swapped", swapped));
    let mut resized = layout.clone();
    resized.payload[2].blob.size += 1;
    cases.push(("a size changed", resized));
    let mut redigested = layout.clone();
    redigested.payload[2].blob.digest = edge_bundle::Sha256Digest::of(b"other");
    cases.push(("a digest changed", redigested));
    let mut renamed = layout.clone();
    renamed.payload[2].path.push('x');
    cases.push(("a path changed", renamed));
    for (case, forged) in cases {
        // Through the bytes, as a device meets it.
        let parsed = BundleLayout::parse(&forged.to_manifest_bytes()).unwrap();
        match parsed.check_listing(&manifest) {
            Err(LayoutError::ListingMismatch(_)) => {}
            other => panic!("{case}: {other:?}"),
        }
    }
}
