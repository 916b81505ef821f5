//! A borrowed JSON tree for message bodies.
//!
//! Bodies are parsed once per message and then queried by many routes. Objects are kept as
//! vectors of pairs, which for the small objects of telemetry is faster to search than a hash map
//! and keeps the hub's duplicate-key rule (the last value wins) by searching from the end. Strings
//! without escapes borrow from the body bytes, so parsing allocates little beyond the vectors.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value of a parsed body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonNode<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(Cow<'a, str>),
    Array(Vec<JsonNode<'a>>),
    Object(Vec<(Cow<'a, str>, JsonNode<'a>)>),
}

impl JsonNode<'_> {
    /// Detaches the tree from the text it was parsed from.
    pub(crate) fn into_owned(self) -> JsonNode<'static> {
        match self {
            Self::Null => JsonNode::Null,
            Self::Bool(value) => JsonNode::Bool(value),
            Self::Number(value) => JsonNode::Number(value),
            Self::String(text) => JsonNode::String(Cow::Owned(text.into_owned())),
            Self::Array(items) => {
                JsonNode::Array(items.into_iter().map(Self::into_owned).collect())
            }
            Self::Object(members) => JsonNode::Object(
                members
                    .into_iter()
                    .map(|(name, value)| (Cow::Owned(name.into_owned()), value.into_owned()))
                    .collect(),
            ),
        }
    }

    /// Returns the member `name` of an object, the last one if the name repeats.
    pub(crate) fn member(&self, name: &str) -> Option<&Self> {
        match self {
            Self::Object(members) => members
                .iter()
                .rev()
                .find(|(member, _)| names_equal(member, name))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// Returns the element `index` of an array.
    pub(crate) fn element(&self, index: usize) -> Option<&Self> {
        match self {
            Self::Array(items) => items.get(index),
            _ => None,
        }
    }
}

/// Compares names by length and first byte before the full comparison, because most members
/// differ in one of those and a library `memcmp` call costs more than the short names it compares.
pub(crate) fn names_equal(left: &str, right: &str) -> bool {
    let (left, right) = (left.as_bytes(), right.as_bytes());
    left.len() == right.len() && left.first() == right.first() && left == right
}

impl<'de> Deserialize<'de> for JsonNode<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonNodeVisitor)
    }
}

struct JsonNodeVisitor;

impl<'de> Visitor<'de> for JsonNodeVisitor {
    type Value = JsonNode<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(JsonNode::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(JsonNode::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(JsonNode::Number(value as f64))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(JsonNode::Number(value as f64))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(JsonNode::Number(value))
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(JsonNode::String(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(JsonNode::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(JsonNode::String(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0));
        while let Some(item) = access.next_element()? {
            items.push(item);
        }
        Ok(JsonNode::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(access.size_hint().unwrap_or(0));
        while let Some(name) = access.next_key::<MemberName<'de>>()? {
            members.push((name.0, access.next_value()?));
        }
        Ok(JsonNode::Object(members))
    }
}

/// An object member name that borrows from the input when it has no escapes.
struct MemberName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match JsonNodeVisitor.visit_string_key(deserializer)? {
            JsonNode::String(text) => Ok(MemberName(text)),
            _ => Err(de::Error::custom("object keys are strings")),
        }
    }
}

impl JsonNodeVisitor {
    fn visit_string_key<'de, D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<JsonNode<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}
