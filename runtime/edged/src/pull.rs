//! Module images from registries: what a bundle's `registry_images` pin,
//! the credentials to pull them with, why a pull failed, and the progress
//! record `edged status` shows while a pull runs.
//!
//! The engine does the pulling (`DockerEngine::fetch_images`); this module
//! holds what does not depend on the engine, so that the transaction
//! (`device.rs`) and the daemon's retries (`inbox.rs`) share one notion of
//! a pull failure.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use edge_bundle::BundleManifest;
use edge_init::status::{PullModuleReport, PullReport};
use image_reference::Reference;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RegistryCredentialSettings;
use crate::durable;
use crate::error::{Error, Result};

/// The progress record's file name inside the state directory; it exists
/// only while a pull runs.
pub const PROGRESS_FILE: &str = "pull-progress.json";

/// How often the progress record is rewritten at most while bytes arrive.
const RECORD_EVERY: Duration = Duration::from_millis(500);
/// How often the terminal line is redrawn at most.
const DRAW_EVERY: Duration = Duration::from_millis(200);

/// The names Docker Hub goes by; credentials for one are credentials for all.
const DOCKER_HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Why a pull failed, as far as the engine's answer tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFailure {
    /// The registry refused the credentials (or asked for some and had none).
    Auth,
    /// The registry does not hold the pinned image.
    NotFound,
    /// What the registry served is not the pinned image.
    DigestMismatch,
    /// The registry could not be reached: DNS, TCP, TLS, a timeout, a cut
    /// connection.
    Network,
    /// The registry answered with an error of its own (a 5xx, something
    /// the engine did not recognise).
    Registry,
    /// The container engine itself failed during the pull.
    Engine,
}

impl PullFailure {
    /// Whether the failure can pass by itself, so that the daemon keeps the
    /// bundle and tries again: the network, the registry or the engine may
    /// come back; refused credentials, a missing image or a wrong digest
    /// stay what they are until someone changes the deployment.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Network | Self::Registry | Self::Engine)
    }

    /// Reads the engine's error message (and HTTP status, when the engine
    /// answered with one) as a failure class. Docker passes on the
    /// registry's words, so the class is read from them; the order matters
    /// (a digest mismatch message also names the manifest).
    pub fn classify(status: Option<u16>, message: &str) -> Self {
        let text = message.to_ascii_lowercase();
        let any = |needles: &[&str]| needles.iter().any(|needle| text.contains(needle));
        if any(&[
            "verification failed",
            "digest mismatch",
            "digest did not match",
            "unexpected digest",
        ]) {
            Self::DigestMismatch
        } else if any(&[
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "denied",
            "incorrect username or password",
        ]) {
            Self::Auth
        } else if any(&[
            "dial tcp",
            "connection refused",
            "connection reset",
            "no such host",
            "i/o timeout",
            "timeout",
            "tls handshake",
            "eof",
            "network is unreachable",
            "no route to host",
            "broken pipe",
        ]) {
            Self::Network
        } else if any(&[
            "manifest unknown",
            "not found",
            "blob unknown",
            "name unknown",
        ]) || status == Some(404)
        {
            Self::NotFound
        } else {
            Self::Registry
        }
    }
}

impl fmt::Display for PullFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Auth => "the registry refused the credentials",
            Self::NotFound => "the registry does not hold the pinned image",
            Self::DigestMismatch => "digest mismatch",
            Self::Network => "the registry cannot be reached",
            Self::Registry => "the registry failed",
            Self::Engine => "the container engine failed",
        })
    }
}

/// `address` as a registry host: `host[:port]`, lower case, without a
/// scheme or path, Docker Hub's aliases as `docker.io`. IoT Edge manifests
/// write addresses with or without `https://`.
pub fn registry_host(address: &str) -> std::result::Result<String, String> {
    let trimmed = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    let host = trimmed
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host.as_str(), None),
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0));
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) || !port_ok {
        return Err(format!(
            "{address:?} is not a registry address (host or host:port, as in myregistry.azurecr.io or localhost:5000)"
        ));
    }
    if DOCKER_HUB.contains(&host.as_str()) {
        return Ok(DOCKER_HUB[0].to_owned());
    }
    Ok(host)
}

