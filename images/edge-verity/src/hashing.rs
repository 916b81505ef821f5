//! Salted SHA-256 over runs of 4096-byte blocks, spread over all cores: each thread takes one
//! contiguous range of blocks and writes its digests into its own slice of the output.

use std::fs::File;
use std::io;
use std::num::NonZero;
use std::os::unix::fs::FileExt;

use sha2::{Digest as _, Sha256};

use crate::{BLOCK_SIZE, DIGEST_SIZE};

/// Below this many blocks per thread, starting threads costs more than it saves.
const MIN_BLOCKS_PER_THREAD: usize = 256;

/// Each thread reads its range of a file in pieces of this many blocks (1 MiB).
const READ_BLOCKS: usize = 256;

/// Where the blocks come from: memory (a lower level of the tree, or data the caller already
/// holds) or a file read with positioned reads, so threads need no shared cursor.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a File),
}

/// A SHA-256 state that has already absorbed the salt (format 1 hashes `salt || block`), cloned
/// for every block so the salt is absorbed once.
#[derive(Clone)]
pub(crate) struct BlockHasher(Sha256);

impl BlockHasher {
    pub fn new(salt: &[u8]) -> Self {
        BlockHasher(Sha256::new_with_prefix(salt))
    }

    pub fn digest(&self, block: &[u8]) -> [u8; DIGEST_SIZE] {
        let mut hasher = self.0.clone();
        hasher.update(block);
        hasher.finalize().into()
    }

    fn digest_each(&self, blocks: &[u8], digests: &mut [u8]) {
        for (block, digest) in blocks
            .chunks_exact(BLOCK_SIZE)
            .zip(digests.chunks_exact_mut(DIGEST_SIZE))
        {
            digest.copy_from_slice(&self.digest(block));
        }
    }
}

/// Writes the digest of each of the first `digests.len() / 32` blocks of `source` into
/// `digests`, in order, using every core.
pub(crate) fn digest_blocks(
    hasher: &BlockHasher,
    source: Source<'_>,
    digests: &mut [u8],
) -> io::Result<()> {
    let blocks = digests.len() / DIGEST_SIZE;
    let threads = thread_count(blocks);
    if threads == 1 {
        return digest_range(hasher, source, 0, digests);
    }
    let per_thread = blocks.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = digests
            .chunks_mut(per_thread * DIGEST_SIZE)
            .enumerate()
            .map(|(index, part)| {
                scope.spawn(move || digest_range(hasher, source, index * per_thread, part))
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| worker.join().expect("a hashing thread panicked"))
    })
}

fn thread_count(blocks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, NonZero::get);
    cores.min(blocks / MIN_BLOCKS_PER_THREAD).max(1)
}

/// Digests the blocks from `first` on, as many as `digests` has room for.
fn digest_range(
    hasher: &BlockHasher,
    source: Source<'_>,
    first: usize,
    digests: &mut [u8],
) -> io::Result<()> {
    let count = digests.len() / DIGEST_SIZE;
    match source {
        Source::Bytes(bytes) => {
            hasher.digest_each(
                &bytes[first * BLOCK_SIZE..(first + count) * BLOCK_SIZE],
                digests,
            );
        }
        Source::File(file) => {
            let mut buffer = vec![0; READ_BLOCKS.min(count) * BLOCK_SIZE];
            for (piece, piece_digests) in digests.chunks_mut(READ_BLOCKS * DIGEST_SIZE).enumerate()
            {
                let bytes = piece_digests.len() / DIGEST_SIZE * BLOCK_SIZE;
                let offset = ((first + piece * READ_BLOCKS) * BLOCK_SIZE) as u64;
                file.read_exact_at(&mut buffer[..bytes], offset)?;
                hasher.digest_each(&buffer[..bytes], piece_digests);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_digests_equal_one_by_one_digests_for_every_split() {
        let hasher = BlockHasher::new(b"salt");
        for blocks in [1, 255, 256, 511, 512, 513, 1000] {
            let data: Vec<u8> = (0..blocks * BLOCK_SIZE).map(|i| (i / 7) as u8).collect();
            let mut digests = vec![0; blocks * DIGEST_SIZE];
            digest_blocks(&hasher, Source::Bytes(&data), &mut digests).unwrap();
            for (index, digest) in digests.chunks_exact(DIGEST_SIZE).enumerate() {
                let block = &data[index * BLOCK_SIZE..][..BLOCK_SIZE];
                let expected = Sha256::new_with_prefix(b"salt")
                    .chain_update(block)
                    .finalize();
                assert_eq!(
                    digest,
                    expected.as_slice(),
                    "{blocks} blocks, block {index}"
                );
            }
        }
    }

    #[test]
    fn file_and_memory_sources_agree() {
        let hasher = BlockHasher::new(&[]);
        let data: Vec<u8> = (0..700 * BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &data).unwrap();
        let mut from_memory = vec![0; 700 * DIGEST_SIZE];
        let mut from_file = vec![0; 700 * DIGEST_SIZE];
        digest_blocks(&hasher, Source::Bytes(&data), &mut from_memory).unwrap();
        digest_blocks(&hasher, Source::File(&file), &mut from_file).unwrap();
        assert_eq!(from_memory, from_file);
    }
}
