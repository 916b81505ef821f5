//! `edgec build`, `keygen`, `verify` and `inspect`, run as CI runs them: manifests validated with
//! a real JSON Schema validator against IoT Edge's schemas, bundles verified, builds repeated
//! byte for byte, and bad inputs refused with nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn edgec() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgec"));
    command.env("NO_COLOR", "1").env_remove("SOURCE_DATE_EPOCH");
    command
}

fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) -> Output {
    command.output().expect("edgec runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn keygen(directory: &Path) -> PathBuf {
    let key = directory.join("signing.pem");
    let output = run(edgec().arg("keygen").arg("-o").arg(&key));
    assert!(output.status.success(), "{}", text(&output.stderr));
    key
}

/// Every file below `directory`, relative, sorted: what a build left behind.
fn files_below(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(
                    path.strip_prefix(directory)
                        .expect("below the directory")
                        .to_path_buf(),
                );
            }
        }
    }
    files.sort();
    files
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = project_root()
        .join("testdata/schemas/azure-iot-edge")
        .join(name);
    let schema: Value = serde_json::from_slice(
        &std::fs::read(&path).expect("the IoT Edge schemas in testdata/schemas"),
    )
    .expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}:\n{}", errors.join("\n"));
}

#[test]
fn the_manifest_of_every_recipe_validates_against_the_iot_edge_schemas() {
    let deployment_schema = schema("azure-iot-edge-deployment-2.0.json");
    let agent_schema = schema("azure-iot-edgeagent-deployment-1.1.json");
    let hub_schema = schema("azure-iot-edgehub-deployment-1.2.json");
    let recipes = project_root().join("recipes");
    let mut manifests = 0;
    for entry in std::fs::read_dir(&recipes).expect("recipes") {
        let recipe = entry.expect("an entry").path();
        if !recipe.is_dir() || recipe.ends_with("hardware") {
            continue;
        }
        let output_directory = tempfile::tempdir().expect("a temporary directory");
        let mut command = edgec();
        for variable in credential_variables(&recipe) {
            command.env(variable, "from-the-build-environment");
        }
        let output = run(command
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(output_directory.path()));
        assert!(
            output.status.success(),
            "{}: {}",
            recipe.display(),
            text(&output.stderr)
        );
        for file in files_below(output_directory.path()) {
            let manifest: Value = serde_json::from_slice(
                &std::fs::read(output_directory.path().join(&file)).expect("written"),
            )
            .expect("deployment.json is JSON");
            let what = format!("{} {}", recipe.display(), file.display());
            assert_valid(&deployment_schema, &manifest, &what);
            let content = &manifest["modulesContent"];
            if content["$edgeAgent"]["properties.desired"]["schemaVersion"] == "1.1" {
                // The system-module schemas describe a document holding only their own section.
                assert_valid(
                    &agent_schema,
                    &serde_json::json!({ "$edgeAgent": content["$edgeAgent"] }),
                    &what,
                );
            }
            if content["$edgeHub"]["properties.desired"]["schemaVersion"] == "1.2" {
                assert_valid(
                    &hub_schema,
                    &serde_json::json!({ "$edgeHub": content["$edgeHub"] }),
                    &what,
                );
            }
            manifests += 1;
        }
    }
    assert!(
        manifests >= 3,
        "expected a manifest per recipe deployment, validated {manifests}"
    );
}

/// The environment variables a recipe's `env("…")` credentials read.
fn credential_variables(recipe: &Path) -> Vec<String> {
    let mut variables = Vec::new();
    for file in files_below(recipe) {
        let source = std::fs::read_to_string(recipe.join(&file)).unwrap_or_default();
        for (_, rest) in source
            .match_indices("env(\"")
            .map(|(index, _)| ((), &source[index + 5..]))
        {
            if let Some(end) = rest.find('"') {
                variables.push(rest[..end].to_owned());
            }
        }
    }
    variables
}

/// A small project with a packaged local image, a long create-options block and a registry.
fn write_project(directory: &Path) {
    let rootfs = directory.join("images/sensor");
    std::fs::create_dir_all(rootfs.join("bin")).expect("rootfs");
    std::fs::write(rootfs.join("bin/sensor"), b"#!/bin/sh\necho reading\n").expect("rootfs file");
    std::fs::write(rootfs.join("config.toml"), b"interval = 5\n").expect("rootfs file");
    let labels: String = (0..40)
        .map(|index| {
            format!(
                "      \"com.example.label{index:02}\" = \"a label long enough to need chunking\"\n"
            )
        })
        .collect();
    let source = format!(
        r#"hardware gateway {{
  arch = amd64
  memory = 2GiB
  compatible = "example,gateway,v1"
}}

