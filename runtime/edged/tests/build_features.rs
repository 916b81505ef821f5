//! Test-only knobs stay out of production builds: the binary `cargo test`
//! runs is built with the `failpoints` feature (through the crate's
//! dev-dependency on itself) and obeys `EDGED_FAILPOINT`; a build without
//! it — `cargo build --release -p edged`, which `.ci/run` passes in as
//! `EDGED_RELEASE_BINARY` — ignores the variable. `--runtime failing` is
//! not in the help of either.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Key, TestDevice};
use edged::failpoint::{self, Failpoint};

/// Applies a bundle with the first failpoint armed; returns the exit code.
fn apply_with_failpoint(program: &Path) -> Option<i32> {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let v1 = device.write_version(&key, 1);
    let template = device.command("none", &["apply", v1.to_str().unwrap()]);
    let output = Command::new(program)
        .args(template.get_args())
        .env(failpoint::ENV, Failpoint::StageCreate.name())
        .output()
        .unwrap();
    output.status.code()
}

fn help(program: &Path) -> String {
    let output = Command::new(program).arg("--help").output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_test_binary_obeys_failpoints() {
    let program = Path::new(env!("CARGO_BIN_EXE_edged"));
    let version = Command::new(program).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("(test build: failpoints)"),
        "CARGO_BIN_EXE_edged was built without the failpoints feature"
    );
    // Aborted (SIGABRT), so no exit code.
    assert_eq!(apply_with_failpoint(program), None);
    assert!(!help(program).contains("failing"));
}

#[test]
fn a_release_binary_ignores_failpoints() {
    let Some(program) = std::env::var_os("EDGED_RELEASE_BINARY") else {
        eprintln!(
            "SKIPPED: set EDGED_RELEASE_BINARY to a `cargo build --release -p edged` binary (.ci/run does)"
        );
        return;
    };
    let program = Path::new(&program);
    let version = Command::new(program).arg("--version").output().unwrap();
    assert!(!String::from_utf8_lossy(&version.stdout).contains("failpoints"));
    assert_eq!(apply_with_failpoint(program), Some(0));
    assert!(!help(program).contains("failing"));
}
