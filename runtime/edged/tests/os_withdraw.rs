//! An OS update belongs to the deployment that carried it: when that deployment is not kept
//! (its trial fails, or edged stops before the trial is decided), the OS slot it was written
//! to is made unbootable again, so the device does not reboot into an OS whose deployment was
//! rolled back.

mod common;

use std::fs::File;
use std::path::Path;

use common::{Key, TestDevice, os_bundle};
use edge_init::boot::{Slot, SlotState, boot_order, read_slot_state};
use edge_init::gpt::{Partition, Table, Uuid};

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
    let table = Table::read(&mut File::open(path).unwrap()).unwrap();
    let state = |slot| read_slot_state(&table, slot).unwrap();
    boot_order(state(Slot::A), state(Slot::B))
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
