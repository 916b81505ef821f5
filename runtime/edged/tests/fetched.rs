//! Bundles fetched from a registry into a directory (`bundle.json`, `bundle.sig.json`,
//! `blobs/sha256/<hex>`): the head judged before any payload is fetched, the payload staged
//! from unverified blobs through the same transaction as a bundle file, and the files a
//! device already has offered to the fetcher.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::{Key, TestDevice, assert_consistent, blobs_in, bundle, fetched_dir, files, manifest};
use edge_bundle::{BundleManifest, Sha256Digest};
use edged::intake::Refusal;
use edged::runtime::NoEngine;
use edged::{Error, Verdict};
use sha2::{Digest, Sha256};

/// Version `version` with a file listed under two paths, so one blob serves both.
fn shared_files(version: u64) -> BTreeMap<String, Vec<u8>> {
    let mut payload = files(&format!("v{version}"));
    let shared = format!("shared layer of version {version}\n")
        .repeat(500)
        .into_bytes();
    payload.insert("payload/images/a/layer.tar".to_owned(), shared.clone());
    payload.insert("payload/images/b/layer.tar".to_owned(), shared);
    payload
}

fn signed(manifest: &BundleManifest, payload: &BTreeMap<String, Vec<u8>>, key: &Key) -> Vec<u8> {
    bundle(manifest, payload, &[key])
}

fn head(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let fetched = fetched_dir(dir.path(), bytes);
    (
        fs::read(fetched.join("bundle.json")).unwrap(),
        fs::read(fetched.join("bundle.sig.json")).unwrap(),
    )
}

fn digest_of(content: &[u8]) -> Sha256Digest {
    Sha256Digest::from_hex(&hex::encode(Sha256::digest(content))).unwrap()
}

fn deployment_dir(device: &TestDevice, slot: edged::Slot) -> std::path::PathBuf {
    device
        .state
        .join("slots")
        .join(slot.name())
        .join("deployment")
}

#[test]
fn a_fetched_directory_installs_what_the_bundle_file_installs() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let payload = shared_files(1);
    let bytes = signed(&manifest(1, &payload), &payload, &key);

    let from_file = TestDevice::new(&[&key], "");
    common::succeeded(
        &from_file.edged(
            "none",
            &[
                "apply",
                from_file
                    .write_bundle("v1.edgebundle", &bytes)
                    .to_str()
                    .unwrap(),
            ],
        ),
    );
    let from_registry = TestDevice::new(&[&key], "");
    let fetched = fetched_dir(&from_registry.root.path().join("fetched"), &bytes);
    // Four listed files, three distinct contents.
    assert_eq!(blobs_in(&fetched).len(), 3);
    let mut device = from_registry.open(Box::new(NoEngine { healthy: true }));
    let applied = device.apply_fetched(&fetched).unwrap();
    assert_eq!(applied.installed.version, 1);
    drop(device);

    assert_consistent(&from_registry, &[Some(1)]);
    let slot = from_registry.state().active.unwrap().slot;
    assert_eq!(
        common::tree_hash(&deployment_dir(&from_registry, slot)),
        common::tree_hash(&deployment_dir(
            &from_file,
            from_file.state().active.unwrap().slot
        )),
        "the fetched path staged other files than the tar extraction"
    );
    // Every blob moved into the slot (the shared one linked, then renamed).
    assert_eq!(blobs_in(&fetched), Vec::<String>::new());
}

