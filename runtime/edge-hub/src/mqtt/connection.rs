//! One module's or leaf device's MQTT connection: CONNECT and
//! authentication, then the state machine that carries telemetry into the
//! hub, input (or cloud-to-device) messages, twin responses, desired patches
//! and method requests out, with QoS 0 and 1. Modules and leaf devices take
//! the same paths; only their topics ([`TopicOwner`]), their key in the hub
//! ([`ClientIdentity::key`]) and their credentials differ.
//!
//! Flow control, so that one client can never make the hub buffer without
//! bound:
//! - Inbound: publishes are handed to the store as they arrive and
//!   acknowledged in arrival order once each is durable; at most
//!   [`MAXIMUM_INBOUND_IN_FLIGHT`] (and [`MAXIMUM_INBOUND_BYTES`]) wait for
//!   the store before the connection stops reading, so a flood backs up into
//!   the client's TCP window.
//! - Outbound: at most [`MAXIMUM_OUTBOUND_IN_FLIGHT`] QoS 1 deliveries await
//!   the module's PUBACK (the hub keeps only their ids, not the messages),
//!   and the writer's queue holds at most [`MAXIMUM_OUTBOUND_BYTES`]; while
//!   it is full the connection neither reads nor delivers, and a client that
//!   does not read is closed after [`WRITE_TIMEOUT`].
//! - The read buffer holds at most one packet of [`MAXIMUM_PACKET_BYTES`]
//!   plus one read.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{self, Protocol, QoS};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use super::session::{Carryover, Claim, Clients, Outbox, Subscriptions, granted_qos};
use crate::client::ClientIdentity;
use crate::config::MAXIMUM_MESSAGE_BYTES;
use crate::hub::{Delivery, DeliveryId, DesiredSeen, Hub, InputStream, PublishRefused, Qos};
use crate::leaf::{LeafCredential, sha256_thumbprint};
use crate::message::{HubMessage, SystemProperty};
use crate::methods::{MAXIMUM_PAYLOAD_BYTES, MethodRequest, MethodResponse};
use crate::properties;
use crate::sas::{SasToken, UserName};
use crate::topic::{self, PublishTopic, Subscription, TopicOwner};
use crate::twin::{self, DesiredPatch, TwinError, VERSION_KEY};

/// The largest packet read: a full message and 8 KiB for the topic and
/// packet overhead. A larger one closes the connection.
pub const MAXIMUM_PACKET_BYTES: usize = MAXIMUM_MESSAGE_BYTES + 8 * 1024;

/// Inbound publishes handed to the store and not yet acknowledged, per
/// connection, before reading pauses. More than clients keep in flight
/// (the SDKs 20 to 100), so that a slow fsync holds back the client's
/// PUBACKs but not the hub's reading: messages go on to live modules
/// meanwhile. [`MAXIMUM_INBOUND_BYTES`] bounds the memory.
pub const MAXIMUM_INBOUND_IN_FLIGHT: usize = 256;

/// Outbound QoS 1 deliveries awaiting the module's PUBACK, per connection.
pub const MAXIMUM_OUTBOUND_IN_FLIGHT: usize = 64;

/// Direct method requests sent to the module and not yet answered.
const MAXIMUM_PENDING_METHODS: usize = 64;

/// The longest direct method name sent to a module; the topic that carries
/// it is limited to 64 KiB.
const MAXIMUM_METHOD_NAME_BYTES: usize = 1024;

/// Encoded packets queued for the writer.
const WRITER_QUEUE: usize = 64;

/// Bytes queued for the writer; a packet larger than this waits until the
/// queue is empty and then takes all of it. With the inbound limit below,
/// this bounds what one connection holds, whatever the client does.
pub const MAXIMUM_OUTBOUND_BYTES: usize = 1024 * 1024;

/// Bytes of inbound messages waiting for the store before reading pauses.
pub const MAXIMUM_INBOUND_BYTES: usize = 4 * 1024 * 1024;

/// How long a write to the client may take before the client is taken for
/// gone: it does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest one wait for a token's expiry (a year): a token valid until
/// the end of `u64` must not overflow the clock. Longer ones are waited for
/// again.
const MAXIMUM_TOKEN_WAIT_SECONDS: u64 = 365 * 24 * 3600;

/// How many bytes of queued packets the writer gathers into one write: a
/// few TLS records' worth (a record holds at most 16 KiB).
const COALESCE_BYTES: usize = 64 * 1024;

/// How much is read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// The hub's side of the connections, shared by all of them.
pub(crate) struct Shared {
    pub(crate) hub: Hub,
    pub(crate) clients: Clients<u64>,
}

/// Why a connection ended; logged once, when it does.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Closed {
    #[error("the client disconnected")]
    Disconnected,
    #[error("the connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("malformed MQTT packet: {0}")]
    Malformed(mqttbytes::Error),
    #[error("a packet of {0} bytes is over the limit of {MAXIMUM_PACKET_BYTES}")]
    PacketTooLarge(usize),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("refused publish: {0}")]
    Refused(String),
    #[error("the store is full; the publish with packet id {0} is not acknowledged")]
    StoreFull(u16),
    #[error("no packet within 1.5 times the keep-alive of {0} s")]
    KeepAlive(u16),
    #[error("the SAS token expired")]
    TokenExpired,
    #[error("a new connection with the same client id replaced this one")]
    Replaced,
    #[error("the client does not read what the hub sends")]
    WriterGone,
    #[error("the module's input stream was taken over")]
    InputsTakenOver,
}