/// One image a bundle pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedImage {
    /// The module that runs it.
    pub module: String,
    /// The reference as the bundle writes it, `name[:tag]@sha256:…`.
    pub reference: String,
    /// The registry host, normalised (see [`registry_host`]).
    pub host: String,
    /// The repository on it.
    pub repository: String,
    /// The pinned digest, `sha256:…`.
    pub digest: String,
}

impl PinnedImage {
    fn new(module: &str, reference: &str) -> Result<Self> {
        let invalid = |why: String| Error::Refused(format!("registry image of {module}: {why}"));
        let parsed = Reference::parse(reference).map_err(|error| invalid(error.to_string()))?;
        let digest = parsed
            .digest()
            .ok_or_else(|| invalid(format!("{reference} is not pinned by digest")))?
            .to_owned();
        let host = registry_host(parsed.registry()).map_err(invalid)?;
        Ok(Self {
            module: module.to_owned(),
            reference: reference.to_owned(),
            host,
            repository: parsed.repository(),
            digest,
        })
    }

    /// `host/repository@sha256:…`, the name the engine pulls and inspects.
    pub fn pinned(&self) -> String {
        format!("{}/{}@{}", self.host, self.repository, self.digest)
    }

    /// Whether one of an image's `RepoDigests` is this pinned image (the
    /// engine writes Docker Hub's images in their short form, `busybox@…`).
    pub fn is_among(&self, repo_digests: &[String]) -> bool {
        repo_digests.iter().any(|entry| {
            Reference::parse(entry).is_ok_and(|parsed| {
                registry_host(parsed.registry()).as_deref() == Ok(self.host.as_str())
                    && parsed.repository() == self.repository
                    && parsed.digest() == Some(self.digest.as_str())
            })
        })
    }

    /// A pull error of this image.
    pub fn failure(&self, failure: PullFailure, detail: impl Into<String>) -> Error {
        Error::Pull {
            module: self.module.clone(),
            reference: self.reference.clone(),
            failure,
            detail: detail.into(),
        }
    }
}

/// A user name and password for one registry.
#[derive(Clone)]
pub struct Login {
    /// The registry host.
    pub host: String,
    /// The user name.
    pub username: String,
    /// The password; never logged (the type has no `Debug`).
    pub password: String,
    /// Where it came from, for the log: `device` or `deployment`.
    pub source: &'static str,
}

/// Credentials the deployment carries (`registryCredentials`).
#[derive(Clone)]
struct DeploymentLogin {
    host: String,
    username: String,
    password: String,
}

/// What a bundle asks to be pulled, and the credentials to pull it with.
pub struct ImagePull {
    /// The deployment.
    pub deployment: String,
    /// Its version.
    pub version: u64,
    /// The images, in the bundle's (module) order.
    pub images: Vec<PinnedImage>,
    deployment_logins: Vec<DeploymentLogin>,
    device_logins: Vec<RegistryCredentialSettings>,
}

impl ImagePull {
    /// The pull a verified manifest asks for, with the device's own
    /// credentials ahead of the manifest's.
    pub fn new(manifest: &BundleManifest, device: &[RegistryCredentialSettings]) -> Result<Self> {
        let images = manifest
            .registry_images
            .iter()
            .map(|image| PinnedImage::new(&image.module, &image.reference))
            .collect::<Result<_>>()?;
        Ok(Self {
            deployment: manifest.deployment.clone(),
            version: manifest.version,
            images,
            deployment_logins: deployment_logins(&manifest.iot_edge_manifest)?,
            device_logins: device.to_vec(),
        })
    }

    /// The credentials for `image`'s registry: the device's
    /// `[[registry_credentials]]` entry for it (its password file read now),
    /// else the deployment's, else none (an anonymous pull).
    pub fn login_for(&self, image: &PinnedImage) -> Result<Option<Login>> {
        let device = self
            .device_logins
            .iter()
            .find(|entry| registry_host(&entry.address).is_ok_and(|host| host == image.host));
        if let Some(entry) = device {
            return Ok(Some(Login {
                host: image.host.clone(),
                username: entry.username.clone(),
                password: read_password(&entry.password_file)?,
                source: "device",
            }));
        }
        Ok(self
            .deployment_logins
            .iter()
            .find(|login| login.host == image.host)
            .map(|login| Login {
                host: image.host.clone(),
                username: login.username.clone(),
                password: login.password.clone(),
                source: "deployment",
            }))
    }
}

