//! Attacks on edged and the bundle library, one harness for all: each case is a crafted bundle
//! (and, for some, damage done to the state directory first) with the outcome it must come to.
//! Every case runs on a fresh device that holds version 1 in one slot and version 2 (active) in
//! the other, so a refusal that retired the inactive slot's deployment would show.
//!
//! For every case: edged exits with the expected code and words, prints nothing unescaped
//! (no ESC, NUL or bidi control, at most a few KiB), a refused bundle leaves the state directory
//! byte-for-byte as it was, and afterwards a good newer bundle still applies.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Key, RawEntry, TestDevice, bundle, files, head, manifest, os_bundle, raw_tar, tree_hash,
};
use edge_bundle::canonical_json::to_canonical_bytes;
use serde_json::{Value, json};

/// The version of the good bundle applied after every case.
const NEXT: u64 = 1000;
/// The longest output edged may print for one refusal.
const MAX_OUTPUT: usize = 4096;
/// GNU time, which reports a process's peak memory; the memory check is skipped without it.
const TIME: &str = "/usr/bin/time";
/// The most memory (peak resident set) edged may use on any case.
const MAX_RSS_KIB: u64 = 300 << 10;

/// What a case must come to.
enum Expect {
    /// Refused with this exit code and these words; the state directory unchanged.
    Refused { code: i32, says: &'static str },
    /// Applied: the device then runs this version.
    Applied(u64),
}

/// Damage done to a device before the bundle arrives.
type Prepare<'a> = Box<dyn Fn(&TestDevice) + 'a>;
/// Writes the bundle file.
type Write<'a> = Box<dyn Fn(&Path) + 'a>;

struct Case<'a> {
    class: &'static str,
    name: String,
    prepare: Prepare<'a>,
    bundle: Write<'a>,
    expect: Expect,
    /// How long the apply may take.
    time_limit: Duration,
    /// Environment variables for edged.
    env: Vec<(&'static str, &'static str)>,
}

/// The attack suite: its key, and the cases as they are added.
struct Suite<'a> {
    key: &'a Key,
    cases: Vec<Case<'a>>,
}

impl<'a> Suite<'a> {
    fn new(key: &'a Key) -> Self {
        Self {
            key,
            cases: Vec::new(),
        }
    }

    fn add(
        &mut self,
        class: &'static str,
        name: impl Into<String>,
        bytes: Vec<u8>,
        expect: Expect,
    ) {
        self.add_with(
            class,
            name,
            Box::new(|_| {}),
            Box::new(move |path| fs::write(path, &bytes).unwrap()),
            expect,
        );
    }

    fn add_with(
        &mut self,
        class: &'static str,
        name: impl Into<String>,
        prepare: Prepare<'a>,
        bundle: Write<'a>,
        expect: Expect,
    ) {
        self.cases.push(Case {
            class,
            name: name.into(),
            prepare,
            bundle,
            expect,
            time_limit: Duration::from_secs(20),
            env: Vec::new(),
        });
    }

    /// A good bundle of `version`, signed.
    fn good(&self, version: u64) -> Vec<u8> {
        let files = files(&format!("v{version}"));
        bundle(&manifest(version, &files), &files, &[self.key])
    }

