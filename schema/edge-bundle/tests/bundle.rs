//! End-to-end tests of building, verifying and inspecting bundles.

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use edge_bundle::canonical_json::to_canonical_bytes;
use edge_bundle::{
    Architecture, BundleBuilder, BundleError, BundleHeader, FileSigner, ImageConfig,
    LayerCompression, OsImage, Signer, VerifyingKey, generate_keypair, inspect_bundle,
    load_public_key_pem, verify_bundle, verify_bundle_with,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A signing key and its public half.
fn key() -> (FileSigner, VerifyingKey) {
    let pair = generate_keypair().unwrap();
    (
        FileSigner::from_pem(&pair.private_pem).unwrap(),
        load_public_key_pem(&pair.public_pem).unwrap(),
    )
}

fn header() -> BundleHeader {
    BundleHeader {
        deployment: "line-7".to_owned(),
        compatible: "contoso,gateway-v2".to_owned(),
        architecture: Architecture::Amd64,
        version: 42,
        source_date_epoch: 1_700_000_000,
    }
}

fn image_config(compression: LayerCompression) -> ImageConfig {
    ImageConfig {
        reference: "edgec/sensor:1.0".to_owned(),
        architecture: Architecture::Amd64,
        os: "linux".to_owned(),
        entrypoint: vec!["/bin/sensor".to_owned()],
        cmd: vec!["--interval".to_owned(), "5".to_owned()],
        env: vec!["PATH=/bin".to_owned()],
        working_dir: Some("/".to_owned()),
        compression,
    }
}

/// Writes a small root filesystem; `reverse` creates files in the opposite
/// order so directory order differs between two copies.
fn make_rootfs(dir: &Path, reverse: bool) {
    let mut files: Vec<(&str, &[u8], u32)> = vec![
        ("bin/sensor", b"#!/bin/sh\necho sensing\n", 0o755),
        ("etc/sensor.conf", b"interval=5\n", 0o600),
        ("usr/share/data/readings.bin", &[0_u8, 1, 2, 3, 255], 0o640),
        ("usr/share/data/z-last", b"z", 0o644),
        (
            "a-long-directory-name-to-force-gnu-long-names-in-the-layer-tar/and-another-quite-long-directory/file-with-a-long-name.txt",
            b"long",
            0o644,
        ),
    ];
    if reverse {
        files.reverse();
    }
    for (path, content, mode) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(dir.join("var/empty")).unwrap();
    symlink("sensor", dir.join("bin/sh")).unwrap();
    symlink("/etc/sensor.conf", dir.join("usr/share/data/conf")).unwrap();
}

fn builder_with_image(rootfs: &Path, compression: LayerCompression) -> BundleBuilder {
    let mut builder = BundleBuilder::new(header()).unwrap();
    builder
        .iot_edge_manifest(json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}}}}))
        .route_table(json!({"routes": [{"from": "sensor/out", "to": "$upstream"}]}));
    builder
        .add_local_image("sensor", rootfs, &image_config(compression))
        .unwrap();
    builder
        .add_registry_image(
            "agent",
            &format!(
                "mcr.microsoft.com/azureiotedge-agent@sha256:{}",
                "a".repeat(64)
            ),
        )
        .unwrap();
    builder
}

fn build(builder: &BundleBuilder, signers: &[&dyn Signer]) -> Vec<u8> {
    builder.build(signers, Vec::new()).unwrap().writer
}

/// Lists the tar entries of a bundle with their raw headers.
fn entry_names(bundle: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bundle);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn built_bundles_verify_and_list_their_content() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (signer, public) = key();
    let bundle = build(
        &builder_with_image(dir.path(), LayerCompression::Gzip),
        &[&signer],
    );

    let verified = verify_bundle(bundle.as_slice(), &[public], 1).unwrap();
    assert_eq!(verified.trusted_key_ids, vec![edge_bundle::key_id(&public)]);
    let manifest = &verified.manifest;
    assert_eq!(manifest.version, 42);
    assert_eq!(manifest.created, "2023-11-14T22:13:20Z");
    assert_eq!(manifest.images[0].path, "payload/images/sensor");
    assert_eq!(manifest.registry_images[0].module, "agent");

    let names = entry_names(&bundle);
    assert_eq!(names[..2], ["bundle.json", "bundle.sig.json"]);
    let mut payload = names[2..].to_vec();
    payload.sort();
    assert_eq!(payload, names[2..]);
    for file in ["oci-layout", "index.json", "manifest.json"] {
        assert!(
            names.contains(&format!("payload/images/sensor/{file}")),
            "{file} missing: {names:?}"
        );
    }
    let mut archive = tar::Archive::new(bundle.as_slice());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!(header.mtime().unwrap(), 1_700_000_000);
        assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        assert_eq!(header.mode().unwrap(), 0o644);
        assert_eq!(header.username_bytes(), Some(&b""[..]));
    }

    let inspection = inspect_bundle(bundle.as_slice()).unwrap();
    assert_eq!(inspection.manifest, verified.manifest);
    assert_eq!(inspection.manifest_digest, verified.manifest_digest);
    assert_eq!(inspection.signature_key_ids, verified.trusted_key_ids);
}

