//! Debian's `docker-registry` (distribution v2.8) as the OCI registry of the
//! over-the-air tests and benchmarks.
//!
//! [`Registry::start`] runs it on loopback with a configuration file of its
//! own (the package's `/etc/docker/registry/config.yml` listens on every
//! address), TLS from a test [`Authority`] and one htpasswd user, storage in
//! the test's directory, and its log as JSON lines, from which
//! [`Registry::requests`] reads what it served (method, path, status and the
//! bytes written), so a test can assert which blobs a device fetched. It can
//! be stopped and started again on the same port, to take the registry away
//! in the middle of a transfer. [`Proxy`] sits in front of it for faults the
//! registry cannot make itself: a connection cut after a number of bytes and
//! a slow link.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use test_pki::{Authority, Issued};

/// The registry's program, from Debian's `docker-registry` package.
pub const PROGRAM: &str = "/usr/bin/docker-registry";

/// The user the registry admits.
pub const USER: &str = "fleet";

/// That user's password.
pub const PASSWORD: &str = "fleet-secret";

/// Whether the registry is installed (`.ci/setup` installs it); tests that
/// need it skip, saying so, where it is not.
pub fn available() -> bool {
    Path::new(PROGRAM).exists()
}

/// A running (or stopped) registry.
pub struct Registry {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    authority: Arc<Authority>,
}

/// One request the registry answered, from its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, `PUT`, …
    pub method: String,
    /// The request URI, e.g. `/v2/fleet/gateway/blobs/sha256:…`.
    pub uri: String,
    /// The response status.
    pub status: u16,
    /// The bytes of the response body it wrote.
    pub written: u64,
}

impl Registry {
    /// Starts a registry in `dir` (created) with a server certificate from
    /// `authority` for `localhost` and `127.0.0.1`; returns once it accepts
    /// connections.
    pub fn start(dir: &Path, authority: Arc<Authority>) -> Self {
        fs::create_dir_all(dir.join("data")).expect("registry directory");
        let port = free_port();
        let server = authority.server(&["localhost", "127.0.0.1"]);
        fs::write(dir.join("server.crt"), &server.certificate_pem).expect("certificate");
        fs::write(dir.join("server.key"), &server.key_pem).expect("key");
        fs::write(dir.join("ca.crt"), authority.ca_pem()).expect("CA");
        fs::write(dir.join("htpasswd"), htpasswd_line(USER, PASSWORD)).expect("htpasswd");
        fs::write(dir.join("config.yml"), config(dir, port)).expect("registry configuration");
        let mut registry = Self {
            dir: dir.to_owned(),
            port,
            child: None,
            authority,
        };
        registry.start_again();
        registry
    }

    /// Starts the stopped registry again on the same port, with the same
    /// storage.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the registry already runs");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("registry log");
        let child = Command::new(PROGRAM)
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("registry log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {PROGRAM}: {error}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                panic!("the registry exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the registry does not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the registry (SIGKILL: a registry that goes away mid-transfer).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `localhost:PORT`, the registry part of references to it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The CA that signed its certificate.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// The CA certificate as a file (PEM).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// Every request it answered so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log().lines().filter_map(request).collect()
    }

    /// The body bytes it wrote for blob downloads (`GET …/blobs/…`) of
    /// `repository` so far.
    pub fn blob_bytes_served(&self, repository: &str) -> u64 {
        let prefix = format!("/v2/{repository}/blobs/");
        self.requests()
            .iter()
            .filter(|request| request.method == "GET" && request.uri.starts_with(&prefix))
            .map(|request| request.written)
            .sum()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The registry's configuration: loopback only, TLS, one htpasswd user,
/// deletes allowed (so a test can take a blob away), JSON logs.
fn config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "version: 0.1
log:
  level: info
  formatter: json
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {dir}/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  tls:
    certificate: {dir}/server.crt
    key: {dir}/server.key
auth:
  htpasswd:
    realm: edgec-test
    path: {dir}/htpasswd
"
    )
}

/// A bcrypt htpasswd line, made by `htpasswd -B` (Debian's apache2-utils),
/// the format the registry reads.
fn htpasswd_line(user: &str, password: &str) -> String {
    let output = Command::new("htpasswd")
        .args(["-nbB", user, password])
        .output()
        .expect("htpasswd (apache2-utils) is needed; .ci/setup installs it");
    assert!(output.status.success(), "htpasswd failed");
    String::from_utf8(output.stdout).expect("htpasswd output")
}

/// A request from one line of the registry's JSON log (`response
/// completed`).
fn request(line: &str) -> Option<Request> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["msg"] != "response completed" {
        return None;
    }
    Some(Request {
        method: value["http.request.method"].as_str()?.to_owned(),
        uri: value["http.request.uri"].as_str()?.to_owned(),
        status: u16::try_from(value["http.response.status"].as_u64()?).ok()?,
        written: value["http.response.written"].as_u64().unwrap_or(0),
    })
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// What the proxy does to the connections it forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward every byte as it comes.
    None,
    /// Cut every connection once it has carried this many bytes from the
    /// registry (a link that drops in the middle of a blob).
    CutAfter(u64),
    /// Forward at most this many bytes per second from the registry, per
    /// connection.
    Throttle(u64),
    /// Accept connections and never answer (a registry that hangs).
    Stall,
}

/// A TCP proxy in front of a port on loopback. It forwards TLS as opaque
/// bytes, so clients still verify the registry's certificate (issued for
/// `localhost`) through it.
pub struct Proxy {
    port: u16,
    fault: Arc<Mutex<Fault>>,
    downstream_bytes: Arc<AtomicU64>,
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().expect("proxy address").port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let downstream_bytes = Arc::new(AtomicU64::new(0));
        let (accept_fault, accept_bytes) = (fault.clone(), downstream_bytes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let fault = *accept_fault.lock().expect("fault");
                let bytes = accept_bytes.clone();
                std::thread::spawn(move || forward(client, target, fault, &bytes));
            }
        });
        Self {
            port,
            fault,
            downstream_bytes,
        }
    }

    /// The port clients dial.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `localhost:PORT`, the registry part of references through it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Sets the fault for connections accepted from now on.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().expect("fault") = fault;
    }

    /// The bytes forwarded from the registry to clients so far.
    pub fn downstream_bytes(&self) -> u64 {
        self.downstream_bytes.load(Ordering::Relaxed)
    }
}

/// Forwards one client connection to `target` under `fault`.
fn forward(client: TcpStream, target: u16, fault: Fault, downstream: &AtomicU64) {
    if fault == Fault::Stall {
        // Hold the connection open without a byte, until the client gives up.
        let mut sink = [0u8; 4096];
        let mut client = client;
        while matches!(client.read(&mut sink), Ok(read) if read > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let (Ok(mut client_reader), Ok(mut server_writer)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_reader, &mut server_writer);
        let _ = server_writer.shutdown(Shutdown::Write);
    });
    let (mut server, mut client) = (server, client);
    let mut buffer = [0u8; 16 * 1024];
    let mut carried = 0u64;
    let started = Instant::now();
    loop {
        let chunk = match fault {
            Fault::CutAfter(limit) => {
                let left = limit.saturating_sub(carried);
                if left == 0 {
                    break;
                }
                buffer
                    .len()
                    .min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            _ => buffer.len(),
        };
        let read = match server.read(&mut buffer[..chunk]) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if client.write_all(&buffer[..read]).is_err() {
            break;
        }
        carried += read as u64;
        downstream.fetch_add(read as u64, Ordering::Relaxed);
        if let Fault::Throttle(rate) = fault {
            let due = Duration::from_secs_f64(carried as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}
