//! What the upstream connection needs to know: where the cloud is, how the
//! device proves who it is, and how hard to push.
//!
//! Secrets are named by path and read at every connection attempt, never
//! kept in the configuration or the bundle: a rotated key or a renewed
//! token file is picked up by the next reconnect, and a missing or
//! unreadable file is a connection failure `edged status` reports, not a
//! daemon that will not start.

use std::path::PathBuf;
use std::time::Duration;

/// The default number of telemetry messages sent and not yet acknowledged
/// by the cloud. The window holds ids only (the messages stay in the
/// store), so a large one costs little memory; it bounds how many messages
/// the cloud may see twice after a connection drops. 1,024 keeps a link
/// with a 100 ms round trip above 10,000 messages a second, and on
/// loopback the upstream benchmark drained a backlog 1.7 times as fast as
/// with 256 (BENCHMARKS.md, "Edge hub upstream").
pub const DEFAULT_WINDOW: usize = 1024;

/// The most messages in flight one connection may be configured with: the
/// MQTT packet id has 16 bits, and ids of messages in flight must differ.
pub const MAXIMUM_WINDOW: usize = 16_384;

/// The connection to the cloud.
#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// The IoT Hub (or broker) host name: what is dialled and what its TLS
    /// certificate must name.
    pub host: String,
    /// The MQTT/TLS port (8883).
    pub port: u16,
    /// PEM certificates the cloud's certificate must chain to.
    pub ca_file: PathBuf,
    /// The IoT Hub host name in the user name and the SAS token's resource;
    /// usually `host`.
    pub iothub_hostname: String,
    /// The device's identity in the cloud (the client id).
    pub device_id: String,
    /// How the device authenticates.
    pub auth: UpstreamAuth,
    /// Telemetry messages sent and not yet acknowledged, at most.
    pub window: usize,
    /// The MQTT keep-alive: a PINGREQ goes out when nothing was sent for
    /// this long, and the link is taken for dead when nothing came back for
    /// one and a half times it.
    pub keep_alive: Duration,
    /// The first wait after a failed attempt; it doubles with every failure
    /// in a row, up to `backoff_maximum`, with jitter.
    pub backoff_initial: Duration,
    /// The longest wait between attempts.
    pub backoff_maximum: Duration,
    /// How long a SAS token made from the device key is valid; a new one is
    /// made for every connection, and the connection is renewed before the
    /// token expires.
    pub token_lifetime: Duration,
    /// How long one connection attempt (resolve, TCP, TLS, CONNACK) may take.
    pub connect_timeout: Duration,
}

/// How the device authenticates to the cloud.
#[derive(Clone, Debug)]
pub enum UpstreamAuth {
    /// A SAS token signed with the device's symmetric key (IoT Hub's primary
    /// key: base64, as the portal and `az iot hub device-identity` show it),
    /// read from this file.
    SasKey {
        /// The key file (mode 0600 or stricter).
        key_file: PathBuf,
    },
    /// A SAS token made elsewhere (for example by a provisioning service
    /// that renews it), read from this file at every connection.
    SasToken {
        /// The token file: `SharedAccessSignature sr=…&sig=…&se=…`.
        token_file: PathBuf,
    },
    /// An X.509 client certificate; no password is sent.
    X509 {
        /// The certificate chain, PEM, the device's certificate first.
        certificate_file: PathBuf,
        /// Where its private key is.
        key: ClientKey,
    },
}

/// Where the private key of an X.509 client certificate is.
#[derive(Clone, Debug)]
pub enum ClientKey {
    /// A PEM file (PKCS#8, SEC1 or PKCS#1).
    File(PathBuf),
    /// An EC P-256 private key on a PKCS#11 token, found by label; it never
    /// leaves the token, which makes each handshake signature.
    Pkcs11 {
        /// The PKCS#11 module (for example SoftHSM2's `libsofthsm2.so`).
        module: PathBuf,
        /// The token's label.
        token: String,
        /// The file holding the user PIN.
        pin_file: PathBuf,
        /// The private key object's label.
        key_label: String,
    },
}

impl UpstreamConfig {
    /// A configuration with the defaults for everything but where the cloud
    /// is and who the device is.
    pub fn new(
        host: &str,
        port: u16,
        ca_file: PathBuf,
        device_id: &str,
        auth: UpstreamAuth,
    ) -> Self {
        Self {
            host: host.to_owned(),
            port,
            ca_file,
            iothub_hostname: host.to_owned(),
            device_id: device_id.to_owned(),
            auth,
            window: DEFAULT_WINDOW,
            keep_alive: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_maximum: Duration::from_secs(60),
            token_lifetime: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(30),
        }
    }
}
