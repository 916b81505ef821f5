//! Bundles through a real registry (Debian's docker-registry with TLS and an htpasswd user):
//! push, fetch back byte for byte, deduplication, resumed and refused downloads, and the
//! failures an operator must be told about.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Spec, assert_fetched, blob_gets, build_bundle, entries, manifest, options, registry};
use edge_bundle::Sha256Digest;
use edge_registry::{
    BundleLayout, Credentials, FetchReport, FetchedHead, PushReport, RegistryClient,
    RegistryOptions, Step, parse_reference,
};
use image_reference::Reference;
use test_registry::{Fault, Proxy, Registry};

fn spec(version: u64, second_seed: u64) -> Spec {
    Spec {
        deployment: "gateway",
        version,
        modules: vec![("alpha", 1, 300_000), ("beta", second_seed, 400_000)],
        os_bytes: 3 << 20,
    }
}

fn nothing(_: &Sha256Digest) -> Option<PathBuf> {
    None
}

fn fetch(client: &RegistryClient, reference: &Reference, into: &Path) -> FetchReport {
    let head = client.fetch_head(reference).unwrap();
    client
        .fetch_payload(&head, &nothing, into, &mut |_| {})
        .unwrap()
}

fn reference(registry_host: &str, repository_and_tag: &str) -> String {
    format!("{registry_host}/{repository_and_tag}")
}

/// The parsed reference to `repository_and_tag` in the registry (or proxy) at `host`.
fn at(host: &str, repository_and_tag: &str) -> Reference {
    parse_reference(&reference(host, repository_and_tag)).unwrap()
}

/// A started registry and a client for it with the test CA and user, or `None` when the test
/// is skipped because the registry is not installed.
fn started(dir: &Path, test: &str) -> Option<(Registry, RegistryClient)> {
    let registry = registry(dir, test)?;
    let client = RegistryClient::new(options(&registry)).unwrap();
    Some((registry, client))
}

/// What most tests start from: the gateway bundle at version 1, pushed as `fleet/gateway:v1`.
struct Pushed {
    registry: Registry,
    client: RegistryClient,
    bundle: PathBuf,
    target: Reference,
    report: PushReport,
}

/// Starts a registry and pushes the version 1 bundle to it, or `None` when the test is skipped.
fn pushed(dir: &Path, test: &str) -> Option<Pushed> {
    let (registry, client) = started(dir, test)?;
    let bundle = build_bundle(dir, &spec(1, 2));
    let target = at(&registry.host(), "fleet/gateway:v1");
    let report = client.push_bundle(&bundle, &target).unwrap();
    Some(Pushed {
        registry,
        client,
        bundle,
        target,
        report,
    })
}

#[test]
fn a_pushed_bundle_fetches_back_byte_for_byte_and_pushes_again_for_free() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Pushed {
        registry,
        client,
        bundle,
        target,
        report: first,
    }) = pushed(dir.path(), "push and fetch")
    else {
        return;
    };
    let manifest = manifest(&bundle);
    let mut digests: Vec<&str> = manifest
        .payload
        .iter()
        .map(|file| file.sha256.as_str())
        .collect();
    digests.sort();
    digests.dedup();
    assert_eq!(
        first.blobs_uploaded,
        digests.len() + 2,
        "payload, bundle.json, signatures"
    );
    assert_eq!(first.blobs_present, 0);
    let entries = entries(&bundle);
    let total: u64 = entries
        .values()
        .map(|bytes| bytes.len() as u64)
        .sum::<u64>()
        - duplicate_bytes(&manifest);
    assert_eq!(first.bytes_uploaded, total);

    let again = client.push_bundle(&bundle, &target).unwrap();
    assert_eq!(
        again.manifest_digest, first.manifest_digest,
        "a canonical manifest"
    );
    assert_eq!((again.blobs_uploaded, again.bytes_uploaded), (0, 0));
    assert_eq!(again.blobs_present, first.blobs_uploaded);
    assert_eq!(client.resolve(&target).unwrap(), first.manifest_digest);

    let into = dir.path().join("fetched");
    let head = client.fetch_head(&target).unwrap();
    assert_eq!(head.manifest_digest, first.manifest_digest);
    assert_eq!(head.bundle_json, entries["bundle.json"]);
    assert_eq!(
        head.layout.annotations["io.edgec.bundle.deployment"],
        "gateway"
    );
    let mut seen = 0;
    let report = client
        .fetch_payload(&head, &nothing, &into, &mut |progress| {
            assert!(progress.blob_bytes <= progress.blob_size);
            seen += 1;
        })
        .unwrap();
    assert!(seen > 0, "progress is reported");
    assert_eq!(report.blobs_fetched, digests.len());
    assert_eq!(report.blobs_reused, 0);
    assert_fetched(&bundle, &into);

    // A second call finds every blob in place and fetches nothing.
    let before = registry.requests().len();
    let report = client
        .fetch_payload(&head, &nothing, &into, &mut |_| {})
        .unwrap();
    assert_eq!(
        (report.blobs_fetched, report.blobs_reused),
        (0, digests.len())
    );
    assert!(blob_gets(&registry, "fleet/gateway", before).is_empty());
}

