//! Operating system updates: a bundle's OS payload (root file system, dm-verity tree, signed
//! root hash) is written to the OS slot that is not running, each block checked against the
//! signed root hash while it is written, and that slot is then marked to be tried next in the
//! partition table (`edge_init::boot`). The init boots it after the reboot and confirms it once
//! edged is ready with its deployment; a slot that fails or never comes up falls back to the
//! running one. See `images/README.md`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use edge_bundle::OsPayload;
use edge_init::boot::{Slot, SlotState, read_slot_state, stage_update, write_slot_states};
use edge_init::config::RootHashSignature;
use edge_init::gpt::Table;
use edge_verity::{RootHash, VerifiedTree};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The environment variable through which the init tells edged which OS slot is running.
pub const BOOTED_SLOT_VARIABLE: &str = "EDGE_OS_SLOT";

/// `[os]` in `device.toml`: where the OS slots are.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsConfig {
    /// The disk holding the GPT with the root slots.
    pub disk: PathBuf,
    /// Boots an updated slot gets to come up before the device falls back.
    #[serde(default = "three")]
    pub boot_tries: u8,
}

fn three() -> u8 {
    3
}

/// The OS slot the device runs, from the init's environment variable.
pub fn booted_slot() -> Result<Slot> {
    match std::env::var(BOOTED_SLOT_VARIABLE).as_deref() {
        Ok("A") => Ok(Slot::A),
        Ok("B") => Ok(Slot::B),
        _ => Err(Error::Refused(format!(
            "the bundle carries an OS update, but {BOOTED_SLOT_VARIABLE} does not say which OS slot is running (edged was not started by edge-init)"
        ))),
    }
}

/// Checks everything about an OS payload that needs no payload byte: the device has `[os]`,
/// the root hash parses and is signed, and the running OS slot is known. It runs when the
/// bundle's head is accepted, so such a bundle is refused before anything is written; returns
/// the configuration and the running slot.
pub fn check<'a>(config: Option<&'a OsConfig>, os: &OsPayload) -> Result<(&'a OsConfig, Slot)> {
    let refuse = |why: &str| Error::Refused(format!("OS update: {why}"));
    let config = config.ok_or_else(|| {
        Error::Refused(
            "the bundle carries an OS update, but device.toml has no [os] section".into(),
        )
    })?;
    os.root_hash
        .parse::<RootHash>()
        .map_err(|error| refuse(&format!("bad root hash: {error}")))?;
    if os.root_hash_signature.is_none() {
        return Err(refuse("the root hash is not signed"));
    }
    Ok((config, booted_slot()?))
}

/// Writes the payload staged in `deployment` (`payload/os/…`) to the slot that is not
/// `booted` and stages it for the next boot; returns that slot.
pub fn install(config: &OsConfig, booted: Slot, deployment: &Path, os: &OsPayload) -> Result<Slot> {
    let target = booted.other();
    let refuse = |why: String| Error::Refused(format!("OS update: {why}"));
    let root_hash: RootHash = os
        .root_hash
        .parse()
        .map_err(|error| refuse(format!("bad root hash: {error}")))?;
    let signature_hex = os
        .root_hash_signature
        .clone()
        .ok_or_else(|| refuse("the root hash is not signed".into()))?;
    let signature = RootHashSignature {
        root_hash: os.root_hash.clone(),
        key_id: String::new(),
        signature: signature_hex,
    };
    let rootfs_path = deployment.join(&os.rootfs.path);
    let verity_path = deployment.join(&os.verity.path);
    let verity = std::fs::read(&verity_path).map_err(Error::state("read", &verity_path))?;
    let tree = VerifiedTree::open(&verity, &root_hash).map_err(|error| {
        refuse(format!(
            "the verity tree does not match the root hash: {error}"
        ))
    })?;
    let disk_error = |action: &'static str| Error::state(action, &config.disk);
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&config.disk)
        .map_err(disk_error("open"))?;
    let mut table = Table::read(&mut disk).map_err(|error| refuse(error.to_string()))?;
    let place = |name: String| {
        table
            .find(&name)
            .map(|(_, partition)| (partition.offset(), partition.size()))
            .ok_or_else(|| refuse(format!("the disk has no {name} partition")))
    };
    let (root_offset, root_size) = place(target.root_name())?;
    let (verity_offset, verity_size) = place(target.verity_name())?;
    let (signature_offset, signature_size) = place(target.signature_name())?;
    let signature_bytes =
        serde_json::to_vec_pretty(&signature).map_err(|error| refuse(error.to_string()))?;
    if os.rootfs.size > root_size
        || verity.len() as u64 > verity_size
        || signature_bytes.len() as u64 > signature_size
    {
        return Err(refuse(format!(
            "the payload does not fit slot {target}'s partitions"
        )));
    }
    // The slot is unbootable while it is written: a crash half-way leaves the running slot the
    // only candidate.
    set_states(&mut table, &mut disk, &[(target, SlotState::default())])?;
    let rootfs = File::open(&rootfs_path).map_err(Error::state("open", &rootfs_path))?;
    let covered = tree.data_blocks() * edge_verity::BLOCK_SIZE as u64;
    let mut reader = tree.reader(rootfs.take(covered));
    disk.seek(SeekFrom::Start(root_offset))
        .map_err(disk_error("seek"))?;
    let written = std::io::copy(&mut reader, &mut disk)
        .map_err(|error| refuse(format!("the root file system does not verify: {error}")))?;
    if written != covered {
        return Err(refuse(format!(
            "the root file system ends after {written} of {covered} bytes"
        )));
    }
    disk.seek(SeekFrom::Start(verity_offset))
        .map_err(disk_error("seek"))?;
    disk.write_all(&verity).map_err(disk_error("write"))?;
    let mut padded = signature_bytes;
    padded.resize(4096, 0);
    disk.seek(SeekFrom::Start(signature_offset))
        .map_err(disk_error("seek"))?;
    disk.write_all(&padded).map_err(disk_error("write"))?;
    disk.sync_all().map_err(disk_error("sync"))?;
    let current =
        |slot: Slot| read_slot_state(&table, slot).map_err(|error| refuse(error.to_string()));
    let (a, b) = stage_update(
        target,
        config.boot_tries,
        current(Slot::A)?,
        current(Slot::B)?,
    );
    // Both slots' states in one write of the table, so no crash can leave one updated alone.
    set_states(&mut table, &mut disk, &[(Slot::A, a), (Slot::B, b)])?;
    Ok(target)
}

