//! Module supervision on a Docker engine through bollard.
//!
//! Containers carry labels naming the edged instance, deployment, module,
//! version and a hash of their create body; edged only ever lists, stops or
//! removes containers carrying its own instance label. Docker's own restart
//! policy is switched off: edged restarts modules itself, with exponential
//! back-off that is capped but never gives up.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ImportImageOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::RestartConfig;
use crate::deployment::ModuleSpec;
use crate::error::{Error, Result};
use crate::hub::{CONTAINER_SOCKET_DIR, ModuleEnvironment, ModuleHub, Place};
use crate::layout_tar::LayoutTar;
use crate::pull::{ImagePull, Login, PinnedImage, Progress, PullFailure};
use crate::runtime::{Loaded, ModuleRuntime, ModuleStatus};

/// The oldest engine API edged speaks (Docker 20.10).
const MINIMUM_API: (u32, u32) = (1, 41);
/// Label: which edged instance owns the container.
pub const LABEL_INSTANCE: &str = "io.edgec.instance";
/// Label: the deployment name.
pub const LABEL_DEPLOYMENT: &str = "io.edgec.deployment";
/// Label: the module name.
pub const LABEL_MODULE: &str = "io.edgec.module";
/// Label: the module version.
pub const LABEL_VERSION: &str = "io.edgec.version";
/// Label: hash of the create body, so any change recreates the container.
pub const LABEL_SPEC: &str = "io.edgec.spec";
/// How often the health window polls the engine.
const POLL: Duration = Duration::from_millis(250);

/// Restart bookkeeping for one module.
#[derive(Clone, Debug, Default)]
struct Backoff {
    /// Restarts of the module in this deployment, as reported and recorded.
    restarts: u32,
    /// Restarts since this edged process started: the back-off exponent,
    /// so that after a reboot a module is tried again soon rather than
    /// after the longest delay.
    streak: u32,
    next_attempt: Option<Instant>,
}

/// A Docker engine that runs one edged instance's modules.
pub struct DockerEngine {
    docker: Docker,
    runtime: tokio::runtime::Runtime,
    instance: String,
    restart: RestartConfig,
    backoff: BTreeMap<String, Backoff>,
    /// The hub the modules connect to, when one is served.
    hub: Option<std::sync::Arc<dyn ModuleHub>>,
}

/// Whether a Docker engine answers with a supported API, for tests that skip
/// without one.
pub fn engine_available() -> bool {
    DockerEngine::connect("probe", RestartConfig::default()).is_ok()
}

