//! Loads a packaged module image into a real Docker engine, when one is
//! reachable, to prove the layout is a valid `docker load` archive.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use edge_bundle::{
    Architecture, BundleBuilder, BundleHeader, FileSigner, ImageConfig, LayerCompression,
    generate_keypair, load_public_key_pem, verify_bundle_with,
};
use tempfile::TempDir;

fn docker(args: &[&str]) -> Option<Output> {
    Command::new("docker").args(args).output().ok()
}

/// Whether a Docker engine answers (the client alone is not enough).
fn engine_available() -> bool {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .is_some_and(|output| output.status.success())
}

/// Builds a signed bundle with one image, verifies it, and returns the
/// image's layout as a standalone tar, the way a device would hand it to
/// `docker load`.
fn image_archive(
    configure: impl Fn(&mut BundleBuilder, &Path),
    module: &str,
    work: &Path,
) -> Vec<u8> {
    let pair = generate_keypair().unwrap();
    let signer = FileSigner::from_pem(&pair.private_pem).unwrap();
    let public = load_public_key_pem(&pair.public_pem).unwrap();
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: "docker-test".to_owned(),
        compatible: "test".to_owned(),
        architecture: Architecture::Amd64,
        version: 1,
        source_date_epoch: 1_700_000_000,
    })
    .unwrap();
    configure(&mut builder, work);
    let bundle = builder.build(&[&signer], Vec::new()).unwrap().writer;
    let prefix = format!("payload/images/{module}/");
    let mut archive = tar::Builder::new(Vec::new());
    verify_bundle_with(bundle.as_slice(), &[public], 1, |file, reader| {
        if let Some(name) = file.path.strip_prefix(&prefix) {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            archive.append_data(&mut header, name, bytes.as_slice())?;
        }
        Ok(())
    })
    .unwrap();
    archive.into_inner().unwrap()
}

/// Loads an archive and runs the image, returning what it printed.
fn load_and_run(archive: &[u8], work: &Path, reference: &str) -> String {
    let path = work.join(format!("{}.tar", reference.replace([':', '/'], "-")));
    fs::write(&path, archive).unwrap();
    let loaded = docker(&["load", "-i", path.to_str().unwrap()]).unwrap();
    assert!(
        loaded.status.success(),
        "docker load failed: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let inspect = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Architecture}} {{.Os}}",
        reference,
    ])
    .unwrap();
    assert!(inspect.status.success(), "image {reference} did not appear");
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        "amd64 linux"
    );
    let run = docker(&["run", "--rm", "--network", "none", reference]).unwrap();
    drop(docker(&["image", "rm", "-f", reference]));
    assert!(
        run.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

#[test]
fn packaged_images_load_into_docker() {
    if !engine_available() {
        println!(
            "SKIPPED: no Docker engine answers `docker version`; start dockerd to run this test"
        );
        return;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|path| Path::new(path).exists());
    let busybox =
        busybox.expect("busybox is missing: install it with `apt-get install -y busybox-static`");
    let work = TempDir::new().unwrap();
    let rootfs = work.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    symlink("busybox", rootfs.join("bin/sh")).unwrap();

    let config = ImageConfig {
        reference: "edgec-test/busybox:gzip".to_owned(),
        architecture: Architecture::Amd64,
        os: "linux".to_owned(),
        entrypoint: vec!["/bin/sh".to_owned(), "-c".to_owned()],
        cmd: vec!["echo \"hello from $GREETER\"".to_owned()],
        env: vec!["GREETER=edgec".to_owned(), "PATH=/bin".to_owned()],
        working_dir: None,
        compression: LayerCompression::Gzip,
    };
    let gzip = image_archive(
        |builder, _| {
            builder
                .add_local_image("busybox", &rootfs, &config)
                .unwrap();
        },
        "busybox",
        work.path(),
    );
    assert_eq!(
        load_and_run(&gzip, work.path(), "edgec-test/busybox:gzip"),
        "hello from edgec\n"
    );

    // The same image as an OCI layout input, repackaged byte for byte.
    let layout = work.path().join("layout");
    let mut unpacked = tar::Archive::new(gzip.as_slice());
    unpacked.unpack(&layout).unwrap();
    let copied = image_archive(
        |builder, _| {
            builder
                .add_oci_layout("copied", &layout, "edgec-test/busybox:layout")
                .unwrap();
        },
        "copied",
        work.path(),
    );
    assert_eq!(
        load_and_run(&copied, work.path(), "edgec-test/busybox:layout"),
        "hello from edgec\n"
    );

    let plain = ImageConfig {
        reference: "edgec-test/busybox:plain".to_owned(),
        compression: LayerCompression::None,
        ..config.clone()
    };
    let uncompressed = image_archive(
        |builder, _| {
            builder.add_local_image("plain", &rootfs, &plain).unwrap();
        },
        "plain",
        work.path(),
    );
    assert_eq!(
        load_and_run(&uncompressed, work.path(), "edgec-test/busybox:plain"),
        "hello from edgec\n"
    );
}
