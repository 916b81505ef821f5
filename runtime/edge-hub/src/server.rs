//! The hub as edged runs it: a tokio runtime of its own beside edged's
//! synchronous daemon, the [`Hub`], the device CA and server certificate,
//! and the listeners (MQTT/TLS, the HTTPS method gateway, metrics, one
//! workload socket per module). Every method here blocks the calling thread
//! and must not be called from inside an async task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::certs::{CaKeySource, CertError, Certificates};
use crate::config::HubConfig;
use crate::gateway::{self, Backend, BoxFuture, MethodCall};
use crate::hub::{Hub, HubDeployment, HubError, HubStats};
use crate::keys::KeyStore;
use crate::methods::{CallTimeouts, MethodError, MethodResponse};
use crate::metrics::{self, Instance, MethodCounts};
use crate::sas::SasToken;
use crate::twin::Twin;
use crate::upstream::{Upstream, UpstreamConfig, UpstreamStatus};
use crate::workload::{GenerationLookup, PeerPolicy, WorkloadError, WorkloadSockets};

/// The workload API version modules are told to use (what the SDK sends).
pub const WORKLOAD_API_VERSION: &str = "2020-07-07";
/// How often the server certificate's remaining validity is checked.
const RENEWAL_CHECK: Duration = Duration::from_secs(12 * 3600);
/// How long shutdown waits for tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The `from` of direct method calls made by `edged method invoke`.
const EDGED_CALLER: &str = "edged";

/// Why the hub server could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The hub core failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The device CA or the server certificate failed.
    #[error("hub certificates: {0}")]
    Certificates(#[from] CertError),
    /// A workload socket could not be created.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// A listener could not be bound.
    #[error("cannot listen on {address} for {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        address: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The runtime could not be started.
    #[error("cannot start the hub's runtime: {0}")]
    Runtime(std::io::Error),
}

/// The addresses the listeners are bound to (the configured ones, with the
/// port chosen when it was 0).
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    /// MQTT over TLS.
    pub mqtt: SocketAddr,
    /// The HTTPS method gateway.
    pub https: SocketAddr,
    /// Prometheus metrics, if enabled.
    pub metrics: Option<SocketAddr>,
}

/// The running hub.
pub struct HubServer {
    runtime: Runtime,
    hub: Hub,
    certificates: Arc<Certificates>,
    workload: WorkloadSockets,
    methods: Arc<MethodCounts>,
    addresses: Addresses,
    tasks: Vec<JoinHandle<()>>,
    /// The connection to the cloud, when one is configured.
    upstream: Option<Upstream>,
}

impl HubServer {
    /// Starts a runtime of its own (2 worker threads), opens the hub's
    /// store, creates the CA and server certificate if missing, binds the
    /// listeners and the workload sockets of the installed deployment's
    /// modules; returns once everything listens.
    pub fn start(
        config: HubConfig,
        keys: Arc<dyn KeyStore>,
        ca_key: CaKeySource,
        peers: PeerPolicy,
    ) -> Result<Self, ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("edge-hub")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let certificates = Arc::new(Certificates::open(
            &config.dir,
            &config.gateway_hostname,
            &ca_key,
        )?);
        let tls = certificates.server_config()?;
        let mqtt_tls = certificates.mqtt_server_config()?;
        let entered = runtime.enter();
        let hub = Hub::open(&config, keys.clone())?;
        let bind = |what, address| {
            runtime
                .block_on(TcpListener::bind(address))
                .map_err(|source| ServerError::Bind {
                    what,
                    address,
                    source,
                })
        };
        let mqtt = bind("MQTT", config.mqtt_listen)?;
        let https = bind("the direct method gateway", config.https_listen)?;
        let metrics_listener = config
            .metrics_listen
            .map(|address| bind("metrics", address))
            .transpose()?;
        let local =
            |listener: &TcpListener, configured| listener.local_addr().unwrap_or(configured);
        let addresses = Addresses {
            mqtt: local(&mqtt, config.mqtt_listen),
            https: local(&https, config.https_listen),
            metrics: metrics_listener
                .as_ref()
                .zip(config.metrics_listen)
                .map(|(listener, configured)| local(listener, configured)),
        };

