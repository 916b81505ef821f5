//! dm-verity hash trees computed by edgec itself, so that OS images can be built without root,
//! without device-mapper and without cryptsetup.
//!
//! The output is byte-for-byte what `veritysetup format DATA HASH --salt S --uuid U` writes with its
//! defaults: format 1, SHA-256, 4096-byte data and hash blocks, and the 512-byte veritysetup
//! superblock at the start of the hash file, followed by the tree with its top level first. Like
//! veritysetup, only whole data blocks are covered: trailing bytes after the last whole block are
//! ignored, and data shorter than one block is refused.
//!
//! Building hashes each level on all cores (the data level dominates: every 4096-byte block is
//! hashed once). Verification recomputes everything and names the first bad block, and
//! [`VerifiedTree`] checks data while it streams, for the device runtime writing an OS slot.
//!
//! When no salt or UUID is given, [`Params::derive_from_file`] derives them from the data so that
//! the same root filesystem always yields the same hash file and root hash.

mod build;
mod error;
mod geometry;
mod hashing;
mod ids;
mod params;
mod superblock;
mod verify;

pub use build::{HashImage, build_from_bytes, build_from_file, format_file};
pub use error::VerityError;
pub use ids::{RootHash, format_salt, parse_salt, parse_uuid, uuid_from_digest};
pub use params::Params;
pub use superblock::{MAX_DATA_BLOCKS, MAX_SALT_SIZE, SUPERBLOCK_SIZE, Superblock};
/// UUIDs are the `uuid` crate's, shared with the GPT of the images.
pub use uuid::Uuid;
pub use verify::{VerifiedTree, VerifyingReader, verify_bytes, verify_files};

/// The size of every data block and hash block, in bytes.
pub const BLOCK_SIZE: usize = 4096;

/// The size of a SHA-256 digest, in bytes.
pub const DIGEST_SIZE: usize = 32;