module sensor {{
  image = local("images/sensor")
  version = "1.2"
  output readings
  create_options {{
    Labels {{
{labels}    }}
  }}
}}

deployment plant {{
  target = gateway
  version = 7
  modules = [sensor]
  route upstream = "FROM /messages/modules/sensor/outputs/readings INTO $upstream"
  registry private {{
    address = "registry.example.com"
    username = "builder"
    password = env("EDGEC_TEST_REGISTRY_PASSWORD")
  }}
}}
"#
    );
    std::fs::write(directory.join("plant.edge"), source).expect("source");
}

fn build_project(project: &Path, output: &Path, key: &Path) -> Output {
    run(edgec()
        .current_dir(project)
        .args(["build", "plant.edge", "-o"])
        .arg(output)
        .arg("--key")
        .arg(key)
        .env("EDGEC_TEST_REGISTRY_PASSWORD", "hunter2")
        .env("SOURCE_DATE_EPOCH", "1700000000"))
}

#[test]
fn a_bundle_with_a_packaged_image_verifies_and_long_create_options_are_chunked() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let project = work.path().join("project");
    write_project(&project);
    let output = build_project(&project, &work.path().join("out"), &key);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let manifest: Value = serde_json::from_slice(
        &std::fs::read(work.path().join("out/plant/deployment.json")).expect("manifest"),
    )
    .expect("JSON");
    let settings = &manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["sensor"]
        ["settings"];
    let mut chunks = vec![
        settings["createOptions"]
            .as_str()
            .expect("first chunk")
            .to_owned(),
    ];
    for index in 1..100 {
        match settings[format!("createOptions{index:02}")].as_str() {
            Some(chunk) => chunks.push(chunk.to_owned()),
            None => break,
        }
    }
    assert!(
        chunks.len() >= 2,
        "the labels need more than one chunk: {settings}"
    );
    assert!(chunks.iter().all(|chunk| chunk.chars().count() <= 512));
    let options: Value = serde_json::from_str(&chunks.concat()).expect("the chunks join into JSON");
    assert_eq!(
        options["Labels"]["com.example.label39"],
        "a label long enough to need chunking"
    );
    assert_eq!(settings["image"], "edgec.local/sensor:1.2");
    let credentials = &manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]
        ["registryCredentials"];
    assert_eq!(credentials["private"]["password"], "hunter2");

    let bundle = work.path().join("out/plant.edgebundle");
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let verified = run(edgec()
        .arg("verify")
        .arg(&bundle)
        .arg("--trust")
        .arg(&public));
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let inspected = run(edgec().arg("inspect").arg(&bundle).arg("--json"));
    assert!(inspected.status.success(), "{}", text(&inspected.stderr));
    let inspection: Value =
        serde_json::from_slice(&inspected.stdout).expect("inspect --json is JSON");
    assert_eq!(inspection["manifest"]["version"], 7);
    assert_eq!(inspection["manifest"]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(inspection["manifest"]["images"][0]["module"], "sensor");

    let stranger = work.path().join("stranger.pem");
    assert!(
        run(edgec().arg("keygen").arg("-o").arg(&stranger))
            .status
            .success()
    );
    let refused = run(edgec()
        .arg("verify")
        .arg(&bundle)
        .arg("--trust")
        .arg(format!("{}.pub", stranger.display())));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("NOT valid"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn building_twice_from_different_places_and_times_gives_identical_bytes() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let first = work.path().join("first");
    write_project(&first);
    let first_output = build_project(&first, &work.path().join("out-first"), &key);
    assert!(
        first_output.status.success(),
        "{}",
        text(&first_output.stderr)
    );

    // The second copy is written later, in another order, with other modification times, and
    // built with the environment given in another order.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = work.path().join("second");
    std::fs::create_dir_all(second.join("images/sensor/bin")).expect("rootfs");
    std::fs::write(second.join("images/sensor/config.toml"), b"interval = 5\n")
        .expect("rootfs file");
    std::fs::write(
        second.join("images/sensor/bin/sensor"),
        b"#!/bin/sh\necho reading\n",
    )
    .expect("rootfs file");
    write_project(&second);
    let touched = std::fs::File::options()
        .write(true)
        .open(second.join("plant.edge"))
        .expect("source");
    touched
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .expect("set the modification time");
    let second_output = run(edgec()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("EDGEC_TEST_REGISTRY_PASSWORD", "hunter2")
        .env("UNRELATED_VARIABLE", "changes nothing")
        .current_dir(&second)
        .args(["build", "plant.edge", "-o"])
        .arg(work.path().join("out-second"))
        .arg("--key")
        .arg(&key));
    assert!(
        second_output.status.success(),
        "{}",
        text(&second_output.stderr)
    );

    for file in ["plant.edgebundle", "plant/deployment.json"] {
        let first_bytes =
            std::fs::read(work.path().join("out-first").join(file)).expect("first build");
        let second_bytes =
            std::fs::read(work.path().join("out-second").join(file)).expect("second build");
        assert!(
            first_bytes == second_bytes,
            "{file} differs between the two builds"
        );
    }
}

#[test]
fn at_scale_wraps_the_manifest_in_content() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let quickstart = project_root().join("recipes/quickstart");
    let output = run(edgec()
        .arg("build")
        .arg(&quickstart)
        .args(["--emit", "at-scale", "-o"])
        .arg(work.path()));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(work.path().join("quickstart/deployment.json")).expect("manifest"),
    )
    .expect("JSON");
    assert!(
        manifest["content"]["modulesContent"]["$edgeAgent"].is_object(),
        "{manifest}"
    );
    assert!(manifest.get("modulesContent").is_none());
}

