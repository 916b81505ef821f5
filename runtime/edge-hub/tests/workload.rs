//! The workload API over real unix sockets: signing with the module's own
//! key only, the trust bundle, module server certificates, refusals, the
//! peer credential check and the concurrency limit.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use edge_hub::certs::{CaKeySource, Certificates};
use edge_hub::workload::{GenerationLookup, MAX_CONCURRENT, PeerPolicy, WorkloadSockets};
use edge_hub::{FileKeys, KeyStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

mod common;
use common::{parse, unix_call as call, unix_send as send};

struct Fixture {
    dir: tempfile::TempDir,
    keys: Arc<FileKeys>,
    certificates: Arc<Certificates>,
    generations: Arc<Mutex<HashMap<String, String>>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Other users must reach the sockets for the peer check to be what
        // refuses them.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let keys = Arc::new(FileKeys::open(&dir.path().join("keys")).expect("keys"));
        let certificates = Arc::new(
            Certificates::open(dir.path(), "edged", &CaKeySource::File).expect("certificates"),
        );
        let generations = Arc::new(Mutex::new(HashMap::new()));
        for (module, generation) in [("sensor", "g-sensor-1"), ("filter", "g-filter-1")] {
            keys.ensure(module).expect("key");
            generations
                .lock()
                .expect("lock")
                .insert(module.to_owned(), generation.to_owned());
        }
        Self {
            dir,
            keys,
            certificates,
            generations,
        }
    }

    fn sockets(&self, policy: PeerPolicy) -> WorkloadSockets {
        let generations = self.generations.clone();
        let lookup: GenerationLookup =
            Arc::new(move |module: &str| generations.lock().expect("lock").get(module).cloned());
        WorkloadSockets::new(
            &self.dir.path().join("workload"),
            lookup,
            self.keys.clone(),
            self.certificates.clone(),
            policy,
        )
    }
}

