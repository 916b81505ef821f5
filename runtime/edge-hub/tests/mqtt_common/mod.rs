//! A hub serving MQTT over TLS on a free port, and a raw MQTT 3.1.1 client
//! on the same codec over tokio-rustls, so that tests can send exactly the
//! bytes they mean (malformed ones included) and see every packet the hub
//! sends (DUP flags, packet ids).

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use edge_hub::hub::{Hub, HubDeployment};
use edge_hub::{FileKeys, HubConfig, KeyStore};
use edge_route::RouteTableEntry;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::{self, QoS};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const DEVICE: &str = "device1";
pub const IOTHUB: &str = "hub.example";
/// How long a test waits for something the hub should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a server certificate for `localhost` it issued.
pub struct Certificates {
    pub ca: CertificateDer<'static>,
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl Certificates {
    pub fn generate() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edge-hub test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let server_key = rcgen::KeyPair::generate().expect("server key");
        let server_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("server");
        let server_certificate = server_params
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            // As the hub's own listener: leaf devices may present a
            // certificate.
            .with_client_cert_verifier(Arc::new(edge_hub::leaf::LeafCertificateVerifier::new(
                provider(),
            )))
            .with_single_cert(
                vec![server_certificate.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server configuration");
        Self {
            ca: ca.der().clone(),
            ca_pem: ca.pem(),
            server: Arc::new(server),
        }
    }

    pub fn connector(&self) -> TlsConnector {
        let config = self.client_config().with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    /// A connector presenting `certificate` (DER) with its PKCS#8 `key`, as
    /// a leaf device with X.509 authentication does.
    pub fn connector_with_certificate(&self, certificate: &LeafCertificate) -> TlsConnector {
        let config = self
            .client_config()
            .with_client_auth_cert(
                vec![certificate.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certificate.key.clone())),
            )
            .expect("client certificate");
        TlsConnector::from(Arc::new(config))
    }

    fn client_config(
        &self,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("CA root");
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
    }
}

/// A leaf device's self-signed certificate and its key.
pub struct LeafCertificate {
    pub der: CertificateDer<'static>,
    pub key: Vec<u8>,
}

impl LeafCertificate {
    /// A self-signed certificate with the common name `device`, as
    /// `openssl req -x509` makes one for a device.
    pub fn self_signed(device: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, device);
        let certificate = params.self_signed(&key).expect("leaf certificate");
        Self {
            der: certificate.der().clone(),
            key: key.serialize_der(),
        }
    }

    /// Its SHA-256 thumbprint in hex.
    pub fn thumbprint(&self) -> String {
        edge_hub::leaf::sha256_thumbprint(&self.der)
    }
}

pub fn config(dir: &std::path::Path) -> HubConfig {
    HubConfig {
        device_id: DEVICE.to_owned(),
        iothub_hostname: IOTHUB.to_owned(),
        gateway_hostname: "localhost".to_owned(),
        mqtt_listen: "127.0.0.1:0".parse().expect("address"),
        https_listen: "127.0.0.1:0".parse().expect("address"),
        metrics_listen: None,
        dir: dir.join("hub"),
        store_limit_bytes: 64 * 1024 * 1024,
        when_full: edge_hub::WhenFull::DropOldest,
        default_time_to_live: Duration::from_secs(7200),
        max_connections: 2000,
        leaf_devices: Vec::new(),
    }
}

pub fn route(name: &str, text: &str) -> RouteTableEntry {
    RouteTableEntry {
        name: name.to_owned(),
        route: text.to_owned(),
        priority: 0,
        time_to_live_secs: 0,
    }
}

/// The deployment most tests use: `sensor` → `filter`'s input `in1` when
/// the body's `temperature` is over 20, and `filter`'s output `alerts` →
/// `sink`'s input `alerts`.
pub fn deployment() -> HubDeployment {
    HubDeployment {
        routes: vec![
            route(
                "hot",
                "FROM /messages/modules/sensor/outputs/* WHERE $body.temperature > 20 INTO BrokeredEndpoint(\"/modules/filter/inputs/in1\")",
            ),
            route(
                "alerts",
                "FROM /messages/modules/filter/outputs/alerts INTO BrokeredEndpoint(\"/modules/sink/inputs/alerts\")",
            ),
        ],
        modules: vec!["sensor".to_owned(), "filter".to_owned(), "sink".to_owned()],
        desired: BTreeMap::from([("filter".to_owned(), serde_json::json!({ "threshold": 20 }))]),
        default_time_to_live: None,
    }
}

/// A hub with the test deployment, serving MQTT on a free port.
pub struct TestHub {
    pub dir: tempfile::TempDir,
    pub hub: Hub,
    pub keys: Arc<FileKeys>,
    pub address: SocketAddr,
    pub certificates: Certificates,
    server: JoinHandle<()>,
}

impl TestHub {
    pub async fn start() -> Self {
        Self::start_with(config).await
    }

