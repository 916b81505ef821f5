//! The hub `edged run` serves: the `edge_hub` crate's `HubServer`, set up
//! from the device configuration's `[hub]` table and given each deployment
//! as the bundle describes it.
//!
//! Module keys and the device CA key are files in `{hub dir}/keys` and
//! `{hub dir}/ca` (mode 0600), or objects on the `[hub.pkcs11]` token,
//! which needs the PIN because HMAC and CA keys are private objects.

use std::path::Path;
use std::sync::Arc;

use edge_hub::upstream::{LinkState, UpstreamConfig, UpstreamStatus};
use edge_hub::{
    CaKeySource, CallTimeouts, FileKeys, HubConfig, HubDeployment, HubError, HubServer, KeyStore,
    MethodError, PeerPolicy, Pkcs11Keys,
};
use edge_init::status::{HubDropped, HubModuleReport, HubReport, UpstreamFailure, UpstreamReport};
use serde_json::Value;

use crate::config::{DeviceConfig, HubSettings};
use crate::control::ControlServer;
use crate::error::{Error, Result};
use crate::hub::{self, MethodOutcome, ModuleEnvironment, ModuleHub, Place};
use crate::runtime::Loaded;

/// The hub in this process.
pub struct LocalHub {
    server: HubServer,
    gateway_hostname: String,
}

/// Builds the hub's configuration from `[hub]`; its directory is
/// `{state dir}/hub`.
pub fn hub_config(settings: &HubSettings, state_dir: &Path) -> Result<HubConfig> {
    let device_id = settings.device_id().map_err(Error::Config)?;
    Ok(HubConfig {
        iothub_hostname: settings.iothub_hostname(&device_id),
        gateway_hostname: settings.gateway_hostname.clone(),
        mqtt_listen: settings.mqtt_listen,
        https_listen: settings.https_listen,
        metrics_listen: settings.metrics_listen().map_err(Error::Config)?,
        dir: hub::hub_dir(state_dir),
        store_limit_bytes: settings.store_limit_bytes().map_err(Error::Config)?,
        when_full: settings.when_full,
        default_time_to_live: settings.store_and_forward_ttl,
        max_connections: settings.max_connections,
        leaf_devices: settings.leaf_devices(&device_id).map_err(Error::Config)?,
        device_id,
    })
}

/// The cloud connection `[hub.upstream]` describes, if any.
pub fn upstream_config(
    settings: &HubSettings,
    hub_config: &HubConfig,
) -> Result<Option<UpstreamConfig>> {
    let Some(upstream) = &settings.upstream else {
        return Ok(None);
    };
    let auth = upstream
        .auth(settings.pkcs11.as_ref())
        .map_err(Error::Config)?;
    let mut config = UpstreamConfig::new(
        &upstream.host,
        upstream.port,
        upstream.ca_file.clone(),
        &hub_config.device_id,
        auth,
    );
    config.iothub_hostname = hub_config.iothub_hostname.clone();
    config.window = upstream.window;
    config.keep_alive = upstream.keep_alive;
    config.backoff_initial = upstream.backoff_initial;
    config.backoff_maximum = upstream.backoff_max;
    config.token_lifetime = upstream.token_lifetime;
    Ok(Some(config))
}

/// The cloud connection as `edged status` shows it.
fn upstream_report(status: UpstreamStatus) -> UpstreamReport {
    let time = |at| humantime::format_rfc3339_seconds(at).to_string();
    let (state, since, failures) = match status.state {
        LinkState::Connected { since } => ("connected", Some(time(since)), 0),
        LinkState::Connecting { failures } => ("connecting", None, failures),
        LinkState::Waiting { until, failures } => ("waiting", Some(time(until)), failures),
    };
    UpstreamReport {
        endpoint: status.endpoint,
        state: state.to_owned(),
        since,
        failures,
        last_error: status.last_failure.map(|failure| UpstreamFailure {
            at: time(failure.at),
            step: failure.kind.name().to_owned(),
            message: failure.message,
        }),
        connections: status.connections,
        messages_sent: status.messages_sent,
        messages_acknowledged: status.messages_acknowledged,
        messages_resent: status.messages_resent,
        in_flight: status.in_flight,
        window: status.window,
    }
}

