//! Unescaping of string literals, reproducing the hub's two regular-expression passes.
//!
//! The hub first replaces every `\uXXXX` (either case of `u`) with that UTF-16 code unit and only
//! then resolves `\"`, `\'` and `\\`. Doing it in this order matters for inputs such as `\\u0041`,
//! which the hub turns into `\A`; this module keeps that observable behaviour.

/// Resolves the escapes of a literal's text between its quotes.
pub(crate) fn unescape_string_literal(inner: &str) -> String {
    resolve_simple_escapes(&resolve_unicode_escapes(inner))
}

fn resolve_unicode_escapes(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut units: Vec<u16> = Vec::with_capacity(text.len());
    let mut index = 0;
    while index < bytes.len() {
        if let Some(unit) = unicode_escape_at(bytes, index) {
            units.push(unit);
            index += 6;
            continue;
        }
        let character = text[index..].chars().next().unwrap_or('\u{fffd}');
        let mut buffer = [0u16; 2];
        units.extend_from_slice(character.encode_utf16(&mut buffer));
        index += character.len_utf8();
    }
    String::from_utf16_lossy(&units)
}

fn unicode_escape_at(bytes: &[u8], index: usize) -> Option<u16> {
    let escape = bytes.get(index..index + 6)?;
    if escape[0] != b'\\' || !matches!(escape[1], b'u' | b'U') {
        return None;
    }
    let digits = std::str::from_utf8(&escape[2..]).ok()?;
    if !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

fn resolve_simple_escapes(text: &str) -> String {
    let mut result = String::with_capacity(text.len());
    let mut characters = text.chars().peekable();
    while let Some(character) = characters.next() {
        if character == '\\'
            && let Some(&next) = characters.peek()
            && matches!(next, '"' | '\'' | '\\')
        {
            result.push(next);
            characters.next();
            continue;
        }
        result.push(character);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::unescape_string_literal;

    #[test]
    fn resolves_unicode_then_simple_escapes() {
        assert_eq!(unescape_string_literal(r"a\u0041\'\\"), "aA'\\");
        assert_eq!(unescape_string_literal(r"\\u0041"), r"\A");
        assert_eq!(unescape_string_literal(r"\ud83d\ude00"), "\u{1f600}");
    }
}
