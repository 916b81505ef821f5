//! The hub's cloud connection against mosquitto standing in for IoT Hub.
//!
//! 1. Throughput, QoS 1, 256-byte JSON bodies: the load generator's senders
//!    publish straight to mosquitto (the anchor), then as modules to the
//!    hub, whose route takes every message `INTO $upstream` and whose
//!    upstream connection publishes it to the same mosquitto; one receiver
//!    at mosquitto counts what arrives. Rounds alternate.
//! 2. Catch-up: with the cloud gone, a million messages are queued; then the
//!    cloud returns and they drain. The time, the drain rate, edged's RSS
//!    during the drain, and the bytes edged wrote per message queued and
//!    delivered (`/proc/{pid}/io`), with the store file's size after.
//!
//! Run: `cargo bench -p edged --bench upstream` (release). Needs
//! `mosquitto` (Debian package). Smaller runs: `UPSTREAM_BENCH_MESSAGES`
//! per sender (default 25,000), `UPSTREAM_BENCH_QUEUED` (default
//! 1,000,000), `UPSTREAM_BENCH_ROUNDS` (default 3). Figures are recorded in
//! BENCHMARKS.md under `## Edge hub upstream`.

// The device, the load generator and the measurements are the hub
// benchmark's; each benchmark uses only some of what they offer.
#[allow(dead_code)]
#[path = "../hub/edged_hub.rs"]
mod edged_hub;
#[allow(dead_code)]
#[path = "../hub/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "../hub/measure.rs"]
mod measure;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edged_hub::{DEVICE, EdgedHub, Setup};
use load::{ClientSpec, Target};
use measure::{cpu_seconds, load_average, median, mib, written_bytes};
use test_mosquitto::{Authority, DeviceAuth, HOST, Mosquitto};

/// Senders publishing at once, each with 100 QoS 1 messages in flight (the
/// load generator's window, for both paths).
const SENDERS: usize = 4;
/// The upstream connection's window (`UPSTREAM_BENCH_WINDOW`), edged's
/// default unless set.
fn window() -> u64 {
    setting(
        "UPSTREAM_BENCH_WINDOW",
        edge_hub::upstream::config::DEFAULT_WINDOW as u64,
    )
}
/// A token the broker's password file holds for the device.
const TOKEN: &str =
    "SharedAccessSignature sr=localhost%2Fdevices%2Fbench&sig=YmVuY2g%3D&se=4102444800";

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn anonymous(id: &str) -> ClientSpec {
    ClientSpec {
        client_id: id.to_owned(),
        username: String::new(),
        password: String::new(),
    }
}

/// The receiver at the cloud, counting what the device sends.
fn cloud_receiver() -> (ClientSpec, String) {
    (
        anonymous("receiver"),
        format!("devices/{DEVICE}/messages/events/#"),
    )
}

/// Senders publishing straight to mosquitto, as the device would.
fn direct_target(broker: &Mosquitto, ca_pem: &str) -> Target {
    Target {
        name: "mosquitto direct".to_owned(),
        host: HOST.to_owned(),
        port: broker.service_port(),
        ca_pem: ca_pem.to_owned(),
        senders: (0..SENDERS)
            .map(|index| {
                (
                    anonymous(&format!("direct{index}")),
                    format!("devices/{DEVICE}/messages/events/%24.cmid=sensor{index}"),
                )
            })
            .collect(),
        receiver: cloud_receiver(),
        receiver_broker: None,
    }
}

/// Senders publishing as modules to the hub; the receiver at mosquitto.
fn hub_target(hub: &EdgedHub, broker: &Mosquitto, ca_pem: &str) -> Target {
    let mut target = hub.target(SENDERS);
    target.name = "edge hub upstream".to_owned();
    target.receiver = cloud_receiver();
    target.receiver_broker = Some((broker.service_port(), ca_pem.to_owned()));
    target
}

fn upstream_table(broker: &Mosquitto, token_file: &std::path::Path, backoff: &str) -> String {
    format!(
        "[hub.upstream]\nhost = \"{HOST}\"\nport = {}\nca_file = \"{}\"\nsas_token_file = \"{}\"\n\
         window = {}\nbackoff_initial = \"{backoff}\"\nbackoff_max = \"{backoff}\"\n",
        broker.device_port(),
        broker.ca_file().display(),
        token_file.display(),
        window()
    )
}

