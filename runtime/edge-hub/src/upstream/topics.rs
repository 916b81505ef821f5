//! The topics of the upstream connection.
//!
//! The gateway keeps one MQTT connection, as the device. IoT Hub's own
//! topics (`$iothub/twin/…`, `$iothub/methods/…`) carry the device's twin,
//! where edged reports the runtime's state. IoT Hub gives a module's twin
//! and methods only to a connection of that module, so for the modules
//! behind the gateway the connection uses the identity-qualified form that
//! nested IoT Edge gateways use towards their parent: the same topics with
//! `{device}/{module}/` after `$iothub/`. A leaf device behind the gateway
//! is a device of its own: its topics have `{leaf}/` after `$iothub/`, and
//! its cloud-to-device messages come on `devices/{leaf}/messages/devicebound/`.
//! A broker standing in for the cloud carries them as they are; the cloud
//! side publishes a module's desired patch to
//! `$iothub/{device}/{module}/twin/PATCH/properties/desired/?$version=N` and
//! calls its method on `$iothub/{device}/{module}/methods/POST/{name}/?$rid=R`.

use percent_encoding::percent_decode_str;

use super::reported::ReportedTwin;
use crate::client::ClientIdentity;

/// What a publish from the cloud is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloudTopic<'a> {
    /// A desired-properties patch for a module or leaf device.
    Desired { client: ClientIdentity },
    /// A direct method call to a module or leaf device.
    Method {
        client: ClientIdentity,
        name: String,
        rid: &'a str,
    },
    /// A cloud-to-device message for a leaf device, with its property bag.
    CloudToDevice { leaf: &'a str, properties: &'a str },
    /// The cloud's answer to a reported patch (or another twin request):
    /// logged when it is not a success.
    TwinResponse { status: &'a str },
}

/// The subscriptions the connection makes: for the gateway's modules, and
/// for each leaf device.
pub(crate) fn subscriptions(device: &str, leaves: &[String]) -> Vec<String> {
    let mut filters = vec![
        format!("$iothub/{device}/+/twin/PATCH/properties/desired/#"),
        format!("$iothub/{device}/+/methods/POST/#"),
        format!("$iothub/{device}/+/twin/res/#"),
        "$iothub/twin/res/#".to_owned(),
    ];
    for leaf in leaves {
        filters.push(format!("$iothub/{leaf}/twin/PATCH/properties/desired/#"));
        filters.push(format!("$iothub/{leaf}/methods/POST/#"));
        filters.push(format!("$iothub/{leaf}/twin/res/#"));
        filters.push(format!("devices/{leaf}/messages/devicebound/#"));
    }
    filters
}

/// The topic prefix of `client`'s twin and methods: `$iothub/{device}/{module}`
/// or `$iothub/{leaf}`.
fn client_prefix(device: &str, client: &ClientIdentity) -> String {
    match client {
        ClientIdentity::Module(module) => format!("$iothub/{device}/{module}"),
        ClientIdentity::LeafDevice(leaf) => format!("$iothub/{leaf}"),
    }
}

/// Where telemetry goes, with its property bag.
pub(crate) fn telemetry(device: &str, properties: &str) -> String {
    format!("devices/{device}/messages/events/{properties}")
}

/// Where a reported patch of the device, a module or a leaf device goes.
pub(crate) fn reported_patch(device: &str, twin: &ReportedTwin, rid: u64) -> String {
    match twin {
        ReportedTwin::Device => format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
        ReportedTwin::Client(client) => format!(
            "{}/twin/PATCH/properties/reported/?$rid={rid}",
            client_prefix(device, client)
        ),
    }
}

/// Where a client's answer to a method call goes.
pub(crate) fn method_response(
    device: &str,
    client: &ClientIdentity,
    status: i32,
    rid: &str,
) -> String {
    format!(
        "{}/methods/res/{status}/?$rid={rid}",
        client_prefix(device, client)
    )
}

/// Reads a topic the cloud published to; `None` for one the connection has
/// no use for.
pub(crate) fn parse<'a>(topic: &'a str, device: &str, leaves: &[String]) -> Option<CloudTopic<'a>> {
    if let Some(rest) = topic.strip_prefix("devices/") {
        let (leaf, properties) = rest.split_once("/messages/devicebound/")?;
        return leaves
            .iter()
            .any(|known| known == leaf)
            .then_some(CloudTopic::CloudToDevice { leaf, properties });
    }
    let rest = topic.strip_prefix("$iothub/")?;
    if let Some(status) = rest.strip_prefix("twin/res/") {
        return Some(CloudTopic::TwinResponse {
            status: status.split('/').next()?,
        });
    }
    let (client, rest) = match rest
        .strip_prefix(device)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        Some(rest) => {
            let (module, rest) = rest.split_once('/')?;
            if module.is_empty() {
                return None;
            }
            (ClientIdentity::Module(module.to_owned()), rest)
        }
        None => {
            let (leaf, rest) = rest.split_once('/')?;
            if !leaves.iter().any(|known| known == leaf) {
                return None;
            }
            (ClientIdentity::LeafDevice(leaf.to_owned()), rest)
        }
    };
    if let Some(query) = rest.strip_prefix("twin/PATCH/properties/desired/") {
        return (query.is_empty() || query.starts_with('?'))
            .then_some(CloudTopic::Desired { client });
    }
    if let Some(status) = rest.strip_prefix("twin/res/") {
        return Some(CloudTopic::TwinResponse {
            status: status.split('/').next()?,
        });
    }
    let rest = rest.strip_prefix("methods/POST/")?;
    let (name, query) = rest.split_once("/?")?;
    let rid = query
        .split('&')
        .find_map(|field| field.strip_prefix("$rid="))
        .filter(|rid| is_request_id(rid))?;
    let name = percent_decode_str(name).decode_utf8().ok()?.into_owned();
    if name.is_empty() {
        return None;
    }
    Some(CloudTopic::Method { client, name, rid })
}

