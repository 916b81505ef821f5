//! The edge hub in edged: what the rest of edged needs from it, and the
//! module runtime that keeps it deployed.
//!
//! `edged run` serves the hub itself ([`crate::hub_server::LocalHub`], the
//! `edge_hub` crate's `HubServer`) and answers other edged processes on a
//! control socket ([`crate::control`]); those processes (`edged status`,
//! `edged apply` from a shell, `edged twin show`, …) reach the same hub
//! through [`crate::control::RemoteHub`]. Both implement [`ModuleHub`].
//!
//! [`HubRuntime`] wraps the module runtime so that every change of the
//! running deployment — an apply, a rollback, a recovery, or a change
//! another edged process made, noticed at the next supervision pass —
//! deploys the hub first (routes, module identities, desired twins), and
//! only then creates the containers, whose environment names the module's
//! generation id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use edge_hub::CallTimeouts;
use edge_init::status::HubReport;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::runtime::{Loaded, ModuleRuntime, ModuleStatus};

/// The hub's directory in a state directory: store, keys, certificates,
/// workload sockets and the control socket.
pub fn hub_dir(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("hub")
}

/// Where the path of a module's workload socket in
/// `IOTEDGE_WORKLOADURI` is seen from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// Inside the module's container, where the socket's directory is
    /// bind-mounted at [`CONTAINER_SOCKET_DIR`].
    Container,
    /// A plain process on the host (`--runtime none`), which uses the
    /// socket where the hub made it.
    Process,
}

/// Where a container sees its workload socket's directory, as on IoT Edge.
pub const CONTAINER_SOCKET_DIR: &str = "/var/run/iotedge";
/// The workload socket's file name inside its directory.
pub const SOCKET_FILE: &str = "workload.sock";

/// What a module needs to reach the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEnvironment {
    /// The `IOTEDGE_*` variables (and `RuntimeLogLevel`), in order.
    pub variables: Vec<(String, String)>,
    /// The host directory holding the module's workload socket, bind-mounted
    /// into its container.
    pub socket_dir: PathBuf,
    /// The name the module reaches the hub by; containers map it to the
    /// host.
    pub gateway_hostname: String,
}

/// A direct method's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodOutcome {
    /// The status the module answered with.
    pub status: i32,
    /// Its payload: JSON, or a string when the module answered something
    /// else.
    pub payload: Value,
}

/// The edge hub, served in this process or by `edged run`.
pub trait ModuleHub: Send + Sync {
    /// Installs the deployment's routes, module identities and desired
    /// twins; `None` removes every module.
    fn deploy(&self, deployment: Option<&Loaded>) -> Result<()>;
    /// What `module` needs to connect, seen from `place`; `None` when it is
    /// not in the deployment.
    fn environment(&self, module: &str, place: Place) -> Result<Option<ModuleEnvironment>>;
    /// Tells the hub which container runs `module`, for the workload API's
    /// peer check.
    fn set_container(&self, module: &str, container_id: Option<String>) -> Result<()>;
    /// Connections, counters, queues and reported properties per module.
    fn report(&self) -> Result<HubReport>;
    /// The runtime's state (deployment and module states), which the hub's
    /// cloud connection reports as the device twin's reported properties.
    /// A hub in another process has its own daemon to tell it: the default
    /// does nothing.
    fn report_runtime_state(&self, _state: serde_json::Map<String, Value>) {}
    /// Whether [`ModuleHub::report_runtime_state`] goes anywhere: only a
    /// hub with a cloud connection wants the runtime's state, which costs
    /// the module runtime a status query (a Docker inspect per module) at
    /// every supervision pass.
    fn wants_runtime_state(&self) -> bool {
        false
    }
    /// The module twin: `{"desired": …, "reported": …}`, each with `$version`.
    fn twin(&self, module: &str) -> Result<Value>;
    /// Invokes `method` on `module`: waits up to `timeouts.connect` for it
    /// to connect if it is not, then up to `timeouts.response` for its
    /// answer.
    fn invoke(
        &self,
        module: &str,
        method: &str,
        payload: Value,
        timeouts: CallTimeouts,
    ) -> Result<MethodOutcome>;
}

/// The module runtime with the hub deployed ahead of it.
pub struct HubRuntime {
    inner: Box<dyn ModuleRuntime>,
    hub: Arc<dyn ModuleHub>,
    /// The manifest digest of the deployment last deployed to the hub
    /// (`Some(None)`: none), `None` before the first deploy.
    deployed: Option<Option<String>>,
}

