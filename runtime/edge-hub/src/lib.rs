//! The edge hub: what edgeHub is on Azure IoT Edge, inside edged.
//!
//! Modules built on the unmodified Azure IoT SDKs connect over MQTT 3.1.1
//! on TLS, authenticate with SAS tokens signed by their own key (through
//! the workload API), and exchange messages along the deployment's compiled
//! routes; leaf devices connect through it as through a transparent
//! gateway. Every accepted message is in the durable store before the hub
//! acknowledges it. Twins and direct methods work as on IoT Hub.
//!
//! See `runtime/README.md` ("The edge hub") for the protocol subset, the
//! store and the limits.

pub mod certs;
pub mod client;
pub mod config;
pub mod failpoint;
pub mod gateway;
mod http;
pub mod hub;
pub mod keys;
pub mod leaf;
pub mod message;
pub mod methods;
pub mod metrics;
pub mod mqtt;
pub mod pkcs11_keys;
pub mod properties;
pub mod sas;
pub mod server;
pub mod store;
pub mod topic;
pub mod twin;
pub mod upstream;
pub mod workload;

pub use certs::CaKeySource;
pub use client::ClientIdentity;
pub use config::{HubConfig, WhenFull};
pub use failpoint::Failpoint;
pub use hub::{
    Delivery, DeliveryId, DesiredSeen, DesiredState, EndpointStats, Hub, HubDeployment, HubError,
    HubStats, InputStream, ModuleIdentity, ModuleStats, PublishRefused, Qos, StoreStats,
    StoredSession, Totals,
};
pub use keys::{FileKeys, KeyError, KeyStore};
pub use leaf::{CredentialError, LeafCredential, LeafDevice, SymmetricKey, Thumbprint};
pub use message::{HubMessage, SystemProperty};
pub use methods::{CallTimeouts, MethodError, MethodRequest, MethodResponse, MethodRouter};
pub use pkcs11_keys::Pkcs11Keys;
pub use server::{HubServer, ServerError};
pub use store::StoreError;
pub use twin::{DesiredPatch, Twin, TwinError};
pub use workload::PeerPolicy;