/// Reads the next packet, waiting for more bytes as needed. Cancel-safe:
/// what was read stays in `buffer`, and a packet leaves it only whole.
pub(crate) async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut BytesMut,
) -> Result<Packet, Closed> {
    loop {
        match Packet::read(buffer, MAXIMUM_PACKET_BYTES) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                return Err(Closed::PacketTooLarge(size));
            }
            Err(error) => return Err(Closed::Malformed(error)),
        }
        buffer.reserve(READ_CHUNK);
        match reader.read_buf(buffer).await {
            Ok(0) => return Err(Closed::Disconnected),
            Ok(_) => {}
            // A client that goes without TLS close_notify (or resets) has
            // disconnected as much as one that closes cleanly.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Err(Closed::Disconnected);
            }
            Err(error) => return Err(Closed::Io(error)),
        }
    }
}

pub(crate) fn encode(packet: &Packet) -> Result<Bytes, Closed> {
    let mut buffer = BytesMut::with_capacity(packet.size());
    packet
        .write(&mut buffer, usize::MAX)
        .map_err(|error| Closed::Protocol(format!("cannot encode a packet: {error}")))?;
    Ok(buffer.freeze())
}

/// The first packet of a connection, which must be CONNECT. A CONNECT of
/// another protocol level is answered here with CONNACK 1, as MQTT 3.1.1
/// asks, and the connection closes.
pub(crate) async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Result<Connect, Closed> {
    match read_packet(stream, buffer).await {
        Ok(Packet::Connect(connect)) if connect.protocol == Protocol::V4 => Ok(connect),
        Ok(Packet::Connect(_))
        | Err(Closed::Malformed(
            mqttbytes::Error::InvalidProtocolLevel(_) | mqttbytes::Error::InvalidProtocol,
        )) => {
            let connack = encode(&Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::RefusedProtocolVersion,
                false,
            )))?;
            stream.write_all(&connack).await?;
            stream.flush().await?;
            Err(Closed::Protocol("not MQTT 3.1.1".to_owned()))
        }
        Ok(other) => Err(Closed::Protocol(format!(
            "the first packet is not CONNECT but {:?}",
            packet_kind(&other)
        ))),
        Err(error) => Err(error),
    }
}

fn packet_kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

/// An authenticated module or leaf device.
pub(crate) struct Identity {
    pub(crate) client_id: String,
    /// Who it is.
    pub(crate) client: ClientIdentity,
    /// The device of its topics: the hub's for a module, a leaf device's
    /// own id.
    pub(crate) device: String,
    /// Its key in the hub ([`ClientIdentity::key`]): the module name, or
    /// `$leaf/{id}`. Also what the log names it by.
    pub(crate) module: String,
    /// When its SAS token expires, in seconds since the Unix epoch
    /// (`u64::MAX` for a certificate).
    pub(crate) expiry: u64,
}

impl Identity {
    fn new(client_id: &str, client: ClientIdentity, device: &str, expiry: u64) -> Self {
        Self {
            client_id: client_id.to_owned(),
            module: client.key(),
            client,
            device: device.to_owned(),
            expiry,
        }
    }

    /// Whose topics the connection uses.
    pub(crate) fn topics(&self) -> TopicOwner<'_> {
        match &self.client {
            ClientIdentity::Module(module) => TopicOwner::Module {
                device: &self.device,
                module,
            },
            ClientIdentity::LeafDevice(device) => TopicOwner::LeafDevice { device },
        }
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Checks a CONNECT's client id, user name and credentials: a module's
/// SAS token, or a leaf device's SAS token or client certificate
/// (`peer_certificate`, the DER certificate the client presented in the TLS
/// handshake, if any).
///
/// A client id with a `/` is a module's, `{device}/{module}`; one without is
/// a leaf device's, `{leaf}`. CONNACK codes: 2 (identifier rejected) when
/// the client id is neither; 5 (not authorized) for everything else —
/// another device, an unknown module or leaf device, a malformed user name
/// or token, a wrong resource, signature or thumbprint, an expired token —
/// so a prober learns nothing about which part was wrong. The reason is
/// logged. With keys on a PKCS#11 token, a module's signature is checked on
/// a blocking thread ([`SasToken::verify_async`]).
pub(crate) async fn authenticate(
    hub: &Hub,
    connect: &Connect,
    peer_certificate: Option<&[u8]>,
) -> Result<Identity, (ConnectReturnCode, String)> {
    let bad_client_id = || {
        (
            ConnectReturnCode::BadClientId,
            "the client id is not {device}/{module} (a module) or {device} (a leaf device)"
                .to_owned(),
        )
    };
    let client_id = connect.client_id.as_str();
    match client_id.split_once('/') {
        None if client_id.is_empty() => Err(bad_client_id()),
        None => authenticate_leaf_device(hub, connect, peer_certificate).await,
        Some((device, module))
            if !device.is_empty() && !module.is_empty() && !module.contains('/') =>
        {
            authenticate_module(hub, connect, device, module).await
        }
        Some(_) => Err(bad_client_id()),
    }
}

fn not_authorized(reason: String) -> (ConnectReturnCode, String) {
    (ConnectReturnCode::NotAuthorized, reason)
}

/// The user name of `connect`, checked to name this hub, `device` and
/// `module` (`None` for a device's user name).
fn check_user_name<'a>(
    hub: &Hub,
    connect: &'a Connect,
    device: &str,
    module: Option<&str>,
) -> Result<&'a rumqttc::mqttbytes::v4::Login, (ConnectReturnCode, String)> {
    let login = connect
        .login
        .as_ref()
        .ok_or_else(|| not_authorized("no user name and password".to_owned()))?;
    let user =
        UserName::parse(&login.username).map_err(|error| not_authorized(error.to_string()))?;
    if !user.hub.eq_ignore_ascii_case(&hub.config().iothub_hostname)
        || user.device != device
        || user.module != module
    {
        return Err(not_authorized(format!(
            "the user name names {}/{}/{}, not this hub and client id",
            user.hub,
            user.device,
            user.module.unwrap_or_default()
        )));
    }
    Ok(login)
}

