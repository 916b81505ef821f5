//! The topics a module or a leaf device may use, typed: what it publishes
//! to, what it may subscribe to, and the topics the hub delivers on.
//!
//! A module may only use its own topics (`devices/{d}/modules/{m}/…` with
//! the identity it authenticated as), a leaf device only its own
//! (`devices/{leaf}/…`), and both the `$iothub/…` topics, which are per
//! connection. Everything else — another client's topics, a wildcard
//! anywhere but at the end of the four filters the SDKs subscribe to — is
//! refused, which is what keeps one client from reading another's messages.

/// The longest request id accepted in `?$rid=`; the SDKs send UUIDs or
/// small integers.
pub const MAXIMUM_REQUEST_ID_BYTES: usize = 128;

/// Whose topics a connection uses: a module's (`devices/{d}/modules/{m}/…`)
/// or a leaf device's (`devices/{leaf}/…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicOwner<'a> {
    /// A module of the device `device`.
    Module {
        /// The device the module runs on (the hub's).
        device: &'a str,
        /// The module.
        module: &'a str,
    },
    /// A leaf device connected through the hub.
    LeafDevice {
        /// The leaf device's id.
        device: &'a str,
    },
}

impl TopicOwner<'_> {
    /// The prefix of the owner's own topics, without a trailing slash.
    fn prefix(self) -> String {
        match self {
            Self::Module { device, module } => format!("devices/{device}/modules/{module}"),
            Self::LeafDevice { device } => format!("devices/{device}"),
        }
    }
}

/// A topic a module or leaf device publishes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishTopic<'a> {
    /// `devices/{d}/modules/{m}/messages/events/{props}` (a module: the
    /// output name is `$.on` in the property bag) or
    /// `devices/{leaf}/messages/events/{props}` (a leaf device).
    Telemetry {
        /// The URL-encoded property bag, maybe empty.
        properties: &'a str,
    },
    /// `$iothub/twin/GET/?$rid={rid}`
    TwinGet {
        /// The request id to answer with.
        rid: &'a str,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`
    TwinPatchReported {
        /// The request id to answer with.
        rid: &'a str,
    },
    /// `$iothub/methods/res/{status}/?$rid={rid}`
    MethodResponse {
        /// The status the module's handler returned.
        status: i32,
        /// The id of the request the hub sent.
        rid: &'a str,
    },
}

/// A subscription a module or leaf device may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subscription {
    /// A module's `devices/{d}/modules/{m}/inputs/#`, or a leaf device's
    /// cloud-to-device messages, `devices/{leaf}/messages/devicebound/#`:
    /// both deliver the client's queue.
    Inputs,
    /// `$iothub/twin/res/#`
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`
    DesiredPatches,
    /// `$iothub/methods/POST/#`
    MethodRequests,
}

/// Why a topic or filter was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not one of the client's own topics.
    #[error("topic {0:?} is not one this client may use")]
    NotAllowed(String),
    /// The `?$rid=` request id is missing or malformed.
    #[error("topic {0:?} has no valid $rid")]
    BadRequestId(String),
    /// The method response status is not a number.
    #[error("topic {0:?} has no valid status")]
    BadStatus(String),
}

impl Subscription {
    /// Every subscription, in a fixed order.
    pub const ALL: [Self; 4] = [
        Self::Inputs,
        Self::TwinResponses,
        Self::DesiredPatches,
        Self::MethodRequests,
    ];

    /// Reads a SUBSCRIBE filter of `owner`.
    pub fn parse(filter: &str, owner: TopicOwner<'_>) -> Result<Self, TopicError> {
        Self::ALL
            .into_iter()
            .find(|subscription| subscription.filter(owner) == filter)
            .ok_or_else(|| TopicError::NotAllowed(filter.to_owned()))
    }

    /// The filter, as the SDK sends it and as sessions store it.
    pub fn filter(self, owner: TopicOwner<'_>) -> String {
        match (self, owner) {
            (Self::Inputs, TopicOwner::Module { .. }) => format!("{}/inputs/#", owner.prefix()),
            (Self::Inputs, TopicOwner::LeafDevice { .. }) => {
                format!("{}/messages/devicebound/#", owner.prefix())
            }
            (Self::TwinResponses, _) => "$iothub/twin/res/#".to_owned(),
            (Self::DesiredPatches, _) => "$iothub/twin/PATCH/properties/desired/#".to_owned(),
            (Self::MethodRequests, _) => "$iothub/methods/POST/#".to_owned(),
        }
    }
}

