//! What the `edgec` binary does with input that is wrong in every way we could think of: the wrong
//! encoding, the wrong size, absurd nesting, binary files, bad imports and bad command lines. Every
//! case must end with a diagnostic code or a message and the documented exit status, never with a
//! crash or a signal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A scratch directory under the system temporary directory, removed when the test ends.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates a fresh directory whose name includes the test's name and the process id, so tests
    /// running in parallel (and concurrent runs of this suite) never share one.
    fn new(test: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("edgec-bad-input-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a scratch directory");
        Scratch { path }
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("write a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs the built `edgec` with `arguments` in `directory`, without colour.
fn edgec(directory: &Path, arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgec"))
        .args(arguments)
        .current_dir(directory)
        .env("NO_COLOR", "1")
        .output()
        .expect("run edgec")
}

/// The exit code, failing the test if the process was killed by a signal (a stack overflow is
/// reported as SIGSEGV or SIGABRT, not as an exit code).
fn exit_code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| {
        panic!(
            "edgec was killed by a signal ({:?}); stderr:\n{}",
            output.status,
            tail(&output.stderr)
        )
    })
}

/// The last part of a stream, so a failure message stays readable when the stream is huge.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(2000);
    let start = (start..=text.len())
        .find(|&index| text.is_char_boundary(index))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// The diagnostic codes in `edgec check --format json` output, one JSON object per line.
fn json_codes(output: &Output) -> Vec<String> {
    let stdout = String::from_utf8(output.stdout.clone()).expect("JSON output is UTF-8");
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let start = line
                .find(r#""code":""#)
                .expect("every diagnostic has a code")
                + 8;
            line[start..start + 5].to_owned()
        })
        .collect()
}

/// Checks `file` with JSON output and asserts the exit status and that `code` is among the codes.
fn assert_check_reports(scratch: &Scratch, file: &Path, status: i32, code: &str) {
    let output = edgec(
        &scratch.path,
        &["check", "--format", "json", file.to_str().unwrap()],
    );
    assert_eq!(
        exit_code(&output),
        status,
        "stderr:\n{}",
        tail(&output.stderr)
    );
    let codes = json_codes(&output);
    assert!(
        codes.iter().any(|found| found == code),
        "{code} not in {codes:?}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_e0010() {
    let scratch = Scratch::new("not-utf8");
    let file = scratch.file("latin1.edge", b"module caf\xe9 {\n  image = \"a:1\"\n}\n");
    assert_check_reports(&scratch, &file, 1, "E0010");
}

#[test]
fn an_empty_file_is_a_warning_w0013_and_exits_0() {
    let scratch = Scratch::new("empty");
    let file = scratch.file("empty.edge", "");
    assert_check_reports(&scratch, &file, 0, "W0013");
}

#[test]
fn a_file_over_the_size_limit_is_e0011_and_refused_quickly() {
    let scratch = Scratch::new("too-large");
    let line = b"param p: int = 1\n";
    let size = 100 * 1024 * 1024;
    let contents: Vec<u8> = line.iter().copied().cycle().take(size).collect();
    let file = scratch.file("huge.edge", contents);
    let started = Instant::now();
    assert_check_reports(&scratch, &file, 1, "E0011");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusing a large file took {:?}; it should not be parsed",
        started.elapsed()
    );
}

#[test]
fn ten_thousand_nested_lists_are_e0007_not_a_crash() {
    let scratch = Scratch::new("deep-lists");
    let depth = 10_000;
    let source = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
    let file = scratch.file("lists.edge", source);
    assert_check_reports(&scratch, &file, 1, "E0007");
}

#[test]
fn ten_thousand_nested_objects_are_e0007_not_a_crash() {
    let scratch = Scratch::new("deep-objects");
    let depth = 10_000;
    let source = format!("x = {}{}\n", "{ a = ".repeat(depth), "}".repeat(depth));
    let file = scratch.file("objects.edge", source);
    assert_check_reports(&scratch, &file, 1, "E0007");
}

#[test]
fn ten_thousand_nested_blocks_are_e0007_not_a_crash() {
    let scratch = Scratch::new("deep-blocks");
    let depth = 10_000;
    let source = format!("module m {}{}\n", "{ a ".repeat(depth), "}".repeat(depth));
    let file = scratch.file("blocks.edge", source);
    assert_check_reports(&scratch, &file, 1, "E0007");
}

#[test]
fn binary_garbage_with_nul_bytes_is_e0012() {
    let scratch = Scratch::new("binary");
    // A deterministic stream of bytes covering the whole range, NUL and invalid UTF-8 included,
    // as an executable or an image would.
    let mut state: u32 = 0x2545_f491;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .chain([0, 0xff, 0])
        .collect();
    let file = scratch.file("garbage.edge", garbage);
    assert_check_reports(&scratch, &file, 1, "E0012");
}

