//! Durations on the command line and in device.toml: a bad one is a
//! configuration error (exit 2) with a hint, never a panic.

mod common;

use common::TestDevice;

#[test]
fn bad_durations_are_configuration_errors() {
    for (config, args, expected) in [
        (
            "[health]\nwindow = \"inf\"",
            &["status"][..],
            "is not a duration",
        ),
        (
            "[restart]\nbackoff_base = \"0s\"",
            &["status"],
            "restart.backoff_base must be between 10ms and 1h, not 0s",
        ),
        (
            "[restart]\nbackoff_base_secs = inf",
            &["status"],
            "write backoff_base = \"10s\"",
        ),
        (
            "",
            &["run", "--once", "--interval", "inf"],
            "is not a duration",
        ),
        (
            "",
            &["run", "--once", "--interval=-1s"],
            "is not a duration",
        ),
        (
            "",
            &["run", "--once", "--interval", "0s"],
            "--interval must be between",
        ),
        ("", &["--wait", "NaN", "recover"], "is not a duration"),
    ] {
        let device = TestDevice::new(&[], config);
        let output = device.edged("none", args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{config} {args:?}: {stderr}");
        assert!(stderr.contains(expected), "{config} {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let device = TestDevice::new(&[], "[health]\nwindow = \"1m30s\"");
    let output = device.edged("none", &["run", "--once", "--interval", "1m30s"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