/// Whether `rid` may be echoed in a response topic: short, and only the
/// characters that need no escaping in a topic level.
fn is_request_id(rid: &str) -> bool {
    !rid.is_empty()
        && rid.len() <= 128
        && rid
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str) -> ClientIdentity {
        ClientIdentity::Module(name.to_owned())
    }

    #[test]
    fn reads_the_cloud_topics_of_the_gateways_modules_and_leaves() {
        let leaves = ["plc-7".to_owned()];
        let cases = [
            (
                "$iothub/gw/sensor/twin/PATCH/properties/desired/?$version=7",
                Some(CloudTopic::Desired {
                    client: module("sensor"),
                }),
            ),
            (
                "$iothub/gw/sensor/methods/POST/reset%20now/?$rid=42",
                Some(CloudTopic::Method {
                    client: module("sensor"),
                    name: "reset now".to_owned(),
                    rid: "42",
                }),
            ),
            (
                "$iothub/plc-7/twin/PATCH/properties/desired/?$version=2",
                Some(CloudTopic::Desired {
                    client: ClientIdentity::LeafDevice("plc-7".to_owned()),
                }),
            ),
            (
                "$iothub/plc-7/methods/POST/open/?$rid=1",
                Some(CloudTopic::Method {
                    client: ClientIdentity::LeafDevice("plc-7".to_owned()),
                    name: "open".to_owned(),
                    rid: "1",
                }),
            ),
            (
                "devices/plc-7/messages/devicebound/%24.mid=1&valve=shut",
                Some(CloudTopic::CloudToDevice {
                    leaf: "plc-7",
                    properties: "%24.mid=1&valve=shut",
                }),
            ),
            // Leaves that are not configured.
            ("$iothub/plc-8/methods/POST/open/?$rid=1", None),
            ("devices/plc-8/messages/devicebound/x=1", None),
            (
                "$iothub/twin/res/204/?$rid=3&$version=9",
                Some(CloudTopic::TwinResponse { status: "204" }),
            ),
            (
                "$iothub/gw/sensor/twin/res/400/?$rid=3",
                Some(CloudTopic::TwinResponse { status: "400" }),
            ),
            // Another device's, a method without a request id, an empty
            // module or method name, and topics the connection never uses.
            (
                "$iothub/other/sensor/twin/PATCH/properties/desired/?$version=7",
                None,
            ),
            ("$iothub/gw/sensor/methods/POST/reset/?x=1", None),
            ("$iothub/gw/sensor/methods/POST/reset/?$rid=a/b", None),
            ("$iothub/gw/sensor/methods/POST/reset/?$rid=a#", None),
            ("$iothub/gw//methods/POST/reset/?$rid=1", None),
            ("$iothub/gw/sensor/methods/POST//?$rid=1", None),
            ("$iothub/gw/sensor/twin/PATCH/properties/desiredX", None),
            ("devices/gw/messages/devicebound/x=1", None),
            ("devices/gw/messages/events/x=1", None),
            ("$iothub/gw", None),
        ];
        for (topic, expected) in cases {
            assert_eq!(parse(topic, "gw", &leaves), expected, "{topic}");
        }
    }

    #[test]
    fn writes_the_topics_the_cloud_reads() {
        assert_eq!(
            telemetry("gw", "%24.cdid=gw&%24.cmid=sensor"),
            "devices/gw/messages/events/%24.cdid=gw&%24.cmid=sensor"
        );
        assert_eq!(
            reported_patch("gw", &ReportedTwin::Device, 5),
            "$iothub/twin/PATCH/properties/reported/?$rid=5"
        );
        assert_eq!(
            reported_patch("gw", &ReportedTwin::Client(module("sensor")), 6),
            "$iothub/gw/sensor/twin/PATCH/properties/reported/?$rid=6"
        );
        let leaf = ClientIdentity::LeafDevice("plc-7".to_owned());
        assert_eq!(
            reported_patch("gw", &ReportedTwin::Client(leaf.clone()), 7),
            "$iothub/plc-7/twin/PATCH/properties/reported/?$rid=7"
        );
        assert_eq!(
            method_response("gw", &module("sensor"), 200, "42"),
            "$iothub/gw/sensor/methods/res/200/?$rid=42"
        );
        assert_eq!(
            method_response("gw", &leaf, 504, "9"),
            "$iothub/plc-7/methods/res/504/?$rid=9"
        );
        let filters = subscriptions("gw", &["plc-7".to_owned()]);
        assert!(filters.contains(&"devices/plc-7/messages/devicebound/#".to_owned()));
        assert_eq!(filters.len(), 8);
    }
}