/// Takes back an update [`install`] staged in the OS slot that is not `booted`, because the
/// deployment that carried it is not kept (its switch could not be recorded, or its trial
/// rolled back): the slot is made unbootable, so the next boot stays on the running OS. Only a
/// pending update is taken back: a slot that has booted and been confirmed is the running OS's
/// fallback and is left as it is, as is a slot that is not bootable anyway. Returns whether it
/// took an update back.
pub fn withdraw(config: &OsConfig, booted: Slot) -> Result<bool> {
    let pending = booted.other();
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&config.disk)
        .map_err(Error::state("open", &config.disk))?;
    let unreadable = |error: edge_init::gpt::GptError| {
        Error::CorruptState(format!(
            "OS update: cannot read the partition table of {}: {error}",
            config.disk.display()
        ))
    };
    let mut table = Table::read(&mut disk).map_err(unreadable)?;
    let state = read_slot_state(&table, pending).map_err(unreadable)?;
    if state.successful || !state.bootable() {
        return Ok(false);
    }
    set_states(&mut table, &mut disk, &[(pending, state.abandoned())])?;
    Ok(true)
}

fn set_states(table: &mut Table, disk: &mut File, states: &[(Slot, SlotState)]) -> Result<()> {
    write_slot_states(table, disk, states).map_err(|error| {
        Error::Refused(format!(
            "OS update: cannot write the partition table: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use edge_bundle::PayloadFile;
    use edge_init::gpt::{Partition, Uuid};

    use super::*;

    const MIB: u64 = 1 << 20;

    /// An 8 MiB disk with 1 MiB root, verity and signature partitions for both slots; A runs,
    /// confirmed, and B is empty.
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

    #[test]
    fn an_update_is_written_to_the_other_slot_and_boots_next() {
        let dir = tempfile::tempdir().unwrap();
        let disk_path = dir.path().join("disk.img");
        disk(&disk_path);
        let os = payload(&dir.path().join("deployment"), false);
        let config = OsConfig {
            disk: disk_path.clone(),
            boot_tries: 2,
        };
        let slot = install(&config, Slot::A, &dir.path().join("deployment"), &os).unwrap();
        assert_eq!(slot, Slot::B);
        let disk_bytes = std::fs::read(&disk_path).unwrap();
        let written = std::fs::read(dir.path().join("deployment/payload/os/rootfs.img")).unwrap();
        assert_eq!(
            &disk_bytes[(4 * MIB) as usize..(4 * MIB) as usize + written.len()],
            &written[..]
        );
        let (a, b) = states(&disk_path);
        assert_eq!(edge_init::boot::boot_order(a, b), vec![Slot::B, Slot::A]);
        assert_eq!((b.tries, b.successful), (2, false));
    }

    #[test]
    fn a_withdrawn_update_never_boots_and_a_confirmed_fallback_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let disk_path = dir.path().join("disk.img");
        disk(&disk_path);
        let os = payload(&dir.path().join("deployment"), false);
        let config = OsConfig {
            disk: disk_path.clone(),
            boot_tries: 2,
        };
        install(&config, Slot::A, &dir.path().join("deployment"), &os).unwrap();
        assert!(withdraw(&config, Slot::A).unwrap());
        let (a, b) = states(&disk_path);
        assert_eq!(edge_init::boot::boot_order(a, b), vec![Slot::A]);
        assert!(a.successful);
        // Nothing is pending any more, and from slot B's point of view slot A is its
        // confirmed fallback: neither is taken back.
        assert!(!withdraw(&config, Slot::A).unwrap());
        assert!(!withdraw(&config, Slot::B).unwrap());
        let (a, _) = states(&disk_path);
        assert!(a.bootable() && a.successful);
    }

    #[test]
    fn a_root_that_does_not_match_its_signed_hash_is_refused_and_the_slot_left_unbootable() {
        let dir = tempfile::tempdir().unwrap();
        let disk_path = dir.path().join("disk.img");
        disk(&disk_path);
        let os = payload(&dir.path().join("deployment"), true);
        let config = OsConfig {
            disk: disk_path.clone(),
            boot_tries: 2,
        };
        let error = install(&config, Slot::A, &dir.path().join("deployment"), &os).unwrap_err();
        assert!(error.to_string().contains("does not verify"), "{error}");
        let (a, b) = states(&disk_path);
        assert_eq!(edge_init::boot::boot_order(a, b), vec![Slot::A]);
    }
}
