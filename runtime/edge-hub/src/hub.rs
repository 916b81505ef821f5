//! The hub's core: the installed deployment (routes, modules, desired
//! twins), the configured leaf devices, publishing along the routes into
//! the store, input and cloud-to-device deliveries, twins, sessions and
//! counters. The MQTT, workload and HTTPS layers are built on [`Hub`].
//!
//! Modules and leaf devices share every path: the functions that take a
//! `client` take a [`ClientIdentity::key`], which is a module's name or a
//! leaf device's `$leaf/{id}`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use edge_route::{RouteTableEntry, Router, Sink};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::client::ClientIdentity;
use crate::config::{HubConfig, MAXIMUM_MESSAGE_BYTES};
use crate::keys::{KeyError, KeyStore};
use crate::message::{HubMessage, SystemProperty};
use crate::methods::{CallTimeouts, MethodError, MethodResponse, MethodRouter};
use crate::store::{
    self, EndpointCounters, LiveAcks, LogThrottle, NEVER, Overflowed, PRIORITIES, Pending,
    QueueEntry, Removal, RemovalToken, Store, StoreError, StoredMessage, Tail, Target, UPSTREAM,
    Wake,
};
use crate::twin::{self, DesiredPatch, Twin, TwinError, TwinRecord};

/// The most deliveries a module has unacknowledged before `next` waits.
pub const INFLIGHT_WINDOW: usize = 64;

/// How many acknowledgements of a stream may wait for the store's writer
/// before `next` waits; large enough that a fast module is not held to the
/// commit rate, small enough to bound the writer's backlog.
const UNCONFIRMED_LIMIT: usize = 1024;

/// How many queue entries a module's stream reads from the store at once.
const READ_BATCH: usize = 64;

/// The most queue entries the upstream stream reads at once: it reads a
/// window's worth, so that a backlog goes up in a few large reads rather
/// than many small ones, each a hop to a blocking thread and a read
/// transaction.
const UPSTREAM_READ_BATCH: usize = 1024;

/// How long a stream waits before it reads again after a failed read.
const READ_RETRY: Duration = Duration::from_secs(1);

/// How many desired patches wait for a slow connection before it misses
/// some (it then reads the whole twin again).
const DESIRED_PATCH_BACKLOG: usize = 16;

/// How many reported changes wait for a slow [`Hub::reported_changes`]
/// receiver before it misses some (it then reads the twins again).
const REPORTED_CHANGE_BACKLOG: usize = 1024;

/// The route source of a leaf device's telemetry, as edgeHub names device
/// telemetry: `FROM /messages` and `FROM /messages/*` take it,
/// `FROM /messages/modules/*` does not.
pub const DEVICE_TELEMETRY_SOURCE: &str = "/messages";

/// The route source of twin change notifications.
pub const TWIN_CHANGE_SOURCE: &str = "/twinChangeNotifications";

/// Document kinds in the store.
const GENERATION: &str = "generation";
const TWIN: &str = "twin";
const SESSION: &str = "session";
const DEPLOYMENT: &str = "deployment";
const DESIRED_SEEN: &str = "desired-seen";

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The deployment's route table does not compile; nothing was changed.
    #[error("the deployment's route table does not compile, nothing was installed: {0}")]
    Routes(String),
    /// A desired twin is not a JSON object.
    #[error(
        "the desired properties of module {0} are not a JSON object; write them as `twin {{ … }}` in the .edge file"
    )]
    DesiredNotObject(String),
    /// A module key could not be created or removed.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The module is not part of the deployment.
    #[error("module {0} is not part of the deployment")]
    UnknownModule(String),
    /// The leaf device is not in `[hub] leaf_devices`.
    #[error(
        "leaf device {0} is not in [hub] leaf_devices of device.toml; add it there before sending to it"
    )]
    UnknownLeafDevice(String),
    /// A desired patch from the cloud breaks a twin rule; nothing changed.
    #[error("a desired patch from the cloud for {client} is refused: {reason}")]
    BadDesiredPatch {
        /// Whose twin.
        client: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A stored document does not decode.
    #[error("the hub store's {kind} record of {name} is corrupt: {message}")]
    Corrupt {
        /// What kind of record.
        kind: &'static str,
        /// Whose.
        name: String,
        /// What the decoder said.
        message: String,
    },
}

/// Why a publish was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefused {
    /// Over the message size limit.
    #[error(
        "the message is {size} bytes (body and properties), over the limit of {MAXIMUM_MESSAGE_BYTES}; send smaller messages"
    )]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// The store is full; the message was not stored. A QoS 1 sender is not
    /// acknowledged and sends it again later.
    #[error(transparent)]
    StoreFull(StoreError),
    /// The sender is not part of the deployment.
    #[error("module {0} is not part of the deployment")]
    UnknownModule(String),
    /// The store failed; the message was not stored.
    #[error(transparent)]
    Store(StoreError),
}

/// What the hub needs of a deployment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HubDeployment {
    /// The bundle's route table.
    pub routes: Vec<RouteTableEntry>,
    /// The deployment's user modules.
    pub modules: Vec<String>,
    /// Module → desired properties (an object, without `$version`).
    pub desired: BTreeMap<String, Value>,
    /// `storeAndForwardConfiguration.timeToLiveSecs`.
    pub default_time_to_live: Option<Duration>,
}

/// How a publish is to be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: committed, not waited for to reach the disk.
    AtMostOnce,
    /// QoS 1: fsynced before the publish returns.
    AtLeastOnce,
}

/// A deployed module's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleIdentity {
    /// The module name.
    pub module: String,
    /// Its generation id: random, stable while the module stays deployed.
    pub generation_id: String,
}

/// A client's persistent MQTT session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    /// Topic filters with their granted QoS.
    pub subscriptions: Vec<(String, u8)>,
}

/// One message delivered to a module's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// What to acknowledge it with.
    pub id: DeliveryId,
    /// The module's input.
    pub input: String,
    /// The message.
    pub message: HubMessage,
}

/// Identifies an unacknowledged delivery within its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId(u64);

/// Counters of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EndpointStats {
    /// Messages queued (not yet acknowledged).
    pub depth: u64,
    /// Messages dropped because their time to live passed.
    pub expired: u64,
    /// Messages evicted to keep the store under its limit (`when_full`).
    pub dropped_quota: u64,
    /// Messages evicted because the disk holding the store was full.
    pub dropped_disk_full: u64,
    /// Messages queued per priority: index 0 is priority 0 (the most
    /// urgent); they add up to `depth`.
    pub by_priority: [u64; PRIORITIES],
}

/// Counters of one module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModuleStats {
    /// Whether the module is connected.
    pub connected: bool,
    /// Messages the hub accepted from it.
    pub messages_in: u64,
    /// Messages it acknowledged on its inputs.
    pub messages_out: u64,
    /// QoS 1 messages it sent that were refused because the store was full.
    pub refused_store_full: u64,
    /// QoS 0 messages it sent that were dropped because the store was full.
    pub dropped_store_full: u64,
    /// Twin GETs it made that were answered.
    pub twin_gets: u64,
    /// Reported patches it sent that were stored.
    pub reported_patches: u64,
    /// Its input queues by endpoint (`{module}/{input}`).
    pub queues: BTreeMap<String, EndpointStats>,
}