/// Starts the hub and its control socket. `same_user` is the peer policy of
/// `--runtime none`, where modules are plain processes of edged's user
/// rather than containers.
pub fn start(
    config: &DeviceConfig,
    state_dir: &Path,
    same_user: bool,
) -> Result<(Arc<LocalHub>, ControlServer)> {
    let hub_config = hub_config(&config.hub, state_dir)?;
    let hub_error = |error: &dyn std::fmt::Display| Error::Hub(error.to_string());
    let (keys, ca_key): (Arc<dyn KeyStore>, CaKeySource) = match &config.hub.pkcs11 {
        Some(token) => (
            Arc::new(
                Pkcs11Keys::open(&token.module, &token.token, &token.pin_file)
                    .map_err(|error| hub_error(&error))?,
            ),
            CaKeySource::Pkcs11 {
                module: token.module.clone(),
                token: token.token.clone(),
                pin_file: token.pin_file.clone(),
            },
        ),
        None => (
            Arc::new(
                FileKeys::open(&hub_config.dir.join("keys")).map_err(|error| hub_error(&error))?,
            ),
            CaKeySource::File,
        ),
    };
    let peers = if same_user {
        PeerPolicy::SameUser
    } else {
        PeerPolicy::Containers
    };
    let dir = hub_config.dir.clone();
    let gateway_hostname = hub_config.gateway_hostname.clone();
    let upstream = upstream_config(&config.hub, &hub_config)?;
    let mut server =
        HubServer::start(hub_config, keys, ca_key, peers).map_err(|error| hub_error(&error))?;
    if let Some(upstream) = upstream {
        server.connect_upstream(upstream);
    }
    tracing::info!(
        dir = %dir.display(),
        mqtt = %config.hub.mqtt_listen,
        https = %config.hub.https_listen,
        gateway = gateway_hostname,
        "edge hub serving"
    );
    let hub = Arc::new(LocalHub {
        server,
        gateway_hostname,
    });
    let control = ControlServer::start(&dir, Arc::clone(&hub) as Arc<dyn ModuleHub>)?;
    Ok((hub, control))
}

/// The hub's view of a deployment: the bundle's compiled route table, its
/// modules, their desired twins and the store's time-to-live.
pub fn hub_deployment(deployment: Option<&Loaded>) -> Result<HubDeployment> {
    let Some(loaded) = deployment else {
        return Ok(HubDeployment {
            routes: Vec::new(),
            modules: Vec::new(),
            desired: Default::default(),
            default_time_to_live: None,
        });
    };
    let routes = serde_json::from_value(loaded.manifest.route_table.clone()).map_err(|error| {
        Error::CorruptState(format!("the bundle's route table is not one: {error}"))
    })?;
    let content = hub::manifest_content(loaded)?;
    Ok(HubDeployment {
        routes,
        modules: loaded
            .modules
            .iter()
            .map(|module| module.name.clone())
            .collect(),
        desired: content.desired,
        default_time_to_live: content.time_to_live,
    })
}

impl ModuleHub for LocalHub {
    fn deploy(&self, deployment: Option<&Loaded>) -> Result<()> {
        self.server
            .deploy(hub_deployment(deployment)?)
            .map_err(|error| Error::Hub(format!("cannot deploy the routes and modules: {error}")))
    }

    fn environment(&self, module: &str, place: Place) -> Result<Option<ModuleEnvironment>> {
        let socket_dir = self.server.workload_socket_dir(module);
        let uri = hub::workload_uri(&socket_dir, place);
        Ok(self
            .server
            .module_environment(module, &uri)
            .map(|variables| ModuleEnvironment {
                variables,
                socket_dir,
                gateway_hostname: self.gateway_hostname.clone(),
            }))
    }

    fn set_container(&self, module: &str, container_id: Option<String>) -> Result<()> {
        self.server.set_container(module, container_id);
        Ok(())
    }

