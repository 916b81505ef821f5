//! One established connection to the cloud: telemetry from the `$upstream`
//! queue going up with a window of QoS 1 publishes in flight, the cloud's
//! desired patches and method calls coming down, and the reported
//! properties kept in sync, until the connection fails or its credentials
//! are due for renewal.
//!
//! Delivery is at-least-once. A queue entry is removed (checkpointed) only
//! when the cloud's PUBACK for it comes. The stream reads the queues
//! priority 0 first and in order within each priority, and the publishes
//! go out in that order on the one connection, so the cloud receives each
//! queue in order. When the connection ends, what was in flight is sent
//! again on the next one: the cloud may see those messages twice, which
//! `messages_resent` counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe, SubscribeFilter};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::config::UpstreamConfig;
use super::link::{Link, LinkError};
use super::reported::{ReportedSync, ReportedTwin};
use super::status::{FailureKind, StatusCell};
use super::topics::{self, CloudTopic};
use crate::client::ClientIdentity;
use crate::failpoint::{self, Failpoint};
use crate::hub::{DeliveryId, Hub, HubError, ReportedChange};
use crate::message::HubMessage;
use crate::methods::{CallTimeouts, MethodError, MethodResponse};
use crate::mqtt::connection::{Closed, encode, read_packet};
use crate::properties;
use crate::twin::VERSION_KEY;

/// How long a module has to answer a method call from the cloud, as IoT
/// Hub's default `responseTimeoutInSeconds`.
const METHOD_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest time a connection runs before it is renewed for its token.
const MINIMUM_RENEWAL: Duration = Duration::from_secs(60);

/// Method answers waiting to be sent up.
const RESPONSE_QUEUE: usize = 64;

/// What the connection task keeps from one connection to the next.
pub(crate) struct Context {
    pub hub: Hub,
    pub config: UpstreamConfig,
    pub status: Arc<StatusCell>,
    pub runtime_report: watch::Receiver<Option<Map<String, Value>>>,
    pub reported_changes: broadcast::Receiver<ReportedChange>,
    /// The leaf devices whose cloud traffic the connection carries.
    pub leaves: Vec<String>,
    pub sync: ReportedSync,
    /// Method answers from calls still running when a connection ended go
    /// out on the next one.
    pub responses: mpsc::Receiver<MethodAnswer>,
    pub answer: mpsc::Sender<MethodAnswer>,
    /// The next reported patch's request id.
    pub next_request_id: u64,
}

impl Context {
    pub(crate) fn new(
        hub: Hub,
        config: UpstreamConfig,
        status: Arc<StatusCell>,
    ) -> (Self, watch::Sender<Option<Map<String, Value>>>) {
        let (report, runtime_report) = watch::channel(None);
        let (answer, responses) = mpsc::channel(RESPONSE_QUEUE);
        let reported_changes = hub.reported_changes();
        let leaves = hub
            .config()
            .leaf_devices
            .iter()
            .map(|leaf| leaf.id.clone())
            .collect();
        let context = Self {
            leaves,
            hub,
            config,
            status,
            runtime_report,
            reported_changes,
            sync: ReportedSync::default(),
            responses,
            answer,
            next_request_id: 1,
        };
        (context, report)
    }
}

/// A module's answer to a method call from the cloud.
pub(crate) struct MethodAnswer {
    client: ClientIdentity,
    rid: String,
    status: i32,
    payload: Vec<u8>,
}

/// Why a connection ended.
pub(crate) enum Ending {
    /// It failed.
    Failed(LinkError),
    /// Its token is about to expire: connect again at once with a new one.
    Renew,
}

/// What a packet id in flight stands for.
enum InFlight {
    Telemetry(DeliveryId),
    Reported(ReportedTwin),
    MethodAnswer,
}

/// Packet ids of the publishes awaiting PUBACK.
#[derive(Default)]
struct PacketIds {
    in_flight: HashMap<u16, InFlight>,
    next: u16,
    telemetry: usize,
}

impl PacketIds {
    /// A free packet id for `what` (the window is far below the 65,535
    /// ids, so the search is short).
    fn allocate(&mut self, what: InFlight) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1).max(1);
            if !self.in_flight.contains_key(&self.next) {
                break;
            }
        }
        if matches!(what, InFlight::Telemetry(_)) {
            self.telemetry += 1;
        }
        self.in_flight.insert(self.next, what);
        self.next
    }

    fn acknowledge(&mut self, pkid: u16) -> Option<InFlight> {
        let what = self.in_flight.remove(&pkid)?;
        if matches!(what, InFlight::Telemetry(_)) {
            self.telemetry -= 1;
        }
        Some(what)
    }
}

