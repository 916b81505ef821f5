//! The workload API: what aziot-edged serves modules on a unix socket, and
//! what the SDK's `create_from_edge_environment` calls to get the trust
//! bundle and have its SAS tokens signed.
//!
//! Every module gets a socket of its own at
//! `{hub dir}/workload/{module}/workload.sock`; the directory is
//! bind-mounted into its container at `/var/run/iotedge`, so nothing else
//! is visible there. The socket is mode 0666 because the container's user
//! may be any uid: access is decided by the peer's credentials instead
//! (`SO_PEERCRED`), checked on every request. With Docker the peer process
//! must belong to the module's container (its `/proc/{pid}/cgroup` names
//! the container id, as aziot-edged checks); without a container runtime
//! it must run as edged's user or root. A request may only name the
//! socket's own module and its current generation id.
//!
//! Each socket serves at most [`MAX_CONCURRENT`] connections at once (what
//! edgelet allows); more are closed as they arrive.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::certs::Certificates;
use crate::http::{HttpResponse, has_api_version, json_response};
use crate::keys::KeyStore;

/// The most requests one socket serves at once.
pub const MAX_CONCURRENT: usize = 10;
/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `commonName` accepted (the X.509 upper bound).
const MAX_COMMON_NAME: usize = 64;
/// The socket's file name inside the module's directory.
pub const SOCKET_NAME: &str = "workload.sock";

/// Who may use a module's socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerPolicy {
    /// The peer process must be in the module's container (Docker).
    Containers,
    /// The peer must run as edged's user or root (`--runtime none`).
    SameUser,
}

/// Looks up a deployed module's generation id (`None`: not deployed).
pub type GenerationLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why a workload socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The socket or its directory could not be created.
    #[error("workload socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

struct Shared {
    generation: GenerationLookup,
    keys: Arc<dyn KeyStore>,
    certificates: Arc<Certificates>,
    policy: PeerPolicy,
    containers: RwLock<HashMap<String, String>>,
    our_uid: u32,
}

impl Shared {
    fn check_peer(&self, module: &str, peer: Peer) -> Result<(), String> {
        let container = self
            .containers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(module)
            .cloned();
        peer_allowed(
            self.policy,
            self.our_uid,
            peer.uid,
            container.as_deref(),
            || {
                peer.pid
                    .and_then(|pid| fs::read_to_string(format!("/proc/{pid}/cgroup")).ok())
            },
        )
    }
}

/// The workload sockets of all deployed modules.
pub struct WorkloadSockets {
    dir: PathBuf,
    shared: Arc<Shared>,
    sockets: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl WorkloadSockets {
    /// Sockets under `dir` (`{hub dir}/workload`), none bound yet.
    pub fn new(
        dir: &Path,
        generation: GenerationLookup,
        keys: Arc<dyn KeyStore>,
        certificates: Arc<Certificates>,
        policy: PeerPolicy,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            shared: Arc::new(Shared {
                generation,
                keys,
                certificates,
                policy,
                containers: RwLock::new(HashMap::new()),
                our_uid: rustix::process::geteuid().as_raw(),
            }),
            sockets: Mutex::new(HashMap::new()),
        }
    }

    /// The host directory holding `module`'s socket, to bind-mount at
    /// `/var/run/iotedge` in its container.
    pub fn socket_dir(&self, module: &str) -> PathBuf {
        // Module names cannot contain a path separator (the bundle grammar
        // forbids it); replacing one keeps a stray name inside the directory.
        self.dir.join(module.replace(['/', '\0'], "_"))
    }

    /// The socket path of `module`.
    pub fn socket_path(&self, module: &str) -> PathBuf {
        self.socket_dir(module).join(SOCKET_NAME)
    }