impl DockerEngine {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket)
    /// and checks that it speaks API 1.41 or newer.
    pub fn connect(instance: &str, restart: RestartConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| Error::Docker(format!("cannot start the I/O runtime: {error}")))?;
        let docker = Docker::connect_with_local_defaults().map_err(|error| {
            Error::Docker(format!("cannot connect to the Docker engine: {error}"))
        })?;
        let version = runtime.block_on(docker.version()).map_err(|error| {
            Error::Docker(format!("the Docker engine does not answer: {error}"))
        })?;
        let api = version.api_version.unwrap_or_default();
        if parse_api(&api).is_none_or(|found| found < MINIMUM_API) {
            return Err(Error::Docker(format!(
                "the Docker engine speaks API {api:?}, edged needs {}.{} or newer",
                MINIMUM_API.0, MINIMUM_API.1
            )));
        }
        Ok(Self {
            docker,
            runtime,
            instance: instance.to_owned(),
            restart,
            backoff: BTreeMap::new(),
            hub: None,
        })
    }

    /// Gives every module container what it needs to reach `hub`: its
    /// IOTEDGE_* environment, its workload socket and the gateway's host
    /// name.
    pub fn with_hub(mut self, hub: std::sync::Arc<dyn ModuleHub>) -> Self {
        self.hub = Some(hub);
        self
    }

    /// The container name of a module: the module name, as IoT Edge names
    /// it, prefixed by the instance unless it is the default one.
    pub fn container_name(&self, module: &str) -> String {
        container_name(&self.instance, module)
    }

    /// Loads the bundle's packaged images (`docker load` of each layout),
    /// streaming each layout as a tar rather than building it in memory.
    fn load_images(&self, loaded: &Loaded) -> Result<()> {
        for image in &loaded.manifest.images {
            let archive = LayoutTar::new(&loaded.dir.join(&image.path)).map_err(|error| {
                Error::Docker(format!(
                    "cannot package the image of {}: {error}",
                    image.module
                ))
            })?;
            let options = ImportImageOptionsBuilder::new().quiet(true).build();
            let body = bollard::body_try_stream(futures_util::stream::iter(
                archive.map(|piece| piece.map(Into::into)),
            ));
            let mut stream = self.docker.import_image(options, body, None);
            self.runtime.block_on(async {
                while let Some(item) = stream.next().await {
                    item.map_err(|error| {
                        Error::Docker(format!(
                            "docker load of {} failed: {error}",
                            image.reference
                        ))
                    })?;
                }
                Ok::<(), Error>(())
            })?;
        }
        Ok(())
    }

    /// Whether the engine holds `image` with its pinned digest: an image
    /// found under `name@sha256:…` whose `RepoDigests` name it.
    fn has_pinned(&self, image: &PinnedImage) -> Result<bool> {
        match self
            .runtime
            .block_on(self.docker.inspect_image(&image.pinned()))
        {
            Ok(inspect) => Ok(image.is_among(&inspect.repo_digests.unwrap_or_default())),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(error) => Err(image.failure(
                PullFailure::Engine,
                format!("cannot inspect {}: {error}", image.pinned()),
            )),
        }
    }

    /// Pulls `image` by digest (`docker pull name@sha256:…`) with `login`,
    /// reporting the bytes of each layer as they arrive.
    fn pull(
        &self,
        image: &PinnedImage,
        login: Option<Login>,
        progress: &mut Progress,
    ) -> Result<()> {
        let pinned = image.pinned();
        let options = CreateImageOptionsBuilder::new().from_image(&pinned).build();
        let credentials = login.map(|login| DockerCredentials {
            username: Some(login.username),
            password: Some(login.password),
            serveraddress: Some(login.host),
            ..DockerCredentials::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        self.runtime.block_on(async {
            while let Some(item) = stream.next().await {
                let info = item.map_err(|error| pull_error(image, error))?;
                if let Some(detail) = info.error_detail {
                    let message = detail.message.unwrap_or_default();
                    return Err(image.failure(PullFailure::classify(None, &message), message));
                }
                let (Some(layer), Some(status)) = (info.id.as_deref(), info.status.as_deref())
                else {
                    continue;
                };
                match status {
                    // Extracting reports progress too, in bytes of the
                    // unpacked layer: only the download is counted.
                    "Downloading" => {
                        if let Some(detail) = info.progress_detail {
                            let current = detail.current.unwrap_or(0).max(0) as u64;
                            let total = detail.total.unwrap_or(0).max(0) as u64;
                            progress.layer(&image.module, layer, current, total);
                        }
                    }
                    "Download complete" | "Pull complete" => {
                        progress.layer_complete(&image.module, layer);
                    }
                    _ => {}
                }
            }
            Ok::<(), Error>(())
        })
    }

    /// The containers of this instance, by name.
    fn owned(&self) -> Result<Vec<(String, HashMap<String, String>)>> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![format!("{LABEL_INSTANCE}={}", self.instance)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .runtime
            .block_on(self.docker.list_containers(Some(options)))
            .map_err(|error| Error::Docker(format!("cannot list containers: {error}")))?;
        Ok(containers
            .into_iter()
            .filter_map(|container| {
                let labels = container.labels.unwrap_or_default();
                if labels.get(LABEL_INSTANCE) != Some(&self.instance) {
                    return None;
                }
                let name = container.names?.first()?.trim_start_matches('/').to_owned();
                Some((name, labels))
            })
            .collect())
    }

    /// Stops and removes a container edged owns.
    fn remove(&self, name: &str) -> Result<()> {
        let stop = StopContainerOptionsBuilder::new().t(10).build();
        let _ = self
            .runtime
            .block_on(self.docker.stop_container(name, Some(stop)));
        let remove = RemoveContainerOptionsBuilder::new().force(true).build();
        self.runtime
            .block_on(self.docker.remove_container(name, Some(remove)))
            .map_err(|error| Error::Docker(format!("cannot remove container {name}: {error}")))
    }

    fn start(&self, name: &str) -> Result<()> {
        self.runtime
            .block_on(self.docker.start_container(name, None))
            .map_err(|error| Error::Docker(format!("cannot start container {name}: {error}")))
    }

    /// The container's `State` object as JSON, or `None` if it is gone.
    fn inspect_state(&self, name: &str) -> Result<Option<Value>> {
        match self
            .runtime
            .block_on(self.docker.inspect_container(name, None))
        {
            Ok(inspect) => Ok(Some(
                serde_json::to_value(inspect.state).unwrap_or(Value::Null),
            )),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(Error::Docker(format!("cannot inspect {name}: {error}"))),
        }
    }

    /// The container id of a container, or `None` if it is gone.
    fn container_id(&self, name: &str) -> Result<Option<String>> {
        match self
            .runtime
            .block_on(self.docker.inspect_container(name, None))
        {
            Ok(inspect) => Ok(inspect.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(error) => Err(Error::Docker(format!("cannot inspect {name}: {error}"))),
        }
    }

    /// The create body of a module, with edged's labels.
    fn create_body(
        &self,
        deployment: &str,
        module: &ModuleSpec,
    ) -> Result<(ContainerCreateBody, String)> {
        let hub = match &self.hub {
            Some(hub) => hub.environment(&module.name, Place::Container)?,
            None => None,
        };
        let body = create_body(&self.instance, deployment, module, hub.as_ref());
        let spec = hex::encode(Sha256::digest(body.to_string().as_bytes()));
        let mut body = body;
        body["Labels"][LABEL_SPEC] = json!(spec);
        let typed = serde_json::from_value(body).map_err(|error| {
            Error::Docker(format!(
                "create options of module {} are not valid: {error}",
                module.name
            ))
        })?;
        Ok((typed, spec))
    }
}

/// See [`DockerEngine::container_name`].
pub fn container_name(instance: &str, module: &str) -> String {
    if instance == "default" {
        module.to_owned()
    } else {
        format!("{instance}.{module}")
    }
}

/// The Docker create body: the module's create options, its image and
/// environment, edged's labels, and no Docker restart policy; with a hub,
/// the IOTEDGE_* environment, the module's workload socket directory at
/// `/var/run/iotedge` and the gateway host name mapped to the host.
///
/// The module keeps the network its create options give it (Docker's
/// default bridge unless they say otherwise): `host-gateway` is the host's
/// address on the default bridge, where the hub listens (`0.0.0.0:8883`),
/// so no network of edged's own is needed and host networking is not
/// imposed.
fn create_body(
    instance: &str,
    deployment: &str,
    module: &ModuleSpec,
    hub: Option<&ModuleEnvironment>,
) -> Value {
    let mut body: Map<String, Value> = module.create_options.clone();
    body.insert("Image".into(), json!(module.image));
    let mut env: Vec<Value> = body
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (key, value) in &module.env {
        env.push(json!(format!("{key}={value}")));
    }
    if let Some(hub) = hub {
        // The hub's variables are edged's to set, as edgeAgent's are: a
        // module's own value for one of them is replaced, not kept beside it.
        env.retain(|entry| {
            let key = entry.as_str().and_then(|text| text.split('=').next());
            !hub.variables
                .iter()
                .any(|(name, _)| Some(name.as_str()) == key)
        });
        for (key, value) in &hub.variables {
            env.push(json!(format!("{key}={value}")));
        }
    }
    body.insert("Env".into(), Value::Array(env));
    let labels = body.entry("Labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[LABEL_INSTANCE] = json!(instance);
    labels[LABEL_DEPLOYMENT] = json!(deployment);
    labels[LABEL_MODULE] = json!(module.name);
    labels[LABEL_VERSION] = json!(module.version);
    let host = body.entry("HostConfig").or_insert_with(|| json!({}));
    if !host.is_object() {
        *host = json!({});
    }
    host["RestartPolicy"] = json!({ "Name": "no" });
    if let Some(hub) = hub {
        append(
            host,
            "Binds",
            format!("{}:{CONTAINER_SOCKET_DIR}", hub.socket_dir.display()),
        );
        append(
            host,
            "ExtraHosts",
            format!("{}:host-gateway", hub.gateway_hostname),
        );
    }
    Value::Object(body)
}

/// Appends `entry` to the string list `key` of `object`, keeping what the
/// create options put there (a list of something else is replaced).
fn append(object: &mut Value, key: &str, entry: String) {
    let list = &mut object[key];
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(list) = list.as_array_mut() {
        list.push(json!(entry));
    }
}

/// Parses `1.41` into (1, 41).
fn parse_api(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Reads a string field of a container state.
fn field<'a>(state: &'a Value, name: &str) -> &'a str {
    state.get(name).and_then(Value::as_str).unwrap_or("")
}

fn health_of(state: &Value) -> Option<String> {
    state
        .pointer("/Health/Status")
        .and_then(Value::as_str)
        .filter(|status| !status.is_empty() && *status != "none")
        .map(str::to_owned)
}

/// Docker reports "never" as the zero time.
fn time_field(state: &Value, name: &str) -> Option<String> {
    Some(field(state, name))
        .filter(|time| !time.is_empty() && !time.starts_with("0001-"))
        .map(str::to_owned)
}

/// A pull that failed, as the engine reported it: the registry's answer
/// passed on by the engine is classified; an engine that does not answer is
/// an engine failure.
fn pull_error(image: &PinnedImage, error: bollard::errors::Error) -> Error {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => image.failure(PullFailure::classify(Some(status_code), &message), message),
        bollard::errors::Error::DockerStreamError { error } => {
            image.failure(PullFailure::classify(None, &error), error)
        }
        other => image.failure(PullFailure::Engine, other.to_string()),
    }
}

impl ModuleRuntime for DockerEngine {
    fn fetch_images(&mut self, pull: &ImagePull, progress: &mut Progress) -> Result<()> {
        for image in &pull.images {
            if self.has_pinned(image)? {
                tracing::info!(
                    phase = "pull",
                    module = image.module,
                    reference = image.reference,
                    "image present with the pinned digest; not pulled"
                );
                progress.done(&image.module);
                continue;
            }
            let login = pull.login_for(image)?;
            tracing::info!(
                phase = "pull",
                module = image.module,
                reference = image.reference,
                registry = image.host,
                credentials = login.as_ref().map_or("none", |login| login.source),
                "pulling the image by digest"
            );
            self.pull(image, login, progress)?;
            // The engine checks the digest of what it pulls by digest; the
            // check here makes sure of it, whatever the engine.
            if !self.has_pinned(image)? {
                return Err(image.failure(
                    PullFailure::DigestMismatch,
                    "a pulled image whose digest differs from the pinned one is refused",
                ));
            }
            tracing::info!(
                phase = "pull",
                module = image.module,
                reference = image.reference,
                "pulled"
            );
            progress.done(&image.module);
        }
        Ok(())
    }

    fn reconcile(&mut self, deployment: Option<&Loaded>) -> Result<()> {
        let empty = Vec::new();
        let (name, modules) = match deployment {
            Some(loaded) => {
                self.load_images(loaded)?;
                (loaded.manifest.deployment.as_str(), &loaded.modules)
            }
            None => ("", &empty),
        };
        let mut desired = Vec::new();
        for module in modules {
            let (body, spec) = self.create_body(name, module)?;
            desired.push((module, self.container_name(&module.name), body, spec));
        }
        let existing = self.owned()?;
        for (container, labels) in &existing {
            let keep = desired.iter().any(|(_, wanted, _, spec)| {
                wanted == container && labels.get(LABEL_SPEC) == Some(spec)
            });
            if !keep {
                self.remove(container)?;
            }
        }
        for (module, container, body, spec) in desired {
            let present = existing
                .iter()
                .any(|(name, labels)| *name == container && labels.get(LABEL_SPEC) == Some(&spec));
            if !present {
                let options = CreateContainerOptionsBuilder::new()
                    .name(&container)
                    .build();
                self.runtime
                    .block_on(self.docker.create_container(Some(options), body))
                    .map_err(|error| {
                        Error::Docker(format!("cannot create container {container}: {error}"))
                    })?;
            }
            self.backoff.remove(&module.name);
            if let Some(hub) = &self.hub {
                hub.set_container(&module.name, self.container_id(&container)?)?;
            }
            let running = self
                .inspect_state(&container)?
                .is_some_and(|state| state.get("Running") == Some(&Value::Bool(true)));
            if module.running && !running {
                self.start(&container)?;
            }
        }
        Ok(())
    }

    fn health(&mut self, deployment: &Loaded, window: Duration) -> std::result::Result<(), String> {
        let watched: Vec<(&ModuleSpec, String)> = deployment
            .modules
            .iter()
            .filter(|module| module.running)
            .map(|module| (module, self.container_name(&module.name)))
            .collect();
        let mut started = BTreeMap::new();
        let deadline = Instant::now() + window;
        loop {
            let mut all_healthy = true;
            for (module, container) in &watched {
                let state = self
                    .inspect_state(container)
                    .map_err(|error| error.to_string())?
                    .ok_or_else(|| format!("module {} has no container", module.name))?;
                let exit = state.get("ExitCode").and_then(Value::as_i64).unwrap_or(0);
                if state.get("Running") != Some(&Value::Bool(true)) {
                    if exit != 0 || module.restart == crate::deployment::RestartPolicy::Always {
                        return Err(format!(
                            "module {} exited with code {exit} during the health window",
                            module.name
                        ));
                    }
                    continue;
                }
                let start = field(&state, "StartedAt").to_owned();
                if started
                    .entry(module.name.clone())
                    .or_insert_with(|| start.clone())
                    != &start
                {
                    return Err(format!(
                        "module {} restarted during the health window",
                        module.name
                    ));
                }
                match health_of(&state).as_deref() {
                    Some("unhealthy") => {
                        return Err(format!("module {} failed its health check", module.name));
                    }
                    Some("starting") => all_healthy = false,
                    _ => {}
                }
            }
            let now = Instant::now();
            if now >= deadline && all_healthy {
                return Ok(());
            }
            if now >= deadline + window.max(Duration::from_secs(30)) {
                return Err("health checks did not report healthy in time".to_owned());
            }
            std::thread::sleep(POLL);
        }
    }

    fn supervise(&mut self, deployment: Option<&Loaded>) -> Result<()> {
        let Some(loaded) = deployment else {
            return Ok(());
        };
        for module in loaded.modules.iter().filter(|module| module.running) {
            let container = self.container_name(&module.name);
            let Some(state) = self.inspect_state(&container)? else {
                return self.reconcile(Some(loaded));
            };
            let running = state.get("Running") == Some(&Value::Bool(true));
            let unhealthy = health_of(&state).as_deref() == Some("unhealthy");
            let exit = state.get("ExitCode").and_then(Value::as_i64).unwrap_or(0);
            let backoff = self.backoff.entry(module.name.clone()).or_default();
            if running && !unhealthy {
                continue;
            }
            if !module
                .restart
                .restarts_after(if running { 0 } else { exit }, unhealthy)
            {
                continue;
            }
            let now = Instant::now();
            match backoff.next_attempt {
                None => {
                    backoff.restarts += 1;
                    backoff.streak += 1;
                    let delay = self.restart.delay(backoff.streak);
                    backoff.next_attempt = Some(now + delay);
                    let reason = if unhealthy {
                        "failed its health check".to_owned()
                    } else {
                        format!("exited with code {exit}")
                    };
                    tracing::warn!(
                        phase = "supervise",
                        deployment = loaded.manifest.deployment,
                        version = loaded.manifest.version,
                        module = module.name,
                        restart = backoff.restarts,
                        delay = %humantime::format_duration(delay),
                        reason,
                        "module stopped; restarting after a back-off"
                    );
                }
                Some(when) if now >= when => {
                    backoff.next_attempt = None;
                    tracing::info!(
                        phase = "supervise",
                        deployment = loaded.manifest.deployment,
                        version = loaded.manifest.version,
                        module = module.name,
                        restart = backoff.restarts,
                        "restarting module"
                    );
                    if running {
                        let _ = self
                            .runtime
                            .block_on(self.docker.restart_container(&container, None));
                    } else {
                        self.start(&container)?;
                    }
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn restart_counts(&self) -> BTreeMap<String, u32> {
        self.backoff
            .iter()
            .filter(|(_, backoff)| backoff.restarts > 0)
            .map(|(module, backoff)| (module.clone(), backoff.restarts))
            .collect()
    }

    fn restore_restart_counts(&mut self, counts: &BTreeMap<String, u32>) {
        for (module, &restarts) in counts {
            self.backoff.entry(module.clone()).or_default().restarts = restarts;
        }
    }

    fn status(&mut self, deployment: Option<&Loaded>) -> Result<Vec<(String, ModuleStatus)>> {
        let Some(loaded) = deployment else {
            return Ok(Vec::new());
        };
        let mut report = Vec::new();
        for module in &loaded.modules {
            let container = self.container_name(&module.name);
            let backoff = self.backoff.get(&module.name).cloned().unwrap_or_default();
            let status = match self.inspect_state(&container)? {
                None => ModuleStatus {
                    runtime_status: "unknown".to_owned(),
                    ..ModuleStatus::default()
                },
                Some(state) => {
                    let exit_code = state.get("ExitCode").and_then(Value::as_i64).unwrap_or(0);
                    let runtime_status = if state.get("Running") == Some(&Value::Bool(true)) {
                        "running"
                    } else if backoff.next_attempt.is_some() {
                        "backoff"
                    } else if exit_code != 0 {
                        "failed"
                    } else {
                        "stopped"
                    };
                    ModuleStatus {
                        runtime_status: runtime_status.to_owned(),
                        exit_code,
                        restart_count: backoff.restarts,
                        last_start_time_utc: time_field(&state, "StartedAt"),
                        last_exit_time_utc: time_field(&state, "FinishedAt"),
                        health: health_of(&state),
                    }
                }
            };
            report.push((module.name.clone(), status));
        }
        Ok(report)
    }
}

/// Removes every container of an instance; for tests and decommissioning.
pub fn remove_instance(instance: &str) -> Result<()> {
    let engine = DockerEngine::connect(instance, RestartConfig::default())?;
    for (name, _) in engine.owned()? {
        engine.remove(&name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_numerically() {
        assert_eq!(parse_api("1.41"), Some((1, 41)));
        assert!(parse_api("1.9").unwrap() < MINIMUM_API);
        assert!(parse_api("1.43").unwrap() > MINIMUM_API);
        assert_eq!(parse_api("x"), None);
    }

    #[test]
    fn create_bodies_carry_labels_and_no_docker_restart_policy() {
        let module = ModuleSpec {
            name: "sensor".into(),
            version: "1.0".into(),
            image: "edgec.local/sensor:1.0".into(),
            running: true,
            restart: crate::deployment::RestartPolicy::Always,
            startup_order: 1,
            env: [("A".to_owned(), "b".to_owned())].into(),
            create_options: serde_json::from_str(
                r#"{"Env":["X=1"],"HostConfig":{"RestartPolicy":{"Name":"always"},"Memory":1}}"#,
            )
            .unwrap(),
        };
        let body = create_body("site-1", "plant", &module, None);
        assert_eq!(body["Env"], json!(["X=1", "A=b"]));
        assert_eq!(body["HostConfig"]["RestartPolicy"]["Name"], "no");
        assert_eq!(body["HostConfig"]["Memory"], 1);
        assert_eq!(body["Labels"][LABEL_MODULE], "sensor");
        assert_eq!(body["Labels"][LABEL_INSTANCE], "site-1");
        assert_eq!(container_name("site-1", "sensor"), "site-1.sensor");
        assert_eq!(container_name("default", "sensor"), "sensor");
    }

    #[test]
    fn create_bodies_with_a_hub_get_its_environment_socket_and_host() {
        let module = ModuleSpec {
            name: "sink".into(),
            version: "1.0".into(),
            image: "i".into(),
            running: true,
            restart: crate::deployment::RestartPolicy::Always,
            startup_order: 1,
            env: [("IOTEDGE_MODULEID".to_owned(), "forged".to_owned())].into(),
            create_options: serde_json::from_str(
                r#"{"Env":["X=1"],"HostConfig":{"Binds":["/data:/data"],"ExtraHosts":["db:10.0.0.2"]}}"#,
            )
            .unwrap(),
        };
        let hub = ModuleEnvironment {
            variables: vec![
                ("IOTEDGE_MODULEID".to_owned(), "sink".to_owned()),
                (
                    "IOTEDGE_WORKLOADURI".to_owned(),
                    "unix:///var/run/iotedge/workload.sock".to_owned(),
                ),
            ],
            socket_dir: "/var/lib/edged/hub/workload/sink".into(),
            gateway_hostname: "edged".to_owned(),
        };
        let body = create_body("default", "plant", &module, Some(&hub));
        assert_eq!(
            body["Env"],
            json!([
                "X=1",
                "IOTEDGE_MODULEID=sink",
                "IOTEDGE_WORKLOADURI=unix:///var/run/iotedge/workload.sock"
            ])
        );
        assert_eq!(
            body["HostConfig"]["Binds"],
            json!([
                "/data:/data",
                "/var/lib/edged/hub/workload/sink:/var/run/iotedge"
            ])
        );
        assert_eq!(
            body["HostConfig"]["ExtraHosts"],
            json!(["db:10.0.0.2", "edged:host-gateway"])
        );
        let plain = create_body("default", "plant", &module, None);
        assert_eq!(plain["Env"], json!(["X=1", "IOTEDGE_MODULEID=forged"]));
        assert_eq!(plain["HostConfig"]["Binds"], json!(["/data:/data"]));
        assert_eq!(plain["HostConfig"]["ExtraHosts"], json!(["db:10.0.0.2"]));
        // The typed body accepts the merged fields.
        let typed: ContainerCreateBody = serde_json::from_value(body).unwrap();
        assert_eq!(
            typed.host_config.unwrap().extra_hosts.unwrap(),
            vec!["db:10.0.0.2", "edged:host-gateway"]
        );
    }
}
