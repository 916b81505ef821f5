//! `--log-format json`: every line edged writes to stderr is one JSON event
//! with a timestamp, a level, a message and the fields of what it is about.

mod common;

use common::{Key, TestDevice};
use serde_json::Value;

fn events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line:?}")))
        .collect()
}

#[test]
fn refusals_commits_and_errors_are_json_events() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let v1 = device.write_version(&key, 1);
    let v1 = v1.to_str().unwrap();

    let applied = device.edged("none", &["--log-format", "json", "apply", v1]);
    assert!(applied.status.success());
    let commit = events(&applied.stderr)
        .into_iter()
        .find(|event| event["phase"] == "commit")
        .expect("no commit event");
    assert_eq!(commit["level"], "INFO");
    assert_eq!(commit["deployment"], "plant");
    assert_eq!(commit["version"], 1);
    assert!(commit["timestamp"].is_string());

    // The same bundle again: refused by the anti-rollback floor.
    let refused = device.edged("none", &["--log-format", "json", "apply", v1]);
    assert_eq!(refused.status.code(), Some(3));
    let events = events(&refused.stderr);
    let refusal = events
        .iter()
        .find(|event| event["message"] == "bundle refused")
        .unwrap_or_else(|| panic!("no refusal event in {events:?}"));
    assert_eq!(refusal["level"], "WARN");
    assert_eq!(refusal["phase"], "verify");
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("is not newer than the committed version 1"),
        "{refusal}"
    );
    assert_eq!(refusal["span"]["name"], "apply");
    assert_eq!(refusal["span"]["deployment"], "plant");
    assert_eq!(refusal["span"]["version"], 1);
    let error = events.last().unwrap();
    assert_eq!(error["level"], "ERROR");
    assert_eq!(error["exit_code"], 3);
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .starts_with("the device is unchanged")
    );
}
