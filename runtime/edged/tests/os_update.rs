//! OS updates (`src/os_update.rs`): a bundle's OS payload is written to the slot that is not
//! running, each block checked against the signed root hash, and staged to boot next. It belongs
//! to the deployment that carried it: when that deployment is not kept (its trial fails, or
//! edged stops before the trial is decided), the slot is made unbootable again, so the device
//! does not reboot into an OS whose deployment was rolled back.

mod common;

use std::fs::File;
use std::path::Path;

use common::{Key, TestDevice, os_bundle};
use edge_bundle::{OsPayload, PayloadFile};
use edge_init::boot::{Slot, SlotState, boot_order};
use edge_init::gpt::{Partition, Table, Uuid};
use edged::os_update::{OsConfig, install, withdraw};

const MIB: u64 = 1 << 20;

/// A disk with 1 MiB root, verity and signature partitions for both OS slots; slot A runs,
/// confirmed, and slot B is empty.
fn disk(path: &Path) {
    let names = [
        "root-a",
        "root-a-verity",
        "root-a-verity-sig",
        "root-b",
        "root-b-verity",
        "root-b-verity-sig",
    ];
    let table = Table {
        disk_guid: Uuid::from_bytes([1; 16]),
        disk_sectors: 8 * MIB / 512,
        partitions: names
            .iter()
            .enumerate()
            .map(|(index, name)| Partition {
                type_guid: Uuid::from_bytes([2; 16]),
                unique_guid: Uuid::from_bytes([index as u8 + 3; 16]),
                first_lba: (index as u64 + 1) * MIB / 512,
                last_lba: (index as u64 + 2) * MIB / 512 - 1,
                attributes: if *name == "root-a" {
                    SlotState::fresh(2, 3).confirmed().to_attributes(0)
                } else {
                    0
                },
                name: (*name).into(),
            })
            .collect(),
    };
    let mut file = File::create(path).unwrap();
    file.set_len(8 * MIB).unwrap();
    table.write(&mut file).unwrap();
}

fn order(path: &Path) -> Vec<Slot> {
    let (a, b) = states(path);
    boot_order(a, b)
}

/// A device with an `[os]` disk, running OS slot A, and an OS-carrying bundle in its folder.
fn device_with_disk() -> (tempfile::TempDir, TestDevice, std::path::PathBuf, String) {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let scratch = tempfile::tempdir().unwrap();
    let disk_path = scratch.path().join("disk.img");
    disk(&disk_path);
    let device = TestDevice::new(
        &[&key],
        &format!(
            "[os]\ndisk = {:?}\nboot_tries = 2\n",
            disk_path.display().to_string()
        ),
    );
    let bundle = device.write_bundle("os.edgebundle", &os_bundle(&key, None, true));
    let bundle = bundle.to_str().unwrap().to_owned();
    drop(keys);
    (scratch, device, disk_path, bundle)
}

#[test]
fn a_kept_deployment_keeps_its_os_update_staged() {
    let (_scratch, device, disk_path, bundle) = device_with_disk();
    let output = device
        .command("none", &["apply", &bundle])
        .env("EDGE_OS_SLOT", "A")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(order(&disk_path), vec![Slot::B, Slot::A]);
}

#[test]
fn a_rolled_back_trial_withdraws_its_os_update() {
    let (_scratch, device, disk_path, bundle) = device_with_disk();
    let output = device
        .command("failing", &["apply", &bundle])
        .env("EDGE_OS_SLOT", "A")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(order(&disk_path), vec![Slot::A]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("withdrew the OS update"), "{stderr}");
}

#[test]
fn a_trial_interrupted_by_a_crash_withdraws_its_os_update_at_recovery() {
    let (_scratch, device, disk_path, bundle) = device_with_disk();
    let crashed = device
        .command("none", &["apply", &bundle])
        .env("EDGE_OS_SLOT", "A")
        .env("EDGED_FAILPOINT", "health-wait")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "{crashed:?}");
    // The crash came after the OS slot was staged and the switch recorded.
    assert_eq!(order(&disk_path), vec![Slot::B, Slot::A]);
    let recovered = device
        .command("none", &["recover"])
        .env("EDGE_OS_SLOT", "A")
        .output()
        .unwrap();
    assert!(recovered.status.success(), "{recovered:?}");
    assert_eq!(order(&disk_path), vec![Slot::A]);
}

