//! Packages a root filesystem directory into a signed bundle and reports
//! the throughput (and, when OUTPUT is a file, verification throughput); used for the numbers in BENCHMARKS.md.
//!
//! Usage: `package_image ROOTFS OUTPUT [gzip]`. The output is not fsynced,
//! so the numbers measure packaging, not the disk.

use std::env;
use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use edge_bundle::{
    Architecture, BundleBuilder, BundleHeader, FileSigner, ImageConfig, LayerCompression,
    generate_keypair,
};

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (Some(rootfs), Some(output)) = (args.first(), args.get(1)) else {
        eprintln!("usage: package_image ROOTFS OUTPUT [gzip]");
        return ExitCode::FAILURE;
    };
    let compression = match args.get(2).map(String::as_str) {
        Some("gzip") => LayerCompression::Gzip,
        _ => LayerCompression::None,
    };
    match run(Path::new(rootfs), Path::new(output), compression) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    rootfs: &Path,
    output: &Path,
    compression: LayerCompression,
) -> Result<(), Box<dyn std::error::Error>> {
    let pair = generate_keypair()?;
    let signer = FileSigner::from_pem(&pair.private_pem)?;
    let started = Instant::now();
    let mut builder = BundleBuilder::new(BundleHeader {
        deployment: "bench".to_owned(),
        compatible: "bench".to_owned(),
        architecture: Architecture::Amd64,
        version: 1,
        source_date_epoch: 0,
    })?;
    let config = ImageConfig {
        reference: "bench/image:1".to_owned(),
        architecture: Architecture::Amd64,
        os: "linux".to_owned(),
        entrypoint: vec!["/bin/sh".to_owned()],
        cmd: Vec::new(),
        env: Vec::new(),
        working_dir: None,
        compression,
    };
    builder.add_local_image("bench", rootfs, &config)?;
    let hashed = started.elapsed();
    let built = builder.build(&[&signer], File::create(output)?)?;
    let total = started.elapsed();
    let layer_bytes: u64 = built
        .manifest
        .payload
        .iter()
        .map(|file| file.size)
        .max()
        .unwrap_or(0);
    let mib = layer_bytes as f64 / f64::from(1 << 20);
    println!(
        "{compression:?}: layer {mib:.0} MiB, hash pass {:.2} s, total {:.2} s, {:.0} MB/s of layer",
        hashed.as_secs_f64(),
        total.as_secs_f64(),
        layer_bytes as f64 / 1e6 / total.as_secs_f64()
    );
    if output.is_file() {
        let public = edge_bundle::load_public_key_pem(&pair.public_pem)?;
        let started = Instant::now();
        let reader = std::io::BufReader::with_capacity(1 << 20, File::open(output)?);
        edge_bundle::verify_bundle(reader, &[public], 1)?;
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "verify: {seconds:.2} s, {:.0} MB/s",
            layer_bytes as f64 / 1e6 / seconds
        );
    }
    Ok(())
}
