//! Where each level of the tree lives in the hash file, laid out exactly as cryptsetup's
//! `hash_levels` does: the superblock in block 0, then the levels from the top (nearest the root)
//! down to the one that hashes the data.

use crate::{BLOCK_SIZE, DIGEST_SIZE, SUPERBLOCK_SIZE};

/// log2 of the digests that fit in one hash block (4096 / 32 = 128).
const DIGESTS_PER_BLOCK_BITS: u32 = (BLOCK_SIZE / DIGEST_SIZE).trailing_zeros();

/// One level of the tree: a run of hash blocks holding the digests of the level below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Level {
    /// The level's first block, counted in 4096-byte blocks from the start of the hash file.
    pub first_block: u64,
    pub blocks: u64,
}

impl Level {
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        let start = to_usize(self.first_block) * BLOCK_SIZE;
        start..start + to_usize(self.blocks) * BLOCK_SIZE
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub data_blocks: u64,
    /// `levels[0]` hashes the data blocks; the last level is a single block hashed into the root.
    /// A single data block needs no level at all: its digest is the root hash.
    pub levels: Vec<Level>,
}

impl Geometry {
    pub fn new(data_blocks: u64) -> Geometry {
        assert!(data_blocks > 0, "callers refuse empty data first");
        let mut count = 0;
        while DIGESTS_PER_BLOCK_BITS * count < u64::BITS
            && (data_blocks - 1) >> (DIGESTS_PER_BLOCK_BITS * count) != 0
        {
            count += 1;
        }
        let first_tree_block = SUPERBLOCK_SIZE.div_ceil(BLOCK_SIZE) as u64;
        let mut position = first_tree_block;
        let mut levels = vec![
            Level {
                first_block: 0,
                blocks: 0
            };
            count as usize
        ];
        for index in (0..count as usize).rev() {
            let covered_per_block = 1u128 << (DIGESTS_PER_BLOCK_BITS * (index as u32 + 1));
            let blocks = u128::from(data_blocks).div_ceil(covered_per_block) as u64;
            levels[index] = Level {
                first_block: position,
                blocks,
            };
            position += blocks;
        }
        Geometry {
            data_blocks,
            levels,
        }
    }

    /// The blocks of the tree proper, as veritysetup's "Hash blocks" counts them.
    pub fn hash_blocks(&self) -> u64 {
        self.levels.iter().map(|level| level.blocks).sum()
    }

    /// The size of the whole hash file: superblock block plus tree.
    pub fn hash_file_size(&self) -> u64 {
        (SUPERBLOCK_SIZE.div_ceil(BLOCK_SIZE) as u64 + self.hash_blocks()) * BLOCK_SIZE as u64
    }
}

/// Converts a block count that indexes memory; trees too large for memory fail loudly here.
pub(crate) fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("the hash tree fits in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(data_blocks: u64) -> Vec<(u64, u64)> {
        Geometry::new(data_blocks)
            .levels
            .iter()
            .map(|level| (level.first_block, level.blocks))
            .collect()
    }

    #[test]
    fn one_block_has_no_levels() {
        assert_eq!(levels(1), vec![]);
        assert_eq!(Geometry::new(1).hash_file_size(), 4096);
    }

    #[test]
    fn levels_grow_at_128_digests_per_block_top_level_first() {
        assert_eq!(levels(2), vec![(1, 1)]);
        assert_eq!(levels(128), vec![(1, 1)]);
        assert_eq!(levels(129), vec![(2, 2), (1, 1)]);
        assert_eq!(levels(128 * 128), vec![(2, 128), (1, 1)]);
        assert_eq!(levels(128 * 128 + 1), vec![(4, 129), (2, 2), (1, 1)]);
        assert_eq!(Geometry::new(128 * 128 + 1).hash_blocks(), 132);
    }

    #[test]
    fn a_huge_device_still_has_a_bounded_tree() {
        let geometry = Geometry::new(u64::MAX / BLOCK_SIZE as u64);
        assert_eq!(geometry.levels.last().unwrap().blocks, 1);
        assert_eq!(geometry.levels.len(), 8);
    }
}
