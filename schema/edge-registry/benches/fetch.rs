//! Over-the-air fetches through a real registry (Debian's docker-registry on loopback, TLS and
//! an htpasswd user, from `test-registry`).
//!
//! 1. An update that changes one of ten modules: two signed bundles of ten module images
//!    (8–16 MiB of incompressible layer each), both pushed; v1 fetched with nothing on the
//!    device, then v2 with `have` pointing at v1's fetched blobs. Reported: the bytes fetched for
//!    v2 (the client's `FetchReport` and the registry's log) against the v2 bundle, and the wall
//!    time of each fetch.
//! 2. Throughput of one 256 MiB blob through `fetch_payload` (nothing in `have`) against `curl`
//!    of the same blob URL in the same run, the tools alternating round by round.
//!
//! Run: `cargo bench -p edge-registry --bench fetch` (release); `FETCH_BENCH_ROUNDS` sets the
//! rounds (default 5) and `FETCH_BENCH_MIB` the large blob's size (default 256). Figures are
//! recorded in BENCHMARKS.md under "OTA through a registry".

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Spec, build_bundle, manifest, options};
use edge_bundle::Sha256Digest;
use edge_registry::{FetchReport, FetchedHead, RegistryClient, parse_reference};
use test_registry::Registry;

/// The modules of the update bundles, and their layer sizes in MiB (8–16).
const MODULES: [(&str, usize); 10] = [
    ("m00", 8),
    ("m01", 12),
    ("m02", 9),
    ("m03", 16),
    ("m04", 10),
    ("m05", 14),
    ("m06", 8),
    ("m07", 11),
    ("m08", 15),
    ("m09", 13),
];

/// The module whose content v2 changes.
const CHANGED: &str = "m05";

const REPOSITORY: &str = "fleet/bench";

fn main() {
    if !test_registry::available() {
        println!(
            "SKIPPED: fetch benchmark: {} is not installed",
            test_registry::PROGRAM
        );
        return;
    }
    let rounds: usize = env_number("FETCH_BENCH_ROUNDS", 5);
    let large_mib: usize = env_number("FETCH_BENCH_MIB", 256);
    let load_start = load_average();
    println!("load average at the start: {load_start}");
    // The fetched files go to the same file system as curl's output, under the system's
    // temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let registry = common::registry(root, "fetch benchmark").expect("the registry is installed");
    let client = RegistryClient::new(options(&registry)).unwrap();

    let update = update(root, &registry, &client, rounds);
    let throughput = throughput(root, &registry, &client, rounds, large_mib);
    let load_end = load_average();

    println!();
    println!("| measurement | result |");
    println!("| --- | --- |");
    println!(
        "| v2 bundle (ten modules, one changed) | {:.1} MiB file, {:.1} MiB of distinct payload blobs |",
        mib(update.bundle_bytes),
        mib(update.payload_bytes)
    );
    println!(
        "| v2 fetched with v1 on the device: client (`FetchReport`) | {:.2} MiB, {} blobs fetched, {} reused |",
        mib(update.report.bytes_fetched),
        update.report.blobs_fetched,
        update.report.blobs_reused
    );
    println!(
        "| v2 fetched: registry log (payload blob GETs / all blob GETs incl. bundle.json and signatures) | {:.2} MiB / {:.2} MiB |",
        mib(update.served_payload),
        mib(update.served_all)
    );
    println!(
        "| fetched ÷ v2 bundle file | {:.3} ({:.1} %) |",
        update.served_all as f64 / update.bundle_bytes as f64,
        100.0 * update.served_all as f64 / update.bundle_bytes as f64
    );
    println!(
        "| fetch v1 (nothing on the device), median of {rounds} | {:.0} ms ({:.0} MB/s) |",
        ms(update.full),
        megabytes_per_second(update.payload_bytes_v1, update.full)
    );
    println!(
        "| fetch v2 (v1 on the device), median of {rounds} | {:.0} ms |",
        ms(update.delta)
    );
    for (name, times) in &throughput.tools {
        println!(
            "| {large_mib} MiB blob: {name}, median of {rounds} (best) | {:.0} MB/s ({:.0} MB/s); {:.0} ms |",
            megabytes_per_second(throughput.bytes, median(times.clone())),
            megabytes_per_second(throughput.bytes, *times.iter().min().unwrap()),
            ms(median(times.clone()))
        );
    }
    let client_median = median(throughput.tools[0].1.clone());
    for (name, times) in &throughput.tools[1..] {
        let ratios: Vec<f64> = throughput.tools[0]
            .1
            .iter()
            .zip(times)
            .map(|(ours, anchor)| anchor.as_secs_f64() / ours.as_secs_f64())
            .collect();
        println!(
            "| fetch_payload ÷ {name}, throughput | {:.2} (per round, median {:.2}) |",
            median(times.clone()).as_secs_f64() / client_median.as_secs_f64(),
            median_f64(ratios)
        );
    }
    println!(
        "| CPU per {large_mib} MiB, median: fetch_payload (this process) / curl (child) | {:.0} ms / {:.0} ms |",
        ms(median(throughput.client_cpu.clone())),
        ms(median(throughput.curl_cpu.clone()))
    );
    println!(
        "| registry CPU per {large_mib} MiB served, median: to fetch_payload / to curl -o FILE | {:.0} ms / {:.0} ms |",
        ms(median(throughput.registry_cpu[0].clone())),
        ms(median(throughput.registry_cpu[1].clone()))
    );
    println!("| load average, start → end | {load_start} → {load_end} |");
}

