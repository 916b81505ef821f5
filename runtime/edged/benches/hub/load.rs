//! The load generator: the same MQTT clients, messages and QoS 1 against any
//! broker, so the edge hub and mosquitto are measured alike.
//!
//! Senders publish 256-byte JSON bodies carrying their send time; one
//! receiver counts what arrives and, in the latency run, how long each
//! message took from the sender's publish call to the receiver's event loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};

/// Where a client connects and who it is.
#[derive(Clone)]
pub struct ClientSpec {
    /// The MQTT client id.
    pub client_id: String,
    /// The user name, if the broker wants one.
    pub username: String,
    /// The password (a SAS token for the hub).
    pub password: String,
}

/// One broker under test.
#[derive(Clone)]
pub struct Target {
    /// A name for reports.
    pub name: String,
    /// The TLS host name and port.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The CA that issued the broker's certificate.
    pub ca_pem: String,
    /// The senders, each with the topic it publishes to.
    pub senders: Vec<(ClientSpec, String)>,
    /// The receiver and the filter it subscribes to.
    pub receiver: (ClientSpec, String),
    /// Where the receiver connects when it is not the senders' broker (the
    /// upstream benchmark's receiver listens at the cloud): its port and CA.
    pub receiver_broker: Option<(u16, String)>,
}

impl Target {
    /// The target as the receiver connects to it.
    fn receiving(&self) -> Target {
        let mut target = self.clone();
        if let Some((port, ca_pem)) = &self.receiver_broker {
            target.port = *port;
            target.ca_pem = ca_pem.clone();
        }
        target
    }
}

/// The body size the benchmark prescribes.
pub const BODY_BYTES: usize = 256;

/// A JSON body of exactly [`BODY_BYTES`] bytes with the sequence number and
/// the send time in nanoseconds since `epoch`.
pub fn body(sequence: u64, epoch: Instant) -> Vec<u8> {
    let sent = epoch.elapsed().as_nanos();
    let head = format!("{{\"temperature\":21.5,\"seq\":{sequence},\"sent\":{sent},\"pad\":\"");
    let tail = "\"}";
    let pad = BODY_BYTES.saturating_sub(head.len() + tail.len());
    let mut text = head;
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str(tail);
    text.into_bytes()
}

/// Reads the send time back out of a [`body`].
fn sent_at(payload: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find("\"sent\":")? + 7;
    let end = start + text[start..].find(',')?;
    text[start..end].parse().ok()
}

fn options(target: &Target, client: &ClientSpec) -> MqttOptions {
    let mut options = MqttOptions::new(&client.client_id, &target.host, target.port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_clean_session(false);
    options.set_inflight(100);
    options.set_max_packet_size(300 * 1024, 300 * 1024);
    if !client.username.is_empty() {
        options.set_credentials(&client.username, &client.password);
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(target.ca_pem.as_bytes());
    for certificate in rustls_pemfile::certs(&mut reader) {
        roots
            .add(certificate.expect("the CA PEM parses"))
            .expect("the CA is a valid root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
    options
}

/// Connects a client and waits for its CONNACK.
async fn connect(target: &Target, client: &ClientSpec) -> (AsyncClient, EventLoop) {
    let (handle, mut events) = AsyncClient::new(options(target, client), 1024);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return (handle, events),
            Ok(_) => {}
            Err(error) => panic!(
                "{}: {} cannot connect: {error}",
                target.name, client.client_id
            ),
        }
    }
}

/// What a run measured.
pub struct Measured {
    /// Messages that arrived.
    pub received: u64,
    /// From the first publish to the last arrival.
    pub elapsed: Duration,
    /// Per-message latency, sorted.
    pub latencies: Vec<Duration>,
}

impl Measured {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0.5, 0.99).
    pub fn latency(&self, quantile: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * quantile).round() as usize;
        self.latencies[index]
    }
}

