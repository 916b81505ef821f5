//! Messages as the router sees them, and the per-message evaluation context.

use std::cell::OnceCell;

use crate::json_document::{JsonNode, names_equal};

/// Bodies larger than this are not parsed, so `$body` is undefined for them; IoT Hub messages are
/// limited to 256 KiB, so larger ones are not legitimate telemetry.
pub const MAXIMUM_QUERYABLE_BODY_BYTES: usize = 256 * 1024;

/// A message to route: its source path, properties and body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The source path, such as `/messages/modules/filter/outputs/alerts`.
    pub source: String,
    application_properties: Vec<Property>,
    system_properties: Vec<Property>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// A property with its name lowered once, so lookups are plain byte comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Property {
    lowered_name: Box<str>,
    value: Option<String>,
}

impl Message {
    /// Creates a message from `source` with no properties and an empty body.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Self::default()
        }
    }

    /// Sets an application property; `None` is a property whose value is null.
    pub fn set_application_property(&mut self, name: &str, value: Option<String>) {
        set_property(&mut self.application_properties, name, value);
    }

    /// Sets a system property such as `contentType`; `None` is a null value.
    pub fn set_system_property(&mut self, name: &str, value: Option<String>) {
        set_property(&mut self.system_properties, name, value);
    }

    /// Replaces the body.
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = body;
    }

    /// Looks up an application property by a name already lowered by [`lower_property_name`];
    /// the outer `None` means the property is missing.
    pub(crate) fn application_property(&self, lowered_name: &str) -> Option<Option<&str>> {
        find_property(&self.application_properties, lowered_name)
    }

    /// Looks up a system property by a name already lowered by [`lower_property_name`].
    pub(crate) fn system_property(&self, lowered_name: &str) -> Option<Option<&str>> {
        find_property(&self.system_properties, lowered_name)
    }

    /// Tells whether the body is declared as JSON text in an encoding the hub can query.
    fn body_is_queryable_json(&self) -> Option<BodyEncoding> {
        let content_type = self.system_property("contenttype")??;
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return None;
        }
        let encoding = self.system_property("contentencoding")??.trim();
        [
            ("utf-8", BodyEncoding::Utf8),
            ("utf8", BodyEncoding::Utf8),
            ("utf-16", BodyEncoding::Utf16),
            ("utf-32", BodyEncoding::Utf32),
        ]
        .into_iter()
        .find(|(name, _)| encoding.eq_ignore_ascii_case(name))
        .map(|(_, body_encoding)| body_encoding)
    }

    /// Parses the body as a JSON object, or `None` when it is not queryable, too large or invalid.
    fn parse_body(&self) -> Option<JsonNode<'_>> {
        let encoding = self.body_is_queryable_json()?;
        if self.body.len() > MAXIMUM_QUERYABLE_BODY_BYTES {
            return None;
        }
        let document = match encoding {
            BodyEncoding::Utf8 => {
                let bytes = self
                    .body
                    .strip_prefix(b"\xEF\xBB\xBF")
                    .unwrap_or(&self.body);
                serde_json::from_slice::<JsonNode<'_>>(bytes).ok()?
            }
            BodyEncoding::Utf16 | BodyEncoding::Utf32 => {
                let text = decode_wide(&self.body, encoding)?;
                serde_json::from_str::<JsonNode<'_>>(&text)
                    .ok()?
                    .into_owned()
            }
        };
        matches!(document, JsonNode::Object(_)).then_some(document)
    }
}

/// Lowers a property name the way lookups expect; compiled conditions store names lowered.
pub(crate) fn lower_property_name(name: &str) -> Box<str> {
    name.to_lowercase().into_boxed_str()
}

fn set_property(properties: &mut Vec<Property>, name: &str, value: Option<String>) {
    let lowered_name = lower_property_name(name);
    match properties
        .iter_mut()
        .find(|property| property.lowered_name == lowered_name)
    {
        Some(property) => property.value = value,
        None => properties.push(Property {
            lowered_name,
            value,
        }),
    }
}

fn find_property<'m>(properties: &'m [Property], lowered_name: &str) -> Option<Option<&'m str>> {
    properties
        .iter()
        .find(|property| names_equal(&property.lowered_name, lowered_name))
        .map(|property| property.value.as_deref())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEncoding {
    Utf8,
    Utf16,
    Utf32,
}

/// Decodes little-endian UTF-16 or UTF-32 (big-endian when a byte order mark says so).
fn decode_wide(bytes: &[u8], encoding: BodyEncoding) -> Option<String> {
    match encoding {
        BodyEncoding::Utf16 => {
            let big_endian = bytes.starts_with(&[0xFE, 0xFF]);
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|pair| {
                    let pair = [pair[0], pair[1]];
                    if big_endian {
                        u16::from_be_bytes(pair)
                    } else {
                        u16::from_le_bytes(pair)
                    }
                })
                .collect();
            let text = String::from_utf16(&units).ok()?;
            Some(text.trim_start_matches('\u{feff}').to_owned())
        }
        BodyEncoding::Utf32 => {
            let text: Option<String> = bytes
                .chunks_exact(4)
                .map(|quad| {
                    char::from_u32(u32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]))
                })
                .collect();
            Some(text?.trim_start_matches('\u{feff}').to_owned())
        }
        BodyEncoding::Utf8 => None,
    }
}

/// A message being routed, with its body parsed at most once however many routes query it.
pub struct MessageContext<'m> {
    message: &'m Message,
    body: OnceCell<Option<JsonNode<'m>>>,
}

impl<'m> MessageContext<'m> {
    /// Wraps a message; nothing is parsed until a condition reads the body.
    pub fn new(message: &'m Message) -> Self {
        Self {
            message,
            body: OnceCell::new(),
        }
    }

    /// The message being routed.
    pub fn message(&self) -> &'m Message {
        self.message
    }

    /// The parsed body, or `None` when `$body` is undefined for this message.
    pub(crate) fn body(&self) -> Option<&JsonNode<'m>> {
        self.body.get_or_init(|| self.message.parse_body()).as_ref()
    }
}
