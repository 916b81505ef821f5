//! Module twins: desired properties from the deployment and from the cloud,
//! reported properties from the module, each with its own `$version`, and
//! the limits IoT Hub puts on a reported patch.
//!
//! The desired properties a module sees are two layers: the deployment's
//! (replaced by each deployment) with the patches that came from the cloud
//! merged over them. The cloud's layer is kept as one composed merge patch,
//! nulls included, so that a cloud patch that deletes a key of the
//! deployment keeps it deleted across later deployments and restarts.
//!
//! A reported patch is a JSON merge patch (RFC 7396): a `null` deletes the
//! key, an object merges into the object already there, anything else
//! replaces. The limits follow IoT Hub's: the patch is at most 32 KB, at most
//! 10 levels deep, keys are non-empty, at most 1 KB and contain no `.`, `$`,
//! space or control character, and string values are at most 4 KB.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest reported patch, and the largest reported document, in bytes.
pub const MAXIMUM_PATCH_BYTES: usize = 32 * 1024;
/// How deeply objects may nest in a patch (the top-level keys are level 1).
pub const MAXIMUM_DEPTH: usize = 10;
/// The longest key, in bytes.
pub const MAXIMUM_KEY_BYTES: usize = 1024;
/// The longest string value, in bytes.
pub const MAXIMUM_STRING_BYTES: usize = 4 * 1024;

/// The key that carries a section's version in the JSON a module sees.
pub const VERSION_KEY: &str = "$version";

/// Why a twin operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwinError {
    /// The patch breaks a twin rule; the module gets status 400 with this
    /// message, which names the rule and the key path.
    #[error("invalid reported properties patch: {0}")]
    Invalid(String),
    /// The module is not part of the deployment.
    #[error("module {0} is not part of the deployment; deploy it before using its twin")]
    UnknownModule(String),
    /// The store failed; the patch was not applied and may be sent again.
    #[error("the twin could not be stored: {0}")]
    Store(String),
}

/// A module's twin as the module reads it: both sections carry `$version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Twin {
    /// Desired properties (from the deployment), with `$version`.
    pub desired: Value,
    /// Reported properties (from the module), with `$version`.
    pub reported: Value,
}

/// A change of the desired properties, sent to the connected module.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPatch {
    /// The new desired `$version`.
    pub version: u64,
    /// The merge patch from the old to the new desired properties, with
    /// `$version` in it as IoT Hub sends it.
    pub patch: Value,
}

/// A twin as the store keeps it: each section without `$version`, the
/// versions beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TwinRecord {
    /// What the module sees: the deployment's layer with the cloud's merged
    /// over it.
    pub desired: Map<String, Value>,
    pub desired_version: u64,
    pub reported: Map<String, Value>,
    pub reported_version: u64,
    /// The deployment's desired properties; `None` in a record written
    /// before cloud patches existed, whose `desired` is the deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_desired: Option<Map<String, Value>>,
    /// Every desired patch from the cloud, composed into one merge patch.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub cloud_desired: Map<String, Value>,
}

impl Default for TwinRecord {
    fn default() -> Self {
        // IoT Hub starts both versions at 1 for a new twin.
        Self {
            desired: Map::new(),
            desired_version: 1,
            reported: Map::new(),
            reported_version: 1,
            deployment_desired: None,
            cloud_desired: Map::new(),
        }
    }
}

impl TwinRecord {
    /// The twin the module sees.
    pub fn to_twin(&self) -> Twin {
        Twin {
            desired: with_version(&self.desired, self.desired_version),
            reported: with_version(&self.reported, self.reported_version),
        }
    }

    /// Replaces the deployment's desired properties; returns the patch to
    /// send when what the module sees changed, with the version incremented.
    pub fn set_desired(&mut self, desired: Map<String, Value>) -> Option<DesiredPatch> {
        self.deployment_desired = Some(desired);
        self.update_desired()
    }