#[test]
fn the_layer_tar_has_normalised_metadata() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (signer, public) = key();
    let bundle = build(
        &builder_with_image(dir.path(), LayerCompression::None),
        &[&signer],
    );
    let layer = extract(&bundle, &[public], "payload/images/sensor/blobs/sha256/")
        .into_iter()
        .find(|(_, bytes)| bytes.len() > 2048)
        .unwrap()
        .1;
    let mut archive = tar::Archive::new(layer.as_slice());
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(header.mtime().unwrap(), 1_700_000_000, "{path}");
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (0, 0),
            "{path}"
        );
        let mode = header.mode().unwrap();
        match path.as_str() {
            "bin/sensor" | "var/empty/" => assert_eq!(mode, 0o755, "{path}"),
            "etc/sensor.conf" | "usr/share/data/readings.bin" => assert_eq!(mode, 0o644, "{path}"),
            _ => {}
        }
        seen.push(path);
    }
    assert!(seen.contains(&"bin/sh".to_owned()));
    assert!(
        seen.iter()
            .any(|path| path.ends_with("file-with-a-long-name.txt"))
    );
}

/// Verifies and returns the payload entries under `prefix`.
fn extract(bundle: &[u8], trusted: &[VerifyingKey], prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    verify_bundle_with(bundle, trusted, 1, |file, reader| {
        if let Some(name) = file.path.strip_prefix(prefix) {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)?;
            files.push((name.to_owned(), bytes));
        }
        Ok(())
    })
    .unwrap();
    files
}

#[test]
fn signature_thresholds_count_distinct_trusted_keys() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (first, first_public) = key();
    let (second, second_public) = key();
    let (_, stranger) = key();
    let bundle = build(
        &builder_with_image(dir.path(), LayerCompression::None),
        &[&first, &second],
    );

    let both = verify_bundle(bundle.as_slice(), &[first_public, second_public], 2).unwrap();
    assert_eq!(both.trusted_key_ids.len(), 2);
    let error = verify_bundle(bundle.as_slice(), &[first_public, first_public], 2).unwrap_err();
    assert!(
        matches!(
            error,
            BundleError::NotEnoughSignatures {
                valid: 1,
                threshold: 2
            }
        ),
        "{error}"
    );
    let error = verify_bundle(bundle.as_slice(), &[stranger], 1).unwrap_err();
    assert!(
        matches!(error, BundleError::NotEnoughSignatures { valid: 0, .. }),
        "{error}"
    );
    let error = verify_bundle(bundle.as_slice(), &[first_public], 0).unwrap_err();
    assert!(matches!(error, BundleError::ZeroThreshold));

    let builder = builder_with_image(dir.path(), LayerCompression::None);
    assert!(matches!(
        builder.build(&[], Vec::new()),
        Err(BundleError::NoSigners)
    ));
    assert!(matches!(
        builder.build(&[&first, &first], Vec::new()),
        Err(BundleError::DuplicateSigner(_))
    ));
}

/// Rewrites a bundle entry by entry, letting `change` edit or drop each one.
fn rewrite(
    bundle: &[u8],
    mut change: impl FnMut(&str, Vec<u8>) -> Vec<(String, Vec<u8>)>,
) -> Vec<u8> {
    let mut archive = tar::Archive::new(bundle);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        for (path, bytes) in change(&path, bytes) {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            out.append_data(&mut header, path, bytes.as_slice())
                .unwrap();
        }
    }
    out.into_inner().unwrap()
}