        let lookup_hub = hub.clone();
        let generation: GenerationLookup = Arc::new(move |module: &str| {
            lookup_hub
                .identity(module)
                .map(|identity| identity.generation_id)
        });
        let workload = WorkloadSockets::new(
            &config.dir.join("workload"),
            generation,
            keys,
            certificates.clone(),
            peers,
        );
        let identities = hub.identities();
        for identity in &identities {
            workload.bind(&identity.module)?;
        }
        // A crash between a deployment and the removal of a socket leaves
        // the directory of a module that is gone.
        for module in workload.directories() {
            if !identities.iter().any(|identity| identity.module == module) {
                workload.unbind(&module);
            }
        }

        let methods = Arc::new(MethodCounts::default());
        let mut tasks = Vec::new();
        tasks.push(runtime.spawn(crate::mqtt::serve(mqtt, mqtt_tls, hub.clone())));
        let backend = Arc::new(HubBackend {
            hub: hub.clone(),
            methods: methods.clone(),
        });
        tasks.push(runtime.spawn(gateway::serve(
            https,
            tls,
            config.device_id.clone(),
            backend,
        )));
        if let Some(listener) = metrics_listener {
            let instance = Instance::new(&config.iothub_hostname, &config.device_id);
            let (stats_hub, counts) = (hub.clone(), methods.clone());
            let render: metrics::Render =
                Arc::new(move || metrics::render(&stats_hub.stats(), &counts, &instance));
            tasks.push(runtime.spawn(metrics::serve(listener, render)));
        }
        tasks.push(runtime.spawn(renew_periodically(certificates.clone())));
        tracing::info!(
            mqtt = %addresses.mqtt,
            https = %addresses.https,
            metrics = ?addresses.metrics,
            keys = %hub.keys().location(),
            "edge hub listening"
        );
        drop(entered);
        Ok(Self {
            runtime,
            hub,
            certificates,
            workload,
            methods,
            addresses,
            tasks,
            upstream: None,
        })
    }

    /// Starts the connection to the cloud that `$upstream` routes deliver
    /// to (replacing a running one).
    pub fn connect_upstream(&mut self, config: UpstreamConfig) {
        let _entered = self.runtime.enter();
        tracing::info!(
            host = config.host,
            port = config.port,
            device = config.device_id,
            window = config.window,
            "connecting to the cloud"
        );
        self.upstream = Some(Upstream::start(self.hub.clone(), config));
    }

    /// The cloud connection's state, when one is configured.
    pub fn upstream_status(&self) -> Option<UpstreamStatus> {
        self.upstream.as_ref().map(Upstream::status)
    }

    /// The runtime's state, for the device twin's reported properties.
    pub fn report_runtime_state(&self, report: serde_json::Map<String, serde_json::Value>) {
        if let Some(upstream) = &self.upstream {
            upstream.report_runtime_state(report);
        }
    }

    /// Installs a deployment (see [`Hub::deploy`]), then serves a workload
    /// socket for each of its modules and removes those of modules it no
    /// longer has.
    pub fn deploy(&self, deployment: HubDeployment) -> Result<(), ServerError> {
        let modules = deployment.modules.clone();
        self.runtime.block_on(self.hub.deploy(deployment))?;
        let _entered = self.runtime.enter();
        for module in &modules {
            self.workload.bind(module)?;
        }
        for module in self.workload.modules() {
            if !modules.contains(&module) {
                self.workload.unbind(&module);
            }
        }
        Ok(())
    }

    /// Records the container `module` runs in, for the workload socket's
    /// peer check (`None` when it has none).
    pub fn set_container(&self, module: &str, container_id: Option<String>) {
        self.workload.set_container(module, container_id);
    }

    /// The host directory with `module`'s workload socket, to bind-mount at
    /// `/var/run/iotedge` in its container.
    pub fn workload_socket_dir(&self, module: &str) -> PathBuf {
        self.workload.socket_dir(module)
    }

    /// The `IOTEDGE_*` environment of `module`, as edgeAgent sets it, with
    /// `workload_uri` as `IOTEDGE_WORKLOADURI` (`None`: not deployed).
    pub fn module_environment(
        &self,
        module: &str,
        workload_uri: &str,
    ) -> Option<Vec<(String, String)>> {
        let identity = self.hub.identity(module)?;
        let config = self.hub.config();
        let pairs = [
            ("IOTEDGE_WORKLOADURI", workload_uri),
            ("IOTEDGE_DEVICEID", &config.device_id),
            ("IOTEDGE_MODULEID", module),
            ("IOTEDGE_MODULEGENERATIONID", &identity.generation_id),
            ("IOTEDGE_IOTHUBHOSTNAME", &config.iothub_hostname),
            ("IOTEDGE_GATEWAYHOSTNAME", &config.gateway_hostname),
            ("IOTEDGE_AUTHSCHEME", "sasToken"),
            ("IOTEDGE_APIVERSION", WORKLOAD_API_VERSION),
            ("RuntimeLogLevel", "info"),
        ];
        Some(
            pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    /// The device CA certificate (PEM).
    pub fn trust_bundle_pem(&self) -> String {
        self.certificates.trust_bundle_pem().to_owned()
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// `module`'s twin.
    pub fn twin(&self, module: &str) -> Result<Twin, HubError> {
        self.runtime.block_on(self.hub.twin(module))
    }

    /// Calls a direct method on `module` (`edged method invoke`).
    pub fn invoke_method(
        &self,
        module: &str,
        name: &str,
        payload: Vec<u8>,
        timeouts: CallTimeouts,
    ) -> Result<MethodResponse, MethodError> {
        let device = &self.hub.config().device_id;
        self.methods
            .record(EDGED_CALLER, &format!("{device}/{module}"));
        self.runtime
            .block_on(self.hub.methods().invoke(module, name, payload, timeouts))
    }

    /// Where the listeners are.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// The hub core, for edged's own use of its API from async code run
    /// on [`HubServer::runtime`].
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The hub's runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Stops the listeners and sockets, lets the store's writer finish
    /// what it holds, and stops the runtime.
    pub fn shutdown(self) {
        let Self {
            runtime,
            hub,
            workload,
            tasks,
            upstream,
            ..
        } = self;
        {
            // Dropping the connection aborts its task, which must happen on
            // the runtime.
            let _entered = runtime.enter();
            drop(upstream);
        }
        for task in &tasks {
            task.abort();
        }
        runtime.block_on(async {
            for task in tasks {
                let _ = task.await;
            }
        });
        workload.close();
        drop(hub);
        runtime.shutdown_timeout(SHUTDOWN_GRACE);
        tracing::info!("edge hub stopped");
    }
}

/// The gateway's view of the hub: SAS tokens are checked as the MQTT
/// listener checks them, calls go to the hub's method router.
struct HubBackend {
    hub: Hub,
    methods: Arc<MethodCounts>,
}

impl Backend for HubBackend {
    fn authenticate<'a>(
        &'a self,
        module: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let token = SasToken::parse(token).map_err(|error| error.to_string())?;
            let config = self.hub.config();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            token
                .verify(
                    &config.iothub_hostname,
                    &config.device_id,
                    module,
                    self.hub.keys(),
                    now,
                )
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn invoke<'a>(
        &'a self,
        caller: &'a str,
        module: &'a str,
        call: &'a MethodCall,
    ) -> BoxFuture<'a, Result<MethodResponse, MethodError>> {
        Box::pin(async move {
            let device = &self.hub.config().device_id;
            self.methods
                .record(&format!("{device}/{caller}"), &format!("{device}/{module}"));
            self.hub
                .methods()
                .invoke(
                    module,
                    &call.name,
                    call.payload.clone(),
                    CallTimeouts {
                        connect: call.connect_timeout,
                        response: call.response_timeout,
                    },
                )
                .await
        })
    }
}

/// Checks the server certificate twice a day and reissues it when it has
/// less than 30 days left.
async fn renew_periodically(certificates: Arc<Certificates>) {
    let mut interval = tokio::time::interval(RENEWAL_CHECK);
    interval.tick().await;
    loop {
        interval.tick().await;
        let certificates = certificates.clone();
        match tokio::task::spawn_blocking(move || certificates.renew_if_needed()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot reissue the hub's server certificate");
            }
            Err(error) => tracing::error!(%error, "the certificate renewal task failed"),
        }
    }
}
