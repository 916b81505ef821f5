//! The 512-byte superblock veritysetup writes at the start of the hash file (cryptsetup's
//! `struct verity_sb`, little-endian), which records how the tree was built.

use crate::{BLOCK_SIZE, Uuid, VerityError};

/// The size of the superblock; the tree itself starts at the next 4096-byte boundary.
pub const SUPERBLOCK_SIZE: usize = 512;

/// The longest salt the superblock can hold.
pub const MAX_SALT_SIZE: usize = 256;

/// The most data blocks a tree may cover: 2^40 blocks of 4096 bytes are 4 PiB, far above any
/// root file system, and low enough that every offset and size derived from the count (data
/// bytes, tree blocks, hash file bytes) fits in a `u64` without overflow.
pub const MAX_DATA_BLOCKS: u64 = 1 << 40;

const SIGNATURE: &[u8; 8] = b"verity\0\0";
const VERSION: u32 = 1;
const HASH_TYPE: u32 = 1;
const ALGORITHM: &[u8] = b"sha256";

// Field offsets within the superblock.
const VERSION_AT: usize = 8;
const HASH_TYPE_AT: usize = 12;
const UUID_AT: usize = 16;
const ALGORITHM_AT: usize = 32;
const ALGORITHM_LEN: usize = 32;
const DATA_BLOCK_SIZE_AT: usize = 64;
const HASH_BLOCK_SIZE_AT: usize = 68;
const DATA_BLOCKS_AT: usize = 72;
const SALT_SIZE_AT: usize = 80;
const SALT_AT: usize = 88;