/// Appends one raw entry with any path and type, bypassing the tar crate's
/// own path checks.
fn append_raw(bundle: &[u8], path: &str, entry_type: tar::EntryType, content: &[u8]) -> Vec<u8> {
    let mut archive = tar::Archive::new(bundle);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.append(&header, bytes.as_slice()).unwrap();
        header.set_size(0);
    }
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(entry_type);
    header.set_size(content.len() as u64);
    header.set_cksum();
    out.append(&header, content).unwrap();
    out.into_inner().unwrap()
}

#[test]
fn tampering_is_detected() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (signer, public) = key();
    let bundle = build(
        &builder_with_image(dir.path(), LayerCompression::None),
        &[&signer],
    );
    let verify = |bytes: &[u8]| verify_bundle(bytes, &[public], 1).unwrap_err();

    let flipped = rewrite(&bundle, |path, mut bytes| {
        if path.ends_with("index.json") {
            bytes[5] ^= 1;
        }
        vec![(path.to_owned(), bytes)]
    });
    assert!(matches!(
        verify(&flipped),
        BundleError::DigestMismatch { .. }
    ));

    let resigned_manifest = rewrite(&bundle, |path, bytes| {
        let bytes = if path == "bundle.json" {
            let mut value: Value = serde_json::from_slice(&bytes).unwrap();
            value["version"] = json!(43);
            to_canonical_bytes(&value)
        } else {
            bytes
        };
        vec![(path.to_owned(), bytes)]
    });
    assert!(matches!(
        verify(&resigned_manifest),
        BundleError::NotEnoughSignatures { valid: 0, .. }
    ));

    let pretty_manifest = rewrite(&bundle, |path, bytes| {
        let bytes = if path == "bundle.json" {
            edge_bundle::canonical_json::to_pretty_bytes(&serde_json::from_slice(&bytes).unwrap())
        } else {
            bytes
        };
        vec![(path.to_owned(), bytes)]
    });
    assert!(matches!(
        verify(&pretty_manifest),
        BundleError::NonCanonicalManifest
    ));

    let dropped = rewrite(&bundle, |path, bytes| {
        if path.ends_with("oci-layout") {
            vec![]
        } else {
            vec![(path.to_owned(), bytes)]
        }
    });
    assert!(
        matches!(verify(&dropped), BundleError::MissingEntry(path) if path.ends_with("oci-layout"))
    );

    let doubled = rewrite(&bundle, |path, bytes| {
        let copies = if path.ends_with("oci-layout") { 2 } else { 1 };
        vec![(path.to_owned(), bytes); copies]
    });
    assert!(matches!(verify(&doubled), BundleError::DuplicateEntry(_)));

    let swapped = rewrite(&bundle, |path, bytes| match path {
        "bundle.json" => vec![("payload/extra".to_owned(), bytes)],
        _ => vec![(path.to_owned(), bytes)],
    });
    assert!(matches!(
        verify(&swapped),
        BundleError::MissingHeaderEntry {
            expected: "bundle.json",
            ..
        }
    ));

    let unlisted = append_raw(&bundle, "payload/unlisted", tar::EntryType::Regular, b"x");
    assert!(matches!(verify(&unlisted), BundleError::UnlistedEntry(_)));
    for (path, entry_type) in [
        ("/etc/passwd", tar::EntryType::Regular),
        ("payload/../../etc/passwd", tar::EntryType::Regular),
        ("payload/link", tar::EntryType::Symlink),
        ("payload/hard", tar::EntryType::Link),
        ("payload/dev", tar::EntryType::Char),
        ("payload/blk", tar::EntryType::Block),
    ] {
        let hostile = append_raw(&bundle, path, entry_type, b"");
        assert!(
            matches!(verify(&hostile), BundleError::UnsafeEntry { .. }),
            "{path}"
        );
    }
    let truncated = &bundle[..bundle.len() / 2];
    let error = verify(truncated);
    assert!(
        matches!(
            error,
            BundleError::Read(_) | BundleError::SizeMismatch { .. } | BundleError::MissingEntry(_)
        ),
        "{error}"
    );
}

