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
