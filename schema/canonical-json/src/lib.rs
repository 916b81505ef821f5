//! Canonical JSON encoding, so that every JSON document that is hashed or
//! signed has exactly one byte representation.
//!
//! Object keys are sorted by their UTF-8 bytes (which is code point order),
//! there is no insignificant whitespace, strings are UTF-8 with only the
//! escapes JSON requires, and numbers with an integral value are written as
//! integers. `serde_json` (with `preserve_order`) and `oci-spec` keep maps in
//! insertion or random order, so anything that is hashed must go through here.

use serde_json::{Map, Number, Value};

/// Encodes `value` canonically: the bytes that are hashed and signed.
pub fn to_canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(value, &mut out, None);
    out
}

/// Encodes `value` for humans but still deterministically: sorted keys,
/// two-space indentation and a trailing newline, so generated files diff well.
pub fn to_pretty_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(value, &mut out, Some(0));
    out.push(b'\n');
    out
}

/// Writes one value; `indent` is the current depth in pretty mode, `None`
/// in canonical mode.
fn write_value(value: &Value, out: &mut Vec<u8>, indent: Option<usize>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => write_array(items, out, indent),
        Value::Object(map) => write_object(map, out, indent),
    }
}

fn write_array(items: &[Value], out: &mut Vec<u8>, indent: Option<usize>) {
    out.push(b'[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        newline(out, indent.map(|depth| depth + 1));
        write_value(item, out, indent.map(|depth| depth + 1));
    }
    if !items.is_empty() {
        newline(out, indent);
    }
    out.push(b']');
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>, indent: Option<usize>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|left, right| left.0.as_bytes().cmp(right.0.as_bytes()));
    out.push(b'{');
    for (index, (key, item)) in entries.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        newline(out, indent.map(|depth| depth + 1));
        write_string(key, out);
        out.push(b':');
        if indent.is_some() {
            out.push(b' ');
        }
        write_value(item, out, indent.map(|depth| depth + 1));
    }
    if !entries.is_empty() {
        newline(out, indent);
    }
    out.push(b'}');
}

/// Starts a new line at `indent` depth in pretty mode; does nothing in
/// canonical mode.
fn newline(out: &mut Vec<u8>, indent: Option<usize>) {
    if let Some(depth) = indent {
        out.push(b'\n');
        out.resize(out.len() + 2 * depth, b' ');
    }
}

/// Writes integers exactly and integral floats as integers, so `1.0` and `1`
/// hash the same; other floats use serde_json's shortest round-trip form.
fn write_number(number: &Number, out: &mut Vec<u8>) {
    if let Some(integer) = number.as_i64() {
        out.extend_from_slice(integer.to_string().as_bytes());
    } else if let Some(integer) = number.as_u64() {
        out.extend_from_slice(integer.to_string().as_bytes());
    } else if let Some(float) = number.as_f64().filter(|float| is_small_integral(*float)) {
        // The range check above makes this conversion exact.
        #[allow(clippy::cast_possible_truncation)]
        let integer = float as i64;
        out.extend_from_slice(integer.to_string().as_bytes());
    } else {
        out.extend_from_slice(number.to_string().as_bytes());
    }
}

/// Whether `float` is a whole number that `i64` represents exactly.
fn is_small_integral(float: f64) -> bool {
    const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    float.fract() == 0.0 && float.abs() <= LIMIT
}

/// Writes a JSON string with only the mandatory escapes: quote, backslash and
/// control characters; everything else stays raw UTF-8.
fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            control if u32::from(control) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(control)).as_bytes());
            }
            other => {
                let mut buffer = [0_u8; 4];
                out.extend_from_slice(other.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let value = json!({"b": [1, 2.0, {"z": null, "a": true}], "a": "é\n\"x\u{1}"});
        assert_eq!(
            to_canonical_bytes(&value),
            "{\"a\":\"é\\n\\\"x\\u0001\",\"b\":[1,2,{\"a\":true,\"z\":null}]}".as_bytes()
        );
    }

    #[test]
    fn non_integral_floats_and_big_integers_survive() {
        let value = json!([1.5, u64::MAX, -3, -0.0]);
        assert_eq!(
            to_canonical_bytes(&value),
            format!("[1.5,{},-3,0]", u64::MAX).as_bytes()
        );
    }

    #[test]
    fn pretty_form_is_indented_sorted_and_newline_terminated() {
        let value = json!({"b": [], "a": {"c": [1]}, "d": {}});
        let expected =
            "{\n  \"a\": {\n    \"c\": [\n      1\n    ]\n  },\n  \"b\": [],\n  \"d\": {}\n}\n";
        assert_eq!(
            String::from_utf8(to_pretty_bytes(&value)).unwrap(),
            expected
        );
    }

    #[test]
    fn canonical_bytes_parse_back_to_the_same_value() {
        let value = json!({"k": ["\u{7f}", "\u{2028}", 0, -1, 1e300]});
        let bytes = to_canonical_bytes(&value);
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(to_canonical_bytes(&parsed), bytes);
    }
}