#[test]
fn a_blob_that_does_not_match_is_refused_deleted_and_the_verified_ones_kept() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let mut handle = device.open(Box::new(NoEngine { healthy: true }));
    let v1 = shared_files(1);
    let v1_dir = fetched_dir(
        &device.root.path().join("v1"),
        &signed(&manifest(1, &v1), &v1, &key),
    );
    handle.apply_fetched(&v1_dir).unwrap();
    let before = common::tree_hash(&device.state);

    let mut v2 = shared_files(2);
    // The last path in the listing, so that the blobs before it are already staged.
    v2.insert(
        "payload/zz/last.bin".to_owned(),
        b"the real content".to_vec(),
    );
    let dir = fetched_dir(
        &device.root.path().join("v2"),
        &signed(&manifest(2, &v2), &v2, &key),
    );
    let good = blobs_in(&dir);
    let bad = hex::encode(Sha256::digest(b"the real content"));
    fs::write(dir.join("blobs/sha256").join(&bad), b"the fake content").unwrap();

    let error = handle.apply_fetched(&dir).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Refused(_)), "{message}");
    assert!(
        message.contains(&format!(
            "fetched bundle: blob sha256:{bad} for \"payload/zz/last.bin\": it is 16 bytes with sha256:{}, the signed listing says 16 bytes (deleted, to be fetched again)",
            hex::encode(Sha256::digest(b"the fake content"))
        )),
        "{message}"
    );
    assert_eq!(
        common::tree_hash(&device.state),
        before,
        "a refusal changed the device"
    );
    let kept: Vec<String> = good.iter().filter(|name| **name != bad).cloned().collect();
    assert_eq!(
        blobs_in(&dir),
        kept,
        "verified blobs were not kept for the next attempt"
    );

    // The next attempt fetches only the deleted blob, and applies.
    fs::write(dir.join("blobs/sha256").join(&bad), b"the real content").unwrap();
    assert_eq!(handle.apply_fetched(&dir).unwrap().installed.version, 2);
    drop(handle);
    assert_consistent(&device, &[Some(2)]);
}

#[test]
fn missing_blobs_and_a_bad_head_are_refused_before_anything_is_written() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let mut handle = device.open(Box::new(NoEngine { healthy: true }));
    let payload = shared_files(1);
    let dir = fetched_dir(
        &device.root.path().join("v1"),
        &signed(&manifest(1, &payload), &payload, &key),
    );
    let before = common::tree_hash(&device.state);
    let missing = hex::encode(Sha256::digest(&payload["payload/images/a/layer.tar"]));
    fs::remove_file(dir.join("blobs/sha256").join(&missing)).unwrap();
    let message = handle.apply_fetched(&dir).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "fetched bundle: 1 of its 3 payload blobs are missing, the first sha256:{missing} for \"payload/images/a/layer.tar\""
        )),
        "{message}"
    );
    assert_eq!(blobs_in(&dir).len(), 2, "a refusal removed blobs");

    // A head that is a link, or signed by nobody the device trusts, is refused like a bundle
    // file's.
    let stranger = Key::new(keys.path(), "stranger");
    let other = fetched_dir(
        &device.root.path().join("stranger"),
        &signed(&manifest(1, &payload), &payload, &stranger),
    );
    let message = handle.apply_fetched(&other).unwrap_err().to_string();
    assert!(
        message.contains("signed by 0 trusted key(s), 1 required"),
        "{message}"
    );
    fs::remove_file(other.join("bundle.json")).unwrap();
    std::os::unix::fs::symlink(dir.join("bundle.json"), other.join("bundle.json")).unwrap();
    let message = handle.apply_fetched(&other).unwrap_err().to_string();
    assert!(message.contains("fetched bundle: cannot open"), "{message}");
    drop(handle);
    assert_eq!(common::tree_hash(&device.state), before);
}

/// The manifest of `version` expiring at `expires`.
fn expiring(version: u64, payload: &BTreeMap<String, Vec<u8>>, expires: &str) -> BundleManifest {
    let mut manifest = manifest(version, payload);
    manifest.expires = Some(expires.to_owned());
    manifest
}