impl HubRuntime {
    /// `inner` with `hub` deployed before it reconciles.
    pub fn new(inner: Box<dyn ModuleRuntime>, hub: Arc<dyn ModuleHub>) -> Self {
        Self {
            inner,
            hub,
            deployed: None,
        }
    }
}

/// The manifest digest that identifies a deployment.
fn digest(deployment: Option<&Loaded>) -> Result<Option<String>> {
    deployment
        .map(|loaded| {
            loaded
                .manifest
                .digest()
                .map(|digest| digest.hex())
                .map_err(|error| {
                    Error::CorruptState(format!("cannot digest the manifest: {error}"))
                })
        })
        .transpose()
}

impl ModuleRuntime for HubRuntime {
    fn fetch_images(
        &mut self,
        pull: &crate::pull::ImagePull,
        progress: &mut crate::pull::Progress,
    ) -> Result<()> {
        self.inner.fetch_images(pull, progress)
    }

    fn reconcile(&mut self, deployment: Option<&Loaded>) -> Result<()> {
        self.hub.deploy(deployment)?;
        self.deployed = Some(digest(deployment)?);
        self.inner.reconcile(deployment)
    }

    fn health(&mut self, deployment: &Loaded, window: Duration) -> std::result::Result<(), String> {
        self.inner.health(deployment, window)
    }

    fn supervise(&mut self, deployment: Option<&Loaded>) -> Result<()> {
        // A daemon that just started, or whose deployment another edged
        // process changed, has not deployed the hub for what runs: it does,
        // and recreates the containers whose environment changed with it.
        if self.deployed.as_ref() != Some(&digest(deployment)?) {
            self.reconcile(deployment)?;
        }
        self.inner.supervise(deployment)?;
        if self.hub.wants_runtime_state() {
            let modules = self.inner.status(deployment)?;
            self.hub
                .report_runtime_state(runtime_state(deployment, &modules)?);
        }
        Ok(())
    }

    fn status(&mut self, deployment: Option<&Loaded>) -> Result<Vec<(String, ModuleStatus)>> {
        self.inner.status(deployment)
    }

    fn restart_counts(&self) -> BTreeMap<String, u32> {
        self.inner.restart_counts()
    }

    fn restore_restart_counts(&mut self, counts: &BTreeMap<String, u32>) {
        self.inner.restore_restart_counts(counts);
    }
}

/// The device twin's reported properties: the deployment (name, version,
/// manifest digest) and each module's state, as `edged status` shows them.
/// The cloud gets what changed; a module that left the deployment is
/// deleted from the cloud's copy.
fn runtime_state(
    deployment: Option<&Loaded>,
    modules: &[(String, ModuleStatus)],
) -> Result<serde_json::Map<String, Value>> {
    let deployment = match deployment {
        None => Value::Null,
        Some(loaded) => serde_json::json!({
            "name": loaded.manifest.deployment,
            "version": loaded.manifest.version,
            "manifestDigest": digest(Some(loaded))?,
        }),
    };
    let modules: serde_json::Map<String, Value> = modules
        .iter()
        .map(|(name, status)| {
            (
                name.clone(),
                serde_json::to_value(status).unwrap_or(Value::Null),
            )
        })
        .collect();
    Ok(serde_json::Map::from_iter([
        ("deployment".to_owned(), deployment),
        ("modules".to_owned(), Value::Object(modules)),
    ]))
}

/// What the hub is given from a deployment's IoT Edge manifest, besides the
/// route table: each module's desired properties and the store's
/// time-to-live.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManifestHubContent {
    /// Desired properties per user module (without `$version`, which the hub
    /// keeps).
    pub desired: BTreeMap<String, Value>,
    /// `$edgeHub`'s `storeAndForwardConfiguration.timeToLiveSecs`.
    pub time_to_live: Option<Duration>,
}

