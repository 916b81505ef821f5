//! Applying a bundle with 100 MB of payload (no health wait) against copying
//! the same bytes with fsync, and signature + hash verification throughput.
//! Each round copies, verifies and applies the same payload bytes, so load
//! from other processes falls on all three alike. The apply is timed to its
//! return at the commit point; the deletion of the deployment it replaced
//! runs on past it and is reported on its own line (apply + wait for
//! cleanup), as the baseline deletes its copies untimed.
//!
//! Run: `cargo bench -p edged --bench apply` (release). Figures are recorded
//! in BENCHMARKS.md under `## edged`.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_bundle::{
    Architecture, BundleBuilder, BundleHeader, FileSigner, ImageConfig, LayerCompression,
    generate_keypair, load_public_key_pem, verify_bundle,
};
use edged::config::DeviceConfig;
use edged::device::Device;
use edged::intake;
use edged::runtime::NoEngine;
use edged::trust::TrustStore;
use sha2::{Digest, Sha256};

const HALF: usize = 50 << 20;
/// Bundles built; the first two are applied untimed so that every timed
/// apply replaces a deployment in the inactive slot, as on a device in
/// service.
const BUNDLES: u64 = 9;
/// The untimed warm-up applies.
const WARM_UP: usize = 2;

/// One timed round: the same payload bytes copied, verified and applied.
struct Round {
    /// CPU time (user + system, all threads) of the copy, verify and apply.
    cpu: [Duration; 3],
    copy: Duration,
    verify: Duration,
    apply: Duration,
    /// Waiting, after the apply returned, for the deletion of the
    /// deployment it replaced to finish.
    cleanup: Duration,
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pair = generate_keypair().unwrap();
    let signer = FileSigner::from_pem(&pair.private_pem).unwrap();
    let public_path = root.join("fleet.pub");
    fs::write(&public_path, &pair.public_pem).unwrap();
    let public = load_public_key_pem(&pair.public_pem).unwrap();
    let bundles: Vec<_> = (1..=BUNDLES)
        .map(|version| build_bundle(root, &signer, version))
        .collect();

    let config = DeviceConfig::parse(
        "compatible = \"bench\"\narchitecture = \"amd64\"\n[health]\nwindow = \"0s\"\n",
    )
    .unwrap();
    let trust = TrustStore::new(&config.trust, std::slice::from_ref(&public_path));
    let (mut device, _) = Device::open(
        &root.join("state"),
        config.clone(),
        TrustStore::new(&config.trust, std::slice::from_ref(&public_path)),
        Box::new(NoEngine { healthy: true }),
    )
    .unwrap();
    for (bundle, _, _) in &bundles[..WARM_UP] {
        device.apply(bundle).unwrap();
    }

    let load_before = load_average();
    let mut rounds = Vec::new();
    for (index, (bundle, rootfs, verity)) in bundles.iter().enumerate().skip(WARM_UP) {
        let cpu_before = cpu_time();
        let copy = copy_and_fsync(&root.join(format!("copy{index}")), &[rootfs, verity]);
        let cpu_copied = cpu_time();
        let started = Instant::now();
        verify_bundle(
            BufReader::with_capacity(1 << 20, File::open(bundle).unwrap()),
            &[public],
            1,
        )
        .unwrap();
        let verify = started.elapsed();
        let cpu_verified = cpu_time();
        let started = Instant::now();
        device.apply(bundle).unwrap();
        let apply = started.elapsed();
        let cpu_applied = cpu_time();
        // The deletion runs on after the commit; it must not overlap the
        // next round's baseline.
        let started = Instant::now();
        device.wait_for_cleanup();
        let cleanup = started.elapsed();
        rounds.push(Round {
            cpu: [
                cpu_copied - cpu_before,
                cpu_verified - cpu_copied,
                cpu_applied - cpu_verified,
            ],
            copy,
            verify,
            apply,
            cleanup,
        });
    }
    let load_after = load_average();

    let payload = (2 * HALF) as f64;
    let rate = |time: Duration| payload / time.as_secs_f64() / 1e9;
    println!(
        "payload: {} MB in two files, page-cached input, {} interleaved rounds; load average {load_before} before, {load_after} after",
        (2 * HALF) >> 20,
        rounds.len()
    );
    let report = |name: &str, times: Vec<Duration>| {
        let (median, best) = (median(times.clone()), *times.iter().min().unwrap());
        println!(
            "{name:<24} median {:>7.1} ms ({:.2} GB/s)   best {:>7.1} ms ({:.2} GB/s)",
            ms(median),
            rate(median),
            ms(best),
            rate(best)
        );
        median
    };
    let copy = report(
        "copy + fsync",
        rounds.iter().map(|round| round.copy).collect(),
    );
    report(
        "verify (sig + sha256)",
        rounds.iter().map(|round| round.verify).collect(),
    );
    let apply = report(
        "edged apply (no wait)",
        rounds.iter().map(|round| round.apply).collect(),
    );
    report(
        "apply + wait for cleanup",
        rounds
            .iter()
            .map(|round| round.apply + round.cleanup)
            .collect(),
    );
    let ratios: Vec<f64> = rounds
        .iter()
        .map(|round| round.apply.as_secs_f64() / round.copy.as_secs_f64())
        .collect();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "apply / copy + fsync     per round (same load for both) median {:.2}x, best {:.2}x: {}; ratio of the medians {:.2}x",
        sorted[sorted.len() / 2],
        sorted[0],
        ratios
            .iter()
            .map(|ratio| format!("{ratio:.2}x"))
            .collect::<Vec<_>>()
            .join(" "),
        apply.as_secs_f64() / copy.as_secs_f64()
    );
    let cpu = |step: usize| {
        ms(rounds.iter().map(|round| round.cpu[step]).sum::<Duration>()) / rounds.len() as f64
    };
    println!(
        "CPU time per round (user + system, all threads; 10 ms ticks averaged): copy + fsync {:.0} ms, verify {:.0} ms, apply {:.0} ms",
        cpu(0),
        cpu(1),
        cpu(2)
    );
    phases(root, &bundles[1].0, &config, &trust);
}

