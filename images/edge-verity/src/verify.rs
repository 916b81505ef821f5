//! Verification: first the stored tree is checked from the trusted root hash down, so that every
//! digest used afterwards is trusted; then data blocks are checked against the bottom level, all
//! at once on all cores ([`verify_files`]) or one by one while streaming ([`VerifyingReader`]).

use std::fs::File;
use std::io::{self, Read, Seek as _, SeekFrom};
use std::path::Path;

use crate::geometry::{Geometry, to_usize};
use crate::hashing::{BlockHasher, Source, digest_blocks};
use crate::{BLOCK_SIZE, DIGEST_SIZE, RootHash, Superblock, VerityError};

/// A hash tree whose every level has been checked against the root hash: the digest it expects
/// for each data block can be trusted.
#[derive(Clone)]
pub struct VerifiedTree {
    superblock: Superblock,
    hasher: BlockHasher,
    /// The trusted digest of every data block, in order.
    data_digests: Vec<u8>,
}

impl VerifiedTree {
    /// Checks a hash file's tree against `root_hash`, naming the first bad hash block (from the
    /// top level down) if there is one.
    pub fn open(hash_image: &[u8], root_hash: &RootHash) -> Result<VerifiedTree, VerityError> {
        let superblock = Superblock::parse(hash_image)?;
        let geometry = Geometry::new(superblock.data_blocks);
        if (hash_image.len() as u64) < geometry.hash_file_size() {
            return Err(VerityError::HashTooShort {
                expected: geometry.hash_file_size(),
                actual: hash_image.len() as u64,
            });
        }
        let hasher = BlockHasher::new(&superblock.salt);
        let data_digests = trusted_data_digests(&hasher, &geometry, hash_image, root_hash)?;
        Ok(VerifiedTree {
            superblock,
            hasher,
            data_digests,
        })
    }

    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    pub fn data_blocks(&self) -> u64 {
        self.superblock.data_blocks
    }

    /// Checks one 4096-byte data block, for callers that read blocks in their own order.
    pub fn verify_block(&self, index: u64, block: &[u8]) -> Result<(), VerityError> {
        if index >= self.data_blocks() || block.len() != BLOCK_SIZE {
            return Err(VerityError::data_block(index));
        }
        let expected = &self.data_digests[to_usize(index) * DIGEST_SIZE..][..DIGEST_SIZE];
        if self.hasher.digest(block) == expected {
            Ok(())
        } else {
            Err(VerityError::data_block(index))
        }
    }

    /// Wraps a reader of the data so that every block is checked before any of its bytes are
    /// returned; the stream ends after the last covered block.
    pub fn reader<R: Read>(&self, inner: R) -> VerifyingReader<'_, R> {
        VerifyingReader {
            tree: self,
            inner,
            block: vec![0; BLOCK_SIZE].into_boxed_slice(),
            served: BLOCK_SIZE,
            next_block: 0,
        }
    }

    /// Checks all data blocks on all cores and names the first bad one.
    fn verify_data(&self, data: Source<'_>) -> io::Result<Result<(), VerityError>> {
        let mut actual = vec![0; self.data_digests.len()];
        digest_blocks(&self.hasher, data, &mut actual)?;
        Ok(match first_mismatch(&actual, &self.data_digests) {
            Some(block) => Err(VerityError::data_block(block as u64)),
            None => Ok(()),
        })
    }
}

impl std::fmt::Debug for VerifiedTree {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VerifiedTree")
            .field("superblock", &self.superblock)
            .finish_non_exhaustive()
    }
}

/// Checks data and hash files against a root hash, like `veritysetup verify DATA HASH ROOT`.
pub fn verify_files(
    data: &Path,
    hash: &Path,
    root_hash: &RootHash,
) -> Result<VerifiedTree, VerityError> {
    let hash_image = std::fs::read(hash).map_err(|error| VerityError::io("read", hash, error))?;
    let tree = VerifiedTree::open(&hash_image, root_hash)?;
    let read_error = |error| VerityError::io("read", data, error);
    let mut file = File::open(data).map_err(read_error)?;
    let size = file.seek(SeekFrom::End(0)).map_err(read_error)?;
    check_data_size(&tree, size)?;
    tree.verify_data(Source::File(&file))
        .map_err(read_error)??;
    Ok(tree)
}

