//! One writer, readers that only read: real edged processes race each other
//! on one state directory. A writer is held in its health window by a
//! pausing failpoint (`health-wait:pause=…`, compiled in for tests only).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Key, TestDevice, assert_consistent, tree_hash};
use edged::failpoint::{self, Failpoint};

/// Starts `edged apply` paused in its health window for `pause`.
fn paused_apply(device: &TestDevice, bundle: &std::path::Path, pause: &str) -> Child {
    device
        .command("none", &["apply", bundle.to_str().unwrap()])
        .env(
            failpoint::ENV,
            format!("{}:pause={pause}", Failpoint::HealthWait.name()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the paused writer has switched to its trial.
fn wait_for_trial(device: &TestDevice, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = edged::State::load(&device.state).unwrap();
        if state
            .transaction
            .as_ref()
            .is_some_and(|transaction| transaction.target.version == version)
        {
            return;
        }
        assert!(Instant::now() < deadline, "no trial started: {state:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finished(child: Child) -> std::process::Output {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn status_during_a_trial_reports_it_and_rolls_nothing_back() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let v1 = device.write_version(&key, 1);
    let writer = paused_apply(&device, &v1, "3s");
    wait_for_trial(&device, 1);
    let before = tree_hash(&device.state);

    let output = device.edged("none", &["status", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["deployment"]["version"], 1, "{report}");
    assert_eq!(report["deployment"]["transaction"]["phase"], "trial");
    assert_eq!(report["lastDesiredStatus"]["code"], 417);
    assert_eq!(
        tree_hash(&device.state),
        before,
        "status wrote to the state directory"
    );
    let human = device.edged("none", &["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("trial of version 1 in progress"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );

    finished(writer);
    let state = device.state();
    assert_eq!(state.committed_version, 1, "the trial was not committed");
    assert_eq!(state.last_desired_status.code, 200);
    assert_consistent(&device, &[Some(1)]);
}

#[test]
fn a_second_writer_is_busy_or_waits_and_never_half_commits() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let v1 = device.write_version(&key, 1);
    let v2 = device.write_version(&key, 2);
    let v3 = device.write_version(&key, 3);

    let writer = paused_apply(&device, &v1, "2s");
    wait_for_trial(&device, 1);
    let busy = device.edged("none", &["apply", v2.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(9), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {} edged apply", writer.id())),
        "the holder is not named: {stderr}"
    );
    assert!(stderr.contains("hint: retry when it is done"), "{stderr}");
    // `recover` writes too, so it is refused the same way instead of rolling
    // the trial back.
    let recover = device.edged("none", &["recover"]);
    assert_eq!(recover.status.code(), Some(9));
    finished(writer);
    assert_eq!(device.state().committed_version, 1);

    // With --wait the second writer applies once the first has committed.
    let writer = paused_apply(&device, &v2, "2s");
    wait_for_trial(&device, 2);
    let waiting = device
        .command("none", &["--wait", "1m", "apply", v3.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finished(writer);
    finished(waiting);
    assert_eq!(device.state().committed_version, 3);
    assert_consistent(&device, &[Some(3)]);
}

#[test]
fn status_works_where_it_cannot_write() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let v1 = device.write_version(&key, 1);
    let applied = device.edged("none", &["apply", v1.to_str().unwrap()]);
    assert!(applied.status.success());
    // The state directory is root's; the reader runs as nobody, who may read
    // but not write it (root itself ignores permissions).
    std::fs::set_permissions(device.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = tree_hash(&device.state);
    let output = device
        .command("none", &["status", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["deployment"]["version"], 1);
    let trust = device
        .command("none", &["trust", "list"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        trust.status.success(),
        "{}",
        String::from_utf8_lossy(&trust.stderr)
    );
    // A writer as nobody fails with a state-directory error, not silently.
    let refused = device
        .command("none", &["recover"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(8));
    assert_eq!(tree_hash(&device.state), before);
}