    /// A bundle of an arbitrary (canonical) manifest value, signed, with `files` as payload.
    fn signed_value(&self, manifest: &Value, files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
        let manifest_bytes = to_canonical_bytes(manifest);
        let mut entries = vec![
            RawEntry::file("bundle.json", &manifest_bytes),
            RawEntry::file(
                "bundle.sig.json",
                &common::signatures(&manifest_bytes, &[self.key]),
            ),
        ];
        entries.extend(
            files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        raw_tar(&entries)
    }

    /// A signed version-10 bundle whose manifest `change` alters.
    fn tampered(&self, change: impl FnOnce(&mut Value)) -> Vec<u8> {
        let files = files("v10");
        let mut value = serde_json::to_value(manifest(10, &files)).unwrap();
        change(&mut value);
        self.signed_value(&value, &files)
    }
}

fn refused(code: i32, says: &'static str) -> Expect {
    Expect::Refused { code, says }
}

/// Untrusted strings that must never reach a terminal as they are.
const HOSTILE: &[(&str, &str)] = &[
    ("ESC sequence", "\u{1b}[2J\u{1b}]0;owned\u{7}"),
    ("bidi override", "plant\u{202e}gpj.exe"),
    ("NUL", "plant\0x"),
    ("parent directory", "../../etc"),
];

/// Classes 1 and 5: untrusted text is validated against the grammar and escaped when shown.
fn untrusted_text(suite: &mut Suite<'_>) {
    for (what, hostile) in HOSTILE {
        let text = hostile.to_string();
        suite.add(
            "5",
            format!("deployment name with {what}"),
            suite.tampered(|value| value["deployment"] = json!(text)),
            refused(3, "invalid deployment name"),
        );
        let module = text.clone();
        suite.add(
            "5",
            format!("image module name with {what}"),
            suite.tampered(|value| {
                value["images"] = json!([{
                    "module": module,
                    "reference": "edgec.local/sensor:1",
                    "path": format!("payload/images/{module}"),
                    "manifest_digest": format!("sha256:{}", "0".repeat(64)),
                }])
            }),
            refused(3, "invalid module name"),
        );
        let reference = format!("registry.local/{hostile}@sha256:{}", "0".repeat(64));
        suite.add(
            "5",
            format!("registry image reference with {what}"),
            suite.tampered(|value| {
                value["registry_images"] = json!([{"module": "sensor", "reference": reference}])
            }),
            refused(3, "invalid image reference"),
        );
        let module = text.clone();
        suite.add(
            "5",
            format!("IoT Edge module name with {what}"),
            suite.tampered(|value| {
                value["iot_edge_manifest"]["modulesContent"]["$edgeAgent"]["properties.desired"]
                    ["modules"] = json!({ module: {"settings": {"image": "busybox:1"}}})
            }),
            refused(3, "invalid module name"),
        );
        let compatible = format!("contoso,{hostile}");
        suite.add(
            "5",
            format!("compatible with {what}"),
            suite.tampered(|value| value["compatible"] = json!(compatible)),
            refused(3, "compatible"),
        );
        let field = text.clone();
        suite.add(
            "5",
            format!("unknown manifest field named with {what}"),
            suite.tampered(|value| value[field.as_str()] = json!(1)),
            refused(3, "unknown field"),
        );
        let files = files("v10");
        let mut listed = files.clone();
        let path = format!("payload/{hostile}");
        listed.insert(path.clone(), b"x".to_vec());
        let mut entries = head(&manifest(10, &listed), &[suite.key]);
        entries.extend(
            files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        entries.push(RawEntry::file(&path, b"x"));
        suite.add(
            "5",
            format!("listed payload path with {what}"),
            raw_tar(&entries),
            refused(3, "unsafe bundle entry"),
        );
        let mut entries = head(&manifest(10, &files), &[suite.key]);
        entries.extend(
            files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        entries.push(RawEntry::file(&path, b"x"));
        // A tar name ends at its first NUL, so that entry is merely unlisted.
        let says = if hostile.contains('\0') {
            "is not listed"
        } else {
            "unsafe bundle entry"
        };
        suite.add(
            "5",
            format!("unlisted tar entry named with {what}"),
            raw_tar(&entries),
            refused(3, says),
        );
        let mut entries = head(&manifest(10, &files), &[suite.key]);
        entries[0].name = format!("{hostile}bundle.json").into_bytes();
        suite.add(
            "5",
            format!("first tar entry named with {what}"),
            raw_tar(&entries),
            refused(3, "must start with bundle.json"),
        );
        let mut entries = head(&manifest(10, &files), &[suite.key]);
        let signatures: Value = serde_json::from_slice(&entries[1].data).unwrap();
        let mut signatures = signatures;
        signatures["signatures"][0]["key_id"] = json!(text);
        entries[1].data = to_canonical_bytes(&signatures);
        suite.add(
            "5",
            format!("signature key id with {what}"),
            raw_tar(&entries),
            refused(3, "not a valid signature file"),
        );
    }
    // The grammar admits what edgec writes.
    suite.add(
        "5",
        "names at the edge of the grammar",
        suite.tampered(|value| {
            value["deployment"] = json!("Plant_1.v-2");
            value["registry_images"] = json!([{
                "module": "_sensor-2.b",
                "reference": format!("localhost:5000/edge.hub/agent_x@sha256:{}", "0".repeat(64)),
            }]);
        }),
        Expect::Applied(10),
    );
    // Class 1: a key id with multi-byte characters, where 16 bytes fall inside a character.
    let files = files("v10");
    let mut entries = head(&manifest(10, &files), &[suite.key]);
    let mut signatures: Value = serde_json::from_slice(&entries[1].data).unwrap();
    signatures["signatures"][0]["key_id"] = json!(format!("a{}", "é".repeat(40)));
    entries[1].data = to_canonical_bytes(&signatures);
    suite.add(
        "1",
        "multi-byte key id",
        raw_tar(&entries),
        refused(3, "not a valid signature file"),
    );
    // Many signatures by unknown keys: the refusal lists a few, not all.
    let mut entries = head(&manifest(10, &files), &[suite.key]);
    let mut signatures: Value = serde_json::from_slice(&entries[1].data).unwrap();
    signatures["signatures"] = Value::Array(
        (0..5000)
            .map(|index| {
                json!({"algorithm": "ed25519", "key_id": format!("{index:064x}"), "signature": "00".repeat(64)})
            })
            .collect(),
    );
    entries[1].data = to_canonical_bytes(&signatures);
    suite.add(
        "1",
        "5000 signatures by unknown keys",
        raw_tar(&entries),
        refused(3, "and 4992 more"),
    );
}

/// A raw header of `kind` declaring `size` bytes, as the first 512 bytes of a sparse file of
/// that size: the bytes it claims are never written.
fn sparse_record(head: Vec<u8>, kind: u8, size: u64) -> Write<'static> {
    Box::new(move |path| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_size(size);
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_cksum();
        let mut bytes = head.clone();
        bytes.extend_from_slice(header.as_bytes());
        fs::write(path, &bytes).unwrap();
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(bytes.len() as u64 + size + 1024).unwrap();
    })
}

/// A tar written by the tar crate (GNU long names for long paths).
fn gnu_tar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// Class 4: nothing a bundle declares before its signature is checked may make edged
/// allocate, print or work without bound.
fn exhaustion(suite: &mut Suite<'_>) {
    let files = files("v10");
    let signed_head = raw_tar(&head(&manifest(10, &files), &[suite.key]));
    // The head without the two zero blocks that end an archive.
    let signed_head = signed_head[..signed_head.len() - 1024].to_vec();
    for (kind, what, says) in [
        (
            b'L',
            "GNU long name",
            "long-name record declares 1073741824 bytes",
        ),
        (
            b'K',
            "GNU long link name",
            "long-name record declares 1073741824 bytes",
        ),
        (b'x', "PAX extended header", "PAX extended header"),
        (b'g', "PAX global header", "PAX extended header"),
    ] {
        suite.add_with(
            "4",
            format!("1 GiB {what} before the manifest"),
            Box::new(|_| {}),
            sparse_record(Vec::new(), kind, 1 << 30),
            refused(3, says),
        );
        suite.add_with(
            "4",
            format!("1 GiB {what} after the signed head"),
            Box::new(|_| {}),
            sparse_record(signed_head.clone(), kind, 1 << 30),
            refused(3, says),
        );
    }
    suite.add_with(
        "4",
        "GNU sparse entry",
        Box::new(|_| {}),
        sparse_record(signed_head.clone(), b'S', 4096),
        refused(3, "sparse"),
    );
    let deep = format!("payload/{}f", "d/".repeat(1500));
    let long = format!("payload/{}", "abcdefgh/".repeat(600));
    for (what, path, says) in [
        ("1,500-level deep", &deep, "more than 64 components deep"),
        ("5,400-byte", &long, "4096 bytes"),
    ] {
        let mut listed = files.clone();
        listed.insert(path.clone(), b"x".to_vec());
        let mut entries: Vec<(String, Vec<u8>)> = head(&manifest(10, &listed), &[suite.key])
            .into_iter()
            .map(|entry| (String::from_utf8(entry.name).unwrap(), entry.data))
            .collect();
        entries.extend(listed.clone());
        suite.add(
            "4",
            format!("{what} listed path"),
            gnu_tar(&entries),
            refused(3, says),
        );
        let mut entries: Vec<(String, Vec<u8>)> = head(&manifest(10, &files), &[suite.key])
            .into_iter()
            .map(|entry| (String::from_utf8(entry.name).unwrap(), entry.data))
            .collect();
        entries.extend(files.clone());
        entries.push((path.clone(), b"x".to_vec()));
        suite.add(
            "4",
            format!("{what} unlisted entry"),
            gnu_tar(&entries),
            refused(3, says),
        );
    }
}

/// Class 2: an OS payload the device cannot take is refused before the inactive slot's
/// deployment (the rollback target) is touched.
fn refusals_after_verification(suite: &mut Suite<'_>) {
    let with_os = "[os]\ndisk = \"/nonexistent/disk\"\n";
    let cases = [
        (
            "OS payload on a device without [os]",
            None,
            true,
            "",
            "no [os] section",
        ),
        ("unsigned root hash", None, false, with_os, "not signed"),
        (
            "root hash mismatch",
            Some("12".repeat(32)),
            true,
            with_os,
            "does not match the root hash",
        ),
        ("OS slot unknown", None, true, with_os, "EDGE_OS_SLOT"),
    ];
    for (name, root_hash, signed, config, says) in cases {
        let bytes = os_bundle(suite.key, root_hash.as_deref(), signed);
        suite.add_with(
            "2",
            name,
            Box::new(move |device| {
                let text = fs::read_to_string(&device.config).unwrap();
                fs::write(&device.config, format!("{text}{config}")).unwrap();
            }),
            Box::new(move |path| fs::write(path, &bytes).unwrap()),
            refused(3, says),
        );
        if name != "OS slot unknown" {
            suite.cases.last_mut().unwrap().env = vec![("EDGE_OS_SLOT", "A")];
        }
    }
}

/// The deployment installed in `slot`, as the state record names it.
fn installed_in(device: &TestDevice, slot: edged::Slot) -> edged::state::Installed {
    let bytes = fs::read(slot_dir(device, slot).join("bundle.json")).unwrap();
    let manifest = edge_bundle::BundleManifest::from_canonical_bytes(&bytes).unwrap();
    edged::state::Installed {
        slot,
        deployment: manifest.deployment,
        version: manifest.version,
        manifest_digest: edge_bundle::Sha256Digest::of(&bytes).hex(),
    }
}

fn slot_dir(device: &TestDevice, slot: edged::Slot) -> std::path::PathBuf {
    device
        .state
        .join("slots")
        .join(slot.name())
        .join("deployment")
}

/// Damage done to one slot's deployment directory.
type Damage = fn(&Path);

/// Ways a slot's deployment can become unusable.
fn damages() -> Vec<(&'static str, Damage)> {
    vec![
        ("garbage manifest", |dir| {
            fs::write(dir.join("bundle.json"), b"\x00\xff garbage").unwrap()
        }),
        ("truncated manifest", |dir| {
            let bytes = fs::read(dir.join("bundle.json")).unwrap();
            fs::write(dir.join("bundle.json"), &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("deleted manifest", |dir| {
            fs::remove_file(dir.join("bundle.json")).unwrap()
        }),
        ("another deployment's manifest", |dir| {
            let files = files("other");
            let other = manifest(7, &files).to_canonical_bytes().unwrap();
            fs::write(dir.join("bundle.json"), other).unwrap();
        }),
        ("manifest with an unreadable IoT Edge manifest", |dir| {
            let bytes = fs::read(dir.join("bundle.json")).unwrap();
            let text = String::from_utf8(bytes)
                .unwrap()
                .replace("$edgeAgent", "$agent");
            fs::write(dir.join("bundle.json"), text).unwrap();
        }),
        ("deployment directory gone", |dir| {
            fs::remove_dir_all(dir).unwrap()
        }),
    ]
}

/// Class 3: whatever the state record says is in progress, a damaged deployment never wedges
/// the device: recovery reaches a state from which a newer good bundle applies.
fn wedges(suite: &mut Suite<'_>) {
    use edged::Slot;
    use edged::state::{Phase, Transaction};
    for (what, damage) in damages() {
        // Rolling back from version 2 to version 1, whose slot is damaged.
        suite.add_with(
            "3",
            format!("rolling back to a deployment with a {what}"),
            Box::new(move |device| {
                let mut state = device.state();
                let previous = installed_in(device, Slot::A);
                state.transaction = Some(Transaction {
                    phase: Phase::RollingBack,
                    target: state.active.clone().unwrap(),
                    previous: Some(previous.clone()),
                    reason: Some("unhealthy".to_owned()),
                });
                state.active = Some(previous);
                fs::write(
                    device.state.join("state.json"),
                    serde_json::to_vec(&state).unwrap(),
                )
                .unwrap();
                damage(&slot_dir(device, Slot::A));
            }),
            {
                let bytes = suite.good(10);
                Box::new(move |path| fs::write(path, &bytes).unwrap())
            },
            Expect::Applied(10),
        );
        // A trial of version 2 interrupted, and both slots damaged.
        suite.add_with(
            "3",
            format!("an interrupted trial with both slots' {what}"),
            Box::new(move |device| {
                let mut state = device.state();
                state.transaction = Some(Transaction {
                    phase: Phase::Trial,
                    target: state.active.clone().unwrap(),
                    previous: Some(installed_in(device, Slot::A)),
                    reason: None,
                });
                fs::write(
                    device.state.join("state.json"),
                    serde_json::to_vec(&state).unwrap(),
                )
                .unwrap();
                damage(&slot_dir(device, Slot::A));
                damage(&slot_dir(device, Slot::B));
            }),
            {
                let bytes = suite.good(10);
                Box::new(move |path| fs::write(path, &bytes).unwrap())
            },
            Expect::Applied(10),
        );
        // The floor survives: version 2 was committed.
        suite.add_with(
            "3",
            format!("an old bundle after rolling back to a {what}"),
            Box::new(move |device| {
                let mut state = device.state();
                let previous = installed_in(device, Slot::A);
                state.transaction = Some(Transaction {
                    phase: Phase::RollingBack,
                    target: state.active.clone().unwrap(),
                    previous: Some(previous.clone()),
                    reason: None,
                });
                state.active = Some(previous);
                fs::write(
                    device.state.join("state.json"),
                    serde_json::to_vec(&state).unwrap(),
                )
                .unwrap();
                damage(&slot_dir(device, Slot::A));
                // Recovery runs before the bundle is looked at; the case then checks the
                // recovered directory stays as it is.
                let output = device.edged("none", &["recover"]);
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                assert!(device.state().active.is_none());
                assert_eq!(device.state().committed_version, 2);
            }),
            {
                let bytes = suite.good(2);
                Box::new(move |path| fs::write(path, &bytes).unwrap())
            },
            // At least 2; a planted manifest of a higher version raises the floor further.
            refused(3, "not newer than the committed version"),
        );
    }
}

/// Edits the state record.
fn edit_state(device: &TestDevice, change: impl FnOnce(&mut edged::State)) {
    let mut state = device.state();
    change(&mut state);
    fs::write(
        device.state.join("state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
}

/// Runs an edged command that must succeed, or exit with `code`.
fn edged_ok(device: &TestDevice, runtime: &str, args: &[&str], code: i32) {
    let output = device.edged(runtime, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Class 6: the anti-rollback floor survives a lowered or lost record, and versions stay
/// where every JSON consumer reads them exactly.
fn versions(suite: &mut Suite<'_>) {
    for (version, what) in [(u64::MAX, "2^64 - 1"), (1 << 53, "2^53")] {
        let files = files("big");
        suite.add(
            "6",
            format!("version {what}"),
            bundle(&manifest(version, &files), &files, &[suite.key]),
            refused(3, "above the highest version"),
        );
    }
    type Damage = fn(&TestDevice);
    let lowered: Damage = |device| edit_state(device, |state| state.committed_version = 0);
    let lost: Damage = |device| {
        fs::remove_file(device.state.join("state.json")).unwrap();
        edged_ok(device, "none", &["recover"], 0);
        assert!(device.state().active.is_none());
    };
    let rolled_back_then_lowered: Damage = |device| {
        edged_ok(device, "none", &["rollback"], 0);
        edit_state(device, |state| state.committed_version = 1);
    };
    let cases: [(&str, Damage, u64, Expect); 6] = [
        (
            "committed version lowered",
            lowered,
            2,
            refused(3, "not newer than the committed version 2"),
        ),
        (
            "committed version lowered, older",
            lowered,
            1,
            refused(3, "not newer than the committed version 2"),
        ),
        (
            "state.json deleted",
            lost,
            2,
            refused(3, "not newer than the committed version 2"),
        ),
        ("state.json deleted, newer", lost, 3, Expect::Applied(3)),
        (
            "operator rollback, then the committed version lowered",
            rolled_back_then_lowered,
            2,
            refused(3, "not newer than the committed version 2"),
        ),
        (
            "operator rollback, then lowered, newer",
            rolled_back_then_lowered,
            3,
            Expect::Applied(3),
        ),
    ];
    for (name, damage, version, expect) in cases {
        let bytes = suite.good(version);
        suite.add_with(
            "6",
            name,
            Box::new(damage),
            Box::new(move |path| fs::write(path, &bytes).unwrap()),
            expect,
        );
    }
    // A version that was tried and rolled back may be tried again, even with the record's
    // committed version lowered (the committed version 2 in the other slot still counts).
    for (name, version, lower, expect) in [
        ("a rolled-back version again", 3, false, Expect::Applied(3)),
        (
            "a rolled-back version, lowered record",
            3,
            true,
            Expect::Applied(3),
        ),
        (
            "an old version after a rollback, lowered record",
            2,
            true,
            refused(3, "not newer than the committed version 2"),
        ),
    ] {
        let failing = suite.good(3);
        let bytes = suite.good(version);
        suite.add_with(
            "6",
            name,
            Box::new(move |device| {
                let path = device.write_bundle("failing.edgebundle", &failing);
                edged_ok(device, "failing", &["apply", path.to_str().unwrap()], 4);
                if lower {
                    edit_state(device, |state| state.committed_version = 0);
                }
            }),
            Box::new(move |path| fs::write(path, &bytes).unwrap()),
            expect,
        );
    }
}

/// A device with version 1 in slot a and version 2 active in slot b.
fn device(suite: &Suite<'_>) -> TestDevice {
    device_in(suite, tempfile::tempdir().unwrap(), "")
}

fn device_in(suite: &Suite<'_>, root: tempfile::TempDir, extra_config: &str) -> TestDevice {
    let device = TestDevice::new_in(root, &[suite.key], extra_config);
    for version in [1, 2] {
        let path = device.write_bundle(&format!("v{version}.edgebundle"), &suite.good(version));
        apply_ok(&device, &path, version);
    }
    device
}

fn apply_ok(device: &TestDevice, bundle: &Path, version: u64) {
    let output = device.edged("none", &["apply", bundle.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "applying version {version}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        device.state().active.map(|active| active.version),
        Some(version)
    );
}

/// Nothing edged printed may carry a raw control sequence, NUL or bidi control, or be long.
fn assert_printable(case: &str, output: &[u8]) {
    let text = String::from_utf8_lossy(output);
    assert!(
        output.len() <= MAX_OUTPUT,
        "{case}: {} bytes of output: {}…",
        output.len(),
        text.chars().take(400).collect::<String>()
    );
    let raw = text.chars().find(|character| {
        (character.is_control() && *character != '\n')
            || ('\u{202a}'..='\u{202e}').contains(character)
            || ('\u{2066}'..='\u{2069}').contains(character)
    });
    assert!(raw.is_none(), "{case}: raw {raw:?} printed: {text:?}");
}

fn run(suite: &Suite<'_>, case: &Case<'_>, device: &TestDevice) {
    let label = format!("class {} / {}", case.class, case.name);
    (case.prepare)(device);
    let before = tree_hash(&device.state);
    let path = device.root.path().join("attack.edgebundle");
    (case.bundle)(&path);
    let started = Instant::now();
    let rss_file = device.root.path().join("rss");
    let measure = Path::new(TIME).exists();
    let wrapper = [TIME, "-o", rss_file.to_str().unwrap(), "-f", "%M"];
    let output = device
        .command_under(
            if measure { &wrapper } else { &[] },
            "none",
            &["apply", path.to_str().unwrap()],
        )
        .envs(case.env.iter().copied())
        .output()
        .unwrap();
    let took = started.elapsed();
    if measure {
        let text = fs::read_to_string(&rss_file).unwrap();
        let kib: u64 = text.lines().last().unwrap().trim().parse().unwrap();
        assert!(
            kib < MAX_RSS_KIB,
            "{label}: edged used {} MiB of memory",
            kib >> 10
        );
    }
    fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{label}: edged panicked: {stderr}"
    );
    assert_printable(&label, &output.stderr);
    assert_printable(&label, &output.stdout);
    assert!(took < case.time_limit, "{label}: took {took:?}: {stderr}");
    match case.expect {
        Expect::Refused { code, says } => {
            assert_eq!(output.status.code(), Some(code), "{label}: {stderr}");
            assert!(
                stderr.contains(says),
                "{label}: expected {says:?} in {stderr}"
            );
            assert!(stderr.contains("hint: "), "{label}: {stderr}");
            assert_eq!(
                tree_hash(&device.state),
                before,
                "{label}: the refusal changed the state directory"
            );
        }
        Expect::Applied(version) => {
            assert!(output.status.success(), "{label}: {stderr}");
            assert_eq!(
                device.state().active.map(|active| active.version),
                Some(version),
                "{label}"
            );
        }
    }
    // Whatever happened, the device takes a good newer bundle.
    let next = device.write_bundle("next.edgebundle", &suite.good(NEXT));
    let output = device.edged("none", &["apply", next.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{label}: a good newer bundle is refused afterwards: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_attack_comes_to_its_expected_outcome() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let mut suite = Suite::new(&key);
    untrusted_text(&mut suite);
    exhaustion(&mut suite);
    refusals_after_verification(&mut suite);
    wedges(&mut suite);
    versions(&mut suite);
    assert!(suite.cases.len() >= 40, "only {} cases", suite.cases.len());
    for case in &suite.cases {
        run(&suite, case, &device(&suite));
    }
}

/// A tmpfs of a given size, mounted for one test (needs root; `None` without).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: u64) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Class 4: as many files as the default limit allows, each in a directory of its own, stage
/// in linear time (a list of known directories made this quadratic: 939 s for 99,990).
#[test]
fn a_bundle_of_many_directories_stages_in_linear_time() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let mut suite = Suite::new(&key);
    // On a tmpfs the fsyncs cost nothing, so the time is the staging's own.
    let tmpfs = Tmpfs::mount(2 << 30);
    let count = if tmpfs.is_some() { 60_000 } else { 6_000 };
    let mut many = BTreeMap::new();
    for index in 0..count {
        many.insert(format!("payload/many/{index:06}/file"), vec![b'x']);
    }
    suite.add(
        "4",
        format!("{count} files in their own directories"),
        bundle(&manifest(10, &many), &many, &[&key]),
        Expect::Applied(10),
    );
    let root = match &tmpfs {
        Some(tmpfs) => tempfile::tempdir_in(tmpfs.path()).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    // Linear staging takes about 25 s for 60,000 in a debug build on a busy machine; the
    // quadratic lookup took over 300 s.
    suite.cases[0].time_limit = Duration::from_secs(150);
    let device = device_in(&suite, root, "");
    run(&suite, &suite.cases[0], &device);
}

/// Bytes free on the file system holding `path`, as `df` reports them.
fn free_bytes(path: &Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Class 2: the disk filling at any point of an apply (a payload file, `bundle.json`,
/// `state.json`) is a refusal that leaves the state directory, and so the inactive slot's
/// deployment, byte-for-byte as it was; with enough room the same bundle applies.
#[test]
fn a_full_disk_at_any_point_of_an_apply_changes_nothing() {
    let Some(tmpfs) = Tmpfs::mount(8 << 20) else {
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let key = Key::new(keys.path(), "fleet");
    let suite = Suite::new(&key);
    let device = device_in(&suite, tempfile::tempdir_in(tmpfs.path()).unwrap(), "");
    let bundle_path = keys.path().join("v3.edgebundle");
    fs::write(&bundle_path, suite.good(3)).unwrap();
    let filler = tmpfs.path().join("filler");
    let before = tree_hash(&device.state);
    for pages in 0..64_u64 {
        fs::write(&filler, b"").unwrap();
        let room = free_bytes(tmpfs.path());
        fs::write(
            &filler,
            vec![0_u8; room.saturating_sub(pages * 4096) as usize],
        )
        .unwrap();
        let output = device.edged("none", &["apply", bundle_path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            eprintln!("with {pages} pages free it applied");
            assert!(pages > 0, "the apply never ran out of room");
            assert_eq!(device.state().active.unwrap().version, 3);
            return;
        }
        eprintln!(
            "{pages} pages free: {}",
            stderr.lines().next().unwrap_or("")
        );
        assert!(
            matches!(output.status.code(), Some(3 | 8)),
            "{pages} pages free: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(
            tree_hash(&device.state),
            before,
            "{pages} pages free: the failed apply changed the state directory: {stderr}"
        );
    }
    panic!("the apply failed with 64 pages free");
}
