//! One connection attempt to the cloud: resolve, TCP, TLS, CONNECT and
//! CONNACK, each failure named by its step so that `edged status` can say
//! what to fix.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet};
use tokio::io::{AsyncWriteExt as _, ReadHalf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::config::UpstreamConfig;
use super::credentials::{self, Credentials};
use super::status::FailureKind;
use crate::mqtt::connection::{Closed, Outgoing, encode, read_packet};

/// Why an attempt or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkError {
    pub kind: FailureKind,
    pub message: String,
}

impl LinkError {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An established connection ended.
    pub(crate) fn lost(closed: &Closed) -> Self {
        let kind = match closed {
            Closed::Malformed(_) | Closed::PacketTooLarge(_) | Closed::Protocol(_) => {
                FailureKind::Protocol
            }
            _ => FailureKind::Lost,
        };
        Self::new(kind, closed.to_string())
    }
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.kind.name(), self.message)
    }
}

/// A connection that got its CONNACK.
pub(crate) struct Link {
    pub reader: ReadHalf<TlsStream<TcpStream>>,
    /// Bytes read and not yet a whole packet.
    pub buffer: BytesMut,
    pub outgoing: Outgoing,
    pub writer: tokio::task::JoinHandle<()>,
    /// The cloud kept the session (subscriptions, queued C2D messages).
    pub session_present: bool,
    /// When the credentials stop being valid.
    pub expires: Option<std::time::SystemTime>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

/// Connects, authenticates and returns the link once CONNACK accepted it.
pub(crate) async fn connect(config: &UpstreamConfig) -> Result<Link, LinkError> {
    let for_credentials = config.clone();
    let credentials = tokio::task::spawn_blocking(move || credentials::load(&for_credentials))
        .await
        .map_err(|error| LinkError::new(FailureKind::Credentials, error.to_string()))?
        .map_err(|message| LinkError::new(FailureKind::Credentials, message))?;
    match tokio::time::timeout(config.connect_timeout, handshake(config, credentials)).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::new(
            FailureKind::Timeout,
            format!(
                "no CONNACK from {}:{} within {}",
                config.host,
                config.port,
                humantime::format_duration(config.connect_timeout)
            ),
        )),
    }
}

async fn handshake(config: &UpstreamConfig, credentials: Credentials) -> Result<Link, LinkError> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((config.host.as_str(), config.port))
        .await
        .map_err(|error| {
            LinkError::new(
                FailureKind::Dns,
                format!("cannot resolve {}: {error}", config.host),
            )
        })?
        .collect();
    let mut tcp = None;
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(error) => last_error = Some(format!("{address}: {error}")),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        LinkError::new(
            FailureKind::Tcp,
            format!(
                "cannot connect to {}:{} ({})",
                config.host,
                config.port,
                last_error.unwrap_or_else(|| "no address".to_owned())
            ),
        )
    })?;
    // Telemetry is many small packets, already gathered by the writer.
    let _ = tcp.set_nodelay(true);
    let server_name = rustls::pki_types::ServerName::try_from(config.host.clone())
        .map_err(|error| LinkError::new(FailureKind::Tls, format!("{}: {error}", config.host)))?;
    let connector = TlsConnector::from(Arc::clone(&credentials.tls));
    let mut stream = connector.connect(server_name, tcp).await.map_err(|error| {
        LinkError::new(
            FailureKind::Tls,
            format!(
                "TLS handshake with {}:{}: {error}",
                config.host, config.port
            ),
        )
    })?;

    let mut connect = Connect::new(config.device_id.clone());
    // A persistent session keeps the subscriptions and the cloud's queued
    // messages for the device while it is offline, as IoT Hub does.
    connect.clean_session = false;
    connect.keep_alive = u16::try_from(config.keep_alive.as_secs()).unwrap_or(u16::MAX);
    connect.set_login(
        credentials.username.clone(),
        credentials.password.clone().unwrap_or_default(),
    );
    let packet = encode(&Packet::Connect(connect)).map_err(|error| LinkError::lost(&error))?;
    stream
        .write_all(&packet)
        .await
        .map_err(|error| LinkError::new(FailureKind::Lost, format!("sending CONNECT: {error}")))?;
    stream
        .flush()
        .await
        .map_err(|error| LinkError::new(FailureKind::Lost, format!("sending CONNECT: {error}")))?;
    let mut buffer = BytesMut::new();
    let session_present = match read_packet(&mut stream, &mut buffer).await {
        Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => ack.session_present,
        Ok(Packet::ConnAck(ack)) => {
            return Err(LinkError::new(
                FailureKind::Refused,
                format!("CONNACK {}", refusal(ack.code)),
            ));
        }
        Ok(_) => {
            return Err(LinkError::new(
                FailureKind::Protocol,
                "the first packet from the cloud is not CONNACK",
            ));
        }
        Err(Closed::Disconnected) => {
            return Err(LinkError::new(
                FailureKind::Refused,
                "the cloud closed the connection after CONNECT (a broker closes it when it refuses the credentials)",
            ));
        }
        Err(error) => return Err(LinkError::lost(&error)),
    };
    let (reader, writer) = tokio::io::split(stream);
    let (outgoing, writer) = Outgoing::start(writer);
    Ok(Link {
        reader,
        buffer,
        outgoing,
        writer,
        session_present,
        expires: credentials.expires,
    })
}

/// A CONNACK return code as the operator should read it.
fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "0 (accepted)",
        ConnectReturnCode::RefusedProtocolVersion => "1: the protocol version is refused",
        ConnectReturnCode::BadClientId => "2: the client id (device id) is refused",
        ConnectReturnCode::ServiceUnavailable => "3: the service is unavailable",
        ConnectReturnCode::BadUserNamePassword => {
            "4: bad user name or password (check the SAS key or token and the device id)"
        }
        ConnectReturnCode::NotAuthorized => {
            "5: not authorized (check the device's credentials and that it is enabled)"
        }
    }
}