fn main() {
    let per_sender = setting("UPSTREAM_BENCH_MESSAGES", 25_000);
    let queued = setting("UPSTREAM_BENCH_QUEUED", 1_000_000);
    let rounds = setting("UPSTREAM_BENCH_ROUNDS", 3);
    println!(
        "edge hub upstream benchmark: {SENDERS} senders x {per_sender} QoS 1 messages of {} bytes, upstream window {}; load average at start: {}",
        load::BODY_BYTES,
        window(),
        load_average()
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let authority = Arc::new(Authority::new("bench cloud CA"));
    let ca_pem = authority.ca_pem().to_owned();
    let username = format!(
        "{HOST}/{DEVICE}/?api-version={}&DeviceClientType=edged%2F{}",
        edge_hub::upstream::API_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let mut broker = Mosquitto::start(
        &dir.path().join("broker"),
        authority,
        DeviceAuth::Passwords(vec![(username, TOKEN.to_owned())]),
    );
    let token_file = dir.path().join("device.sas");
    std::fs::write(&token_file, TOKEN).expect("token");
    let _ = std::process::Command::new("chmod")
        .arg("600")
        .arg(&token_file)
        .status();

    // 1. Throughput.
    let routes = serde_json::json!([
        {"name": "up", "route": "FROM /messages/modules/* INTO $upstream", "priority": 0, "timeToLiveSecs": 0},
    ]);
    let hub = EdgedHub::start_with(
        &dir.path().join("device"),
        &Setup {
            senders: SENDERS,
            idle: 0,
            store_limit: "4GiB",
            routes: routes.clone(),
            upstream: upstream_table(&broker, &token_file, "1s"),
        },
    );
    hub.settle();
    let direct = direct_target(&broker, &ca_pem);
    let through_hub = hub_target(&hub, &broker, &ca_pem);
    let (mut direct_rates, mut hub_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let broker_cpu = cpu_seconds(broker.pid().expect("broker"));
        let measured = runtime.block_on(load::run(&direct, per_sender, None));
        println!(
            "round {round}: direct to mosquitto: {} messages in {:.3} s = {:.0} msg/s (mosquitto {:.1} µs CPU per message)",
            measured.received,
            measured.elapsed.as_secs_f64(),
            measured.rate(),
            (cpu_seconds(broker.pid().expect("broker")) - broker_cpu) * 1e6
                / measured.received as f64
        );
        direct_rates.push(measured.rate());
        let hub_cpu = cpu_seconds(hub.pid());
        let measured = runtime.block_on(load::run(&through_hub, per_sender, None));
        println!(
            "round {round}: through the hub and its upstream: {} messages in {:.3} s = {:.0} msg/s (edged {:.1} µs CPU per message), p50 {:?} p99 {:?}",
            measured.received,
            measured.elapsed.as_secs_f64(),
            measured.rate(),
            (cpu_seconds(hub.pid()) - hub_cpu) * 1e6 / measured.received as f64,
            measured.latency(0.5),
            measured.latency(0.99)
        );
        hub_rates.push(measured.rate());
    }
    let (direct_rate, hub_rate) = (median(direct_rates), median(hub_rates));
    println!(
        "median: through the hub {hub_rate:.0} msg/s, direct {direct_rate:.0} msg/s, ratio {:.2} (target at least 0.90)",
        hub_rate / direct_rate
    );
    println!("edged RSS after the throughput runs: {}", mib(hub.rss()));
    drop(hub);

    // 2. Catch-up after the cloud was away. The device retries every 2 s, so
    // the receiver is subscribed before the device is back.
    let hub = EdgedHub::start_with(
        &dir.path().join("offline-device"),
        &Setup {
            senders: SENDERS,
            idle: 0,
            store_limit: "4GiB",
            routes,
            upstream: upstream_table(&broker, &token_file, "2s"),
        },
    );
    hub.settle();
    let store_baseline = hub.store_bytes();
    broker.stop();
    let written_before = written_bytes(hub.pid());
    let loader = hub.client("loader");
    let target = hub.target(SENDERS);
    let took = runtime.block_on(load::flood(
        &target,
        &loader,
        &EdgedHub::output_topic("loader", "backlog"),
        queued,
    ));
    let written_queued = written_bytes(hub.pid()) - written_before;
    println!(
        "queued {queued} messages with the cloud away in {:.1} s ({:.0} msg/s); queue $upstream {}; edged RSS {}; store file {}",
        took.as_secs_f64(),
        queued as f64 / took.as_secs_f64(),
        hub.queue_length("$upstream"),
        mib(hub.rss()),
        mib(hub.store_bytes())
    );
    broker.start_again();
    let receiver = cloud_receiver();
    let cloud = Target {
        name: "cloud".to_owned(),
        host: HOST.to_owned(),
        port: broker.service_port(),
        ca_pem: ca_pem.clone(),
        senders: Vec::new(),
        receiver: receiver.clone(),
        receiver_broker: None,
    };
    let pid = hub.pid();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(measure::rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let drained = runtime.block_on(load::drain(&cloud, &receiver.0, &receiver.1, queued));
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    // The first second or two is the device's back-off before it
    // reconnects; the rate is taken from the first arrival on.
    println!(
        "drained {queued} messages {:.1} s after the cloud returned, {:.1} s from the first arrival = {:.0} msg/s upstream; edged RSS peak during the drain {}",
        drained.total.as_secs_f64(),
        drained.from_first.as_secs_f64(),
        queued as f64 / drained.from_first.as_secs_f64(),
        mib(peak.load(std::sync::atomic::Ordering::Relaxed)),
    );
    // The checkpoints of the last messages are committed within a second.
    std::thread::sleep(Duration::from_secs(2));
    let written_all = written_bytes(hub.pid()) - written_before;
    println!(
        "bytes written by edged: {:.0} per message queued, {:.0} per message queued and delivered; queue $upstream {} after",
        written_queued as f64 / queued as f64,
        written_all as f64 / queued as f64,
        hub.queue_length("$upstream"),
    );
    let idle_since = Instant::now();
    while hub.store_bytes() > 4 * store_baseline.max(1 << 20)
        && idle_since.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "store file {} {:.1} s after the drain (baseline {}); edged RSS {}",
        mib(hub.store_bytes()),
        idle_since.elapsed().as_secs_f64(),
        mib(store_baseline),
        mib(hub.rss())
    );
    println!("load average at end: {}", load_average());
}