#[test]
fn a_file_that_imports_itself_is_e0015() {
    let scratch = Scratch::new("self-import");
    let file = scratch.file("self.edge", "import \"self.edge\"\n");
    assert_check_reports(&scratch, &file, 1, "E0015");
}

#[test]
fn a_missing_import_is_e0014() {
    let scratch = Scratch::new("missing-import");
    let file = scratch.file("site.edge", "import \"hardware/nowhere.edge\"\n");
    assert_check_reports(&scratch, &file, 1, "E0014");
}

#[test]
fn a_nonexistent_path_on_the_command_line_exits_2_with_a_message() {
    let scratch = Scratch::new("no-such-path");
    let output = edgec(&scratch.path, &["check", "does-not-exist.edge"]);
    assert_eq!(exit_code(&output), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read `does-not-exist.edge`"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn set_without_an_equals_sign_exits_2() {
    let scratch = Scratch::new("set-without-equals");
    let file = scratch.file("fleet.edge", "param p: int = 1\n");
    let output = edgec(
        &scratch.path,
        &["check", "--set", "p", file.to_str().unwrap()],
    );
    assert_eq!(exit_code(&output), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--set name=value"), "stderr:\n{stderr}");
}

#[test]
fn explaining_an_unknown_code_exits_2() {
    let scratch = Scratch::new("explain-unknown");
    let output = edgec(&scratch.path, &["explain", "NOPE"]);
    assert_eq!(exit_code(&output), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`NOPE` is not an edgec diagnostic code"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn fmt_check_on_an_unformatted_file_exits_1_and_leaves_it_alone() {
    let scratch = Scratch::new("fmt-check");
    let unformatted = "module   m {\nimage=\"a:1\"\n      restart = always }\n";
    let file = scratch.file("m.edge", unformatted);
    let output = edgec(&scratch.path, &["fmt", "--check", file.to_str().unwrap()]);
    assert_eq!(exit_code(&output), 1);
    assert!(String::from_utf8_lossy(&output.stdout).contains("would reformat"));
    assert_eq!(std::fs::read(&file).unwrap(), unformatted.as_bytes());
}

#[test]
fn fmt_on_a_file_with_a_syntax_error_exits_1_and_leaves_it_alone() {
    let scratch = Scratch::new("fmt-syntax-error");
    let broken = "module   m {\nimage = \"a:1\n  restart =\n";
    let file = scratch.file("broken.edge", broken);
    let output = edgec(&scratch.path, &["fmt", file.to_str().unwrap()]);
    assert_eq!(exit_code(&output), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("fix its syntax errors first"),
        "stderr:\n{stderr}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), broken.as_bytes());
    let leftovers: Vec<_> = std::fs::read_dir(&scratch.path).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "fmt left files behind: {leftovers:?}");
}

/// Runs `edgec check FILE` on a pseudo-terminal through util-linux `script`, so that colour would
/// be on, and returns everything it printed; `None` when `script` is not installed or cannot open
/// a pseudo-terminal here.
fn check_on_a_terminal(scratch: &Scratch, file: &Path, no_colour: bool) -> Option<String> {
    let command_line = format!(
        "'{}' check '{}'",
        env!("CARGO_BIN_EXE_edgec"),
        file.display()
    );
    let mut command = Command::new("script");
    command
        .args(["-qec", &command_line, "/dev/null"])
        .current_dir(&scratch.path)
        .env_remove("NO_COLOR");
    if no_colour {
        command.env("NO_COLOR", "1");
    }
    let output = command.output().ok()?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    printed.contains("E0105").then_some(printed)
}

#[test]
fn no_color_removes_every_ansi_escape() {
    let scratch = Scratch::new("no-color");
    let file = scratch.file("wrong.edge", "module m {\n  image = 3\n}\n");
    let piped = edgec(&scratch.path, &["check", file.to_str().unwrap()]);
    assert_eq!(exit_code(&piped), 1);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(stderr.contains("E0105"), "stderr:\n{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape in piped output:\n{stderr}"
    );

    let Some(coloured) = check_on_a_terminal(&scratch, &file, false) else {
        eprintln!("no pseudo-terminal through `script`; skipping the terminal half of this test");
        return;
    };
    assert!(
        coloured.contains('\u{1b}'),
        "a terminal without NO_COLOR should get colour, so this test can tell:\n{coloured}"
    );
    let plain = check_on_a_terminal(&scratch, &file, true).expect("script worked a moment ago");
    assert!(
        !plain.contains('\u{1b}'),
        "escape with NO_COLOR=1:\n{plain}"
    );
}

#[test]
fn a_reader_that_stops_early_does_not_crash_edgec() {
    use std::io::{BufRead, BufReader};
    let scratch = Scratch::new("closed-pipe");
    let lines: String = (0..5000).map(|index| format!("x{index} = 1\n")).collect();
    let file = scratch.file("many.edge", lines);
    for format in ["json", "human"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgec"))
            .args(["check", "--format", format])
            .arg(&file)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("edgec starts");
        // Like `edgec check … | head -1`: read one line, then close both pipes.
        let mut first_line = String::new();
        let reader: Box<dyn std::io::Read> = match format {
            "json" => Box::new(child.stdout.take().expect("stdout")),
            _ => Box::new(child.stderr.take().expect("stderr")),
        };
        BufReader::new(reader)
            .read_line(&mut first_line)
            .expect("one line");
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().expect("edgec ends");
        assert!(!first_line.is_empty());
        assert_eq!(
            status.code(),
            Some(1),
            "{format}: a closed pipe must not crash edgec ({status:?})"
        );
    }
}

#[test]
fn a_boot_test_timeout_that_is_not_a_positive_duration_is_a_usage_error() {
    let scratch = Scratch::new("boot-test-timeout");
    let image = scratch.path.display().to_string();
    for timeout in [
        "inf",
        "-1",
        "nan",
        "-5s",
        "150",
        "0s",
        "99999999999999999999999s",
    ] {
        // `--timeout=VALUE`, so that `-1` reaches the parser as a value rather than an option.
        let argument = format!("--timeout={timeout}");
        let output = edgec(&scratch.path, &["image", "boot-test", &argument, &image]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(exit_code(&output), 2, "--timeout {timeout}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "invalid value '{timeout}' for '--timeout <DURATION>'"
            )),
            "--timeout {timeout}: {stderr}"
        );
        assert!(
            stderr.contains("such as `90s`"),
            "--timeout {timeout}: {stderr}"
        );
    }
}

#[test]
fn a_boot_test_timeout_with_a_unit_is_accepted() {
    // The directory holds no image, so the command gets as far as copying its disk and stops
    // there: past argument parsing, with the I/O failure's own message.
    let scratch = Scratch::new("boot-test-timeout-accepted");
    let image = scratch.path.display().to_string();
    for timeout in ["10s", "2m", "1m 30s"] {
        let output = edgec(
            &scratch.path,
            &["image", "boot-test", "--timeout", timeout, &image],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(exit_code(&output), 2, "--timeout {timeout}: {stderr}");
        assert!(
            !stderr.contains("invalid value") && stderr.contains("cannot copy"),
            "--timeout {timeout}: {stderr}"
        );
    }
}

#[test]
fn links_back_into_the_directory_being_read_are_an_error_not_an_endless_walk() {
    // Two `ln -s .` links used to make the walk branch twice at every level until path names
    // grew too long: exponential time before any output.
    let scratch = Scratch::new("directory-link-loop");
    let fleet = scratch.path.join("fleet");
    std::fs::create_dir_all(&fleet).expect("a fleet directory");
    std::fs::write(fleet.join("site.edge"), "param threshold: int = 3\n").expect("a source");
    std::os::unix::fs::symlink(".", fleet.join("a")).expect("link a");
    std::os::unix::fs::symlink(".", fleet.join("b")).expect("link b");
    for command in ["check", "fmt"] {
        let started = Instant::now();
        let output = edgec(&scratch.path, &[command, "fleet"]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "edgec {command} took {:?}",
            started.elapsed()
        );
        assert_eq!(exit_code(&output), 2, "edgec {command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("`fleet/a` links back to `fleet`"),
            "edgec {command}: {stderr}"
        );
    }
}

#[test]
fn linked_directories_are_read_and_dangling_links_that_are_not_sources_are_skipped() {
    let scratch = Scratch::new("directory-links");
    let common = scratch.path.join("common");
    let fleet = scratch.path.join("fleet");
    std::fs::create_dir_all(&common).expect("a common directory");
    std::fs::create_dir_all(&fleet).expect("a fleet directory");
    std::fs::write(common.join("shared.edge"), "param shared: int = 1\n").expect("a source");
    std::fs::write(fleet.join("site.edge"), "param site: int = shared\n").expect("a source");
    std::os::unix::fs::symlink("../common", fleet.join("common")).expect("link a directory");
    std::os::unix::fs::symlink("nowhere", fleet.join("README")).expect("a dangling link");
    let output = edgec(&scratch.path, &["check", "fleet"]);
    assert_eq!(
        exit_code(&output),
        0,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A dangling link named like a source is reported, not silently skipped.
    std::os::unix::fs::symlink("nowhere", fleet.join("gone.edge")).expect("a dangling source");
    let output = edgec(&scratch.path, &["check", "fleet"]);
    assert_eq!(exit_code(&output), 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read `fleet/gone.edge`"), "{stderr}");
}