    /// Records the container `module` runs in, for the peer check
    /// (`None`: it has none now).
    pub fn set_container(&self, module: &str, container: Option<String>) {
        let mut containers = self
            .shared
            .containers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match container {
            Some(id) => containers.insert(module.to_owned(), id),
            None => containers.remove(module),
        };
    }

    /// The modules that have a socket.
    pub fn modules(&self) -> Vec<String> {
        let mut modules: Vec<String> = self.lock().keys().cloned().collect();
        modules.sort();
        modules
    }

    /// The module names that have a socket directory, served or not.
    pub fn directories(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect()
    }

    /// Creates `module`'s socket (replacing a stale file) and starts
    /// serving it; nothing happens if it is already served. Must be called
    /// inside the tokio runtime.
    pub fn bind(&self, module: &str) -> Result<(), WorkloadError> {
        let mut sockets = self.lock();
        if sockets.get(module).is_some_and(|task| !task.is_finished()) {
            return Ok(());
        }
        let dir = self.socket_dir(module);
        let path = self.socket_path(module);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WorkloadError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(io(&dir))?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(&path)(error)),
        }
        let listener = UnixListener::bind(&path).map_err(io(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(io(&path))?;
        let task = tokio::spawn(serve(listener, module.to_owned(), self.shared.clone()));
        sockets.insert(module.to_owned(), task);
        tracing::debug!(module, path = %path.display(), "serving the module's workload socket");
        Ok(())
    }

    /// Stops serving `module`'s socket and removes it and its directory.
    pub fn unbind(&self, module: &str) {
        if let Some(task) = self.lock().remove(module) {
            task.abort();
        }
        self.set_container(module, None);
        let dir = self.socket_dir(module);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(module, path = %dir.display(), %error, "cannot remove the module's workload socket");
            }
        }
    }

    /// Stops serving every socket (their files stay for the next start).
    pub fn close(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WorkloadSockets {
    fn drop(&mut self) {
        self.close();
    }
}

/// Accepts connections on one module's socket.
async fn serve(listener: UnixListener, module: String, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
    // Peers that fail the check get connections of their own, each closed
    // after its one (403) answer, so they cannot take the module's slots.
    let refused = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Accept fails for a lack of file descriptors or memory;
                // waiting a little lets other connections finish.
                tracing::warn!(module, %error, "workload socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = Peer::of(&stream);
        let admitted = shared.check_peer(&module, peer).is_ok();
        let pool = if admitted { &permits } else { &refused };
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            tracing::warn!(
                module,
                admitted,
                "workload socket has {MAX_CONCURRENT} connections already; closing a new one"
            );
            continue;
        };
        let shared = shared.clone();
        let module = module.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                let module = module.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&shared, &module, peer, request).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BODY_BYTES)
                .keep_alive(admitted)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "workload connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// The peer's credentials, taken when it connected.
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
}

impl Peer {
    fn of(stream: &UnixStream) -> Self {
        match stream.peer_cred() {
            Ok(credentials) => Self {
                uid: Some(credentials.uid()),
                pid: credentials.pid(),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot read the workload peer's credentials");
                Self {
                    uid: None,
                    pid: None,
                }
            }
        }
    }
}

