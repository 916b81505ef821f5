//! `edgec verity format` and `edgec verity verify`, run as a user would, with veritysetup (from
//! cryptsetup-bin) as the oracle: same output, same hash file, and each tool accepts the other's.

use std::path::Path;
use std::process::{Command, Output};

const SALT: &str = "00112233445566778899aabbccddeeff";
const UUID: &str = "0b5e55ed-1234-4234-8234-123456789abc";

/// Runs `edgec verity …` in `directory`, where relative paths resolve.
fn edgec(directory: &Path, arguments: &[&str], files: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgec"))
        .current_dir(directory)
        .args(["verity"])
        .args(arguments)
        .args(files)
        .output()
        .expect("edgec runs")
}

fn veritysetup(directory: &Path, arguments: &[&str], files: &[&Path]) -> Output {
    Command::new("veritysetup")
        .current_dir(directory)
        .args(arguments)
        .args(files)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run veritysetup ({error}); these tests use it as the oracle: install \
                 cryptsetup-bin (apt-get install -y cryptsetup-bin, or run .ci/setup)"
            )
        })
}

fn root_hash(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find(|line| line.starts_with("Root hash:"));
    let line = line.unwrap_or_else(|| panic!("no root hash in:\n{stdout}"));
    line.split_whitespace().last().unwrap().to_owned()
}

/// 300 blocks and a partial one: two levels, and a tail neither tool covers.
fn data_file(directory: &Path) -> std::path::PathBuf {
    let data = directory.join("data");
    let bytes: Vec<u8> = (0..300 * 4096 + 100)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&data, bytes).unwrap();
    data
}

#[test]
fn format_prints_and_writes_what_veritysetup_does() {
    let directory = tempfile::tempdir().unwrap();
    let data = data_file(directory.path());
    // Both hash files share a name, in sibling directories, so the printed headers can match.
    for tool in ["edgec", "veritysetup"] {
        std::fs::create_dir(directory.path().join(tool)).unwrap();
    }
    let options = ["format", "--salt", SALT, "--uuid", UUID];
    let ours = edgec(
        directory.path(),
        &options,
        &[&data, Path::new("edgec/hash")],
    );
    let theirs = veritysetup(
        directory.path(),
        &options,
        &[&data, Path::new("veritysetup/hash")],
    );
    assert!(ours.status.success(), "{ours:?}");
    assert!(theirs.status.success(), "{theirs:?}");
    let header = |output: &Output, tool: &str| {
        String::from_utf8_lossy(&output.stdout).replace(&format!("{tool}/hash"), "HASH")
    };
    assert_eq!(header(&ours, "edgec"), header(&theirs, "veritysetup"));
    assert!(String::from_utf8_lossy(&ours.stderr).contains("last 100 bytes"));
    assert_eq!(
        std::fs::read(directory.path().join("edgec/hash")).unwrap(),
        std::fs::read(directory.path().join("veritysetup/hash")).unwrap()
    );
}

#[test]
fn derived_salt_and_uuid_are_reproducible_and_veritysetup_verifies_them() {
    let directory = tempfile::tempdir().unwrap();
    let data = data_file(directory.path());
    let (first, second) = (
        directory.path().join("first"),
        directory.path().join("second"),
    );
    let output = edgec(directory.path(), &["format"], &[&data, &first]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("derived from the data"));
    assert!(
        edgec(directory.path(), &["format"], &[&data, &second])
            .status
            .success()
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
    let root = root_hash(&output);
    let verified = veritysetup(
        directory.path(),
        &["verify"],
        &[&data, &first, Path::new(&root)],
    );
    assert!(verified.status.success(), "{verified:?}");
}

#[test]
fn verify_exits_0_1_or_2() {
    let directory = tempfile::tempdir().unwrap();
    let data = data_file(directory.path());
    let hash = directory.path().join("hash");
    let output = veritysetup(
        directory.path(),
        &["format", "--salt", SALT],
        &[&data, &hash],
    );
    assert!(output.status.success(), "{output:?}");
    let root = root_hash(&output);
    let root = Path::new(&root);

    let good = edgec(directory.path(), &["verify"], &[&data, &hash, root]);
    assert_eq!(good.status.code(), Some(0), "{good:?}");

    let mut bytes = std::fs::read(&data).unwrap();
    bytes[123 * 4096 + 7] ^= 0x10;
    std::fs::write(&data, bytes).unwrap();
    let bad = edgec(directory.path(), &["verify"], &[&data, &hash, root]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("data block 123 "));

    let missing = edgec(
        directory.path(),
        &["verify"],
        &[&data, &directory.path().join("none"), root],
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    let malformed = edgec(
        directory.path(),
        &["verify"],
        &[&data, &hash, Path::new("abc")],
    );
    assert_eq!(malformed.status.code(), Some(2), "{malformed:?}");
}

#[test]
fn format_refuses_data_smaller_than_a_block() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    std::fs::write(&data, [1; 4095]).unwrap();
    let output = edgec(
        directory.path(),
        &["format"],
        &[&data, &directory.path().join("hash")],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("less than one 4096-byte block"));
}
