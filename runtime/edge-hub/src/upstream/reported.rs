//! Keeping the cloud's copy of the reported properties up to date: the
//! device twin's (the runtime's state) and each module's.
//!
//! The hub's twins are the truth; the cloud gets patches. For each twin
//! the sync remembers the document the cloud last acknowledged (PUBACK),
//! and sends the merge patch from it to the current document whenever the
//! twin changes. After every (re)connect it sends each whole document
//! instead, with a null for every key deleted since the last acknowledged
//! one, so a cloud that lost or never had the state gets all of it. What
//! the cloud acknowledged is kept in memory only: after a restart the first
//! connection sends whole documents, which is always right.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::client::ClientIdentity;
use crate::twin;

/// Whose reported properties.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReportedTwin {
    /// The device's own twin: the runtime's state.
    Device,
    /// A module's or a leaf device's twin.
    Client(ClientIdentity),
}

/// The state of the sync.
#[derive(Debug, Default)]
pub(crate) struct ReportedSync {
    /// The document the cloud last acknowledged, per twin.
    acknowledged: BTreeMap<ReportedTwin, Map<String, Value>>,
    /// Twins changed since their last patch was sent.
    dirty: BTreeSet<ReportedTwin>,
    /// Twins whose whole document goes next (since the connection began).
    whole: BTreeSet<ReportedTwin>,
    /// Twins with a patch in flight, and the document it brings the cloud
    /// to.
    in_flight: BTreeMap<ReportedTwin, Map<String, Value>>,
}

impl ReportedSync {
    /// A connection began: every twin goes whole.
    pub(crate) fn connected(&mut self, twins: impl IntoIterator<Item = ReportedTwin>) {
        self.in_flight.clear();
        for twin in twins {
            self.dirty.insert(twin.clone());
            self.whole.insert(twin);
        }
    }

    /// `twin` changed.
    pub(crate) fn changed(&mut self, twin: ReportedTwin) {
        self.dirty.insert(twin);
    }

    /// A twin that no longer exists (its module left the deployment).
    pub(crate) fn forget(&mut self, twin: &ReportedTwin) {
        self.acknowledged.remove(twin);
        self.dirty.remove(twin);
        self.whole.remove(twin);
        self.in_flight.remove(twin);
    }

    /// The next twin to send: dirty and with nothing in flight.
    pub(crate) fn next_to_send(&self) -> Option<ReportedTwin> {
        self.dirty
            .iter()
            .find(|twin| !self.in_flight.contains_key(*twin))
            .cloned()
    }

    /// The patch that brings the cloud from what it acknowledged to
    /// `current`, or `None` when it has it already. The twin is then in
    /// flight until [`ReportedSync::acknowledged`].
    pub(crate) fn take_patch(
        &mut self,
        twin: &ReportedTwin,
        current: Map<String, Value>,
    ) -> Option<Map<String, Value>> {
        self.dirty.remove(twin);
        let empty = Map::new();
        let before = self.acknowledged.get(twin).unwrap_or(&empty);
        let patch = if self.whole.remove(twin) {
            let mut whole = current.clone();
            for (key, value) in twin::diff(before, &current) {
                if value.is_null() {
                    whole.insert(key, Value::Null);
                }
            }
            if whole.is_empty() {
                // Nothing reported and nothing deleted: nothing to say.
                self.acknowledged.insert(twin.clone(), current);
                return None;
            }
            whole
        } else {
            let patch = twin::diff(before, &current);
            if patch.is_empty() {
                return None;
            }
            patch
        };
        self.in_flight.insert(twin.clone(), current);
        Some(patch)
    }

    /// The cloud acknowledged the patch in flight for `twin`.
    pub(crate) fn acknowledged(&mut self, twin: &ReportedTwin) {
        if let Some(document) = self.in_flight.remove(twin) {
            self.acknowledged.insert(twin.clone(), document);
        }
    }

    /// Whether any twin waits to be sent or acknowledged.
    #[cfg(test)]
    fn settled(&self) -> bool {
        self.dirty.is_empty() && self.in_flight.is_empty()
    }
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

    fn module(name: &str) -> ReportedTwin {
        ReportedTwin::Client(ClientIdentity::Module(name.to_owned()))
    }

    #[test]
    fn patches_follow_changes_and_reconnects_send_whole_documents() {
        let mut sync = ReportedSync::default();
        sync.connected([ReportedTwin::Device, module("a")]);
        assert_eq!(sync.next_to_send(), Some(ReportedTwin::Device));
        let patch = sync.take_patch(&ReportedTwin::Device, object(json!({"version": 1})));
        assert_eq!(patch, Some(object(json!({"version": 1}))));
        // One patch per twin in flight.
        assert_eq!(sync.next_to_send(), Some(module("a")));
        let patch = sync.take_patch(&module("a"), object(json!({"x": 1, "y": {"z": 2}})));
        assert_eq!(patch, Some(object(json!({"x": 1, "y": {"z": 2}}))));
        assert_eq!(sync.next_to_send(), None);
        sync.acknowledged(&ReportedTwin::Device);
        sync.acknowledged(&module("a"));
        assert!(sync.settled());

        // A change sends the difference only; an unchanged twin nothing.
        sync.changed(module("a"));
        let patch = sync.take_patch(&module("a"), object(json!({"x": 2, "y": {"z": 2}})));
        assert_eq!(patch, Some(object(json!({"x": 2}))));
        sync.acknowledged(&module("a"));
        sync.changed(module("a"));
        assert_eq!(
            sync.take_patch(&module("a"), object(json!({"x": 2, "y": {"z": 2}}))),
            None
        );

        // A change while a patch is in flight waits for it.
        sync.changed(module("a"));
        sync.take_patch(&module("a"), object(json!({"x": 3, "y": {"z": 2}})));
        sync.changed(module("a"));
        assert_eq!(sync.next_to_send(), None);
        sync.acknowledged(&module("a"));
        assert_eq!(sync.next_to_send(), Some(module("a")));
        sync.take_patch(&module("a"), object(json!({"x": 4, "y": {"z": 2}})));

        // The connection drops before that patch is acknowledged, and a key
        // is deleted meanwhile: the reconnect sends the whole document and
        // the deletion.
        sync.connected([module("a")]);
        let patch = sync.take_patch(&module("a"), object(json!({"x": 5})));
        assert_eq!(patch, Some(object(json!({"x": 5, "y": null}))));
        sync.acknowledged(&module("a"));
        assert!(sync.settled());

        // A twin with nothing reported sends nothing, even whole.
        sync.connected([module("b")]);
        assert_eq!(sync.take_patch(&module("b"), Map::new()), None);
        assert!(sync.settled());

        sync.forget(&module("a"));
        sync.connected([]);
        assert_eq!(sync.next_to_send(), None);
    }
}
