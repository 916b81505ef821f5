//! The hub's MQTT 3.1.1 front end over TLS: what modules built on the Azure
//! IoT SDKs connect to.
//!
//! The codec is rumqttc's `mqttbytes::v4`, which decodes the client packets
//! a server reads (CONNECT, PUBLISH, SUBSCRIBE, …) as well as it encodes
//! the server's; [`serve`] is the entry point.
//!
//! What the hub does, where MQTT or IoT Hub leave a choice:
//! - CONNECT: protocol level other than 4 gets CONNACK 1; a client id that
//!   is neither a module's `{device}/{module}` nor a leaf device's `{leaf}`
//!   gets CONNACK 2; every other refusal (other device, module not deployed,
//!   leaf device not configured, user name, token, signature, certificate
//!   thumbprint, expiry) gets
//!   CONNACK 5, with the reason in the hub's log only. The will message is
//!   ignored (IoT Hub modules have none). A connection closes when its SAS
//!   token expires; the SDKs reconnect with a new one.
//! - A second connection of a client id replaces the first, which is
//!   closed before the second gets its CONNACK.
//! - PUBLISH: QoS 2 closes the connection, as on IoT Hub; the retain flag is
//!   ignored. A publish to a topic that is not the module's own, with a
//!   wildcard character, or with a refused property bag closes the
//!   connection without a PUBACK (MQTT 3.1.1 has no negative
//!   acknowledgement), as does a message over 256 KiB or a full store
//!   (QoS 1; a QoS 0 message is dropped and counted).
//! - SUBSCRIBE: the four filters the SDKs use are granted (QoS 2 as 1); any
//!   other gets 0x80.
//! - Sessions: `clean_session = 0` keeps the subscriptions in the store;
//!   input messages stay queued in the store until acknowledged, so they
//!   come again after a reconnect or restart. Within one run of the hub,
//!   what was sent and not acknowledged is resent with DUP and its original
//!   packet id; after a restart it comes again without DUP. Twin responses
//!   and method requests in flight are not resent: the SDK retries twin
//!   requests, and method calls fail with `Closed`.

pub mod connection;
pub mod listener;
pub mod session;

pub use listener::serve;