/// The deployment's `registryCredentials`
/// (`$edgeAgent.properties.desired.runtime.settings`): `{name: {address,
/// username, password}}`. A malformed entry refuses the bundle rather than
/// pulling without the credentials it meant to give.
fn deployment_logins(iot_edge_manifest: &Value) -> Result<Vec<DeploymentLogin>> {
    let pointer =
        "/modulesContent/$edgeAgent/properties.desired/runtime/settings/registryCredentials";
    let Some(entries) = iot_edge_manifest.pointer(pointer) else {
        return Ok(Vec::new());
    };
    let invalid = |what: String| Error::Refused(format!("IoT Edge manifest: {what}"));
    let entries = entries
        .as_object()
        .ok_or_else(|| invalid("registryCredentials is not an object".to_owned()))?;
    entries
        .iter()
        .map(|(name, entry)| {
            let shown = edge_bundle::display::escaped(name);
            let field = |key: &str| {
                entry.get(key).and_then(Value::as_str).ok_or_else(|| {
                    invalid(format!(
                        "registryCredentials.{shown} has no {key} string (address, username, password)"
                    ))
                })
            };
            let host = registry_host(field("address")?)
                .map_err(|why| invalid(format!("registryCredentials.{shown}.address: {why}")))?;
            Ok(DeploymentLogin {
                host,
                username: field("username")?.to_owned(),
                password: field("password")?.to_owned(),
            })
        })
        .collect()
}

/// Reads a device-side password file: a regular file only its owner can
/// read, its content without the line end. Its content never appears in an
/// error.
fn read_password(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let unreadable = |error: std::io::Error| {
        Error::Config(format!(
            "registry_credentials.password_file: cannot read {shown}: {error}"
        ))
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    let mode = metadata.permissions().mode() & 0o777;
    if !metadata.is_file() || mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "registry_credentials.password_file: {shown} must be a file only its owner can read (mode {mode:o}); chmod 600 it"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Error::Config(format!(
            "registry_credentials.password_file: {shown} is empty; write the password into it"
        )));
    }
    Ok(password.to_owned())
}

/// The record `pull-progress.json`: which process pulls what, and how far
/// it got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressRecord {
    /// The pulling process.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/PID/stat`), so that
    /// another process that got the same pid later is not mistaken for it.
    pub process_start: u64,
    /// The deployment whose images are pulled.
    pub deployment: String,
    /// Its version.
    pub version: u64,
    /// When the pull started, RFC 3339.
    pub started: String,
    /// When the record was last written, RFC 3339.
    pub updated: String,
    /// Per module.
    pub modules: BTreeMap<String, PullModuleReport>,
}

