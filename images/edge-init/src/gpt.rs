//! A GUID Partition Table small enough to read and rewrite from the init: the image builder lays
//! the disk out with it, and the init rewrites partition attributes (the boot-counting state)
//! with the same code, so both agree on every byte, including attribute bits that general GPT
//! libraries drop.

use std::io::{Read, Seek, SeekFrom, Write};

use thiserror::Error;
pub use uuid::Uuid;

/// The logical sector size the images use.
pub const SECTOR: u64 = 512;
/// Partition entries in each table (the UEFI minimum, 16 KiB).
pub const ENTRY_COUNT: u32 = 128;
/// Bytes per partition entry.
pub const ENTRY_SIZE: u32 = 128;
/// Sectors holding one copy of the entries.
pub const ENTRY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
/// The first sector a partition may use (protective MBR, header, entries).
pub const FIRST_USABLE: u64 = 2 + ENTRY_SECTORS;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
const NAME_UNITS: usize = 36;

/// What can go wrong reading a partition table.
#[derive(Debug, Error)]
pub enum GptError {
    /// The disk could not be read or written.
    #[error("disk I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The primary header is missing or damaged.
    #[error("no valid GPT header at LBA 1 ({0})")]
    BadHeader(&'static str),
    /// A partition name is longer than the 36 UTF-16 units an entry holds.
    #[error("partition name `{0}` is longer than 36 UTF-16 units")]
    NameTooLong(String),
    /// A partition the caller needs is not in the table.
    #[error("the disk has no {0} partition")]
    MissingPartition(String),
}

/// A GUID as GPT stores it: the first three fields little-endian (Microsoft's layout), which
/// is `uuid`'s `to_bytes_le` and `from_bytes_le`.
fn guid_to_disk(guid: Uuid) -> [u8; 16] {
    guid.to_bytes_le()
}

fn guid_from_disk(bytes: &[u8]) -> Uuid {
    Uuid::from_bytes_le(bytes.try_into().unwrap_or_default())
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// What the partition holds (a Discoverable Partitions Specification type).
    pub type_guid: Uuid,
    /// This partition's own GUID.
    pub unique_guid: Uuid,
    /// The first sector.
    pub first_lba: u64,
    /// The last sector (inclusive).
    pub last_lba: u64,
    /// Attribute bits; 48–63 are type-specific and carry the boot-counting state on root slots.
    pub attributes: u64,
    /// The partition label.
    pub name: String,
}

impl Partition {
    /// The partition's size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }

    /// The byte offset of the partition on the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    fn encode(&self) -> Result<[u8; ENTRY_SIZE as usize], GptError> {
        let mut entry = [0u8; ENTRY_SIZE as usize];
        entry[0..16].copy_from_slice(&guid_to_disk(self.type_guid));
        entry[16..32].copy_from_slice(&guid_to_disk(self.unique_guid));
        entry[32..40].copy_from_slice(&self.first_lba.to_le_bytes());
        entry[40..48].copy_from_slice(&self.last_lba.to_le_bytes());
        entry[48..56].copy_from_slice(&self.attributes.to_le_bytes());
        let units: Vec<u16> = self.name.encode_utf16().collect();
        if units.len() > NAME_UNITS {
            return Err(GptError::NameTooLong(self.name.clone()));
        }
        for (index, unit) in units.iter().enumerate() {
            entry[56 + 2 * index..58 + 2 * index].copy_from_slice(&unit.to_le_bytes());
        }
        Ok(entry)
    }

    fn decode(entry: &[u8]) -> Option<Self> {
        let guid = |range: std::ops::Range<usize>| guid_from_disk(&entry[range]);
        let number =
            |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().unwrap_or_default());
        let type_guid = guid(0..16);
        if type_guid.is_nil() {
            return None;
        }
        let units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .take_while(|unit| *unit != 0)
            .collect();
        Some(Self {
            type_guid,
            unique_guid: guid(16..32),
            first_lba: number(32),
            last_lba: number(40),
            attributes: number(48),
            name: String::from_utf16_lossy(&units),
        })
    }
}

/// A whole partition table: the disk's GUID and size and its partitions, in entry order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// The disk GUID.
    pub disk_guid: Uuid,
    /// The disk size in sectors.
    pub disk_sectors: u64,
    /// The partitions, numbered from 1 in this order.
    pub partitions: Vec<Partition>,
}

impl Table {
    /// The last sector a partition may use (before the backup entries and header).
    pub fn last_usable(&self) -> u64 {
        self.disk_sectors - 2 - ENTRY_SECTORS
    }