/// The bytes of payload files whose content another payload file already has.
fn duplicate_bytes(manifest: &edge_bundle::BundleManifest) -> u64 {
    let mut seen = Vec::new();
    let mut duplicate = 0;
    for file in &manifest.payload {
        if seen.contains(&file.sha256) {
            duplicate += file.size;
        } else {
            seen.push(file.sha256.clone());
        }
    }
    duplicate
}

#[test]
fn a_bundle_that_changes_one_module_uploads_and_fetches_only_that_module() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Pushed {
        registry,
        client,
        bundle: first,
        target: v1,
        ..
    }) = pushed(dir.path(), "one module changed")
    else {
        return;
    };
    let second = build_bundle(dir.path(), &spec(2, 3));
    let v2 = at(&registry.host(), "fleet/gateway:v2");
    let pushed = client.push_bundle(&second, &v2).unwrap();

    let old = manifest(&first);
    let new = manifest(&second);
    let old_digests: Vec<&String> = old.payload.iter().map(|file| &file.sha256).collect();
    let mut changed: Vec<&edge_bundle::PayloadFile> = new
        .payload
        .iter()
        .filter(|file| !old_digests.contains(&&file.sha256))
        .collect();
    changed.dedup_by(|a, b| a.sha256 == b.sha256);
    assert!(
        changed
            .iter()
            .all(|file| file.path.starts_with("payload/images/beta/")
                || file.path.starts_with("payload/os/")),
        "only the changed module (and the OS image, which the version seeds) differ: {changed:?}"
    );
    assert!(
        changed
            .iter()
            .any(|file| file.path.starts_with("payload/images/beta/"))
    );
    assert_eq!(
        pushed.blobs_uploaded,
        changed.len() + 2,
        "new payload, bundle.json, signatures"
    );
    assert_eq!(
        pushed.bytes_uploaded,
        changed.iter().map(|file| file.size).sum::<u64>()
            + entries(&second)["bundle.json"].len() as u64
            + entries(&second)["bundle.sig.json"].len() as u64
    );

    let old_dir = dir.path().join("v1");
    fetch(&client, &v1, &old_dir);
    let before = registry.requests().len();
    let head = client.fetch_head(&v2).unwrap();
    let blobs = old_dir.join("blobs/sha256");
    let have =
        move |digest: &Sha256Digest| Some(blobs.join(digest.hex())).filter(|path| path.exists());
    let new_dir = dir.path().join("v2");
    let report = client
        .fetch_payload(&head, &have, &new_dir, &mut |_| {})
        .unwrap();
    assert_eq!(report.blobs_fetched, changed.len());
    assert_eq!(
        report.bytes_fetched,
        changed.iter().map(|file| file.size).sum::<u64>()
    );
    assert_fetched(&second, &new_dir);
    let mut fetched: Vec<String> = blob_gets(&registry, "fleet/gateway", before)
        .into_iter()
        .map(|(hex, _)| hex)
        .filter(|hex| {
            *hex != head.layout.config.digest.hex() && *hex != head.layout.signatures.digest.hex()
        })
        .collect();
    fetched.sort();
    let mut expected: Vec<String> = changed.iter().map(|file| file.sha256.clone()).collect();
    expected.sort();
    assert_eq!(
        fetched, expected,
        "the registry served only the changed blobs"
    );
}

