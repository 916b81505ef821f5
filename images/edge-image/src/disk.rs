//! The GPT disk: ESP, two root slots (root, verity, verity signature each) and data, with the
//! Discoverable Partitions Specification's type GUIDs. Written into a plain (sparse) file: no
//! root, loop devices or mounts.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use edge_init::boot::{Slot, SlotState};
use edge_init::gpt::{Partition, SECTOR, Table, Uuid};
use sha2::{Digest, Sha256};

use crate::ImageError;

const ALIGNMENT: u64 = 1024 * 1024;
const ESP: Uuid = Uuid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b);
const LINUX_DATA: Uuid = Uuid::from_u128(0x0fc63daf_8483_4772_8e79_3d69d8477de4);

/// The DPS root, root-verity and root-verity-signature type GUIDs of an architecture.
pub fn root_types(architecture: &str) -> Option<[Uuid; 3]> {
    match architecture {
        "amd64" => Some([
            Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709),
            Uuid::from_u128(0x2c7357ed_ebd2_46d9_aec1_23d437ec2bf5),
            Uuid::from_u128(0x41092b05_9fc8_4523_994f_2def0408b176),
        ]),
        "arm64" => Some([
            Uuid::from_u128(0xb921b045_1df0_41c3_af44_4c6f280d3fae),
            Uuid::from_u128(0xdf3300ce_d69f_4c92_978c_9bfb0f38d820),
            Uuid::from_u128(0x6db69de6_29f4_4758_a7a5_962190f00ce3),
        ]),
        _ => None,
    }
}

/// Partition sizes in bytes (each rounded up to 1 MiB).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Sizes {
    /// The EFI system partition.
    pub esp: u64,
    /// Each root slot.
    pub root: u64,
    /// Each slot's verity hash partition.
    pub verity: u64,
    /// Each slot's root hash signature partition.
    pub signature: u64,
    /// The data partition.
    pub data: u64,
}

/// What goes into one root slot.
pub struct SlotImage<'a> {
    /// The squashfs.
    pub rootfs: &'a Path,
    /// The dm-verity hash file (superblock first).
    pub verity: &'a [u8],
    /// The root hash signature JSON.
    pub signature: &'a [u8],
    /// The dm-verity root hash.
    pub root_hash: [u8; 32],
}

/// Everything the disk holds.
pub struct DiskContents<'a> {
    /// The DPS architecture name (`amd64`, `arm64`).
    pub architecture: &'a str,
    /// Partition sizes.
    pub sizes: Sizes,
    /// Both slots get the same root on a new device, so either can boot.
    pub slot: SlotImage<'a>,
    /// The FAT image of the ESP, if any (otherwise the ESP is left empty).
    pub esp: Option<&'a [u8]>,
    /// The ext4 image of the data partition.
    pub data: &'a Path,
    /// Tries an unconfirmed slot gets.
    pub boot_tries: u8,
}

/// A GUID from a SHA-256 of `parts`, for identifiers that must follow from the content;
/// marked as a random (version 4) UUID, as edge-verity marks the UUIDs it derives.
pub fn derived_guid(parts: &[&[u8]]) -> Uuid {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    edge_verity::uuid_from_digest(&digest[..16].try_into().unwrap_or_default())
}

