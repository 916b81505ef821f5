//! Typed reads of manifest fields, each failure naming the field by its path in the manifest.

use serde_json::{Map, Value as Json};

use super::error::{ImportError, Note};
use super::text::Context;

/// The object at `key` of `object`, or `None` when absent; `at` is the path of `object`.
pub fn optional_object<'a>(
    object: &'a Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<Option<&'a Map<String, Json>>, ImportError> {
    match object.get(key) {
        None => Ok(None),
        Some(Json::Object(found)) => Ok(Some(found)),
        Some(_) => Err(malformed(at, key, "an object")),
    }
}

pub fn required_object<'a>(
    object: &'a Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<&'a Map<String, Json>, ImportError> {
    optional_object(object, key, at)?.ok_or_else(|| malformed(at, key, "an object"))
}

pub fn optional_string<'a>(
    object: &'a Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, ImportError> {
    match object.get(key) {
        None => Ok(None),
        Some(Json::String(text)) => Ok(Some(text)),
        Some(_) => Err(malformed(at, key, "a string")),
    }
}

pub fn required_string<'a>(
    object: &'a Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<&'a str, ImportError> {
    optional_string(object, key, at)?.ok_or_else(|| malformed(at, key, "a string"))
}

/// A string that must be one of `allowed`; `expected` describes them for the error.
pub fn optional_keyword<'a>(
    object: &'a Map<String, Json>,
    key: &str,
    at: &str,
    allowed: &[&str],
    expected: &'static str,
) -> Result<Option<&'a str>, ImportError> {
    match optional_string(object, key, at) {
        Ok(Some(found)) if allowed.contains(&found) => Ok(Some(found)),
        Ok(None) => Ok(None),
        _ => Err(malformed(at, key, expected)),
    }
}

/// A whole number in `low..=high`; `expected` describes the range for the error.
pub fn optional_integer(
    object: &Map<String, Json>,
    key: &str,
    at: &str,
    (low, high): (u64, u64),
    expected: &'static str,
) -> Result<Option<u64>, ImportError> {
    match object.get(key) {
        None => Ok(None),
        Some(found) => found
            .as_u64()
            .filter(|number| (low..=high).contains(number))
            .map(Some)
            .ok_or_else(|| malformed(at, key, expected)),
    }
}

pub fn malformed(at: &str, key: &str, expected: &'static str) -> ImportError {
    ImportError::Malformed {
        at: path(at, key),
        expected,
    }
}

/// `at.key`, the way manifest paths are usually written (`properties.desired` is one key).
pub fn path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// Notes every key of `object` that is not in `known`.
pub fn note_unknown_keys(
    object: &Map<String, Json>,
    known: &[&str],
    at: &str,
    context: &mut Context,
) {
    for key in object.keys().filter(|key| !known.contains(&key.as_str())) {
        context.notes.push(Note::DroppedKey { at: path(at, key) });
    }
}