/// Runs a build expected to fail and checks that it wrote nothing.
fn assert_fails_without_output(
    command: &mut Command,
    output_directory: &Path,
    status: i32,
    message: &str,
) {
    let output = run(command);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(status), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in:\n{stderr}"
    );
    assert_eq!(
        files_below(output_directory),
        Vec::<PathBuf>::new(),
        "a failed build left files behind"
    );
}

#[test]
fn bad_keys_and_bad_images_are_refused_with_nothing_written() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let project = work.path().join("project");
    write_project(&project);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("output directory");
    let base = || {
        let mut command = edgec();
        command
            .current_dir(&project)
            .args(["build", "plant.edge", "-o"])
            .arg(&out)
            .env("EDGEC_TEST_REGISTRY_PASSWORD", "x");
        command
    };

    assert_fails_without_output(
        base().arg("--key").arg(work.path().join("missing.pem")),
        &out,
        2,
        "does not exist",
    );
    let garbage = work.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").expect("garbage key");
    assert_fails_without_output(base().arg("--key").arg(&garbage), &out, 2, "PKCS#8");
    assert_fails_without_output(
        base()
            .arg("--key")
            .arg(&key)
            .args(["--deployment", "nowhere"]),
        &out,
        2,
        "no deployment named",
    );
    assert_fails_without_output(
        base()
            .arg("--key")
            .arg(&key)
            .env_remove("EDGEC_TEST_REGISTRY_PASSWORD"),
        &out,
        2,
        "EDGEC_TEST_REGISTRY_PASSWORD",
    );
    // A key path that cannot be read as a file (here a directory) is an I/O failure too.
    assert_fails_without_output(
        base().arg("--key").arg(work.path()),
        &out,
        2,
        "cannot read key file",
    );

    // An absolute link is fine inside an image (it resolves in the container); one that climbs
    // out of the directory is not.
    std::os::unix::fs::symlink("../../../etc/passwd", project.join("images/sensor/escape"))
        .expect("symlink");
    assert_fails_without_output(
        base().arg("--key").arg(&key),
        &out,
        1,
        "escapes the image directory",
    );
    std::fs::remove_file(project.join("images/sensor/escape")).expect("remove symlink");
    let socket = std::os::unix::net::UnixListener::bind(project.join("images/sensor/control.sock"))
        .expect("socket");
    assert_fails_without_output(base().arg("--key").arg(&key), &out, 1, "control.sock");
    drop(socket);
}

#[test]
fn an_output_directory_that_cannot_be_created_exits_2_and_errors_in_the_sources_exit_1() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let quickstart = project_root().join("recipes/quickstart");
    let blocker = work.path().join("a-file");
    std::fs::write(&blocker, "not a directory").expect("a file in the way");
    let output = run(edgec()
        .arg("build")
        .arg(&quickstart)
        .arg("-o")
        .arg(blocker.join("build"))
        .arg("--key")
        .arg(&key));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot create"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&blocker).expect("the file is still there"),
        "not a directory"
    );

    let broken = work.path().join("broken");
    std::fs::create_dir_all(&broken).expect("a project directory");
    std::fs::write(
        broken.join("site.edge"),
        "deployment site {\n  target = nowhere\n  version = 1\n  modules = []\n}\n",
    )
    .expect("a source with an error");
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("an output directory");
    assert_fails_without_output(
        edgec()
            .arg("build")
            .arg(&broken)
            .arg("-o")
            .arg(&out)
            .arg("--key")
            .arg(&key),
        &out,
        1,
        "nothing was built",
    );
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).expect("key");
    let again = run(edgec().arg("keygen").arg("-o").arg(&key));
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        std::fs::read(&key).expect("key"),
        before,
        "keygen overwrote a key"
    );
}

