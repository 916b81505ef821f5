//! Applying a bundle with 100 MB of payload (no health wait) against copying
//! the same bytes with fsync, and signature + hash verification throughput.
//!
//! Run: `cargo bench -p edged --bench apply` (release). Figures are recorded
//! in BENCHMARKS.md under `## edged`.

use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use edge_bundle::{
    Architecture, BundleBuilder, BundleHeader, FileSigner, OsImage, generate_keypair,
    load_public_key_pem, verify_bundle,
};
use edged::config::DeviceConfig;
use edged::device::Device;
use edged::runtime::NoEngine;
use edged::trust::TrustStore;

const HALF: usize = 50 << 20;
const RUNS: u64 = 3;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let pair = generate_keypair().unwrap();
    let signer = FileSigner::from_pem(&pair.private_pem).unwrap();
    let public_path = root.join("fleet.pub");
    fs::write(&public_path, &pair.public_pem).unwrap();
    let public = load_public_key_pem(&pair.public_pem).unwrap();

    let mut bundles = Vec::new();
    for version in 1..=RUNS {
        let rootfs = root.join(format!("rootfs{version}.img"));
        let verity = root.join(format!("verity{version}.img"));
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
        builder.iot_edge_manifest(serde_json::json!({"modulesContent": {"$edgeAgent": {"properties.desired": {"modules": {}}}}}));
        builder
            .add_os_payload(&OsImage {
                rootfs: rootfs.clone(),
                verity: verity.clone(),
                root_hash: "00".repeat(32),
                root_hash_signature: None,
            })
            .unwrap();
        let path = root.join(format!("v{version}.edgebundle"));
        let file = File::create(&path).unwrap();
        builder.build(&[&signer], io::BufWriter::new(file)).unwrap();
        bundles.push((path, rootfs, verity));
    }
    let payload = (2 * HALF) as f64;

    let mut copy = Vec::new();
    for (index, (_, rootfs, verity)) in bundles.iter().enumerate() {
        let target = root.join(format!("copy{index}"));
        fs::create_dir(&target).unwrap();
        let started = Instant::now();
        for source in [rootfs, verity] {
            let destination = target.join(source.file_name().unwrap());
            let mut output = File::create(&destination).unwrap();
            io::copy(
                &mut BufReader::with_capacity(1 << 20, File::open(source).unwrap()),
                &mut output,
            )
            .unwrap();
            output.sync_all().unwrap();
        }
        File::open(&target).unwrap().sync_all().unwrap();
        copy.push(started.elapsed());
    }

    let mut verify = Vec::new();
    for (path, _, _) in &bundles {
        let started = Instant::now();
        verify_bundle(
            BufReader::with_capacity(1 << 20, File::open(path).unwrap()),
            &[public],
            1,
        )
        .unwrap();
        verify.push(started.elapsed());
    }

    let config = DeviceConfig::parse(
        "compatible = \"bench\"\narchitecture = \"amd64\"\n[health]\nwindow_secs = 0\n",
    )
    .unwrap();
    let trust = TrustStore::new(&config.trust, &[public_path]);
    let (mut device, _) = Device::open(
        &root.join("state"),
        config,
        trust,
        Box::new(NoEngine { healthy: true }),
    )
    .unwrap();
    let mut apply = Vec::new();
    for (path, _, _) in &bundles {
        let started = Instant::now();
        device.apply(path).unwrap();
        apply.push(started.elapsed());
    }

    let (copy, verify, apply) = (median(copy), median(verify), median(apply));
    let rate = |time: Duration| payload / time.as_secs_f64() / 1e9;
    println!(
        "payload: {} MB in two files, median of {RUNS} runs",
        (2 * HALF) >> 20
    );
    println!(
        "copy + fsync:           {:>8.1} ms  ({:.2} GB/s)",
        ms(copy),
        rate(copy)
    );
    println!(
        "verify (sig + sha256):  {:>8.1} ms  ({:.2} GB/s)",
        ms(verify),
        rate(verify)
    );
    println!(
        "edged apply (no wait):  {:>8.1} ms  ({:.2} GB/s, {:.2}x copy + fsync)",
        ms(apply),
        rate(apply),
        apply.as_secs_f64() / copy.as_secs_f64()
    );
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