#[test]
fn wrong_password_unknown_tag_and_unknown_ca_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Pushed {
        registry,
        client,
        bundle,
        target,
        ..
    }) = pushed(dir.path(), "auth, not found, TLS")
    else {
        return;
    };

    let mut wrong = options(&registry);
    wrong.credentials = Some(Credentials {
        user: test_registry::USER.to_owned(),
        password: "not-the-password".to_owned(),
    });
    let error = RegistryClient::new(wrong)
        .unwrap()
        .fetch_head(&target)
        .unwrap_err();
    assert_eq!(error.step(), Step::Auth, "{error}");
    assert!(!error.to_string().contains("not-the-password"), "{error}");
    let error = RegistryClient::new(RegistryOptions {
        credentials: None,
        ..options(&registry)
    })
    .unwrap()
    .push_bundle(&bundle, &target)
    .unwrap_err();
    assert_eq!(error.step(), Step::Auth, "{error}");

    let unknown = at(&registry.host(), "fleet/gateway:v9");
    let error = client.fetch_head(&unknown).unwrap_err();
    assert_eq!(error.step(), Step::NotFound, "{error}");
    assert!(error.to_string().contains("gateway:v9"), "{error}");
    assert_eq!(client.resolve(&unknown).unwrap_err().step(), Step::NotFound);

    let other_ca = test_registry::Authority::new("another CA");
    let error = RegistryClient::new(RegistryOptions {
        ca_pem: Some(other_ca.ca_pem().as_bytes().to_vec()),
        ..options(&registry)
    })
    .unwrap()
    .fetch_head(&target)
    .unwrap_err();
    assert_eq!(error.step(), Step::Tls, "{error}");

    let error = RegistryClient::new(RegistryOptions {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..options(&registry)
    })
    .err()
    .expect("a CA file without a certificate is refused");
    assert_eq!(error.step(), Step::Setup, "{error}");

    let closed = parse_reference(&format!(
        "localhost:{}/fleet/gateway:v1",
        test_registry::free_port()
    ))
    .unwrap();
    let error = client.fetch_head(&closed).unwrap_err();
    assert_eq!(error.step(), Step::Connect, "{error}");
}

/// Pushes a bundle, then fetches its head through a proxy that works, so the payload can then
/// be fetched through the same proxy with a fault; `None` when the test is skipped.
fn pushed_through_proxy(dir: &Path, test: &str) -> Option<(Pushed, Proxy, FetchedHead)> {
    let pushed = pushed(dir, test)?;
    let proxy = Proxy::start(pushed.registry.port());
    let head = pushed
        .client
        .fetch_head(&at(&proxy.host(), "fleet/gateway:v1"))
        .unwrap();
    Some((pushed, proxy, head))
}

fn os_digest(bundle: &Path) -> edge_bundle::PayloadFile {
    manifest(bundle)
        .payload
        .into_iter()
        .find(|file| file.path == "payload/os/rootfs.img")
        .unwrap()
}

#[test]
fn a_transfer_cut_in_the_middle_resumes_with_a_range_request() {
    let dir = tempfile::tempdir().unwrap();
    let Some((
        Pushed {
            registry, bundle, ..
        },
        proxy,
        head,
    )) = pushed_through_proxy(dir.path(), "cut transfer")
    else {
        return;
    };
    proxy.set_fault(Fault::CutAfter(1 << 20));
    // A new client: the connections of the last one were accepted before the fault.
    let client = RegistryClient::new(RegistryOptions {
        retries: 20,
        ..options(&registry)
    })
    .unwrap();
    let into = dir.path().join("fetched");
    let before = registry.requests().len();
    client
        .fetch_payload(&head, &nothing, &into, &mut |_| {})
        .unwrap();
    assert_fetched(&bundle, &into);
    let rootfs = os_digest(&bundle);
    let gets = blob_gets(&registry, "fleet/gateway", before);
    let resumed = gets
        .iter()
        .filter(|(hex, status)| *hex == rootfs.sha256 && *status == 206)
        .count();
    assert!(
        resumed >= 3,
        "a 3 MiB blob over 1 MiB connections takes several ranges: {gets:?}"
    );
}

