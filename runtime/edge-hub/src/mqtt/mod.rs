//! The hub's MQTT 3.1.1 front end over TLS: what modules built on the Azure
//! IoT SDKs connect to.
//!
//! The codec is rumqttc's `mqttbytes::v4`, which decodes the client packets
//! a server reads (CONNECT, PUBLISH, SUBSCRIBE, …) as well as it encodes
//! the server's; [`listener::serve`] is the entry point.

pub mod connection;
pub mod listener;
pub mod session;

pub use listener::serve;