/// Reads the desired twins of `loaded`'s modules and `$edgeHub`'s
/// store-and-forward time-to-live from the bundle's IoT Edge manifest.
pub fn manifest_content(loaded: &Loaded) -> Result<ManifestHubContent> {
    let invalid = |what: String| Error::Refused(format!("IoT Edge manifest: {what}"));
    let content = loaded.manifest.iot_edge_manifest.get("modulesContent");
    let desired_of = |module: &str| {
        content
            .and_then(|content| content.get(module))
            .and_then(|module| module.get("properties.desired"))
    };
    let mut desired = BTreeMap::new();
    for module in &loaded.modules {
        let properties = match desired_of(&module.name) {
            None => Value::Object(serde_json::Map::new()),
            Some(Value::Object(properties)) => {
                let mut properties = properties.clone();
                properties.remove("$version");
                Value::Object(properties)
            }
            Some(_) => {
                return Err(invalid(format!(
                    "the desired properties of module {} are not an object",
                    module.name
                )));
            }
        };
        desired.insert(module.name.clone(), properties);
    }
    let time_to_live = match desired_of("$edgeHub")
        .and_then(|hub| hub.pointer("/storeAndForwardConfiguration/timeToLiveSecs"))
    {
        None => None,
        Some(seconds) => Some(Duration::from_secs(seconds.as_u64().ok_or_else(|| {
            invalid(format!(
                "storeAndForwardConfiguration.timeToLiveSecs is {seconds}, not a number of seconds"
            ))
        })?)),
    };
    Ok(ManifestHubContent {
        desired,
        time_to_live,
    })
}

/// `IOTEDGE_WORKLOADURI` for a module whose socket is in `socket_dir`, as
/// seen from `place`.
pub fn workload_uri(socket_dir: &std::path::Path, place: Place) -> String {
    match place {
        Place::Container => format!("unix://{CONTAINER_SOCKET_DIR}/{SOCKET_FILE}"),
        Place::Process => format!("unix://{}", socket_dir.join(SOCKET_FILE).display()),
    }
}

/// A method payload as JSON: the module's bytes parsed, or as a string when
/// they are not JSON (the SDKs send JSON; a module may send anything).
pub fn payload_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn loaded(iot_edge_manifest: Value, modules: &[&str]) -> Loaded {
        let manifest = edge_bundle::BundleManifest {
            format_version: 1,
            deployment: "plant".to_owned(),
            compatible: "c".to_owned(),
            architecture: edge_bundle::Architecture::Amd64,
            version: 1,
            created: "1970-01-01T00:00:00Z".to_owned(),
            expires: None,
            iot_edge_manifest,
            route_table: json!([]),
            images: Vec::new(),
            registry_images: Vec::new(),
            os: None,
            payload: Vec::new(),
        };
        Loaded {
            dir: PathBuf::from("/nowhere"),
            manifest,
            modules: modules
                .iter()
                .map(|name| crate::deployment::ModuleSpec {
                    name: (*name).to_owned(),
                    version: String::new(),
                    image: "i".to_owned(),
                    running: true,
                    restart: crate::deployment::RestartPolicy::Always,
                    startup_order: 0,
                    env: BTreeMap::new(),
                    create_options: serde_json::Map::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn desired_twins_and_ttl_come_from_modules_content() {
        let manifest = json!({"modulesContent": {
            "$edgeAgent": {"properties.desired": {"modules": {}}},
            "$edgeHub": {"properties.desired": {
                "routes": {},
                "storeAndForwardConfiguration": {"timeToLiveSecs": 600}
            }},
            "filter": {"properties.desired": {"threshold": 25, "$version": 3}}
        }});
        let content = manifest_content(&loaded(manifest, &["filter", "sink"])).unwrap();
        assert_eq!(content.desired["filter"], json!({"threshold": 25}));
        assert_eq!(content.desired["sink"], json!({}));
        assert_eq!(content.time_to_live, Some(Duration::from_secs(600)));

        let bad = json!({"modulesContent": {"filter": {"properties.desired": [1]}}});
        let error = manifest_content(&loaded(bad, &["filter"])).unwrap_err();
        assert!(error.to_string().contains("not an object"), "{error}");
        let bad_ttl = json!({"modulesContent": {"$edgeHub": {"properties.desired": {
            "storeAndForwardConfiguration": {"timeToLiveSecs": -1}
        }}}});
        let error = manifest_content(&loaded(bad_ttl, &[])).unwrap_err();
        assert!(
            error.to_string().contains("timeToLiveSecs is -1"),
            "{error}"
        );
    }

    #[test]
    fn workload_uris_and_payloads() {
        let dir = std::path::Path::new("/var/lib/edged/hub/workload/sink");
        assert_eq!(
            workload_uri(dir, Place::Container),
            "unix:///var/run/iotedge/workload.sock"
        );
        assert_eq!(
            workload_uri(dir, Place::Process),
            "unix:///var/lib/edged/hub/workload/sink/workload.sock"
        );
        assert_eq!(payload_json(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(payload_json(b"\xffnot json"), json!("\u{fffd}not json"));
    }
}
