//! Building the hash file: superblock, then every level of the tree, in memory (the tree is
//! 1/128 of the data), then written out in one go.

use std::fs::File;
use std::io::{self, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use crate::geometry::{Geometry, to_usize};
use crate::hashing::{BlockHasher, Source, digest_blocks};
use crate::{BLOCK_SIZE, DIGEST_SIZE, Params, RootHash, SUPERBLOCK_SIZE, Superblock, VerityError};

/// A complete hash file, as `veritysetup format` would write it, and what it was built with.
#[derive(Debug, Clone)]
pub struct HashImage {
    bytes: Vec<u8>,
    root_hash: RootHash,
    superblock: Superblock,
    hash_blocks: u64,
    uncovered_bytes: u64,
}

impl HashImage {
    /// The whole hash file: superblock block followed by the tree.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn root_hash(&self) -> RootHash {
        self.root_hash
    }

    /// The salt, UUID and data block count, whether given or derived.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The blocks of the tree without the superblock (veritysetup's "Hash blocks").
    pub fn hash_blocks(&self) -> u64 {
        self.hash_blocks
    }

    /// Bytes after the last whole data block: like veritysetup, the tree does not cover them.
    pub fn uncovered_bytes(&self) -> u64 {
        self.uncovered_bytes
    }
}

/// Builds the hash file for data held in memory.
pub fn build_from_bytes(data: &[u8], params: &Params) -> Result<HashImage, VerityError> {
    let size = data.len() as u64;
    let data_blocks = whole_blocks(size)?;
    Ok(build(Source::Bytes(data), data_blocks, size, params).expect("reading memory cannot fail"))
}

/// Builds the hash file for a data file or block device.
pub fn build_from_file(data: &Path, params: &Params) -> Result<HashImage, VerityError> {
    let read_error = |error| VerityError::io("read", data, error);
    let mut file = File::open(data).map_err(read_error)?;
    // Seeking to the end also measures block devices, whose metadata length is 0.
    let size = file.seek(SeekFrom::End(0)).map_err(read_error)?;
    let data_blocks = whole_blocks(size)?;
    build(Source::File(&file), data_blocks, size, params).map_err(read_error)
}