/// Times the parts of an apply on their own: the head check, verifying
/// extraction into staging, and deleting a 100 MB deployment.
fn phases(root: &Path, bundle: &Path, config: &DeviceConfig, trust: &TrustStore) {
    let staging = root.join("phase-staging");
    let started = Instant::now();
    let accepted = intake::accept(bundle, config, trust, 0).unwrap();
    let accept = started.elapsed();
    let started = Instant::now();
    intake::extract(bundle, &accepted, 1, &staging).unwrap();
    let extract = started.elapsed();
    let started = Instant::now();
    fs::remove_dir_all(&staging).unwrap();
    let remove = started.elapsed();
    let bytes = fs::read(root.join("image2").join("rootfs.img")).unwrap();
    let started = Instant::now();
    for _ in 0..2 {
        std::hint::black_box(Sha256::digest(&bytes));
    }
    let hash = started.elapsed();
    println!(
        "phases of one apply: head check {:.1} ms, verify + extract + fsync {:.1} ms, deleting 100 MB {:.1} ms; SHA-256 of 100 MB in memory {:.1} ms",
        ms(accept),
        ms(extract),
        ms(remove),
        ms(hash)
    );
}

/// Builds bundle `version` with its two payload files; returns the bundle
/// and the payload file paths.
fn build_bundle(root: &Path, signer: &FileSigner, version: u64) -> (PathBuf, PathBuf, PathBuf) {
    // The payload travels as a module image (one uncompressed layer holding both files), the
    // way deployments carry their bytes; an OS payload would make edged write a disk slot.
    let image = root.join(format!("image{version}"));
    fs::create_dir_all(&image).unwrap();
    let rootfs = image.join("rootfs.img");
    let verity = image.join("verity.img");
    write_pattern(&rootfs, version as u8);
    write_pattern(&verity, version as u8 ^ 0x5a);
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: "bench".into(),
        compatible: "bench".into(),
        architecture: Architecture::Amd64,
        version,
        source_date_epoch: 0,
    })
    .unwrap();
    builder.iot_edge_manifest(
        serde_json::json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {
            "bench": {"type": "docker", "status": "running", "restartPolicy": "always",
                      "settings": {"image": "edgec.local/bench:latest", "createOptions": "{}"}}
        }}}}}),
    );
    let config = ImageConfig {
        reference: "edgec.local/bench:latest".into(),
        architecture: Architecture::Amd64,
        os: "linux".into(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
        env: Vec::new(),
        working_dir: None,
        compression: LayerCompression::None,
    };
    builder.add_local_image("bench", &image, &config).unwrap();
    let path = root.join(format!("v{version}.edgebundle"));
    let file = File::create(&path).unwrap();
    builder.build(&[signer], io::BufWriter::new(file)).unwrap();
    (path, rootfs, verity)
}

/// The baseline: copies the files into a new directory with 1 MiB buffers,
/// fsyncs each file and the directory. The copy is deleted untimed.
fn copy_and_fsync(target: &Path, sources: &[&PathBuf]) -> Duration {
    fs::create_dir(target).unwrap();
    let started = Instant::now();
    for source in sources {
        let destination = target.join(source.file_name().unwrap());
        let mut output = File::create(&destination).unwrap();
        io::copy(
            &mut BufReader::with_capacity(1 << 20, File::open(source).unwrap()),
            &mut output,
        )
        .unwrap();
        output.sync_all().unwrap();
    }
    File::open(target).unwrap().sync_all().unwrap();
    let elapsed = started.elapsed();
    fs::remove_dir_all(target).unwrap();
    elapsed
}

/// The CPU time this process has used so far, from `/proc/self/stat`
/// (user and system time of all its threads, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// The one-minute load average, to judge how loaded the machine was.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
/// Writes HALF bytes of a non-repeating pattern.
fn write_pattern(path: &Path, seed: u8) {
    let mut file = io::BufWriter::new(File::create(path).unwrap());
    let mut block = vec![0_u8; 1 << 20];
    for index in 0..HALF >> 20 {
        for (offset, byte) in block.iter_mut().enumerate() {
            *byte = (offset as u8)
                .wrapping_mul(seed | 1)
                .wrapping_add(index as u8);
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}