/// Checks data and a hash file held in memory against a root hash.
pub fn verify_bytes(
    data: &[u8],
    hash_image: &[u8],
    root_hash: &RootHash,
) -> Result<VerifiedTree, VerityError> {
    let tree = VerifiedTree::open(hash_image, root_hash)?;
    check_data_size(&tree, data.len() as u64)?;
    tree.verify_data(Source::Bytes(data))
        .expect("reading memory cannot fail")?;
    Ok(tree)
}

fn check_data_size(tree: &VerifiedTree, size: u64) -> Result<(), VerityError> {
    let expected = tree.data_blocks() * BLOCK_SIZE as u64;
    if size < expected {
        return Err(VerityError::DataTooShort {
            expected,
            actual: size,
        });
    }
    Ok(())
}

/// Walks the stored levels from the top down, checking each against the already-trusted level
/// above it (the top one against the root hash), and returns the bottom level's digests.
fn trusted_data_digests(
    hasher: &BlockHasher,
    geometry: &Geometry,
    image: &[u8],
    root_hash: &RootHash,
) -> Result<Vec<u8>, VerityError> {
    let Some(top) = geometry.levels.last() else {
        return Ok(root_hash.0.to_vec());
    };
    if hasher.digest(&image[top.byte_range()]) != root_hash.0 {
        return Err(VerityError::HashBlockMismatch {
            level: geometry.levels.len() - 1,
            block: 0,
            offset: top.byte_range().start as u64,
            parent: "the root hash",
        });
    }
    for (level, pair) in geometry.levels.windows(2).enumerate().rev() {
        let (below, above) = (pair[0], pair[1]);
        let mut actual = vec![0; to_usize(below.blocks) * DIGEST_SIZE];
        digest_blocks(
            hasher,
            Source::Bytes(&image[below.byte_range()]),
            &mut actual,
        )
        .expect("reading memory cannot fail");
        let stored = &image[above.byte_range()][..actual.len()];
        if let Some(block) = first_mismatch(&actual, stored) {
            return Err(VerityError::HashBlockMismatch {
                level,
                block: block as u64,
                offset: ((below.first_block + block as u64) * BLOCK_SIZE as u64),
                parent: "its digest in the level above",
            });
        }
    }
    let bottom = geometry.levels[0].byte_range();
    let data_digests = to_usize(geometry.data_blocks) * DIGEST_SIZE;
    Ok(image[bottom][..data_digests].to_vec())
}

/// The index of the first digest that differs between two runs of digests.
fn first_mismatch(actual: &[u8], expected: &[u8]) -> Option<usize> {
    actual
        .chunks_exact(DIGEST_SIZE)
        .zip(expected.chunks_exact(DIGEST_SIZE))
        .position(|(actual, expected)| actual != expected)
}

/// A reader that returns data only after checking the block it comes from; a bad block is an
/// [`io::ErrorKind::InvalidData`] error wrapping [`VerityError::DataBlockMismatch`]. This is how
/// the runtime writes an OS update to the inactive slot while verifying it.
pub struct VerifyingReader<'t, R> {
    tree: &'t VerifiedTree,
    inner: R,
    block: Box<[u8]>,
    /// How much of `block` has been returned; `BLOCK_SIZE` when the next block must be read.
    served: usize,
    next_block: u64,
}