/// Builds the hash file for `data` and writes it to `hash`, replacing what was there; what
/// `veritysetup format DATA HASH` does.
pub fn format_file(data: &Path, hash: &Path, params: &Params) -> Result<HashImage, VerityError> {
    let image = build_from_file(data, params)?;
    let write_error = |error| VerityError::io("write", hash, error);
    let mut file = File::create(hash).map_err(write_error)?;
    file.write_all(image.bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    Ok(image)
}

fn whole_blocks(size: u64) -> Result<u64, VerityError> {
    match size / BLOCK_SIZE as u64 {
        0 => Err(VerityError::DataTooSmall { size }),
        blocks if blocks > crate::MAX_DATA_BLOCKS => Err(VerityError::TooManyDataBlocks { blocks }),
        blocks => Ok(blocks),
    }
}

fn build(
    source: Source<'_>,
    data_blocks: u64,
    size: u64,
    params: &Params,
) -> io::Result<HashImage> {
    let salt = params.salt_for(source, data_blocks)?;
    let geometry = Geometry::new(data_blocks);
    let mut bytes = vec![0; to_usize(geometry.hash_file_size())];
    let root_hash = compute_tree(&BlockHasher::new(&salt), source, &geometry, &mut bytes)?;
    let superblock = Superblock {
        uuid: params.uuid_for(&root_hash),
        data_blocks,
        salt,
    };
    bytes[..SUPERBLOCK_SIZE].copy_from_slice(&superblock.encode());
    Ok(HashImage {
        bytes,
        root_hash,
        superblock,
        hash_blocks: geometry.hash_blocks(),
        uncovered_bytes: size % BLOCK_SIZE as u64,
    })
}

/// Fills every level of `image` from the bottom up and returns the root hash. Each level is
/// hashed on all cores; the levels themselves must go in order, as each hashes the one below.
fn compute_tree(
    hasher: &BlockHasher,
    data: Source<'_>,
    geometry: &Geometry,
    image: &mut [u8],
) -> io::Result<RootHash> {
    let data_digests = to_usize(geometry.data_blocks) * DIGEST_SIZE;
    let Some(bottom) = geometry.levels.first() else {
        let mut root = [0; DIGEST_SIZE];
        digest_blocks(hasher, data, &mut root)?;
        return Ok(RootHash(root));
    };
    digest_blocks(
        hasher,
        data,
        &mut image[bottom.byte_range()][..data_digests],
    )?;
    for pair in geometry.levels.windows(2) {
        let (below, above) = (pair[0], pair[1]);
        // Upper levels sit before lower ones in the file, so the split separates them.
        let (head, tail) = image.split_at_mut(below.byte_range().start);
        let below_blocks = &tail[..below.byte_range().len()];
        let digests = &mut head[above.byte_range()][..to_usize(below.blocks) * DIGEST_SIZE];
        digest_blocks(hasher, Source::Bytes(below_blocks), digests)?;
    }
    let top = geometry.levels.last().unwrap_or(bottom);
    Ok(RootHash(hasher.digest(&image[top.byte_range()])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Params {
        Params::derived()
            .with_salt(vec![0x00, 0x11, 0x22, 0x33])
            .unwrap()
            .with_uuid("12345678-1234-4234-8234-123456789abc".parse().unwrap())
    }

    #[test]
    fn refuses_data_without_a_whole_block() {
        for size in [0, 1, BLOCK_SIZE - 1] {
            let error = build_from_bytes(&vec![0; size], &params()).unwrap_err();
            assert!(matches!(error, VerityError::DataTooSmall { size: s } if s == size as u64));
        }
    }

    #[test]
    fn one_block_hashes_straight_into_the_root() {
        let data = vec![0xa5; BLOCK_SIZE + 3];
        let image = build_from_bytes(&data, &params()).unwrap();
        assert_eq!(image.bytes().len(), BLOCK_SIZE);
        assert_eq!(image.hash_blocks(), 0);
        assert_eq!(image.uncovered_bytes(), 3);
        let expected = BlockHasher::new(&[0x00, 0x11, 0x22, 0x33]).digest(&data[..BLOCK_SIZE]);
        assert_eq!(image.root_hash(), RootHash(expected));
    }

    #[test]
    fn two_blocks_make_one_padded_level() {
        let data: Vec<u8> = (0..2 * BLOCK_SIZE).map(|i| (i % 13) as u8).collect();
        let image = build_from_bytes(&data, &params()).unwrap();
        let hasher = BlockHasher::new(&[0x00, 0x11, 0x22, 0x33]);
        let level = &image.bytes()[BLOCK_SIZE..];
        assert_eq!(level[..32], hasher.digest(&data[..BLOCK_SIZE]));
        assert_eq!(level[32..64], hasher.digest(&data[BLOCK_SIZE..]));
        assert!(level[64..].iter().all(|&byte| byte == 0));
        assert_eq!(image.root_hash(), RootHash(hasher.digest(level)));
    }

    #[test]
    fn derived_parameters_are_reproducible_and_follow_the_content() {
        let mut data = vec![1u8; 300 * BLOCK_SIZE];
        let first = build_from_bytes(&data, &Params::derived()).unwrap();
        let again = build_from_bytes(&data, &Params::derived()).unwrap();
        assert_eq!(first.bytes(), again.bytes());
        data[5] = 2;
        let changed = build_from_bytes(&data, &Params::derived()).unwrap();
        assert_ne!(changed.superblock().salt, first.superblock().salt);
        assert_ne!(changed.superblock().uuid, first.superblock().uuid);
    }

    #[test]
    fn files_and_memory_give_the_same_image() {
        let data: Vec<u8> = (0..1000 * BLOCK_SIZE + 17)
            .map(|i| (i % 241) as u8)
            .collect();
        let directory = tempfile::tempdir().unwrap();
        let (data_path, hash_path) = (directory.path().join("data"), directory.path().join("hash"));
        std::fs::write(&data_path, &data).unwrap();
        let from_memory = build_from_bytes(&data, &Params::derived()).unwrap();
        let written = format_file(&data_path, &hash_path, &Params::derived()).unwrap();
        assert_eq!(written.bytes(), from_memory.bytes());
        assert_eq!(std::fs::read(&hash_path).unwrap(), from_memory.bytes());
    }
}