#[test]
fn a_partial_blob_left_by_an_interrupted_call_is_resumed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let Some((
        Pushed {
            registry, bundle, ..
        },
        proxy,
        head,
    )) = pushed_through_proxy(dir.path(), "partial across calls")
    else {
        return;
    };
    proxy.set_fault(Fault::CutAfter(1 << 20));
    let into = dir.path().join("fetched");
    let interrupted = RegistryClient::new(RegistryOptions {
        retries: 0,
        ..options(&registry)
    })
    .unwrap();
    // The first blobs fit in a connection each; the OS image does not, and without retries the
    // call fails there, as a killed process would, leaving what it had on disk.
    let error = interrupted
        .fetch_payload(&head, &nothing, &into, &mut |_| {})
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    let rootfs = os_digest(&bundle);
    let partial = into.join(format!("blobs/sha256/{}.partial", rootfs.sha256));
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < rootfs.size, "{kept} of {}", rootfs.size);

    proxy.set_fault(Fault::None);
    let before = registry.requests().len();
    let report = RegistryClient::new(options(&registry))
        .unwrap()
        .fetch_payload(&head, &nothing, &into, &mut |_| {})
        .unwrap();
    assert_fetched(&bundle, &into);
    let gets = blob_gets(&registry, "fleet/gateway", before);
    assert!(
        gets.contains(&(rootfs.sha256.clone(), 206)),
        "the rest came as a range: {gets:?}"
    );
    assert!(report.bytes_fetched <= rootfs.size - kept + 2 * (1 << 20));
}

/// The environment variable that turns [`child_fetch`] on: the reference to fetch, then the CA
/// file and the target directory, separated by newlines.
const CHILD_FETCH: &str = "EDGE_REGISTRY_TEST_CHILD_FETCH";

/// Not a test of its own: the process `a_partial_blob_left_by_a_killed_process_is_resumed`
/// starts and kills in the middle of a fetch.
#[test]
#[ignore = "run by a_partial_blob_left_by_a_killed_process_is_resumed"]
fn child_fetch() {
    let Ok(arguments) = std::env::var(CHILD_FETCH) else {
        return;
    };
    let [reference, ca, into] = arguments.split('\n').collect::<Vec<_>>()[..] else {
        panic!("{CHILD_FETCH} holds the reference, the CA file and the directory");
    };
    let client = RegistryClient::new(RegistryOptions {
        ca_pem: Some(fs::read(ca).unwrap()),
        credentials: Some(Credentials {
            user: test_registry::USER.to_owned(),
            password: test_registry::PASSWORD.to_owned(),
        }),
        ..RegistryOptions::default()
    })
    .unwrap();
    fetch(
        &client,
        &parse_reference(reference).unwrap(),
        Path::new(into),
    );
}

#[test]
fn a_partial_blob_left_by_a_killed_process_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Pushed {
        registry,
        client,
        bundle,
        ..
    }) = pushed(dir.path(), "partial of a killed process")
    else {
        return;
    };
    let proxy = Proxy::start(registry.port());
    proxy.set_fault(Fault::Throttle(512 << 10));
    let into = dir.path().join("fetched");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_fetch", "--exact", "--ignored", "--nocapture"])
        .env(
            CHILD_FETCH,
            format!(
                "{}\n{}\n{}",
                reference(&proxy.host(), "fleet/gateway:v1"),
                registry.ca_path().display(),
                into.display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rootfs = os_digest(&bundle);
    let partial = into.join(format!("blobs/sha256/{}.partial", rootfs.sha256));
    let deadline = Instant::now() + Duration::from_secs(60);
    while fs::metadata(&partial).map_or(0, |metadata| metadata.len()) < 1 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the fetch ended before it was killed"
        );
        assert!(
            Instant::now() < deadline,
            "the fetch did not get 1 MiB into the OS image"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: nothing of the fetch gets to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = fs::metadata(&partial).unwrap().len();
    assert!(kept < rootfs.size);

    proxy.set_fault(Fault::None);
    let before = registry.requests().len();
    let head = client
        .fetch_head(&at(&proxy.host(), "fleet/gateway:v1"))
        .unwrap();
    let report = client
        .fetch_payload(&head, &nothing, &into, &mut |_| {})
        .unwrap();
    assert_fetched(&bundle, &into);
    let gets = blob_gets(&registry, "fleet/gateway", before);
    assert!(gets.contains(&(rootfs.sha256.clone(), 206)), "{gets:?}");
    assert!(
        report.bytes_fetched < rootfs.size,
        "only the rest of the OS image came again: {report:?}"
    );
}

#[test]
fn a_corrupted_blob_in_the_registry_is_refused_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // The registry is bound, not left to `..`: a field left out would be dropped, and a dropped
    // registry stops.
    let Some(Pushed {
        registry: _registry,
        client,
        bundle,
        target,
        ..
    }) = pushed(dir.path(), "corrupted blob")
    else {
        return;
    };
    let rootfs = os_digest(&bundle);
    let stored = dir.path().join(format!(
        "registry/data/docker/registry/v2/blobs/sha256/{}/{}/data",
        &rootfs.sha256[..2],
        rootfs.sha256
    ));
    let mut bytes = fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&stored, bytes).unwrap();

    let head = client.fetch_head(&target).unwrap();
    let into = dir.path().join("fetched");
    let error = client
        .fetch_payload(&head, &nothing, &into, &mut |_| {})
        .unwrap_err();
    assert_eq!(error.step(), Step::Digest, "{error}");
    assert!(error.to_string().contains(&rootfs.sha256), "{error}");
    assert!(
        error.to_string().contains("payload/os/rootfs.img"),
        "{error}"
    );
    let blobs = into.join("blobs/sha256");
    assert!(!blobs.join(&rootfs.sha256).exists());
    assert!(!blobs.join(format!("{}.partial", rootfs.sha256)).exists());
}