/// What the update part measured.
struct Update {
    bundle_bytes: u64,
    payload_bytes: u64,
    payload_bytes_v1: u64,
    report: FetchReport,
    served_payload: u64,
    served_all: u64,
    full: Duration,
    delta: Duration,
}

fn update(root: &Path, registry: &Registry, client: &RegistryClient, rounds: usize) -> Update {
    let spec = |version: u64| Spec {
        deployment: "bench",
        version,
        modules: MODULES
            .iter()
            .enumerate()
            .map(|(index, (name, size))| {
                let seed = if *name == CHANGED && version == 2 {
                    100
                } else {
                    index as u64 + 1
                };
                (*name, seed, size << 20)
            })
            .collect(),
        os_bytes: 0,
    };
    let bundles = root.join("update");
    fs::create_dir_all(&bundles).unwrap();
    let (first, second) = (
        build_bundle(&bundles, &spec(1)),
        build_bundle(&bundles, &spec(2)),
    );
    let v1 = parse_reference(&format!("{}/{REPOSITORY}:v1", registry.host())).unwrap();
    let v2 = parse_reference(&format!("{}/{REPOSITORY}:v2", registry.host())).unwrap();
    client.push_bundle(&first, &v1).unwrap();
    let pushed = client.push_bundle(&second, &v2).unwrap();
    println!(
        "pushed v1 and v2; v2 uploaded {} blobs ({:.2} MiB), {} already present",
        pushed.blobs_uploaded,
        mib(pushed.bytes_uploaded),
        pushed.blobs_present
    );
    let distinct = |bundle: &Path| {
        let mut files = manifest(bundle).payload;
        files.sort_by(|a, b| a.sha256.cmp(&b.sha256));
        files.dedup_by(|a, b| a.sha256 == b.sha256);
        files.iter().map(|file| file.size).sum::<u64>()
    };

    let (mut full, mut delta) = (Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..rounds {
        let old_dir = root.join(format!("device-v1-{round}"));
        let head = client.fetch_head(&v1).unwrap();
        let started = Instant::now();
        client
            .fetch_payload(&head, &|_| None, &old_dir, &mut |_| {})
            .unwrap();
        full.push(started.elapsed());

        let before = registry.requests().len();
        let new_dir = root.join(format!("device-v2-{round}"));
        let blobs = old_dir.join("blobs/sha256");
        let have =
            move |digest: &Sha256Digest| Some(blobs.join(digest.hex())).filter(|p| p.exists());
        let started = Instant::now();
        let head = client.fetch_head(&v2).unwrap();
        let report = client
            .fetch_payload(&head, &have, &new_dir, &mut |_| {})
            .unwrap();
        delta.push(started.elapsed());
        let (served_payload, served_all) = served(registry, &head, before);
        fs::remove_dir_all(&old_dir).unwrap();
        fs::remove_dir_all(&new_dir).unwrap();
        last = Some((report, served_payload, served_all));
    }
    let (report, served_payload, served_all) = last.expect("at least one round");
    Update {
        bundle_bytes: fs::metadata(&second).unwrap().len(),
        payload_bytes: distinct(&second),
        payload_bytes_v1: distinct(&first),
        report,
        served_payload,
        served_all,
        full: median(full),
        delta: median(delta),
    }
}

/// The body bytes the registry's log shows for blob GETs from request `from` on: those of
/// payload blobs, and all (with `bundle.json` and `bundle.sig.json`).
fn served(registry: &Registry, head: &FetchedHead, from: usize) -> (u64, u64) {
    let prefix = format!("/v2/{REPOSITORY}/blobs/sha256:");
    let head_blobs = [
        head.layout.config.digest.hex(),
        head.layout.signatures.digest.hex(),
    ];
    let mut payload = 0;
    let mut all = 0;
    for request in &registry.requests()[from..] {
        if request.method != "GET" {
            continue;
        }
        let Some(hex) = request.uri.strip_prefix(&prefix) else {
            continue;
        };
        all += request.written;
        if !head_blobs.iter().any(|blob| blob == hex) {
            payload += request.written;
        }
    }
    (payload, all)
}

/// What the throughput part measured: per tool, the wall time of each round.
struct Throughput {
    bytes: u64,
    tools: Vec<(&'static str, Vec<Duration>)>,
    client_cpu: Vec<Duration>,
    curl_cpu: Vec<Duration>,
    /// The registry's CPU time while serving the blob to fetch_payload and to `curl -o FILE`.
    registry_cpu: [Vec<Duration>; 2],
}

fn throughput(
    root: &Path,
    registry: &Registry,
    client: &RegistryClient,
    rounds: usize,
    large_mib: usize,
) -> Throughput {
    let bundles = root.join("large");
    fs::create_dir_all(&bundles).unwrap();
    let bundle = build_bundle(
        &bundles,
        &Spec {
            deployment: "large",
            version: 1,
            modules: Vec::new(),
            os_bytes: large_mib << 20,
        },
    );
    let reference = parse_reference(&format!("{}/{REPOSITORY}:large", registry.host())).unwrap();
    client.push_bundle(&bundle, &reference).unwrap();
    let head = client.fetch_head(&reference).unwrap();
    let rootfs = manifest(&bundle)
        .payload
        .into_iter()
        .find(|file| file.path.ends_with("rootfs.img"))
        .expect("the OS payload's root file system");
    let url = format!(
        "https://{}/v2/{REPOSITORY}/blobs/sha256:{}",
        registry.host(),
        rootfs.sha256
    );
    let curl = format!(
        "curl --silent --show-error --fail --cacert {} -u {}:{}",
        registry.ca_path().display(),
        test_registry::USER,
        test_registry::PASSWORD
    );
    let output = root.join("curl-output");
    // OpenSSL's SHA-256 (with SHA-NI, as sha2 uses it) rather than coreutils' sha256sum, which
    // hashes without it at about a third of the speed and would flatter the client.
    let anchors: [(&'static str, String); 3] = [
        (
            "curl -o FILE",
            format!("{curl} -o {} {url}", output.display()),
        ),
        (
            "curl | openssl sha256",
            format!("{curl} {url} | openssl dgst -sha256"),
        ),
        (
            "curl -o FILE, openssl sha256 FILE, sync FILE",
            format!(
                "{curl} -o {out} {url} && openssl dgst -sha256 {out} && sync {out}",
                out = output.display()
            ),
        ),
    ];
    let mut tools: Vec<(&'static str, Vec<Duration>)> = vec![("fetch_payload", Vec::new())];
    tools.extend(anchors.iter().map(|(name, _)| (*name, Vec::new())));
    let (mut client_cpu, mut curl_cpu) = (Vec::new(), Vec::new());
    let mut registry_cpu = [Vec::new(), Vec::new()];
    // One untimed fetch of each kind first, so the registry's copy of the blob is in the page
    // cache for every timed one.
    let warm = root.join("device-warm");
    client
        .fetch_payload(&head, &|_| None, &warm, &mut |_| {})
        .unwrap();
    fs::remove_dir_all(&warm).unwrap();
    for round in 0..rounds {
        let into = root.join(format!("device-large-{round}"));
        let cpu_before = cpu_time();
        let registry_before = registry_cpu_time();
        let started = Instant::now();
        let report = client
            .fetch_payload(&head, &|_| None, &into, &mut |_| {})
            .unwrap();
        tools[0].1.push(started.elapsed());
        client_cpu.push(cpu_time().own - cpu_before.own);
        registry_cpu[0].push(registry_cpu_time() - registry_before);
        assert_eq!(
            report.bytes_fetched,
            head.manifest
                .payload
                .iter()
                .map(|file| file.size)
                .sum::<u64>()
        );
        fs::remove_dir_all(&into).unwrap();
        for (index, (_, command)) in anchors.iter().enumerate() {
            let cpu_before = cpu_time();
            let registry_before = registry_cpu_time();
            let started = Instant::now();
            let result = Command::new("sh").arg("-c").arg(command).output().unwrap();
            tools[index + 1].1.push(started.elapsed());
            assert!(
                result.status.success(),
                "{command}: {}",
                String::from_utf8_lossy(&result.stderr)
            );
            if index == 0 {
                curl_cpu.push(cpu_time().children - cpu_before.children);
                registry_cpu[1].push(registry_cpu_time() - registry_before);
                assert_eq!(fs::metadata(&output).unwrap().len(), rootfs.size);
            }
            if index > 0 {
                let printed = String::from_utf8_lossy(&result.stdout);
                assert!(printed.contains(&rootfs.sha256), "{command}: {printed}");
            }
            let _ = fs::remove_file(&output);
        }
        println!(
            "round {}: fetch_payload {:.0} ms, {}",
            round + 1,
            ms(tools[0].1[round]),
            tools[1..]
                .iter()
                .map(|(name, times)| format!("{name} {:.0} ms", ms(times[round])))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Throughput {
        bytes: rootfs.size,
        tools,
        client_cpu,
        curl_cpu,
        registry_cpu,
    }
}

/// This process's CPU time (user + system, all threads) and that of its waited-for children,
/// from `/proc/self/stat` (clock ticks of 10 ms).
struct CpuTime {
    own: Duration,
    children: Duration,
}

fn cpu_time() -> CpuTime {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|field| field.parse().unwrap())
        .collect();
    CpuTime {
        own: Duration::from_millis((fields[0] + fields[1]) * 10),
        children: Duration::from_millis((fields[2] + fields[3]) * 10),
    }
}

/// The CPU time (user + system, clock ticks of 10 ms) of the registry, the `docker-registry`
/// child of this process, so far: with the client, curl and the registry on one machine, the
/// fetch competes with the registry for the cores.
fn registry_cpu_time() -> Duration {
    let mut ticks = 0;
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace() {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "docker-registry" {
                continue;
            }
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<u64> = after_name
                .split_whitespace()
                .skip(11)
                .take(2)
                .map(|field| field.parse().unwrap())
                .collect();
            ticks += fields[0] + fields[1];
        }
    }
    Duration::from_millis(ticks * 10)
}

/// `/proc/loadavg`'s three load averages.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".to_owned())
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn megabytes_per_second(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e6
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}