/// A staged deployment directory with a 64 KiB root and its tree; returns the payload.
fn payload(deployment: &Path, tamper: bool) -> OsPayload {
    let rootfs: Vec<u8> = (0..64 * 1024).map(|index| (index % 251) as u8).collect();
    let hash = edge_verity::build_from_bytes(&rootfs, &edge_verity::Params::derived()).unwrap();
    let mut written = rootfs.clone();
    if tamper {
        written[40_000] ^= 1;
    }
    std::fs::create_dir_all(deployment.join("payload/os")).unwrap();
    std::fs::write(deployment.join("payload/os/rootfs.img"), &written).unwrap();
    std::fs::write(deployment.join("payload/os/verity.img"), hash.bytes()).unwrap();
    let file = |path: &str, size: usize| PayloadFile {
        path: path.into(),
        sha256: String::new(),
        size: size as u64,
    };
    OsPayload {
        rootfs: file("payload/os/rootfs.img", rootfs.len()),
        verity: file("payload/os/verity.img", hash.bytes().len()),
        root_hash: hash.root_hash().to_string(),
        root_hash_signature: Some("00".repeat(64)),
    }
}

fn states(path: &Path) -> (SlotState, SlotState) {
    let table = Table::read(&mut File::open(path).unwrap()).unwrap();
    let state = |name: &str| SlotState::from_attributes(table.find(name).unwrap().1.attributes);
    (state("root-a"), state("root-b"))
}

/// A test disk and a staged deployment directory (`DIR/deployment`) holding an OS payload,
/// tampered with or not, and the `[os]` configuration naming the disk.
fn written_payload(tamper: bool) -> (tempfile::TempDir, OsConfig, OsPayload) {
    let dir = tempfile::tempdir().unwrap();
    let disk_path = dir.path().join("disk.img");
    disk(&disk_path);
    let os = payload(&dir.path().join("deployment"), tamper);
    let config = OsConfig {
        disk: disk_path,
        boot_tries: 2,
    };
    (dir, config, os)
}

#[test]
fn an_update_is_written_to_the_other_slot_and_boots_next() {
    let (dir, config, os) = written_payload(false);
    let disk_path = config.disk.clone();
    let slot = install(&config, Slot::A, &dir.path().join("deployment"), &os).unwrap();
    assert_eq!(slot, Slot::B);
    let disk_bytes = std::fs::read(&disk_path).unwrap();
    let written = std::fs::read(dir.path().join("deployment/payload/os/rootfs.img")).unwrap();
    assert_eq!(
        &disk_bytes[(4 * MIB) as usize..(4 * MIB) as usize + written.len()],
        &written[..]
    );
    assert_eq!(order(&disk_path), vec![Slot::B, Slot::A]);
    let (_, b) = states(&disk_path);
    assert_eq!((b.tries, b.successful), (2, false));
}

#[test]
fn a_withdrawn_update_never_boots_and_a_confirmed_fallback_is_kept() {
    let (dir, config, os) = written_payload(false);
    let disk_path = config.disk.clone();
    install(&config, Slot::A, &dir.path().join("deployment"), &os).unwrap();
    assert!(withdraw(&config, Slot::A).unwrap());
    assert_eq!(order(&disk_path), vec![Slot::A]);
    assert!(states(&disk_path).0.successful);
    // Nothing is pending any more, and from slot B's point of view slot A is its
    // confirmed fallback: neither is taken back.
    assert!(!withdraw(&config, Slot::A).unwrap());
    assert!(!withdraw(&config, Slot::B).unwrap());
    let (a, _) = states(&disk_path);
    assert!(a.bootable() && a.successful);
}

#[test]
fn a_root_that_does_not_match_its_signed_hash_is_refused_and_the_slot_left_unbootable() {
    let (dir, config, os) = written_payload(true);
    let disk_path = config.disk.clone();
    let error = install(&config, Slot::A, &dir.path().join("deployment"), &os).unwrap_err();
    assert!(error.to_string().contains("does not verify"), "{error}");
    assert_eq!(order(&disk_path), vec![Slot::A]);
}