/// Copies `source` into a fresh directory inside `parent`, creating entries
/// in reverse order and with new modification times.
fn copy_tree_reversed(source: &Path, target: &Path) {
    fs::create_dir_all(target).unwrap();
    let mut entries: Vec<PathBuf> = fs::read_dir(source)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    entries.reverse();
    for path in entries {
        let destination = target.join(path.file_name().unwrap());
        let metadata = fs::symlink_metadata(&path).unwrap();
        if metadata.is_dir() {
            copy_tree_reversed(&path, &destination);
        } else if metadata.file_type().is_symlink() {
            symlink(fs::read_link(&path).unwrap(), &destination).unwrap();
        } else {
            fs::copy(&path, &destination).unwrap();
        }
    }
}

#[test]
fn rebuilding_the_same_inputs_gives_identical_bytes() {
    let first_dir = TempDir::new().unwrap();
    let second_dir = TempDir::new().unwrap();
    make_rootfs(first_dir.path(), false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    make_rootfs(second_dir.path(), true);
    let (signer, public) = key();
    for compression in [LayerCompression::None, LayerCompression::Gzip] {
        let first = build(
            &builder_with_image(first_dir.path(), compression),
            &[&signer],
        );
        let second = build(
            &builder_with_image(second_dir.path(), compression),
            &[&signer],
        );
        assert!(first == second, "bundles differ for {compression:?}");

        // An OCI layout taken from the bundle and packaged again, from two
        // different directories, also reproduces byte for byte.
        let layout_files = extract(&first, &[public], "payload/images/sensor/");
        let layouts = [TempDir::new().unwrap(), TempDir::new().unwrap()];
        for (index, layout) in layouts.iter().enumerate() {
            let mut files = layout_files.clone();
            if index == 1 {
                files.reverse();
            }
            let staging = layout.path().join("staging");
            for (name, bytes) in &files {
                let path = staging.join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, bytes).unwrap();
            }
            copy_tree_reversed(&staging, &layout.path().join("image"));
        }
        let package = |layout: &Path| {
            let mut builder = BundleBuilder::new(header()).unwrap();
            builder
                .add_oci_layout("copied", layout, "edgec/sensor:copy")
                .unwrap();
            build(&builder, &[&signer])
        };
        let first_copy = package(&layouts[0].path().join("image"));
        assert!(first_copy == package(&layouts[1].path().join("image")));

        // Blobs are carried byte for byte.
        let copied = extract(&first_copy, &[public], "payload/images/copied/blobs/");
        for (name, bytes) in copied {
            let original = layout_files
                .iter()
                .find(|(original, _)| *original == format!("blobs/{name}"));
            assert_eq!(original.map(|(_, bytes)| bytes), Some(&bytes), "{name}");
        }
    }
}

#[test]
fn oci_layouts_with_bad_blobs_are_refused() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (signer, public) = key();
    let bundle = build(
        &builder_with_image(dir.path(), LayerCompression::Gzip),
        &[&signer],
    );
    let layout = TempDir::new().unwrap();
    let mut largest = (PathBuf::new(), 0);
    for (name, bytes) in extract(&bundle, &[public], "payload/images/sensor/") {
        let path = layout.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        if bytes.len() > largest.1 {
            largest = (path.clone(), bytes.len());
        }
        fs::write(path, bytes).unwrap();
    }
    let mut layer = fs::read(&largest.0).unwrap();
    let last = layer.len() - 1;
    layer[last] ^= 0xff;
    fs::write(&largest.0, layer).unwrap();
    let mut builder = BundleBuilder::new(header()).unwrap();
    let error = builder
        .add_oci_layout("copied", layout.path(), "edgec/sensor:copy")
        .unwrap_err();
    assert!(matches!(error, BundleError::BlobMismatch { .. }), "{error}");

    let error = builder
        .add_oci_layout("other", dir.path(), "edgec/sensor:copy")
        .unwrap_err();
    assert!(
        matches!(error, BundleError::InvalidOciLayout { .. }),
        "{error}"
    );
}

/// Adds one unpackageable entry to a root filesystem.
type MakeBadEntry = dyn Fn(&Path);

