//! edge-verity against the real thing: `veritysetup` from cryptsetup-bin is the oracle. Every
//! case formats the same data with both, compares the hash files byte for byte and the root
//! hashes, and has `veritysetup verify` accept our hash file. Without veritysetup these tests
//! fail: a silent skip would leave the format unchecked.
//!
//! Sizes, salts and UUIDs are random; a failure prints the seed, and `EDGE_VERITY_SEED=N`
//! replays it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edge_verity::{
    BLOCK_SIZE, Params, RootHash, Uuid, VerityError, format_file, format_salt, verify_files,
};

const BLOCK: u64 = BLOCK_SIZE as u64;

/// A small reproducible generator (SplitMix64), so no test depends on a random-number crate.
struct Random {
    seed: u64,
    state: u64,
}

impl Random {
    fn new(test: &str) -> Random {
        let seed = std::env::var("EDGE_VERITY_SEED").map_or_else(
            |_| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                now.unwrap().as_nanos() as u64
            },
            |seed| seed.parse().expect("EDGE_VERITY_SEED is a number"),
        );
        eprintln!("{test}: EDGE_VERITY_SEED={seed}");
        Random { seed, state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(length + 8);
        while bytes.len() < length {
            bytes.extend_from_slice(&self.next().to_le_bytes());
        }
        bytes.truncate(length);
        bytes
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_bytes(self.bytes(16).try_into().unwrap())
    }

    /// Salts of every interesting length: none, one byte, a digest's 32, the maximum 256, and
    /// anything in between.
    fn salt(&mut self) -> Vec<u8> {
        let length = match self.below(5) {
            0 => 0,
            1 => 1,
            2 => 32,
            3 => 256,
            _ => 1 + self.below(256) as usize,
        };
        self.bytes(length)
    }
}

fn veritysetup(arguments: &[&str], files: &[&Path]) -> Output {
    Command::new("veritysetup")
        .args(arguments)
        .args(files)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run veritysetup ({error}); these tests use it as the oracle: install \
                 cryptsetup-bin (apt-get install -y cryptsetup-bin, or run .ci/setup)"
            )
        })
}

