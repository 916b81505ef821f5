//! The MQTT property bag: the URL-encoded `k=v&k=v` list at the end of a
//! telemetry or input topic, turned into a [`HubMessage`]'s properties and
//! back.
//!
//! Decisions, so that every sender is treated alike:
//! - Keys and values are percent-decoded strictly: a `%` not followed by two
//!   hex digits, or bytes that are not UTF-8 after decoding, refuse the whole
//!   bag. `+` stays a `+` (the Python SDK encodes with `quote`, never `+`).
//! - Keys starting `$.` that name a [`SystemProperty`] are system properties;
//!   other `$.` keys (`$.schema`, `$.ifid`, `$.sub`, … which IoT Hub knows but
//!   routes cannot read here) are dropped, so a route condition never sees a
//!   `$.`-named application property.
//! - An application property given twice refuses the bag: the Python SDK
//!   raises on duplicate custom properties itself, so a repeat is a broken
//!   sender, and neither copy is more right than the other. A system
//!   property given twice keeps its first value: the Python SDK puts
//!   `$.`-keys it does not know from a received message (`$.on`, `$.cdid`,
//!   `$.cmid`) into its custom properties, so a module that forwards a
//!   message with them (the usual filter: copy `custom_properties`) sends
//!   `$.on` twice — the SDK's own first, then the copied one, which must not
//!   win (found by `runtime/edged/tests/hub_sdk.rs`).
//! - A segment without `=` is skipped, as the Python SDK does when it reads
//!   one; empty segments (`a=1&&b=2`, a trailing `&`) are skipped too. An
//!   empty key is refused.
//! - Encoding writes system properties first (in [`SystemProperty::ALL`]
//!   order), then application properties in their order, each key and value
//!   percent-encoded except for `A-Z a-z 0-9 - . _ ~`. The SDK reads the
//!   pairs in any order.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::message::{HubMessage, SystemProperty};

/// The longest encoded property bag accepted: the 8 KiB the hub allows for a
/// topic beyond the 256 KiB message.
pub const MAXIMUM_BAG_BYTES: usize = 8 * 1024;

/// The most properties (system and application) in one bag.
pub const MAXIMUM_PROPERTIES: usize = 128;

/// What is encoded: everything but RFC 3986's unreserved characters, so `&`,
/// `=`, `%`, `/`, `+`, `#` and `$` never appear raw in a topic.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a property bag was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// Longer than [`MAXIMUM_BAG_BYTES`].
    #[error("the property bag is {0} bytes long; at most {MAXIMUM_BAG_BYTES} are accepted")]
    TooLong(usize),
    /// More than [`MAXIMUM_PROPERTIES`] pairs.
    #[error("the property bag has more than {MAXIMUM_PROPERTIES} properties")]
    TooMany,
    /// A `%` not followed by two hex digits.
    #[error("the property bag has an invalid percent-escape in {0:?}")]
    BadEscape(String),
    /// Decoded bytes that are not UTF-8.
    #[error("a property in the bag is not UTF-8 after percent-decoding: {0:?}")]
    NotUtf8(String),
    /// A pair with an empty key.
    #[error("the property bag has a property with an empty name")]
    EmptyKey,
    /// The same key twice.
    #[error("the property bag names {0:?} twice")]
    Duplicate(String),
}

/// Reads `bag` into `message`'s system and application properties, which
/// are replaced.
pub fn decode_into(bag: &str, message: &mut HubMessage) -> Result<(), PropertyError> {
    if bag.len() > MAXIMUM_BAG_BYTES {
        return Err(PropertyError::TooLong(bag.len()));
    }
    message.system_properties.clear();
    message.application_properties.clear();
    let mut count = 0;
    for segment in bag.split('&') {
        let Some((key, value)) = segment.split_once('=') else {
            // An empty segment or a bare key: skipped, as the SDK does.
            continue;
        };
        count += 1;
        if count > MAXIMUM_PROPERTIES {
            return Err(PropertyError::TooMany);
        }
        let key = decode(key)?;
        let value = decode(value)?;
        if key.is_empty() {
            return Err(PropertyError::EmptyKey);
        }
        if key.starts_with("$.") {
            let Some(property) = SystemProperty::from_mqtt_key(&key) else {
                continue;
            };
            message.system_properties.entry(property).or_insert(value);
        } else {
            if message
                .application_properties
                .iter()
                .any(|(name, _)| *name == key)
            {
                return Err(PropertyError::Duplicate(key));
            }
            message.application_properties.push((key, value));
        }
    }
    Ok(())
}