impl<'a> PublishTopic<'a> {
    /// Reads the topic of a PUBLISH from `owner`.
    pub fn parse(topic: &'a str, owner: TopicOwner<'_>) -> Result<Self, TopicError> {
        let not_allowed = || TopicError::NotAllowed(topic.to_owned());
        if let Some(rest) = topic.strip_prefix("$iothub/") {
            if let Some(query) = rest.strip_prefix("twin/GET/?") {
                return Ok(Self::TwinGet {
                    rid: request_id(topic, query)?,
                });
            }
            if let Some(query) = rest.strip_prefix("twin/PATCH/properties/reported/?") {
                return Ok(Self::TwinPatchReported {
                    rid: request_id(topic, query)?,
                });
            }
            if let Some(rest) = rest.strip_prefix("methods/res/") {
                let (status, query) = rest.split_once("/?").ok_or_else(not_allowed)?;
                let status = status
                    .parse()
                    .map_err(|_| TopicError::BadStatus(topic.to_owned()))?;
                return Ok(Self::MethodResponse {
                    status,
                    rid: request_id(topic, query)?,
                });
            }
            return Err(not_allowed());
        }
        let rest = topic
            .strip_prefix(owner.prefix().as_str())
            .and_then(|rest| rest.strip_prefix("/messages/events"))
            .ok_or_else(not_allowed)?;
        // The C SDK ends the topic after `events/` when there are no
        // properties; some clients leave out the slash as well.
        let properties = match rest {
            "" => "",
            _ => rest.strip_prefix('/').ok_or_else(not_allowed)?,
        };
        if properties.contains(['/', '+', '#']) {
            return Err(not_allowed());
        }
        Ok(Self::Telemetry { properties })
    }
}

/// The `$rid` of a `k=v&k=v` query.
fn request_id<'a>(topic: &str, query: &'a str) -> Result<&'a str, TopicError> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("$rid="))
        .filter(|rid| {
            !rid.is_empty()
                && rid.len() <= MAXIMUM_REQUEST_ID_BYTES
                && rid
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
        })
        .ok_or_else(|| TopicError::BadRequestId(topic.to_owned()))
}

/// Where a message of the client's queue is delivered: a module's input
/// message on `devices/{d}/modules/{m}/inputs/{input}/{props}`, a leaf
/// device's cloud-to-device message on
/// `devices/{leaf}/messages/devicebound/{props}` (its queue has no inputs).
pub fn delivery_topic(owner: TopicOwner<'_>, input: &str, properties: &str) -> String {
    match owner {
        TopicOwner::Module { .. } => format!("{}/inputs/{input}/{properties}", owner.prefix()),
        TopicOwner::LeafDevice { .. } => {
            format!("{}/messages/devicebound/{properties}", owner.prefix())
        }
    }
}

/// Where the answer to a twin request goes; `version` is added on a 204 for
/// a reported patch.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<u64>) -> String {
    match version {
        Some(version) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={version}"),
        None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
    }
}

