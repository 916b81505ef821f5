//! The topics of the upstream connection.
//!
//! The gateway keeps one MQTT connection, as the device. IoT Hub's own
//! topics (`$iothub/twin/…`, `$iothub/methods/…`) carry the device's twin,
//! where edged reports the runtime's state. IoT Hub gives a module's twin
//! and methods only to a connection of that module, so for the modules
//! behind the gateway the connection uses the identity-qualified form that
//! nested IoT Edge gateways use towards their parent: the same topics with
//! `{device}/{module}/` after `$iothub/`. A broker standing in for the
//! cloud carries them as they are; the cloud side publishes a module's
//! desired patch to `$iothub/{device}/{module}/twin/PATCH/properties/desired/?$version=N`
//! and calls its method on `$iothub/{device}/{module}/methods/POST/{name}/?$rid=R`.

use percent_encoding::percent_decode_str;

/// What a publish from the cloud is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloudTopic<'a> {
    /// A desired-properties patch for a module.
    ModuleDesired { module: &'a str },
    /// A direct method call to a module.
    ModuleMethod {
        module: &'a str,
        name: String,
        rid: &'a str,
    },
    /// The cloud's answer to a reported patch (or another twin request):
    /// logged when it is not a success.
    TwinResponse { status: &'a str },
}

/// The subscriptions the connection makes.
pub(crate) fn subscriptions(device: &str) -> Vec<String> {
    vec![
        format!("$iothub/{device}/+/twin/PATCH/properties/desired/#"),
        format!("$iothub/{device}/+/methods/POST/#"),
        format!("$iothub/{device}/+/twin/res/#"),
        "$iothub/twin/res/#".to_owned(),
    ]
}

/// Where telemetry goes, with its property bag.
pub(crate) fn telemetry(device: &str, properties: &str) -> String {
    format!("devices/{device}/messages/events/{properties}")
}

/// Where a reported patch of the device (`module` `None`) or of a module
/// goes.
pub(crate) fn reported_patch(device: &str, module: Option<&str>, rid: u64) -> String {
    match module {
        None => format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
        Some(module) => {
            format!("$iothub/{device}/{module}/twin/PATCH/properties/reported/?$rid={rid}")
        }
    }
}

/// Where a module's answer to a method call goes.
pub(crate) fn method_response(device: &str, module: &str, status: i32, rid: &str) -> String {
    format!("$iothub/{device}/{module}/methods/res/{status}/?$rid={rid}")
}

/// Reads a topic the cloud published to; `None` for one the connection has
/// no use for.
pub(crate) fn parse<'a>(topic: &'a str, device: &str) -> Option<CloudTopic<'a>> {
    let rest = topic.strip_prefix("$iothub/")?;
    if let Some(status) = rest.strip_prefix("twin/res/") {
        return Some(CloudTopic::TwinResponse {
            status: status.split('/').next()?,
        });
    }
    let rest = rest.strip_prefix(device)?.strip_prefix('/')?;
    let (module, rest) = rest.split_once('/')?;
    if module.is_empty() {
        return None;
    }
    if let Some(query) = rest.strip_prefix("twin/PATCH/properties/desired/") {
        return (query.is_empty() || query.starts_with('?'))
            .then_some(CloudTopic::ModuleDesired { module });
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
    Some(CloudTopic::ModuleMethod { module, name, rid })
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

    #[test]
    fn reads_the_cloud_topics_of_the_gateways_modules() {
        let cases = [
            (
                "$iothub/gw/sensor/twin/PATCH/properties/desired/?$version=7",
                Some(CloudTopic::ModuleDesired { module: "sensor" }),
            ),
            (
                "$iothub/gw/sensor/methods/POST/reset%20now/?$rid=42",
                Some(CloudTopic::ModuleMethod {
                    module: "sensor",
                    name: "reset now".to_owned(),
                    rid: "42",
                }),
            ),
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
            ("$iothub/gw", None),
        ];
        for (topic, expected) in cases {
            assert_eq!(parse(topic, "gw"), expected, "{topic}");
        }
    }

    #[test]
    fn writes_the_topics_the_cloud_reads() {
        assert_eq!(
            telemetry("gw", "%24.cdid=gw&%24.cmid=sensor"),
            "devices/gw/messages/events/%24.cdid=gw&%24.cmid=sensor"
        );
        assert_eq!(
            reported_patch("gw", None, 5),
            "$iothub/twin/PATCH/properties/reported/?$rid=5"
        );
        assert_eq!(
            reported_patch("gw", Some("sensor"), 6),
            "$iothub/gw/sensor/twin/PATCH/properties/reported/?$rid=6"
        );
        assert_eq!(
            method_response("gw", "sensor", 200, "42"),
            "$iothub/gw/sensor/methods/res/200/?$rid=42"
        );
        assert!(
            subscriptions("gw")
                .iter()
                .all(|filter| filter.starts_with("$iothub/"))
        );
    }
}
