//! Every command that writes a file (`fmt`, `import`, `build`) writes it all at once: a write
//! that fails part-way leaves the original file as it was and no temporary file behind. The
//! failure is real: the file size limit (`ulimit -f`) with SIGXFSZ ignored, so that writing past
//! it fails with EFBIG instead of killing the process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn edgec(directory: &Path, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgec"))
        .args(arguments)
        .current_dir(directory)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run edgec")
}

/// Runs edgec allowed to write files of one block only (512 bytes in dash, 1024 in bash), far
/// less than any file written here. An ignored signal stays ignored across `exec`.
fn edgec_with_a_tiny_file_size_limit(directory: &Path, arguments: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 1 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_edgec"))
        .args(arguments)
        .current_dir(directory)
        .env("NO_COLOR", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run edgec under sh")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every file below `directory`, relative and sorted, so a leftover temporary file shows.
fn files_below(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("list a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(directory).expect("below the directory");
                files.push(relative.to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// A source of about 6 KiB that `edgec fmt` changes on every line.
fn unformatted_source() -> String {
    (0..200)
        .map(|index| format!("param p{index}:   int =   {index}\n"))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn fmt_that_cannot_write_leaves_the_source_intact_and_no_temporary_file() {
    let directory = tempfile::tempdir().expect("a scratch directory");
    let source = directory.path().join("site.edge");
    std::fs::write(&source, unformatted_source()).expect("write the source");
    std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o640)).expect("chmod");

    let failed = edgec_with_a_tiny_file_size_limit(directory.path(), &["fmt", "site.edge"]);
    assert_eq!(failed.status.code(), Some(2), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("cannot write `site.edge`"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(
        std::fs::read_to_string(&source).expect("read"),
        unformatted_source()
    );
    assert_eq!(files_below(directory.path()), [PathBuf::from("site.edge")]);

    // Without the limit the same command succeeds and keeps the file's permissions.
    let formatted = edgec(directory.path(), &["fmt", "site.edge"]);
    assert_eq!(formatted.status.code(), Some(0), "{}", stderr(&formatted));
    assert!(
        std::fs::read_to_string(&source)
            .expect("read")
            .starts_with("param p0: int = 0\n")
    );
    assert_eq!(mode(&source), 0o640);
    assert_eq!(files_below(directory.path()), [PathBuf::from("site.edge")]);
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/conformance/manifests/azure-iot-edge-deployment-2.0__deployment.json")
}

#[test]
fn import_that_cannot_write_leaves_no_file_or_the_old_one_intact() {
    let directory = tempfile::tempdir().expect("a scratch directory");
    let manifest = manifest();
    let manifest = manifest.to_str().expect("UTF-8");

    let new = edgec_with_a_tiny_file_size_limit(
        directory.path(),
        &["import", manifest, "-o", "site.edge"],
    );
    assert_eq!(new.status.code(), Some(2), "{}", stderr(&new));
    assert!(
        stderr(&new).contains("cannot write `site.edge`"),
        "{}",
        stderr(&new)
    );
    assert_eq!(files_below(directory.path()), Vec::<PathBuf>::new());

    let existing = directory.path().join("site.edge");
    std::fs::write(&existing, "// mine\n").expect("an existing file");
    let replaced = edgec_with_a_tiny_file_size_limit(
        directory.path(),
        &["import", manifest, "-o", "site.edge", "--force"],
    );
    assert_eq!(replaced.status.code(), Some(2), "{}", stderr(&replaced));
    assert_eq!(
        std::fs::read_to_string(&existing).expect("read"),
        "// mine\n"
    );
    assert_eq!(files_below(directory.path()), [PathBuf::from("site.edge")]);

    // Refusing to replace without --force also leaves no temporary file.
    let refused = edgec(directory.path(), &["import", manifest, "-o", "site.edge"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(
        std::fs::read_to_string(&existing).expect("read"),
        "// mine\n"
    );
    assert_eq!(files_below(directory.path()), [PathBuf::from("site.edge")]);
}

#[test]
fn build_that_cannot_write_leaves_the_previous_build_intact_and_no_temporary_file() {
    let directory = tempfile::tempdir().expect("a scratch directory");
    let quickstart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes/quickstart");
    let quickstart = quickstart.to_str().expect("UTF-8");
    let key = directory.path().join("signing.pem");
    let keygen = edgec(
        directory.path(),
        &["keygen", "-o", key.to_str().expect("UTF-8")],
    );
    assert!(keygen.status.success(), "{}", stderr(&keygen));
    let out = directory.path().join("out");
    let build = ["build", quickstart, "-o", "out", "--key", "signing.pem"];
    let first = edgec(directory.path(), &build);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let built = files_below(&out);
    assert_eq!(
        built,
        [
            PathBuf::from("quickstart/deployment.json"),
            PathBuf::from("quickstart.edgebundle")
        ]
    );
    let manifest_before = std::fs::read(out.join("quickstart/deployment.json")).expect("read");
    let bundle_before = std::fs::read(out.join("quickstart.edgebundle")).expect("read");

    let failed = edgec_with_a_tiny_file_size_limit(
        directory.path(),
        &[
            "build",
            quickstart,
            "-o",
            "out",
            "--key",
            "signing.pem",
            "--set",
            "threshold=30",
        ],
    );
    assert_eq!(failed.status.code(), Some(2), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("cannot write"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(files_below(&out), built);
    assert_eq!(
        std::fs::read(out.join("quickstart/deployment.json")).expect("read"),
        manifest_before
    );
    assert_eq!(
        std::fs::read(out.join("quickstart.edgebundle")).expect("read"),
        bundle_before
    );
}

#[test]
fn fmt_never_writes_through_a_file_planted_where_a_temporary_file_might_go() {
    // A fixed temporary name could be planted as a link to another file, which a write that
    // does not create its file exclusively would overwrite.
    let directory = tempfile::tempdir().expect("a scratch directory");
    let source = directory.path().join("site.edge");
    std::fs::write(&source, unformatted_source()).expect("write the source");
    let victim = directory.path().join("victim");
    std::fs::write(&victim, "precious").expect("write the victim");
    for planted in [".site.edge.edgec-tmp", ".site.edge.tmp"] {
        std::os::unix::fs::symlink(&victim, directory.path().join(planted)).expect("plant a link");
    }
    let formatted = edgec(directory.path(), &["fmt", "site.edge"]);
    assert_eq!(formatted.status.code(), Some(0), "{}", stderr(&formatted));
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    assert!(
        std::fs::read_to_string(&source)
            .expect("read")
            .starts_with("param p0: int = 0\n")
    );
}