/// The property bag of `message`: system properties, then application
/// properties.
pub fn encode(message: &HubMessage) -> String {
    let system = message
        .system_properties
        .iter()
        .map(|(property, value)| (property.mqtt_key(), value.as_str()));
    let application = message
        .application_properties
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()));
    let mut bag = String::new();
    for (key, value) in system.chain(application) {
        if !bag.is_empty() {
            bag.push('&');
        }
        bag.extend(utf8_percent_encode(key, ENCODED));
        bag.push('=');
        bag.extend(utf8_percent_encode(value, ENCODED));
    }
    bag
}

/// Percent-encodes `text` for a topic, as the property bag's keys and
/// values are.
pub fn percent_encode(text: &str) -> String {
    utf8_percent_encode(text, ENCODED).to_string()
}

/// Percent-decodes `text` strictly.
fn decode(text: &str) -> Result<String, PropertyError> {
    let bytes = text.as_bytes();
    for (index, byte) in bytes.iter().enumerate() {
        if *byte == b'%' {
            let escape = bytes.get(index + 1..index + 3);
            if !escape.is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) {
                return Err(PropertyError::BadEscape(text.to_owned()));
            }
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| PropertyError::NotUtf8(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decoded(bag: &str) -> Result<HubMessage, PropertyError> {
        let mut message = HubMessage::default();
        decode_into(bag, &mut message).map(|()| message)
    }

    #[test]
    fn reads_what_the_python_sdk_sends() {
        let message = decoded(
            "%24.on=temperatureOutput&%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=hi%20there",
        )
        .expect("a valid bag");
        assert_eq!(
            message.system_properties.get(&SystemProperty::OutputName),
            Some(&"temperatureOutput".to_owned())
        );
        assert_eq!(
            message.system_properties.get(&SystemProperty::ContentType),
            Some(&"application/json".to_owned())
        );
        assert_eq!(
            message.application_properties,
            vec![("alert".to_owned(), "hi there".to_owned())]
        );
    }

    #[test]
    fn plus_is_not_a_space_and_unknown_system_keys_are_dropped() {
        let message = decoded("a=1+2&$.schema=x&$.ct=text&&b&c=").expect("a valid bag");
        assert_eq!(
            message.application_properties,
            vec![
                ("a".to_owned(), "1+2".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
        assert_eq!(message.system_properties.len(), 1);
    }

    #[test]
    fn refuses_bad_bags() {
        assert!(matches!(decoded("a=%2"), Err(PropertyError::BadEscape(_))));
        assert!(matches!(decoded("a=%zz"), Err(PropertyError::BadEscape(_))));
        assert!(matches!(decoded("a=%ff"), Err(PropertyError::NotUtf8(_))));
        assert!(matches!(decoded("=1"), Err(PropertyError::EmptyKey)));
        assert!(matches!(
            decoded("a=1&a=2"),
            Err(PropertyError::Duplicate(_))
        ));
        // The first of a repeated system property is kept (the SDK's own,
        // before a copy among the custom properties).
        let repeated = decoded("$.on=out&$.ct=a&%24.on=copied&$.cdid=d").unwrap();
        assert_eq!(
            repeated.system_properties.get(&SystemProperty::OutputName),
            Some(&"out".to_owned())
        );
        let many = (0..=MAXIMUM_PROPERTIES)
            .map(|index| format!("k{index}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(decoded(&many), Err(PropertyError::TooMany));
        let long = format!("a={}", "x".repeat(MAXIMUM_BAG_BYTES));
        assert!(matches!(decoded(&long), Err(PropertyError::TooLong(_))));
    }

    #[test]
    fn encodes_reserved_characters() {
        let mut message = HubMessage::default();
        message
            .system_properties
            .insert(SystemProperty::ContentType, "application/json".to_owned());
        message
            .application_properties
            .push(("a&b=c".to_owned(), "1+1 %/é".to_owned()));
        assert_eq!(
            encode(&message),
            "%24.ct=application%2Fjson&a%26b%3Dc=1%2B1%20%25%2F%C3%A9"
        );
    }

    fn message_strategy() -> impl Strategy<Value = HubMessage> {
        let system = proptest::collection::btree_map(
            proptest::sample::select(SystemProperty::ALL.to_vec()),
            any::<String>(),
            0..5,
        );
        let application =
            proptest::collection::btree_map("[^$].*|\\$[^.].*", any::<String>(), 0..8);
        (system, application).prop_map(|(system_properties, application)| HubMessage {
            system_properties,
            application_properties: application.into_iter().collect(),
            body: Vec::new(),
        })
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bag in any::<String>()) {
            let _ = decoded(&bag);
        }

        #[test]
        fn decoding_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decoded(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn decode_reads_what_encode_writes(message in message_strategy()) {
            let bag = encode(&message);
            prop_assume!(bag.len() <= MAXIMUM_BAG_BYTES);
            prop_assert_eq!(decoded(&bag), Ok(message));
        }
    }
}
