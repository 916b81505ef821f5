//! The registry starts with TLS and htpasswd, refuses anonymous clients,
//! logs what it served, and the proxy cuts connections where it is told.

use std::process::Command;
use std::sync::Arc;

use test_registry::{Authority, Fault, PASSWORD, Proxy, Registry, USER};

fn curl(registry_host: &str, ca: &std::path::Path, args: &[&str], path: &str) -> (u16, Vec<u8>) {
    let output = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(format!("https://{registry_host}{path}"))
        .output()
        .expect("curl");
    let mut body = output.stdout;
    let split = body.iter().rposition(|byte| *byte == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[split + 1..])
        .parse()
        .unwrap_or(0);
    body.truncate(split);
    (code, body)
}

#[test]
fn the_registry_serves_tls_with_htpasswd_and_logs_what_it_served() {
    if !test_registry::available() {
        eprintln!(
            "SKIPPED: {} is not installed (.ci/setup installs it)",
            test_registry::PROGRAM
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::start(dir.path(), Arc::new(Authority::new("registry test CA")));
    let ca = registry.ca_path();
    let user = format!("{USER}:{PASSWORD}");
    assert_eq!(curl(&registry.host(), &ca, &[], "/v2/").0, 401);
    assert_eq!(
        curl(&registry.host(), &ca, &["-u", "fleet:wrong"], "/v2/").0,
        401
    );
    assert_eq!(curl(&registry.host(), &ca, &["-u", &user], "/v2/").0, 200);

    // A monolithic blob upload, then a download and a ranged download.
    let blob = vec![7u8; 100_000];
    let digest = format!("sha256:{}", sha256_hex(&blob));
    let blob_path = dir.path().join("blob");
    std::fs::write(&blob_path, &blob).unwrap();
    let upload = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .args(["-u", &user, "-X", "POST", "-D", "-"])
        .arg(format!(
            "https://{}/v2/test/blob/blobs/uploads/",
            registry.host()
        ))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&upload.stdout);
    let location = headers
        .lines()
        .find_map(|line| {
            line.strip_prefix("Location: ")
                .or(line.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .args([
            "-u",
            &user,
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", blob_path.display()))
        .arg(format!("{location}{separator}digest={digest}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201");
    let blob_uri = format!("/v2/test/blob/blobs/{digest}");
    let (code, body) = curl(&registry.host(), &ca, &["-u", &user, "-L"], &blob_uri);
    assert_eq!((code, body.len()), (200, blob.len()));
    let (code, body) = curl(
        &registry.host(),
        &ca,
        &["-u", &user, "-r", "1000-"],
        &blob_uri,
    );
    assert_eq!((code, body.len()), (206, blob.len() - 1000));
    assert_eq!(registry.blob_bytes_served("test/blob"), 100_000 + 99_000);

    // Through the proxy, the certificate still holds, and a cut connection
    // ends the download short.
    let proxy = Proxy::start(registry.port());
    let (code, body) = curl(&proxy.host(), &ca, &["-u", &user], &blob_uri);
    assert_eq!((code, body.len()), (200, blob.len()));
    proxy.set_fault(Fault::CutAfter(20_000));
    let (_, body) = curl(&proxy.host(), &ca, &["-u", &user], &blob_uri);
    assert!(
        body.len() < blob.len(),
        "the cut connection delivered the whole blob"
    );

    // Stopped, it refuses connections; started again, it has the blob.
    registry.stop();
    assert_eq!(curl(&registry.host(), &ca, &["-u", &user], &blob_uri).0, 0);
    registry.start_again();
    assert_eq!(
        curl(&registry.host(), &ca, &["-u", &user], &blob_uri).0,
        200
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    let output = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&output.stdout)[..64].to_owned()
}
