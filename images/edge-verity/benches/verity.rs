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
    let cpu_before = cpu_ticks();
    for _ in 0..rounds {
        let started = Instant::now();
        root_hash = format_file(&data, &ours_hash, &params)
            .unwrap()
            .root_hash()
            .to_string();
        ours.push(started.elapsed());
        theirs.push(run_veritysetup(&data, &theirs_hash, &root_hash));
    }
    let cpu_after = cpu_ticks();
    assert!(
        std::fs::read(&ours_hash).unwrap() == std::fs::read(&theirs_hash).unwrap(),
        "the hash files differ"
    );

    println!("dm-verity format of {mebibytes} MiB (sha256, 4 KiB blocks), {rounds} rounds:");
    println!("                       median     best");
    println!("  veritysetup format: {}", times(&mut theirs));
    println!("  edge-verity:        {}", times(&mut ours));
    let ratio =
        |pick: fn(&[Duration]) -> Duration| pick(&theirs).as_secs_f64() / pick(&ours).as_secs_f64();
    println!(
        "  speed-up:           {:>7.2}x {:>7.2}x",
        ratio(median),
        ratio(best)
    );
    let cpu_seconds = |ticks: u64| ticks as f64 / CLOCK_TICKS / rounds as f64;
    println!(
        "  CPU time per run:   veritysetup {:.2}s, edge-verity {:.2}s (user + system)",
        cpu_seconds(cpu_after.1 - cpu_before.1),
        cpu_seconds(cpu_after.0 - cpu_before.0)
    );
    println!("  root hash {root_hash}, hash files identical");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("  load average during the run: {}", load.trim());
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

/// The kernel's unit for process times in /proc (USER_HZ), 100 on Linux.
const CLOCK_TICKS: f64 = 100.0;

/// CPU time (user + system, in clock ticks) used by this process and by its waited-for children,
/// from /proc/self/stat: on a shared machine, wall time alone hides how busy the cores were.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    // Fields after the parenthesised command name; utime, stime, cutime, cstime are 14 to 17.
    let fields: Vec<u64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .skip(11)
        .take(4)
        .map(|field| field.parse().unwrap())
        .collect();
    (fields[0] + fields[1], fields[2] + fields[3])
}

/// Sorts the times and shows their median and best, in seconds.
fn times(times: &mut [Duration]) -> String {
    times.sort();
    format!(
        "{:>7.3}s {:>7.3}s",
        median(times).as_secs_f64(),
        best(times).as_secs_f64()
    )
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn best(sorted: &[Duration]) -> Duration {
    sorted[0]
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