    pub async fn start_with(configure: impl Fn(&std::path::Path) -> HubConfig) -> Self {
        // The hub's log, shown for failing tests.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        let dir = tempfile::Builder::new()
            .prefix("edge-hub-mqtt-")
            .tempdir()
            .expect("temporary directory");
        let config = configure(dir.path());
        let keys = Arc::new(FileKeys::open(&config.dir.join("keys")).expect("keys"));
        let hub = Hub::open(&config, keys.clone()).expect("hub");
        hub.deploy(deployment()).await.expect("deploy");
        let certificates = Certificates::generate();
        let (address, server) = serve(&hub, &certificates).await;
        Self {
            dir,
            hub,
            keys,
            address,
            certificates,
            server,
        }
    }

    /// Stops the server and the hub, and opens both again on the same
    /// directory (a new port).
    pub async fn restart(self) -> Self {
        let Self {
            dir,
            hub,
            keys,
            certificates,
            server,
            ..
        } = self;
        let config = hub.config().clone();
        server.abort();
        let _ = server.await;
        drop(hub);
        // The connections' tasks let go of the hub as they are aborted; the
        // store opens again once the last one has.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let hub = loop {
            match Hub::open(&config, keys.clone()) {
                Ok(hub) => break hub,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("the hub does not open again: {error}"),
            }
        };
        let (address, server) = serve(&hub, &certificates).await;
        Self {
            dir,
            hub,
            keys,
            address,
            certificates,
            server,
        }
    }

    /// A SAS token for `module`, valid for an hour.
    pub fn token(&self, module: &str) -> String {
        let expiry = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3600;
        sas_token(self.keys.as_ref(), module, expiry)
    }

    pub fn user_name(module: &str) -> String {
        format!("{IOTHUB}/{DEVICE}/{module}/?api-version=2019-10-01&DeviceClientType=test")
    }

    /// The CONNECT an SDK sends for `module`.
    pub fn connect_packet(&self, module: &str, clean_session: bool) -> Connect {
        let mut connect = Connect::new(format!("{DEVICE}/{module}"));
        connect.keep_alive = 60;
        connect.clean_session = clean_session;
        connect.set_login(Self::user_name(module), self.token(module));
        connect
    }

    /// A TLS connection to the hub, before CONNECT.
    pub async fn open(&self) -> TestClient {
        TestClient::open(self.address, &self.certificates).await
    }

    /// A connected client for `module`.
    pub async fn client(&self, module: &str, clean_session: bool) -> TestClient {
        let mut client = self.open().await;
        let connack = client
            .connect(self.connect_packet(module, clean_session))
            .await;
        assert_eq!(
            connack.code,
            ConnectReturnCode::Success,
            "{module} connects"
        );
        client
    }
}

async fn serve(hub: &Hub, certificates: &Certificates) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(hub.config().mqtt_listen)
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(edge_hub::mqtt::serve(
        listener,
        certificates.server.clone(),
        hub.clone(),
    ));
    (address, server)
}

/// A SAS token as the SDKs build it.
pub fn sas_token(keys: &dyn KeyStore, module: &str, expiry: u64) -> String {
    let resource = format!("{IOTHUB}/devices/{DEVICE}/modules/{module}");
    edge_hub::sas::token(keys, module, &resource, expiry).expect("sign")
}

/// A raw MQTT client.
pub struct TestClient {
    stream: TlsStream<TcpStream>,
    buffer: BytesMut,
    /// Packets received while waiting for another kind.
    backlog: VecDeque<Packet>,
    next_packet_id: u16,
}

impl TestClient {
    pub async fn open(address: SocketAddr, certificates: &Certificates) -> Self {
        Self::open_with(address, &certificates.connector()).await
    }

    pub async fn open_with(address: SocketAddr, connector: &TlsConnector) -> Self {
        let tcp = TcpStream::connect(address).await.expect("TCP connect");
        let stream = connector
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        Self {
            stream,
            buffer: BytesMut::new(),
            backlog: VecDeque::new(),
            next_packet_id: 1,
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, usize::MAX).expect("encode");
        self.send_raw(&bytes).await;
    }