/// Runs `link` until it ends.
pub(crate) async fn run(mut link: Link, context: &mut Context) -> Ending {
    let device = context.config.device_id.clone();
    let mut subscribe = Subscribe::new_many(
        topics::subscriptions(&device, &context.leaves)
            .into_iter()
            .map(|filter| SubscribeFilter::new(filter, QoS::AtLeastOnce)),
    );
    // Packet id 0 is not allowed. A publish may use the same id: its
    // PUBACK and the SUBACK are told apart by their packet types.
    subscribe.pkid = 1;
    if let Err(error) = send(&link, Packet::Subscribe(subscribe)).await {
        return Ending::Failed(error);
    }
    let mut ids = PacketIds::default();
    let mut stream = context.hub.open_upstream(context.config.window);
    let mut twins = all_client_twins(context);
    if context.runtime_report.borrow().is_some() {
        twins.push(ReportedTwin::Device);
    }
    context.sync.connected(twins);
    // Changes that came while disconnected are covered by the whole
    // documents.
    context.reported_changes = context.reported_changes.resubscribe();
    context.runtime_report.mark_unchanged();

    let keep_alive = context.config.keep_alive.max(Duration::from_secs(1));
    let mut ping = tokio::time::interval_at(Instant::now() + keep_alive / 2, keep_alive / 2);
    let mut last_received = Instant::now();
    let renew_at = renewal_time(link.expires);

    let ending = loop {
        if let Err(error) = send_reported(&link, context, &mut ids).await {
            break Ending::Failed(error);
        }
        context
            .status
            .update(|status| status.in_flight = ids.telemetry);
        tokio::select! {
            packet = read_packet(&mut link.reader, &mut link.buffer) => {
                last_received = Instant::now();
                match packet {
                    Ok(packet) => {
                        if let Err(error) = handle_packet(packet, &link, context, &mut ids, &mut stream).await {
                            break Ending::Failed(error);
                        }
                    }
                    Err(closed) => break Ending::Failed(lost(&closed, &device)),
                }
            }
            delivery = stream.next() => {
                let Some(delivery) = delivery else {
                    break Ending::Failed(LinkError::new(FailureKind::Lost, "the upstream queue's stream ended"));
                };
                let topic = topics::telemetry(&device, &properties::encode(&delivery.message));
                let pkid = ids.allocate(InFlight::Telemetry(delivery.id));
                let mut publish = Publish::new(topic, QoS::AtLeastOnce, delivery.message.body);
                publish.pkid = pkid;
                if let Err(error) = send(&link, Packet::Publish(publish)).await {
                    break Ending::Failed(error);
                }
                context.status.update(|status| status.messages_sent += 1);
            }
            Some(answer) = context.responses.recv() => {
                let topic = topics::method_response(&device, &answer.client, answer.status, &answer.rid);
                let pkid = ids.allocate(InFlight::MethodAnswer);
                let mut publish = Publish::new(topic, QoS::AtLeastOnce, answer.payload);
                publish.pkid = pkid;
                if let Err(error) = send(&link, Packet::Publish(publish)).await {
                    break Ending::Failed(error);
                }
            }
            change = context.reported_changes.recv() => match change {
                Ok(change) => context.sync.changed(ReportedTwin::Client(change.client)),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for twin in all_client_twins(context) {
                        context.sync.changed(twin);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {}
            },
            Ok(()) = context.runtime_report.changed() => {
                context.sync.changed(ReportedTwin::Device);
            }
            _ = ping.tick() => {
                if last_received.elapsed() > keep_alive + keep_alive / 2 {
                    break Ending::Failed(LinkError::new(
                        FailureKind::Lost,
                        format!("nothing from the cloud for {} (1.5 times the keep-alive)", humantime::format_duration(keep_alive + keep_alive / 2)),
                    ));
                }
                if let Err(error) = send(&link, Packet::PingReq).await {
                    break Ending::Failed(error);
                }
            }
            () = sleep_until_renewal(renew_at) => {
                let _ = send(&link, Packet::Disconnect).await;
                break Ending::Renew;
            }
        }
    };
    let resent = ids.telemetry;
    context.status.update(|status| {
        status.messages_resent += u64::try_from(resent).unwrap_or(u64::MAX);
        status.in_flight = 0;
    });
    ending
}

/// The twins of every deployed module and configured leaf device.
fn all_client_twins(context: &Context) -> Vec<ReportedTwin> {
    let modules = context
        .hub
        .identities()
        .into_iter()
        .map(|identity| ClientIdentity::Module(identity.module));
    let leaves = context
        .leaves
        .iter()
        .cloned()
        .map(ClientIdentity::LeafDevice);
    modules.chain(leaves).map(ReportedTwin::Client).collect()
}

/// Handles one packet from the cloud.
async fn handle_packet(
    packet: Packet,
    link: &Link,
    context: &mut Context,
    ids: &mut PacketIds,
    stream: &mut crate::hub::InputStream,
) -> Result<(), LinkError> {
    match packet {
        Packet::PubAck(ack) => match ids.acknowledge(ack.pkid) {
            Some(InFlight::Telemetry(delivery)) => {
                stream.ack(delivery);
                context
                    .status
                    .update(|status| status.messages_acknowledged += 1);
                failpoint::hit(Failpoint::UpstreamAfterPuback);
            }
            Some(InFlight::Reported(twin)) => {
                context.sync.acknowledged(&twin);
                context
                    .status
                    .update(|status| status.reported_patches_sent += 1);
            }
            Some(InFlight::MethodAnswer) | None => {}
        },
        Packet::SubAck(ack) => {
            let refused = ack
                .return_codes
                .iter()
                .filter(|code| matches!(code, rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure))
                .count();
            if refused > 0 {
                tracing::warn!(
                    refused,
                    "the cloud refused some of the upstream subscriptions: desired patches or method calls for the modules will not arrive"
                );
            }
        }
        Packet::Publish(publish) => {
            let pkid = publish.pkid;
            let qos = publish.qos;
            let handled = handle_cloud_publish(publish, context).await;
            if qos != QoS::AtMostOnce && handled == Handled::Done {
                // Acknowledged once handled: a desired patch or a
                // cloud-to-device message is stored by then; a method call is
                // on its way to the module. One the store could not take is
                // not acknowledged, so the cloud sends it again after the
                // next reconnect.
                send(link, Packet::PubAck(PubAck::new(pkid))).await?;
            }
        }
        Packet::PingResp => {}
        other => {
            return Err(LinkError::new(
                FailureKind::Protocol,
                format!("unexpected packet from the cloud: {other:?}"),
            ));
        }
    }
    Ok(())
}

/// Whether a publish from the cloud was handled, or must come again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Done with, or of no use: acknowledged.
    Done,
    /// The store could not take it: not acknowledged.
    Retry,
}