#[test]
fn rootfs_content_that_cannot_be_packaged_is_named() {
    let cases: Vec<(&str, Box<MakeBadEntry>)> = vec![
        (
            "escape",
            Box::new(|dir: &Path| symlink("../../etc/passwd", dir.join("bin/escape")).unwrap()),
        ),
        (
            "fifo",
            Box::new(|dir: &Path| run("mkfifo", &[dir.join("bin/fifo").as_os_str()])),
        ),
        (
            "socket",
            Box::new(|dir: &Path| {
                drop(std::os::unix::net::UnixListener::bind(dir.join("bin/socket")).unwrap())
            }),
        ),
        (
            "device",
            Box::new(|dir: &Path| {
                run(
                    "mknod",
                    &[
                        dir.join("bin/device").as_os_str(),
                        "c".as_ref(),
                        "1".as_ref(),
                        "3".as_ref(),
                    ],
                )
            }),
        ),
    ];
    for (name, make) in cases {
        let dir = TempDir::new().unwrap();
        make_rootfs(dir.path(), false);
        make(dir.path());
        let mut builder = BundleBuilder::new(header()).unwrap();
        let error = builder
            .add_local_image("sensor", dir.path(), &image_config(LayerCompression::None))
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!("bin/{name}")),
            "{name}: {message}"
        );
        assert!(
            matches!(
                error,
                BundleError::SymlinkEscapes { .. } | BundleError::UnsupportedFileType { .. }
            ),
            "{name}: {message}"
        );
    }
}

fn run(program: &str, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{program} failed");
}

#[test]
fn builder_inputs_are_validated() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let mut bad_header = header();
    bad_header.deployment = "../escape".to_owned();
    assert!(matches!(
        BundleBuilder::new(bad_header),
        Err(BundleError::InvalidName { .. })
    ));

    let mut builder = BundleBuilder::new(header()).unwrap();
    let mut arm = image_config(LayerCompression::None);
    arm.architecture = Architecture::Arm64;
    assert!(matches!(
        builder.add_local_image("sensor", dir.path(), &arm),
        Err(BundleError::ArchitectureMismatch { .. })
    ));
    let mut untagged = image_config(LayerCompression::None);
    untagged.reference = "edgec/sensor".to_owned();
    assert!(matches!(
        builder.add_local_image("sensor", dir.path(), &untagged),
        Err(BundleError::InvalidReference { .. })
    ));
    assert!(matches!(
        builder.add_registry_image("agent", "mcr.microsoft.com/agent:1.5"),
        Err(BundleError::InvalidReference { .. })
    ));
    // Only the text after the last `@sha256:` used to be looked at.
    let pinned = format!("@sha256:{}", "a".repeat(64));
    for invalid in [
        format!("my registry/agent{pinned}"),
        format!("Agent{pinned}"),
        format!("mcr.microsoft.com/agent@sha512:{}", "a".repeat(128)),
    ] {
        assert!(
            matches!(
                builder.add_registry_image("agent", &invalid),
                Err(BundleError::InvalidReference { .. })
            ),
            "{invalid}"
        );
    }
    builder
        .add_local_image("sensor", dir.path(), &image_config(LayerCompression::None))
        .unwrap();
    assert!(matches!(
        builder.add_local_image("sensor", dir.path(), &image_config(LayerCompression::None)),
        Err(BundleError::DuplicateModule(_))
    ));
}

#[test]
fn os_images_travel_with_the_deployment() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    fs::write(dir.path().join("rootfs.img"), vec![0x5a; 100_000]).unwrap();
    fs::write(dir.path().join("verity.img"), vec![0xa5; 4096]).unwrap();
    let (signer, public) = key();
    let mut builder = BundleBuilder::new(header()).unwrap();
    builder
        .add_os_payload(&OsImage {
            rootfs: dir.path().join("rootfs.img"),
            verity: dir.path().join("verity.img"),
            root_hash: "ab".repeat(32),
            root_hash_signature: None,
        })
        .unwrap();
    let bundle = build(&builder, &[&signer]);
    let verified = verify_bundle(Cursor::new(bundle), &[public], 1).unwrap();
    let os = verified.manifest.os.unwrap();
    assert_eq!(
        (os.rootfs.path.as_str(), os.rootfs.size),
        ("payload/os/rootfs.img", 100_000)
    );
    assert_eq!(verified.manifest.payload.len(), 2);
}

