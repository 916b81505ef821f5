//! Route sources and how they match message sources.
//!
//! The hub trims a trailing `*` and `/` from the route's path and then checks, ignoring case,
//! whether the message's source path (with one trailing `/`) starts with it (with one trailing
//! `/`). That makes matching a prefix match on whole path segments: `/messages` selects device
//! telemetry (`/messages`) and every module output (`/messages/modules/{id}/outputs/{name}`), while
//! `/message` selects nothing. A `*` in the middle of a path is literal, as in the hub.

/// A route's `FROM` path, normalized for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePath {
    /// The path as written, whitespace removed.
    pub written: String,
    /// The path with trailing `*` and `/` removed; empty for "every message".
    pub prefix: String,
    /// The kind of messages the path selects.
    pub kind: SourceKind,
}

/// The kinds of messages a route source selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// `/` or `/*`: every message, including twin change notifications.
    All,
    /// `/messages`: device telemetry and the outputs of every module.
    AllMessages,
    /// `/messages/modules[/{module}[/outputs[/{output}]]]`: module outputs, optionally narrowed
    /// to one module and one of its outputs.
    ModuleOutput {
        /// The module, when the path names one.
        module: Option<String>,
        /// The output, when the path names one.
        output: Option<String>,
    },
    /// `/twinChangeNotifications`: twin change notifications.
    TwinChangeNotifications,
    /// Any other path, which matches no message the edge hub produces.
    Unrecognized,
}

impl SourcePath {
    /// Normalizes a written `FROM` path such as `/messages/modules/filter/*`.
    pub fn new(written: &str) -> Self {
        let written = written.trim();
        let prefix = written
            .trim_end_matches('*')
            .trim_end_matches('/')
            .to_owned();
        let kind = classify(&prefix);
        Self {
            written: written.to_owned(),
            prefix,
            kind,
        }
    }

    /// Tells whether a message with source path `message_source` is selected by this path.
    pub fn matches(&self, message_source: &str) -> bool {
        source_prefix_matches(&self.prefix, message_source)
    }
}

/// Segment-wise, case-insensitive prefix match of normalized paths, without allocating.
pub(crate) fn source_prefix_matches(prefix: &str, message_source: &str) -> bool {
    let message = message_source.trim().trim_end_matches('/').as_bytes();
    let prefix = prefix.as_bytes();
    message.len() >= prefix.len()
        && message[..prefix.len()].eq_ignore_ascii_case(prefix)
        && (message.len() == prefix.len() || message[prefix.len()] == b'/')
}

fn classify(prefix: &str) -> SourceKind {
    let segments: Vec<&str> = prefix.split('/').skip(1).collect();
    let is = |index: usize, word: &str| {
        segments
            .get(index)
            .is_some_and(|segment| segment.eq_ignore_ascii_case(word))
    };
    let name = |index: usize| segments.get(index).map(|segment| (*segment).to_owned());
    match segments.len() {
        0 => SourceKind::All,
        1 if is(0, "messages") => SourceKind::AllMessages,
        1 if is(0, "twinChangeNotifications") => SourceKind::TwinChangeNotifications,
        2..=5
            if is(0, "messages")
                && is(1, "modules")
                && (segments.len() < 4 || is(3, "outputs")) =>
        {
            SourceKind::ModuleOutput {
                module: name(2),
                output: name(4),
            }
        }
        _ => SourceKind::Unrecognized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(SourcePath::new("/*").kind, SourceKind::All);
        assert_eq!(SourcePath::new("/messages/*").kind, SourceKind::AllMessages);
        assert_eq!(
            SourcePath::new("/messages/modules/filter/outputs/*").kind,
            SourceKind::ModuleOutput {
                module: Some("filter".to_owned()),
                output: None
            }
        );
        assert_eq!(
            SourcePath::new("/twinChangeNotifications").kind,
            SourceKind::TwinChangeNotifications
        );
        assert_eq!(SourcePath::new("/foo").kind, SourceKind::Unrecognized);
    }

    #[test]
    fn matches_whole_segments_ignoring_case() {
        let path = SourcePath::new("/MESSAGES/modules/m1");
        assert!(path.matches("/messages/modules/m1/outputs/o1"));
        assert!(!path.matches("/messages/modules/m10/outputs/o1"));
        assert!(!SourcePath::new("/message").matches("/messages"));
    }
}
