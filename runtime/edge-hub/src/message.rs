//! Messages as the hub carries them: system properties by their IoT Hub
//! names, application properties in arrival order, and the body bytes.
//!
//! The MQTT property bag (`$.ct=…&temperature=…`) is turned into a
//! [`HubMessage`] when a module publishes, and back when the hub delivers it
//! to an input; the router sees it as an [`edge_route::Message`].

use std::collections::BTreeMap;

/// A system property: set by the sending SDK or by the hub, read by route
/// conditions as `$name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SystemProperty {
    /// `$.mid`
    MessageId,
    /// `$.cid`
    CorrelationId,
    /// `$.uid`
    UserId,
    /// `$.ct`
    ContentType,
    /// `$.ce`
    ContentEncoding,
    /// `$.exp`
    AbsoluteExpiryTime,
    /// `$.to`
    To,
    /// `$.on`: the output a module sent the message on.
    OutputName,
    /// `$.cdid`: set by the hub to the device of the sending connection.
    ConnectionDeviceId,
    /// `$.cmid`: set by the hub to the module of the sending connection.
    ConnectionModuleId,
    /// `$.ctime`
    CreationTime,
}

impl SystemProperty {
    /// Every system property, in a fixed order.
    pub const ALL: [Self; 11] = [
        Self::MessageId,
        Self::CorrelationId,
        Self::UserId,
        Self::ContentType,
        Self::ContentEncoding,
        Self::AbsoluteExpiryTime,
        Self::To,
        Self::OutputName,
        Self::ConnectionDeviceId,
        Self::ConnectionModuleId,
        Self::CreationTime,
    ];

    /// The key in an MQTT property bag, such as `$.ct`.
    pub fn mqtt_key(self) -> &'static str {
        match self {
            Self::MessageId => "$.mid",
            Self::CorrelationId => "$.cid",
            Self::UserId => "$.uid",
            Self::ContentType => "$.ct",
            Self::ContentEncoding => "$.ce",
            Self::AbsoluteExpiryTime => "$.exp",
            Self::To => "$.to",
            Self::OutputName => "$.on",
            Self::ConnectionDeviceId => "$.cdid",
            Self::ConnectionModuleId => "$.cmid",
            Self::CreationTime => "$.ctime",
        }
    }

    /// The name route conditions use (`$contentType`).
    pub fn route_name(self) -> &'static str {
        match self {
            Self::MessageId => "messageId",
            Self::CorrelationId => "correlationId",
            Self::UserId => "userId",
            Self::ContentType => "contentType",
            Self::ContentEncoding => "contentEncoding",
            Self::AbsoluteExpiryTime => "absoluteExpiryTime",
            Self::To => "to",
            Self::OutputName => "outputName",
            Self::ConnectionDeviceId => "connectionDeviceId",
            Self::ConnectionModuleId => "connectionModuleId",
            Self::CreationTime => "creationTime",
        }
    }

    /// The property an MQTT property-bag key names, if it is a system one.
    pub fn from_mqtt_key(key: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|property| property.mqtt_key() == key)
    }
}

/// A message in the hub.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubMessage {
    /// System properties.
    pub system_properties: BTreeMap<SystemProperty, String>,
    /// Application properties in the order the sender gave them; names are
    /// unique.
    pub application_properties: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HubMessage {
    /// The router's view of this message, as coming from `source`
    /// (`/messages/modules/{m}/outputs/{o}`, `/twinChangeNotifications`).
    pub fn to_route_message(&self, source: &str) -> edge_route::Message {
        let mut message = edge_route::Message::new(source);
        for (property, value) in &self.system_properties {
            message.set_system_property(property.route_name(), Some(value.clone()));
        }
        for (name, value) in &self.application_properties {
            message.set_application_property(name, Some(value.clone()));
        }
        message.set_body(self.body.clone());
        message
    }

    /// The size the hub counts against its limits: body and properties.
    pub fn size(&self) -> usize {
        let system: usize = self
            .system_properties
            .iter()
            .map(|(property, value)| property.mqtt_key().len() + value.len())
            .sum();
        let application: usize = self
            .application_properties
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum();
        self.body.len() + system + application
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_keys_round_trip_and_are_distinct() {
        for property in SystemProperty::ALL {
            assert_eq!(
                SystemProperty::from_mqtt_key(property.mqtt_key()),
                Some(property)
            );
        }
        assert_eq!(SystemProperty::from_mqtt_key("temperature"), None);
    }

    #[test]
    fn route_conditions_see_system_and_application_properties() {
        let mut message = HubMessage::default();
        message
            .system_properties
            .insert(SystemProperty::ConnectionModuleId, "sensor".to_owned());
        message
            .application_properties
            .push(("alert".to_owned(), "true".to_owned()));
        let router = edge_route::Router::new(&[edge_route::RouteTableEntry {
            name: "r".to_owned(),
            route: "FROM /messages/* WHERE $connectionModuleId = 'sensor' AND alert = 'true' INTO $upstream"
                .to_owned(),
            priority: 0,
            time_to_live_secs: 0,
        }])
        .expect("the route compiles");
        let routed =
            router.route(&message.to_route_message("/messages/modules/sensor/outputs/out"));
        assert_eq!(routed.len(), 1);
    }
}
