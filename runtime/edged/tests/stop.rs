//! `edged run` stops cleanly on SIGTERM and SIGINT: it exits 0 between
//! passes, and what it served goes with it (the hub's control socket, the
//! state directory's lock).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestDevice;

/// Starts a daemon serving the hub on ephemeral ports, waits for its
/// control socket, sends `signal` and returns its exit status and log.
fn stop_with(signal: &str) -> (std::process::ExitStatus, String, TestDevice) {
    let device = TestDevice::new(
        &[],
        "[hub]\nmqtt_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\ngateway_hostname = \"localhost\"\ndevice_id = \"stop-test\"\n",
    );
    let mut daemon = device
        .command("none", &["run", "--interval", "100ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = device.state.join("hub/control.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon never served its control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "edged run did not stop on {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!socket.exists(), "the control socket outlived the daemon");
    (status, log, device)
}

#[test]
fn sigterm_and_sigint_end_the_daemon_cleanly() {
    for (signal, name) in [("TERM", "SIGTERM"), ("INT", "SIGINT")] {
        let (status, log, device) = stop_with(signal);
        assert!(status.success(), "{name}: {status}\n{log}");
        assert!(log.contains(&format!("stopping on {name}")), "{log}");
        // The lock went with the daemon: a writer gets it without waiting.
        let recovered = device.edged("none", &["recover"]);
        assert!(
            recovered.status.success(),
            "{}",
            String::from_utf8_lossy(&recovered.stderr)
        );
    }
}