    /// Writes bytes; a hub that closed the connection makes this a no-op.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
    }

    /// The next packet, or None when the hub closed the connection.
    pub async fn receive(&mut self) -> Option<Packet> {
        if let Some(packet) = self.backlog.pop_front() {
            return Some(packet);
        }
        tokio::time::timeout(PATIENCE, self.read())
            .await
            .expect("the hub sends a packet or closes within the patience")
    }

    async fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buffer, usize::MAX) {
                Ok(packet) => return Some(packet),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(error) => panic!("the hub sent a malformed packet: {error}"),
            }
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Nothing arrives within `wait`.
    pub async fn receives_nothing(&mut self, wait: Duration) -> bool {
        self.backlog.is_empty() && tokio::time::timeout(wait, self.read()).await.is_err()
    }

    /// Waits for a packet `pick` accepts, keeping the others for later.
    pub async fn expect<T>(&mut self, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let mut skipped = VecDeque::new();
        let found = loop {
            let packet = match self.backlog.pop_front() {
                Some(packet) => packet,
                None => tokio::time::timeout(PATIENCE, self.read())
                    .await
                    .expect("the expected packet arrives in time")
                    .expect("the hub closed the connection before the expected packet"),
            };
            match pick(&packet) {
                Some(found) => break found,
                None => skipped.push_back(packet),
            }
        };
        skipped.extend(self.backlog.drain(..));
        self.backlog = skipped;
        found
    }

    /// The hub closes the connection (after any packets it still sends).
    pub async fn expect_closed(&mut self) {
        // Longer than the hub's own ten seconds for a CONNECT.
        tokio::time::timeout(PATIENCE + Duration::from_secs(5), async {
            while self.read().await.is_some() {}
        })
        .await
        .expect("the hub closes the connection");
    }

    pub async fn connect(&mut self, connect: Connect) -> ConnAck {
        self.send(Packet::Connect(connect)).await;
        match self.receive().await {
            Some(Packet::ConnAck(connack)) => connack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        id
    }

    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let packet_id = self.packet_id();
        let mut subscribe = Subscribe::new(filters[0], QoS::AtLeastOnce);
        for filter in &filters[1..] {
            subscribe.add((*filter).to_owned(), QoS::AtLeastOnce);
        }
        subscribe.pkid = packet_id;
        self.send(Packet::Subscribe(subscribe)).await;
        let suback: SubAck = self
            .expect(|packet| match packet {
                Packet::SubAck(suback) if suback.pkid == packet_id => Some(suback.clone()),
                _ => None,
            })
            .await;
        suback.return_codes
    }

    /// Publishes with QoS 1 and waits for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        let packet_id = self.publish_no_wait(topic, payload).await;
        self.expect_puback(packet_id).await;
    }

    pub async fn publish_no_wait(&mut self, topic: &str, payload: &[u8]) -> u16 {
        let packet_id = self.packet_id();
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = packet_id;
        self.send(Packet::Publish(publish)).await;
        packet_id
    }

    pub async fn expect_puback(&mut self, packet_id: u16) {
        self.expect(|packet| match packet {
            Packet::PubAck(ack) if ack.pkid == packet_id => Some(()),
            _ => None,
        })
        .await;
    }

    /// The next PUBLISH from the hub (not acknowledged).
    pub async fn next_publish(&mut self) -> Publish {
        self.expect(|packet| match packet {
            Packet::Publish(publish) => Some(publish.clone()),
            _ => None,
        })
        .await
    }

    pub async fn ack(&mut self, publish: &Publish) {
        if publish.qos == QoS::AtLeastOnce {
            self.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
        }
    }

    /// The hub still answers: a PINGREQ gets its PINGRESP.
    pub async fn ping(&mut self) {
        self.send(Packet::PingReq).await;
        self.expect(|packet| matches!(packet, Packet::PingResp).then_some(()))
            .await;
    }
}

pub fn telemetry_topic(module: &str, properties: &str) -> String {
    format!("devices/{DEVICE}/modules/{module}/messages/events/{properties}")
}

pub fn inputs_filter(module: &str) -> String {
    format!("devices/{DEVICE}/modules/{module}/inputs/#")
}

/// The property bag of a delivered input topic, decoded.
pub fn delivered_properties(topic: &str) -> (String, Vec<(String, String)>) {
    let rest = topic
        .strip_prefix(&format!("devices/{DEVICE}/modules/"))
        .expect("an input topic");
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    assert_eq!(parts[1], "inputs", "{topic}");
    let properties = parts
        .get(3)
        .map(|bag| {
            bag.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("k=v");
                    let decode = |text: &str| {
                        percent_encoding::percent_decode_str(text)
                            .decode_utf8()
                            .expect("UTF-8")
                            .into_owned()
                    };
                    (decode(key), decode(value))
                })
                .collect()
        })
        .unwrap_or_default();
    (parts[2].to_owned(), properties)
}
