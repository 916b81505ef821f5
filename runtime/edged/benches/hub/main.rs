//! The edge hub against mosquitto: module → route with a `$body` condition →
//! module, 256-byte JSON bodies, QoS 1, the same clients for both brokers in
//! the same run; then latency at a tenth of the hub's rate, and the hub's
//! memory and disk use.
//!
//! Run: `cargo bench -p edged --bench hub` (release). Needs `mosquitto`
//! (Debian package) on PATH. Figures are recorded in BENCHMARKS.md under
//! `## Edge hub`.

mod load;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use load::{ClientSpec, Target};

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
fn start_mosquitto(dir: &Path) -> (Child, String) {
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
    wait_for_port(MOSQUITTO_PORT);
    (child, ca)
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
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
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (mut mosquitto, ca) = start_mosquitto(&dir.path().join("mosquitto"));
    let target = mosquitto_target(ca);
    let per_sender = messages_per_sender();
    let measured = runtime.block_on(load::run(&target, per_sender, None));
    println!(
        "mosquitto  QoS 1 forwarding: {} messages in {:.3} s = {:.0} msg/s",
        measured.received,
        measured.elapsed.as_secs_f64(),
        measured.rate()
    );
    let paced = runtime.block_on(load::run(
        &target,
        per_sender / 10,
        Some(measured.rate() / 10.0),
    ));
    println!(
        "mosquitto  latency at {:.0} msg/s: p50 {:?} p99 {:?}",
        measured.rate() / 10.0,
        paced.latency(0.5),
        paced.latency(0.99)
    );
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}