    /// Applies a desired patch from the cloud (`$version` is IoT Hub's and
    /// is dropped: the module sees the hub's own, which counts every change
    /// of either layer); returns the patch to send when what the module
    /// sees changed.
    /// A patch that would make the cloud's layer or the desired properties
    /// larger than a twin may be is refused, and nothing changes.
    pub fn patch_desired_from_cloud(
        &mut self,
        patch: &Map<String, Value>,
    ) -> Result<Option<DesiredPatch>, TwinError> {
        let mut next = self.clone();
        if next.deployment_desired.is_none() {
            next.deployment_desired = Some(next.desired.clone());
        }
        let mut patch = patch.clone();
        patch.remove(VERSION_KEY);
        compose(&mut next.cloud_desired, &patch);
        let change = next.update_desired();
        for (what, section) in [
            ("cloud's layer of the", &next.cloud_desired),
            ("", &next.desired),
        ] {
            let size = serde_json::to_vec(section).map_or(usize::MAX, |bytes| bytes.len());
            if size > MAXIMUM_PATCH_BYTES {
                return Err(TwinError::Invalid(format!(
                    "the {what}desired properties would be {size} bytes, over the limit of {MAXIMUM_PATCH_BYTES}"
                )));
            }
        }
        *self = next;
        Ok(change)
    }

    /// Recomputes what the module sees from the two layers.
    fn update_desired(&mut self) -> Option<DesiredPatch> {
        let mut desired = self
            .deployment_desired
            .clone()
            .unwrap_or_else(|| self.desired.clone());
        merge(&mut desired, &self.cloud_desired);
        if desired == self.desired {
            return None;
        }
        let patch = diff(&self.desired, &desired);
        self.desired = desired;
        self.desired_version += 1;
        Some(DesiredPatch {
            version: self.desired_version,
            patch: with_version(&patch, self.desired_version),
        })
    }

    /// Applies a validated reported patch; returns the new reported version.
    pub fn patch_reported(&mut self, patch: &Map<String, Value>) -> Result<u64, TwinError> {
        let mut reported = self.reported.clone();
        merge(&mut reported, patch);
        let size = serde_json::to_vec(&reported).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAXIMUM_PATCH_BYTES {
            return Err(TwinError::Invalid(format!(
                "the reported properties would be {size} bytes, over the limit of {MAXIMUM_PATCH_BYTES}; delete keys (set them to null) first"
            )));
        }
        self.reported = reported;
        self.reported_version += 1;
        Ok(self.reported_version)
    }
}

/// `section` with `$version` added.
pub(crate) fn with_version(section: &Map<String, Value>, version: u64) -> Value {
    let mut object = section.clone();
    object.insert(VERSION_KEY.to_owned(), Value::from(version));
    Value::Object(object)
}

/// Checks a desired patch from the cloud against the same limits, without
/// the `$version` IoT Hub puts in it; returns it without that key. A cloud
/// is trusted with a module's configuration, not with the hub's memory.
pub fn validate_desired_patch(patch: &Map<String, Value>) -> Result<Map<String, Value>, TwinError> {
    let mut patch = patch.clone();
    patch.remove(VERSION_KEY);
    let patch = Value::Object(patch);
    validate_reported_patch(&patch)?;
    match patch {
        Value::Object(patch) => Ok(patch),
        _ => unreachable!("built as an object above"),
    }
}

/// Checks a reported patch against the twin limits; returns it as an
/// object.
pub fn validate_reported_patch(patch: &Value) -> Result<&Map<String, Value>, TwinError> {
    let Value::Object(object) = patch else {
        return Err(TwinError::Invalid(
            "the patch must be a JSON object of properties".to_owned(),
        ));
    };
    let size = serde_json::to_vec(patch).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAXIMUM_PATCH_BYTES {
        return Err(TwinError::Invalid(format!(
            "the patch is {size} bytes, over the limit of {MAXIMUM_PATCH_BYTES}"
        )));
    }
    check_object(object, "", 1)?;
    Ok(object)
}

fn check_object(object: &Map<String, Value>, path: &str, depth: usize) -> Result<(), TwinError> {
    if depth > MAXIMUM_DEPTH {
        return Err(TwinError::Invalid(format!(
            "{path} nests objects more than {MAXIMUM_DEPTH} levels deep"
        )));
    }
    for (key, value) in object {
        let key_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        check_key(key, &key_path)?;
        check_value(value, &key_path, depth)?;
    }
    Ok(())
}

fn check_value(value: &Value, path: &str, depth: usize) -> Result<(), TwinError> {
    match value {
        Value::Object(object) => check_object(object, path, depth + 1),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| check_value(item, path, depth)),
        Value::String(text) if text.len() > MAXIMUM_STRING_BYTES => {
            Err(TwinError::Invalid(format!(
                "the string value of {path} is {} bytes, over the limit of {MAXIMUM_STRING_BYTES}",
                text.len()
            )))
        }
        _ => Ok(()),
    }
}

