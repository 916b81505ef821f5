//! The hub's failpoints, on the store's write path and where the upstream
//! connection checkpoints (see `edge-failpoint`).

pub(crate) use edge_failpoint::hit;

edge_failpoint::failpoints! {
    /// A point on the store's write path where a crash is simulated.
    pub enum Failpoint {
        StoreBeforeCommit => "hub.store.before_commit": "After a batch is written, before its transaction commits.",
        StoreBeforeCommitOfDrops => "hub.store.before_commit_of_drops": "After a batch expired or evicted entries and updated the depths, before its transaction commits.",
        StoreAfterCommitBeforeAck => "hub.store.after_commit_before_ack": "After a batch commits, before its waiters (PUBACKs) hear of it.",
        UpstreamAfterPuback => "hub.upstream.after_puback": "After the cloud's PUBACK for a telemetry message was handled: its removal is queued, not yet committed.",
    }
}
