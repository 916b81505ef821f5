//! The edge hub against mosquitto: module → route with a `$body` condition →
//! module, 256-byte JSON bodies, QoS 1, the same clients for both brokers in
//! the same run; then latency at a tenth of the hub's rate, and the hub's
//! memory and disk use.
//!
//! Run: `cargo bench -p edged --bench hub` (release). Needs `mosquitto`
//! (Debian package) on PATH. Figures are recorded in BENCHMARKS.md under
//! `## Edge hub`.

mod edged_hub;
// The load generator and the measurements are shared with the upstream
// benchmark, which uses parts of them this one does not.
#[allow(dead_code)]
mod load;
#[allow(dead_code)]
mod measure;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use load::{ClientSpec, Target};
use measure::{cpu_seconds, load_average, median, mib, wait_for_port};

/// Messages per sender in the throughput runs.
fn messages_per_sender() -> u64 {
    std::env::var("HUB_BENCH_MESSAGES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20_000)
}

/// Senders publishing at once.
const SENDERS: usize = 4;

/// The port the benchmark's mosquitto listens on (loopback only).
const MOSQUITTO_PORT: u16 = 22883;

/// A TLS CA and a server certificate for `localhost`, as PEM: (CA, cert, key).
fn certificates() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench CA");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server = server_params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

/// Starts mosquitto with a TLS listener on loopback; its files are readable
/// by the `mosquitto` user it drops to.
fn start_mosquitto(dir: &Path) -> (Mosquitto, String) {
    let (ca, certificate, key) = certificates();
    fs::create_dir_all(dir).expect("mosquitto dir");
    for (name, text) in [
        ("ca.pem", &ca),
        ("server.pem", &certificate),
        ("server.key", &key),
    ] {
        fs::write(dir.join(name), text).expect("mosquitto file");
    }
    let config = format!(
        "listener {MOSQUITTO_PORT} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
         max_inflight_messages 100\nmax_queued_messages 1000000\nlog_type error\n",
        d = dir.display()
    );
    fs::write(dir.join("mosquitto.conf"), config).expect("mosquitto.conf");
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto is installed (apt-get install mosquitto)");
    let mosquitto = Mosquitto(child);
    wait_for_port(MOSQUITTO_PORT);
    (mosquitto, ca)
}

/// The anchor broker's process, stopped however the benchmark ends, so a
/// failed run leaves no broker holding the port for the next.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto_target(ca: String) -> Target {
    let anonymous = |id: &str| ClientSpec {
        client_id: id.to_owned(),
        username: String::new(),
        password: String::new(),
    };
    Target {
        name: "mosquitto".to_owned(),
        host: "localhost".to_owned(),
        port: MOSQUITTO_PORT,
        ca_pem: ca,
        senders: (0..SENDERS)
            .map(|index| {
                (
                    anonymous(&format!("sender{index}")),
                    "bench/telemetry".to_owned(),
                )
            })
            .collect(),
        receiver: (anonymous("receiver"), "bench/telemetry".to_owned()),
        receiver_broker: None,
    }
}

