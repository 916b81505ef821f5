//! OS images end to end: `edgec image build` on the qemu-x86_64 recipe, then `edgec image
//! boot-test` under QEMU (TCG) on the image as built and on copies with one slot damaged: a
//! flipped byte in the root, a root hash signed by a key the initramfs does not trust. Needs
//! `qemu-system-x86`, `e2fsprogs` and Debian's package archive (`.ci/setup`); the static edged
//! and edge-init are built here, as `images/README.md` says.
//!
//! Every test here builds OS images, and all but one boot them, which takes about ten minutes in
//! all; their names start with `qemu_` so that `cargo test --workspace -- --skip qemu_` runs the
//! rest of the suite on its own (CI runs everything).

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use edge_bundle::{FileSigner, Signer};
use edge_image::qemu::{self, BootTarget};
use edge_init::boot::SlotState;
use edge_init::gpt::Table;
use serde_json::Value;

const EPOCH: &str = "1700000000";

struct Built {
    /// Keeps the temporary directory alive for the whole test binary.
    _scratch: tempfile::TempDir,
    key: PathBuf,
    image: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn edgec() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgec"));
    command.env("SOURCE_DATE_EPOCH", EPOCH);
    command
}

/// The static edged and edge-init, built once with the flags the README gives.
fn static_binaries() -> (PathBuf, PathBuf) {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("image-static");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "edged",
            "-p",
            "edge-init",
        ])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        )
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static binaries failed");
    let release = target_dir.join("x86_64-unknown-linux-gnu/release");
    (release.join("edged"), release.join("edge-init"))
}

fn build_image(key: &Path, output: &Path) {
    let (edged, init) = static_binaries();
    build_image_with(key, &edged, &init, output);
}

fn build_image_with(key: &Path, edged: &Path, init: &Path, output: &Path) {
    let result = edgec()
        .args(["image", "build"])
        .arg(workspace().join("recipes/images/qemu-x86_64.toml"))
        .arg("--key")
        .arg(key)
        .arg("--edged")
        .arg(edged)
        .arg("--init")
        .arg(init)
        .arg("-o")
        .arg(output)
        .output()
        .expect("edgec runs");
    assert!(
        result.status.success(),
        "image build failed:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let scratch = tempfile::tempdir().unwrap();
        let key = scratch.path().join("os.key");
        let keygen = edgec().args(["keygen", "-o"]).arg(&key).output().unwrap();
        assert!(keygen.status.success());
        let image = scratch.path().join("image");
        build_image(&key, &image);
        Built {
            _scratch: scratch,
            key,
            image,
        }
    })
}

/// A copy of the built image whose disk `damage` may change, in its own directory.
fn variant(damage: impl FnOnce(&mut std::fs::File, &Value)) -> tempfile::TempDir {
    let built = built();
    let directory = tempfile::tempdir().unwrap();
    for name in [
        "vmlinuz",
        "vmlinux",
        "initramfs.cpio",
        "disk.img",
        "manifest.json",
    ] {
        std::fs::copy(built.image.join(name), directory.path().join(name)).unwrap();
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(built.image.join("manifest.json")).unwrap()).unwrap();
    let mut disk = std::fs::File::options()
        .read(true)
        .write(true)
        .open(directory.path().join("disk.img"))
        .unwrap();
    damage(&mut disk, &manifest);
    disk.sync_all().unwrap();
    directory
}

fn partition_offset(manifest: &Value, name: &str) -> u64 {
    manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|partition| partition["name"] == name)
        .and_then(|partition| partition["offset"].as_u64())
        .unwrap()
}

/// Boots with `edgec image boot-test`; returns whether it reported ready and everything printed.
fn boot(image: &Path) -> (bool, String) {
    let result = edgec()
        .args([
            "image",
            "boot-test",
            "--timeout",
            "150s",
            "--boots",
            "2",
            "--verbose",
        ])
        .arg(image)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (result.status.success(), text)
}

#[test]
fn qemu_slot_a_boots_and_edged_runs_the_baked_in_deployment() {
    let (ready, console) = boot(&built().image);
    assert!(ready, "{console}");
    assert!(
        console.contains("edged: ready: deployment factory version 1 running")
            && console.contains("OS slot A"),
        "{console}"
    );
    assert!(
        console.contains("applied deployment factory version 1"),
        "{console}"
    );
}

