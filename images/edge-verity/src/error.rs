//! Everything that can go wrong building or verifying a tree, split so that callers can tell
//! "could not check" ([`VerityError::is_unreadable`]) from "checked, and it is wrong".

use std::io;
use std::path::PathBuf;

use crate::{BLOCK_SIZE, MAX_SALT_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the data is {size} bytes, less than one {BLOCK_SIZE}-byte block; a verity tree needs at \
         least one whole block (veritysetup refuses such data too)"
    )]
    DataTooSmall { size: u64 },
    #[error("the salt is {size} bytes; veritysetup allows at most {MAX_SALT_SIZE}")]
    SaltTooLong { size: usize },
    #[error("`{text}` is not {expected}")]
    Syntax {
        text: String,
        expected: &'static str,
    },
    #[error("the hash file has no verity superblock: {reason}")]
    BadSuperblock { reason: String },
    #[error(
        "the hash file uses {what}, but only format 1, sha256 and 4096-byte blocks are supported"
    )]
    Unsupported { what: String },
    #[error(
        "the hash file's superblock records {blocks} data blocks, more than the {} (4 PiB) \
         supported",
        crate::superblock::MAX_DATA_BLOCKS
    )]
    TooManyDataBlocks { blocks: u64 },
    #[error("the hash file is {actual} bytes, but its superblock needs {expected}")]
    HashTooShort { expected: u64, actual: u64 },
    #[error("the data is {actual} bytes, but the hash file covers {expected}")]
    DataTooShort { expected: u64, actual: u64 },
    #[error(
        "hash block {block} of level {level} (hash file offset {offset}) does not match {parent}"
    )]
    HashBlockMismatch {
        level: usize,
        block: u64,
        offset: u64,
        parent: &'static str,
    },
    #[error("data block {block} (offset {offset}) does not match the hash tree")]
    DataBlockMismatch { block: u64, offset: u64 },
}

impl VerityError {
    /// True when the inputs could not be checked at all (unreadable, or in a format this crate
    /// does not build), as opposed to checked and found wrong.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            VerityError::Io { .. } | VerityError::Unsupported { .. } | VerityError::Syntax { .. }
        )
    }

    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        VerityError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn data_block(block: u64) -> Self {
        VerityError::DataBlockMismatch {
            block,
            offset: block * BLOCK_SIZE as u64,
        }
    }
}