/// Lays out the partition table.
pub fn layout(contents: &DiskContents<'_>) -> Result<Table, ImageError> {
    let [root_type, verity_type, signature_type] =
        root_types(contents.architecture).ok_or_else(|| {
            ImageError::Recipe(format!(
                "no DPS partition types for {}",
                contents.architecture
            ))
        })?;
    let sizes = contents.sizes;
    let root_hash = contents.slot.root_hash;
    let signature_guid = derived_guid(&[b"verity-sig", contents.slot.signature]);
    let mut next = ALIGNMENT / SECTOR;
    let mut partitions = Vec::new();
    let mut add = |name: String, type_guid: Uuid, unique: Uuid, size: u64, attributes: u64| {
        let sectors = size.div_ceil(ALIGNMENT) * ALIGNMENT / SECTOR;
        partitions.push(Partition {
            type_guid,
            unique_guid: unique,
            first_lba: next,
            last_lba: next + sectors - 1,
            attributes,
            name,
        });
        next += sectors;
    };
    add(
        "esp".into(),
        ESP,
        derived_guid(&[b"esp", &root_hash]),
        sizes.esp,
        0,
    );
    for (slot, priority) in [(Slot::A, 2), (Slot::B, 1)] {
        // DPS: the root partition's UUID is the first 128 bits of the root hash, the verity
        // partition's the last 128, as they are (not marked as version 4), since that is how
        // the root hash finds its partitions. Slot B holds the same root on a new device; its UUIDs are
        // derived through one more hash so that no two partitions on the disk share a UUID.
        let (root_guid, verity_guid) = match slot {
            Slot::A => (
                Uuid::from_bytes(root_hash[..16].try_into().unwrap_or_default()),
                Uuid::from_bytes(root_hash[16..].try_into().unwrap_or_default()),
            ),
            Slot::B => (
                derived_guid(&[b"root-b", &root_hash]),
                derived_guid(&[b"root-b-verity", &root_hash]),
            ),
        };
        let state = SlotState::fresh(priority, contents.boot_tries);
        add(
            slot.root_name(),
            root_type,
            root_guid,
            sizes.root,
            state.to_attributes(1 << 60),
        );
        add(
            slot.verity_name(),
            verity_type,
            verity_guid,
            sizes.verity,
            1 << 60,
        );
        let unique = match slot {
            Slot::A => signature_guid,
            Slot::B => derived_guid(&[b"root-b-verity-sig", contents.slot.signature]),
        };
        add(
            slot.signature_name(),
            signature_type,
            unique,
            sizes.signature,
            1 << 60,
        );
    }
    add(
        "data".into(),
        LINUX_DATA,
        derived_guid(&[b"data", &root_hash]),
        sizes.data,
        0,
    );
    let disk_sectors = next + ALIGNMENT / SECTOR;
    Ok(Table {
        disk_guid: derived_guid(&[b"disk", &root_hash, contents.slot.signature]),
        disk_sectors,
        partitions,
    })
}

/// Writes the disk image.
pub fn write(output: &Path, contents: &DiskContents<'_>) -> Result<Table, ImageError> {
    let table = layout(contents)?;
    let mut disk = File::create(output).map_err(ImageError::io("create", output))?;
    disk.set_len(table.disk_sectors * SECTOR)
        .map_err(ImageError::io("size", output))?;
    let rootfs = std::fs::read(contents.slot.rootfs)
        .map_err(ImageError::io("read", contents.slot.rootfs))?;
    let data = std::fs::read(contents.data).map_err(ImageError::io("read", contents.data))?;
    let esp = contents.esp.unwrap_or_default();
    for partition in &table.partitions {
        let bytes: &[u8] = match partition.name.as_str() {
            "esp" => esp,
            "root-a" | "root-b" => &rootfs,
            "root-a-verity" | "root-b-verity" => contents.slot.verity,
            "root-a-verity-sig" | "root-b-verity-sig" => contents.slot.signature,
            _ => &data,
        };
        if bytes.len() as u64 > partition.size() {
            return Err(ImageError::Recipe(format!(
                "{} needs {} bytes but its partition has {}: raise its size in the recipe's `partitions`",
                partition.name,
                bytes.len(),
                partition.size()
            )));
        }
        disk.seek(SeekFrom::Start(partition.offset()))
            .and_then(|_| disk.write_all(bytes))
            .map_err(ImageError::io("write", output))?;
    }
    table
        .write(&mut disk)
        .map_err(|error| ImageError::Tool(error.to_string()))?;
    disk.sync_all().map_err(ImageError::io("sync", output))?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_guids_are_the_root_hash_and_the_others_are_version_4() {
        let root_hash: [u8; 32] = std::array::from_fn(|index| index as u8);
        let contents = DiskContents {
            architecture: "amd64",
            sizes: Sizes {
                esp: 1 << 20,
                root: 1 << 20,
                verity: 1 << 20,
                signature: 1 << 20,
                data: 1 << 20,
            },
            slot: SlotImage {
                rootfs: Path::new("unused"),
                verity: &[],
                signature: b"{}",
                root_hash,
            },
            esp: None,
            data: Path::new("unused"),
            boot_tries: 3,
        };
        let table = layout(&contents).unwrap();
        let (_, root) = table.find("root-a").unwrap();
        assert_eq!(
            root.type_guid.to_string(),
            "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
        );
        assert_eq!(root.unique_guid.as_bytes()[..], root_hash[..16]);
        let (_, verity) = table.find("root-a-verity").unwrap();
        assert_eq!(verity.unique_guid.as_bytes()[..], root_hash[16..]);
        for name in [
            "esp",
            "root-b",
            "root-b-verity",
            "root-a-verity-sig",
            "data",
        ] {
            let (_, partition) = table.find(name).unwrap();
            assert_eq!(partition.unique_guid.get_version_num(), 4, "{name}");
        }
        assert_eq!(table.disk_guid.get_version_num(), 4);
    }
}