#[test]
fn a_registry_manifest_whose_layers_differ_from_the_signed_listing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Pushed {
        registry,
        client,
        bundle,
        ..
    }) = pushed(dir.path(), "layers not the listing")
    else {
        return;
    };
    let entries = entries(&bundle);
    let manifest = manifest(&bundle);
    let mut layout = BundleLayout::of_bundle(
        &manifest,
        &entries["bundle.json"],
        &entries["bundle.sig.json"],
    )
    .unwrap();
    // Every blob exists in the repository; only the order of two layers changes.
    layout.payload.swap(0, 1);
    let forged = dir.path().join("forged.json");
    fs::write(&forged, layout.to_manifest_bytes()).unwrap();
    let status = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--cacert"])
        .arg(registry.ca_path())
        .args([
            "--user",
            &format!("{}:{}", test_registry::USER, test_registry::PASSWORD),
        ])
        .args(["--request", "PUT", "--header"])
        .arg(format!(
            "Content-Type: {}",
            edge_registry::artifact::MANIFEST_MEDIA_TYPE
        ))
        .arg("--data-binary")
        .arg(format!("@{}", forged.display()))
        .arg(format!(
            "https://{}/v2/fleet/gateway/manifests/forged",
            registry.host()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "curl put the forged manifest");
    let error = client
        .fetch_head(&at(&registry.host(), "fleet/gateway:forged"))
        .unwrap_err();
    assert_eq!(error.step(), Step::Layout, "{error}");
    assert!(
        error.to_string().contains("signed payload listing"),
        "{error}"
    );
}

#[test]
fn a_stalled_registry_fails_the_call_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let Some(registry) = registry(dir.path(), "stalled registry") else {
        return;
    };
    let proxy = Proxy::start(registry.port());
    proxy.set_fault(Fault::Stall);
    let client = RegistryClient::new(RegistryOptions {
        connect_timeout: Duration::from_secs(60),
        read_timeout: Duration::from_secs(60),
        deadline: Some(Duration::from_secs(2)),
        ..options(&registry)
    })
    .unwrap();
    let started = Instant::now();
    let error = client
        .fetch_head(&at(&proxy.host(), "fleet/gateway:v1"))
        .unwrap_err();
    assert_eq!(error.step(), Step::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Without a deadline, the read timeout alone ends the wait.
    let client = RegistryClient::new(RegistryOptions {
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        deadline: None,
        ..options(&registry)
    })
    .unwrap();
    let started = Instant::now();
    let error = client
        .fetch_head(&at(&proxy.host(), "fleet/gateway:v1"))
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_image_layout_pushes_as_an_ordinary_image_that_resolves_to_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let Some((registry, client)) = started(dir.path(), "image layout") else {
        return;
    };
    let bundle = build_bundle(dir.path(), &spec(1, 2));
    let layout = dir.path().join("alpha");
    for (path, bytes) in entries(&bundle) {
        if let Some(relative) = path.strip_prefix("payload/images/alpha/") {
            let file = layout.join(relative);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, bytes).unwrap();
        }
    }
    let target = at(&registry.host(), "modules/alpha:1.0");
    let report = client.push_image_layout(&layout, &target).unwrap();
    let listed = manifest(&bundle).images[0].manifest_digest.clone();
    assert_eq!(report.manifest_digest.oci(), listed);
    assert_eq!(report.blobs_uploaded, 2, "config and one layer");
    assert_eq!(client.resolve(&target).unwrap().oci(), listed);
    let again = client.push_image_layout(&layout, &target).unwrap();
    assert_eq!((again.blobs_uploaded, again.blobs_present), (0, 2));
}

