//! Crash safety: a crash at every failpoint of the apply and rollback paths,
//! and SIGKILL at random moments, always leaves the device on a complete,
//! verified deployment once edged starts again.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{Key, TestDevice, assert_consistent, blobs_in, bundle, fetched_dir, manifest};
use edged::failpoint::{self, Failpoint};

/// Payload big enough that applying takes a measurable time.
fn payload(version: u64, size: usize) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for index in 0..4 {
        let byte = (version as u8).wrapping_mul(31).wrapping_add(index);
        files.insert(
            format!("payload/data/part{index}.bin"),
            vec![byte; size / 4],
        );
    }
    files.insert(
        "payload/version.txt".to_owned(),
        version.to_string().into_bytes(),
    );
    files
}

fn write_version(device: &TestDevice, key: &Key, version: u64, size: usize) -> std::path::PathBuf {
    let files = payload(version, size);
    let bytes = bundle(&manifest(version, &files), &files, &[key]);
    device.write_bundle(&format!("v{version}.edgebundle"), &bytes)
}

fn apply_ok(device: &TestDevice, bundle: &std::path::Path) {
    let output = device.edged("none", &["apply", bundle.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The failpoints only the rollback path reaches.
fn on_rollback_path(point: Failpoint) -> bool {
    matches!(
        point,
        Failpoint::RollbackWrite
            | Failpoint::RollbackFsync
            | Failpoint::RollbackRename
            | Failpoint::RollbackFsyncDir
            | Failpoint::ReconcileOld
            | Failpoint::RollbackDoneWrite
            | Failpoint::RollbackDoneFsync
            | Failpoint::RollbackDoneRename
            | Failpoint::RollbackDoneFsyncDir
    )
}

/// The failpoints only staging from a fetched directory reaches.
fn fetched_only(point: Failpoint) -> bool {
    point == Failpoint::StageBlobPlace
}

#[test]
fn a_crash_at_every_failpoint_is_recovered() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    for &point in Failpoint::ALL.iter().filter(|point| !fetched_only(**point)) {
        let device = TestDevice::new(&[&key], "");
        let v1 = write_version(&device, &key, 1, 64 << 10);
        let v2 = write_version(&device, &key, 2, 64 << 10);
        let v3 = write_version(&device, &key, 3, 64 << 10);
        apply_ok(&device, &v1);
        // A second apply makes the inactive slot hold an old deployment, so
        // the retire path is exercised too.
        apply_ok(&device, &v2);
        let runtime = if on_rollback_path(point) {
            "failing"
        } else {
            "none"
        };
        let output = device
            .command(runtime, &["apply", v3.to_str().unwrap()])
            .env(failpoint::ENV, point.name())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("failpoint {} reached", point.name())),
            "{}: the failpoint was not reached: {stderr}",
            point.name()
        );
        assert!(
            !output.status.success(),
            "{}: apply survived its crash",
            point.name()
        );

        let output = device.edged("none", &["recover"]);
        assert!(
            output.status.success(),
            "{}: recover failed: {}",
            point.name(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_consistent(&device, &[Some(2), Some(3)]);
        let state = device.state();
        let reached_switch = Failpoint::ALL.iter().position(|p| *p == point)
            > Failpoint::ALL
                .iter()
                .position(|p| *p == Failpoint::SwitchRename);
        if !reached_switch {
            assert_eq!(
                state.active.as_ref().unwrap().version,
                2,
                "{}",
                point.name()
            );
            assert_eq!(state.committed_version, 2, "{}", point.name());
        }
        // The device stays usable: a newer bundle applies.
        let v4 = write_version(&device, &key, 4, 64 << 10);
        apply_ok(&device, &v4);
        assert_consistent(&device, &[Some(4)]);
    }
}

/// The same for a bundle fetched into a directory (`edged apply --fetched`): a crash at every
/// failpoint of its staging and of the shared transaction after it leaves a complete
/// deployment, and the next fetch applies. Staging renames blobs out of the directory, so a
/// crash there may cost blobs (they are fetched again); the directory is rebuilt as the fetcher
/// would.
#[test]
fn a_crash_at_every_failpoint_of_a_fetched_apply_is_recovered() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    // A copy is only made across file systems: the tar path's mid-write point is not reached.
    for &point in Failpoint::ALL
        .iter()
        .filter(|point| **point != Failpoint::StageWrite)
    {
        let device = TestDevice::new(&[&key], "");
        apply_ok(&device, &write_version(&device, &key, 1, 64 << 10));
        apply_ok(&device, &write_version(&device, &key, 2, 64 << 10));
        let mut files = payload(3, 64 << 10);
        // One digest under two paths, so linking is exercised as well as renaming.
        let shared = files["payload/data/part0.bin"].clone();
        files.insert("payload/data/copy.bin".to_owned(), shared);
        let bytes = bundle(&manifest(3, &files), &files, &[&key]);
        let dir = fetched_dir(&device.root.path().join("fetched"), &bytes);
        let runtime = if on_rollback_path(point) {
            "failing"
        } else {
            "none"
        };
        let output = device
            .command(runtime, &["apply", "--fetched", dir.to_str().unwrap()])
            .env(failpoint::ENV, point.name())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("failpoint {} reached", point.name())),
            "{}: the failpoint was not reached: {stderr}",
            point.name()
        );
        assert!(
            !output.status.success(),
            "{}: apply survived its crash",
            point.name()
        );
        let output = device.edged("none", &["recover"]);
        assert!(
            output.status.success(),
            "{}: recover failed: {}",
            point.name(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_consistent(&device, &[Some(2), Some(3)]);
        let state = device.state();
        let reached_switch = Failpoint::ALL.iter().position(|p| *p == point)
            > Failpoint::ALL
                .iter()
                .position(|p| *p == Failpoint::SwitchRename);
        if !reached_switch {
            assert_eq!(
                state.active.as_ref().unwrap().version,
                2,
                "{}",
                point.name()
            );
            assert_eq!(state.committed_version, 2, "{}", point.name());
        }
        // The device stays usable: the fetcher writes a directory for a newer version, and it
        // applies.
        let v4 = payload(4, 64 << 10);
        let dir = fetched_dir(
            &device.root.path().join("fetched-v4"),
            &bundle(&manifest(4, &v4), &v4, &[&key]),
        );
        let output = device.edged("none", &["apply", "--fetched", dir.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "{}: {}",
            point.name(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(blobs_in(&dir), Vec::<String>::new());
        assert_consistent(&device, &[Some(4)]);
    }
}

/// A small deterministic generator, so failures can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn sigkill_at_random_moments_is_recovered() {
    const ITERATIONS: u64 = 50;
    const SIZE: usize = 8 << 20;
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    apply_ok(&device, &write_version(&device, &key, 1, SIZE));
    let probe = write_version(&device, &key, 2, SIZE);
    let started = Instant::now();
    apply_ok(&device, &probe);
    let full = started.elapsed();

    let seed = std::env::var("EDGED_KILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed);
    let mut random = Lcg(seed);
    let mut interrupted = 0;
    for iteration in 0..ITERATIONS {
        let version = iteration + 3;
        let path = write_version(&device, &key, version, SIZE);
        let before = device.state().active.map(|active| active.version);
        let runtime = if iteration % 2 == 0 {
            "none"
        } else {
            "failing"
        };
        let mut child = device
            .command(runtime, &["apply", path.to_str().unwrap()])
            .spawn()
            .unwrap();
        let delay = full.mul_f64((random.next() % 1200) as f64 / 1000.0);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        let output = device.edged("none", &["recover"]);
        assert!(
            output.status.success(),
            "iteration {iteration} (seed {seed}): recover failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_consistent(&device, &[before, Some(version)]);
        std::fs::remove_file(path).unwrap();
    }
    eprintln!(
        "{interrupted} of {ITERATIONS} applies were killed mid-way (one apply takes {full:?})"
    );
    assert!(
        interrupted >= ITERATIONS / 4,
        "only {interrupted} kills landed inside an apply"
    );
}

#[test]
fn failing_health_rolls_back_and_keeps_the_floor() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    apply_ok(&device, &write_version(&device, &key, 1, 4096));
    let v2 = write_version(&device, &key, 2, 4096);
    let output = device.edged("failing", &["apply", v2.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("version 2 was unhealthy and has been rolled back"),
        "{stderr}"
    );
    assert_consistent(&device, &[Some(1)]);
    let state = device.state();
    assert_eq!(state.committed_version, 1);
    assert_eq!(state.last_desired_status.code, 400);
    // The same bundle may be tried again once fixed conditions allow.
    apply_ok(&device, &v2);
    assert_consistent(&device, &[Some(2)]);

    // Operator rollback goes back to version 1 without lowering the floor.
    let output = device.edged("none", &["rollback"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("version 1"));
    assert_consistent(&device, &[Some(1)]);
    assert_eq!(device.state().committed_version, 2);
    let output = device.edged("none", &["apply", v2.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "version 2 is at the floor now"
    );

    let output = device.edged("none", &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["deployment"]["version"], 1);
    assert_eq!(status["deployment"]["committedVersion"], 2);
    assert_eq!(status["lastDesiredStatus"]["code"], 400);
}

#[test]
fn rollback_without_a_previous_deployment_says_so() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let output = device.edged("none", &["rollback"]);
    assert_eq!(output.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no deployment"));
}
