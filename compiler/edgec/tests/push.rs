//! `edgec push`, `edgec build --push` and `edgec build --resolve-digests` against the real
//! registry (Debian's docker-registry, TLS from a test CA, an htpasswd user).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use edge_registry::{Credentials, RegistryClient, RegistryOptions, parse_reference};
use test_registry::{Authority, Registry};

fn edgec() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgec"));
    command
        .env("NO_COLOR", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("EDGEC_REGISTRY_USER")
        .env_remove("EDGEC_REGISTRY_PASSWORD");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "edgec failed: {}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

struct Fixture {
    dir: tempfile::TempDir,
    registry: Registry,
    key: PathBuf,
    password_file: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        if !test_registry::available() {
            println!(
                "SKIPPED: {test}: {} is not installed",
                test_registry::PROGRAM
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::start(
            &dir.path().join("registry"),
            Arc::new(Authority::new("edgec push test CA")),
        );
        let key = dir.path().join("signing.pem");
        succeeded(&edgec().arg("keygen").arg("-o").arg(&key).output().unwrap());
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{}\n", test_registry::PASSWORD)).unwrap();
        Some(Self {
            dir,
            registry,
            key,
            password_file,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The registry options, as `edgec` arguments.
    fn registry_args<'a>(&'a self, command: &'a mut Command) -> &'a mut Command {
        command
            .arg("--registry-ca")
            .arg(self.registry.ca_path())
            .args(["--registry-user", test_registry::USER])
            .arg("--registry-password-file")
            .arg(&self.password_file)
    }

    fn client(&self) -> RegistryClient {
        RegistryClient::new(RegistryOptions {
            ca_pem: Some(self.registry.authority().ca_pem().as_bytes().to_vec()),
            credentials: Some(Credentials {
                user: test_registry::USER.to_owned(),
                password: test_registry::PASSWORD.to_owned(),
            }),
            ..RegistryOptions::default()
        })
        .unwrap()
    }

    /// A project of two deployments whose module `sensor` has `image`.
    fn project(&self, name: &str, image: &str) -> PathBuf {
        let project = self.path().join(name);
        let rootfs = project.join("images/sensor/bin");
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::write(rootfs.join("sensor"), b"#!/bin/sh\necho reading\n").unwrap();
        std::fs::write(
            project.join("plant.edge"),
            format!(
                r#"hardware gateway {{
  arch = amd64
  memory = 2GiB
  compatible = "example,gateway,v1"
}}

module sensor {{
  image = {image}
  version = "1.2"
}}

deployment plant {{
  target = gateway
  version = 7
  modules = [sensor]
}}

deployment depot {{
  target = gateway
  version = 3
  modules = [sensor]
}}
"#
            ),
        )
        .unwrap();
        project
    }

    fn build(&self, project: &Path, output: &str) -> Command {
        let mut command = edgec();
        command
            .current_dir(project)
            .args(["build", "plant.edge", "-o", output, "--key"])
            .arg(&self.key);
        command
    }
}

#[test]
fn push_uploads_a_bundle_once_and_says_what_it_sent() {
    let Some(fixture) = Fixture::new("edgec push") else {
        return;
    };
    let project = fixture.project("local", r#"local("images/sensor")"#);
    succeeded(&fixture.build(&project, "build").output().unwrap());
    let bundle = project.join("build/plant.edgebundle");
    let reference = format!("{}/fleet/plant:v7", fixture.registry.host());

    let stdout = succeeded(
        &fixture
            .registry_args(edgec().arg("push").arg(&bundle).arg(&reference))
            .output()
            .unwrap(),
    );
    let digest = fixture
        .client()
        .resolve(&parse_reference(&reference).unwrap())
        .unwrap();
    assert!(
        stdout.contains(&format!("digest  {}", digest.oci())),
        "{stdout}"
    );
    assert!(stdout.contains("already present"), "{stdout}");
    assert!(!stdout.contains(" 0 uploaded"), "{stdout}");

    // Credentials from the environment, and nothing to upload the second time.
    let again = succeeded(
        &edgec()
            .arg("push")
            .arg(&bundle)
            .arg(&reference)
            .arg("--registry-ca")
            .arg(fixture.registry.ca_path())
            .env("EDGEC_REGISTRY_USER", test_registry::USER)
            .env("EDGEC_REGISTRY_PASSWORD", test_registry::PASSWORD)
            .output()
            .unwrap(),
    );
    assert!(again.contains("blobs   0 uploaded (0 bytes)"), "{again}");
    assert!(again.contains(&digest.oci()), "{again}");
}

#[test]
fn build_push_tags_each_deployment_with_its_name() {
    let Some(fixture) = Fixture::new("edgec build --push") else {
        return;
    };
    let project = fixture.project("local", r#"local("images/sensor")"#);
    let repository = format!("{}/fleet", fixture.registry.host());
    let stdout = succeeded(
        &fixture
            .registry_args(
                fixture
                    .build(&project, "build")
                    .arg("--push")
                    .arg(&repository),
            )
            .output()
            .unwrap(),
    );
    for deployment in ["plant", "depot"] {
        let reference = parse_reference(&format!("{repository}:{deployment}")).unwrap();
        let head = fixture.client().fetch_head(&reference).unwrap();
        assert_eq!(head.manifest.deployment, deployment);
        assert!(stdout.contains(&head.manifest_digest.oci()), "{stdout}");
        assert_eq!(
            head.bundle_json,
            edge_bundle_head(&project.join(format!("build/{deployment}.edgebundle")))
        );
    }
    // One tag for two deployments is refused before anything is built.
    let output = fixture
        .registry_args(
            fixture
                .build(&project, "other")
                .args(["--push"])
                .arg(format!("{repository}:v1")),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("one tag for 2 deployments"));
    assert!(!project.join("other").exists());
}

/// The `bundle.json` bytes of a bundle file.
fn edge_bundle_head(bundle: &Path) -> Vec<u8> {
    let inspection = edge_bundle::inspect_bundle(std::fs::File::open(bundle).unwrap()).unwrap();
    inspection.manifest.to_canonical_bytes().unwrap()
}

#[test]
fn push_failures_exit_non_zero_with_what_to_fix() {
    let Some(fixture) = Fixture::new("edgec push failures") else {
        return;
    };
    let project = fixture.project("local", r#"local("images/sensor")"#);
    succeeded(&fixture.build(&project, "build").output().unwrap());
    let bundle = project.join("build/plant.edgebundle");
    let good = format!("{}/fleet/plant:v7", fixture.registry.host());

    let failure = |command: &mut Command, code: i32, needle: &str| {
        let output = command.output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stderr.contains(test_registry::PASSWORD), "{stderr}");
        stderr
    };
    failure(
        fixture.registry_args(edgec().arg("push").arg(&bundle).arg("fleet/plant:v7")),
        2,
        "must name the registry",
    );
    failure(
        fixture.registry_args(edgec().arg("push").arg(&bundle).arg("localhost:1/Fleet:v7")),
        2,
        "invalid registry reference",
    );
    failure(
        edgec()
            .arg("push")
            .arg(&bundle)
            .arg(&good)
            .arg("--registry-ca")
            .arg(fixture.registry.ca_path())
            .args(["--registry-user", test_registry::USER])
            .arg("--registry-password-file")
            .arg(fixture.path().join("missing")),
        2,
        "cannot read the registry password file",
    );
    failure(
        edgec()
            .arg("push")
            .arg(&bundle)
            .arg(&good)
            .args(["--registry-user", test_registry::USER]),
        2,
        "needs a password",
    );
    let wrong = fixture.path().join("wrong");
    std::fs::write(&wrong, "not-it\n").unwrap();
    failure(
        edgec()
            .arg("push")
            .arg(&bundle)
            .arg(&good)
            .arg("--registry-ca")
            .arg(fixture.registry.ca_path())
            .args(["--registry-user", test_registry::USER])
            .arg("--registry-password-file")
            .arg(&wrong),
        2,
        "refused the credentials",
    );
    failure(
        fixture.registry_args(edgec().arg("push").arg(&bundle).arg(format!(
            "localhost:{}/fleet/plant:v7",
            test_registry::free_port()
        ))),
        2,
        "cannot reach registry",
    );
    failure(
        edgec()
            .arg("push")
            .arg(&bundle)
            .arg(&good)
            .arg("--registry-ca")
            .arg(&bundle),
        2,
        "holds no PEM certificate",
    );
    let junk = fixture.path().join("junk.edgebundle");
    std::fs::write(&junk, b"not a bundle").unwrap();
    failure(
        fixture.registry_args(edgec().arg("push").arg(&junk).arg(&good)),
        1,
        "cannot push",
    );
    failure(
        fixture.registry_args(
            edgec()
                .arg("push")
                .arg(fixture.path().join("none.edgebundle"))
                .arg(&good),
        ),
        2,
        "cannot read",
    );
}

#[test]
fn tag_only_images_are_refused_unless_resolved_to_their_digest() {
    let Some(fixture) = Fixture::new("edgec build --resolve-digests") else {
        return;
    };
    // An image in the registry: the packaged image of a local build, pushed as an image.
    let local = fixture.project("local", r#"local("images/sensor")"#);
    succeeded(&fixture.build(&local, "build").output().unwrap());
    let layout = fixture.path().join("layout");
    let mut archive =
        tar::Archive::new(std::fs::File::open(local.join("build/plant.edgebundle")).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        if let Ok(relative) = path.strip_prefix("payload/images/sensor") {
            let target = layout.join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            entry.unpack(target).unwrap();
        }
    }
    let image = format!("{}/modules/sensor:1.2", fixture.registry.host());
    let pushed = fixture
        .client()
        .push_image_layout(&layout, &parse_reference(&image).unwrap())
        .unwrap();

    let project = fixture.project("tagged", &format!("\"{image}\""));
    let output = fixture.build(&project, "build").output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--resolve-digests"), "{stderr}");
    assert!(stderr.contains(&image), "{stderr}");
    assert!(!project.join("build/plant.edgebundle").exists());

    let stdout = succeeded(
        &fixture
            .registry_args(fixture.build(&project, "build").arg("--resolve-digests"))
            .output()
            .unwrap(),
    );
    let pinned = format!("{image}@{}", pushed.manifest_digest.oci());
    assert!(
        stdout.contains(&format!(
            "resolved {image} to {}",
            pushed.manifest_digest.oci()
        )),
        "{stdout}"
    );
    for deployment in ["plant", "depot"] {
        let inspection = edge_bundle::inspect_bundle(
            std::fs::File::open(project.join(format!("build/{deployment}.edgebundle"))).unwrap(),
        )
        .unwrap();
        assert_eq!(inspection.manifest.registry_images.len(), 1);
        assert_eq!(inspection.manifest.registry_images[0].reference, pinned);
        let manifest =
            std::fs::read_to_string(project.join(format!("build/{deployment}/deployment.json")))
                .unwrap();
        assert!(manifest.contains(&pinned), "{manifest}");
    }
    let requests = fixture.registry.requests();
    assert_eq!(
        requests
            .iter()
            .filter(|request| request.uri == "/v2/modules/sensor/manifests/1.2"
                && request.method == "HEAD")
            .count(),
        1,
        "one lookup for the two deployments"
    );

    // --allow-unpinned builds, saying what it leaves unpinned.
    let output = fixture
        .build(&project, "build")
        .arg("--allow-unpinned")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("unpinned"));

    // A tag that is not there, and a registry that is not there.
    let missing = fixture.project(
        "missing",
        &format!("\"{}/modules/sensor:9.9\"", fixture.registry.host()),
    );
    let output = fixture
        .registry_args(fixture.build(&missing, "build").arg("--resolve-digests"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("not found"),
        "{}",
        text(&output.stderr)
    );
    let unreachable = fixture.project(
        "unreachable",
        &format!(
            "\"localhost:{}/modules/sensor:1.2\"",
            test_registry::free_port()
        ),
    );
    let output = fixture
        .registry_args(
            fixture
                .build(&unreachable, "build")
                .arg("--resolve-digests"),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("cannot reach"),
        "{}",
        text(&output.stderr)
    );
    assert!(!unreachable.join("build").exists());
}