#[test]
fn a_bundle_file_that_is_not_a_bundle_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let Some((registry, client)) = started(dir.path(), "not a bundle") else {
        return;
    };
    let target = at(&registry.host(), "fleet/gateway:v1");
    let file = dir.path().join("junk.edgebundle");
    fs::write(&file, b"not a tar at all").unwrap();
    let before = registry.requests().len();
    let error = client.push_bundle(&file, &target).unwrap_err();
    assert!(matches!(error.step(), Step::Bundle | Step::Io), "{error}");
    assert_eq!(registry.requests().len(), before);
    let error = client
        .push_bundle(&dir.path().join("missing.edgebundle"), &target)
        .unwrap_err();
    assert_eq!(error.step(), Step::Io, "{error}");

    // A tar whose head is fine but that repeats one payload file in place of another.
    let bundle = build_bundle(dir.path(), &spec(1, 2));
    let entries = entries(&bundle);
    let listing = manifest(&bundle).payload;
    let forged = dir.path().join("forged.edgebundle");
    let mut builder = tar::Builder::new(fs::File::create(&forged).unwrap());
    let mut append = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, bytes).unwrap();
    };
    append("bundle.json", &entries["bundle.json"]);
    append("bundle.sig.json", &entries["bundle.sig.json"]);
    for _ in &listing {
        append(&listing[0].path, &entries[&listing[0].path]);
    }
    builder.finish().unwrap();
    drop(builder);
    let error = client.push_bundle(&forged, &target).unwrap_err();
    assert_eq!(error.step(), Step::Bundle, "{error}");
    assert_eq!(registry.requests().len(), before);
}

/// The copy command `schema/BUNDLE.md` documents for mirroring a bundle.
fn skopeo_copy(registry: &Registry, certs: &Path, from: &str, to: &str) {
    let credentials = format!("{}:{}", test_registry::USER, test_registry::PASSWORD);
    let output = Command::new("skopeo")
        .arg("copy")
        .arg("--src-cert-dir")
        .arg(certs)
        .arg("--dest-cert-dir")
        .arg(certs)
        .args(["--src-creds", &credentials, "--dest-creds", &credentials])
        .arg(format!("docker://{}/{from}", registry.host()))
        .arg(format!("docker://{}/{to}", registry.host()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn skopeo_copies_a_bundle_between_repositories_keeping_its_manifest_digest() {
    let dir = tempfile::tempdir().unwrap();
    if Command::new("skopeo").arg("--version").output().is_err() {
        println!("SKIPPED: skopeo copy: skopeo is not installed");
        return;
    }
    let Some(Pushed {
        registry,
        client,
        bundle,
        report: pushed,
        ..
    }) = pushed(dir.path(), "skopeo copy")
    else {
        return;
    };
    // skopeo reads a registry's CA from a directory of `*.crt` files.
    let certs = dir.path().join("certs");
    fs::create_dir_all(&certs).unwrap();
    fs::copy(registry.ca_path(), certs.join("ca.crt")).unwrap();

    skopeo_copy(&registry, &certs, "fleet/gateway:v1", "mirror/gateway:v1");
    let mirror = at(&registry.host(), "mirror/gateway:v1");
    assert_eq!(client.resolve(&mirror).unwrap(), pushed.manifest_digest);
    // By digest too, as a pinned mirror would copy it.
    skopeo_copy(
        &registry,
        &certs,
        &format!("fleet/gateway@{}", pushed.manifest_digest.oci()),
        "pinned/gateway:v1",
    );
    let pinned = at(&registry.host(), "pinned/gateway:v1");
    assert_eq!(client.resolve(&pinned).unwrap(), pushed.manifest_digest);

    let into = dir.path().join("fetched");
    let report = fetch(&client, &mirror, &into);
    assert!(report.blobs_fetched > 0);
    assert_fetched(&bundle, &into);
}

#[test]
fn a_very_slow_registry_fails_a_fetch_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let Some((Pushed { registry, .. }, proxy, head)) =
        pushed_through_proxy(dir.path(), "slow registry")
    else {
        return;
    };
    // Slow enough that the 3 MiB OS image would take minutes, fast enough for every read timeout.
    proxy.set_fault(Fault::Throttle(32 << 10));
    let client = RegistryClient::new(RegistryOptions {
        deadline: Some(Duration::from_secs(3)),
        ..options(&registry)
    })
    .unwrap();
    let started = Instant::now();
    let error = client
        .fetch_payload(&head, &nothing, &dir.path().join("fetched"), &mut |_| {})
        .unwrap_err();
    assert_eq!(error.step(), Step::Timeout, "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
