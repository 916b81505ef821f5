//! Bundles for the registry tests, built with the real bundle builder from module root
//! directories of random (incompressible) content, and a registry to push them to.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use edge_bundle::{
    Architecture, BundleBuilder, BundleHeader, BundleManifest, FileSigner, ImageConfig,
    LayerCompression, OsImage, Signer, generate_keypair,
};
use edge_registry::{Credentials, RegistryOptions};
use test_registry::{Authority, Registry};

/// A started registry, or `None` (after printing `SKIPPED:`) where it is not installed.
pub fn registry(dir: &Path, test: &str) -> Option<Registry> {
    if !test_registry::available() {
        println!(
            "SKIPPED: {test}: {} is not installed",
            test_registry::PROGRAM
        );
        return None;
    }
    Some(Registry::start(
        &dir.join("registry"),
        Arc::new(Authority::new("edge-registry test CA")),
    ))
}

/// Options that trust the registry's CA and log in as its user.
pub fn options(registry: &Registry) -> RegistryOptions {
    RegistryOptions {
        ca_pem: Some(registry.authority().ca_pem().as_bytes().to_vec()),
        credentials: Some(Credentials {
            user: test_registry::USER.to_owned(),
            password: test_registry::PASSWORD.to_owned(),
        }),
        retry_backoff: std::time::Duration::from_millis(50),
        ..RegistryOptions::default()
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a module's content is stable per seed.
pub fn noise(seed: u64, length: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The inputs of a test bundle: module name → seed of its content, and an OS image size.
pub struct Spec {
    pub deployment: &'static str,
    pub version: u64,
    pub modules: Vec<(&'static str, u64, usize)>,
    pub os_bytes: usize,
}

/// Builds a signed bundle from `spec` under `dir`; returns its path.
pub fn build_bundle(dir: &Path, spec: &Spec) -> PathBuf {
    // One key per test process: ed25519 is deterministic, so the same inputs give the same
    // bundle bytes.
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| generate_keypair().unwrap().private_pem.to_string());
    let signer = FileSigner::from_pem(key).unwrap();
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: spec.deployment.to_owned(),
        compatible: "edgec,test-device".to_owned(),
        architecture: Architecture::Amd64,
        version: spec.version,
        source_date_epoch: 1_700_000_000,
    })
    .unwrap();
    builder.iot_edge_manifest(serde_json::json!({"modulesContent": {}}));
    for (module, seed, size) in &spec.modules {
        let root = dir.join(format!("root-{module}-{seed}"));
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/payload"), noise(*seed, *size)).unwrap();
        let config = ImageConfig {
            reference: format!("{module}:test"),
            architecture: Architecture::Amd64,
            os: "linux".into(),
            entrypoint: vec!["/bin/payload".into()],
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            compression: LayerCompression::None,
        };
        builder.add_local_image(module, &root, &config).unwrap();
    }
    if spec.os_bytes > 0 {
        let os_dir = dir.join(format!("os-{}", spec.version));
        fs::create_dir_all(&os_dir).unwrap();
        fs::write(
            os_dir.join("rootfs.img"),
            noise(spec.version + 1000, spec.os_bytes),
        )
        .unwrap();
        fs::write(os_dir.join("verity.img"), noise(spec.version + 2000, 8192)).unwrap();
        builder
            .add_os_payload(&OsImage {
                rootfs: os_dir.join("rootfs.img"),
                verity: os_dir.join("verity.img"),
                root_hash: "ab".repeat(32),
                root_hash_signature: None,
            })
            .unwrap();
    }
    let path = dir.join(format!("{}-{}.edgebundle", spec.deployment, spec.version));
    let file = fs::File::create(&path).unwrap();
    let signers: Vec<&dyn Signer> = vec![&signer];
    builder.build(&signers, file).unwrap();
    path
}

/// Every entry of a bundle file by path, with its bytes.
pub fn entries(bundle: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(fs::File::open(bundle).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

/// The parsed `bundle.json` of a bundle file.
pub fn manifest(bundle: &Path) -> BundleManifest {
    BundleManifest::from_canonical_bytes(&entries(bundle)["bundle.json"]).unwrap()
}

/// Checks that `into` holds exactly the bundle's head and one blob per payload digest, each
/// byte-identical to the bundle's entry.
pub fn assert_fetched(bundle: &Path, into: &Path) {
    let entries = entries(bundle);
    assert_eq!(
        fs::read(into.join("bundle.json")).unwrap(),
        entries["bundle.json"]
    );
    assert_eq!(
        fs::read(into.join("bundle.sig.json")).unwrap(),
        entries["bundle.sig.json"]
    );
    let manifest = manifest(bundle);
    for file in &manifest.payload {
        let blob = fs::read(into.join("blobs/sha256").join(&file.sha256)).unwrap();
        assert!(blob == entries[&file.path], "{} differs", file.path);
    }
    let mut names: Vec<String> = fs::read_dir(into.join("blobs/sha256"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = manifest
        .payload
        .iter()
        .map(|file| file.sha256.clone())
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(
        names, expected,
        "nothing but the payload blobs, no partial files"
    );
}

/// The digests (hex) the registry served blob GETs for, in `repository`, from request `from` on.
pub fn blob_gets(registry: &Registry, repository: &str, from: usize) -> Vec<(String, u16)> {
    let prefix = format!("/v2/{repository}/blobs/sha256:");
    registry.requests()[from..]
        .iter()
        .filter(|request| request.method == "GET")
        .filter_map(|request| {
            request
                .uri
                .strip_prefix(&prefix)
                .map(|hex| (hex.to_owned(), request.status))
        })
        .collect()
}
