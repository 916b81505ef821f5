//! The inbox protocol: only complete `*.edgebundle` files are taken, and no
//! bundle, however bad, stops the daemon.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{Key, TestDevice, signed_bundle};
use edged::daemon::{Daemon, Next};
use edged::runtime::{Loaded, ModuleRuntime, ModuleStatus, NoEngine};

#[test]
fn a_bundle_being_copied_in_is_left_alone_until_it_is_renamed() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let inbox = device.root.path().join("inbox");
    fs::create_dir_all(inbox.join("folder.edgebundle")).unwrap();
    let part = inbox.join("v1.edgebundle.part");
    fs::write(&part, signed_bundle(&key, 1)).unwrap();
    std::os::unix::fs::symlink(&part, inbox.join("link.edgebundle")).unwrap();
    let run_once = || {
        let output = device
            .command(
                "none",
                &["run", "--once", "--inbox", inbox.to_str().unwrap()],
            )
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run_once();
    assert!(part.is_file(), "the .part file was moved");
    assert!(inbox.join("link.edgebundle").is_symlink());
    assert!(inbox.join("folder.edgebundle").is_dir());
    assert!(!inbox.join("refused").exists() && !inbox.join("applied").exists());
    assert_eq!(device.state().active, None);

    fs::rename(&part, inbox.join("v1.edgebundle")).unwrap();
    run_once();
    assert!(inbox.join("applied/v1.edgebundle").is_file());
    assert_eq!(
        fs::read_to_string(inbox.join("applied/v1.log")).unwrap(),
        "applied version 1\n"
    );
    assert_eq!(device.state().committed_version, 1);
    // Links and directories are still left alone.
    assert!(inbox.join("link.edgebundle").is_symlink());
    assert!(inbox.join("folder.edgebundle").is_dir());
}

/// Panics the first time it is asked to run a deployment.
struct PanicsOnce {
    panicked: bool,
}

impl ModuleRuntime for PanicsOnce {
    fn fetch_images(
        &mut self,
        _pull: &edged::pull::ImagePull,
        _progress: &mut edged::pull::Progress,
    ) -> edged::Result<()> {
        Ok(())
    }

    fn reconcile(&mut self, deployment: Option<&Loaded>) -> edged::Result<()> {
        if deployment.is_some() && !self.panicked {
            self.panicked = true;
            panic!("simulated bug in the module runtime");
        }
        Ok(())
    }

    fn health(&mut self, _deployment: &Loaded, _window: Duration) -> Result<(), String> {
        Ok(())
    }

    fn supervise(&mut self, _deployment: Option<&Loaded>) -> edged::Result<()> {
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
fn a_panic_applying_a_bundle_refuses_it_and_the_daemon_goes_on() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let inbox = device.root.path().join("inbox");
    fs::create_dir_all(&inbox).unwrap();
    fs::write(inbox.join("v1.edgebundle"), signed_bundle(&key, 1)).unwrap();
    fs::write(inbox.join("v2.edgebundle"), signed_bundle(&key, 2)).unwrap();
    let mut device_handle = device.open(Box::new(PanicsOnce { panicked: false }));
    let mut daemon = Daemon::new(
        &mut device_handle,
        &device.state,
        &inbox,
        Duration::from_millis(10),
    );
    assert_eq!(
        daemon.pass().unwrap(),
        Next::Sleep(Duration::from_millis(10))
    );
    let log = fs::read_to_string(inbox.join("refused/v1.log")).unwrap();
    assert!(
        log.contains("edged panicked while applying it: simulated bug in the module runtime"),
        "{log}"
    );
    // The panic left the v1 trial open; it was rolled back before v2, the
    // next bundle of the same pass, was applied, so v2 replaced no
    // deployment and the unconfirmed v1 is nowhere to go back to.
    assert!(inbox.join("applied/v2.edgebundle").is_file(), "{log}");
    let state = device.state();
    assert!(state.transaction.is_none(), "{state:?}");
    assert_eq!(state.committed_version, 2);
    assert_eq!(
        state.last_desired_status.description,
        "deployment plant version 2 applied"
    );
    daemon.pass().unwrap();
    common::assert_consistent(&device, &[Some(2)]);
}

#[test]
fn a_bundle_that_cannot_be_moved_away_is_not_retried() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let inbox = device.root.path().join("inbox");
    fs::create_dir_all(&inbox).unwrap();
    // `refused` is a file, so nothing can be moved into it.
    fs::write(inbox.join("refused"), b"in the way").unwrap();
    let garbage = inbox.join("garbage.edgebundle");
    fs::write(&garbage, b"not a bundle").unwrap();
    let mut device_handle = device.open(Box::new(NoEngine { healthy: true }));
    let mut daemon = Daemon::new(
        &mut device_handle,
        &device.state,
        &inbox,
        Duration::from_millis(10),
    );
    let mut inbox_view = edged::inbox::Inbox::new(&inbox);
    assert_eq!(inbox_view.bundles(), vec![garbage.clone()]);
    daemon.pass().unwrap();
    // The daemon tried it and could not move it; it does not fail.
    assert!(garbage.is_file());
    daemon.pass().unwrap();
    drop(daemon);
    // The daemon's inbox remembers what it could not move.
    assert_eq!(
        inbox_view.take(&mut device_handle, &garbage),
        edged::inbox::Taken::Refused
    );
    assert!(
        inbox_view.bundles().is_empty(),
        "the stuck bundle is listed again"
    );
    assert!(Path::new(&garbage).is_file());
}