#[test]
fn heads_get_a_typed_verdict_before_any_payload_is_fetched() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let stranger = Key::new(keys.path(), "stranger");
    let device = TestDevice::new(&[&key], "");
    let mut handle = device.open(Box::new(NoEngine { healthy: true }));
    let versions: Vec<BTreeMap<String, Vec<u8>>> = (0..=3).map(shared_files).collect();
    let bytes = |version: u64| {
        signed(
            &manifest(version, &versions[version as usize]),
            &versions[version as usize],
            &key,
        )
    };

    let (v1_json, v1_sig) = head(&bytes(1));
    match handle.check_head(&v1_json, &v1_sig).unwrap() {
        Verdict::Fetch {
            deployment,
            version,
            manifest_digest,
        } => {
            assert_eq!((deployment.as_str(), version), ("plant", 1));
            assert_eq!(manifest_digest, Sha256Digest::of(&v1_json));
        }
        other => panic!("{other:?}"),
    }
    handle
        .apply_fetched(&fetched_dir(&device.root.path().join("v1"), &bytes(1)))
        .unwrap();
    handle
        .apply_fetched(&fetched_dir(&device.root.path().join("v2"), &bytes(2)))
        .unwrap();
    let (v2_json, v2_sig) = head(&bytes(2));
    assert_eq!(
        handle.check_head(&v2_json, &v2_sig).unwrap(),
        Verdict::UpToDate { version: 2 }
    );

    let older = refusal_of(&handle, &v1_json, &v1_sig);
    assert_eq!(
        older,
        Refusal::Older {
            offered: 1,
            committed: 2
        }
    );
    assert_eq!(
        older.to_string(),
        "the registry serves version 1, older than the committed 2: refused (anti-rollback)"
    );
    let changed = files("another v2");
    let (json, sig) = head(&signed(&manifest(2, &changed), &changed, &key));
    let same = refusal_of(&handle, &json, &sig);
    assert_eq!(same, Refusal::SameVersionOtherContents { version: 2 });
    assert!(
        same.to_string()
            .contains("same version, other contents: refused"),
        "{same}"
    );

    let (json, sig) = head(&signed(
        &expiring(3, &versions[3], "2000-01-01T00:00:00Z"),
        &versions[3],
        &key,
    ));
    let expired = refusal_of(&handle, &json, &sig);
    assert!(
        matches!(&expired, Refusal::Expired { version: 3, expires, .. } if expires == "2000-01-01T00:00:00Z"),
        "{expired:?}"
    );
    assert!(
        expired.to_string().starts_with("deployment \"plant\" version 3 expired at 2000-01-01T00:00:00Z; this device's clock says 20"),
        "{expired}"
    );
    let (json, sig) = head(&signed(&manifest(3, &versions[3]), &versions[3], &stranger));
    assert!(
        matches!(refusal_of(&handle, &json, &sig), Refusal::Untrusted(why) if why.contains("signed by 0 trusted key(s)"))
    );
    let mut foreign = manifest(3, &versions[3]);
    foreign.compatible = "fabrikam,other".to_owned();
    let (json, sig) = head(&signed(&foreign, &versions[3], &key));
    assert!(
        matches!(refusal_of(&handle, &json, &sig), Refusal::Incompatible(why) if why.contains("fabrikam,other"))
    );
    let mut broken = json.clone();
    broken.push(b' ');
    assert!(matches!(
        refusal_of(&handle, &broken, &sig),
        Refusal::Malformed(_)
    ));
    let (v3_json, v3_sig) = head(&bytes(3));
    assert!(matches!(
        handle.check_head(&v3_json, &v3_sig).unwrap(),
        Verdict::Fetch { version: 3, .. }
    ));

    // An operator's rollback leaves version 2 in the inactive slot: the registry still serving
    // it is not news, and not a changed release either.
    handle.rollback().unwrap();
    assert_eq!(
        refusal_of(&handle, &v2_json, &v2_sig),
        Refusal::AlreadyLeft { version: 2 }
    );
    drop(handle);

    // A version that was tried and rolled back as unhealthy is not fetched again and again.
    let mut failing = device.open(Box::new(NoEngine { healthy: false }));
    let error = failing
        .apply_fetched(&fetched_dir(&device.root.path().join("v3"), &bytes(3)))
        .unwrap_err();
    assert!(
        matches!(error, Error::RolledBack { version: 3, .. }),
        "{error}"
    );
    assert_eq!(
        refusal_of(&failing, &v3_json, &v3_sig),
        Refusal::RolledBack { version: 3 }
    );
}

