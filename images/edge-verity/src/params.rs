//! The salt and UUID a tree is built with. Either may be given; whatever is not given is derived
//! from the content, so rebuilding the same root filesystem reproduces the same hash file.
//!
//! - The derived salt is the SHA-256 of the data blocks the tree covers (the whole data when its
//!   size is a multiple of 4096), i.e. what `head -c $((BLOCKS * 4096)) DATA | sha256sum` prints.
//! - The derived UUID is the first 16 bytes of SHA-256(`edge-verity uuid v1` ‖ root hash), with
//!   the RFC 4122 version-4 and variant bits set. The superblock is not covered by the root hash,
//!   so the UUID can be chosen after the tree is built, at no extra cost.

use std::io;

use sha2::{Digest as _, Sha256};

use crate::hashing::Source;
use crate::{BLOCK_SIZE, MAX_SALT_SIZE, RootHash, Uuid, VerityError};

const UUID_DOMAIN: &[u8] = b"edge-verity uuid v1";

/// How big a piece of a data file is read at a time while deriving the salt.
const SALT_READ_SIZE: usize = 1 << 20;

/// The salt and UUID to build with; `None` means derived from the content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    salt: Option<Vec<u8>>,
    uuid: Option<Uuid>,
}

impl Params {
    /// Both salt and UUID derived from the content: the reproducible default for image builds.
    pub fn derived() -> Self {
        Params::default()
    }

    pub fn with_salt(mut self, salt: Vec<u8>) -> Result<Self, VerityError> {
        if salt.len() > MAX_SALT_SIZE {
            return Err(VerityError::SaltTooLong { size: salt.len() });
        }
        self.salt = Some(salt);
        Ok(self)
    }

    pub fn with_uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = Some(uuid);
        self
    }

    pub fn salt_is_derived(&self) -> bool {
        self.salt.is_none()
    }

    pub fn uuid_is_derived(&self) -> bool {
        self.uuid.is_none()
    }

    /// The salt to build with, reading the covered data once if it has to be derived.
    pub(crate) fn salt_for(&self, source: Source<'_>, data_blocks: u64) -> io::Result<Vec<u8>> {
        if let Some(salt) = &self.salt {
            return Ok(salt.clone());
        }
        let covered = data_blocks * BLOCK_SIZE as u64;
        let mut hasher = Sha256::new();
        match source {
            Source::Bytes(bytes) => hasher.update(&bytes[..covered as usize]),
            Source::File(file) => {
                let mut buffer = vec![0; SALT_READ_SIZE];
                let mut offset = 0;
                while offset < covered {
                    let length = (covered - offset).min(SALT_READ_SIZE as u64) as usize;
                    std::os::unix::fs::FileExt::read_exact_at(file, &mut buffer[..length], offset)?;
                    hasher.update(&buffer[..length]);
                    offset += length as u64;
                }
            }
        }
        Ok(hasher.finalize().to_vec())
    }

    /// The UUID to write into the superblock once the root hash is known.
    pub(crate) fn uuid_for(&self, root_hash: &RootHash) -> Uuid {
        self.uuid.unwrap_or_else(|| {
            let digest = Sha256::new_with_prefix(UUID_DOMAIN)
                .chain_update(root_hash.0)
                .finalize();
            crate::uuid_from_digest(&digest[..16].try_into().expect("a digest has 32 bytes"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_salt_hashes_only_the_covered_blocks() {
        let mut data = vec![7u8; 2 * BLOCK_SIZE + 10];
        let salt = Params::derived().salt_for(Source::Bytes(&data), 2).unwrap();
        assert_eq!(salt, Sha256::digest(&data[..2 * BLOCK_SIZE]).to_vec());
        *data.last_mut().unwrap() = 8;
        assert_eq!(
            Params::derived().salt_for(Source::Bytes(&data), 2).unwrap(),
            salt
        );
        data[0] = 8;
        assert_ne!(
            Params::derived().salt_for(Source::Bytes(&data), 2).unwrap(),
            salt
        );
    }

    #[test]
    fn given_values_win_over_derived_ones() {
        let uuid: Uuid = "12345678-1234-4234-8234-123456789abc".parse().unwrap();
        let params = Params::derived()
            .with_salt(vec![1, 2])
            .unwrap()
            .with_uuid(uuid);
        assert_eq!(params.salt_for(Source::Bytes(&[]), 0).unwrap(), vec![1, 2]);
        assert_eq!(params.uuid_for(&RootHash([0; 32])), uuid);
        assert!(!params.salt_is_derived() && !params.uuid_is_derived());
        assert!(Params::derived().with_salt(vec![0; 257]).is_err());
    }

    #[test]
    fn derived_uuids_are_version_4_and_follow_the_root_hash() {
        let params = Params::derived();
        let first = params.uuid_for(&RootHash([1; 32]));
        assert_eq!(first.get_version_num(), 4);
        assert_eq!(first.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(params.uuid_for(&RootHash([1; 32])), first);
        assert_ne!(params.uuid_for(&RootHash([2; 32])), first);
    }
}