    /// The partition called `name` and its number (from 1), as the kernel numbers them.
    pub fn find(&self, name: &str) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, partition)| partition.name == name)
            .map(|(index, partition)| (index + 1, partition))
    }

    /// Writes the protective MBR and both copies of the table; partition contents are untouched.
    pub fn write<D: Write + Seek>(&self, disk: &mut D) -> Result<(), GptError> {
        let entries = self.encode_entries()?;
        let entries_crc = crc32fast::hash(&entries);
        let backup_header_lba = self.disk_sectors - 1;
        let backup_entries_lba = backup_header_lba - ENTRY_SECTORS;
        disk.seek(SeekFrom::Start(0))?;
        disk.write_all(&self.protective_mbr())?;
        disk.write_all(&self.header(1, backup_header_lba, 2, entries_crc))?;
        disk.write_all(&entries)?;
        disk.seek(SeekFrom::Start(backup_entries_lba * SECTOR))?;
        disk.write_all(&entries)?;
        disk.write_all(&self.header(backup_header_lba, 1, backup_entries_lba, entries_crc))?;
        disk.flush()?;
        Ok(())
    }

    /// Reads the primary table, checking both CRCs.
    pub fn read<D: Read + Seek>(disk: &mut D) -> Result<Self, GptError> {
        let mut header = [0u8; SECTOR as usize];
        disk.seek(SeekFrom::Start(SECTOR))?;
        disk.read_exact(&mut header)?;
        if &header[0..8] != SIGNATURE {
            return Err(GptError::BadHeader("no EFI PART signature"));
        }
        let mut checked = header[..HEADER_SIZE as usize].to_vec();
        checked[16..20].fill(0);
        if crc32fast::hash(&checked).to_le_bytes() != header[16..20] {
            return Err(GptError::BadHeader("header CRC mismatch"));
        }
        let number =
            |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().unwrap_or_default());
        let alternate = number(32);
        let entries_lba = number(72);
        let mut entries = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
        disk.seek(SeekFrom::Start(entries_lba * SECTOR))?;
        disk.read_exact(&mut entries)?;
        if crc32fast::hash(&entries).to_le_bytes() != header[88..92] {
            return Err(GptError::BadHeader("partition entries CRC mismatch"));
        }
        Ok(Self {
            disk_guid: guid_from_disk(&header[56..72]),
            disk_sectors: alternate + 1,
            partitions: entries
                .chunks_exact(ENTRY_SIZE as usize)
                .map_while(Partition::decode)
                .collect(),
        })
    }

    fn encode_entries(&self) -> Result<Vec<u8>, GptError> {
        let mut entries = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
        for (slot, partition) in entries
            .chunks_exact_mut(ENTRY_SIZE as usize)
            .zip(&self.partitions)
        {
            slot.copy_from_slice(&partition.encode()?);
        }
        Ok(entries)
    }

    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> Vec<u8> {
        let mut header = vec![0u8; SECTOR as usize];
        header[0..8].copy_from_slice(SIGNATURE);
        header[8..12].copy_from_slice(&REVISION.to_le_bytes());
        header[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        header[24..32].copy_from_slice(&my_lba.to_le_bytes());
        header[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        header[40..48].copy_from_slice(&FIRST_USABLE.to_le_bytes());
        header[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        header[56..72].copy_from_slice(&guid_to_disk(self.disk_guid));
        header[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        header[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        header[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        header[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&header[..HEADER_SIZE as usize]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        header
    }

    fn protective_mbr(&self) -> Vec<u8> {
        let mut mbr = vec![0u8; SECTOR as usize];
        let record = &mut mbr[446..462];
        record[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        record[4] = 0xEE;
        record[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        record[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.disk_sectors - 1).unwrap_or(u32::MAX);
        record[12..16].copy_from_slice(&size.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        mbr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            disk_guid: Uuid::from_bytes([7; 16]),
            disk_sectors: 8192,
            partitions: vec![Partition {
                type_guid: Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709),
                unique_guid: Uuid::from_bytes([1; 16]),
                first_lba: 2048,
                last_lba: 4095,
                attributes: 0x0123_0000_0000_0000,
                name: "root-a".into(),
            }],
        }
    }

    #[test]
    fn a_written_table_reads_back_with_its_attribute_bits() {
        let mut disk = std::io::Cursor::new(vec![0u8; 8192 * 512]);
        table().write(&mut disk).unwrap();
        assert_eq!(Table::read(&mut disk).unwrap(), table());
    }

    #[test]
    fn a_damaged_entry_array_is_refused() {
        let mut disk = std::io::Cursor::new(vec![0u8; 8192 * 512]);
        table().write(&mut disk).unwrap();
        disk.get_mut()[2 * 512 + 40] ^= 1;
        assert!(matches!(
            Table::read(&mut disk),
            Err(GptError::BadHeader("partition entries CRC mismatch"))
        ));
    }

    #[test]
    fn guids_are_stored_mixed_endian() {
        let guid = Uuid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b);
        assert_eq!(
            hex::encode(guid_to_disk(guid)),
            "28732ac11ff8d211ba4b00a0c93ec93b"
        );
        assert_eq!(guid_from_disk(&guid_to_disk(guid)), guid);
        assert_eq!(guid.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }
}