/// A desired patch, a method call, a cloud-to-device message or a twin
/// response from the cloud.
async fn handle_cloud_publish(publish: Publish, context: &mut Context) -> Handled {
    let device = context.config.device_id.clone();
    let topic = publish.topic.as_str();
    match topics::parse(topic, &device, &context.leaves) {
        Some(CloudTopic::Desired { client }) => {
            context
                .status
                .update(|status| status.desired_patches_received += 1);
            let patch = match serde_json::from_slice::<Value>(&publish.payload) {
                Ok(Value::Object(patch)) => patch,
                _ => {
                    tracing::warn!(%client, "a desired patch from the cloud is not a JSON object; ignored");
                    return Handled::Done;
                }
            };
            let version = patch.get(VERSION_KEY).cloned();
            match context.hub.patch_desired_from_cloud(&client, patch).await {
                Ok(local) => {
                    tracing::info!(%client, cloud_version = ?version, hub_version = ?local, "desired properties patched from the cloud");
                }
                Err(error @ (HubError::UnknownModule(_) | HubError::UnknownLeafDevice(_))) => {
                    tracing::warn!(%error, "a desired patch from the cloud is for no client of this gateway; ignored");
                }
                Err(error @ HubError::BadDesiredPatch { .. }) => {
                    tracing::warn!(%error, "ignored");
                }
                Err(error) => {
                    tracing::error!(%client, %error, "a desired patch from the cloud could not be stored; the cloud sends it again after the next reconnect");
                    return Handled::Retry;
                }
            }
        }
        Some(CloudTopic::Method { client, name, rid }) => {
            context
                .status
                .update(|status| status.method_calls_received += 1);
            let hub = context.hub.clone();
            let answer = context.answer.clone();
            let rid = rid.to_owned();
            let payload = publish.payload.to_vec();
            tokio::spawn(async move {
                let timeouts = CallTimeouts::answer_within(METHOD_RESPONSE_TIMEOUT);
                let known = match &client {
                    ClientIdentity::Module(module) => hub.identity(module).is_some(),
                    // The topic names only configured leaves.
                    ClientIdentity::LeafDevice(_) => true,
                };
                let result = if known {
                    hub.invoke_method(&client, &name, payload, timeouts)
                        .await
                        .map_err(Some)
                } else {
                    Err(None)
                };
                let (status, payload) = method_answer(result, &client);
                let _ = answer
                    .send(MethodAnswer {
                        client,
                        rid,
                        status,
                        payload,
                    })
                    .await;
            });
        }
        Some(CloudTopic::CloudToDevice { leaf, properties }) => {
            let mut message = HubMessage {
                body: publish.payload.to_vec(),
                ..HubMessage::default()
            };
            if let Err(error) = properties::decode_into(properties, &mut message) {
                tracing::warn!(leaf, %error, "a cloud-to-device message has a property bag the hub cannot read; ignored");
                return Handled::Done;
            }
            if let Err(error) = context.hub.send_to_device(leaf, message).await {
                tracing::error!(leaf, %error, "a cloud-to-device message could not be queued; the cloud sends it again after the next reconnect");
                return Handled::Retry;
            }
        }
        Some(CloudTopic::TwinResponse { status }) => {
            if !status.starts_with('2') {
                tracing::warn!(
                    status,
                    topic,
                    "the cloud refused a reported-properties patch"
                );
            }
        }
        None => {
            tracing::debug!(
                topic,
                "a publish from the cloud on a topic the gateway does not use; ignored"
            );
        }
    }
    Handled::Done
}