/// A SoftHSM2 token in a private directory, with an Ed25519 key pair made on the token.
struct SoftToken {
    directory: tempfile::TempDir,
}

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

impl SoftToken {
    fn create() -> SoftToken {
        assert!(
            Path::new(SOFTHSM_MODULE).exists(),
            "{SOFTHSM_MODULE} is missing: install softhsm2 and opensc (`.ci/setup` does)"
        );
        let directory = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(directory.path().join("tokens")).expect("token directory");
        std::fs::write(
            directory.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}/tokens\nobjectstore.backend = file\n",
                directory.path().display()
            ),
        )
        .expect("softhsm configuration");
        let token = SoftToken { directory };
        let initialised = token
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                "edgec-build",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            initialised.status.success(),
            "{}",
            text(&initialised.stderr)
        );
        let generated = token
            .command("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                "edgec-build",
                "--login",
                "--pin",
                "1234",
            ])
            .args([
                "--keypairgen",
                "--key-type",
                "EC:edwards25519",
                "--label",
                "release",
            ])
            .output()
            .expect("pkcs11-tool runs");
        assert!(generated.status.success(), "{}", text(&generated.stderr));
        let exported = token
            .command("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                "edgec-build",
                "--read-object",
                "--type",
                "pubkey",
            ])
            .args(["--label", "release", "-o"])
            .arg(token.public_key())
            .output()
            .expect("pkcs11-tool runs");
        assert!(exported.status.success(), "{}", text(&exported.stderr));
        token
    }

    fn configuration(&self) -> PathBuf {
        self.directory.path().join("softhsm2.conf")
    }

    fn public_key(&self) -> PathBuf {
        self.directory.path().join("release.pub")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SOFTHSM2_CONF", self.configuration());
        command
    }
}

#[test]
fn a_bundle_signed_in_a_pkcs11_token_verifies_and_a_wrong_pin_writes_nothing() {
    let token = SoftToken::create();
    let work = tempfile::tempdir().expect("a temporary directory");
    let quickstart = project_root().join("recipes/quickstart");
    let out = work.path().join("out");
    let signed = run(edgec()
        .env("SOFTHSM2_CONF", token.configuration())
        .env("EDGEC_PKCS11_PIN", "1234")
        .arg("build")
        .arg(&quickstart)
        .arg("-o")
        .arg(&out)
        .args([
            "--pkcs11",
            "pkcs11:token=edgec-build;object=release",
            "--pkcs11-module",
            SOFTHSM_MODULE,
        ]));
    assert!(signed.status.success(), "{}", text(&signed.stderr));
    let verified = run(edgec()
        .arg("verify")
        .arg(out.join("quickstart.edgebundle"))
        .arg("--trust")
        .arg(token.public_key()));
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    let refused_out = work.path().join("refused");
    std::fs::create_dir_all(&refused_out).expect("output directory");
    for (pin, uri, message) in [
        (
            "0000",
            "pkcs11:token=edgec-build;object=release",
            "wrong PIN",
        ),
        (
            "1234",
            "pkcs11:token=edgec-build;object=absent",
            "no ed25519",
        ),
        (
            "1234",
            "pkcs11:token=no-such-token;object=release",
            "no PKCS#11 token",
        ),
    ] {
        assert_fails_without_output(
            edgec()
                .env("SOFTHSM2_CONF", token.configuration())
                .env("EDGEC_PKCS11_PIN", pin)
                .arg("build")
                .arg(&quickstart)
                .arg("-o")
                .arg(&refused_out)
                .args(["--pkcs11", uri, "--pkcs11-module", SOFTHSM_MODULE]),
            &refused_out,
            2,
            message,
        );
    }
}

#[test]
fn a_malformed_source_date_epoch_is_refused_with_nothing_written() {
    use std::os::unix::ffi::OsStrExt;
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let project = work.path().join("project");
    write_project(&project);
    let output_dir = work.path().join("out");
    // A non-UTF-8 value used to be read as 0, a signed one as the number.
    for value in [std::ffi::OsStr::from_bytes(b"17\xff"), "+5".as_ref()] {
        let output = run(edgec()
            .current_dir(&project)
            .args(["build", "plant.edge", "-o"])
            .arg(&output_dir)
            .arg("--key")
            .arg(&key)
            .env("EDGEC_TEST_REGISTRY_PASSWORD", "hunter2")
            .env("SOURCE_DATE_EPOCH", value));
        assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
        assert!(
            text(&output.stderr).contains("SOURCE_DATE_EPOCH must be a whole number"),
            "{}",
            text(&output.stderr)
        );
        assert_eq!(files_below(&output_dir), Vec::<PathBuf>::new());
    }
}

