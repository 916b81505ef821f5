//! Showing untrusted text. Every string that comes from a bundle (names, paths, key ids, tar
//! entry names, and the messages of parsers that quote them) passes through here before it
//! reaches a terminal or a log, so that no escape sequence, bidi override or gigabyte-long name
//! is ever printed as it is.

/// The most characters of one untrusted string that are shown.
pub const MAX_SHOWN_CHARS: usize = 160;
/// The most characters of an untrusted message (a parser's error quoting its input) shown.
pub const MAX_MESSAGE_CHARS: usize = 480;

/// `text` as `{:?}` shows it (quoted; control characters, bidi and other format controls and
/// non-printable characters as `\u{…}`), cut after [`MAX_SHOWN_CHARS`] characters with a note of
/// its full length. The result is safe to print and short whatever `text` is.
pub fn escaped(text: &str) -> String {
    let mut shown = String::from("\"");
    let cut = push_escaped(&mut shown, text, MAX_SHOWN_CHARS, true);
    shown.push('"');
    if cut {
        shown.push_str(&format!("… ({} bytes in all)", text.len()));
    }
    shown
}

/// An untrusted message (for example a JSON parser's error, which quotes what it read) made
/// safe to print: the same escapes as [`escaped`] except that quotes and backslashes stay as
/// they are, no surrounding quotes, at most [`MAX_MESSAGE_CHARS`] characters.
pub fn escaped_message(text: &str) -> String {
    let mut shown = String::new();
    if push_escaped(&mut shown, text, MAX_MESSAGE_CHARS, false) {
        shown.push_str(&format!("… ({} bytes in all)", text.len()));
    }
    shown
}

/// Appends up to `limit` characters of `text`, escaped; returns whether it was cut.
fn push_escaped(shown: &mut String, text: &str, limit: usize, quoted: bool) -> bool {
    for (count, character) in text.chars().enumerate() {
        if count == limit {
            return true;
        }
        let plain = match character {
            '"' | '\\' => !quoted,
            '\'' => true,
            _ => character.escape_debug().nth(1).is_none(),
        };
        if plain {
            shown.push(character);
        } else {
            shown.extend(character.escape_debug());
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(escaped("plant"), "\"plant\"");
        assert_eq!(escaped("a\u{1b}[31mb"), "\"a\\u{1b}[31mb\"");
        assert_eq!(escaped("evil\u{202e}txt"), "\"evil\\u{202e}txt\"");
        assert_eq!(escaped("nul\0"), "\"nul\\0\"");
        assert_eq!(escaped("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(escaped("é"), "\"é\"");
        assert_eq!(
            escaped_message("unknown field `\u{1b}]0;x\u{7}`, expected \"a\""),
            "unknown field `\\u{1b}]0;x\\u{7}`, expected \"a\""
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(10_000);
        let shown = escaped(&long);
        assert!(shown.starts_with(&format!("\"{}\"", "é".repeat(MAX_SHOWN_CHARS))));
        assert!(shown.ends_with("(20000 bytes in all)"), "{shown}");
        assert!(escaped_message(&"x".repeat(1 << 20)).len() < MAX_MESSAGE_CHARS + 40);
    }
}