async fn authenticate_module(
    hub: &Hub,
    connect: &Connect,
    device: &str,
    module: &str,
) -> Result<Identity, (ConnectReturnCode, String)> {
    let config = hub.config();
    if device != config.device_id {
        return Err(not_authorized(format!(
            "device {device:?} is not this device ({:?})",
            config.device_id
        )));
    }
    if hub.identity(module).is_none() {
        return Err(not_authorized(format!(
            "module {module:?} is not in the deployment"
        )));
    }
    let login = check_user_name(hub, connect, device, Some(module))?;
    let token =
        SasToken::parse(&login.password).map_err(|error| not_authorized(error.to_string()))?;
    token
        .verify(
            &config.iothub_hostname,
            device,
            module,
            hub.keys(),
            now_seconds(),
        )
        .await
        .map_err(|error| not_authorized(error.to_string()))?;
    Ok(Identity::new(
        &connect.client_id,
        ClientIdentity::Module(module.to_owned()),
        device,
        token.expiry,
    ))
}

async fn authenticate_leaf_device(
    hub: &Hub,
    connect: &Connect,
    peer_certificate: Option<&[u8]>,
) -> Result<Identity, (ConnectReturnCode, String)> {
    let device = connect.client_id.as_str();
    let leaf = hub.leaf_device(device).ok_or_else(|| {
        not_authorized(format!(
            "leaf device {device:?} is not in [hub] leaf_devices"
        ))
    })?;
    let login = check_user_name(hub, connect, device, None)?;
    let expiry = match &leaf.credential {
        LeafCredential::SymmetricKey(key) => {
            let token = SasToken::parse(&login.password)
                .map_err(|error| not_authorized(error.to_string()))?;
            token
                .verify_device(
                    &hub.config().iothub_hostname,
                    device,
                    key.bytes(),
                    now_seconds(),
                )
                .map_err(|error| not_authorized(error.to_string()))?;
            token.expiry
        }
        LeafCredential::X509Thumbprints(thumbprints) => {
            let certificate = peer_certificate.ok_or_else(|| {
                not_authorized(
                    "the leaf device authenticates with a certificate and presented none"
                        .to_owned(),
                )
            })?;
            if !thumbprints
                .iter()
                .any(|thumbprint| thumbprint.matches(certificate))
            {
                return Err(not_authorized(format!(
                    "the certificate presented (SHA-256 thumbprint {}) is not the leaf device's",
                    sha256_thumbprint(certificate)
                )));
            }
            // The certificate, not a token, is the credential: nothing
            // expires during the connection.
            u64::MAX
        }
    };
    Ok(Identity::new(
        device,
        ClientIdentity::LeafDevice(device.to_owned()),
        device,
        expiry,
    ))
}

/// A publish from the module whose handling finished, in arrival order.
enum Completion {
    /// Telemetry handed to the hub.
    Stored {
        packet_id: u16,
        qos: QoS,
        result: Result<(), PublishRefused>,
    },
    /// A twin request answered, or a publish that needs only its PUBACK.
    Answered {
        packet_id: u16,
        qos: QoS,
        response: Option<(String, Vec<u8>)>,
    },
}

type Pending = Pin<Box<dyn Future<Output = Completion> + Send>>;

/// What a hub publish awaiting the module's PUBACK was.
enum Sent {
    /// An input delivery, with its fingerprint.
    Input(DeliveryId, u64),
    /// A desired patch, with the version and the desired properties the
    /// module has once it applied it.
    Desired(u64, Arc<serde_json::Map<String, serde_json::Value>>),
    Other,
}

/// A packet for the writer, with its share of the byte budget, given back
/// once it is written.
pub(crate) struct Queued {
    packet: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// The connection's end of its writer task: a queue bounded in packets and
/// in bytes.
#[derive(Clone)]
pub(crate) struct Outgoing {
    queue: mpsc::Sender<Queued>,
    budget: Arc<Semaphore>,
}

impl Outgoing {
    /// Starts the task that writes to `writer`.
    pub(crate) fn start<W: AsyncWrite + Unpin + Send + 'static>(
        writer: W,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, packets) = mpsc::channel(WRITER_QUEUE);
        let task = tokio::spawn(write_packets(writer, packets));
        let outgoing = Self {
            queue,
            budget: Arc::new(Semaphore::new(MAXIMUM_OUTBOUND_BYTES)),
        };
        (outgoing, task)
    }

    /// True when a packet can be queued without waiting.
    fn ready(&self) -> bool {
        self.queue.capacity() > 0 && self.budget.available_permits() > 0
    }

    /// Resolves when there is room for a packet (true) or the writer is
    /// gone (false).
    async fn room(self) -> bool {
        let Ok(_slot) = self.queue.reserve_owned().await else {
            return false;
        };
        self.budget.acquire_owned().await.is_ok()
    }

    pub(crate) async fn send(&self, packet: Bytes) -> Result<(), Closed> {
        let share = packet.len().min(MAXIMUM_OUTBOUND_BYTES);
        let share = u32::try_from(share).unwrap_or(u32::MAX);
        let budget = Arc::clone(&self.budget)
            .acquire_many_owned(share)
            .await
            .map_err(|_| Closed::WriterGone)?;
        self.queue
            .send(Queued {
                packet,
                _budget: budget,
            })
            .await
            .map_err(|_| Closed::WriterGone)
    }
}