fn sign_body(data: &[u8]) -> String {
    serde_json::json!({"keyId": "primary", "algo": "HMACSHA256", "data": BASE64.encode(data)})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_sign_with_their_own_key_only() {
    let fixture = Fixture::new();
    let sockets = fixture.sockets(PeerPolicy::SameUser);
    sockets.bind("sensor").expect("bind sensor");
    sockets.bind("filter").expect("bind filter");
    let socket = sockets.socket_path("sensor");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o666);
    let mode = std::fs::metadata(sockets.socket_dir("sensor"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    let data = b"myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fsensor\n1700000000";
    let (status, body) = call(
        &socket,
        "POST",
        "/modules/sensor/genid/g-sensor-1/sign?api-version=2020-07-07",
        &sign_body(data),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let digest = BASE64
        .decode(body["digest"].as_str().expect("digest"))
        .expect("base64");
    let key = std::fs::read(fixture.dir.path().join("keys/sensor.key")).expect("key file");
    assert_eq!(digest, edge_hub::keys::hmac_sha256(&key, data));
    assert_ne!(
        digest,
        fixture
            .keys
            .sign("filter", data)
            .expect("filter key")
            .to_vec()
    );

    let refusals = [
        // Another module's key through this socket.
        (
            "POST",
            "/modules/filter/genid/g-filter-1/sign?api-version=1",
            sign_body(data),
            403,
        ),
        // A stale generation id.
        (
            "POST",
            "/modules/sensor/genid/g-sensor-0/sign?api-version=1",
            sign_body(data),
            404,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign",
            sign_body(data),
            400,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=",
            sign_body(data),
            400,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
            "{\"keyId\":".to_owned(),
            400,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
            r#"{"keyId":"secondary","algo":"HMACSHA256","data":"eA=="}"#.to_owned(),
            400,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
            r#"{"keyId":"primary","algo":"MD5","data":"eA=="}"#.to_owned(),
            400,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
            r#"{"keyId":"primary","algo":"HMACSHA256","data":"not base64!"}"#.to_owned(),
            400,
        ),
        (
            "POST",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
            sign_body(&vec![b'x'; 70 * 1024]),
            413,
        ),
        (
            "GET",
            "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
            String::new(),
            405,
        ),
        ("GET", "/modules?api-version=1", String::new(), 404),
    ];
    for (method, target, body, expected) in refusals {
        let (status, reply) = call(&socket, method, target, &body).await;
        assert_eq!(status, expected, "{method} {target}: {reply}");
        assert!(reply["message"].is_string(), "{reply}");
    }

    // The filter's own socket signs with the filter's key.
    let (status, body) = call(
        &sockets.socket_path("filter"),
        "POST",
        "/modules/filter/genid/g-filter-1/sign?api-version=1",
        &sign_body(data),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        BASE64
            .decode(body["digest"].as_str().expect("digest"))
            .expect("base64"),
        fixture.keys.sign("filter", data).expect("sign").to_vec()
    );

    // A module that left the deployment has no identity any more.
    fixture.generations.lock().expect("lock").remove("sensor");
    let (status, _) = call(
        &socket,
        "POST",
        "/modules/sensor/genid/g-sensor-1/sign?api-version=1",
        &sign_body(data),
    )
    .await;
    assert_eq!(status, 404);
    sockets.unbind("sensor");
    assert!(!sockets.socket_dir("sensor").exists());
    assert_eq!(sockets.modules(), vec!["filter".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_bundle_and_module_server_certificates() {
    let fixture = Fixture::new();
    let sockets = fixture.sockets(PeerPolicy::SameUser);
    sockets.bind("sensor").expect("bind");
    let socket = sockets.socket_path("sensor");
    let (status, body) = call(&socket, "GET", "/trust-bundle?api-version=2020-07-07", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["certificate"].as_str(),
        Some(fixture.certificates.trust_bundle_pem())
    );

    let expiration = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let expiration = expiration
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let request = serde_json::json!({"commonName": "sensor-web", "expiration": expiration});
    let (status, body) = call(
        &socket,
        "POST",
        "/modules/sensor/genid/g-sensor-1/certificate/server?api-version=1",
        &request.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["privateKey"]["type"], "key");
    assert!(
        body["privateKey"]["bytes"]
            .as_str()
            .is_some_and(|pem| pem.contains("PRIVATE KEY"))
    );
    let cert = fixture.dir.path().join("module.pem");
    std::fs::write(&cert, body["certificate"].as_str().expect("certificate")).expect("write");
    for name in ["sensor-web", "sensor"] {
        let output = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(fixture.dir.path().join("ca/ca.pem"))
            .args(["-verify_hostname", name])
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(output.status.success(), "{name}: {output:?}");
    }
    for bad in [
        serde_json::json!({"commonName": "x", "expiration": "tomorrow"}),
        serde_json::json!({"commonName": "x", "expiration": "2001-01-01T00:00:00Z"}),
        serde_json::json!({"commonName": "", "expiration": expiration}),
        serde_json::json!({"commonName": "caméra", "expiration": expiration}),
        serde_json::json!({"commonName": "two words", "expiration": expiration}),
        serde_json::json!({"expiration": expiration}),
    ] {
        let (status, reply) = call(
            &socket,
            "POST",
            "/modules/sensor/genid/g-sensor-1/certificate/server?api-version=1",
            &bad.to_string(),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {reply}");
    }
}

/// Runs `curl` against `socket` as `nobody` and returns the HTTP status.
fn curl_as_nobody(socket: &Path, target: &str) -> String {
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"])
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .arg(format!("http://localhost{target}"))
        .output()
        .expect("setpriv and curl are installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_check_refuses_other_users_and_other_containers() {
    let fixture = Fixture::new();
    let same_user = fixture.sockets(PeerPolicy::SameUser);
    same_user.bind("sensor").expect("bind");
    let socket = same_user.socket_path("sensor");
    let target = "/trust-bundle?api-version=1";
    let refused = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || curl_as_nobody(&socket, target)
    })
    .await
    .expect("curl");
    assert_eq!(refused, "403", "another uid is refused");
    let (status, _) = call(&socket, "GET", target, "").await;
    assert_eq!(status, 200, "our own uid is served");
    same_user.close();

    // With Docker the peer must be in the module's container: a host
    // process (this test, as root) is refused until its own cgroup is
    // recorded as the module's container.
    let containers = fixture.sockets(PeerPolicy::Containers);
    containers.bind("sensor").expect("bind");
    let (status, reply) = call(&socket, "GET", target, "").await;
    assert_eq!(status, 403, "{reply}");
    containers.set_container("sensor", Some("0123456789abcdef-not-ours".to_owned()));
    let (status, _) = call(&socket, "GET", target, "").await;
    assert_eq!(status, 403);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let ours = cgroup
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .find(|segment| !segment.is_empty())
        .expect("a cgroup name");
    containers.set_container("sensor", Some(ours.to_owned()));
    let (status, reply) = call(&socket, "GET", target, "").await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_serves_a_bounded_number_of_connections() {
    let fixture = Fixture::new();
    let sockets = fixture.sockets(PeerPolicy::SameUser);
    sockets.bind("sensor").expect("bind");
    let socket: PathBuf = sockets.socket_path("sensor");
    let mut idle = Vec::new();
    for _ in 0..MAX_CONCURRENT {
        idle.push(UnixStream::connect(&socket).await.expect("connect"));
    }
    // Accepting is in order, so the next connection is the one over the
    // limit: it is closed without an answer.
    let mut extra = UnixStream::connect(&socket).await.expect("connect");
    let _ = extra
        .write_all(b"GET /trust-bundle?api-version=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut response = Vec::new();
    let _ = extra.read_to_end(&mut response).await;
    assert!(
        response.is_empty(),
        "{}",
        String::from_utf8_lossy(&response)
    );
    drop(idle);
    // Once the idle ones are gone, requests are served again.
    let mut status = 0;
    for _ in 0..50 {
        let response = send(&socket, "GET", "/trust-bundle?api-version=1", "").await;
        if let Some((code, _)) = parse(&response) {
            status = code;
        }
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}