/// Counters of the store's group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Transactions committed.
    pub commits: u64,
    /// Of those, fsynced ones.
    pub durable_commits: u64,
    /// Operations (publishes, acknowledgements, twin and session writes)
    /// committed.
    pub operations: u64,
    /// The most operations one commit took.
    pub largest_batch: u64,
    /// Bytes counted against the limit.
    pub stored_bytes: u64,
    /// The limit.
    pub limit_bytes: u64,
}

/// Totals over all modules and endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Messages accepted.
    pub messages_in: u64,
    /// Messages acknowledged by modules.
    pub messages_out: u64,
    /// Messages queued on all endpoints.
    pub queued: u64,
    /// Messages expired on all endpoints.
    pub expired: u64,
    /// Messages evicted on all endpoints to keep the store under its limit.
    pub dropped_quota: u64,
    /// Messages evicted on all endpoints because the disk was full.
    pub dropped_disk_full: u64,
    /// QoS 1 messages refused because the store was full.
    pub refused_store_full: u64,
    /// QoS 0 messages dropped because the store was full.
    pub dropped_store_full: u64,
}

/// The hub's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HubStats {
    /// Per deployed module.
    pub modules: BTreeMap<String, ModuleStats>,
    /// Per configured leaf device, by device id: `messages_out` counts the
    /// cloud-to-device messages it acknowledged, `queues` holds its
    /// cloud-to-device queue (`$leaf/{id}`).
    pub leaf_devices: BTreeMap<String, ModuleStats>,
    /// The `$upstream` queue.
    pub upstream: EndpointStats,
    /// Totals.
    pub totals: Totals,
    /// The store.
    pub store: StoreStats,
}

/// The desired properties a module was last brought up to date with: the
/// last desired patch it acknowledged (or was sent, at QoS 0) applied to
/// what it had before. Kept in the store, so that a module that comes back
/// after a deployment changed its twin — while it was disconnected, or
/// while edged was not running — gets the change (see
/// [`Hub::desired_state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredSeen {
    /// The desired `$version` the module has.
    pub version: u64,
    /// The desired properties at that version, without `$version`.
    pub desired: Map<String, Value>,
}

/// A module's desired properties now, and what it was last brought up to
/// date with.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredState {
    /// The desired `$version` now.
    pub version: u64,
    /// The desired properties now, without `$version`.
    pub desired: Map<String, Value>,
    /// What the module has; `None` before its first subscription to
    /// desired patches.
    pub seen: Option<DesiredSeen>,
}

/// A reported patch a module or leaf device stored (see
/// [`Hub::reported_changes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedChange {
    /// Whose twin.
    pub client: ClientIdentity,
    /// The reported `$version` after the patch.
    pub version: u64,
    /// The merge patch, without `$version`.
    pub patch: Map<String, Value>,
}

/// A deployed module's or a configured leaf device's live state.
#[derive(Debug)]
struct ModuleState {
    /// A module's identity; a leaf device's has its id and no generation
    /// id (the state of a leaf device is never asked for its identity).
    identity: ModuleIdentity,
    connected: AtomicBool,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    twin_gets: AtomicU64,
    reported_patches: AtomicU64,
    full_log: LogThrottle,
    desired: broadcast::Sender<DesiredPatch>,
}

impl ModuleState {
    fn new(identity: ModuleIdentity) -> Self {
        Self {
            identity,
            connected: AtomicBool::new(false),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            twin_gets: AtomicU64::new(0),
            reported_patches: AtomicU64::new(0),
            full_log: LogThrottle::default(),
            desired: broadcast::channel(DESIRED_PATCH_BACKLOG).0,
        }
    }
}

/// The installed deployment.
struct Installed {
    router: Arc<Router>,
    modules: BTreeMap<String, Arc<ModuleState>>,
    default_time_to_live: Duration,
}

/// The deployment as the store keeps it, so that the hub routes after a
/// restart before edged installs the deployment again.
#[derive(Serialize, Deserialize)]
struct SavedDeployment {
    routes: Vec<RouteTableEntry>,
    default_time_to_live_secs: Option<u64>,
}

struct Inner {
    config: HubConfig,
    keys: Arc<dyn KeyStore>,
    store: Store,
    methods: MethodRouter,
    installed: RwLock<Installed>,
    /// The configured leaf devices' state, by device id; fixed while the
    /// hub runs.
    leaves: BTreeMap<String, Arc<ModuleState>>,
    /// Every stored reported patch, for the upstream connection.
    reported: broadcast::Sender<ReportedChange>,
    /// Serializes deployments.
    deploying: tokio::sync::Mutex<()>,
    /// Counts messages removed modules had sent, so totals never go back.
    removed: RemovedCounters,
}

#[derive(Default)]
struct RemovedCounters {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
}

/// The hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Hub")
            .field("dir", &self.inner.config.dir)
            .finish_non_exhaustive()
    }
}

fn compile(routes: &[RouteTableEntry]) -> Result<Router, HubError> {
    Router::new(routes).map_err(|failures| {
        HubError::Routes(
            failures
                .iter()
                .map(|failure| {
                    let errors: Vec<String> = failure
                        .errors
                        .iter()
                        .map(edge_route::describe::message)
                        .collect();
                    format!("route {}: {}", failure.name, errors.join("; "))
                })
                .collect::<Vec<_>>()
                .join(", "),
        )
    })
}

fn corrupt(kind: &'static str, name: &str, error: &serde_json::Error) -> HubError {
    HubError::Corrupt {
        kind,
        name: name.to_owned(),
        message: error.to_string(),
    }
}

fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // The documents are plain structs of strings, numbers and JSON values,
    // which always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Hub {
    /// Opens (creates) the store at `config.dir/store.redb` and starts its
    /// group-commit writer; the deployment installed last is in effect until
    /// the next [`Hub::deploy`].
    pub fn open(config: &HubConfig, keys: Arc<dyn KeyStore>) -> Result<Hub, HubError> {
        std::fs::create_dir_all(&config.dir).map_err(|error| StoreError::Database {
            path: config.dir.display().to_string(),
            message: format!("cannot create the hub directory: {error}"),
        })?;
        let store = Store::open(
            &config.dir.join("store.redb"),
            config.store_limit_bytes,
            config.when_full,
        )?;
        let mut modules = BTreeMap::new();
        for (module, generation) in store.documents(GENERATION)? {
            let generation_id = String::from_utf8(generation).map_err(|_| HubError::Corrupt {
                kind: GENERATION,
                name: module.clone(),
                message: "not UTF-8".to_owned(),
            })?;
            let identity = ModuleIdentity {
                module: module.clone(),
                generation_id,
            };
            modules.insert(module, Arc::new(ModuleState::new(identity)));
        }
        let (router, default_time_to_live) = match store.document(DEPLOYMENT, "")? {
            None => (compile(&[])?, config.default_time_to_live),
            Some(bytes) => {
                let saved: SavedDeployment = serde_json::from_slice(&bytes)
                    .map_err(|error| corrupt(DEPLOYMENT, "", &error))?;
                let router = compile(&saved.routes)?;
                let ttl = saved
                    .default_time_to_live_secs
                    .map_or(config.default_time_to_live, Duration::from_secs);
                (router, ttl)
            }
        };
        Ok(Hub {
            inner: Arc::new(Inner {
                config: config.clone(),
                keys,
                store,
                methods: MethodRouter::default(),
                installed: RwLock::new(Installed {
                    router: Arc::new(router),
                    modules,
                    default_time_to_live,
                }),
                deploying: tokio::sync::Mutex::new(()),
                removed: RemovedCounters::default(),
                leaves: config
                    .leaf_devices
                    .iter()
                    .map(|leaf| {
                        let identity = ModuleIdentity {
                            module: leaf.id.clone(),
                            generation_id: String::new(),
                        };
                        (leaf.id.clone(), Arc::new(ModuleState::new(identity)))
                    })
                    .collect(),
                reported: broadcast::channel(REPORTED_CHANGE_BACKLOG).0,
            }),
        })
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The module key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.inner.keys
    }

    /// The direct-method router.
    pub fn methods(&self) -> &MethodRouter {
        &self.inner.methods
    }

    fn installed(&self) -> std::sync::RwLockReadGuard<'_, Installed> {
        self.inner
            .installed
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn module(&self, module: &str) -> Option<Arc<ModuleState>> {
        self.installed().modules.get(module).cloned()
    }

    /// The state of the module or leaf device `client` names (a
    /// [`ClientIdentity::key`]), if it is deployed or configured.
    fn client_state(&self, client: &str) -> Option<Arc<ModuleState>> {
        match ClientIdentity::from_key(client) {
            ClientIdentity::Module(module) => self.module(&module),
            ClientIdentity::LeafDevice(device) => self.inner.leaves.get(&device).cloned(),
        }
    }

    /// The configured leaf device `device`, with its credential.
    pub fn leaf_device(&self, device: &str) -> Option<&crate::leaf::LeafDevice> {
        self.inner
            .config
            .leaf_devices
            .iter()
            .find(|leaf| leaf.id == device)
    }

    /// Installs a deployment: compiles its routes (an error changes
    /// nothing), gives each new module a key and a generation id, forgets
    /// removed modules (key, queues, twin, session), sets the desired twins
    /// and sends connected modules the patches of those that changed.
    pub async fn deploy(&self, deployment: HubDeployment) -> Result<(), HubError> {
        let router = Arc::new(compile(&deployment.routes)?);
        let mut desired = BTreeMap::new();
        for module in &deployment.modules {
            let section = match deployment.desired.get(module) {
                None => Map::new(),
                Some(Value::Object(section)) => {
                    let mut section = section.clone();
                    section.remove(twin::VERSION_KEY);
                    section
                }
                Some(_) => return Err(HubError::DesiredNotObject(module.clone())),
            };
            desired.insert(module.clone(), section);
        }
        let _deploying = self.inner.deploying.lock().await;
        for module in &deployment.modules {
            self.inner.keys.ensure(module)?;
        }
        let previous: Vec<String> = self.installed().modules.keys().cloned().collect();
        let removed: Vec<String> = previous
            .iter()
            .filter(|module| !desired.contains_key(*module))
            .cloned()
            .collect();
        let saved = json_bytes(&SavedDeployment {
            routes: deployment.routes.clone(),
            default_time_to_live_secs: deployment
                .default_time_to_live
                .map(|duration| duration.as_secs()),
        });
        let device = self.inner.config.device_id.clone();
        let gone = removed.clone();
        let (identities, patches) = self
            .inner
            .store
            .write(true, move |batch| {
                let mut identities = Vec::new();
                let mut patches = Vec::new();
                for (module, section) in desired {
                    let generation_id = match batch.document(GENERATION, &module)? {
                        Some(existing) => String::from_utf8_lossy(&existing).into_owned(),
                        None => {
                            let generation_id = new_generation_id()?;
                            batch.put_document(GENERATION, &module, generation_id.as_bytes())?;
                            generation_id
                        }
                    };
                    let mut record = match batch.document(TWIN, &module)? {
                        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                            tracing::error!(module = %module, %error, "a stored twin is corrupt; it starts again empty");
                            TwinRecord::default()
                        }),
                        None => TwinRecord::default(),
                    };
                    if let Some(patch) = record.set_desired(section) {
                        patches.push((module.clone(), patch));
                    }
                    batch.put_document(TWIN, &module, &json_bytes(&record))?;
                    identities.push(ModuleIdentity {
                        module,
                        generation_id,
                    });
                }
                for module in &gone {
                    batch.remove_target(module)?;
                    batch.delete_document(GENERATION, module)?;
                    batch.delete_document(TWIN, module)?;
                    batch.delete_document(DESIRED_SEEN, module)?;
                    batch.delete_document(SESSION, &format!("{device}/{module}"))?;
                }
                batch.put_document(DEPLOYMENT, "", &saved)?;
                Ok((identities, patches))
            })
            .await?;
        for module in &removed {
            self.inner.keys.remove(module)?;
            // The module's stream, if any, ends.
            let wake = self.inner.store.shared.wake(module);
            wake.epoch.fetch_add(1, Ordering::AcqRel);
            wake.notify.notify_waiters();
        }
        let module_count = identities.len();
        {
            let mut installed = self
                .inner
                .installed
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            let mut modules = BTreeMap::new();
            for identity in identities {
                let state = match installed.modules.get(&identity.module) {
                    Some(state) if state.identity == identity => state.clone(),
                    _ => Arc::new(ModuleState::new(identity.clone())),
                };
                modules.insert(identity.module.clone(), state);
            }
            for (module, state) in &installed.modules {
                if !modules.contains_key(module) {
                    let removed = &self.inner.removed;
                    let add = |counter: &AtomicU64, value: &AtomicU64| {
                        counter.fetch_add(value.load(Ordering::Relaxed), Ordering::Relaxed);
                    };
                    add(&removed.messages_in, &state.messages_in);
                    add(&removed.messages_out, &state.messages_out);
                    add(&removed.refused, &state.refused);
                    add(&removed.dropped, &state.dropped);
                }
            }
            installed.modules = modules;
            installed.router = router;
            installed.default_time_to_live = deployment
                .default_time_to_live
                .unwrap_or(self.inner.config.default_time_to_live);
            for (module, patch) in &patches {
                if let Some(state) = installed.modules.get(module) {
                    // No receiver means no connection listens; it reads the
                    // whole twin when it connects.
                    let _ = state.desired.send(patch.clone());
                }
            }
        }
        tracing::info!(
            modules = module_count,
            routes = deployment.routes.len(),
            removed = removed.len(),
            desired_changed = patches.len(),
            "hub deployment installed"
        );
        Ok(())
    }

    /// A deployed module's identity.
    pub fn identity(&self, module: &str) -> Option<ModuleIdentity> {
        self.module(module).map(|state| state.identity.clone())
    }

    /// Every deployed module's identity, by name.
    pub fn identities(&self) -> Vec<ModuleIdentity> {
        self.installed()
            .modules
            .values()
            .map(|state| state.identity.clone())
            .collect()
    }

    /// Routes and stores a message `module` sent on `output`; returns once
    /// it is stored (fsynced for [`Qos::AtLeastOnce`]). Sets `$.cdid` and
    /// `$.cmid` (and `$.on` from `output`).
    pub async fn publish(
        &self,
        module: &str,
        output: Option<&str>,
        message: HubMessage,
        qos: Qos,
    ) -> Result<(), PublishRefused> {
        let sender = ClientIdentity::Module(module.to_owned());
        self.publish_from(&sender, output, message, qos).await
    }

    /// Routes and stores a message a module or leaf device sent, as
    /// [`Hub::publish`] does for a module. A leaf device's message comes
    /// from the source [`DEVICE_TELEMETRY_SOURCE`] with `$.cdid` the leaf
    /// device's id and no `$.cmid` or `$.on`, as edgeHub routes device
    /// telemetry (a device has no outputs, so `output` is ignored).
    pub async fn publish_from(
        &self,
        sender: &ClientIdentity,
        output: Option<&str>,
        mut message: HubMessage,
        qos: Qos,
    ) -> Result<(), PublishRefused> {
        let size = message.size();
        if size > MAXIMUM_MESSAGE_BYTES {
            return Err(PublishRefused::TooLarge { size });
        }
        let state = self
            .client_state(&sender.key())
            .ok_or_else(|| PublishRefused::UnknownModule(sender.to_string()))?;
        let (router, ttl) = {
            let installed = self.installed();
            (installed.router.clone(), installed.default_time_to_live)
        };
        self.set_connection_properties(sender, &mut message);
        let source = match (sender, output) {
            (ClientIdentity::Module(module), Some(output)) => {
                message
                    .system_properties
                    .insert(SystemProperty::OutputName, output.to_owned());
                format!("/messages/modules/{module}/outputs/{output}")
            }
            (ClientIdentity::Module(module), None) => format!("/messages/modules/{module}"),
            (ClientIdentity::LeafDevice(_), _) => {
                message
                    .system_properties
                    .remove(&SystemProperty::OutputName);
                DEVICE_TELEMETRY_SOURCE.to_owned()
            }
        };
        let module = sender.key();
        let module = module.as_str();
        let result = self
            .store_routed(message, source, &router, ttl, qos == Qos::AtLeastOnce)
            .await;
        match result {
            Ok(()) => {
                state.messages_in.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error @ (StoreError::Full { .. } | StoreError::DiskFull { .. })) => {
                let counter = match qos {
                    Qos::AtLeastOnce => &state.refused,
                    Qos::AtMostOnce => &state.dropped,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(messages) = state.full_log.add(1) {
                    tracing::warn!(
                        module,
                        messages,
                        %error,
                        "hub store full: QoS 1 messages are refused (not acknowledged; the module sends them again), QoS 0 messages dropped"
                    );
                }
                Err(PublishRefused::StoreFull(error))
            }
            Err(error) => Err(PublishRefused::Store(error)),
        }
    }

    /// Stores `message` for the sinks of the routes it matches.
    async fn store_routed(
        &self,
        message: HubMessage,
        source: String,
        router: &Router,
        default_time_to_live: Duration,
        durable: bool,
    ) -> Result<(), StoreError> {
        let now = store::now_ms();
        let targets = self.targets(&message, &source, router, default_time_to_live, now);
        if targets.is_empty() {
            // Like edgeHub, a message no route takes is accepted and dropped.
            return Ok(());
        }
        let stored = StoredMessage {
            enqueued: now,
            source,
            message,
        };
        self.inner.store.append(stored, targets, durable).await
    }

    /// The queues the routes send `message` to: one entry per endpoint,
    /// with the priority and time to live of the most urgent route that
    /// takes it there (routes come in priority order).
    fn targets(
        &self,
        message: &HubMessage,
        source: &str,
        router: &Router,
        default_time_to_live: Duration,
        now: u64,
    ) -> Vec<Target> {
        let matches = router.route(&message.to_route_message(source));
        let installed = self.installed();
        let mut seen = HashSet::new();
        let mut targets = Vec::new();
        for matched in matches {
            let (target, input) = match matched.sink {
                Sink::Upstream => (UPSTREAM, ""),
                Sink::ModuleInput { module, input } => {
                    if !installed.modules.contains_key(module) {
                        tracing::debug!(route = matched.name, module = %module, "a route's target module is not deployed");
                        continue;
                    }
                    (module.as_str(), input.as_str())
                }
            };
            if !seen.insert((target, input)) {
                continue;
            }
            let ttl = if matched.time_to_live_secs > 0 {
                Duration::from_secs(u64::from(matched.time_to_live_secs))
            } else {
                default_time_to_live
            };
            targets.push(Target {
                target: target.to_owned(),
                input: input.to_owned(),
                priority: matched.priority,
                expiry: expiry_after(now, ttl),
            });
        }
        targets
    }

    /// Sets `$.cdid` and `$.cmid` to the sending connection's device and
    /// module, as edgeHub does: a module's are this device and the module, a
    /// leaf device's its own id and none.
    fn set_connection_properties(&self, sender: &ClientIdentity, message: &mut HubMessage) {
        let properties = &mut message.system_properties;
        match sender {
            ClientIdentity::Module(module) => {
                properties.insert(
                    SystemProperty::ConnectionDeviceId,
                    self.inner.config.device_id.clone(),
                );
                properties.insert(SystemProperty::ConnectionModuleId, module.clone());
            }
            ClientIdentity::LeafDevice(device) => {
                properties.insert(SystemProperty::ConnectionDeviceId, device.clone());
                properties.remove(&SystemProperty::ConnectionModuleId);
            }
        }
    }

    /// Queues a cloud-to-device message for the leaf device `device`
    /// durably (fsynced before this returns): it is delivered on
    /// `devices/{device}/messages/devicebound/{props}` when the device is
    /// connected and subscribed, at least once at QoS 1 — it stays queued
    /// until the device acknowledges it, across its reconnections and the
    /// hub's restarts — and dropped when the deployment's time to live
    /// (`store_and_forward_ttl`) passes first. The message's properties
    /// (`$.mid`, `$.cid`, `$.to`, application properties) go to the device
    /// as they are.
    pub async fn send_to_device(&self, device: &str, message: HubMessage) -> Result<(), HubError> {
        if self.leaf_device(device).is_none() {
            return Err(HubError::UnknownLeafDevice(device.to_owned()));
        }
        let size = message.size();
        if size > MAXIMUM_MESSAGE_BYTES {
            return Err(HubError::Store(StoreError::Database {
                path: format!("the cloud-to-device queue of {device}"),
                message: PublishRefused::TooLarge { size }.to_string(),
            }));
        }
        let ttl = self.installed().default_time_to_live;
        let now = store::now_ms();
        let target = Target {
            target: ClientIdentity::LeafDevice(device.to_owned()).key(),
            input: String::new(),
            priority: 0,
            expiry: expiry_after(now, ttl),
        };
        let stored = StoredMessage {
            enqueued: now,
            source: format!("/devices/{device}/messages/devicebound"),
            message,
        };
        self.inner.store.append(stored, vec![target], true).await?;
        Ok(())
    }

    /// Calls the direct method `name` on a module or leaf device, as IoT
    /// Hub's service API does: through the method router, so the call
    /// reaches the client's connection when it listens for methods.
    pub async fn invoke_method(
        &self,
        client: &ClientIdentity,
        name: &str,
        payload: Vec<u8>,
        timeouts: CallTimeouts,
    ) -> Result<MethodResponse, MethodError> {
        self.inner
            .methods
            .invoke(&client.key(), name, payload, timeouts)
            .await
    }

    /// `client`'s queue deliveries (a module's inputs, a leaf device's
    /// cloud-to-device messages). A new stream replaces the client's
    /// previous one (whose `next` then returns `None`) and starts at the
    /// head of the queues, so what was delivered and not acknowledged comes
    /// again.
    pub fn open_inputs(&self, client: &str) -> InputStream {
        let reader = match self.client_state(client) {
            Some(state) => Reader::Client(state),
            None => Reader::Gone,
        };
        self.open_stream(client, reader, INFLIGHT_WINDOW, READ_BATCH)
    }

    /// The `$upstream` queue's deliveries, for the connection to the cloud,
    /// with up to `window` unacknowledged. Like [`Hub::open_inputs`], a new
    /// stream replaces the previous one and starts at the head of the
    /// queues, so what was sent and not acknowledged is sent again.
    pub fn open_upstream(&self, window: usize) -> InputStream {
        let window = window.max(1);
        let batch = window.clamp(READ_BATCH, UPSTREAM_READ_BATCH);
        self.open_stream(UPSTREAM, Reader::Upstream, window, batch)
    }

    fn open_stream(
        &self,
        target: &str,
        reader: Reader,
        window: usize,
        read_batch: usize,
    ) -> InputStream {
        let wake = self.inner.store.shared.wake(target);
        let epoch = wake.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        wake.notify.notify_waiters();
        InputStream {
            hub: self.clone(),
            module: target.to_owned(),
            wake,
            epoch,
            reader,
            window,
            read_batch,
            mode: Mode::Store,
            cursors: Default::default(),
            seen_arrivals: [0; PRIORITIES],
            buffer: VecDeque::new(),
            exhausted: false,
            read: None,
            inflight: HashMap::new(),
            unconfirmed: Arc::default(),
            next_id: 0,
        }
    }

    /// `module`'s twin: desired and reported properties, each with
    /// `$version`.
    pub async fn twin(&self, module: &str) -> Result<Twin, HubError> {
        Ok(self.twin_record(module)?.to_twin())
    }

    /// The stored twin of a deployed module or configured leaf device
    /// (empty before its first write).
    fn twin_record(&self, client: &str) -> Result<TwinRecord, HubError> {
        let module = client;
        self.require_client(client)?;
        match self.inner.store.document(TWIN, module)? {
            Some(bytes) => serde_json::from_slice::<TwinRecord>(&bytes)
                .map_err(|error| corrupt(TWIN, module, &error)),
            None => Ok(TwinRecord::default()),
        }
    }

    /// `module`'s desired properties now and the ones it was last brought
    /// up to date with ([`Hub::record_desired_seen`]), so that its
    /// connection can send it what changed in between, as edgeHub does
    /// when a client connects.
    pub async fn desired_state(&self, module: &str) -> Result<DesiredState, HubError> {
        let record = self.twin_record(module)?;
        let seen = match self.inner.store.document(DESIRED_SEEN, module)? {
            Some(bytes) => match serde_json::from_slice::<DesiredSeen>(&bytes) {
                Ok(seen) => Some(seen),
                Err(error) => {
                    // The module then only gets the changes from now on,
                    // which its next twin GET makes up for.
                    tracing::error!(module, %error, "the record of the desired properties a module has is corrupt; it starts again from the current ones");
                    None
                }
            },
            None => None,
        };
        Ok(DesiredState {
            version: record.desired_version,
            desired: record.desired,
            seen,
        })
    }

    /// Records (durably) the desired properties `module` now has.
    pub async fn record_desired_seen(
        &self,
        module: &str,
        seen: &DesiredSeen,
    ) -> Result<(), HubError> {
        self.require_client(module)?;
        self.put_document(DESIRED_SEEN, module, json_bytes(seen))
            .await
    }

    /// Fails unless `client` names a deployed module or a configured leaf
    /// device.
    fn require_client(&self, client: &str) -> Result<(), HubError> {
        match self.client_state(client) {
            Some(_) => Ok(()),
            None => Err(match ClientIdentity::from_key(client) {
                ClientIdentity::Module(module) => HubError::UnknownModule(module),
                ClientIdentity::LeafDevice(device) => HubError::UnknownLeafDevice(device),
            }),
        }
    }

    /// Writes one document durably.
    async fn put_document(
        &self,
        kind: &'static str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<(), HubError> {
        let name = name.to_owned();
        self.inner
            .store
            .write(true, move |batch| batch.put_document(kind, &name, &bytes))
            .await?;
        Ok(())
    }

    /// Applies a reported patch (JSON merge: `null` deletes); returns the
    /// new reported `$version`. Routes a `/twinChangeNotifications` message
    /// with the patch.
    pub async fn patch_reported(&self, module: &str, patch: Value) -> Result<u64, TwinError> {
        let object = twin::validate_reported_patch(&patch)?.clone();
        if self.client_state(module).is_none() {
            return Err(TwinError::UnknownModule(module.to_owned()));
        }
        let (router, ttl) = {
            let installed = self.installed();
            (installed.router.clone(), installed.default_time_to_live)
        };
        let reported = object.clone();
        let hub = self.clone();
        let name = module.to_owned();
        let version = self
            .inner
            .store
            .write_with_message(true, move |batch, message_id| {
                let mut record = match batch.document(TWIN, &name)? {
                    Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                        tracing::error!(module = %name, %error, "a stored twin is corrupt; it starts again empty");
                        TwinRecord::default()
                    }),
                    None => TwinRecord::default(),
                };
                let version = match record.patch_reported(&object) {
                    Ok(version) => version,
                    Err(error) => return Ok(Err(error)),
                };
                batch.put_document(TWIN, &name, &json_bytes(&record))?;
                let notification = hub.twin_change_notification(&name, &object, version);
                let now = store::now_ms();
                let targets =
                    hub.targets(&notification, TWIN_CHANGE_SOURCE, &router, ttl, now);
                let stored = StoredMessage {
                    enqueued: now,
                    source: TWIN_CHANGE_SOURCE.to_owned(),
                    message: notification,
                };
                match batch.append(message_id, &stored, &targets) {
                    Ok(()) => {}
                    Err(error @ (StoreError::Full { .. } | StoreError::DiskFull { .. })) => {
                        // The twin is the module's state and is kept; only
                        // the notification is lost, as a QoS 0 message.
                        tracing::warn!(module = %name, %error, "hub store full: a twin change notification is dropped");
                    }
                    Err(error) => return Err(error),
                }
                Ok(Ok(version))
            })
            .await
            .map_err(|error| TwinError::Store(error.to_string()))??;
        // Nobody listening (no upstream connection yet) loses nothing: the
        // twin holds the reported properties.
        let _ = self.inner.reported.send(ReportedChange {
            client: ClientIdentity::from_key(module),
            version,
            patch: reported,
        });
        Ok(version)
    }

    /// Every reported patch stored from now on, of modules and leaf devices,
    /// for the upstream connection to send to IoT Hub. A receiver that falls
    /// more than 1,024 changes behind misses some (`Lagged`); it then reads
    /// the twins again ([`Hub::client_twin`]).
    pub fn reported_changes(&self) -> broadcast::Receiver<ReportedChange> {
        self.inner.reported.subscribe()
    }

    /// The twin of a module or leaf device.
    pub async fn client_twin(&self, client: &ClientIdentity) -> Result<Twin, HubError> {
        self.twin(&client.key()).await
    }

    fn twin_change_notification(
        &self,
        client: &str,
        patch: &Map<String, Value>,
        version: u64,
    ) -> HubMessage {
        let mut message = HubMessage::default();
        self.set_connection_properties(&ClientIdentity::from_key(client), &mut message);
        let properties = &mut message.system_properties;
        properties.insert(SystemProperty::ContentType, "application/json".to_owned());
        properties.insert(SystemProperty::ContentEncoding, "utf-8".to_owned());
        message.body = json_bytes(&twin::with_version(patch, version));
        message
    }

    /// Applies a desired patch that came from the cloud for a module or a
    /// leaf device, over the deployment's desired properties (a leaf has
    /// none), durably, and sends the client's connection what changed.
    /// Returns the new desired `$version` (the hub's own, which counts the
    /// changes of both layers), or `None` when nothing the client sees
    /// changed: a patch delivered twice changes nothing the second time.
    pub async fn patch_desired_from_cloud(
        &self,
        client: &ClientIdentity,
        patch: Map<String, Value>,
    ) -> Result<Option<u64>, HubError> {
        let key = client.key();
        self.require_client(&key)?;
        let patch =
            twin::validate_desired_patch(&patch).map_err(|error| HubError::BadDesiredPatch {
                client: client.to_string(),
                reason: error.to_string(),
            })?;
        let name = key.clone();
        let change = self
            .inner
            .store
            .write(true, move |batch| {
                let mut record = match batch.document(TWIN, &name)? {
                    Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                        tracing::error!(client = %name, %error, "a stored twin is corrupt; it starts again empty");
                        TwinRecord::default()
                    }),
                    None => TwinRecord::default(),
                };
                let change = match record.patch_desired_from_cloud(&patch) {
                    Ok(change) => change,
                    Err(error) => return Ok(Err(error)),
                };
                if change.is_some() {
                    batch.put_document(TWIN, &name, &json_bytes(&record))?;
                }
                Ok(Ok(change))
            })
            .await?
            .map_err(|error| HubError::BadDesiredPatch {
                client: client.to_string(),
                reason: error.to_string(),
            })?;
        Ok(change.map(|patch| {
            let version = patch.version;
            if let Some(state) = self.client_state(&key) {
                // No receiver means no connection listens; it reads the
                // whole twin when it connects.
                let _ = state.desired.send(patch);
            }
            version
        }))
    }

    /// Desired patches for `module` from the deployments installed after
    /// this call.
    pub fn desired_patches(&self, module: &str) -> broadcast::Receiver<DesiredPatch> {
        match self.client_state(module) {
            Some(state) => state.desired.subscribe(),
            // An unknown module never gets a patch: the sender is dropped
            // and the receiver reports it closed.
            None => broadcast::channel(1).1,
        }
    }

    /// `client_id`'s persistent session, if it has one.
    pub fn load_session(&self, client_id: &str) -> Option<StoredSession> {
        match self.inner.store.document(SESSION, client_id) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(session) => Some(session),
                Err(error) => {
                    tracing::error!(client = client_id, %error, "a stored session is corrupt; the client starts a new one");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                tracing::error!(client = client_id, %error, "a stored session cannot be read; the client starts a new one");
                None
            }
        }
    }

    /// Stores `client_id`'s persistent session (durably).
    pub async fn save_session(
        &self,
        client_id: &str,
        session: &StoredSession,
    ) -> Result<(), HubError> {
        self.put_document(SESSION, client_id, json_bytes(session))
            .await
    }

    /// Deletes `client_id`'s persistent session.
    pub async fn forget_session(&self, client_id: &str) -> Result<(), HubError> {
        let client = client_id.to_owned();
        self.inner
            .store
            .write(true, move |batch| batch.delete_document(SESSION, &client))
            .await?;
        Ok(())
    }

    /// Records whether `module` is connected, for the counters.
    pub fn set_connected(&self, module: &str, connected: bool) {
        if let Some(state) = self.client_state(module) {
            state.connected.store(connected, Ordering::Relaxed);
        }
    }

    /// Counts a twin GET of `module` that was answered, for
    /// `edgehub_gettwin_total`. Only the module's own requests count: the
    /// hub reading a twin for `edged` is not a GET.
    pub fn count_twin_get(&self, module: &str) {
        if let Some(state) = self.client_state(module) {
            state.twin_gets.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a reported patch of `module` that was stored, for
    /// `edgehub_reported_properties_total`.
    pub fn count_reported_patch(&self, module: &str) {
        if let Some(state) = self.client_state(module) {
            state.reported_patches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The hub's counters.
    pub fn stats(&self) -> HubStats {
        let endpoints: HashMap<String, EndpointCounters> = self
            .inner
            .store
            .shared
            .endpoints
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let endpoint = |counters: &EndpointCounters| EndpointStats {
            depth: counters.depth,
            expired: counters.expired,
            dropped_quota: counters.quota,
            dropped_disk_full: counters.disk_full,
            by_priority: counters.by_priority,
        };
        let mut stats = HubStats::default();
        let removed = &self.inner.removed;
        let mut totals = Totals {
            messages_in: removed.messages_in.load(Ordering::Relaxed),
            messages_out: removed.messages_out.load(Ordering::Relaxed),
            refused_store_full: removed.refused.load(Ordering::Relaxed),
            dropped_store_full: removed.dropped.load(Ordering::Relaxed),
            ..Totals::default()
        };
        for counters in endpoints.values() {
            totals.queued += counters.depth;
            totals.expired += counters.expired;
            totals.dropped_quota += counters.quota;
            totals.dropped_disk_full += counters.disk_full;
        }
        let client_stats = |state: &ModuleState, queues| ModuleStats {
            connected: state.connected.load(Ordering::Relaxed),
            messages_in: state.messages_in.load(Ordering::Relaxed),
            messages_out: state.messages_out.load(Ordering::Relaxed),
            refused_store_full: state.refused.load(Ordering::Relaxed),
            dropped_store_full: state.dropped.load(Ordering::Relaxed),
            twin_gets: state.twin_gets.load(Ordering::Relaxed),
            reported_patches: state.reported_patches.load(Ordering::Relaxed),
            queues,
        };
        for (module, state) in &self.installed().modules {
            let prefix = format!("{module}/");
            let queues = endpoints
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(name, counters)| (name.clone(), endpoint(counters)))
                .collect();
            let module_stats = client_stats(state, queues);
            totals.messages_in += module_stats.messages_in;
            totals.messages_out += module_stats.messages_out;
            totals.refused_store_full += module_stats.refused_store_full;
            totals.dropped_store_full += module_stats.dropped_store_full;
            stats.modules.insert(module.clone(), module_stats);
        }
        for (device, state) in &self.inner.leaves {
            let queue = ClientIdentity::LeafDevice(device.clone()).key();
            let queues = endpoints
                .get(&queue)
                .map(|counters| (queue, endpoint(counters)))
                .into_iter()
                .collect();
            let leaf_stats = client_stats(state, queues);
            totals.messages_in += leaf_stats.messages_in;
            totals.messages_out += leaf_stats.messages_out;
            totals.refused_store_full += leaf_stats.refused_store_full;
            totals.dropped_store_full += leaf_stats.dropped_store_full;
            stats.leaf_devices.insert(device.clone(), leaf_stats);
        }
        if let Some(upstream) = endpoints.get(UPSTREAM) {
            stats.upstream = endpoint(upstream);
        }
        stats.totals = totals;
        let commits = &self.inner.store.shared.commits;
        stats.store = StoreStats {
            commits: commits.commits.load(Ordering::Relaxed),
            durable_commits: commits.durable_commits.load(Ordering::Relaxed),
            operations: commits.operations.load(Ordering::Relaxed),
            largest_batch: commits.largest_batch.load(Ordering::Relaxed),
            stored_bytes: self.inner.store.shared.stored_bytes.load(Ordering::Relaxed),
            limit_bytes: self.inner.config.store_limit_bytes,
        };
        stats
    }
}

/// The expiry of a message queued at `now` (ms since the Unix epoch) with
/// the time to live `ttl`; a zero time to live keeps messages until they are
/// delivered.
fn expiry_after(now: u64, ttl: Duration) -> u64 {
    if ttl.is_zero() {
        NEVER
    } else {
        now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A random 128-bit generation id in hex.
fn new_generation_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| StoreError::Database {
        path: "generation id".to_owned(),
        message: format!("no randomness: {error}"),
    })?;
    Ok(hex::encode(bytes))
}

/// Whose deliveries a stream reads.
enum Reader {
    /// A deployed module's inputs or a leaf device's cloud-to-device
    /// queue; its counters count the deliveries.
    Client(Arc<ModuleState>),
    /// The `$upstream` queue, read by the connection to the cloud.
    Upstream,
    /// A module that is not deployed: the stream delivers nothing.
    Gone,
}

/// Where an input stream takes its deliveries from.
#[derive(Debug)]
enum Mode {
    /// The store, after the cursors.
    Store,
    /// The store found nothing more and the stream joined the gate with a
    /// tail: the store's entries below the tail's first id come first, once
    /// every one of them is committed.
    Joining(Arc<Tail>),
    /// The tail, as messages are accepted.
    Live(Arc<Tail>),
}

/// A module's input deliveries (see [`Hub::open_inputs`]).
///
/// The stream reads the module's queues from the store in small batches,
/// priority 0 first and in order within each queue, so a long queue is
/// never in memory. Once it has read all the store holds for the module,
/// it takes new messages from a live tail as they are accepted, without
/// waiting for their commit (see the store's module documentation); a tail
/// that falls behind sends it back to the store. At most a window of
/// deliveries (a module's is [`INFLIGHT_WINDOW`]) are unacknowledged; `next`
/// waits while the window is full. `next` is cancel-safe: dropping its future loses no
/// delivery.
pub struct InputStream {
    hub: Hub,
    /// The queue's target: the module, or `$upstream`.
    module: String,
    wake: Arc<Wake>,
    epoch: u64,
    reader: Reader,
    /// The most deliveries unacknowledged at once.
    window: usize,
    /// How many queue entries one read takes.
    read_batch: usize,
    mode: Mode,
    /// Per priority, the last entry delivered.
    cursors: [Option<(u64, String)>; PRIORITIES],
    /// The module's arrival counts (per priority) when the buffer was read.
    seen_arrivals: [u64; PRIORITIES],
    buffer: VecDeque<Pending>,
    /// The last read found nothing after the cursors.
    exhausted: bool,
    /// A read in progress.
    read: Option<tokio::task::JoinHandle<Result<Vec<Pending>, StoreError>>>,
    inflight: HashMap<DeliveryId, (QueueEntry, Option<Arc<LiveAcks>>)>,
    /// Acknowledged deliveries whose removal is not committed yet; past
    /// [`UNCONFIRMED_LIMIT`] the stream waits, which bounds the removals
    /// waiting for the writer.
    unconfirmed: Arc<AtomicUsize>,
    next_id: u64,
}

impl Drop for InputStream {
    /// A stream that ends leaves the gate, so no more messages are handed
    /// to it.
    fn drop(&mut self) {
        if let Mode::Joining(tail) | Mode::Live(tail) = &self.mode {
            self.hub.inner.store.leave_tail(tail);
        }
    }
}

impl std::fmt::Debug for InputStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("InputStream")
            .field("module", &self.module)
            .field("inflight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

impl InputStream {
    /// The next delivery; `None` when a newer stream replaced this one or
    /// the module is not (or no longer) deployed.
    pub async fn next(&mut self) -> Option<Delivery> {
        if matches!(self.reader, Reader::Gone) {
            return None;
        }
        let wake = self.wake.clone();
        let shared = self.hub.inner.store.shared.clone();
        loop {
            let notified = wake.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Only a joining stream waits for the writer; registering with
            // its notification otherwise would cost every delivery a lock.
            let processed = shared.processed.notified();
            tokio::pin!(processed);
            if matches!(self.mode, Mode::Joining(_)) {
                processed.as_mut().enable();
            }
            if wake.epoch.load(Ordering::Acquire) != self.epoch {
                return None;
            }
            if self.inflight.len() < self.window
                && self.unconfirmed.load(Ordering::Acquire) < UNCONFIRMED_LIMIT
            {
                if self.read.is_none() && self.needs_read() {
                    self.start_read();
                }
                if let Some(read) = self.read.as_mut() {
                    // Awaiting the handle in place keeps `next` cancel-safe:
                    // a dropped call leaves the read for the next one.
                    let result = read.await;
                    self.read = None;
                    match result {
                        Ok(Ok(pending)) => {
                            self.exhausted = pending.is_empty();
                            self.buffer = pending.into();
                        }
                        Ok(Err(error)) => {
                            tracing::error!(module = %self.module, %error, "the module's queue cannot be read; retrying in a second");
                            tokio::time::sleep(READ_RETRY).await;
                        }
                        Err(error) => {
                            tracing::error!(module = %self.module, %error, "a queue read failed; retrying in a second");
                            tokio::time::sleep(READ_RETRY).await;
                        }
                    }
                    continue;
                }
                if let Some(delivery) = self.pop() {
                    return Some(delivery);
                }
                match &self.mode {
                    Mode::Store if self.exhausted => {
                        // Everything stored is delivered: take new messages
                        // as they come, once those already on their way to
                        // the store are read.
                        let tail = self.hub.inner.store.join_tail(&self.module, &self.wake);
                        self.mode = Mode::Joining(tail);
                        self.exhausted = false;
                        continue;
                    }
                    Mode::Joining(tail) if self.exhausted => {
                        let tail = tail.clone();
                        self.mode = Mode::Live(tail);
                        continue;
                    }
                    Mode::Joining(tail) if !shared.processed_below(tail.from) => {
                        // Wait for the writer below.
                    }
                    Mode::Live(_) => {
                        if let Some(delivery) = self.pop_tail() {
                            return Some(delivery);
                        }
                        if matches!(self.mode, Mode::Store) {
                            continue;
                        }
                    }
                    Mode::Store | Mode::Joining(_) => {
                        // Everything buffered had expired; read on.
                        continue;
                    }
                }
            }
            tokio::select! {
                () = notified => {}
                () = processed, if matches!(self.mode, Mode::Joining(_)) => {}
            }
        }
    }

    /// Whether to read from the store: in store mode, the buffer is empty
    /// and the queue was not found empty since the last arrival, or messages
    /// more urgent than the buffer's first arrived; while joining, the
    /// buffer is empty, the entries below the tail are all committed and
    /// not all read yet.
    fn needs_read(&self) -> bool {
        match &self.mode {
            Mode::Store => {
                let urgent = self.buffer.front().map_or(PRIORITIES, |pending| {
                    usize::from(pending.entry.priority).min(PRIORITIES)
                });
                let arrived = (0..urgent).any(|priority| {
                    self.wake.arrivals[priority].load(Ordering::Acquire)
                        != self.seen_arrivals[priority]
                });
                arrived || (self.buffer.is_empty() && !self.exhausted)
            }
            Mode::Joining(tail) => {
                self.buffer.is_empty()
                    && !self.exhausted
                    && self.hub.inner.store.shared.processed_below(tail.from)
            }
            Mode::Live(_) => false,
        }
    }

    /// Reads the next batch after the cursors on a blocking thread (a long
    /// queue may not be in the cache).
    fn start_read(&mut self) {
        self.seen_arrivals =
            std::array::from_fn(|priority| self.wake.arrivals[priority].load(Ordering::Acquire));
        let hub = self.hub.clone();
        let module = self.module.clone();
        let cursors = self.cursors.clone();
        let batch = self.read_batch;
        let below = match &self.mode {
            Mode::Joining(tail) => tail.from,
            Mode::Store | Mode::Live(_) => u64::MAX,
        };
        self.read = Some(tokio::task::spawn_blocking(move || {
            hub.inner.store.read_queue(&module, &cursors, below, batch)
        }));
    }

    /// Takes the next unexpired entry from the buffer.
    fn pop(&mut self) -> Option<Delivery> {
        while let Some(pending) = self.buffer.pop_front() {
            if let Some(delivery) = self.deliver(pending) {
                return Some(delivery);
            }
        }
        None
    }

    /// Takes the next unexpired message from the live tail; back to store
    /// mode when the tail overflowed and is empty.
    fn pop_tail(&mut self) -> Option<Delivery> {
        let Mode::Live(tail) = &self.mode else {
            return None;
        };
        let tail = tail.clone();
        let shared = self.hub.inner.store.shared.clone();
        loop {
            match tail.pop(&shared) {
                Ok(Some(pending)) => {
                    if let Some(delivery) = self.deliver(pending) {
                        return Some(delivery);
                    }
                }
                Ok(None) => return None,
                Err(Overflowed) => {
                    tracing::debug!(module = %self.module, "the module reads slower than its messages come; delivering from the store");
                    self.hub.inner.store.leave_tail(&tail);
                    self.mode = Mode::Store;
                    self.exhausted = false;
                    return None;
                }
            }
        }
    }

    /// Moves the cursor past `pending` and delivers it, unless it expired
    /// (it is then removed).
    fn deliver(&mut self, pending: Pending) -> Option<Delivery> {
        let entry = pending.entry;
        if let Some(cursor) = self.cursors.get_mut(usize::from(entry.priority)) {
            // A message for two inputs comes from a tail in target order and
            // from the store in input order; the cursor never goes back.
            let position = (entry.id, entry.input.as_str());
            if cursor
                .as_ref()
                .is_none_or(|(id, input)| (*id, input.as_str()) < position)
            {
                *cursor = Some((entry.id, entry.input.clone()));
            }
        }
        if pending.expiry <= store::now_ms() {
            self.hub.inner.store.remove(entry, Removal::Expired, None);
            return None;
        }
        let id = DeliveryId(self.next_id);
        self.next_id += 1;
        let input = entry.input.clone();
        self.inflight.insert(id, (entry, pending.live));
        Some(Delivery {
            id,
            input,
            message: pending.record.message,
        })
    }

    /// The module acknowledged a delivery: its queue entry is removed (the
    /// removal is batched and not fsynced on its own; a crash delivers the
    /// message again).
    pub fn ack(&mut self, id: DeliveryId) {
        if let Some((entry, live)) = self.inflight.remove(&id) {
            if let Some(live) = live {
                live.acknowledge();
            }
            let token = RemovalToken::new(&self.unconfirmed, &self.wake);
            self.hub
                .inner
                .store
                .remove(entry, Removal::Delivered, Some(token));
            if let Reader::Client(state) = &self.reader {
                state.messages_out.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Deliveries not yet acknowledged.
    pub fn unacknowledged(&self) -> usize {
        self.inflight.len()
    }
}