/// The writer task: sends encoded packets in order, flushing when its queue
/// is empty. Ends when the queue closes or a write stalls.
///
/// Packets waiting in the queue are gathered into one write of up to
/// [`COALESCE_BYTES`]: over TLS every write is a record and a system call,
/// so a stream of 4-byte PUBACKs or small deliveries written one by one
/// costs several times the CPU of the same bytes written together. A packet
/// that arrives alone is written at once, so gathering adds no latency.
async fn write_packets<W: AsyncWrite + Unpin>(mut writer: W, mut queue: mpsc::Receiver<Queued>) {
    let write = async {
        let mut gathered = BytesMut::new();
        // The budget shares of the gathered packets, given back once they
        // are written.
        let mut shares = Vec::new();
        while let Some(first) = queue.recv().await {
            let mut next = Some(first);
            while let Some(Queued {
                packet,
                _budget: share,
            }) = next.take()
            {
                gathered.extend_from_slice(&packet);
                shares.push(share);
                if gathered.len() < COALESCE_BYTES {
                    next = queue.try_recv().ok();
                }
            }
            tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&gathered)).await??;
            shares.clear();
            if gathered.capacity() > 2 * COALESCE_BYTES {
                // A large message passed: do not keep its buffer for an
                // otherwise quiet connection.
                gathered = BytesMut::new();
            } else {
                gathered.clear();
            }
            if queue.is_empty() {
                tokio::time::timeout(WRITE_TIMEOUT, writer.flush()).await??;
            }
        }
        tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await??;
        Ok::<_, io::Error>(())
    };
    if let Err(error) = write.await {
        tracing::debug!(%error, "writing to an MQTT client ended");
    }
}

/// A connected, authenticated module.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    identity: Identity,
    clean_session: bool,
    keep_alive: u16,
    writer: Outgoing,
    subscriptions: Subscriptions,
    inputs: Option<InputStream>,
    desired: Option<broadcast::Receiver<DesiredPatch>>,
    /// The desired version and properties the module has been sent, once
    /// it was brought up to date after subscribing to desired patches.
    desired_sent: Option<(u64, Arc<serde_json::Map<String, serde_json::Value>>)>,
    /// Subscribed to desired patches and not yet brought up to date.
    desired_catch_up: bool,
    methods: Option<mpsc::Receiver<MethodRequest>>,
    method_calls: HashMap<String, oneshot::Sender<MethodResponse>>,
    next_method_id: u64,
    outbox: Outbox<Sent>,
    pending: FuturesOrdered<Pending>,
    /// The message bytes of each pending publish, in the same order.
    pending_sizes: VecDeque<usize>,
    pending_bytes: usize,
}