fn refusal_of(device: &edged::Device, json: &[u8], sig: &[u8]) -> Refusal {
    match device.check_head(json, sig).unwrap() {
        Verdict::Refused(refusal) => refusal,
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_expired_fetched_bundle_is_refused_with_the_expiry_error() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let payload = shared_files(1);
    let bytes = signed(
        &expiring(1, &payload, "1999-12-31T23:59:59Z"),
        &payload,
        &key,
    );
    let dir = fetched_dir(&device.root.path().join("v1"), &bytes);
    let mut handle = device.open(Box::new(NoEngine { healthy: true }));
    let error = handle.apply_fetched(&dir).unwrap_err();
    assert!(
        matches!(error, Error::Expired { version: 1, .. }),
        "{error}"
    );
    assert_eq!(error.exit_code(), 13);
    assert_eq!(
        blobs_in(&dir).len(),
        3,
        "an expired bundle's blobs were touched"
    );
    assert!(handle.state().unwrap().active.is_none());
}

#[test]
fn local_blobs_come_only_from_deployments_something_vouches_for() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let mut handle = device.open(Box::new(NoEngine { healthy: true }));
    let v1 = shared_files(1);
    let v2 = shared_files(2);
    for (version, payload) in [(1, &v1), (2, &v2)] {
        let bytes = signed(&manifest(version, payload), payload, &key);
        handle
            .apply_fetched(&fetched_dir(
                &device.root.path().join(format!("v{version}")),
                &bytes,
            ))
            .unwrap();
    }
    let active = handle.state().unwrap().active.unwrap().slot;
    let inactive = active.other();
    let v2_layer = digest_of(&v2["payload/images/a/layer.tar"]);
    let found = handle.local_blob(&v2_layer).unwrap();
    assert!(
        found.starts_with(deployment_dir(&device, active)),
        "{}",
        found.display()
    );
    assert_eq!(fs::read(&found).unwrap(), v2["payload/images/a/layer.tar"]);
    // The rollback target's files count too.
    let v1_config = digest_of(&v1["payload/config/app.json"]);
    let found = handle.local_blob(&v1_config).unwrap();
    assert_eq!(
        found,
        deployment_dir(&device, inactive).join("payload/config/app.json")
    );
    assert_eq!(handle.local_blob(&digest_of(b"nobody has this")), None);

    // Never from staging, even with a listing beside it.
    let staging = device
        .state
        .join("slots")
        .join(inactive.name())
        .join("staging");
    fs::create_dir_all(staging.join("payload")).unwrap();
    fs::write(staging.join("payload/x"), b"staged only").unwrap();
    fs::copy(
        deployment_dir(&device, inactive).join("bundle.json"),
        staging.join("bundle.json"),
    )
    .unwrap();
    assert_eq!(handle.local_blob(&digest_of(b"staged only")), None);
    fs::remove_dir_all(&staging).unwrap();

    // A damaged copy is not offered.
    fs::write(
        deployment_dir(&device, inactive).join("payload/config/app.json"),
        b"damaged",
    )
    .unwrap();
    assert_eq!(handle.local_blob(&v1_config), None);
    // The active slot counts only while its manifest is the one the record names.
    let bundle_json = deployment_dir(&device, active).join("bundle.json");
    fs::copy(
        deployment_dir(&device, inactive).join("bundle.json"),
        &bundle_json,
    )
    .unwrap();
    assert_eq!(handle.local_blob(&v2_layer), None);
}

fn write(device: &TestDevice, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    device.write_bundle(name, bytes)
}

#[test]
fn edged_apply_and_the_inbox_refuse_an_expired_bundle_and_a_committed_one_runs_on() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let device = TestDevice::new(&[&key], "");
    let payload = files("v1");
    let expired = write(
        &device,
        "old.edgebundle",
        &signed(
            &expiring(1, &payload, "2000-01-01T00:00:00Z"),
            &payload,
            &key,
        ),
    );
    let output = device.edged("none", &["apply", expired.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains("bundle refused: deployment \"plant\" version 1 expired at 2000-01-01T00:00:00Z; this device's clock says 20"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "hint: the device is unchanged; ask for the release re-signed with a later expiry"
        ),
        "{stderr}"
    );
    assert!(device.state().active.is_none());

    let inbox = device.state.join("inbox");
    fs::create_dir_all(&inbox).unwrap();
    fs::copy(&expired, inbox.join("old.edgebundle")).unwrap();
    common::succeeded(&device.edged("none", &["run", "--once"]));
    let log = fs::read_to_string(inbox.join("refused/old.log")).unwrap();
    assert!(log.contains("expired at 2000-01-01T00:00:00Z"), "{log}");

    // An expiry far ahead applies; one that passes after the commit does not stop the
    // deployment, and status says it has passed.
    let later = write(
        &device,
        "later.edgebundle",
        &signed(
            &expiring(2, &payload, "9999-12-31T23:59:59Z"),
            &payload,
            &key,
        ),
    );
    common::succeeded(&device.edged("none", &["apply", later.to_str().unwrap()]));
    let soon = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3),
    )
    .to_string();
    let soon_bundle = write(
        &device,
        "soon.edgebundle",
        &signed(&expiring(3, &payload, &soon), &payload, &key),
    );
    common::succeeded(&device.edged("none", &["apply", soon_bundle.to_str().unwrap()]));
    let status = common::succeeded(&device.edged("none", &["status"]))
        .stdout
        .clone();
    assert!(
        String::from_utf8_lossy(&status).contains(&format!("signed expiry {soon}\n")),
        "{}",
        String::from_utf8_lossy(&status)
    );
    std::thread::sleep(std::time::Duration::from_secs(4));
    common::succeeded(&device.edged("none", &["run", "--once"]));
    assert_eq!(device.state().active.unwrap().version, 3);
    let status = common::succeeded(&device.edged("none", &["status"]))
        .stdout
        .clone();
    let status = String::from_utf8_lossy(&status);
    assert!(
        status.contains(&format!("signed expiry {soon} has passed: it keeps running, but a newer bundle must replace it\n")),
        "{status}"
    );
    let json = common::succeeded(&device.edged("none", &["status", "--json"]))
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["deployment"]["expires"], soon.as_str());
    assert_eq!(json["deployment"]["expired"], true);
}