fn check_key(key: &str, path: &str) -> Result<(), TwinError> {
    if key.is_empty() {
        return Err(TwinError::Invalid(format!(
            "an empty key in {}; keys must not be empty",
            if path.is_empty() { "the patch" } else { path }
        )));
    }
    if key.len() > MAXIMUM_KEY_BYTES {
        return Err(TwinError::Invalid(format!(
            "the key {}… is {} bytes, over the limit of {MAXIMUM_KEY_BYTES}",
            key.chars().take(32).collect::<String>(),
            key.len()
        )));
    }
    if let Some(bad) = key
        .chars()
        .find(|character| matches!(character, '.' | '$' | ' ') || character.is_control())
    {
        return Err(TwinError::Invalid(format!(
            "the key {path:?} contains {bad:?}; keys must not contain '.', '$', spaces or control characters"
        )));
    }
    Ok(())
}

/// Applies a JSON merge patch (RFC 7396) to `target`.
pub(crate) fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Composes merge patch `later` into `earlier`, so that applying the result
/// equals applying `earlier` then `later`. Unlike [`merge`], nulls are kept:
/// they still have to delete what the patches are applied to.
pub(crate) fn compose(earlier: &mut Map<String, Value>, later: &Map<String, Value>) {
    for (key, value) in later {
        match (earlier.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(inner)) => compose(existing, inner),
            _ => {
                earlier.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The merge patch that turns `old` into `new`.
pub(crate) fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(before), after) if before == after => {}
            (Some(Value::Object(before)), Value::Object(after)) => {
                patch.insert(key.clone(), Value::Object(diff(before, after)));
            }
            _ => {
                patch.insert(key.clone(), value.clone());
            }
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            _ => panic!("not an object"),
        }
    }

    fn invalid(patch: Value) -> String {
        match validate_reported_patch(&patch) {
            Err(TwinError::Invalid(message)) => message,
            other => panic!("{patch} was accepted: {other:?}"),
        }
    }

    #[test]
    fn reported_patches_merge_and_null_deletes() {
        let mut twin = TwinRecord::default();
        let version = twin
            .patch_reported(&object(json!({"a": 1, "b": {"c": 2, "d": 3}})))
            .expect("patch");
        assert_eq!(version, 2);
        let version = twin
            .patch_reported(&object(json!({"a": null, "b": {"c": null, "e": 4}})))
            .expect("patch");
        assert_eq!(version, 3);
        assert_eq!(
            twin.to_twin().reported,
            json!({"b": {"d": 3, "e": 4}, "$version": 3})
        );
    }

    #[test]
    fn desired_changes_bump_the_version_and_patch_the_difference() {
        let mut twin = TwinRecord::default();
        let patch = twin
            .set_desired(object(json!({"rate": 5, "keep": {"x": 1, "y": 2}})))
            .expect("a change");
        assert_eq!(patch.version, 2);
        assert!(twin.set_desired(twin.desired.clone()).is_none());
        let patch = twin
            .set_desired(object(json!({"keep": {"x": 1, "y": 3}, "new": true})))
            .expect("a change");
        assert_eq!(
            patch.patch,
            json!({"rate": null, "keep": {"y": 3}, "new": true, "$version": 3})
        );
        let mut replayed = object(json!({"rate": 5, "keep": {"x": 1, "y": 2}}));
        merge(&mut replayed, &object(patch.patch));
        replayed.remove(VERSION_KEY);
        assert_eq!(replayed, twin.desired);
    }

    #[test]
    fn cloud_patches_layer_over_the_deployment_and_survive_it() {
        let mut twin = TwinRecord::default();
        twin.set_desired(object(json!({"rate": 5, "mode": "a", "nested": {"x": 1}})));
        let patch = twin
            .patch_desired_from_cloud(&object(
                json!({"rate": 7, "mode": null, "nested": {"y": 2}, "$version": 40}),
            ))
            .expect("within the limits")
            .expect("a change");
        assert_eq!(
            patch.patch,
            json!({"rate": 7, "mode": null, "nested": {"y": 2}, "$version": 3})
        );
        assert_eq!(
            twin.desired,
            object(json!({"rate": 7, "nested": {"x": 1, "y": 2}}))
        );
        // A later deployment replaces its own layer; the cloud's stays on top,
        // its null included.
        let patch = twin
            .set_desired(object(
                json!({"rate": 1, "mode": "b", "extra": true, "nested": {"x": 3}}),
            ))
            .expect("a change");
        assert_eq!(
            patch.patch,
            json!({"extra": true, "nested": {"x": 3}, "$version": 4})
        );
        assert_eq!(
            twin.desired,
            object(json!({"rate": 7, "extra": true, "nested": {"x": 3, "y": 2}}))
        );
        // The same deployment again changes nothing.
        assert!(
            twin.set_desired(object(
                json!({"rate": 1, "mode": "b", "extra": true, "nested": {"x": 3}})
            ))
            .is_none()
        );
        // A stored record from before the layers existed keeps its desired
        // properties as the deployment's.
        let old: TwinRecord = serde_json::from_value(json!({
            "desired": {"a": 1}, "desired_version": 2, "reported": {}, "reported_version": 1
        }))
        .expect("an old record");
        let mut old = old;
        old.patch_desired_from_cloud(&object(json!({"b": 2})))
            .expect("a change");
        assert_eq!(old.desired, object(json!({"a": 1, "b": 2})));
        assert_eq!(old.deployment_desired, Some(object(json!({"a": 1}))));
    }

    #[test]
    fn desired_patches_from_the_cloud_keep_to_the_twin_limits() {
        let patch = validate_desired_patch(&object(json!({"rate": 5, "$version": 9})))
            .expect("a valid patch");
        assert_eq!(patch, object(json!({"rate": 5})));
        for bad in [
            json!({"a.b": 1}),
            json!({"s": "x".repeat(4097)}),
            json!({"$other": 1}),
        ] {
            assert!(
                matches!(
                    validate_desired_patch(&object(bad.clone())),
                    Err(TwinError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn cloud_patches_cannot_grow_the_twin_past_its_limit() {
        let mut twin = TwinRecord::default();
        let chunk = |index: usize| object(json!({ format!("k{index}"): "x".repeat(4000) }));
        let mut accepted = 0;
        for index in 0..16 {
            match twin.patch_desired_from_cloud(&chunk(index)) {
                Ok(_) => accepted += 1,
                Err(TwinError::Invalid(message)) => {
                    assert!(message.contains("over the limit of 32768"), "{message}");
                    break;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(accepted, 8);
        let before = twin.clone();
        assert!(twin.patch_desired_from_cloud(&chunk(99)).is_err());
        assert_eq!(twin, before, "a refused patch changes nothing");
    }

    #[test]
    fn composed_patches_apply_like_the_patches_one_after_another() {
        let base = object(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}));
        let first = object(json!({"a": null, "b": {"c": 5}, "f": {"g": 1}}));
        let second = object(json!({"a": 4, "b": {"d": null}, "f": null, "e": {"h": 1}}));
        let mut one_after_another = base.clone();
        merge(&mut one_after_another, &first);
        merge(&mut one_after_another, &second);
        let mut composed = first.clone();
        compose(&mut composed, &second);
        let mut at_once = base;
        merge(&mut at_once, &composed);
        assert_eq!(at_once, one_after_another);
    }

    #[test]
    fn limits_name_the_rule_and_the_key() {
        assert!(invalid(json!([1])).contains("JSON object"));
        assert!(invalid(json!({"a.b": 1})).contains("\"a.b\""));
        assert!(invalid(json!({"$version": 1})).contains("'$'"));
        assert!(invalid(json!({"a": {"b c": 1}})).contains("\"a.b c\""));
        assert!(invalid(json!({"a": {"": 1}})).contains("empty key in a"));
        assert!(invalid(json!({"a\u{1}": 1})).contains("control"));
        assert!(invalid(json!({"k".repeat(1025): 1})).contains("over the limit of 1024"));
        assert!(invalid(json!({"s": "x".repeat(4097)})).contains("string value of s"));
        assert!(validate_reported_patch(&json!({"s": "x".repeat(4096)})).is_ok());
        let mut deep = json!(1);
        for _ in 0..10 {
            deep = json!({ "l": deep });
        }
        assert!(validate_reported_patch(&deep).is_ok());
        let deeper = json!({ "l": deep });
        assert!(invalid(deeper).contains("more than 10 levels"));
        let big: Map<String, Value> = (0..10)
            .map(|index| (format!("k{index}"), json!("x".repeat(4000))))
            .collect();
        assert!(invalid(Value::Object(big)).contains("over the limit of 32768"));
    }

    #[test]
    fn the_reported_document_stays_under_the_limit() {
        let mut twin = TwinRecord::default();
        for round in 0..8 {
            let patch: Map<String, Value> = (0..4)
                .map(|index| (format!("k{round}_{index}"), json!("x".repeat(1020))))
                .collect();
            let result = twin.patch_reported(&patch);
            if round < 7 {
                result.expect("fits");
            } else {
                assert!(matches!(result, Err(TwinError::Invalid(_))));
            }
        }
        assert_eq!(twin.reported_version, 8);
    }
}