impl Connection {
    /// Serves the module after a successful CONNECT: takes its client id
    /// over, restores or forgets its session, answers CONNACK and runs until
    /// the connection ends.
    pub(crate) async fn serve<R: AsyncRead + Unpin>(
        shared: Arc<Shared>,
        identity: Identity,
        connect: &Connect,
        mut reader: R,
        buffer: BytesMut,
        writer: Outgoing,
    ) -> Closed {
        let mut claim = shared.clients.claim(&identity.client_id).await;
        let hub = shared.hub.clone();
        let (subscriptions, session_present) = if connect.clean_session {
            claim.carryover.unacknowledged.clear();
            if let Err(error) = hub.forget_session(&identity.client_id).await {
                tracing::warn!(client = %identity.client_id, %error, "cannot forget the MQTT session");
            }
            (Subscriptions::default(), false)
        } else {
            match hub.load_session(&identity.client_id) {
                Some(stored) => (Subscriptions::from_stored(&stored, identity.topics()), true),
                None => (Subscriptions::default(), false),
            }
        };
        let reserved: Vec<u16> = claim.carryover.unacknowledged.values().copied().collect();
        let mut connection = Self {
            shared,
            clean_session: connect.clean_session,
            keep_alive: connect.keep_alive,
            writer,
            subscriptions: Subscriptions::default(),
            inputs: None,
            desired: None,
            desired_sent: None,
            desired_catch_up: false,
            methods: None,
            method_calls: HashMap::new(),
            next_method_id: 1,
            outbox: Outbox::with_reserved(reserved),
            pending: FuturesOrdered::new(),
            pending_sizes: VecDeque::new(),
            pending_bytes: 0,
            identity,
        };
        let closed = async {
            connection
                .send(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::Success,
                    session_present,
                )))
                .await?;
            hub.set_connected(&connection.identity.module, true);
            tracing::info!(
                client = %connection.identity.client_id,
                module = %connection.identity.module,
                session_present,
                "module connected"
            );
            for subscription in Subscription::ALL {
                if let Some(qos) = subscriptions.get(subscription) {
                    connection.subscribe(subscription, qos);
                }
            }
            connection.catch_up_desired().await?;
            // A newer connection of the client id takes over at once,
            // whatever this one waits for (a client that does not read
            // could hold it in a write for WRITE_TIMEOUT otherwise).
            tokio::select! {
                closed = connection.run(&mut claim.carryover, &mut reader, buffer) => closed,
                () = claim.replacement.replaced() => Ok(Closed::Replaced),
            }
        }
        .await;
        connection.finish(&mut claim);
        closed.unwrap_or_else(|closed| closed)
    }

    /// Forgets the connection's per-module attachments; keeps what the
    /// next connection of the same client id resends with DUP.
    fn finish(&mut self, claim: &mut Claim<u64>) {
        let carryover = &mut claim.carryover;
        let hub = &self.shared.hub;
        // Dropping the pending calls' responders fails them with Closed.
        self.method_calls.clear();
        if self.methods.take().is_some() {
            hub.methods().detach(&self.identity.module);
        }
        self.inputs = None;
        hub.set_connected(&self.identity.module, false);
        let outbox = std::mem::take(&mut self.outbox);
        carryover.unacknowledged = if self.clean_session {
            HashMap::new()
        } else {
            outbox
                .into_inflight()
                .filter_map(|(packet_id, sent)| match sent {
                    Sent::Input(_, fingerprint) => Some((fingerprint, packet_id)),
                    Sent::Desired(..) | Sent::Other => None,
                })
                .collect()
        };
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Closed> {
        let encoded = encode(&packet)?;
        self.writer.send(encoded).await
    }

    /// Starts what a subscription delivers.
    fn subscribe(&mut self, subscription: Subscription, qos: QoS) {
        self.subscriptions.insert(subscription, qos);
        let hub = &self.shared.hub;
        let module = &self.identity.module;
        match subscription {
            Subscription::Inputs => {
                if self.inputs.is_none() {
                    self.inputs = Some(hub.open_inputs(module));
                }
            }
            Subscription::DesiredPatches => {
                if self.desired.is_none() {
                    // The receiver comes first, so that a deployment while
                    // the module is brought up to date is not missed.
                    self.desired = Some(hub.desired_patches(module));
                    self.desired_catch_up = true;
                }
            }
            Subscription::MethodRequests => {
                if self.methods.is_none() {
                    self.methods = Some(hub.methods().attach(module));
                }
            }
            Subscription::TwinResponses => {}
        }
    }

    fn unsubscribe(&mut self, subscription: Subscription) {
        if !self.subscriptions.remove(subscription) {
            return;
        }
        match subscription {
            Subscription::Inputs => self.inputs = None,
            Subscription::DesiredPatches => {
                self.desired = None;
                self.desired_sent = None;
                self.desired_catch_up = false;
            }
            Subscription::MethodRequests => {
                if self.methods.take().is_some() {
                    self.shared.hub.methods().detach(&self.identity.module);
                }
                self.method_calls.clear();
            }
            Subscription::TwinResponses => {}
        }
    }

    async fn save_session(&mut self) {
        if self.clean_session {
            return;
        }
        let stored = self.subscriptions.to_stored(self.identity.topics());
        if let Err(error) = self
            .shared
            .hub
            .save_session(&self.identity.client_id, &stored)
            .await
        {
            tracing::warn!(client = %self.identity.client_id, %error, "cannot save the MQTT session");
        }
    }

    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        carryover: &mut Carryover<u64>,
        reader: &mut R,
        mut buffer: BytesMut,
    ) -> Result<Closed, Closed> {
        // MQTT 3.1.1: the server closes a connection that sends nothing
        // for one and a half keep-alive periods; 0 turns the check off.
        let keep_alive =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let mut deadline = keep_alive.map(|period| Instant::now() + period);
        let mut token_expiry = self.token_deadline();
        loop {
            if self.method_calls.len() >= MAXIMUM_PENDING_METHODS {
                // Calls whose callers gave up (timed out) make room.
                self.method_calls
                    .retain(|_, responder| !responder.is_closed());
            }
            let writer_ready = self.writer.ready();
            let room = (!writer_ready).then(|| self.writer.clone());
            let outbound_room = self.outbox.len() < MAXIMUM_OUTBOUND_IN_FLIGHT && writer_ready;
            tokio::select! {
                biased;
                () = sleep_until(token_expiry) => {
                    if now_seconds() >= self.identity.expiry {
                        return Ok(Closed::TokenExpired);
                    }
                    token_expiry = self.token_deadline();
                }
                // With the writer's queue full, reading and deliveries wait;
                // this wakes the loop when there is room again.
                open = wait_for_room(room), if !writer_ready => {
                    if !open {
                        return Ok(Closed::WriterGone);
                    }
                }
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return Ok(Closed::KeepAlive(self.keep_alive));
                }
                Some(completion) = self.pending.next(), if !self.pending.is_empty() => {
                    let size = self.pending_sizes.pop_front().unwrap_or_default();
                    self.pending_bytes = self.pending_bytes.saturating_sub(size);
                    // While the store holds reading back, the client's
                    // silence is the hub's doing: the keep-alive restarts.
                    if let Some(period) = keep_alive {
                        deadline = Some(Instant::now() + period);
                    }
                    self.complete(completion).await?;
                }
                packet = read_packet(reader, &mut buffer),
                    if self.pending.len() < MAXIMUM_INBOUND_IN_FLIGHT
                        && self.pending_bytes < MAXIMUM_INBOUND_BYTES
                        && writer_ready => {
                    if let Some(period) = keep_alive {
                        deadline = Some(Instant::now() + period);
                    }
                    match packet {
                        Ok(Packet::Disconnect) => return Ok(Closed::Disconnected),
                        Ok(packet) => self.handle(packet).await?,
                        Err(closed) => return Ok(closed),
                    }
                }
                delivery = next_input(&mut self.inputs), if outbound_room => {
                    match delivery {
                        Some(delivery) => self.deliver_input(carryover, delivery).await?,
                        None => return Ok(Closed::InputsTakenOver),
                    }
                }
                patch = next_patch(&mut self.desired), if outbound_room => {
                    self.deliver_patch(patch).await?;
                }
                request = next_method(&mut self.methods),
                    if outbound_room && self.method_calls.len() < MAXIMUM_PENDING_METHODS => {
                    match request {
                        Some(request) => self.deliver_method(request).await?,
                        // The router gave the module's requests to a newer
                        // connection.
                        None => self.methods = None,
                    }
                }
            }
        }
    }

    /// When the token expires, or a year from now if that is sooner.
    fn token_deadline(&self) -> Instant {
        let lifetime = self.identity.expiry.saturating_sub(now_seconds());
        Instant::now() + Duration::from_secs(lifetime.min(MAXIMUM_TOKEN_WAIT_SECONDS))
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Closed> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish).await,
            Packet::PubAck(ack) => {
                match self.outbox.complete(ack.pkid) {
                    Some(Sent::Input(id, _)) => {
                        if let Some(inputs) = &mut self.inputs {
                            inputs.ack(id);
                        }
                    }
                    Some(Sent::Desired(version, desired)) => {
                        self.record_desired_seen(version, desired).await;
                    }
                    Some(Sent::Other) => {}
                    None => tracing::debug!(
                        client = %self.identity.client_id,
                        packet_id = ack.pkid,
                        "PUBACK for no publish in flight"
                    ),
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.handle_subscribe(subscribe).await,
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(unsubscribe).await,
            Packet::PingReq => self.send(Packet::PingResp).await,
            other => Err(Closed::Protocol(format!(
                "unexpected {} from a client",
                packet_kind(&other)
            ))),
        }
    }

    async fn handle_publish(&mut self, publish: Publish) -> Result<(), Closed> {
        let Publish {
            qos,
            pkid: packet_id,
            topic,
            payload,
            ..
        } = publish;
        let hub_qos = match qos {
            QoS::AtMostOnce => Qos::AtMostOnce,
            QoS::AtLeastOnce => Qos::AtLeastOnce,
            // IoT Hub does not support QoS 2 and closes the connection.
            QoS::ExactlyOnce => return Err(Closed::Protocol("QoS 2 is not supported".to_owned())),
        };
        let size = topic.len() + payload.len();
        let identity = &self.identity;
        let parsed = PublishTopic::parse(&topic, identity.topics())
            .map_err(|error| Closed::Refused(error.to_string()))?;
        let hub = self.shared.hub.clone();
        let module = identity.module.clone();
        let sender = identity.client.clone();
        let pending: Pending = match parsed {
            PublishTopic::Telemetry { properties } => {
                let mut message = HubMessage::default();
                properties::decode_into(properties, &mut message)
                    .map_err(|error| Closed::Refused(error.to_string()))?;
                message.body = payload.to_vec();
                let output = message
                    .system_properties
                    .get(&SystemProperty::OutputName)
                    .cloned();
                // `Hub::publish` puts the message in the store's write queue
                // when first polled, and the ordered set polls its futures
                // first in the order they were pushed: messages keep the
                // order the module sent them in, though up to
                // MAXIMUM_INBOUND_IN_FLIGHT wait for the same group commit.
                Box::pin(async move {
                    let result = hub
                        .publish_from(&sender, output.as_deref(), message, hub_qos)
                        .await;
                    Completion::Stored {
                        packet_id,
                        qos,
                        result,
                    }
                })
            }
            PublishTopic::TwinGet { rid } => {
                let rid = rid.to_owned();
                Box::pin(async move {
                    let response = match hub.twin(&module).await {
                        Ok(twin) => match serde_json::to_vec(&twin) {
                            Ok(body) => {
                                hub.count_twin_get(&module);
                                (topic::twin_response_topic(200, &rid, None), body)
                            }
                            Err(error) => server_error(&rid, &error),
                        },
                        Err(error) => server_error(&rid, &error),
                    };
                    Completion::Answered {
                        packet_id,
                        qos,
                        response: Some(response),
                    }
                })
            }
            PublishTopic::TwinPatchReported { rid } => {
                let rid = rid.to_owned();
                Box::pin(async move {
                    let response = match serde_json::from_slice(&payload) {
                        Err(error) => bad_request(&rid, &format!("the patch is not JSON: {error}")),
                        Ok(patch) => match hub.patch_reported(&module, patch).await {
                            Ok(version) => {
                                hub.count_reported_patch(&module);
                                (
                                    topic::twin_response_topic(204, &rid, Some(version)),
                                    Vec::new(),
                                )
                            }
                            Err(TwinError::Invalid(message)) => bad_request(&rid, &message),
                            Err(error) => server_error(&rid, &error),
                        },
                    };
                    Completion::Answered {
                        packet_id,
                        qos,
                        response: Some(response),
                    }
                })
            }
            PublishTopic::MethodResponse { status, rid } => {
                match self.method_calls.remove(rid) {
                    Some(responder) if payload.len() <= MAXIMUM_PAYLOAD_BYTES => {
                        // The caller may have given up (timeout); then
                        // nobody waits for the answer.
                        let _ = responder.send(MethodResponse {
                            status,
                            payload: payload.to_vec(),
                        });
                    }
                    Some(_) => tracing::warn!(
                        module = %module,
                        bytes = payload.len(),
                        "a direct method response is over the 128 KB limit; the call fails"
                    ),
                    None => tracing::debug!(
                        module = %module,
                        rid,
                        "a direct method response for no pending call (timed out?)"
                    ),
                }
                Box::pin(std::future::ready(Completion::Answered {
                    packet_id,
                    qos,
                    response: None,
                }))
            }
        };
        self.pending.push_back(pending);
        self.pending_sizes.push_back(size);
        self.pending_bytes += size;
        Ok(())
    }

    async fn complete(&mut self, completion: Completion) -> Result<(), Closed> {
        match completion {
            Completion::Stored {
                packet_id,
                qos,
                result,
            } => match result {
                Ok(()) => self.acknowledge(packet_id, qos).await,
                Err(PublishRefused::StoreFull(_)) if qos == QoS::AtMostOnce => {
                    // The hub counted it; QoS 0 promises nothing more.
                    Ok(())
                }
                Err(PublishRefused::StoreFull(_)) => Err(Closed::StoreFull(packet_id)),
                Err(refused) => Err(Closed::Refused(refused.to_string())),
            },
            Completion::Answered {
                packet_id,
                qos,
                response,
            } => {
                self.acknowledge(packet_id, qos).await?;
                if let Some((topic, body)) = response {
                    self.publish_to_module(Subscription::TwinResponses, topic, body, Sent::Other)
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn acknowledge(&mut self, packet_id: u16, qos: QoS) -> Result<(), Closed> {
        if qos == QoS::AtLeastOnce {
            self.send(Packet::PubAck(PubAck::new(packet_id))).await?;
        }
        Ok(())
    }

    /// Publishes to the module if it holds `subscription`, with the QoS it
    /// was granted.
    async fn publish_to_module(
        &mut self,
        subscription: Subscription,
        topic: String,
        body: Vec<u8>,
        sent: Sent,
    ) -> Result<(), Closed> {
        let Some(qos) = self.subscriptions.get(subscription) else {
            tracing::debug!(
                client = %self.identity.client_id,
                topic,
                "not sent: the module does not subscribe to it"
            );
            return Ok(());
        };
        let mut publish = Publish::new(topic, qos, body);
        if qos == QoS::AtLeastOnce {
            publish.pkid = self
                .outbox
                .insert(sent)
                .ok_or_else(|| Closed::Protocol("every packet id is in use".to_owned()))?;
        }
        self.send(Packet::Publish(publish)).await
    }

    async fn deliver_input(
        &mut self,
        carryover: &mut Carryover<u64>,
        delivery: Delivery,
    ) -> Result<(), Closed> {
        let qos = self
            .subscriptions
            .get(Subscription::Inputs)
            .unwrap_or(QoS::AtMostOnce);
        let identity = &self.identity;
        let topic = topic::delivery_topic(
            identity.topics(),
            &delivery.input,
            &properties::encode(&delivery.message),
        );
        let mut publish = Publish::new(topic, qos, delivery.message.body);
        if qos == QoS::AtMostOnce {
            self.send(Packet::Publish(publish)).await?;
            if let Some(inputs) = &mut self.inputs {
                inputs.ack(delivery.id);
            }
            return Ok(());
        }
        let fingerprint = fingerprint(&publish);
        // Sent before and not acknowledged: the same packet id, with DUP.
        let resent = carryover
            .unacknowledged
            .remove(&fingerprint)
            .and_then(|packet_id| {
                self.outbox
                    .insert_reserved(packet_id, Sent::Input(delivery.id, fingerprint))
                    .ok()
                    .map(|()| packet_id)
            });
        publish.pkid = match resent {
            Some(packet_id) => {
                publish.dup = true;
                packet_id
            }
            None => self
                .outbox
                .insert(Sent::Input(delivery.id, fingerprint))
                .ok_or_else(|| Closed::Protocol("every packet id is in use".to_owned()))?,
        };
        self.send(Packet::Publish(publish)).await
    }

    /// After a subscription to desired patches: sends the module what
    /// changed in its desired properties since it was last brought up to
    /// date (a deployment while it was disconnected, or while edged was not
    /// running), as edgeHub does when a client connects. A module's first
    /// subscription only records what it has now: it reads its twin as it
    /// starts.
    async fn catch_up_desired(&mut self) -> Result<(), Closed> {
        if !std::mem::take(&mut self.desired_catch_up) {
            return Ok(());
        }
        let hub = self.shared.hub.clone();
        let module = self.identity.module.clone();
        let state = match hub.desired_state(&module).await {
            Ok(state) => state,
            Err(error) => {
                // The module still gets the patches from now on.
                tracing::warn!(module = %module, %error, "cannot read what the module has of its desired properties; it is not sent what changed while it was away");
                return Ok(());
            }
        };
        let current = Arc::new(state.desired);
        match state.seen {
            // A version above the twin's is from before the module left
            // the deployment and came back: its twin started again.
            Some(seen) if seen.version < state.version => {
                tracing::info!(
                    module = %module,
                    from = seen.version,
                    to = state.version,
                    "sending the module the desired properties that changed while it was away"
                );
                let patch = twin::with_version(&twin::diff(&seen.desired, &current), state.version);
                self.send_desired(state.version, patch, current).await
            }
            Some(seen) if seen.version == state.version => {
                self.desired_sent = Some((seen.version, current));
                Ok(())
            }
            _ => {
                self.desired_sent = Some((state.version, current.clone()));
                self.record_desired_seen(state.version, current).await;
                Ok(())
            }
        }
    }

    async fn deliver_patch(
        &mut self,
        patch: Result<DesiredPatch, broadcast::error::RecvError>,
    ) -> Result<(), Closed> {
        let patch = match patch {
            Ok(patch) => patch,
            Err(broadcast::error::RecvError::Closed) => {
                self.desired = None;
                return Ok(());
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    module = %self.identity.module,
                    missed,
                    "desired patches were missed; sending the difference to the current desired properties"
                );
                return self.send_desired_difference().await;
            }
        };
        match self.desired_sent.clone() {
            // Bringing the module up to date already covered this patch.
            Some((sent, _)) if patch.version <= sent => Ok(()),
            Some((sent, before)) if patch.version == sent + 1 => {
                let mut after = (*before).clone();
                if let serde_json::Value::Object(changes) = &patch.patch {
                    twin::merge(&mut after, changes);
                }
                after.remove(VERSION_KEY);
                self.send_desired(patch.version, patch.patch, Arc::new(after))
                    .await
            }
            _ => self.send_desired_difference().await,
        }
    }

    /// Sends the difference between what the module was sent and its
    /// current desired properties (all of them when nothing is known), as
    /// one patch.
    async fn send_desired_difference(&mut self) -> Result<(), Closed> {
        let state = self
            .shared
            .hub
            .desired_state(&self.identity.module)
            .await
            .map_err(|error| Closed::Protocol(format!("cannot read the twin: {error}")))?;
        let patch = match &self.desired_sent {
            Some((_, before)) => twin::diff(before, &state.desired),
            None => state.desired.clone(),
        };
        let patch = twin::with_version(&patch, state.version);
        self.send_desired(state.version, patch, Arc::new(state.desired))
            .await
    }

    /// Sends a desired patch that brings the module to `version`, whose
    /// properties are then `desired`. What it has is recorded when it
    /// acknowledges the patch (at QoS 0, once the patch is sent).
    async fn send_desired(
        &mut self,
        version: u64,
        mut body: serde_json::Value,
        desired: Arc<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<(), Closed> {
        let Some(qos) = self.subscriptions.get(Subscription::DesiredPatches) else {
            return Ok(());
        };
        if let serde_json::Value::Object(properties) = &mut body {
            properties
                .entry(VERSION_KEY)
                .or_insert_with(|| serde_json::Value::from(version));
        }
        let body = serde_json::to_vec(&body)
            .map_err(|error| Closed::Protocol(format!("cannot encode a patch: {error}")))?;
        self.desired_sent = Some((version, desired.clone()));
        self.publish_to_module(
            Subscription::DesiredPatches,
            topic::desired_patch_topic(version),
            body,
            Sent::Desired(version, desired.clone()),
        )
        .await?;
        if qos == QoS::AtMostOnce {
            self.record_desired_seen(version, desired).await;
        }
        Ok(())
    }

    /// Stores what the module has of its desired properties; a failure only
    /// means that it may be sent a change again after its next connection.
    async fn record_desired_seen(
        &mut self,
        version: u64,
        desired: Arc<serde_json::Map<String, serde_json::Value>>,
    ) {
        let seen = DesiredSeen {
            version,
            desired: (*desired).clone(),
        };
        if let Err(error) = self
            .shared
            .hub
            .record_desired_seen(&self.identity.module, &seen)
            .await
        {
            tracing::warn!(module = %self.identity.module, %error, "cannot record the desired properties the module has");
        }
    }

    async fn deliver_method(&mut self, request: MethodRequest) -> Result<(), Closed> {
        let rid = format!("{:x}", self.next_method_id);
        self.next_method_id += 1;
        let MethodRequest {
            name,
            payload,
            respond,
        } = request;
        if name.is_empty() || name.len() > MAXIMUM_METHOD_NAME_BYTES {
            // Nothing to send: the caller sees the call fail with Closed.
            tracing::warn!(
                module = %self.identity.module,
                bytes = name.len(),
                "a direct method name that is empty or over {MAXIMUM_METHOD_NAME_BYTES} bytes"
            );
            return Ok(());
        }
        self.method_calls.insert(rid.clone(), respond);
        self.publish_to_module(
            Subscription::MethodRequests,
            topic::method_request_topic(&name, &rid),
            payload,
            Sent::Other,
        )
        .await
    }
}

/// What identifies a delivery across connections: its topic and body.
/// The hub's delivery ids are per input stream, and every connection opens
/// a new stream, so the message itself is what is recognized when it comes
/// again. Two equal messages both unacknowledged are both resent with DUP,
/// which is harmless: DUP only tells the module it may have seen the
/// message before.
fn fingerprint(publish: &Publish) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    publish.topic.hash(&mut hasher);
    publish.payload.hash(&mut hasher);
    hasher.finish()
}

/// Resolves when `writer` has room for a packet (true) or is gone (false);
/// never without a writer.
async fn wait_for_room(writer: Option<Outgoing>) -> bool {
    match writer {
        Some(writer) => writer.room().await,
        None => std::future::pending().await,
    }
}

async fn next_input(inputs: &mut Option<InputStream>) -> Option<Delivery> {
    match inputs {
        Some(inputs) => inputs.next().await,
        None => std::future::pending().await,
    }
}

async fn next_patch(
    desired: &mut Option<broadcast::Receiver<DesiredPatch>>,
) -> Result<DesiredPatch, broadcast::error::RecvError> {
    match desired {
        Some(desired) => desired.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_method(methods: &mut Option<mpsc::Receiver<MethodRequest>>) -> Option<MethodRequest> {
    match methods {
        Some(methods) => methods.recv().await,
        None => std::future::pending().await,
    }
}

fn bad_request(rid: &str, message: &str) -> (String, Vec<u8>) {
    let body = serde_json::json!({ "message": message });
    (
        topic::twin_response_topic(400, rid, None),
        body.to_string().into_bytes(),
    )
}

fn server_error(rid: &str, error: &dyn std::fmt::Display) -> (String, Vec<u8>) {
    tracing::warn!(%error, "a twin request failed");
    let body = serde_json::json!({ "message": error.to_string() });
    (
        topic::twin_response_topic(500, rid, None),
        body.to_string().into_bytes(),
    )
}

/// Granted QoS codes for a SUBSCRIBE.
impl Connection {
    async fn handle_subscribe(&mut self, subscribe: Subscribe) -> Result<(), Closed> {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            match Subscription::parse(&filter.path, self.identity.topics()) {
                Ok(subscription) => {
                    let qos = granted_qos(filter.qos as u8);
                    self.subscribe(subscription, qos);
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                Err(error) => {
                    tracing::warn!(
                        client = %self.identity.client_id,
                        %error,
                        "subscription refused"
                    );
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
        }
        self.save_session().await;
        self.send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
            .await?;
        self.catch_up_desired().await
    }

    async fn handle_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Result<(), Closed> {
        for filter in &unsubscribe.topics {
            if let Ok(subscription) = Subscription::parse(filter, self.identity.topics()) {
                self.unsubscribe(subscription);
            }
        }
        self.save_session().await;
        self.send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            .await
    }
}
