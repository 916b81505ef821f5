//! `edged run` stops cleanly on SIGTERM and SIGINT: it exits 0 between
//! passes, and what it served goes with it (the hub's control socket, the
//! state directory's lock). One daemon at a time serves a state directory:
//! a second one waits for the first to exit, or gives up naming it.

mod common;

use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::TestDevice;

/// A device whose hub listens on ephemeral ports.
fn hub_device() -> TestDevice {
    TestDevice::new(
        &[],
        "[hub]\nmqtt_listen = \"127.0.0.1:0\"\nhttps_listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\ngateway_hostname = \"localhost\"\ndevice_id = \"stop-test\"\n",
    )
}

/// Starts `edged run` (with `extra` arguments before `run`).
fn start_daemon(device: &TestDevice, extra: &[&str]) -> Child {
    let mut args = extra.to_vec();
    args.extend(["run", "--interval", "100ms"]);
    device
        .command("none", &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a daemon answers on the hub's control socket.
fn wait_for_control_socket(device: &TestDevice) {
    let socket = device.state.join("hub/control.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "no daemon served its control socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(daemon: &Child, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits up to `limit` for `daemon` to exit; returns its status and log.
fn exited(daemon: &mut Child, limit: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "edged run did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut log).unwrap();
    (status, log)
}

/// Starts a daemon serving the hub on ephemeral ports, waits for its
/// control socket, sends `signal` and returns its exit status and log.
fn stop_with(name: &str) -> (ExitStatus, String, TestDevice) {
    let device = hub_device();
    let mut daemon = start_daemon(&device, &[]);
    wait_for_control_socket(&device);
    signal(&daemon, name);
    let (status, log) = exited(&mut daemon, Duration::from_secs(10));
    let socket = device.state.join("hub/control.sock");
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

#[test]
fn a_second_daemon_waits_for_the_first_to_exit_or_names_it() {
    let device = hub_device();
    let mut first = start_daemon(&device, &[]);
    wait_for_control_socket(&device);

    // A second daemon waits its --wait, then exits 9 naming the first,
    // without touching what the first serves.
    let started = Instant::now();
    let mut second = start_daemon(&device, &["--wait", "1s"]);
    let (status, log) = exited(&mut second, Duration::from_secs(20));
    assert_eq!(status.code(), Some(9), "{log}");
    assert!(started.elapsed() >= Duration::from_secs(1), "{log}");
    assert!(
        log.contains("another edged run serves this state directory; waiting for it to exit"),
        "{log}"
    );
    assert!(
        log.contains(&format!("pid {} edged run", first.id())),
        "names the holder: {log}"
    );
    assert!(log.contains("daemon.lock"), "names the lock: {log}");
    assert!(
        log.contains("hint: one `edged run` serves a state directory"),
        "{log}"
    );
    assert!(
        !log.contains("hub store"),
        "the store was never reached: {log}"
    );
    assert!(
        UnixStream::connect(device.state.join("hub/control.sock")).is_ok(),
        "the first daemon still serves its control socket"
    );

    // A daemon started while the first stops (systemd's restart) waits for
    // it and takes over.
    let mut third = start_daemon(&device, &[]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(third.try_wait().unwrap().is_none(), "the third waits");
    signal(&first, "TERM");
    let (status, log) = exited(&mut first, Duration::from_secs(10));
    assert!(status.success(), "{log}");
    wait_for_control_socket(&device);
    assert!(third.try_wait().unwrap().is_none(), "the third serves");
    signal(&third, "TERM");
    let (status, log) = exited(&mut third, Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert!(
        log.contains("another edged run serves this state directory"),
        "{log}"
    );
}
