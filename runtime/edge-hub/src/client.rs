//! Who a connection authenticated as: a deployed module or a leaf device
//! connected through the hub (a transparent gateway's downstream device).
//!
//! Both kinds share the hub's machinery — a queue read by an input stream,
//! a twin, a record of the desired properties the client has, a method
//! listener, a persistent session — and the store keys all of them by the
//! client's [`ClientIdentity::key`]. Module names are ASCII letters, digits,
//! `_` and `-` (edgec refuses others), so a leaf device's key, which starts
//! with `$leaf/`, never names a module, and no leaf device id, however it is
//! spelled, can reach a module's queue or twin. Sessions are keyed by MQTT
//! client id instead: `{device}/{module}` for a module, `{leaf}` for a leaf
//! device, whose ids have no `/`.

use std::fmt;

/// What a leaf device's key starts with.
const LEAF_KEY_PREFIX: &str = "$leaf/";

/// A module or a leaf device, as the hub knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientIdentity {
    /// A module of the deployment, by name.
    Module(String),
    /// A leaf device of `[hub] leaf_devices`, by device id.
    LeafDevice(String),
}

impl ClientIdentity {
    /// The name the hub keys the client's queue, twin, desired-properties
    /// record and method listener by: the module's name, or `$leaf/{id}`.
    pub fn key(&self) -> String {
        match self {
            Self::Module(module) => module.clone(),
            Self::LeafDevice(device) => format!("{LEAF_KEY_PREFIX}{device}"),
        }
    }

    /// The client a key names (the inverse of [`ClientIdentity::key`]).
    pub fn from_key(key: &str) -> Self {
        match key.strip_prefix(LEAF_KEY_PREFIX) {
            Some(device) => Self::LeafDevice(device.to_owned()),
            None => Self::Module(key.to_owned()),
        }
    }
}

impl fmt::Display for ClientIdentity {
    /// `module m` or `leaf device d`, for messages.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Module(module) => write!(formatter, "module {module}"),
            Self::LeafDevice(device) => write!(formatter, "leaf device {device}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_modules_and_leaf_devices_never_collide_and_round_trip() {
        let module = ClientIdentity::Module("sensor".to_owned());
        let leaf = ClientIdentity::LeafDevice("sensor".to_owned());
        assert_ne!(module.key(), leaf.key());
        assert_eq!(leaf.key(), "$leaf/sensor");
        for client in [module, leaf] {
            assert_eq!(ClientIdentity::from_key(&client.key()), client);
        }
    }
}
