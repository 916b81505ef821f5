//! Module twins: desired properties become typed `twin` fields whose defaults are the values the
//! manifest sets, so `edgec build` writes the same document back.

use serde_json::{Map, Value as Json};

use super::error::ImportError;
use super::text::{Context, check_depth, name, value};

/// The lines of a `twin { … }` block (without the braces) for these desired properties.
pub fn fields(
    desired: &Map<String, Json>,
    at: &str,
    context: &mut Context,
) -> Result<Vec<String>, ImportError> {
    check_depth(&Json::Object(desired.clone()), at)?;
    desired
        .iter()
        .map(|(key, property)| field(key, property, at, context))
        .collect()
}

/// `name: type = value`. A non-empty object becomes an object type whose fields carry the
/// defaults, which the checker turns back into the same object; an empty object would vanish that
/// way, so it is written as `any = {}`.
fn field(
    key: &str,
    property: &Json,
    at: &str,
    context: &mut Context,
) -> Result<String, ImportError> {
    if let Json::Object(object) = property
        && !object.is_empty()
    {
        let nested = fields(object, at, context)?;
        return Ok(format!("{}: {{ {} }}", name(key), nested.join(", ")));
    }
    Ok(format!(
        "{}: {} = {}",
        name(key),
        type_of(property),
        value(property, at, context)?
    ))
}

/// The declared type of a property value: scalars by kind, homogeneous lists as `[T]`, and
/// everything else as `any`.
fn type_of(property: &Json) -> String {
    match property {
        Json::Bool(_) => "bool".to_owned(),
        Json::Number(number) if number.is_i64() => "int".to_owned(),
        Json::Number(_) => "float".to_owned(),
        Json::String(_) => "string".to_owned(),
        Json::Array(items) => list_type(items),
        Json::Null | Json::Object(_) => "any".to_owned(),
    }
}

/// `[T]` when every element has type `T` (integers and floats together are `[float]`, which
/// accepts both and keeps each as written), `any` for an empty or mixed list.
fn list_type(items: &[Json]) -> String {
    let mut types = items.iter().map(type_of);
    let Some(first) = types.next() else {
        return "[any]".to_owned();
    };
    let element = types.try_fold(first, |common, next| {
        match (common.as_str(), next.as_str()) {
            (left, right) if left == right => Some(common),
            ("int" | "float", "int" | "float") => Some("float".to_owned()),
            _ => None,
        }
    });
    match element {
        Some(element) if element != "any" => format!("[{element}]"),
        Some(_) => "[any]".to_owned(),
        None => "any".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_text(property: Json) -> String {
        let mut context = Context::default();
        field("p", &property, "twin", &mut context).expect("a representable property")
    }

    #[test]
    fn infers_scalar_list_and_object_types() {
        assert_eq!(field_text(json!(5)), "p: int = 5");
        assert_eq!(field_text(json!(2.5)), "p: float = 2.5");
        assert_eq!(field_text(json!(null)), "p: any = null");
        assert_eq!(field_text(json!([1, 2.5])), "p: [float] = [1, 2.5]");
        assert_eq!(field_text(json!([1, "a"])), "p: any = [1, \"a\"]");
        assert_eq!(field_text(json!([])), "p: [any] = []");
        assert_eq!(field_text(json!([[1], [2]])), "p: [[int]] = [[1], [2]]");
        assert_eq!(field_text(json!({})), "p: any = {}");
        assert_eq!(
            field_text(json!({"a": {"b": true}})),
            "p: { a: { b: bool = true } }"
        );
    }
}