/// Rounds of the throughput comparison, alternating the brokers.
fn rounds() -> usize {
    std::env::var("HUB_BENCH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3)
}

/// Messages queued for the module that stays offline.
fn queued_messages() -> u64 {
    std::env::var("HUB_BENCH_QUEUED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000)
}

/// Modules that connect and stay idle.
const IDLE_CLIENTS: usize = 1000;

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("load average at start: {}", load_average());
    let (mosquitto, ca) = start_mosquitto(&dir.path().join("mosquitto"));
    let anchor = mosquitto_target(ca);
    let hub = edged_hub::EdgedHub::start(&dir.path().join("device"), SENDERS, 0, "4GiB");
    hub.settle();
    println!(
        "edged idle RSS (hub serving, {} modules deployed): {}",
        SENDERS + 3,
        mib(hub.rss())
    );
    let target = hub.target(SENDERS);
    let per_sender = messages_per_sender();

    let mut anchor_rates = Vec::new();
    let mut hub_rates = Vec::new();
    for round in 1..=rounds() {
        let cpu = cpu_seconds(mosquitto.0.id());
        let measured = runtime.block_on(load::run(&anchor, per_sender, None));
        println!(
            "round {round}: mosquitto QoS 1 forwarding: {} messages in {:.3} s = {:.0} msg/s, {:.1} µs of CPU per message",
            measured.received,
            measured.elapsed.as_secs_f64(),
            measured.rate(),
            (cpu_seconds(mosquitto.0.id()) - cpu) * 1e6 / measured.received as f64
        );
        anchor_rates.push(measured.rate());
        let cpu = cpu_seconds(hub.pid());
        let measured = runtime.block_on(load::run(&target, per_sender, None));
        println!(
            "round {round}: edge hub route with $body condition, stored durably: {} messages in {:.3} s = {:.0} msg/s, {:.1} µs of CPU per message",
            measured.received,
            measured.elapsed.as_secs_f64(),
            measured.rate(),
            (cpu_seconds(hub.pid()) - cpu) * 1e6 / measured.received as f64
        );
        hub_rates.push(measured.rate());
    }
    let hub_rate = median(hub_rates);
    let anchor_rate = median(anchor_rates);
    println!(
        "median: edge hub {hub_rate:.0} msg/s, mosquitto {anchor_rate:.0} msg/s, ratio {:.2}",
        hub_rate / anchor_rate
    );
    println!("edged RSS after the throughput runs: {}", mib(hub.rss()));

    let paced_rate = hub_rate / 10.0;
    let paced_count = (paced_rate * 10.0) as u64 / SENDERS as u64;
    for (name, broker) in [("edge hub", &target), ("mosquitto", &anchor)] {
        let paced = runtime.block_on(load::run(broker, paced_count, Some(paced_rate)));
        println!(
            "{name} latency at {paced_rate:.0} msg/s ({} messages): p50 {:.2} ms, p99 {:.2} ms",
            paced.received,
            paced.latency(0.5).as_secs_f64() * 1e3,
            paced.latency(0.99).as_secs_f64() * 1e3
        );
    }
    drop(mosquitto);

    let queued = queued_messages();
    let baseline = hub.store_bytes();
    let loader = hub.client("loader");
    let took = runtime.block_on(load::flood(
        &target,
        &loader,
        &edged_hub::EdgedHub::output_topic("loader", "backlog"),
        queued,
    ));
    hub.settle();
    let depth = hub.queue_length("offline/backlog");
    let grown = hub.store_bytes();
    println!(
        "queued {queued} messages for an offline module in {:.1} s ({:.0} msg/s); queue depth {depth}; edged RSS {}",
        took.as_secs_f64(),
        queued as f64 / took.as_secs_f64(),
        mib(hub.rss())
    );
    println!(
        "store file: {} before, {} with the backlog = {:.0} bytes per queued message",
        mib(baseline),
        mib(grown),
        grown.saturating_sub(baseline) as f64 / queued.max(1) as f64
    );
    let offline = hub.client("offline");
    let took = runtime
        .block_on(load::drain(
            &target,
            &offline,
            &edged_hub::EdgedHub::inputs_filter("offline"),
            queued,
        ))
        .total;
    println!(
        "delivered the backlog in {:.1} s ({:.0} msg/s); queue depth after {}; edged RSS {}",
        took.as_secs_f64(),
        queued as f64 / took.as_secs_f64(),
        hub.queue_length("offline/backlog"),
        mib(hub.rss())
    );
    // The store gives the space back by compacting once it has been idle
    // for a while; wait for that, up to two minutes.
    let drained = std::time::Instant::now();
    while hub.store_bytes() > 4 * baseline.max(1 << 20)
        && drained.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "store file {} again {:.1} s after delivery (baseline {}); edged RSS {}",
        mib(hub.store_bytes()),
        drained.elapsed().as_secs_f64(),
        mib(baseline),
        mib(hub.rss())
    );
    drop(hub);

    // The many-connections run: a device whose deployment has a thousand
    // more modules, each connected and idle.
    let hub =
        edged_hub::EdgedHub::start(&dir.path().join("crowded"), SENDERS, IDLE_CLIENTS, "1GiB");
    hub.settle();
    let before = hub.rss();
    let idle: Vec<_> = (0..IDLE_CLIENTS)
        .map(|index| hub.client(&format!("idle{index}")))
        .collect();
    let held = runtime.block_on(load::hold(&hub.target(SENDERS), &idle));
    hub.settle();
    println!(
        "edged RSS with {} modules deployed: {} idle, {} with {} clients connected",
        SENDERS + 3 + IDLE_CLIENTS,
        mib(before),
        mib(hub.rss()),
        held.len()
    );
    drop(held);
    println!("load average at end: {}", load_average());
}