#[test]
fn an_expiry_is_signed_reproducibly_shown_by_inspect_and_bad_ones_write_nothing() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let key = keygen(work.path());
    let project = work.path().join("project");
    write_project(&project);
    let build = |output: &Path, expires: &str| {
        run(edgec()
            .current_dir(&project)
            .args(["build", "plant.edge", "-o"])
            .arg(output)
            .arg("--key")
            .arg(&key)
            .args(["--expires", expires])
            .env("EDGEC_TEST_REGISTRY_PASSWORD", "hunter2")
            .env("SOURCE_DATE_EPOCH", "1700000000"))
    };
    // A lifetime counts from SOURCE_DATE_EPOCH, so two builds give the same bytes, and the
    // same instant written as a time gives them too.
    let first = build(&work.path().join("first"), "30days");
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = build(&work.path().join("second"), "2023-12-14T22:13:20Z");
    assert!(second.status.success(), "{}", text(&second.stderr));
    let first_bytes = std::fs::read(work.path().join("first/plant.edgebundle")).expect("bundle");
    let second_bytes = std::fs::read(work.path().join("second/plant.edgebundle")).expect("bundle");
    assert!(
        first_bytes == second_bytes,
        "the same expiry gave different bytes"
    );
    let without = build_project(&project, &work.path().join("without"), &key);
    assert!(without.status.success(), "{}", text(&without.stderr));
    let without_bytes =
        std::fs::read(work.path().join("without/plant.edgebundle")).expect("bundle");
    assert!(
        first_bytes != without_bytes,
        "the expiry is not in the bundle"
    );

    let bundle = work.path().join("first/plant.edgebundle");
    let inspected = run(edgec().arg("inspect").arg(&bundle));
    assert!(inspected.status.success(), "{}", text(&inspected.stderr));
    assert!(
        text(&inspected.stdout).contains("expires       2023-12-14T22:13:20Z\n"),
        "{}",
        text(&inspected.stdout)
    );
    let inspected = run(edgec().arg("inspect").arg("--json").arg(&bundle));
    let document: Value = serde_json::from_slice(&inspected.stdout).expect("JSON");
    assert_eq!(document["manifest"]["expires"], "2023-12-14T22:13:20Z");
    let inspected = run(edgec()
        .arg("inspect")
        .arg(work.path().join("without/plant.edgebundle")));
    assert!(text(&inspected.stdout).contains("expires       never\n"));
    let verified = run(edgec()
        .arg("verify")
        .arg(&bundle)
        .arg("--trust")
        .arg(format!("{}.pub", key.display())));
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    let output_dir = work.path().join("refused");
    for (expires, message) in [
        ("soon", "neither a duration"),
        ("0s", "a lifetime of 0"),
        ("2030-01-31T00:00:00+01:00", "neither a duration"),
        ("2030-02-30T00:00:00Z", "not an RFC 3339 UTC time"),
        (
            "2023-11-14T22:13:20Z",
            "--expires 2023-11-14T22:13:20Z is not after the bundle's creation time 2023-11-14T22:13:20Z",
        ),
        (
            "2001-01-01T00:00:00Z",
            "is not after the bundle's creation time",
        ),
    ] {
        assert_fails_without_output(
            edgec()
                .current_dir(&project)
                .args(["build", "plant.edge", "-o"])
                .arg(&output_dir)
                .arg("--key")
                .arg(&key)
                .args(["--expires", expires])
                .env("EDGEC_TEST_REGISTRY_PASSWORD", "hunter2")
                .env("SOURCE_DATE_EPOCH", "1700000000"),
            &output_dir,
            2,
            message,
        );
    }
    // Without SOURCE_DATE_EPOCH a lifetime has nothing reproducible to count from.
    assert_fails_without_output(
        edgec()
            .current_dir(&project)
            .args(["build", "plant.edge", "-o"])
            .arg(&output_dir)
            .arg("--key")
            .arg(&key)
            .args(["--expires", "90days"])
            .env("EDGEC_TEST_REGISTRY_PASSWORD", "hunter2"),
        &output_dir,
        2,
        "--expires 90days counts from the bundle's creation time, SOURCE_DATE_EPOCH, which is not set",
    );
}