/// Decides whether a peer may use `module`'s socket. `cgroup` reads the
/// peer's `/proc/{pid}/cgroup`.
fn peer_allowed(
    policy: PeerPolicy,
    our_uid: u32,
    peer_uid: Option<u32>,
    container: Option<&str>,
    cgroup: impl FnOnce() -> Option<String>,
) -> Result<(), String> {
    match policy {
        PeerPolicy::SameUser => match peer_uid {
            Some(uid) if uid == our_uid || uid == 0 => Ok(()),
            Some(uid) => Err(format!(
                "the caller runs as uid {uid}; only uid {our_uid} (edged's) or root may use this socket"
            )),
            None => Err("the caller's credentials are unknown".to_owned()),
        },
        PeerPolicy::Containers => {
            let container = container
                .filter(|id| !id.is_empty())
                .ok_or("the module has no running container")?;
            let cgroup = cgroup().ok_or("the caller's cgroup is unknown")?;
            if cgroup.lines().any(|line| line.contains(container)) {
                Ok(())
            } else {
                Err("the caller is not in the module's container".to_owned())
            }
        }
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    json_response(status, &json!({ "message": message.into() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignRequest {
    key_id: String,
    algo: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerCertificateRequest {
    common_name: String,
    expiration: String,
}

/// What a request path names.
enum Route {
    TrustBundle,
    Sign { module: String, generation: String },
    ServerCertificate { module: String, generation: String },
}

fn route(path: &str) -> Option<(Route, Method)> {
    let segments: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["trust-bundle"] => Some((Route::TrustBundle, Method::GET)),
        ["modules", module, "genid", generation, "sign"] => Some((
            Route::Sign {
                module: (*module).to_owned(),
                generation: (*generation).to_owned(),
            },
            Method::POST,
        )),
        [
            "modules",
            module,
            "genid",
            generation,
            "certificate",
            "server",
        ] => Some((
            Route::ServerCertificate {
                module: (*module).to_owned(),
                generation: (*generation).to_owned(),
            },
            Method::POST,
        )),
        _ => None,
    }
}

async fn handle(
    shared: &Shared,
    socket_module: &str,
    peer: Peer,
    request: Request<Incoming>,
) -> HttpResponse {
    // Checked on every request, not only at connect: the module's
    // container changes when it is restarted.
    if let Err(reason) = shared.check_peer(socket_module, peer) {
        tracing::warn!(module = socket_module, pid = ?peer.pid, uid = ?peer.uid, %reason, "workload request refused");
        return refuse(StatusCode::FORBIDDEN, reason);
    }
    if !has_api_version(request.uri().query()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the api-version query parameter is required",
        );
    }
    let Some((route, method)) = route(request.uri().path()) else {
        return refuse(StatusCode::NOT_FOUND, "no such workload API endpoint");
    };
    if request.method() != method {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here; use {method}", request.method()),
        );
    }
    let (module, generation) = match &route {
        Route::TrustBundle => {
            return json_response(
                StatusCode::OK,
                &json!({ "certificate": shared.certificates.trust_bundle_pem() }),
            );
        }
        Route::Sign { module, generation } | Route::ServerCertificate { module, generation } => {
            (module, generation)
        }
    };
    if module != socket_module {
        tracing::warn!(module = socket_module, requested = %module, "a module asked for another module's identity");
        return refuse(
            StatusCode::FORBIDDEN,
            format!("this socket serves module {socket_module} only"),
        );
    }
    if (shared.generation)(module).as_deref() != Some(generation.as_str()) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("module {module} with generation id {generation} is not deployed"),
        );
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    match route {
        Route::Sign { .. } => sign(shared, module, &body).await,
        Route::ServerCertificate { .. } => server_certificate(shared, module, &body).await,
        Route::TrustBundle => refuse(StatusCode::NOT_FOUND, "no such workload API endpoint"),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, HttpResponse> {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {error}"),
        )),
    }
}

async fn sign(shared: &Shared, module: &str, body: &[u8]) -> HttpResponse {
    let request: SignRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed sign request: {error}"),
            );
        }
    };
    if request.key_id != "primary" {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "keyId must be \"primary\", not {:?}",
                request.key_id.chars().take(32).collect::<String>()
            ),
        );
    }
    if request.algo != "HMACSHA256" {
        return refuse(StatusCode::BAD_REQUEST, "algo must be \"HMACSHA256\"");
    }
    let Ok(data) = BASE64.decode(request.data.as_bytes()) else {
        return refuse(StatusCode::BAD_REQUEST, "data is not base64");
    };
    let keys = shared.keys.clone();
    let owned = module.to_owned();
    // The token or the key file is slow next to the runtime's threads.
    let signed = tokio::task::spawn_blocking(move || keys.sign(&owned, &data)).await;
    match signed {
        Ok(Ok(digest)) => {
            json_response(StatusCode::OK, &json!({ "digest": BASE64.encode(digest) }))
        }
        Ok(Err(crate::keys::KeyError::Unknown(_))) => refuse(
            StatusCode::NOT_FOUND,
            format!("module {module} has no identity key"),
        ),
        Ok(Err(error)) => {
            tracing::error!(module, %error, "signing for a module failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "signing failed")
        }
        Err(error) => {
            tracing::error!(module, %error, "the signing task failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "signing failed")
        }
    }
}

async fn server_certificate(shared: &Shared, module: &str, body: &[u8]) -> HttpResponse {
    let request: ServerCertificateRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed certificate request: {error}"),
            );
        }
    };
    let name = request.common_name.trim();
    // The name becomes a DNS subject alternative name too, which X.509
    // writes as IA5 (ASCII) text.
    if name.is_empty()
        || name.len() > MAX_COMMON_NAME
        || !name.bytes().all(|byte| byte.is_ascii_graphic())
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "commonName must be 1 to {MAX_COMMON_NAME} printable ASCII characters without spaces"
            ),
        );
    }
    let expiration = match time::OffsetDateTime::parse(
        &request.expiration,
        &time::format_description::well_known::Rfc3339,
    ) {
        Ok(expiration) => SystemTime::from(expiration),
        Err(error) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expiration is not an RFC 3339 time: {error}"),
            );
        }
    };
    if expiration <= SystemTime::now() {
        return refuse(StatusCode::BAD_REQUEST, "expiration is in the past");
    }
    let certificates = shared.certificates.clone();
    let (name, owned) = (name.to_owned(), module.to_owned());
    let issued = tokio::task::spawn_blocking(move || {
        certificates.issue_for_module(&name, &owned, expiration)
    })
    .await;
    match issued {
        Ok(Ok(issued)) => {
            let expiration = time::OffsetDateTime::from(issued.not_after)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            json_response(
                StatusCode::OK,
                &json!({
                    "privateKey": { "type": "key", "bytes": issued.private_key_pem },
                    "certificate": issued.certificate_pem,
                    "expiration": expiration,
                }),
            )
        }
        Ok(Err(error)) => {
            tracing::error!(module, %error, "issuing a module certificate failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "issuing the certificate failed",
            )
        }
        Err(error) => {
            tracing::error!(module, %error, "the certificate task failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "issuing the certificate failed",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_admits_our_uid_and_root_only() {
        let decide = |uid| peer_allowed(PeerPolicy::SameUser, 1000, uid, None, || None);
        assert!(decide(Some(1000)).is_ok());
        assert!(decide(Some(0)).is_ok());
        let refused = decide(Some(65534)).expect_err("another user");
        assert!(refused.contains("65534"), "{refused}");
        assert!(decide(None).is_err());
    }

    #[test]
    fn containers_admit_only_processes_in_the_module_container() {
        let id = "4f2c6d1e9a0b";
        let systemd = format!("0::/system.slice/docker-{id}5566.scope\n");
        let decide = |container: Option<&str>, cgroup: &str| {
            let cgroup = cgroup.to_owned();
            peer_allowed(PeerPolicy::Containers, 0, Some(0), container, move || {
                Some(cgroup)
            })
        };
        assert!(decide(Some(id), &systemd).is_ok());
        assert!(decide(Some(id), &format!("0::/docker/{id}\n")).is_ok());
        assert!(decide(Some("aaaa"), &systemd).is_err(), "another container");
        assert!(
            decide(Some(id), "0::/user.slice/session-1.scope\n").is_err(),
            "a host process, even root"
        );
        assert!(decide(None, &systemd).is_err(), "no container recorded");
        assert!(decide(Some(""), &systemd).is_err());
    }
}