/// What the superblock records; everything else (format 1, sha256, 4096-byte blocks) is fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: Uuid,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut bytes = [0; SUPERBLOCK_SIZE];
        bytes[..8].copy_from_slice(SIGNATURE);
        put_u32(&mut bytes, VERSION_AT, VERSION);
        put_u32(&mut bytes, HASH_TYPE_AT, HASH_TYPE);
        bytes[UUID_AT..UUID_AT + 16].copy_from_slice(self.uuid.as_bytes());
        bytes[ALGORITHM_AT..ALGORITHM_AT + ALGORITHM.len()].copy_from_slice(ALGORITHM);
        put_u32(&mut bytes, DATA_BLOCK_SIZE_AT, BLOCK_SIZE as u32);
        put_u32(&mut bytes, HASH_BLOCK_SIZE_AT, BLOCK_SIZE as u32);
        bytes[DATA_BLOCKS_AT..DATA_BLOCKS_AT + 8].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt_size = u16::try_from(self.salt.len()).expect("salt length checked by Params");
        bytes[SALT_SIZE_AT..SALT_SIZE_AT + 2].copy_from_slice(&salt_size.to_le_bytes());
        bytes[SALT_AT..SALT_AT + self.salt.len()].copy_from_slice(&self.salt);
        bytes
    }

    /// Reads a superblock, refusing anything this crate would not have written itself, so that a
    /// tree is never checked under parameters it was not built with.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, VerityError> {
        let bad = |reason: &str| VerityError::BadSuperblock {
            reason: reason.to_owned(),
        };
        let bytes: &[u8; SUPERBLOCK_SIZE] = bytes
            .get(..SUPERBLOCK_SIZE)
            .and_then(|head| head.try_into().ok())
            .ok_or_else(|| bad("the file is shorter than 512 bytes"))?;
        if &bytes[..8] != SIGNATURE {
            return Err(bad("it does not start with the `verity` signature"));
        }
        check_supported("superblock version", get_u32(bytes, VERSION_AT), VERSION)?;
        check_supported("hash type", get_u32(bytes, HASH_TYPE_AT), HASH_TYPE)?;
        let algorithm = &bytes[ALGORITHM_AT..ALGORITHM_AT + ALGORITHM_LEN];
        let name_length = algorithm
            .iter()
            .position(|&byte| byte == 0)
            .unwrap_or(ALGORITHM_LEN);
        if &algorithm[..name_length] != ALGORITHM {
            return Err(VerityError::Unsupported {
                what: format!(
                    "hash algorithm `{}`",
                    String::from_utf8_lossy(&algorithm[..name_length])
                ),
            });
        }
        let block_size = BLOCK_SIZE as u32;
        check_supported(
            "data block size",
            get_u32(bytes, DATA_BLOCK_SIZE_AT),
            block_size,
        )?;
        check_supported(
            "hash block size",
            get_u32(bytes, HASH_BLOCK_SIZE_AT),
            block_size,
        )?;
        let data_blocks = u64::from_le_bytes(
            bytes[DATA_BLOCKS_AT..DATA_BLOCKS_AT + 8]
                .try_into()
                .unwrap(),
        );
        if data_blocks == 0 {
            return Err(bad("it records zero data blocks"));
        }
        if data_blocks > MAX_DATA_BLOCKS {
            return Err(VerityError::TooManyDataBlocks {
                blocks: data_blocks,
            });
        }
        let salt_size = usize::from(u16::from_le_bytes([
            bytes[SALT_SIZE_AT],
            bytes[SALT_SIZE_AT + 1],
        ]));
        if salt_size > MAX_SALT_SIZE {
            return Err(bad("its salt size is over 256 bytes"));
        }
        Ok(Superblock {
            uuid: Uuid::from_bytes(bytes[UUID_AT..UUID_AT + 16].try_into().unwrap()),
            data_blocks,
            salt: bytes[SALT_AT..SALT_AT + salt_size].to_vec(),
        })
    }
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn check_supported(what: &str, actual: u32, supported: u32) -> Result<(), VerityError> {
    if actual == supported {
        Ok(())
    } else {
        Err(VerityError::Unsupported {
            what: format!("{what} {actual}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            uuid: "12345678-1234-4234-8234-123456789abc".parse().unwrap(),
            data_blocks: 2,
            salt: vec![0x00, 0x11, 0x22, 0x33],
        }
    }

    #[test]
    fn encodes_the_fields_where_veritysetup_puts_them() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..16], b"verity\0\0\x01\0\0\0\x01\0\0\0");
        assert_eq!(&bytes[32..39], b"sha256\0");
        assert_eq!(&bytes[64..72], &[0, 0x10, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(&bytes[72..80], &2u64.to_le_bytes());
        assert_eq!(&bytes[80..82], &[4, 0]);
        assert_eq!(&bytes[88..93], &[0x00, 0x11, 0x22, 0x33, 0]);
    }

    #[test]
    fn parses_what_it_encodes() {
        assert_eq!(Superblock::parse(&sample().encode()).unwrap(), sample());
    }

    #[test]
    fn refuses_foreign_or_damaged_superblocks() {
        let good = sample().encode();
        let with = |at: usize, byte: u8| {
            let mut bytes = good;
            bytes[at] = byte;
            Superblock::parse(&bytes)
        };
        assert!(matches!(
            with(0, b'V'),
            Err(VerityError::BadSuperblock { .. })
        ));
        assert!(matches!(with(12, 0), Err(VerityError::Unsupported { .. })));
        assert!(matches!(
            with(32, b'S'),
            Err(VerityError::Unsupported { .. })
        ));
        assert!(matches!(with(65, 2), Err(VerityError::Unsupported { .. })));
        assert!(matches!(
            with(72, 0),
            Err(VerityError::BadSuperblock { .. })
        ));
        assert!(matches!(
            with(81, 2),
            Err(VerityError::BadSuperblock { .. })
        ));
        assert!(Superblock::parse(&good[..511]).is_err());
    }

    #[test]
    fn refuses_more_data_blocks_than_any_offset_can_address() {
        let claiming = |data_blocks: u64| {
            Superblock {
                data_blocks,
                ..sample()
            }
            .encode()
        };
        assert!(Superblock::parse(&claiming(MAX_DATA_BLOCKS)).is_ok());
        for data_blocks in [MAX_DATA_BLOCKS + 1, 1 << 59, u64::MAX] {
            assert!(
                matches!(
                    Superblock::parse(&claiming(data_blocks)),
                    Err(VerityError::TooManyDataBlocks { blocks }) if blocks == data_blocks
                ),
                "{data_blocks}"
            );
        }
    }
}