    fn report(&self) -> Result<HubReport> {
        let stats = self.server.stats();
        let mut dropped = std::collections::BTreeMap::new();
        let mut count_dropped = |endpoint: &str, queue: &edge_hub::EndpointStats| {
            let counts = HubDropped {
                expired: queue.expired,
                quota: queue.dropped_quota,
                disk_full: queue.dropped_disk_full,
            };
            if counts != HubDropped::default() {
                dropped.insert(endpoint.to_owned(), counts);
            }
        };
        count_dropped("$upstream", &stats.upstream);
        for module in stats.modules.values() {
            for (endpoint, queue) in &module.queues {
                count_dropped(endpoint, queue);
            }
        }
        let mut modules = std::collections::BTreeMap::new();
        for (name, module) in stats.modules {
            let reported = self
                .server
                .twin(&name)
                .map(|twin| twin.reported)
                .unwrap_or(Value::Null);
            modules.insert(
                name,
                HubModuleReport {
                    connected: module.connected,
                    messages_in: module.messages_in,
                    messages_out: module.messages_out,
                    queues: module
                        .queues
                        .into_iter()
                        .map(|(endpoint, queue)| (endpoint, queue.depth))
                        .collect(),
                    reported,
                },
            );
        }
        Ok(HubReport {
            running: true,
            modules,
            upstream_queue: stats.upstream.depth,
            upstream: self.server.upstream_status().map(upstream_report),
            dropped,
        })
    }

    fn report_runtime_state(&self, state: serde_json::Map<String, Value>) {
        self.server.report_runtime_state(state);
    }

    fn wants_runtime_state(&self) -> bool {
        self.server.upstream_status().is_some()
    }

    fn twin(&self, module: &str) -> Result<Value> {
        // An unknown module's error names the module already; the others (a store failure) do
        // not, so only they are prefixed with it.
        let twin = self.server.twin(module).map_err(|error| match error {
            HubError::UnknownModule(_) => Error::Hub(error.to_string()),
            error => Error::Hub(format!("module {module}: {error}")),
        })?;
        Ok(serde_json::json!({ "desired": twin.desired, "reported": twin.reported }))
    }

    fn invoke(
        &self,
        module: &str,
        method: &str,
        payload: Value,
        timeouts: CallTimeouts,
    ) -> Result<MethodOutcome> {
        // The method router knows connections, not the deployment: without this check a module
        // that is not deployed would be reported as not connected, and with a connect timeout
        // the call would wait for a module that can never connect.
        if self.server.hub().identity(module).is_none() {
            return Err(Error::Hub(
                HubError::UnknownModule(module.to_owned()).to_string(),
            ));
        }
        let bytes = serde_json::to_vec(&payload)
            .map_err(|error| Error::Hub(format!("cannot encode the payload: {error}")))?;
        match self.server.invoke_method(module, method, bytes, timeouts) {
            Ok(response) => Ok(MethodOutcome {
                status: response.status,
                payload: hub::payload_json(&response.payload),
            }),
            Err(MethodError::NotConnected) if timeouts.connect.is_zero() => {
                Err(Error::Hub(format!(
                    "module {module} is not connected to the hub or does not listen for direct methods (is it running? `edged status` shows its connection; --connect-timeout waits for it)"
                )))
            }
            Err(MethodError::NotConnected) => Err(Error::Hub(format!(
                "module {module} did not connect to the hub and listen for direct methods within {} (is it running? `edged status` shows its connection)",
                humantime::format_duration(timeouts.connect)
            ))),
            Err(MethodError::Timeout) => Err(Error::Hub(format!(
                "module {module} did not answer method {method} within {}",
                humantime::format_duration(timeouts.response)
            ))),
            Err(MethodError::Closed) => Err(Error::Hub(format!(
                "module {module} disconnected before it answered method {method}; it may or may not have run it"
            ))),
            Err(error) => Err(Error::Hub(format!(
                "method {method} on module {module}: {error}"
            ))),
        }
    }
}
