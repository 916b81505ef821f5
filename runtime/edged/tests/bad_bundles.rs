//! Broken and malicious bundles: each is refused with a clear message, and
//! the state directory stays byte-for-byte unchanged.

mod common;

use std::collections::BTreeMap;

use common::{Key, RawEntry, TestDevice, bundle, files, head, manifest, raw_tar, tree_hash};
use tar::EntryType;

/// A bad bundle and the words its refusal must contain.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expected: &'static str,
}

fn cases(trusted: &Key, second: &Key, untrusted: &Key) -> Vec<Case> {
    let good_files = files("next");
    let good = manifest(6, &good_files);
    let good_bytes = bundle(&good, &good_files, &[trusted, second]);
    let mut cases = Vec::new();
    let mut add = |name, bytes, expected| {
        cases.push(Case {
            name,
            bytes,
            expected,
        })
    };

    add(
        "unknown key",
        bundle(&good, &good_files, &[untrusted]),
        "signed by 0 trusted key(s), 2 required",
    );
    add(
        "below threshold",
        bundle(&good, &good_files, &[trusted]),
        "signed by 1 trusted key(s), 2 required",
    );
    {
        // Claims the trusted key id but carries a signature by another key.
        let manifest_bytes = good.to_canonical_bytes().unwrap();
        let forged = common::signatures(&manifest_bytes, &[untrusted, second]);
        let trusted_id = edge_bundle::key_id(&edge_bundle::Signer::public_key(&trusted.signer));
        let untrusted_id = edge_bundle::key_id(&edge_bundle::Signer::public_key(&untrusted.signer));
        let forged = String::from_utf8(forged)
            .unwrap()
            .replace(&untrusted_id, &trusted_id);
        let mut entries = vec![
            RawEntry::file("bundle.json", &manifest_bytes),
            RawEntry::file("bundle.sig.json", forged.as_bytes()),
        ];
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add(
            "wrong key",
            raw_tar(&entries),
            "signed by 1 trusted key(s), 2 required",
        );
    }
    {
        let manifest_bytes = good.to_canonical_bytes().unwrap();
        let twice = common::signatures(&manifest_bytes, &[trusted, trusted]);
        let mut entries = vec![
            RawEntry::file("bundle.json", &manifest_bytes),
            RawEntry::file("bundle.sig.json", &twice),
        ];
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add(
            "same key twice",
            raw_tar(&entries),
            "signed by 1 trusted key(s), 2 required",
        );
    }
    add(
        "truncated",
        good_bytes[..good_bytes.len() * 2 / 3].to_vec(),
        "bundle",
    );
    {
        let mut tampered = good_files.clone();
        tampered.get_mut("payload/data/blob.bin").unwrap()[10] ^= 1;
        let mut entries = head(&good, &[trusted, second]);
        entries.extend(
            tampered
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add("tampered payload", raw_tar(&entries), "has sha256");
    }
    {
        let mut entries = head(&good, &[trusted, second]);
        let text = String::from_utf8(entries[0].data.clone())
            .unwrap()
            .replace("\"plant\"", "\"plans\"");
        entries[0].data = text.into_bytes();
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add(
            "tampered manifest",
            raw_tar(&entries),
            "signed by 0 trusted key(s)",
        );
    }
    add(
        "older version",
        bundle(&manifest(4, &good_files), &good_files, &[trusted, second]),
        "not newer than the committed version 5",
    );
    add(
        "equal version",
        bundle(&manifest(5, &good_files), &good_files, &[trusted, second]),
        "not newer than the committed version 5",
    );
    {
        let mut other = good.clone();
        other.compatible = "fabrikam,camera".to_owned();
        add(
            "wrong compatible",
            bundle(&other, &good_files, &[trusted, second]),
            "compatible with \"fabrikam,camera\"",
        );
    }
    {
        let mut other = good.clone();
        other.architecture = edge_bundle::Architecture::Arm64;
        add(
            "wrong architecture",
            bundle(&other, &good_files, &[trusted, second]),
            "built for arm64",
        );
    }
    let with_extra = |path: &str, entry: RawEntry| {
        let mut listed = good_files.clone();
        listed.insert(path.to_owned(), entry.data.clone());
        let signed = manifest(6, &listed);
        let mut entries = head(&signed, &[trusted, second]);
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        entries.push(entry);
        raw_tar(&entries)
    };
    add(
        "path traversal",
        with_extra(
            "payload/../../etc/cron.d/x",
            RawEntry::file("payload/../../etc/cron.d/x", b"x"),
        ),
        "parent directory component",
    );
    add(
        "absolute path",
        with_extra("/etc/passwd", RawEntry::file("/etc/passwd", b"root")),
        "absolute path",
    );
    let unlisted_extra = |entry: RawEntry| {
        let mut entries = head(&good, &[trusted, second]);
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        entries.push(entry);
        raw_tar(&entries)
    };
    add(
        "escaping symlink",
        unlisted_extra(RawEntry::special(
            "payload/escape",
            EntryType::Symlink,
            Some("../../../../etc"),
        )),
        "links are not allowed",
    );
    add(
        "hard link",
        unlisted_extra(RawEntry::special(
            "payload/hard",
            EntryType::Link,
            Some("/etc/shadow"),
        )),
        "links are not allowed",
    );
    add(
        "device node",
        unlisted_extra(RawEntry::special("payload/sda", EntryType::Block, None)),
        "device nodes are not allowed",
    );
    add(
        "character device",
        unlisted_extra(RawEntry::special("payload/mem", EntryType::Char, None)),
        "device nodes are not allowed",
    );
    add(
        "fifo",
        unlisted_extra(RawEntry::special("payload/pipe", EntryType::Fifo, None)),
        "fifos are not allowed",
    );
    add(
        "directory entry",
        unlisted_extra(RawEntry::special("payload/dir", EntryType::Directory, None)),
        "directory entries are not allowed",
    );
    add(
        "unlisted entry",
        unlisted_extra(RawEntry::file("payload/extra.sh", b"#!/bin/sh\n")),
        "not listed in bundle.json",
    );
    add(
        "duplicate entry",
        unlisted_extra(RawEntry::file(
            "payload/data/blob.bin",
            &good_files["payload/data/blob.bin"],
        )),
        "occurs twice",
    );
    {
        let mut entries = head(&good, &[trusted, second]);
        for (path, content) in &good_files {
            let mut entry = RawEntry::file(path, content);
            if path.ends_with("blob.bin") {
                entry.data.extend_from_slice(&[0; 4096]);
            }
            entries.push(entry);
        }
        add(
            "oversized entry",
            raw_tar(&entries),
            "bytes, bundle.json says",
        );
    }
    {
        let mut many = BTreeMap::new();
        for index in 0..20 {
            many.insert(format!("payload/many/{index:03}"), vec![b'x']);
        }
        add(
            "too many entries",
            bundle(&manifest(6, &many), &many, &[trusted, second]),
            "at most 10",
        );
    }
    {
        let mut big = BTreeMap::new();
        big.insert("payload/big.bin".to_owned(), vec![0_u8; 300_000]);
        add(
            "entry over the size limit",
            bundle(&manifest(6, &big), &big, &[trusted, second]),
            "at most 200000 per entry",
        );
        let mut total = BTreeMap::new();
        for index in 0..5 {
            total.insert(format!("payload/part{index}"), vec![index as u8; 150_000]);
        }
        add(
            "total over the size limit",
            bundle(&manifest(6, &total), &total, &[trusted, second]),
            "at most 500000",
        );
    }
    {
        let other_files = files("othr");
        let mut entries = head(&good, &[trusted, second]);
        entries.extend(
            other_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add("mix and match", raw_tar(&entries), "has sha256");
    }
    {
        let mut entries = head(&good, &[trusted, second]);
        entries.extend(
            good_files
                .iter()
                .take(1)
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add(
            "missing payload",
            raw_tar(&entries),
            "missing from the bundle",
        );
    }
    {
        let manifest_bytes = serde_json::to_vec_pretty(&good).unwrap();
        let mut entries = vec![
            RawEntry::file("bundle.json", &manifest_bytes),
            RawEntry::file(
                "bundle.sig.json",
                &common::signatures(&manifest_bytes, &[trusted, second]),
            ),
        ];
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add("non-canonical manifest", raw_tar(&entries), "not canonical");
    }
    {
        let mut entries = head(&good, &[trusted, second]);
        entries[1].data = b"{\"signatures\": 3}".to_vec();
        add(
            "bad signature file",
            raw_tar(&entries),
            "not a valid signature file",
        );
    }
    {
        let mut entries = head(&good, &[trusted, second]);
        let text = String::from_utf8(entries[1].data.clone()).unwrap();
        let start = text.find("\"signature\":\"").unwrap() + 13;
        let mut bytes = text.into_bytes();
        bytes[start..start + 4].copy_from_slice(b"zzzz");
        entries[1].data = bytes;
        entries.extend(
            good_files
                .iter()
                .map(|(path, content)| RawEntry::file(path, content)),
        );
        add(
            "malformed signature hex",
            raw_tar(&entries),
            "trusted key(s), 2 required",
        );
    }
    add("empty file", Vec::new(), "is empty");
    add(
        "not a tar",
        b"MZ\x90\x00this is not a bundle at all, just some bytes".repeat(20),
        "not a bundle",
    );
    {
        let mut entries = head(&good, &[trusted, second]);
        entries.swap(0, 1);
        add(
            "signatures before manifest",
            raw_tar(&entries),
            "must start with bundle.json",
        );
    }
    {
        let mut entries = head(&good, &[trusted, second]);
        entries.insert(0, RawEntry::file("payload/config/app.json", b"{}"));
        add(
            "payload before manifest",
            raw_tar(&entries),
            "must start with bundle.json",
        );
    }
    {
        let mut outside = BTreeMap::new();
        outside.insert("etc/cron.d/job".to_owned(), b"* * * * * root sh".to_vec());
        add(
            "payload outside payload/",
            bundle(&manifest(6, &outside), &outside, &[trusted, second]),
            "must start with payload/",
        );
    }
    {
        let mut conflict = BTreeMap::new();
        conflict.insert("payload/a".to_owned(), b"file".to_vec());
        conflict.insert("payload/a/b".to_owned(), b"nested".to_vec());
        add(
            "file and directory conflict",
            bundle(&manifest(6, &conflict), &conflict, &[trusted, second]),
            "both a file and a directory",
        );
    }
    {
        let mut entries = head(&good, &[trusted, second]);
        let text = String::from_utf8(entries[0].data.clone())
            .unwrap()
            .replace("\"format_version\":1", "\"format_version\":2");
        entries[0].data = text.into_bytes();
        add(
            "future format version",
            raw_tar(&entries),
            "unsupported bundle format version 2",
        );
    }
    {
        let mut lying = good.clone();
        lying.images.push(edge_bundle::PackagedImage {
            module: "sensor".to_owned(),
            reference: "edgec.local/sensor:1".to_owned(),
            path: "payload/images/sensor".to_owned(),
            manifest_digest: format!("sha256:{}", "0".repeat(64)),
        });
        add(
            "image without payload",
            bundle(&lying, &good_files, &[trusted, second]),
            "holds no payload",
        );
    }
    cases
}

#[test]
fn every_bad_bundle_is_refused_and_changes_nothing() {
    let keys_dir = tempfile::tempdir().unwrap();
    let trusted = Key::new(keys_dir.path(), "trusted");
    let second = Key::new(keys_dir.path(), "second");
    let untrusted = Key::new(keys_dir.path(), "untrusted");
    let device = TestDevice::new(
        &[&trusted, &second],
        "[limits]\nmax_entries = 10\nmax_entry_bytes = 200000\nmax_total_bytes = 500000\n",
    );
    // The trust section comes last in the file; the threshold is set there.
    let text = std::fs::read_to_string(&device.config).unwrap();
    std::fs::write(&device.config, format!("{text}threshold = 2\n")).unwrap();

    let current_files = files("current");
    let current = bundle(
        &manifest(5, &current_files),
        &current_files,
        &[&trusted, &second],
    );
    let path = device.write_bundle("current.edgebundle", &current);
    let output = device.edged("none", &["apply", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let all = cases(&trusted, &second, &untrusted);
    assert!(all.len() >= 25, "only {} cases", all.len());
    let before = tree_hash(&device.state);
    for case in &all {
        let path = device.write_bundle("bad.edgebundle", &case.bytes);
        let output = device.edged("none", &["apply", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{}: {stderr}", case.name);
        assert!(stderr.contains("bundle refused"), "{}: {stderr}", case.name);
        assert!(
            stderr.contains(case.expected),
            "{}: expected {:?} in {stderr}",
            case.name,
            case.expected
        );
        assert!(
            stderr.contains("hint: the device is unchanged"),
            "{}: {stderr}",
            case.name
        );
        assert_eq!(
            tree_hash(&device.state),
            before,
            "{} changed the state directory",
            case.name
        );
    }
    let state = device.state();
    assert_eq!(state.committed_version, 5);

    // The control: the good bundle the cases were derived from applies.
    let good_files = files("next");
    let good = bundle(&manifest(6, &good_files), &good_files, &[&trusted, &second]);
    let path = device.write_bundle("good.edgebundle", &good);
    let output = device.edged("none", &["apply", path.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(device.state().committed_version, 6);
}

#[test]
fn a_directory_is_not_a_bundle() {
    let keys_dir = tempfile::tempdir().unwrap();
    let trusted = Key::new(keys_dir.path(), "trusted");
    let device = TestDevice::new(&[&trusted], "");
    let output = device.edged("none", &["apply", keys_dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a regular file"));
}