fn root_hash_printed(output: &Output) -> RootHash {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("Root hash:"))
        .unwrap_or_else(|| panic!("veritysetup printed no root hash:\n{stdout}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

struct Case {
    _directory: tempfile::TempDir,
    data: PathBuf,
    ours: PathBuf,
    theirs: PathBuf,
    root_hash: RootHash,
}

/// Formats `size` random bytes with both tools and checks they agree in every byte.
fn agree(random: &mut Random, size: u64) -> Case {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let (ours, theirs) = (
        directory.path().join("ours"),
        directory.path().join("theirs"),
    );
    std::fs::write(&data, random.bytes(size as usize)).unwrap();
    let (salt, uuid) = (random.salt(), random.uuid());
    let context = format!(
        "seed {}, size {size}, salt {}, uuid {uuid}",
        random.seed,
        format_salt(&salt)
    );

    let salt_text = format_salt(&salt);
    let uuid_text = uuid.to_string();
    let output = veritysetup(
        &["format", "--salt", &salt_text, "--uuid", &uuid_text],
        &[&data, &theirs],
    );
    assert!(
        output.status.success(),
        "{context}: veritysetup failed: {output:?}"
    );
    let params = Params::derived().with_salt(salt).unwrap().with_uuid(uuid);
    let image = format_file(&data, &ours, &params).unwrap();

    assert_eq!(image.root_hash(), root_hash_printed(&output), "{context}");
    let (our_bytes, their_bytes) = (
        std::fs::read(&ours).unwrap(),
        std::fs::read(&theirs).unwrap(),
    );
    assert_eq!(
        our_bytes.len(),
        their_bytes.len(),
        "{context}: hash file sizes"
    );
    if let Some(offset) = our_bytes.iter().zip(&their_bytes).position(|(a, b)| a != b) {
        panic!("{context}: hash files differ first at byte {offset}");
    }
    let root_text = image.root_hash().to_string();
    let verified = veritysetup(&["verify"], &[&data, &ours, Path::new(&root_text)]);
    assert!(
        verified.status.success(),
        "{context}: veritysetup verify: {verified:?}"
    );
    verify_files(&data, &theirs, &image.root_hash()).unwrap();
    Case {
        _directory: directory,
        data,
        ours,
        theirs,
        root_hash: image.root_hash(),
    }
}

#[test]
fn edge_sizes_match_veritysetup() {
    let mut random = Random::new("edge_sizes_match_veritysetup");
    for size in [
        BLOCK,
        BLOCK + 1,
        2 * BLOCK - 1,
        2 * BLOCK,
        128 * BLOCK,
        129 * BLOCK,
        128 * 128 * BLOCK,
        (128 * 128 + 1) * BLOCK,
    ] {
        agree(&mut random, size);
    }
}

#[test]
fn random_sizes_and_salts_match_veritysetup() {
    let mut random = Random::new("random_sizes_and_salts_match_veritysetup");
    for _ in 0..12 {
        let blocks = match random.below(6) {
            0..=2 => 1 + random.below(130),
            3 | 4 => 1 + random.below(3000),
            _ => 16_000 + random.below(1000),
        };
        let tail = random.below(BLOCK);
        agree(&mut random, blocks * BLOCK + tail);
    }
}

#[test]
fn data_without_a_whole_block_is_refused_by_both() {
    let mut random = Random::new("data_without_a_whole_block_is_refused_by_both");
    for size in [0, 1, BLOCK - 1] {
        let directory = tempfile::tempdir().unwrap();
        let data = directory.path().join("data");
        std::fs::write(&data, random.bytes(size as usize)).unwrap();
        let output = veritysetup(&["format"], &[&data, &directory.path().join("theirs")]);
        assert!(
            !output.status.success(),
            "veritysetup accepted {size} bytes"
        );
        let ours = format_file(&data, &directory.path().join("ours"), &Params::derived());
        assert!(
            matches!(ours, Err(VerityError::DataTooSmall { .. })),
            "{size} bytes: {ours:?}"
        );
        assert!(
            !directory.path().join("ours").exists(),
            "no hash file is left behind"
        );
    }
}

#[test]
fn a_flipped_data_byte_is_found_by_both() {
    let mut random = Random::new("a_flipped_data_byte_is_found_by_both");
    for blocks in [1, 2, 300, 16_500] {
        let case = agree(&mut random, blocks * BLOCK);
        let offset = random.below(blocks * BLOCK);
        flip(&case.data, offset, 1 << random.below(8));
        let error = verify_files(&case.data, &case.ours, &case.root_hash).unwrap_err();
        let context = format!("seed {}, {blocks} blocks, flip at {offset}", random.seed);
        match error {
            VerityError::DataBlockMismatch { block, .. } => {
                assert_eq!(block, offset / BLOCK, "{context}")
            }
            other => panic!("{context}: {other}"),
        }
        assert_rejected_by_veritysetup(&case, &context);
    }
}

#[test]
fn a_flipped_hash_byte_is_found_by_both() {
    let mut random = Random::new("a_flipped_hash_byte_is_found_by_both");
    for blocks in [2, 129, 16_500] {
        let case = agree(&mut random, blocks * BLOCK + 5);
        let tree_size = std::fs::metadata(&case.ours).unwrap().len() - BLOCK;
        let offset = BLOCK + random.below(tree_size);
        flip(&case.ours, offset, 1 << random.below(8));
        let error = verify_files(&case.data, &case.ours, &case.root_hash).unwrap_err();
        let context = format!("seed {}, {blocks} blocks, flip at {offset}", random.seed);
        assert!(
            matches!(error, VerityError::HashBlockMismatch { offset: at, .. } if at == offset / BLOCK * BLOCK),
            "{context}: {error}"
        );
        assert_rejected_by_veritysetup(&case, &context);
    }
}

#[test]
fn a_changed_salt_in_the_superblock_is_found() {
    let mut random = Random::new("a_changed_salt_in_the_superblock_is_found");
    let case = agree(&mut random, 40 * BLOCK);
    std::fs::copy(&case.theirs, &case.ours).unwrap();
    // Byte 80 is the low byte of the salt length: changing it changes the salt the tree is
    // checked with (or makes it longer than allowed).
    flip(&case.ours, 80, 1);
    assert!(verify_files(&case.data, &case.ours, &case.root_hash).is_err());
    assert_rejected_by_veritysetup(&case, &format!("seed {}", random.seed));
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

fn assert_rejected_by_veritysetup(case: &Case, context: &str) {
    let root = case.root_hash.to_string();
    let output = veritysetup(&["verify"], &[&case.data, &case.ours, Path::new(&root)]);
    assert!(
        !output.status.success(),
        "{context}: veritysetup accepted the damage"
    );
}
