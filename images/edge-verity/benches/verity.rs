//! Formats the same 1 GiB file with edge-verity and with `veritysetup format`, alternating, and
//! prints both times. Run with `cargo bench -p edge-verity --bench verity`; set
//! `EDGE_VERITY_BENCH_MIB` for another size and `EDGE_VERITY_BENCH_ROUNDS` for more rounds.
//!
//! Both tools get the same salt and UUID, read the data from the page cache (it is read once
//! before timing) and write their hash file; the outputs are compared byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_verity::{Params, format_file};

const SALT: &str = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
const UUID: &str = "0b5e55ed-0000-4000-8000-000000000001";

fn main() {
    let mebibytes = setting("EDGE_VERITY_BENCH_MIB", 1024);
    let rounds = setting("EDGE_VERITY_BENCH_ROUNDS", 3);
    let directory = bench_directory();
    let data = directory.join(format!("data-{mebibytes}MiB"));
    ensure_data(&data, mebibytes);
    std::fs::read(&data).expect("the benchmark data can be read"); // warms the page cache
    let (ours_hash, theirs_hash) = (
        directory.join("hash.edge"),
        directory.join("hash.veritysetup"),
    );
    let params = Params::derived()
        .with_salt(hex::decode(SALT).unwrap())
        .unwrap()
        .with_uuid(UUID.parse().unwrap());

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut root_hash = String::new();
    for _ in 0..rounds {
        let started = Instant::now();
        root_hash = format_file(&data, &ours_hash, &params)
            .unwrap()
            .root_hash()
            .to_string();
        ours.push(started.elapsed());
        theirs.push(run_veritysetup(&data, &theirs_hash, &root_hash));
    }
    assert!(
        std::fs::read(&ours_hash).unwrap() == std::fs::read(&theirs_hash).unwrap(),
        "the hash files differ"
    );

    let (ours, theirs) = (median(ours), median(theirs));
    println!("dm-verity format of {mebibytes} MiB (sha256, 4 KiB blocks), median of {rounds}:");
    println!("  veritysetup format: {:>8.3} s", theirs.as_secs_f64());
    println!("  edge-verity:        {:>8.3} s", ours.as_secs_f64());
    println!(
        "  speed-up:           {:>8.2}x",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
    println!("  root hash {root_hash}, hash files identical");
}

/// Runs `veritysetup format` and checks it printed the same root hash.
fn run_veritysetup(data: &Path, hash: &Path, expected_root: &str) -> Duration {
    let _ = std::fs::remove_file(hash);
    let started = Instant::now();
    let output = Command::new("veritysetup")
        .args(["format", "--salt", SALT, "--uuid", UUID])
        .arg(data)
        .arg(hash)
        .output()
        .expect("veritysetup runs (apt-get install -y cryptsetup-bin)");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "veritysetup failed: {output:?}");
    assert!(
        stdout.contains(expected_root),
        "root hashes differ:\n{stdout}"
    );
    elapsed
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |value| value.parse().expect("a whole number"))
}

fn bench_directory() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let directory = target.join("edge-verity-bench");
    std::fs::create_dir_all(&directory).expect("the benchmark directory can be created");
    directory
}

/// Writes pseudo-random (incompressible, reproducible) data, unless an earlier run already did.
fn ensure_data(path: &Path, mebibytes: usize) {
    let size = (mebibytes << 20) as u64;
    if std::fs::metadata(path).is_ok_and(|metadata| metadata.len() == size) {
        return;
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bytes = Vec::with_capacity(size as usize);
    while bytes.len() < size as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("the benchmark data can be written");
}
