//! `/init` of an edgec OS image. It loads the kernel modules the Debian kernel lacks, picks a
//! root slot by boot counting, checks the slot's root hash signature against the key built into
//! the initramfs, maps the slot through dm-verity, reads it once end to end (so a damaged slot
//! fails here, before anything runs from it), mounts it read-only with the data partition on
//! edged's state directory, switches root and starts edged. A slot that fails any of this is
//! abandoned and the other slot is tried in the same boot; a slot that comes up with its
//! deployment is confirmed. See `images/README.md`.

// Device-mapper has no safe wrapper: `dm.rs` makes its ioctls through `libc::ioctl`, with a
// SAFETY comment on the one unsafe block. The library half of this crate denies unsafe code.
#![allow(unsafe_code)]

mod dm;
mod sys;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use ed25519_dalek::pkcs8::DecodePublicKey;
use edge_init::boot::{Slot, SlotState, boot_order, read_slot_state, write_slot_states};
use edge_init::config::{CONFIG_PATH, InitConfig, MODULE_DIR, ROOT_KEY_PATH, RootHashSignature};
use edge_init::gpt::Table;
use edge_init::status::StatusReport;
use edge_verity::{BLOCK_SIZE, Superblock, format_salt};

const NEW_ROOT: &str = "/newroot";
/// Tells edged which OS slot runs, so that an OS update goes to the other one.
const BOOTED_SLOT_VARIABLE: &str = "EDGE_OS_SLOT";

fn main() {
    let started = Instant::now();
    if let Err(error) = boot(started) {
        println!("edge-init: {error}");
    }
    println!("edge-init: rebooting");
    sys::reboot();
}

/// Everything up to edged's exit; returns only on failure.
fn boot(started: Instant) -> Result<(), String> {
    sys::mount_kernel_filesystems("")?;
    let config: InitConfig = serde_json::from_slice(
        &std::fs::read(CONFIG_PATH)
            .map_err(|error| format!("cannot read {CONFIG_PATH}: {error}"))?,
    )
    .map_err(|error| format!("{CONFIG_PATH}: {error}"))?;
    let key = VerifyingKey::from_public_key_pem(
        &std::fs::read_to_string(ROOT_KEY_PATH)
            .map_err(|error| format!("cannot read {ROOT_KEY_PATH}: {error}"))?,
    )
    .map_err(|error| format!("{ROOT_KEY_PATH}: {error}"))?;
    for module in &config.modules {
        sys::load_module(&Path::new(MODULE_DIR).join(format!("{module}.ko")))?;
    }
    sys::wait_for(&partition(&config, 1), Duration::from_secs(10))?;
    let mut disk = File::options()
        .read(true)
        .write(true)
        .open(&config.disk)
        .map_err(|error| format!("cannot open {}: {error}", config.disk))?;
    let mut table = Table::read(&mut disk).map_err(|error| error.to_string())?;
    let order = boot_order(state(&table, Slot::A)?, state(&table, Slot::B)?);
    for slot in order {
        let before = state(&table, slot)?;
        set_state(&mut table, &mut disk, slot, before.spend_try())?;
        println!(
            "edge-init: booting slot {slot} ({})",
            if before.successful {
                "confirmed".to_owned()
            } else {
                format!("unconfirmed, {} tries left", before.tries.saturating_sub(1))
            }
        );
        match mount_slot(&config, &table, slot, &key) {
            Ok(root_hash) => {
                println!(
                    "edge-init: slot {slot} root {root_hash} verified in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                switch_root()?;
                let (mut edged, ready) = start_edged(&config, slot)?;
                let confirmed = state(&table, slot)?.confirmed();
                set_state(&mut table, &mut disk, slot, confirmed)?;
                // Printed only once the slot is confirmed on disk, so a test that stops the
                // machine at this line sees the confirmation persisted.
                println!("{ready}");
                let status = edged
                    .wait()
                    .map_err(|error| format!("cannot wait for edged: {error}"))?;
                return Err(format!("edged exited ({status})"));
            }
            Err(error) => {
                println!("edge-init: slot {slot} refused: {error}");
                set_state(&mut table, &mut disk, slot, before.abandoned())?;
            }
        }
    }
    Err("no bootable slot left".into())
}

fn partition(config: &InitConfig, number: usize) -> String {
    format!("{}{number}", config.disk)
}

fn state(table: &Table, slot: Slot) -> Result<SlotState, String> {
    read_slot_state(table, slot).map_err(|error| error.to_string())
}

/// Records a slot's boot-counting state in both copies of the partition table.
fn set_state(
    table: &mut Table,
    disk: &mut File,
    slot: Slot,
    state: SlotState,
) -> Result<(), String> {
    write_slot_states(table, disk, &[(slot, state)])
        .map_err(|error| format!("cannot record slot {slot}'s boot state: {error}"))
}

/// Checks the signature, maps the slot through dm-verity, reads it end to end and mounts it
/// with the data partition; returns the verified root hash.
fn mount_slot(
    config: &InitConfig,
    table: &Table,
    slot: Slot,
    key: &VerifyingKey,
) -> Result<String, String> {
    let find = |name: String| {
        table
            .find(&name)
            .map(|(number, entry)| (partition(config, number), entry.size()))
            .ok_or_else(|| format!("the disk has no {name} partition"))
    };
    let (root_device, _) = find(slot.root_name())?;
    let (verity_device, _) = find(slot.verity_name())?;
    let (signature_device, signature_size) = find(slot.signature_name())?;
    let (data_device, _) = find("data".into())?;

    let signature_bytes = read_prefix(&signature_device, signature_size.min(64 * 1024))?;
    let signature =
        RootHashSignature::from_partition(&signature_bytes).map_err(|error| error.to_string())?;
    let root_hash = hex::encode(signature.verify(key).map_err(|error| error.to_string())?);
    let superblock = Superblock::parse(&read_prefix(&verity_device, 512)?)
        .map_err(|error| format!("{verity_device}: {error}"))?;
    let salt = match format_salt(&superblock.salt).as_str() {
        "" => "-".to_owned(),
        salt => salt.to_owned(),
    };
    let sectors = superblock.data_blocks * (BLOCK_SIZE as u64 / 512);
    let table_line = format!(
        "1 {root_device} {verity_device} {BLOCK_SIZE} {BLOCK_SIZE} {} 1 sha256 {root_hash} {salt}",
        superblock.data_blocks
    );
    let mapped = dm::create(&slot.root_name(), "verity", sectors, &table_line)
        .map_err(|error| format!("device-mapper: {error}"))?;
    sys::wait_for(&mapped, Duration::from_secs(5))?;
    read_all(&mapped)?;
    sys::mount_device(&mapped, NEW_ROOT, "squashfs", true)?;
    let state_dir = format!("{NEW_ROOT}{}", config.edged.state_dir);
    sys::mount_device(&data_device, &state_dir, &config.data_fs, false)?;
    sys::mount_kernel_filesystems(NEW_ROOT)?;
    Ok(root_hash)
}

fn read_prefix(device: &str, length: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    File::open(device)
        .and_then(|file| file.take(length).read_to_end(&mut bytes))
        .map_err(|error| format!("cannot read {device}: {error}"))?;
    Ok(bytes)
}

/// Reads the whole verified device: dm-verity checks every block, and an I/O error here means
/// the slot does not match its signed root hash.
fn read_all(device: &str) -> Result<(), String> {
    let mut file = File::open(device).map_err(|error| format!("cannot open {device}: {error}"))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => offset += read as u64,
            Err(error) => {
                return Err(format!(
                    "dm-verity rejected the data after byte {offset}: {error}"
                ));
            }
        }
    }
}

