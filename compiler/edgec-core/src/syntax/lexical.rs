//! Character classes and the bracket-aware skipper used for error recovery.

pub fn is_identifier_start(character: char) -> bool {
    character.is_ascii_alphabetic() || character == '_'
}

pub fn is_identifier_continue(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '_' || character == '-'
}

/// Scans forward from `from` over balanced brackets, strings and comments, and returns the offset
/// of the first synchronisation point at nesting level zero: `,`, `;`, an unmatched closing
/// bracket, the end of a complete bracketed group when `from` opens one, or (when
/// `stop_at_newline`) a newline. Iterative, so arbitrarily deep input is safe.
pub fn skip_balanced(source: &str, from: usize, stop_at_newline: bool) -> usize {
    let bytes = source.as_bytes();
    let mut depth: usize = 0;
    let mut position = from;
    while position < bytes.len() {
        let byte = bytes[position];
        match byte {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return position;
                }
                depth -= 1;
                if depth == 0 && position >= from && starts_group(bytes, from) {
                    return position + 1;
                }
            }
            b',' | b';' if depth == 0 => return position,
            b'\n' if depth == 0 && stop_at_newline => return position,
            b'"' => {
                position = skip_string(bytes, position);
                continue;
            }
            b'/' if bytes.get(position + 1) == Some(&b'/') => {
                position = source[position..]
                    .find('\n')
                    .map_or(bytes.len(), |newline| position + newline);
                continue;
            }
            b'/' if bytes.get(position + 1) == Some(&b'*') => {
                position = source[position + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| position + end + 4);
                continue;
            }
            _ => {}
        }
        position += 1;
    }
    bytes.len()
}

fn starts_group(bytes: &[u8], from: usize) -> bool {
    matches!(bytes.get(from), Some(b'(' | b'[' | b'{'))
}

/// The offset just past the string starting at `start` (or the end of its line if unterminated).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let mut position = start + 1;
    while position < bytes.len() {
        match bytes[position] {
            b'\\' => position += 2,
            b'"' => return position + 1,
            b'\n' => return position,
            _ => position += 1,
        }
    }
    bytes.len()
}