impl<R> VerifyingReader<'_, R> {
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for VerifyingReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.served == BLOCK_SIZE {
            if self.next_block == self.tree.data_blocks() {
                return Ok(0);
            }
            self.inner.read_exact(&mut self.block)?;
            self.tree
                .verify_block(self.next_block, &self.block)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            self.next_block += 1;
            self.served = 0;
        }
        let length = buffer.len().min(BLOCK_SIZE - self.served);
        buffer[..length].copy_from_slice(&self.block[self.served..][..length]);
        self.served += length;
        Ok(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Params, build_from_bytes};

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE).map(|i| (i % 253) as u8).collect()
    }

    /// A hash file whose superblock claims `data_blocks`, its tree cut off after the superblock.
    fn claiming(data_blocks: u64) -> Vec<u8> {
        let image = build_from_bytes(&data(2), &Params::derived()).unwrap();
        let mut bytes = image.bytes().to_vec();
        bytes[72..80].copy_from_slice(&data_blocks.to_le_bytes());
        bytes
    }

    #[test]
    fn a_superblock_claiming_absurd_sizes_is_refused_without_arithmetic_overflow() {
        let root = build_from_bytes(&data(2), &Params::derived())
            .unwrap()
            .root_hash();
        for data_blocks in [1 << 59, u64::MAX, crate::MAX_DATA_BLOCKS + 1] {
            let error = VerifiedTree::open(&claiming(data_blocks), &root).unwrap_err();
            assert!(
                matches!(error, VerityError::TooManyDataBlocks { .. }),
                "{data_blocks}: {error}"
            );
        }
        // The largest count allowed still computes its hash file size, and the short file
        // is refused for it rather than read past its end.
        let error = VerifiedTree::open(&claiming(crate::MAX_DATA_BLOCKS), &root).unwrap_err();
        assert!(matches!(error, VerityError::HashTooShort { .. }), "{error}");
    }

    #[test]
    fn good_data_verifies_in_every_way() {
        for blocks in [1, 2, 129, 600] {
            let data = data(blocks);
            let image = build_from_bytes(&data, &Params::derived()).unwrap();
            let tree = verify_bytes(&data, image.bytes(), &image.root_hash()).unwrap();
            let mut streamed = Vec::new();
            tree.reader(&data[..]).read_to_end(&mut streamed).unwrap();
            assert_eq!(streamed, data);
        }
    }

    #[test]
    fn names_the_first_bad_data_block() {
        let mut data = data(600);
        let image = build_from_bytes(&data, &Params::derived()).unwrap();
        data[450 * BLOCK_SIZE + 9] ^= 1;
        data[500 * BLOCK_SIZE] ^= 1;
        let error = verify_bytes(&data, image.bytes(), &image.root_hash()).unwrap_err();
        assert!(
            matches!(error, VerityError::DataBlockMismatch { block: 450, .. }),
            "{error}"
        );
    }

    #[test]
    fn names_a_bad_hash_block_before_any_data_block() {
        let data = data(300);
        let image = build_from_bytes(&data, &Params::derived()).unwrap();
        // 300 blocks: level 1 at block 1, level 0 (3 blocks) at blocks 2..5.
        let mut hash = image.bytes().to_vec();
        hash[3 * BLOCK_SIZE + 100] ^= 0x80;
        let error = verify_bytes(&data, &hash, &image.root_hash()).unwrap_err();
        assert!(
            matches!(error, VerityError::HashBlockMismatch { level: 0, block: 1, offset, .. } if offset == 3 * BLOCK_SIZE as u64),
            "{error}"
        );
        let mut hash = image.bytes().to_vec();
        hash[BLOCK_SIZE + 4000] ^= 1;
        let error = verify_bytes(&data, &hash, &image.root_hash()).unwrap_err();
        assert!(
            matches!(
                error,
                VerityError::HashBlockMismatch {
                    level: 1,
                    block: 0,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_root_hash_or_short_inputs_fail() {
        let data = data(3);
        let image = build_from_bytes(&data, &Params::derived()).unwrap();
        let mut root = image.root_hash();
        root.0[0] ^= 1;
        assert!(verify_bytes(&data, image.bytes(), &root).is_err());
        let short_hash = &image.bytes()[..BLOCK_SIZE];
        assert!(matches!(
            verify_bytes(&data, short_hash, &image.root_hash()),
            Err(VerityError::HashTooShort { .. })
        ));
        assert!(matches!(
            verify_bytes(&data[..2 * BLOCK_SIZE], image.bytes(), &image.root_hash()),
            Err(VerityError::DataTooShort { .. })
        ));
    }

    #[test]
    fn the_streaming_reader_stops_at_the_bad_block() {
        let mut data = data(5);
        let image = build_from_bytes(&data, &Params::derived()).unwrap();
        let tree = VerifiedTree::open(image.bytes(), &image.root_hash()).unwrap();
        data[3 * BLOCK_SIZE + 1] ^= 1;
        let mut reader = tree.reader(&data[..]);
        let mut copied = Vec::new();
        let error = io::copy(&mut reader, &mut copied).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("data block 3"), "{error}");
        assert_eq!(copied, data[..3 * BLOCK_SIZE]);
        let error =
            io::copy(&mut tree.reader(&data[..BLOCK_SIZE + 5]), &mut io::sink()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn single_blocks_verify_out_of_order() {
        let data = data(200);
        let image = build_from_bytes(&data, &Params::derived()).unwrap();
        let tree = VerifiedTree::open(image.bytes(), &image.root_hash()).unwrap();
        let block = |index: usize| &data[index * BLOCK_SIZE..][..BLOCK_SIZE];
        assert!(tree.verify_block(150, block(150)).is_ok());
        assert!(tree.verify_block(149, block(150)).is_err());
        assert!(tree.verify_block(200, block(0)).is_err());
    }
}
