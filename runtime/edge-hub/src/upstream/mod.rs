//! The upstream connection: the gateway's link to the cloud.
//!
//! One MQTT 3.1.1/TLS connection as the device (client id `{device}`),
//! authenticated with a SAS token (made from the device key, or read from a
//! file) or an X.509 client certificate, to Azure IoT Hub or any broker
//! that carries the same topics. Over it:
//! - telemetry routed `INTO $upstream` goes up from the store, as
//!   `devices/{device}/messages/events/{properties}` with the sender in
//!   `$.cdid`/`$.cmid` (as edgeHub sends it), with a window of QoS 1
//!   publishes in flight and each queue entry removed only after its PUBACK
//!   ([`session`]);
//! - the cloud's desired patches and method calls for the modules come down
//!   and reach the modules as they would from IoT Hub ([`topics`] names the
//!   topics);
//! - the modules' reported properties and the runtime's state (the device
//!   twin's reported properties) go up when they change and after every
//!   reconnect ([`reported`]).
//!
//! The connection never gives up: a failed attempt or a lost connection is
//! recorded in the status with its step and message, and the next attempt
//! comes after an exponential, jittered back-off ([`backoff`]). Messages
//! wait in the store meanwhile, so nothing is lost while the cloud is
//! away, across restarts of edged too.

pub mod backoff;
pub mod config;
mod credentials;
mod link;
mod reported;
mod session;
pub mod status;
mod topics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backoff::Backoff;
pub use config::{ClientKey, UpstreamAuth, UpstreamConfig};
pub use credentials::API_VERSION;
pub use status::{FailureKind, LinkFailure, LinkState, UpstreamStatus};

use crate::hub::Hub;
use session::{Context, Ending};
use status::StatusCell;

/// A connection that lasted at least this long resets the back-off: one
/// that the cloud accepts and drops at once must not be retried in a tight
/// loop.
const HELD_CONNECTION: Duration = Duration::from_secs(10);

/// The running upstream connection.
pub struct Upstream {
    status: Arc<StatusCell>,
    runtime_report: watch::Sender<Option<Map<String, Value>>>,
    /// The connection's task; `None` once stopped.
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Upstream")
            .field("status", &self.status.snapshot())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Starts connecting to the cloud `config` names, on the current tokio
    /// runtime, and keeps connected until dropped.
    pub fn start(hub: Hub, config: UpstreamConfig) -> Self {
        let status = Arc::new(StatusCell::new(
            format!("{}:{}", config.host, config.port),
            config.window,
        ));
        let (context, runtime_report) = Context::new(hub, config, status.clone());
        let task = tokio::spawn(supervise(context));
        Self {
            status,
            runtime_report,
            task: Some(task),
        }
    }

    /// What the connection is doing, and what it did last.
    pub fn status(&self) -> UpstreamStatus {
        self.status.snapshot()
    }

    /// The runtime's state for the device twin's reported properties; sent
    /// when it differs from what the cloud has.
    pub fn report_runtime_state(&self, report: Map<String, Value>) {
        self.runtime_report.send_if_modified(|current| {
            if current.as_ref() == Some(&report) {
                return false;
            }
            *current = Some(report);
            true
        });
    }
}

impl Upstream {
    /// Stops the connection and waits until its task, and with it its
    /// clone of the hub, is gone: after this, dropping the last [`Hub`]
    /// closes the store. (Dropping an `Upstream` stops it too, but the task
    /// ends at the runtime's next turn.)
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Connects, runs the connection, and after it ends waits and connects
/// again, forever.
async fn supervise(mut context: Context) {
    let mut backoff = Backoff::new(
        context.config.backoff_initial,
        context.config.backoff_maximum,
    );
    let endpoint = format!("{}:{}", context.config.host, context.config.port);
    loop {
        context.status.connecting(backoff.failures());
        let error = match link::connect(&context.config).await {
            Ok(link) => {
                context.status.connected();
                tracing::info!(
                    endpoint,
                    device = context.config.device_id,
                    session_present = link.session_present,
                    "connected to the cloud"
                );
                let since = Instant::now();
                let ending = session::run(link, &mut context).await;
                if since.elapsed() >= HELD_CONNECTION {
                    backoff.reset();
                }
                match ending {
                    Ending::Renew => {
                        tracing::info!(
                            endpoint,
                            "renewing the cloud connection before its token expires"
                        );
                        continue;
                    }
                    Ending::Failed(error) => error,
                }
            }
            Err(error) => error,
        };
        let wait = backoff.next_wait();
        tracing::warn!(
            endpoint,
            error = %error,
            retry_in = %humantime::format_duration(Duration::from_millis(
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
            )),
            "the cloud connection failed; messages for it stay queued"
        );
        context
            .status
            .failed(error.kind, error.message, wait, backoff.failures());
        tokio::time::sleep(wait).await;
    }
}
