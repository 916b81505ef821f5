//! IoT Edge naming rules for modules, environment variables and twin properties.

/// Names the IoT Edge runtime keeps for itself (compared case-insensitively, as the hub does).
const RESERVED_MODULE_NAMES: &[&str] = &["edgeAgent", "edgeHub"];

/// IoT Hub's limit on the length of a twin property name.
pub const MAXIMUM_TWIN_KEY_BYTES: usize = 1024;

pub fn is_reserved_module_name(name: &str) -> bool {
    name.starts_with('$')
        || RESERVED_MODULE_NAMES
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(name))
}

/// `^[A-Za-z0-9_-]+$`.
pub fn is_valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

pub fn is_valid_environment_name(name: &str) -> bool {
    !name.is_empty()
        && !name.chars().any(|character| {
            character == '=' || character.is_whitespace() || character.is_control()
        })
}

/// Why a twin property name is refused, if it is.
pub fn twin_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("is empty")
    } else if key.len() > MAXIMUM_TWIN_KEY_BYTES {
        Some("is longer than 1 KB")
    } else if key.contains('.') {
        Some("contains `.`")
    } else if key.contains('$') {
        Some("contains `$`")
    } else if key.contains('#') {
        Some("contains `#`")
    } else if key.contains(' ') {
        Some("contains a space")
    } else if key.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}