#[test]
fn qemu_a_flipped_byte_in_root_a_is_caught_and_slot_b_boots() {
    let image = variant(|disk, manifest| {
        let rootfs = std::fs::metadata(built().image.join("rootfs.squashfs")).unwrap();
        let at = partition_offset(manifest, "root-a") + rootfs.len() / 2;
        let mut byte = [0u8; 1];
        disk.seek(SeekFrom::Start(at)).unwrap();
        std::io::Read::read_exact(disk, &mut byte).unwrap();
        disk.seek(SeekFrom::Start(at)).unwrap();
        disk.write_all(&[byte[0] ^ 0x01]).unwrap();
    });
    let (ready, console) = boot(image.path());
    assert!(
        console.contains("edge-init: slot A refused: dm-verity rejected"),
        "{console}"
    );
    assert!(!console.contains("OS slot A"), "{console}");
    assert!(ready && console.contains("OS slot B"), "{console}");
}

#[test]
fn qemu_a_root_hash_signed_by_an_untrusted_key_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let other = scratch.path().join("other.key");
    assert!(
        edgec()
            .args(["keygen", "-o"])
            .arg(&other)
            .output()
            .unwrap()
            .status
            .success()
    );
    let signature: Value =
        serde_json::from_slice(&std::fs::read(built().image.join("root-hash.sig.json")).unwrap())
            .unwrap();
    let root_hash = signature["rootHash"].as_str().unwrap().to_owned();
    let forged = FileSigner::from_file(&other)
        .unwrap()
        .sign(&hex_bytes(&root_hash))
        .unwrap();
    let forged_json = serde_json::json!({
        "rootHash": root_hash,
        "keyId": "untrusted",
        "signature": forged.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    let image = variant(|disk, manifest| {
        let at = partition_offset(manifest, "root-a-verity-sig");
        disk.seek(SeekFrom::Start(at)).unwrap();
        let mut bytes = serde_json::to_vec(&forged_json).unwrap();
        bytes.resize(4096, 0);
        disk.write_all(&bytes).unwrap();
    });
    let (ready, console) = boot(image.path());
    assert!(
        console.contains(&format!(
            "edge-init: slot A refused: the root hash {root_hash} is not signed by the trusted key"
        )),
        "{console}"
    );
    assert!(ready && console.contains("OS slot B"), "{console}");

    let image = variant(|disk, manifest| {
        for slot in ["root-a-verity-sig", "root-b-verity-sig"] {
            disk.seek(SeekFrom::Start(partition_offset(manifest, slot)))
                .unwrap();
            let mut bytes = serde_json::to_vec(&forged_json).unwrap();
            bytes.resize(4096, 0);
            disk.write_all(&bytes).unwrap();
        }
    });
    let (ready, console) = boot(image.path());
    assert!(!ready, "{console}");
    assert!(
        console.contains("edge-init: no bootable slot left"),
        "{console}"
    );
}

#[test]
fn qemu_an_unconfirmed_slot_that_never_comes_up_spends_its_tries_and_the_device_falls_back() {
    // Slot B gets a root whose "edged" is busybox (static, so it runs, but it is no edged): the
    // init reaches the switch, edged cannot install the bundle, and the device reboots. B is
    // preferred and unconfirmed with two tries; after them, A boots.
    let scratch = tempfile::tempdir().unwrap();
    let broken = scratch.path().join("broken");
    let (_, init) = static_binaries();
    build_image_with(&built().key, Path::new("/bin/busybox"), &init, &broken);
    let broken_disk = std::fs::read(broken.join("disk.img")).unwrap();
    let image = variant(|disk, manifest| {
        for name in ["root-b", "root-b-verity", "root-b-verity-sig"] {
            let partition = manifest["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|partition| partition["name"] == name)
                .unwrap();
            let offset = partition["offset"].as_u64().unwrap() as usize;
            let size = partition["size"].as_u64().unwrap() as usize;
            disk.seek(SeekFrom::Start(offset as u64)).unwrap();
            disk.write_all(&broken_disk[offset..offset + size]).unwrap();
        }
        let mut table = Table::read(disk).unwrap();
        for partition in &mut table.partitions {
            if partition.name == "root-b" {
                partition.attributes = SlotState::fresh(3, 2).to_attributes(partition.attributes);
            }
        }
        table.write(disk).unwrap();
    });
    let result = edgec()
        .args([
            "image",
            "boot-test",
            "--timeout",
            "150s",
            "--boots",
            "4",
            "--verbose",
        ])
        .arg(image.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&result.stdout).into_owned();
    let console = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(result.status.success(), "{report}{console}");
    for expected in [
        "edge-init: booting slot B (unconfirmed, 1 tries left)",
        "edge-init: booting slot B (unconfirmed, 0 tries left)",
        "edge-init: edged could not apply the initial bundle",
        "edge-init: booting slot A (unconfirmed, 2 tries left)",
    ] {
        assert!(console.contains(expected), "{expected}:\n{console}");
    }
    assert!(report.contains("boot 1: no ready line"), "{report}");
    assert!(report.contains("boot 2: no ready line"), "{report}");
    assert!(
        report.contains("boot 3: ready") && report.contains("OS slot A"),
        "{report}"
    );
}

#[test]
fn qemu_an_os_update_through_a_bundle_is_written_to_slot_b_which_boots_next() {
    // Version 2 of the deployment, built into an image whose update.edgebundle carries its root.
    let scratch = tempfile::tempdir().unwrap();
    let recipes = scratch.path().join("recipes");
    std::fs::create_dir_all(recipes.join("images")).unwrap();
    std::fs::create_dir_all(recipes.join("hardware")).unwrap();
    for file in ["images/qemu-x86_64.toml", "hardware/qemu-x86_64.edge"] {
        std::fs::copy(workspace().join("recipes").join(file), recipes.join(file)).unwrap();
    }
    let program = std::fs::read_to_string(workspace().join("recipes/images/factory.edge")).unwrap();
    assert!(program.contains("version = 1"));
    std::fs::write(
        recipes.join("images/factory.edge"),
        program.replace("version = 1", "version = 2"),
    )
    .unwrap();
    let (edged, init) = static_binaries();
    let v2 = scratch.path().join("v2");
    let result = edgec()
        .args(["image", "build"])
        .arg(recipes.join("images/qemu-x86_64.toml"))
        .arg("--key")
        .arg(&built().key)
        .arg("--edged")
        .arg(edged)
        .arg("--init")
        .arg(init)
        .arg("-o")
        .arg(&v2)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );

    let device = variant(|_, _| {});
    let target = BootTarget::in_directory(device.path());
    let timeout = Duration::from_secs(150);
    let mut console = String::new();
    let mut echo = |line: &str| {
        console.push_str(line);
        console.push('\n');
    };
    let first = qemu::boot(&target, timeout, &mut echo).unwrap();
    assert!(
        first
            .ready
            .as_deref()
            .is_some_and(|line| line.contains("OS slot A")),
        "{console}"
    );

    // The update arrives in edged's inbox on the data partition.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(device.path().join("manifest.json")).unwrap())
            .unwrap();
    let data = manifest["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|partition| partition["name"] == "data")
        .unwrap();
    let (offset, size) = (
        data["offset"].as_u64().unwrap(),
        data["size"].as_u64().unwrap(),
    );
    let disk_path = device.path().join("disk.img");
    let mut disk = std::fs::read(&disk_path).unwrap();
    let data_path = scratch.path().join("data.ext4");
    std::fs::write(&data_path, &disk[offset as usize..(offset + size) as usize]).unwrap();
    // The first boot was cut off at its ready line: replay ext4's journal first, or the kernel
    // would replay it over debugfs's changes at the next mount.
    let fsck = Command::new("e2fsck")
        .arg("-fy")
        .arg(&data_path)
        .output()
        .unwrap();
    assert!(fsck.status.code().is_some_and(|code| code <= 1), "{fsck:?}");
    for request in [
        "mkdir inbox".to_owned(),
        format!(
            "write {} inbox/update.edgebundle",
            v2.join("update.edgebundle").display()
        ),
    ] {
        let status = Command::new("debugfs")
            .args(["-w", "-R", &request])
            .arg(&data_path)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    disk[offset as usize..(offset + size) as usize]
        .copy_from_slice(&std::fs::read(&data_path).unwrap());
    std::fs::write(&disk_path, &disk).unwrap();

    let second = qemu::boot_with(&target, timeout, false, &mut echo).unwrap();
    assert!(!second.timed_out, "{console}");
    let third = qemu::boot(&target, timeout, &mut echo).unwrap();
    assert!(
        console.contains("OS update written to slot B; exiting to reboot into it"),
        "{console}"
    );
    let ready = third.ready.unwrap_or_default();
    assert!(
        ready.contains("deployment factory version 2 running") && ready.contains("OS slot B"),
        "{console}"
    );
}

#[test]
fn qemu_the_same_recipe_and_inputs_build_byte_identical_images() {
    let again = tempfile::tempdir().unwrap();
    build_image(&built().key, again.path());
    for name in [
        "disk.img",
        "vmlinux",
        "initramfs.cpio",
        "rootfs.squashfs",
        "rootfs.verity",
        "manifest.json",
    ] {
        let first = std::fs::read(built().image.join(name)).unwrap();
        let second = std::fs::read(again.path().join(name)).unwrap();
        let difference = first
            .iter()
            .zip(&second)
            .position(|(a, b)| a != b)
            .or((first.len() != second.len()).then_some(first.len().min(second.len())));
        assert_eq!(
            difference, None,
            "{name} differs between two builds at this byte"
        );
    }
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}