#[test]
fn built_manifests_match_the_published_json_schema() {
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bundle-manifest.schema.json");
    let schema: Value = serde_json::from_slice(&fs::read(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();

    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    fs::write(dir.path().join("rootfs.img"), b"rootfs").unwrap();
    let (signer, _) = key();
    let mut builder = builder_with_image(dir.path(), LayerCompression::Gzip);
    builder
        .add_os_payload(&OsImage {
            rootfs: dir.path().join("rootfs.img"),
            verity: dir.path().join("rootfs.img"),
            root_hash: "ab".repeat(32),
            root_hash_signature: Some("cd".repeat(64)),
        })
        .unwrap();
    let bundle = build(&builder, &[&signer]);
    let manifest = inspect_bundle(bundle.as_slice()).unwrap().manifest;
    let value = serde_json::to_value(&manifest).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| error.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let mut broken = value.clone();
    broken["payload"][0]["path"] = json!("payload/../etc/passwd");
    broken["architecture"] = json!("mips");
    assert!(!validator.is_valid(&broken));

    // A signed expiry is part of the published schema, in its one spelling.
    builder.expires_at(1_800_000_000).unwrap();
    let bundle = build(&builder, &[&signer]);
    let manifest = inspect_bundle(bundle.as_slice()).unwrap().manifest;
    assert_eq!(manifest.expires.as_deref(), Some("2027-01-15T08:00:00Z"));
    let value = serde_json::to_value(&manifest).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| error.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    for bad in [
        json!("2027-01-15T08:00:00+00:00"),
        json!("2027-01-15T08:00:00.5Z"),
        json!("2027-13-15T08:00:00Z"),
        json!("soon"),
        json!(1_800_000_000),
    ] {
        let mut broken = value.clone();
        broken["expires"] = bad.clone();
        assert!(!validator.is_valid(&broken), "{bad}");
    }
}

#[test]
fn an_expiry_is_signed_reproducibly_and_refused_when_malformed() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (signer, public) = key();
    let mut builder = builder_with_image(dir.path(), LayerCompression::None);
    builder.expires_at(1_700_086_400).unwrap();
    let first = build(&builder, &[&signer]);
    let second = build(&builder, &[&signer]);
    assert!(first == second, "the same expiry gave different bytes");
    let verified = verify_bundle(first.as_slice(), &[public], 1).unwrap();
    assert_eq!(
        verified.manifest.expires.as_deref(),
        Some("2023-11-15T22:13:20Z")
    );
    assert_eq!(verified.manifest.expires_at(), Some(1_700_086_400));
    let without = build(
        &builder_with_image(dir.path(), LayerCompression::None),
        &[&signer],
    );
    assert!(first != without, "the expiry is not in the signed bytes");

    // A manifest whose expiry is not in the one form, or not after its creation, does not parse,
    // whoever signed it.
    let manifest = verified.manifest;
    for (expires, expected) in [
        ("2023-11-15T22:13:20+00:00", "not an RFC 3339 UTC time"),
        ("2023-11-14T22:13:20Z", "not after created"),
        ("2001-01-01T00:00:00Z", "not after created"),
    ] {
        let mut changed = manifest.clone();
        changed.expires = Some(expires.to_owned());
        let bytes = to_canonical_bytes(&serde_json::to_value(&changed).unwrap());
        let error = edge_bundle::BundleManifest::from_canonical_bytes(&bytes)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{expires}: {error}");
    }
}

#[test]
fn sources_changed_after_hashing_fail_the_build() {
    let dir = TempDir::new().unwrap();
    make_rootfs(dir.path(), false);
    let (signer, _) = key();
    let builder = builder_with_image(dir.path(), LayerCompression::None);
    fs::write(dir.path().join("etc/sensor.conf"), b"interval=9\n").unwrap();
    let error = builder.build(&[&signer], Vec::new()).unwrap_err();
    assert!(
        matches!(error, BundleError::SourceChanged { ref path } if path.ends_with("etc/sensor.conf")),
        "{error}"
    );

    fs::write(dir.path().join("os.img"), b"v1").unwrap();
    let mut builder = BundleBuilder::new(header()).unwrap();
    let os = OsImage {
        rootfs: dir.path().join("os.img"),
        verity: dir.path().join("os.img"),
        root_hash: "ab".repeat(32),
        root_hash_signature: None,
    };
    builder.add_os_payload(&os).unwrap();
    fs::write(dir.path().join("os.img"), b"v2").unwrap();
    let error = builder.build(&[&signer], Vec::new()).unwrap_err();
    assert!(
        matches!(error, BundleError::SourceChanged { .. }),
        "{error}"
    );
}