/// Sends `per_sender` messages from every sender, at most `rate` messages a
/// second in all (`None`: as fast as QoS 1 with 100 in flight allows), and
/// waits until the receiver has them all.
pub async fn run(target: &Target, per_sender: u64, rate: Option<f64>) -> Measured {
    let (receiver, mut receiver_events) = connect(&target.receiving(), &target.receiver.0).await;
    receiver
        .subscribe(&target.receiver.1, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = receiver_events.poll().await {
            break;
        }
    }
    let expected = per_sender * target.senders.len() as u64;
    let epoch = Instant::now();
    let collector = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(expected as usize);
        let mut last = Instant::now();
        while (latencies.len() as u64) < expected {
            match receiver_events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let now = epoch.elapsed().as_nanos();
                    let sent = sent_at(&publish.payload).unwrap_or(now);
                    latencies.push(Duration::from_nanos((now.saturating_sub(sent)) as u64));
                    last = Instant::now();
                }
                Ok(_) => {}
                Err(error) => panic!("receiver: {error}"),
            }
        }
        drop(receiver);
        (latencies, last)
    });
    let mut senders = Vec::new();
    let interval = rate.map(|rate| Duration::from_secs_f64(target.senders.len() as f64 / rate));
    for (spec, topic) in &target.senders {
        let (client, mut events) = connect(target, spec).await;
        let topic = topic.clone();
        let pump = tokio::spawn(async move {
            let mut acked = 0;
            while acked < per_sender {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(error) => panic!("sender: {error}"),
                }
            }
        });
        senders.push(tokio::spawn(async move {
            let mut ticker = interval.map(tokio::time::interval);
            for sequence in 0..per_sender {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                client
                    .publish(
                        topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        body(sequence, epoch),
                    )
                    .await
                    .expect("publish");
            }
            pump.await.expect("sender pump");
            client
        }));
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for sender in senders {
        clients.push(sender.await.expect("sender"));
    }
    let (mut latencies, last) = collector.await.expect("receiver");
    drop(clients);
    latencies.sort();
    Measured {
        received: latencies.len() as u64,
        elapsed: last.duration_since(started),
        latencies,
    }
}

/// Publishes `count` messages from one client and waits for every PUBACK;
/// returns how long that took.
pub async fn flood(target: &Target, sender: &ClientSpec, topic: &str, count: u64) -> Duration {
    let (client, mut events) = connect(target, sender).await;
    let epoch = Instant::now();
    let topic = topic.to_owned();
    let publisher = tokio::spawn(async move {
        for sequence in 0..count {
            client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    body(sequence, epoch),
                )
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(error) => panic!("{}: flood: {error}", target.name),
        }
    }
    let elapsed = epoch.elapsed();
    drop(publisher.await.expect("publisher"));
    elapsed
}

/// How long taking a backlog took.
pub struct Drained {
    /// From the subscription to the last message.
    pub total: Duration,
    /// From the first message to the last: the rate at which the backlog
    /// came, without the wait for the first.
    pub from_first: Duration,
}

/// Subscribes `receiver` to `filter` and takes `count` messages.
pub async fn drain(target: &Target, receiver: &ClientSpec, filter: &str, count: u64) -> Drained {
    let (client, mut events) = connect(target, receiver).await;
    let started = Instant::now();
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut received = 0;
    let mut first = None;
    while received < count {
        match events.poll().await {
            Ok(Event::Incoming(Packet::Publish(_))) => {
                first.get_or_insert_with(Instant::now);
                received += 1;
            }
            Ok(_) => {}
            Err(error) => panic!("{}: drain: {error}", target.name),
        }
    }
    Drained {
        total: started.elapsed(),
        from_first: first.map_or(Duration::ZERO, |first| first.elapsed()),
    }
}

/// Connects every client and keeps them connected (answering keep-alives)
/// until the returned handles are dropped.
pub async fn hold(target: &Target, clients: &[ClientSpec]) -> Vec<tokio::task::JoinHandle<()>> {
    let mut held = Vec::with_capacity(clients.len());
    for spec in clients {
        let (client, mut events) = connect(target, spec).await;
        held.push(tokio::spawn(async move {
            let _client = client;
            while events.poll().await.is_ok() {}
        }));
    }
    held
}