/// Makes the verified root `/` (as `switch_root` does: move the mount, then chroot into it).
fn switch_root() -> Result<(), String> {
    let failed = |what: &'static str| {
        move |error: rustix::io::Errno| format!("switch root: {what}: {error}")
    };
    rustix::process::chdir(NEW_ROOT).map_err(failed("chdir"))?;
    rustix::mount::mount_move(".", "/").map_err(failed("move mount"))?;
    rustix::process::chroot(".").map_err(failed("chroot"))?;
    rustix::process::chdir("/").map_err(failed("chdir"))
}

/// Installs the initial bundle on first boot, checks that edged reports its deployment, and
/// starts the daemon; returns it with the ready line to print.
fn start_edged(config: &InitConfig, slot: Slot) -> Result<(Child, String), String> {
    let launch = &config.edged;
    let edged = |arguments: &[&str]| {
        let mut command = Command::new(&launch.program);
        command
            .env(BOOTED_SLOT_VARIABLE, slot.to_string())
            .args(&launch.options)
            .args(["--state-dir", &launch.state_dir])
            .args(arguments);
        command
    };
    if !Path::new(&launch.state_dir).join("state.json").exists() {
        let status = edged(&["apply", &launch.initial_bundle])
            .status()
            .map_err(|error| format!("cannot run {}: {error}", launch.program))?;
        if !status.success() {
            return Err(format!(
                "edged could not apply the initial bundle ({status})"
            ));
        }
    }
    let output = edged(&["status", "--json"])
        .output()
        .map_err(|error| format!("cannot run {}: {error}", launch.program))?;
    let ready = StatusReport::from_json(&output.stdout)?.ready_line(slot)?;
    let daemon = edged(&["run"])
        .spawn()
        .map_err(|error| format!("cannot start edged: {error}"))?;
    Ok((daemon, ready))
}
