//! `edged apply` on something that is not a regular file answers at once:
//! a FIFO would block an open until a writer comes, so it is refused before
//! it is opened.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Key, TestDevice};

#[test]
fn a_fifo_is_refused_without_blocking() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let fifo = device.root.path().join("bundle.edgebundle");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = device
        .command("none", &["apply", fifo.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("edged apply blocked on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("is not a regular file"), "{stderr}");
    assert_eq!(device.state().active, None);
}