/// Where a desired-properties patch goes.
pub fn desired_patch_topic(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// Where a direct method request goes; the name is percent-encoded (the
/// SDKs decode it), so any name fits in one topic level.
pub fn method_request_topic(name: &str, rid: &str) -> String {
    let name = crate::properties::percent_encode(name);
    format!("$iothub/methods/POST/{name}/?$rid={rid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOD1: TopicOwner<'static> = TopicOwner::Module {
        device: "dev1",
        module: "mod1",
    };
    const LEAF1: TopicOwner<'static> = TopicOwner::LeafDevice { device: "leaf1" };

    #[test]
    fn reads_the_modules_own_topics() {
        assert_eq!(
            PublishTopic::parse(
                "devices/dev1/modules/mod1/messages/events/%24.on=out&a=1",
                MOD1
            ),
            Ok(PublishTopic::Telemetry {
                properties: "%24.on=out&a=1"
            })
        );
        for topic in [
            "devices/dev1/modules/mod1/messages/events/",
            "devices/dev1/modules/mod1/messages/events",
        ] {
            assert_eq!(
                PublishTopic::parse(topic, MOD1),
                Ok(PublishTopic::Telemetry { properties: "" })
            );
        }
        assert_eq!(
            PublishTopic::parse("$iothub/twin/GET/?$rid=42", MOD1),
            Ok(PublishTopic::TwinGet { rid: "42" })
        );
        assert_eq!(
            PublishTopic::parse("$iothub/twin/PATCH/properties/reported/?$rid=a-b&x=1", MOD1),
            Ok(PublishTopic::TwinPatchReported { rid: "a-b" })
        );
        assert_eq!(
            PublishTopic::parse("$iothub/methods/res/200/?$rid=7", MOD1),
            Ok(PublishTopic::MethodResponse {
                status: 200,
                rid: "7"
            })
        );
    }

    #[test]
    fn refuses_foreign_and_unknown_topics() {
        for topic in [
            "devices/dev1/modules/mod2/messages/events/",
            "devices/dev1/modules/mod10/messages/events/",
            "devices/dev2/modules/mod1/messages/events/",
            "devices/dev1/modules/mod1/inputs/in1/",
            "devices/dev1/modules/mod1/messages/eventsx",
            "devices/dev1/modules/mod1/messages/events/a=1/b",
            "devices/dev1/messages/events/",
            "$iothub/twin/PATCH/properties/desired/?$rid=1",
            "$iothub/methods/POST/m/?$rid=1",
            "other",
            "",
        ] {
            assert!(
                matches!(
                    PublishTopic::parse(topic, MOD1),
                    Err(TopicError::NotAllowed(_))
                ),
                "{topic}"
            );
        }
        for topic in [
            "$iothub/twin/GET/?",
            "$iothub/twin/GET/?$rid=",
            "$iothub/twin/GET/?$rid=a/b",
        ] {
            assert!(matches!(
                PublishTopic::parse(topic, MOD1),
                Err(TopicError::BadRequestId(_))
            ));
        }
        assert!(matches!(
            PublishTopic::parse("$iothub/methods/res/ok/?$rid=1", MOD1),
            Err(TopicError::BadStatus(_))
        ));
    }

    #[test]
    fn subscriptions_are_the_four_the_sdks_use() {
        for subscription in Subscription::ALL {
            assert_eq!(
                Subscription::parse(&subscription.filter(MOD1), MOD1),
                Ok(subscription)
            );
        }
        for filter in [
            "devices/dev1/modules/mod2/inputs/#",
            "devices/dev1/modules/+/inputs/#",
            "devices/#",
            "#",
            "$iothub/#",
            "devices/dev1/modules/mod1/inputs/in1",
        ] {
            assert!(Subscription::parse(filter, MOD1).is_err(), "{filter}");
        }
    }

    #[test]
    fn a_leaf_device_uses_its_own_device_topics_and_no_module_topics() {
        for topic in [
            "devices/leaf1/messages/events/",
            "devices/leaf1/messages/events",
        ] {
            assert_eq!(
                PublishTopic::parse(topic, LEAF1),
                Ok(PublishTopic::Telemetry { properties: "" })
            );
        }
        assert_eq!(
            PublishTopic::parse("$iothub/twin/GET/?$rid=1", LEAF1),
            Ok(PublishTopic::TwinGet { rid: "1" })
        );
        for topic in [
            "devices/leaf2/messages/events/",
            "devices/leaf10/messages/events/",
            "devices/leaf1/modules/mod1/messages/events/",
            "devices/leaf1/messages/devicebound/",
            "devices/dev1/modules/mod1/messages/events/",
        ] {
            assert!(
                matches!(
                    PublishTopic::parse(topic, LEAF1),
                    Err(TopicError::NotAllowed(_))
                ),
                "{topic}"
            );
        }
        assert_eq!(
            Subscription::parse("devices/leaf1/messages/devicebound/#", LEAF1),
            Ok(Subscription::Inputs)
        );
        for filter in [
            "devices/leaf2/messages/devicebound/#",
            "devices/leaf1/modules/mod1/inputs/#",
            "devices/+/messages/devicebound/#",
        ] {
            assert!(Subscription::parse(filter, LEAF1).is_err(), "{filter}");
        }
    }

    #[test]
    fn delivery_topics() {
        assert_eq!(
            delivery_topic(
                TopicOwner::Module {
                    device: "d",
                    module: "m"
                },
                "in1",
                "a=1"
            ),
            "devices/d/modules/m/inputs/in1/a=1"
        );
        assert_eq!(
            delivery_topic(LEAF1, "", "%24.mid=1"),
            "devices/leaf1/messages/devicebound/%24.mid=1"
        );
        assert_eq!(
            twin_response_topic(204, "9", Some(3)),
            "$iothub/twin/res/204/?$rid=9&$version=3"
        );
        assert_eq!(
            twin_response_topic(200, "9", None),
            "$iothub/twin/res/200/?$rid=9"
        );
        assert_eq!(
            desired_patch_topic(4),
            "$iothub/twin/PATCH/properties/desired/?$version=4"
        );
        assert_eq!(
            method_request_topic("reset", "1"),
            "$iothub/methods/POST/reset/?$rid=1"
        );
        assert_eq!(
            method_request_topic("a/b #1", "2"),
            "$iothub/methods/POST/a%2Fb%20%231/?$rid=2"
        );
    }
}