#[test]
fn an_edgec_bundle_built_long_ago_with_a_lifetime_is_expired_and_one_far_ahead_applies() {
    let work = tempfile::tempdir().unwrap();
    let (device, key) = common::device_trusting_edgec_key(work.path(), "");
    let source = format!(
        "hardware gateway {{\n  arch = amd64\n  cpus = 2\n  memory = 1GiB\n  storage = 8GiB\n  security = none\n  compatible = \"{}\"\n}}\ndeployment plant {{\n  target = gateway\n  version = VERSION\n  modules = []\n}}\n",
        common::COMPATIBLE
    );
    let build = |version: u64, expires: &str, epoch: &str| -> std::path::PathBuf {
        let project = work.path().join(format!("v{version}"));
        fs::create_dir_all(&project).unwrap();
        let file = project.join("plant.edge");
        fs::write(&file, source.replace("VERSION", &version.to_string())).unwrap();
        common::succeeded(
            &std::process::Command::new(common::edgec())
                .arg("build")
                .arg(&file)
                .arg("--output")
                .arg(project.join("build"))
                .arg("--key")
                .arg(&key)
                .args(["--expires", expires])
                .env("SOURCE_DATE_EPOCH", epoch)
                .output()
                .unwrap(),
        );
        project.join("build/plant.edgebundle")
    };
    // Built in 2001 for thirty days.
    let old = build(1, "30days", "1000000000");
    let output = device.edged("none", &["apply", old.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains("expired at 2001-10-09T01:46:40Z"),
        "{stderr}"
    );
    let ahead = build(2, "2999-01-01T00:00:00Z", "1000000000");
    common::succeeded(&device.edged("none", &["apply", ahead.to_str().unwrap()]));
    assert_eq!(device.state().active.unwrap().version, 2);
}

#[test]
fn status_shows_the_update_record_when_update_is_configured() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let plain = TestDevice::new(&[&key], "");
    let json = common::succeeded(&plain.edged("none", &["status", "--json"]))
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(json.get("update").is_none(), "{json}");

    let reference = "registry.example.com/edge/plant:stable";
    let device = TestDevice::new(&[&key], &format!("[update]\nreference = \"{reference}\"\n"));
    let text = common::succeeded(&device.edged("none", &["status"]))
        .stdout
        .clone();
    assert!(
        String::from_utf8_lossy(&text)
            .contains(&format!("update: {reference}\n  not polled yet\n")),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let record = edged::update::polled(
        None,
        reference,
        at,
        edged::update::UpdateResult::Refused {
            reason: Refusal::Older {
                offered: 1,
                committed: 2,
            }
            .to_string(),
        },
        Some(format!("sha256:{}", "d".repeat(64))),
        at + std::time::Duration::from_secs(900),
    );
    fs::create_dir_all(&device.state).unwrap();
    edged::update::store(&device.state, &record).unwrap();
    let text = common::succeeded(&device.edged("none", &["status"]))
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("  last check 2023-11-14T22:13:20Z: refused: the registry serves version 1, older than the committed 2: refused (anti-rollback)\n"),
        "{text}"
    );
    assert!(
        text.contains("  next check 2023-11-14T22:28:20Z\n"),
        "{text}"
    );
    let json = common::succeeded(&device.edged("none", &["status", "--json"]))
        .stdout
        .clone();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["update"]["reference"], reference);
    assert_eq!(json["update"]["lastResult"]["result"], "refused");
    assert_eq!(
        json["update"]["lastManifestDigest"],
        format!("sha256:{}", "d".repeat(64))
    );
}
