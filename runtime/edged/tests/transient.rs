//! A supervision pass that fails (an engine that does not answer for a
//! while) does not end `edged run`: it is recorded for `edged status`, the
//! next pass comes after a doubling back-off, and supervision carries on
//! once the engine answers. A runtime that fails a set number of passes
//! stands in for the engine here; `tests/docker.rs` takes a real engine's
//! socket away and brings it back.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Key, TestDevice};
use edged::daemon::{Daemon, Next};
use edged::runtime::{Loaded, ModuleRuntime, ModuleStatus};
use edged::supervision::{FailureRecord, SupervisionFailure};

/// Fails the supervision passes while `failures` is above zero, counting it
/// down; counts the passes that succeed.
struct Flaky {
    failures: Arc<AtomicU32>,
    supervised: Arc<AtomicU32>,
}

impl ModuleRuntime for Flaky {
    fn fetch_images(
        &mut self,
        _pull: &edged::pull::ImagePull,
        _progress: &mut edged::pull::Progress,
    ) -> edged::Result<()> {
        Ok(())
    }

    fn reconcile(&mut self, _deployment: Option<&Loaded>) -> edged::Result<()> {
        Ok(())
    }

    fn health(&mut self, _deployment: &Loaded, _window: Duration) -> Result<(), String> {
        Ok(())
    }

    fn supervise(&mut self, _deployment: Option<&Loaded>) -> edged::Result<()> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(edged::Error::Docker(
                "cannot inspect sensor: connection refused".to_owned(),
            ));
        }
        self.supervised.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn status(&mut self, _: Option<&Loaded>) -> edged::Result<Vec<(String, ModuleStatus)>> {
        Ok(Vec::new())
    }

    fn restart_counts(&self) -> BTreeMap<String, u32> {
        BTreeMap::new()
    }

    fn restore_restart_counts(&mut self, _counts: &BTreeMap<String, u32>) {}
}

#[test]
fn failing_passes_back_off_are_reported_and_supervision_carries_on() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let failures = Arc::new(AtomicU32::new(0));
    let supervised = Arc::new(AtomicU32::new(0));
    let mut handle = device.open(Box::new(Flaky {
        failures: failures.clone(),
        supervised: supervised.clone(),
    }));
    handle.apply(&device.write_version(&key, 1)).unwrap();
    let interval = Duration::from_millis(100);
    let inbox = device.root.path().join("inbox");
    let mut daemon = Daemon::new(&mut handle, &device.state, &inbox, interval);

    assert_eq!(daemon.step(), Next::Sleep(interval));
    assert_eq!(SupervisionFailure::load(&device.state), None);

    failures.store(3, Ordering::SeqCst);
    let mut since = None;
    for (attempt, backoff) in [(1, 1), (2, 2), (3, 4)] {
        assert_eq!(daemon.step(), Next::Sleep(Duration::from_secs(backoff)));
        let failure = SupervisionFailure::load(&device.state).expect("no failure recorded");
        assert_eq!(failure.consecutive_failures, attempt);
        assert!(
            failure.last_error.contains("connection refused"),
            "{failure:?}"
        );
        // `since` is the first failure of the run.
        assert_eq!(since.get_or_insert(failure.since.clone()), &failure.since);
        // `edged status`, a process of its own, reports it.
        let output = device.edged("none", &["status", "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["supervision"]["consecutiveFailures"], attempt);
        assert_eq!(report["supervision"]["since"], failure.since.as_str());
    }
    assert_eq!(daemon.step(), Next::Sleep(interval));
    assert_eq!(SupervisionFailure::load(&device.state), None);
    assert_eq!(supervised.load(Ordering::SeqCst), 2);
    let output = device.edged("none", &["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["supervision"].is_null(), "{report}");
}