/// The status and payload of a method answer: the module's own, or the
/// error IoT Hub would give (404 for a module that is not connected, 504
/// for one that did not answer in time).
fn method_answer(
    result: Result<MethodResponse, Option<MethodError>>,
    client: &ClientIdentity,
) -> (i32, Vec<u8>) {
    let (status, message) = match result {
        Ok(response) => return (response.status, response.payload),
        Err(None) => (404, format!("{client} is not deployed on this device")),
        Err(Some(error @ MethodError::NotConnected)) => (404, error.to_string()),
        Err(Some(error @ MethodError::Timeout)) => (504, error.to_string()),
        Err(Some(error @ MethodError::TooLarge)) => (413, error.to_string()),
        Err(Some(error @ MethodError::Closed)) => (502, error.to_string()),
    };
    let body = serde_json::json!({ "status": status, "message": message });
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Sends the next reported patches, one per twin in flight.
async fn send_reported(
    link: &Link,
    context: &mut Context,
    ids: &mut PacketIds,
) -> Result<(), LinkError> {
    while let Some(twin) = context.sync.next_to_send() {
        let current = match &twin {
            ReportedTwin::Device => context.runtime_report.borrow().clone(),
            ReportedTwin::Client(client) => match context.hub.client_twin(client).await {
                Ok(twin) => match twin.reported {
                    Value::Object(mut reported) => {
                        reported.remove(VERSION_KEY);
                        Some(reported)
                    }
                    _ => None,
                },
                Err(_) => None,
            },
        };
        let Some(current) = current else {
            // The module left the deployment (or there is no runtime report
            // yet): nothing to send.
            context.sync.forget(&twin);
            continue;
        };
        let Some(patch) = context.sync.take_patch(&twin, current) else {
            continue;
        };
        let rid = context.next_request_id;
        context.next_request_id += 1;
        let topic = topics::reported_patch(&context.config.device_id, &twin, rid);
        let body = serde_json::to_vec(&Value::Object(patch)).unwrap_or_default();
        let pkid = ids.allocate(InFlight::Reported(twin));
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, body);
        publish.pkid = pkid;
        send(link, Packet::Publish(publish)).await?;
    }
    Ok(())
}

async fn send(link: &Link, packet: Packet) -> Result<(), LinkError> {
    let bytes = encode(&packet).map_err(|error| LinkError::lost(&error))?;
    link.outgoing.send(bytes).await.map_err(|_| {
        LinkError::new(
            FailureKind::Lost,
            "the connection to the cloud closed while sending",
        )
    })
}

fn lost(closed: &Closed, device: &str) -> LinkError {
    match closed {
        Closed::Disconnected => LinkError::new(
            FailureKind::Lost,
            format!("the cloud closed the connection of device {device}"),
        ),
        other => LinkError::lost(other),
    }
}

/// When to renew a connection whose token expires at `expires`: after 90%
/// of its remaining life, so a new token is in place well before, and not
/// sooner than a minute: a token file nobody renews must not make the
/// connection reconnect ever faster as its end nears (the cloud closes the
/// connection when the token expires, and the next attempt reports it).
fn renewal_time(expires: Option<SystemTime>) -> Option<Instant> {
    let remaining = expires?
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Some(Instant::now() + remaining.mul_f64(0.9).max(MINIMUM_RENEWAL))
}

async fn sleep_until_renewal(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