impl ProgressRecord {
    /// The path of the record inside `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(PROGRESS_FILE)
    }

    /// The pull in progress, for `edged status`: the record if one exists
    /// and the process that wrote it still runs. A record left by a process
    /// that crashed (or was killed) mid-pull names a process that is gone,
    /// or whose pid now belongs to a process started at another time: it is
    /// ignored (and left for the next pull to replace, since status only
    /// reads).
    pub fn load_live(state_dir: &Path) -> Option<PullReport> {
        let bytes = std::fs::read(Self::path(state_dir)).ok()?;
        let record: Self = serde_json::from_slice(&bytes).ok()?;
        if process_start(record.pid) != Some(record.process_start) {
            return None;
        }
        let age = humantime::parse_rfc3339(&record.updated)
            .ok()
            .and_then(|updated| SystemTime::now().duration_since(updated).ok())
            .unwrap_or_default();
        Some(PullReport {
            deployment: record.deployment,
            version: record.version,
            started: record.started,
            age_seconds: age.as_secs(),
            modules: record.modules,
        })
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`, counted after the command name, which may hold spaces
/// and parentheses), or `None` if no such process runs.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name come the state (field 3) … the start time (field 22).
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Where a running pull reports its bytes: the progress record for `edged
/// status`, and on a terminal a line per module on stderr. The record is
/// removed when the pull ends, however it ends.
pub struct Progress {
    record_path: Option<PathBuf>,
    record: ProgressRecord,
    /// Per module, per layer: downloaded and total bytes.
    layers: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
    terminal: bool,
    recorded: Option<Instant>,
    drawn: Option<Instant>,
    /// The module whose line the terminal shows, to end it with a newline
    /// when another module starts.
    drawing: Option<String>,
}

impl Progress {
    /// Progress of `pull`, recorded in `state_dir` and drawn on stderr when
    /// `terminal`.
    pub fn new(state_dir: &Path, pull: &ImagePull, terminal: bool) -> Self {
        let now = rfc3339_now();
        let pid = std::process::id();
        let record = ProgressRecord {
            pid,
            process_start: process_start(pid).unwrap_or_default(),
            deployment: pull.deployment.clone(),
            version: pull.version,
            started: now.clone(),
            updated: now,
            modules: pull
                .images
                .iter()
                .map(|image| {
                    let report = PullModuleReport {
                        reference: image.reference.clone(),
                        ..PullModuleReport::default()
                    };
                    (image.module.clone(), report)
                })
                .collect(),
        };
        let mut progress = Self {
            record_path: Some(ProgressRecord::path(state_dir)),
            record,
            layers: BTreeMap::new(),
            terminal,
            recorded: None,
            drawn: None,
            drawing: None,
        };
        progress.write_record();
        progress
    }

    /// Progress that goes nowhere, for runtimes that pull nothing.
    pub fn discarded() -> Self {
        Self {
            record_path: None,
            record: ProgressRecord {
                pid: 0,
                process_start: 0,
                deployment: String::new(),
                version: 0,
                started: String::new(),
                updated: String::new(),
                modules: BTreeMap::new(),
            },
            layers: BTreeMap::new(),
            terminal: false,
            recorded: None,
            drawn: None,
            drawing: None,
        }
    }

    /// A layer of `module`'s image has `current` of `total` bytes.
    pub fn layer(&mut self, module: &str, layer: &str, current: u64, total: u64) {
        self.layers
            .entry(module.to_owned())
            .or_default()
            .insert(layer.to_owned(), (current.min(total), total));
        self.sum(module);
        if self
            .recorded
            .is_none_or(|recorded| recorded.elapsed() >= RECORD_EVERY)
        {
            self.write_record();
        }
        if self.drawn.is_none_or(|drawn| drawn.elapsed() >= DRAW_EVERY) {
            self.draw(module, false);
        }
    }

    /// A layer of `module`'s image is downloaded completely.
    pub fn layer_complete(&mut self, module: &str, layer: &str) {
        if let Some(entry) = self
            .layers
            .get_mut(module)
            .and_then(|layers| layers.get_mut(layer))
        {
            entry.0 = entry.1;
        }
        self.sum(module);
    }

    /// `module`'s image is present in the engine.
    pub fn done(&mut self, module: &str) {
        if let Some(report) = self.record.modules.get_mut(module) {
            report.done = true;
        }
        self.write_record();
        if self.drawing.as_deref() == Some(module) {
            self.draw(module, true);
        }
    }

    fn sum(&mut self, module: &str) {
        let (current, total) = self
            .layers
            .get(module)
            .map(|layers| {
                layers
                    .values()
                    .fold((0, 0), |(current, total), (layer_current, layer_total)| {
                        (current + layer_current, total + layer_total)
                    })
            })
            .unwrap_or_default();
        if let Some(report) = self.record.modules.get_mut(module) {
            report.current_bytes = current;
            report.total_bytes = total;
        }
    }

    /// Replaces the record atomically (no fsync is needed: it describes a
    /// running process, and a crash makes it stale anyway). A failure only
    /// costs `edged status` its progress line, so it is logged, not
    /// returned.
    fn write_record(&mut self) {
        let Some(path) = &self.record_path else {
            return;
        };
        self.record.updated = rfc3339_now();
        self.recorded = Some(Instant::now());
        let written = serde_json::to_vec_pretty(&self.record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| durable::replace_file(path, &bytes, None));
        if let Err(error) = written {
            tracing::warn!(phase = "pull", path = %path.display(), "cannot record the pull's progress: {error}");
        }
    }

    /// Draws `module`'s line on the terminal (`\r`, then the bytes), ending
    /// it when `last`. A closed stderr costs the drawing, nothing else.
    fn draw(&mut self, module: &str, last: bool) {
        if !self.terminal {
            return;
        }
        let Some(report) = self.record.modules.get(module) else {
            return;
        };
        let mut stderr = std::io::stderr().lock();
        if let Some(previous) = &self.drawing
            && previous != module
        {
            let _ = writeln!(stderr);
        }
        let _ = write!(
            stderr,
            "\rpulling {module}: {} of {}{}",
            bytes(report.current_bytes),
            bytes(report.total_bytes),
            if last { ", done\n" } else { "   " }
        );
        let _ = stderr.flush();
        self.drawn = Some(Instant::now());
        self.drawing = (!last).then(|| module.to_owned());
    }
}

impl Drop for Progress {
    /// The record exists only while the pull runs.
    fn drop(&mut self) {
        if let Some(path) = &self.record_path {
            let _ = std::fs::remove_file(path);
        }
        if self.terminal && self.drawing.is_some() {
            let _ = writeln!(std::io::stderr().lock());
        }
    }
}

/// A byte count for people: `512 B`, `3.4 MiB`.
fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_addresses_normalise_to_the_host_references_name() {
        assert_eq!(registry_host("localhost:5000").unwrap(), "localhost:5000");
        assert_eq!(
            registry_host("https://MyRegistry.azurecr.io/").unwrap(),
            "myregistry.azurecr.io"
        );
        for hub in [
            "docker.io",
            "index.docker.io",
            "https://index.docker.io/v1/",
        ] {
            assert_eq!(registry_host(hub).unwrap(), "docker.io", "{hub}");
        }
        for bad in ["", "a b", "host:0", "host:99999", "-x.io"] {
            assert!(registry_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pinned_images_match_repo_digests_in_short_and_long_form() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let hub = PinnedImage::new("sensor", &format!("busybox:1.36@{digest}")).unwrap();
        assert_eq!(hub.pinned(), format!("docker.io/library/busybox@{digest}"));
        assert!(hub.is_among(&[format!("busybox@{digest}")]));
        assert!(hub.is_among(&[format!("index.docker.io/library/busybox@{digest}")]));
        assert!(!hub.is_among(&[format!("busybox@sha256:{}", "cd".repeat(32))]));
        let local =
            PinnedImage::new("sensor", &format!("localhost:5000/fleet/sensor@{digest}")).unwrap();
        assert!(local.is_among(&[format!("localhost:5000/fleet/sensor@{digest}")]));
        assert!(!local.is_among(&[format!("localhost:5001/fleet/sensor@{digest}")]));
    }

    #[test]
    fn engine_messages_classify_into_what_to_do() {
        let cases = [
            (
                Some(500),
                "Get \"https://localhost:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                PullFailure::Network,
            ),
            (
                Some(500),
                "Head \"https://localhost:1/v2/x/manifests/sha256:ab\": no basic auth credentials",
                PullFailure::Auth,
            ),
            (
                Some(500),
                "unauthorized: authentication required",
                PullFailure::Auth,
            ),
            (
                Some(404),
                "manifest for localhost:1/x@sha256:ab not found: manifest unknown: manifest unknown",
                PullFailure::NotFound,
            ),
            (
                None,
                "manifest verification failed for digest sha256:ab",
                PullFailure::DigestMismatch,
            ),
            (
                Some(500),
                "received unexpected HTTP status: 503 Service Unavailable",
                PullFailure::Registry,
            ),
        ];
        for (status, message, expected) in cases {
            assert_eq!(
                PullFailure::classify(status, message),
                expected,
                "{message}"
            );
        }
        assert!(PullFailure::Network.is_transient());
        assert!(PullFailure::Registry.is_transient());
        assert!(!PullFailure::Auth.is_transient());
        assert!(!PullFailure::DigestMismatch.is_transient());
        assert!(!PullFailure::NotFound.is_transient());
    }

    #[test]
    fn a_record_of_a_process_that_is_gone_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = ProgressRecord {
            pid: std::process::id(),
            process_start: process_start(std::process::id()).unwrap(),
            deployment: "plant".to_owned(),
            version: 3,
            started: rfc3339_now(),
            updated: rfc3339_now(),
            modules: BTreeMap::new(),
        };
        let write = |record: &ProgressRecord| {
            std::fs::write(
                ProgressRecord::path(dir.path()),
                serde_json::to_vec(record).unwrap(),
            )
            .unwrap();
        };
        write(&record);
        assert_eq!(ProgressRecord::load_live(dir.path()).unwrap().version, 3);
        // The same pid, started at another time: another process.
        record.process_start += 1;
        write(&record);
        assert_eq!(ProgressRecord::load_live(dir.path()), None);
    }

    #[test]
    fn device_passwords_must_be_private_and_are_never_shown() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.password");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_password(&path).unwrap_err().to_string();
        assert!(
            error.contains("chmod 600") && !error.contains("s3cret"),
            "{error}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&path).unwrap(), "s3cret");
    }
}
