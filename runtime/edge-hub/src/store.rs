//! The hub's durable store: messages, queues, twins, sessions and
//! generation ids in one redb database.
//!
//! # Layout
//! - `messages`: message id → the encoded record (see [`encode_record`]);
//!   every message is stored once, however many routes take it.
//! - `references`: message id → how many queue entries still point at it,
//!   for messages queued more than once (no row means one); the record is
//!   deleted with the last entry.
//! - `queue`: (target, priority, message id, input) → expiry (ms since the
//!   Unix epoch, `NEVER` for no expiry). The target is a module name or
//!   `$upstream` (whose input is empty). Keys order each module's queues by
//!   priority first and by message id within a priority, and message ids
//!   only grow, so a range scan yields priority 0 first and FIFO per queue.
//! - `expiry`: (expiry, target, priority, message id, input) → (), so the
//!   sweep finds expired entries without scanning the queues.
//! - `counters`: the next message id and the stored bytes.
//! - `priority_depths`: (endpoint, priority) → queue entries, kept with the
//!   queues so that opening the store does not count a long queue. (A store
//!   written before priorities were counted has a `depths` table by
//!   endpoint instead; opening it counts the queues once and drops it.)
//! - `documents`: (kind, name) → bytes, for twins, sessions, generation ids
//!   and the installed deployment.
//!
//! # Message ids and live tails
//! Ids are handed out by the gate (`Gate`), under one lock with the send to the
//! writer, so the writer's channel holds appends in id order. A module's
//! input stream that has read everything the store holds for it joins the
//! gate with a `Tail`: from then on every message routed to the module is
//! handed to the tail as it is accepted, ahead of the commit, and the stream
//! delivers from memory. At-least-once delivery allows it: the sender's
//! PUBACK waits for the commit, or for the live acknowledgements of every
//! entry of the message (`LiveAcks`), and a crash before the commit makes
//! the sender send again or the store deliver again, never lose. A tail that falls behind (the module reads slower than
//! messages come) overflows, leaves the gate, and its stream reads the store
//! again.
//!
//! # Elision
//! When a message's delivery is acknowledged before the message was
//! committed (its append and the removal land in the same batch), neither is
//! written: the hub's responsibility for that copy ended before it had to be
//! on disk. A batch that only carries such pairs is not committed at all.
//!
//! # Group commit
//! One writer thread owns all writes. It takes every operation waiting in
//! its channel, applies them all in one write transaction and commits once,
//! then completes each waiter; while a commit is being fsynced, the next
//! batch gathers. A batch with at least one durable operation (a QoS 1
//! message, a twin, a session, a deployment) commits with
//! `Durability::Immediate`, so the data is fsynced before any waiter hears
//! back. Batches of acknowledgements (checkpoints) only commit with
//! `Durability::None`; the next durable commit, or an idle flush at most a
//! second later, makes them durable. A crash in between redelivers those
//! messages, which at-least-once delivery allows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition, TableHandle,
    WriteTransaction,
};
use tokio::sync::{Notify, oneshot};

use edge_route::LOWEST_PRIORITY;

use crate::config::WhenFull;
use crate::failpoint::{self, Failpoint};
use crate::message::{HubMessage, SystemProperty};

/// The priorities, 0 (most urgent) to [`LOWEST_PRIORITY`].
pub(crate) const PRIORITIES: usize = LOWEST_PRIORITY as usize + 1;

/// No expiry.
pub(crate) const NEVER: u64 = u64::MAX;

/// What a queue entry costs against the size limit beside its message:
/// its key in `queue` and `expiry` and the B-tree overhead, roughly.
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

/// The most operations one transaction takes; more wait for the next.
const MAXIMUM_BATCH: usize = 4096;
/// How many record bytes one read for delivery takes at most (beyond the
/// first record).
const READ_BUDGET_BYTES: usize = 1024 * 1024;
/// How often expired messages are swept out.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// The most expired entries one sweep transaction removes; a sweep that
/// finds more goes on in the next transaction, so that appends and
/// acknowledgements get their turn in between.
const SWEEP_LIMIT: usize = 2_000;
/// The most queue entries one eviction pass looks at (see
/// [`Batch::evict`]).
const EVICTION_CANDIDATES: usize = 256;
/// How often the free space is checked while the disk is full, to take the
/// reserve back and leave the disk-full state.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a store whose database could not be reopened waits before it
/// tries again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// The most removals of failed batches kept to retry; past it the oldest are
/// forgotten, and their messages are delivered again after a restart.
const RETRY_REMOVALS: usize = 65_536;
/// The reserve file's name, beside the store.
const RESERVE_FILE: &str = "store.reserve";
/// How much of the file redb may keep in memory.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
/// How long the store is idle before it checks whether to compact.
const COMPACT_AFTER_IDLE: Duration = Duration::from_secs(5);
/// Files up to this size are never compacted.
const COMPACT_MINIMUM_BYTES: u64 = 4 * 1024 * 1024;
/// A file is compacted when it is larger than this many times the bytes it
/// holds (plus the minimum): stored messages take about 2.5 times their
/// counted size in the B-trees.
const COMPACT_RATIO: u64 = 4;
/// The most compaction passes at a time.
const COMPACT_PASSES: u32 = 16;
/// The most messages one tail holds; one more overflows it.
const TAIL_MESSAGES: usize = 1024;
/// Past this many messages in a tail, the acknowledgement of a publish
/// routed to it waits (up to [`TAIL_WAIT`]) for the module to take some: a
/// module that reads a little slower than its senders send slows them down
/// to its pace (their in-flight windows fill) and stays live, rather than
/// overflowing into the store, where each message costs a write, a read
/// and a removal.
const TAIL_CROWDED: usize = TAIL_MESSAGES / 2;
/// How long an acknowledgement waits for a crowded tail; a module that does
/// not read within it overflows and reads the store, so a stuck module
/// never holds its senders back for long.
const TAIL_WAIT: Duration = Duration::from_millis(100);
/// The most message bytes all tails together hold; a push past it
/// overflows the tail it was for, so live delivery never holds more than
/// this however many modules fall behind.
const TAILS_BYTES: usize = 8 * 1024 * 1024;
/// How long non-durable checkpoints may wait for a durable commit.
const CHECKPOINT_FLUSH: Duration = Duration::from_secs(1);

type QueueKey = (&'static str, u8, u64, &'static str);
type ExpiryKey = (u64, &'static str, u8, u64, &'static str);

const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("messages");
const REFERENCES: TableDefinition<'_, u64, u32> = TableDefinition::new("references");
const QUEUE: TableDefinition<'_, QueueKey, u64> = TableDefinition::new("queue");
const EXPIRY: TableDefinition<'_, ExpiryKey, ()> = TableDefinition::new("expiry");
const COUNTERS: TableDefinition<'_, &str, u64> = TableDefinition::new("counters");
const PRIORITY_DEPTHS: TableDefinition<'_, (&str, u8), u64> =
    TableDefinition::new("priority_depths");
/// The depths by endpoint only, of stores written before priorities were
/// counted.
const LEGACY_DEPTHS: TableDefinition<'_, &str, u64> = TableDefinition::new("depths");
const DOCUMENTS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("documents");

const NEXT_ID: &str = "next_id";
const STORED_BYTES: &str = "stored_bytes";

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The size limit is reached; nothing was written.
    #[error(
        "the hub store is full: {stored} of {limit} bytes used, {needed} more needed; messages are kept until delivered or expired, so start the modules that read them, lower the routes' time to live or raise store_limit_bytes"
    )]
    Full {
        /// Bytes the write needed.
        needed: u64,
        /// Bytes in use.
        stored: u64,
        /// The limit.
        limit: u64,
    },
    /// The database file cannot be opened.
    #[error(
        "cannot open the hub store {path}: {message}; if another edged runs, stop it; if the file is damaged, move it aside and restart (its queued messages, twins and sessions are then lost)"
    )]
    Open {
        /// The database file.
        path: String,
        /// What redb said.
        message: String,
    },
    /// The disk holding the store is full; nothing was written.
    #[error(
        "the disk holding the hub store {path} is full: new messages are refused until space is freed; free space on that file system (the hub takes its reserve back and accepts messages again by itself)"
    )]
    DiskFull {
        /// The database file.
        path: String,
    },
    /// The database failed.
    #[error("the hub store {path} failed: {message}; check the disk (space, permissions, errors)")]
    Database {
        /// The database file.
        path: String,
        /// What redb said.
        message: String,
    },
    /// A stored record does not decode.
    #[error("a record in the hub store is corrupt: {0}")]
    Corrupt(String),
    /// The writer thread is gone (the hub is shutting down).
    #[error("the hub store is closed; the hub is shutting down")]
    Closed,
}

/// A place a message is queued for: a module's input or `$upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    /// A module name, or `$upstream`.
    pub target: String,
    /// The module's input; empty for `$upstream`.
    pub input: String,
    /// 0 (most urgent) to 9.
    pub priority: u8,
    /// Expiry in ms since the Unix epoch, or [`NEVER`].
    pub expiry: u64,
}

/// The target of upstream messages.
pub(crate) const UPSTREAM: &str = "$upstream";

/// The endpoint name of a queue: `{module}/{input}` or `$upstream`.
pub(crate) fn endpoint_name(target: &str, input: &str) -> String {
    if input.is_empty() {
        target.to_owned()
    } else {
        format!("{target}/{input}")
    }
}

/// One queue entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct QueueEntry {
    pub target: String,
    pub priority: u8,
    pub id: u64,
    pub input: String,
}

impl QueueEntry {
    fn endpoint(&self) -> String {
        endpoint_name(&self.target, &self.input)
    }
}

/// A queue entry read for delivery.
#[derive(Debug)]
pub(crate) struct Pending {
    pub entry: QueueEntry,
    pub expiry: u64,
    pub record: StoredMessage,
    /// For a message handed over live: what its sender's acknowledgement
    /// waits on besides the commit.
    pub live: Option<Arc<LiveAcks>>,
}

/// The live acknowledgements a message still waits for: once every one of
/// its queue entries was delivered from a tail and acknowledged by its
/// module, the sender's PUBACK need not wait for the commit — the message
/// has reached everyone it was for, and a crash can at most deliver it
/// again. An entry that was not handed over live never counts down, so
/// such a message waits for its commit.
#[derive(Debug)]
pub(crate) struct LiveAcks {
    remaining: AtomicUsize,
    done: Notify,
}

impl LiveAcks {
    fn new(entries: usize) -> Self {
        Self {
            remaining: AtomicUsize::new(entries),
            done: Notify::new(),
        }
    }

    /// A module acknowledged one entry delivered from its tail.
    pub fn acknowledge(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A stored permit: the sender may not be waiting yet.
            self.done.notify_one();
        }
    }

    /// Resolves once every entry was acknowledged live.
    async fn all(&self) {
        while self.remaining.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }
}

/// A message with the metadata stored beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// When the hub accepted it, ms since the Unix epoch.
    pub enqueued: u64,
    /// The route source it came from (`/messages/modules/{m}/outputs/{o}`).
    pub source: String,
    /// The message.
    pub message: HubMessage,
}

/// The record format's version byte.
const RECORD_VERSION: u8 = 1;

/// Encodes a message record.
///
/// Format (version 1), integers little-endian:
/// - `u8` format version, 1;
/// - `u64` enqueue time, ms since the Unix epoch;
/// - `u16` source length, then the source's UTF-8 bytes;
/// - `u8` count of system properties, then per property: `u8` its index in
///   [`SystemProperty::ALL`], `u32` length, UTF-8 bytes; in increasing index
///   order;
/// - `u32` count of application properties, then per property: `u32` name
///   length, name bytes, `u32` value length, value bytes (UTF-8);
/// - `u32` body length, then the body; nothing follows.
///
/// Messages are at most 256 KiB and sources are short, so every length fits
/// its field; the encoder saturates rather than wraps should one not.
pub fn encode_record(record: &StoredMessage) -> Vec<u8> {
    let message = &record.message;
    let mut out = Vec::with_capacity(32 + record.source.len() + message.size());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&record.enqueued.to_le_bytes());
    let source = &record.source.as_bytes()[..record.source.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(
        &u16::try_from(source.len())
            .unwrap_or(u16::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(source);
    out.push(u8::try_from(message.system_properties.len()).unwrap_or(u8::MAX));
    for (property, value) in &message.system_properties {
        let index = SystemProperty::ALL
            .iter()
            .position(|known| known == property)
            .unwrap_or_default();
        out.push(u8::try_from(index).unwrap_or(u8::MAX));
        put_bytes(&mut out, value.as_bytes());
    }
    put_length(&mut out, message.application_properties.len());
    for (name, value) in &message.application_properties {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    put_bytes(&mut out, &message.body);
    out
}

fn put_length(out: &mut Vec<u8>, length: usize) {
    out.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_length(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Decodes a record written by [`encode_record`]; any other bytes are an
/// error, never a panic.
pub fn decode_record(bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    let mut reader = Reader { bytes, offset: 0 };
    let version = reader.u8()?;
    if version != RECORD_VERSION {
        return Err(reader.error(&format!("unknown record version {version}")));
    }
    let enqueued = u64::from_le_bytes(reader.array()?);
    let source_length = usize::from(u16::from_le_bytes(reader.array()?));
    let source = reader.text(source_length)?;
    let mut message = HubMessage::default();
    let system_count = reader.u8()?;
    let mut previous = None;
    for _ in 0..system_count {
        let index = reader.u8()?;
        let property = SystemProperty::ALL
            .get(usize::from(index))
            .copied()
            .ok_or_else(|| reader.error(&format!("unknown system property {index}")))?;
        if previous.is_some_and(|previous| previous >= index) {
            return Err(reader.error("system properties out of order"));
        }
        previous = Some(index);
        let value = reader.counted_text()?;
        message.system_properties.insert(property, value);
    }
    let application_count = reader.length()?;
    for _ in 0..application_count {
        let name = reader.counted_text()?;
        let value = reader.counted_text()?;
        message.application_properties.push((name, value));
    }
    let body_length = reader.length()?;
    message.body = reader.take(body_length)?.to_vec();
    if reader.offset != bytes.len() {
        return Err(reader.error("bytes after the body"));
    }
    Ok(StoredMessage {
        enqueued,
        source,
        message,
    })
}

struct Reader<'b> {
    bytes: &'b [u8],
    offset: usize,
}

impl<'b> Reader<'b> {
    fn error(&self, what: &str) -> StoreError {
        StoreError::Corrupt(format!("message record: {what} at byte {}", self.offset))
    }

    fn take(&mut self, length: usize) -> Result<&'b [u8], StoreError> {
        let end = self
            .offset
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| self.error("truncated"))?;
        let taken = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }

    fn length(&mut self) -> Result<usize, StoreError> {
        usize::try_from(u32::from_le_bytes(self.array()?)).map_err(|_| self.error("huge length"))
    }

    fn text(&mut self, length: usize) -> Result<String, StoreError> {
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("text that is not UTF-8"))
    }

    fn counted_text(&mut self) -> Result<String, StoreError> {
        let length = self.length()?;
        self.text(length)
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// How often a repeating event is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs a repeating event at most every [`LOG_INTERVAL`], with the count of
/// the occurrences since the last log, so a full store or a stream of
/// expiries does not flood the log.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// Counts `occurrences`; returns the count to log when it is time.
    pub fn add(&self, occurrences: u64) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (last, count) = &mut *state;
        *count += occurrences;
        if last.is_some_and(|last| last.elapsed() < LOG_INTERVAL) {
            return None;
        }
        *last = Some(Instant::now());
        Some(std::mem::take(count))
    }
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EndpointCounters {
    pub depth: u64,
    /// Entries dropped because their time to live passed.
    pub expired: u64,
    /// Entries evicted to keep the store under its size limit.
    pub quota: u64,
    /// Entries evicted because the disk holding the store was full.
    pub disk_full: u64,
    /// The depth of each priority's queue; they add up to `depth`.
    pub by_priority: [u64; PRIORITIES],
}

impl EndpointCounters {
    fn apply(&mut self, change: &EndpointChange) {
        for (depth, change) in self.by_priority.iter_mut().zip(change.by_priority) {
            *depth = depth.saturating_add_signed(change);
        }
        self.depth = self.by_priority.iter().sum();
        self.expired += change.expired;
        self.quota += change.quota;
        self.disk_full += change.disk_full;
    }
}

/// What one batch changes in an endpoint's counters.
#[derive(Debug, Clone, Copy, Default)]
struct EndpointChange {
    by_priority: [i64; PRIORITIES],
    expired: u64,
    quota: u64,
    disk_full: u64,
}

impl EndpointChange {
    fn dropped(&self) -> u64 {
        self.expired + self.quota + self.disk_full
    }
}

/// Counters of the writer's commits.
#[derive(Debug, Default)]
pub(crate) struct CommitCounters {
    pub commits: AtomicU64,
    pub durable_commits: AtomicU64,
    pub operations: AtomicU64,
    pub largest_batch: AtomicU64,
}

/// What wakes a module's input stream.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// Per priority, bumped after each commit that queued messages of that
    /// priority for the module.
    pub arrivals: [AtomicU64; PRIORITIES],
    /// Bumped when the module's stream is replaced or the module removed.
    pub epoch: AtomicU64,
    pub notify: Notify,
}

/// State the writer thread and the hub share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub endpoints: Mutex<HashMap<String, EndpointCounters>>,
    pub commits: CommitCounters,
    pub stored_bytes: AtomicU64,
    wakes: Mutex<HashMap<String, Arc<Wake>>>,
    /// Every id up to this one is committed or refused: the writer takes
    /// appends in id order and bumps this after each batch.
    processed_through: AtomicU64,
    /// Notified after every batch, for streams waiting on
    /// `processed_through`.
    pub processed: Notify,
    /// Message bytes held by all tails together (see [`TAILS_BYTES`]).
    tail_bytes: AtomicUsize,
}

impl Shared {
    /// Whether every id below `id` is committed (or was refused).
    pub fn processed_below(&self, id: u64) -> bool {
        self.processed_through
            .load(Ordering::Acquire)
            .saturating_add(1)
            >= id
    }

    /// The wake of `module`'s input stream.
    pub fn wake(&self, module: &str) -> Arc<Wake> {
        let mut wakes = self
            .wakes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        wakes.entry(module.to_owned()).or_default().clone()
    }

    fn arrived(&self, modules: &HashMap<String, u16>) {
        let wakes = self
            .wakes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for (module, priorities) in modules {
            if let Some(wake) = wakes.get(module) {
                for (priority, arrivals) in wake.arrivals.iter().enumerate() {
                    if priorities & (1 << priority) != 0 {
                        arrivals.fetch_add(1, Ordering::Release);
                    }
                }
                wake.notify.notify_waiters();
            }
        }
    }
}

/// Why a queue entry is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    /// The module acknowledged it.
    Delivered,
    /// Its time to live passed.
    Expired,
    /// Evicted to make room under the size limit.
    Quota,
    /// Evicted to make room while the disk is full.
    DiskFull,
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A job runs in a batch, or gets `None` when its batch could not start (its
/// waiter then hears the batch's error).
type Job = Box<dyn for<'b, 't> FnOnce(Option<&'b mut Batch<'t>>) -> Completion + Send>;

enum Op {
    Job {
        job: Job,
        durable: bool,
        /// The id the gate reserved for a message the job may append.
        reserved: Option<u64>,
    },
    /// A message already handed to the live tails.
    Append {
        id: u64,
        record: Vec<u8>,
        targets: Vec<Target>,
        durable: bool,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Remove {
        entry: QueueEntry,
        reason: Removal,
        token: Option<RemovalToken>,
        /// Set by the writer when the entry's append is in the same batch:
        /// neither is written.
        elided: bool,
    },
}

/// Hands out message ids and new messages to the live tails; see the
/// module documentation.
struct Gate {
    next_id: u64,
    tails: HashMap<String, Arc<Tail>>,
    ops: mpsc::Sender<Op>,
}

impl Gate {
    /// Hands `message` to the tails of `targets`, dropping the tails that
    /// overflow from the gate; returns the tails now crowded.
    fn hand_off(
        &mut self,
        shared: &Shared,
        id: u64,
        message: &StoredMessage,
        targets: &[Target],
        live: Option<&Arc<LiveAcks>>,
    ) -> Vec<Arc<Tail>> {
        let mut crowded = Vec::new();
        for target in targets {
            let Some(tail) = self.tails.get(&target.target) else {
                continue;
            };
            if id < tail.from {
                continue;
            }
            let pending = Pending {
                entry: QueueEntry {
                    target: target.target.clone(),
                    priority: target.priority,
                    id,
                    input: target.input.clone(),
                },
                expiry: target.expiry,
                record: message.clone(),
                live: live.cloned(),
            };
            match tail.push(shared, pending) {
                Pushed::Overflowed => {
                    self.tails.remove(&target.target);
                }
                Pushed::Crowded => crowded.push(tail.clone()),
                Pushed::Taken => {}
            }
        }
        crowded
    }
}

/// Messages for one module's input stream, handed over as they are
/// accepted (see the module documentation).
#[derive(Debug)]
pub(crate) struct Tail {
    module: String,
    /// The first id the tail receives; every message for the module from
    /// this id on comes through it, until it overflows.
    pub from: u64,
    state: Mutex<TailState>,
    wake: Arc<Wake>,
    /// Notified when the stream takes a message.
    taken: Notify,
}

#[derive(Debug, Default)]
struct TailState {
    /// Per priority, so that a more urgent message overtakes the ones
    /// waiting, as it does in the store; FIFO within each.
    messages: [VecDeque<(Pending, usize)>; PRIORITIES],
    count: usize,
    bytes: usize,
    overflowed: bool,
}

impl Tail {
    fn lock(&self) -> std::sync::MutexGuard<'_, TailState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a message, unless the tail or all tails together are full (the
    /// tail then takes nothing from now on).
    fn push(&self, shared: &Shared, pending: Pending) -> Pushed {
        let size = pending.record.message.size();
        let mut state = self.lock();
        if state.overflowed {
            return Pushed::Overflowed;
        }
        let total = shared.tail_bytes.fetch_add(size, Ordering::AcqRel) + size;
        let priority = usize::from(pending.entry.priority).min(PRIORITIES - 1);
        let pushed = if state.count >= TAIL_MESSAGES || total > TAILS_BYTES {
            shared.tail_bytes.fetch_sub(size, Ordering::AcqRel);
            state.overflowed = true;
            Pushed::Overflowed
        } else {
            state.messages[priority].push_back((pending, size));
            state.count += 1;
            state.bytes += size;
            if state.count >= TAIL_CROWDED {
                Pushed::Crowded
            } else {
                Pushed::Taken
            }
        };
        drop(state);
        self.wake.notify.notify_waiters();
        pushed
    }

    /// The oldest of the most urgent messages, or whether the tail
    /// overflowed once it is empty.
    pub fn pop(&self, shared: &Shared) -> Result<Option<Pending>, Overflowed> {
        let mut state = self.lock();
        let next = state.messages.iter_mut().find_map(VecDeque::pop_front);
        match next {
            Some((pending, size)) => {
                state.count -= 1;
                state.bytes -= size;
                let crowded = state.count >= TAIL_CROWDED;
                drop(state);
                shared.tail_bytes.fetch_sub(size, Ordering::AcqRel);
                if !crowded {
                    self.taken.notify_waiters();
                }
                Ok(Some(pending))
            }
            None if state.overflowed => Err(Overflowed),
            None => Ok(None),
        }
    }

    /// Gives back what the tail holds (its stream is done with it).
    fn release(&self, shared: &Shared) {
        let mut state = self.lock();
        state.messages.iter_mut().for_each(VecDeque::clear);
        state.count = 0;
        shared
            .tail_bytes
            .fetch_sub(std::mem::take(&mut state.bytes), Ordering::AcqRel);
        state.overflowed = true;
        drop(state);
        self.taken.notify_waiters();
    }

    /// Takes no more messages; the stream reads the store once it has
    /// delivered those held.
    fn overflow(&self) {
        self.lock().overflowed = true;
        self.wake.notify.notify_waiters();
        self.taken.notify_waiters();
    }

    fn crowded(&self) -> bool {
        let state = self.lock();
        !state.overflowed && state.count >= TAIL_CROWDED
    }

    /// Resolves once the tail is no longer crowded.
    async fn uncrowded(&self) {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if !self.crowded() {
                return;
            }
            taken.await;
        }
    }
}

/// What became of a message handed to a tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushed {
    Taken,
    /// Taken, and the tail is now crowded (see [`TAIL_CROWDED`]).
    Crowded,
    /// Not taken: the tail overflowed.
    Overflowed,
}

/// A tail that fell behind: its stream reads the store again.
#[derive(Debug)]
pub(crate) struct Overflowed;

/// Counts a removal from when it is asked for until its batch is
/// committed (or fails), so that a stream counts acknowledgements not yet
/// in the store against its window and the writer's channel stays short.
pub(crate) struct RemovalToken {
    unconfirmed: Arc<AtomicUsize>,
    wake: Arc<Wake>,
}

impl RemovalToken {
    pub fn new(unconfirmed: &Arc<AtomicUsize>, wake: &Arc<Wake>) -> Self {
        unconfirmed.fetch_add(1, Ordering::AcqRel);
        Self {
            unconfirmed: unconfirmed.clone(),
            wake: wake.clone(),
        }
    }
}

impl Drop for RemovalToken {
    fn drop(&mut self) {
        self.unconfirmed.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify.notify_waiters();
    }
}

/// The store.
pub(crate) struct Store {
    /// Readers hold the lock only to begin a transaction; the writer takes
    /// it exclusively to compact the file.
    db: Arc<RwLock<Database>>,
    path: PathBuf,
    /// For operations that need no id: jobs and removals.
    ops: mpsc::Sender<Op>,
    gate: Arc<Mutex<Gate>>,
    writer: Option<std::thread::JoinHandle<()>>,
    pub shared: Arc<Shared>,
}

impl Drop for Store {
    /// Stops the writer after it committed what is queued, so that the
    /// database is closed (and may be opened again) when the store is gone.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.ops, closed.clone()));
        drop(std::mem::replace(&mut self.gate().ops, closed));
        if let Some(writer) = self.writer.take() {
            // A job that held the last reference to the hub ends on the
            // writer thread itself, which then finishes on its own.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

impl Store {
    /// Opens (creates) the database at `path` and its reserve file beside
    /// it, and starts its writer thread.
    pub fn open(path: &Path, limit: u64, when_full: WhenFull) -> Result<Self, StoreError> {
        Self::open_with(path, limit, when_full, Tuning::default())
    }

    /// [`Store::open`] with other intervals (tests).
    fn open_with(
        path: &Path,
        limit: u64,
        when_full: WhenFull,
        tuning: Tuning,
    ) -> Result<Self, StoreError> {
        let path_text = path.display().to_string();
        let error = |error: redb::Error| database_error(&path_text, error);
        let db = open_database(path)?;
        let shared = Arc::new(Shared::default());
        // Creating the tables up front lets readers open them without
        // ever finding one missing.
        let txn = db.begin_write().map_err(|e| error(e.into()))?;
        let (next_id, stored_bytes) = {
            txn.open_table(MESSAGES).map_err(|e| error(e.into()))?;
            txn.open_table(REFERENCES).map_err(|e| error(e.into()))?;
            txn.open_table(EXPIRY).map_err(|e| error(e.into()))?;
            txn.open_table(DOCUMENTS).map_err(|e| error(e.into()))?;
            txn.open_table(QUEUE).map_err(|e| error(e.into()))?;
            let counters = txn.open_table(COUNTERS).map_err(|e| error(e.into()))?;
            let endpoints = endpoint_counters(&txn).map_err(error)?;
            *shared
                .endpoints
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()) = endpoints;
            let read = |name| -> Result<u64, StoreError> {
                Ok(counters
                    .get(name)
                    .map_err(|e| error(e.into()))?
                    .map_or(0, |value| value.value()))
            };
            (read(NEXT_ID)?.max(1), read(STORED_BYTES)?)
        };
        txn.commit().map_err(|e| error(e.into()))?;
        shared.stored_bytes.store(stored_bytes, Ordering::Relaxed);
        shared
            .processed_through
            .store(next_id - 1, Ordering::Release);
        let db = Arc::new(RwLock::new(db));
        let (ops, receiver) = mpsc::channel();
        let gate = Arc::new(Mutex::new(Gate {
            next_id,
            tails: HashMap::new(),
            ops: ops.clone(),
        }));
        let mut writer = Writer {
            db: db.clone(),
            path: path_text.clone(),
            receiver,
            shared: shared.clone(),
            gate: gate.clone(),
            next_id,
            stored_bytes,
            limit,
            when_full,
            tuning,
            reserve: Reserve::beside(path, limit),
            disk_checked: Instant::now(),
            disk_cap: None,
            broken: None,
            retry: VecDeque::new(),
            sweep_unfinished: false,
            expired_log: LogThrottle::default(),
            evicted_log: LogThrottle::default(),
            failure_log: LogThrottle::default(),
        };
        writer.take_reserve();
        let writer = std::thread::Builder::new()
            .name("edge-hub-store".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| error(redb::Error::Io(e)))?;
        Ok(Self {
            db,
            path: path.to_owned(),
            gate,
            ops,
            writer: Some(writer),
            shared,
        })
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        lock_gate(&self.gate)
    }

    fn database(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|poison| poison.into_inner())
    }

    fn database_error(&self, error: impl Into<redb::Error>) -> StoreError {
        database_error(&self.path.display().to_string(), error)
    }

    /// Runs `job` in the writer's next transaction; returns its result once
    /// the transaction is committed (fsynced when `durable`).
    pub async fn write<R, F>(&self, durable: bool, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&mut Batch<'t>) -> Result<R, StoreError> + Send + 'static,
    {
        let (op, receiver) = Self::job(durable, None, job);
        self.ops.send(op).map_err(|_| StoreError::Closed)?;
        receiver.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::write`] for a job that may append one message: the job gets
    /// its id, which [`Batch::append`] takes, so that ids stay in channel
    /// order.
    pub async fn write_with_message<R, F>(&self, durable: bool, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&mut Batch<'t>, MessageId) -> Result<R, StoreError> + Send + 'static,
    {
        let receiver = {
            let mut gate = self.gate();
            let id = gate.next_id;
            let (op, receiver) =
                Self::job(durable, Some(id), move |batch| job(batch, MessageId(id)));
            gate.ops.send(op).map_err(|_| StoreError::Closed)?;
            gate.next_id += 1;
            receiver
        };
        receiver.await.map_err(|_| StoreError::Closed)?
    }

    fn job<R, F>(
        durable: bool,
        reserved: Option<u64>,
        job: F,
    ) -> (Op, oneshot::Receiver<Result<R, StoreError>>)
    where
        R: Send + 'static,
        F: for<'t> FnOnce(&mut Batch<'t>) -> Result<R, StoreError> + Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let job: Job = Box::new(move |batch| {
            // Without a batch the commit fails, and its error is the one
            // the waiter hears.
            let result = match batch {
                Some(batch) => {
                    let result = job(batch);
                    if let Err(error @ StoreError::Database { .. }) = &result {
                        batch.failed.get_or_insert_with(|| error.clone());
                    }
                    result
                }
                None => Err(StoreError::Closed),
            };
            Box::new(move |commit| {
                let _ = sender.send(commit.and(result));
            })
        });
        (
            Op::Job {
                job,
                durable,
                reserved,
            },
            receiver,
        )
    }

    /// Queues `message` for `targets` (one stored copy) and hands it to the
    /// live tails of the targets' modules at once; returns once it is
    /// committed (fsynced when `durable`).
    pub async fn append(
        &self,
        message: StoredMessage,
        targets: Vec<Target>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let record = encode_record(&message);
        let (done, receiver) = oneshot::channel();
        let live = Arc::new(LiveAcks::new(targets.len()));
        let crowded = {
            let mut gate = self.gate();
            let id = gate.next_id;
            // The op goes first: a removal of the entry (after a live
            // delivery) then always follows the append in the channel.
            gate.ops
                .send(Op::Append {
                    id,
                    record,
                    targets: targets.clone(),
                    durable,
                    done,
                })
                .map_err(|_| StoreError::Closed)?;
            gate.next_id += 1;
            gate.hand_off(&self.shared, id, &message, &targets, Some(&live))
        };
        let result = tokio::select! {
            committed = receiver => committed.map_err(|_| StoreError::Closed)?,
            () = live.all(), if !targets.is_empty() => Ok(()),
        };
        // Flow control (see [`TAIL_CROWDED`]): the acknowledgement waits, not
        // the message, so messages keep the order they were sent in.
        for tail in crowded {
            if tokio::time::timeout(TAIL_WAIT, tail.uncrowded())
                .await
                .is_err()
            {
                // The module did not keep up within the wait: it reads the
                // store from now on, and nobody waits for it any more.
                self.leave_gate(&tail);
                tail.overflow();
            }
        }
        result
    }

    /// Removes `tail` from the gate if it is still its module's.
    fn leave_gate(&self, tail: &Arc<Tail>) {
        let mut gate = self.gate();
        if gate
            .tails
            .get(&tail.module)
            .is_some_and(|current| Arc::ptr_eq(current, tail))
        {
            gate.tails.remove(&tail.module);
        }
    }

    /// Registers a live tail for `module`'s stream, replacing any earlier
    /// one: every message for the module from the returned tail's `from` on
    /// is handed to it.
    pub fn join_tail(&self, module: &str, wake: &Arc<Wake>) -> Arc<Tail> {
        let mut gate = self.gate();
        let tail = Arc::new(Tail {
            module: module.to_owned(),
            from: gate.next_id,
            state: Mutex::default(),
            wake: wake.clone(),
            taken: Notify::new(),
        });
        if let Some(previous) = gate.tails.insert(module.to_owned(), tail.clone()) {
            previous.release(&self.shared);
        }
        tail
    }

    /// Unregisters `tail` (if it is still its module's) and gives back
    /// what it holds.
    pub fn leave_tail(&self, tail: &Arc<Tail>) {
        self.leave_gate(tail);
        tail.release(&self.shared);
    }

    /// Removes a queue entry in a later batch, without waiting; `token`
    /// is dropped once the batch is committed.
    pub fn remove(&self, entry: QueueEntry, reason: Removal, token: Option<RemovalToken>) {
        // The writer only stops when the store is dropped, after which
        // nobody can ask to remove anything, so a failed send loses nothing.
        let _ = self.ops.send(Op::Remove {
            entry,
            reason,
            token,
            elided: false,
        });
    }

    /// Reads up to `limit` of `target`'s queue entries after the cursors
    /// (one per priority: the last entry delivered) and with ids below
    /// `below`, priority 0 first, and stops early past [`READ_BUDGET_BYTES`]
    /// of records, so a stream holds little however long its queues are.
    pub fn read_queue(
        &self,
        target: &str,
        cursors: &[Option<(u64, String)>],
        below: u64,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let txn = self
            .database()
            .begin_read()
            .map_err(|e| self.database_error(e))?;
        let queue = txn.open_table(QUEUE).map_err(|e| self.database_error(e))?;
        let messages = txn
            .open_table(MESSAGES)
            .map_err(|e| self.database_error(e))?;
        let mut pending = Vec::new();
        let mut bytes_read = 0;
        for priority in 0..=LOWEST_PRIORITY {
            if pending.len() >= limit || bytes_read >= READ_BUDGET_BYTES {
                break;
            }
            let cursor = cursors.get(usize::from(priority)).cloned().flatten();
            if below == 0 || cursor.as_ref().is_some_and(|(id, _)| *id >= below) {
                continue;
            }
            let lower = match &cursor {
                Some((id, input)) => Bound::Excluded((target, priority, *id, input.as_str())),
                None => Bound::Included((target, priority, 0, "")),
            };
            let upper = if below == u64::MAX {
                Bound::Excluded((target, priority + 1, 0, ""))
            } else {
                Bound::Excluded((target, priority, below, ""))
            };
            let range = queue
                .range::<(&str, u8, u64, &str)>((lower, upper))
                .map_err(|e| self.database_error(e))?;
            for item in range.take(limit - pending.len()) {
                if bytes_read >= READ_BUDGET_BYTES {
                    break;
                }
                let (key, expiry) = item.map_err(|e| self.database_error(e))?;
                let (_, priority, id, input) = key.value();
                let entry = QueueEntry {
                    target: target.to_owned(),
                    priority,
                    id,
                    input: input.to_owned(),
                };
                let bytes = messages.get(id).map_err(|e| self.database_error(e))?;
                bytes_read += bytes.as_ref().map_or(0, |bytes| bytes.value().len());
                let record = match bytes.map(|bytes| decode_record(bytes.value())) {
                    Some(Ok(record)) => record,
                    Some(Err(error)) => {
                        tracing::error!(endpoint = %entry.endpoint(), id, %error, "dropping a corrupt stored message");
                        self.remove(entry, Removal::Expired, None);
                        continue;
                    }
                    None => {
                        tracing::error!(endpoint = %entry.endpoint(), id, "dropping a queue entry whose message is missing");
                        self.remove(entry, Removal::Expired, None);
                        continue;
                    }
                };
                pending.push(Pending {
                    entry,
                    expiry: expiry.value(),
                    record,
                    live: None,
                });
            }
        }
        Ok(pending)
    }

    /// Checks the committed state against the store's invariants (see
    /// [`check_file`]).
    #[cfg(test)]
    pub fn check(&self) -> Result<Vec<String>, StoreError> {
        let txn = self
            .database()
            .begin_read()
            .map_err(|e| self.database_error(e))?;
        check_tables(&txn).map_err(|e| self.database_error(e))
    }

    /// Reads a document.
    pub fn document(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .database()
            .begin_read()
            .map_err(|e| self.database_error(e))?;
        let documents = txn
            .open_table(DOCUMENTS)
            .map_err(|e| self.database_error(e))?;
        let value = documents
            .get((kind, name))
            .map_err(|e| self.database_error(e))?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    /// Every document of `kind`, by name.
    pub fn documents(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self
            .database()
            .begin_read()
            .map_err(|e| self.database_error(e))?;
        let documents = txn
            .open_table(DOCUMENTS)
            .map_err(|e| self.database_error(e))?;
        let range = documents
            .range::<(&str, &str)>((kind, "")..)
            .map_err(|e| self.database_error(e))?;
        let mut found = Vec::new();
        for item in range {
            let (key, value) = item.map_err(|e| self.database_error(e))?;
            let (found_kind, name) = key.value();
            if found_kind != kind {
                break;
            }
            found.push((name.to_owned(), value.value().to_vec()));
        }
        Ok(found)
    }
}

/// Checks the store file at `path` (not open elsewhere) against the store's
/// invariants; returns every violation found, none for a consistent store.
pub fn check_file(path: &Path) -> Result<Vec<String>, StoreError> {
    let path_text = path.display().to_string();
    let db = Database::open(path).map_err(|error| StoreError::Open {
        path: path_text.clone(),
        message: error.to_string(),
    })?;
    let txn = db
        .begin_read()
        .map_err(|error| database_error(&path_text, error))?;
    check_tables(&txn).map_err(|error| database_error(&path_text, error))
}

/// The invariants of the tables (see the module documentation): every
/// queue entry has its message, and its expiry in the index; every message
/// has as many entries as its reference count says, and at least one (no
/// orphan bodies); `priority_depths` counts the queues exactly; the stored
/// bytes are the records' lengths plus [`ENTRY_OVERHEAD`] per entry; and
/// the next id is past every message.
fn check_tables(txn: &redb::ReadTransaction) -> Result<Vec<String>, redb::Error> {
    let mut violations = Vec::new();
    let messages = txn.open_table(MESSAGES)?;
    let references = txn.open_table(REFERENCES)?;
    let queue = txn.open_table(QUEUE)?;
    let expiry = txn.open_table(EXPIRY)?;
    let counters = txn.open_table(COUNTERS)?;
    let depths = txn.open_table(PRIORITY_DEPTHS)?;
    let mut entries_per_message = HashMap::<u64, u32>::new();
    let mut depth_counted = HashMap::<(String, u8), u64>::new();
    let mut expiry_expected = HashSet::new();
    let mut entries = 0u64;
    for item in queue.iter()? {
        let (key, until) = item?;
        let (target, priority, id, input) = key.value();
        entries += 1;
        *entries_per_message.entry(id).or_default() += 1;
        *depth_counted
            .entry((endpoint_name(target, input), priority))
            .or_default() += 1;
        if until.value() != NEVER {
            expiry_expected.insert((
                until.value(),
                target.to_owned(),
                priority,
                id,
                input.to_owned(),
            ));
        }
        if messages.get(id)?.is_none() {
            violations.push(format!(
                "queue entry {} #{id} has no message",
                endpoint_name(target, input)
            ));
        }
    }
    for item in expiry.iter()? {
        let (key, _) = item?;
        let (until, target, priority, id, input) = key.value();
        let owned = (until, target.to_owned(), priority, id, input.to_owned());
        if !expiry_expected.remove(&owned) {
            violations.push(format!(
                "expiry index entry {} #{id} has no queue entry",
                endpoint_name(target, input)
            ));
        }
    }
    for (_, target, _, id, input) in &expiry_expected {
        violations.push(format!(
            "queue entry {} #{id} is missing from the expiry index",
            endpoint_name(target, input)
        ));
    }
    let mut record_bytes = 0u64;
    let mut largest_id = 0;
    for item in messages.iter()? {
        let (id, record) = item?;
        let id = id.value();
        largest_id = largest_id.max(id);
        record_bytes += u64::try_from(record.value().len()).unwrap_or(u64::MAX);
        let counted = references.get(id)?.map_or(1, |count| count.value());
        match entries_per_message.get(&id) {
            None => violations.push(format!("message #{id} has no queue entry (an orphan)")),
            Some(found) if *found != counted => violations.push(format!(
                "message #{id} has {found} queue entries but a reference count of {counted}"
            )),
            Some(_) => {}
        }
    }
    for item in references.iter()? {
        let (id, _) = item?;
        if messages.get(id.value())?.is_none() {
            violations.push(format!(
                "reference count of #{} without a message",
                id.value()
            ));
        }
    }
    for item in depths.iter()? {
        let (key, depth) = item?;
        let (endpoint, priority) = key.value();
        let counted = depth_counted
            .remove(&(endpoint.to_owned(), priority))
            .unwrap_or(0);
        if counted != depth.value() || counted == 0 {
            violations.push(format!(
                "{endpoint} priority {priority}: depth {} but {counted} queue entries",
                depth.value()
            ));
        }
    }
    for ((endpoint, priority), counted) in depth_counted {
        violations.push(format!(
            "{endpoint} priority {priority}: {counted} queue entries but no depth"
        ));
    }
    let counter = |name| -> Result<u64, redb::Error> {
        Ok(counters.get(name)?.map_or(0, |value| value.value()))
    };
    let stored = counter(STORED_BYTES)?;
    let expected = record_bytes + entries * ENTRY_OVERHEAD;
    if stored != expected {
        violations.push(format!(
            "stored bytes {stored}, but the records and entries make {expected}"
        ));
    }
    if largest_id > 0 && counter(NEXT_ID)? <= largest_id {
        violations.push(format!(
            "next id {} is not past message #{largest_id}",
            counter(NEXT_ID)?
        ));
    }
    Ok(violations)
}

/// The endpoints' queue depths from `priority_depths`, after counting the
/// queues of a store written before priorities were counted.
fn endpoint_counters(
    txn: &WriteTransaction,
) -> Result<HashMap<String, EndpointCounters>, redb::Error> {
    let mut endpoints = HashMap::<String, EndpointCounters>::new();
    let mut priority_depths = txn.open_table(PRIORITY_DEPTHS)?;
    let has_legacy = txn
        .list_tables()?
        .any(|table| table.name() == LEGACY_DEPTHS.name());
    if has_legacy {
        let queue = txn.open_table(QUEUE)?;
        let mut counted = HashMap::<(String, u8), u64>::new();
        for item in queue.iter()? {
            let (key, _) = item?;
            let (target, priority, _, input) = key.value();
            *counted
                .entry((endpoint_name(target, input), priority))
                .or_default() += 1;
        }
        for ((endpoint, priority), depth) in &counted {
            priority_depths.insert((endpoint.as_str(), *priority), depth)?;
        }
        txn.delete_table(LEGACY_DEPTHS)?;
    }
    for item in priority_depths.iter()? {
        let (key, depth) = item?;
        let (endpoint, priority) = key.value();
        let counters = endpoints.entry(endpoint.to_owned()).or_default();
        if let Some(slot) = counters.by_priority.get_mut(usize::from(priority)) {
            *slot = depth.value();
        }
        counters.depth = counters.by_priority.iter().sum();
    }
    Ok(endpoints)
}

/// Opens (creates) the database file; redb repairs a file a crash or a
/// failed commit left behind.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|error| StoreError::Open {
            path: path.display().to_string(),
            message: error.to_string(),
        })
}

fn lock_gate(gate: &Mutex<Gate>) -> std::sync::MutexGuard<'_, Gate> {
    gate.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A redb error as a store error: a full disk (or disk quota) is
/// [`StoreError::DiskFull`], which the writer answers by taking its reserve
/// back (see the module documentation).
fn database_error(path: &str, error: impl Into<redb::Error>) -> StoreError {
    let error = error.into();
    if let redb::Error::Io(io) = &error
        && is_disk_full(io)
    {
        return StoreError::DiskFull {
            path: path.to_owned(),
        };
    }
    StoreError::Database {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// Whether an I/O error says the file system (or the user's quota on it)
/// has no room.
fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// The id [`Store::write_with_message`] reserved for the message its job
/// may append.
#[derive(Debug)]
pub(crate) struct MessageId(u64);

/// The tables and pending in-memory changes of one write transaction.
pub(crate) struct Batch<'t> {
    messages: Table<'t, u64, &'static [u8]>,
    references: Table<'t, u64, u32>,
    queue: Table<'t, QueueKey, u64>,
    expiry: Table<'t, ExpiryKey, ()>,
    documents: Table<'t, (&'static str, &'static str), &'static [u8]>,
    path: &'t str,
    gate: &'t Mutex<Gate>,
    shared: &'t Shared,
    /// One past the largest id appended so far.
    next_id: u64,
    stored_bytes: u64,
    limit: u64,
    when_full: WhenFull,
    /// While the disk is full: the stored bytes the store may not grow past.
    disk_cap: Option<u64>,
    /// Per endpoint: changes of depth by priority, dropped entries.
    endpoints: HashMap<String, EndpointChange>,
    /// Targets that got new messages, with a bit per priority.
    arrived: HashMap<String, u16>,
    /// A storage error: the batch is aborted and every waiter fails.
    failed: Option<StoreError>,
}

impl<'t> Batch<'t> {
    fn open(txn: &'t WriteTransaction, writer: &'t Writer) -> Result<Self, redb::Error> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            references: txn.open_table(REFERENCES)?,
            queue: txn.open_table(QUEUE)?,
            expiry: txn.open_table(EXPIRY)?,
            documents: txn.open_table(DOCUMENTS)?,
            path: &writer.path,
            gate: &writer.gate,
            shared: &writer.shared,
            next_id: writer.next_id,
            stored_bytes: writer.stored_bytes,
            limit: writer.limit,
            when_full: writer.when_full,
            disk_cap: writer.disk_cap,
            endpoints: HashMap::new(),
            arrived: HashMap::new(),
            failed: None,
        })
    }

    /// Stores `message` once under the id its job reserved and queues it for
    /// every target, then hands it to the targets' live tails; over the size
    /// limit, see [`Batch::insert`].
    pub fn append(
        &mut self,
        id: MessageId,
        message: &StoredMessage,
        targets: &[Target],
    ) -> Result<(), StoreError> {
        self.insert(id.0, &encode_record(message), targets)?;
        // Twin change notifications are few: they do not wait for a crowded
        // module.
        lock_gate(self.gate).hand_off(self.shared, id.0, message, targets, None);
        Ok(())
    }

    /// Stores `record` once under `id` and queues it for every target.
    /// Over the size limit (or, while the disk is full, past the disk's cap)
    /// it first drops expired entries, then with [`WhenFull::DropOldest`]
    /// evicts entries no more urgent than the message; when the message
    /// still does not fit it is refused with [`StoreError::Full`] (or
    /// [`StoreError::DiskFull`]) and nothing of it is written.
    fn insert(&mut self, id: u64, record: &[u8], targets: &[Target]) -> Result<(), StoreError> {
        self.next_id = self.next_id.max(id.saturating_add(1));
        let Some(most_urgent) = targets.iter().map(|target| target.priority).min() else {
            return Ok(());
        };
        let count = u64::try_from(targets.len()).unwrap_or(u64::MAX);
        let needed = u64::try_from(record.len())
            .unwrap_or(u64::MAX)
            .saturating_add(ENTRY_OVERHEAD.saturating_mul(count));
        self.make_room(needed, most_urgent)?;
        if self.stored_bytes.saturating_add(needed) > self.limit {
            return Err(StoreError::Full {
                needed,
                stored: self.stored_bytes,
                limit: self.limit,
            });
        }
        if self
            .disk_cap
            .is_some_and(|cap| self.stored_bytes.saturating_add(needed) > cap)
        {
            return Err(StoreError::DiskFull {
                path: self.path.to_owned(),
            });
        }
        self.messages
            .insert(id, record)
            .map_err(|e| database_error(self.path, e))?;
        // A message with one entry (the common case) has no reference
        // count: a missing count means one.
        if targets.len() > 1 {
            self.references
                .insert(id, u32::try_from(targets.len()).unwrap_or(u32::MAX))
                .map_err(|e| database_error(self.path, e))?;
        }
        for target in targets {
            let key = (
                target.target.as_str(),
                target.priority,
                id,
                target.input.as_str(),
            );
            self.queue
                .insert(key, target.expiry)
                .map_err(|e| database_error(self.path, e))?;
            if target.expiry != NEVER {
                self.expiry
                    .insert(
                        (
                            target.expiry,
                            target.target.as_str(),
                            target.priority,
                            id,
                            target.input.as_str(),
                        ),
                        (),
                    )
                    .map_err(|e| database_error(self.path, e))?;
            }
            let change = self
                .endpoints
                .entry(endpoint_name(&target.target, &target.input))
                .or_default();
            if let Some(depth) = change.by_priority.get_mut(usize::from(target.priority)) {
                *depth += 1;
            }
            *self.arrived.entry(target.target.clone()).or_default() |=
                1 << target.priority.min(LOWEST_PRIORITY);
        }
        self.stored_bytes += needed;
        Ok(())
    }

    /// Frees room for `needed` more bytes under the limit and the disk's cap
    /// as far as the policy allows: expired entries first, then evictions.
    /// A message that cannot fit even in an empty store evicts nothing.
    fn make_room(&mut self, needed: u64, most_urgent: u8) -> Result<(), StoreError> {
        let cap = self.disk_cap.map_or(self.limit, |cap| cap.min(self.limit));
        if self.stored_bytes.saturating_add(needed) <= cap {
            return Ok(());
        }
        // Expired messages go first whatever the policy; the expiry index
        // finds them without a scan, so this is cheap while none expired.
        self.sweep(now_ms())?;
        if self.when_full == WhenFull::RefuseNew || needed > cap {
            return Ok(());
        }
        self.evict(needed, self.limit, most_urgent, Removal::Quota)?;
        if let Some(cap) = self.disk_cap {
            self.evict(needed, cap, most_urgent, Removal::DiskFull)?;
        }
        Ok(())
    }

    /// Evicts queue entries until `needed` more bytes fit under `limit`:
    /// the least urgent priority first (but none more urgent than
    /// `most_urgent`, the new message's), the oldest first within it,
    /// across every endpoint alike. An entry a live tail or a stream holds
    /// in memory may still be delivered; its acknowledgement then finds the
    /// entry gone, which changes nothing, so it is delivered once and
    /// counted as evicted.
    fn evict(
        &mut self,
        needed: u64,
        limit: u64,
        most_urgent: u8,
        reason: Removal,
    ) -> Result<(), StoreError> {
        while self.stored_bytes.saturating_add(needed) > limit {
            let candidates = self.eviction_candidates(most_urgent)?;
            if candidates.is_empty() {
                return Ok(());
            }
            for entry in &candidates {
                if self.stored_bytes.saturating_add(needed) <= limit {
                    return Ok(());
                }
                self.remove_entry(entry, reason)?;
            }
        }
        Ok(())
    }

    /// Up to [`EVICTION_CANDIDATES`] entries of the least urgent priority
    /// (no more urgent than `most_urgent`) that has any, oldest (lowest id)
    /// first across every target.
    fn eviction_candidates(&self, most_urgent: u8) -> Result<Vec<QueueEntry>, StoreError> {
        let targets = self.queued_targets()?;
        for priority in (most_urgent..=LOWEST_PRIORITY).rev() {
            let mut found = Vec::new();
            for target in &targets {
                let range = self
                    .queue
                    .range::<(&str, u8, u64, &str)>(
                        (target.as_str(), priority, 0, "")..(target.as_str(), priority + 1, 0, ""),
                    )
                    .map_err(|e| database_error(self.path, e))?;
                for item in range.take(EVICTION_CANDIDATES) {
                    let (key, _) = item.map_err(|e| database_error(self.path, e))?;
                    let (_, _, id, input) = key.value();
                    found.push(QueueEntry {
                        target: target.clone(),
                        priority,
                        id,
                        input: input.to_owned(),
                    });
                }
            }
            if !found.is_empty() {
                found.sort_by_key(|entry| entry.id);
                found.truncate(EVICTION_CANDIDATES);
                return Ok(found);
            }
        }
        Ok(Vec::new())
    }

    /// Every target with queue entries, one seek per target: the queue is
    /// ordered by target first, so the next target's first key is the
    /// first one past every priority of the last.
    fn queued_targets(&self) -> Result<Vec<String>, StoreError> {
        let past_priorities = u8::try_from(PRIORITIES).unwrap_or(u8::MAX);
        let mut targets: Vec<String> = Vec::new();
        loop {
            let next = match targets.last() {
                Some(last) => self
                    .queue
                    .range::<(&str, u8, u64, &str)>((last.as_str(), past_priorities, 0, "")..)
                    .map_err(|e| database_error(self.path, e))?
                    .next(),
                None => self
                    .queue
                    .iter()
                    .map_err(|e| database_error(self.path, e))?
                    .next(),
            };
            let Some(item) = next else {
                return Ok(targets);
            };
            let (key, _) = item.map_err(|e| database_error(self.path, e))?;
            targets.push(key.value().0.to_owned());
        }
    }

    /// Removes a queue entry and releases its message; an entry already gone
    /// is no error (a stream redelivered it and both deliveries were acked).
    fn remove_entry(&mut self, entry: &QueueEntry, reason: Removal) -> Result<(), StoreError> {
        let key = (
            entry.target.as_str(),
            entry.priority,
            entry.id,
            entry.input.as_str(),
        );
        let expiry = match self
            .queue
            .remove(key)
            .map_err(|e| database_error(self.path, e))?
        {
            Some(expiry) => expiry.value(),
            None => return Ok(()),
        };
        if expiry != NEVER {
            self.expiry
                .remove((
                    expiry,
                    entry.target.as_str(),
                    entry.priority,
                    entry.id,
                    entry.input.as_str(),
                ))
                .map_err(|e| database_error(self.path, e))?;
        }
        let change = self.endpoints.entry(entry.endpoint()).or_default();
        if let Some(depth) = change.by_priority.get_mut(usize::from(entry.priority)) {
            *depth -= 1;
        }
        match reason {
            Removal::Delivered => {}
            Removal::Expired => change.expired += 1,
            Removal::Quota => change.quota += 1,
            Removal::DiskFull => change.disk_full += 1,
        }
        self.stored_bytes = self.stored_bytes.saturating_sub(ENTRY_OVERHEAD);
        self.release(entry.id)
    }

    fn release(&mut self, id: u64) -> Result<(), StoreError> {
        let count = self
            .references
            .get(id)
            .map_err(|e| database_error(self.path, e))?
            .map_or(0, |count| count.value());
        if count > 1 {
            self.references
                .insert(id, count - 1)
                .map_err(|e| database_error(self.path, e))?;
            return Ok(());
        }
        self.references
            .remove(id)
            .map_err(|e| database_error(self.path, e))?;
        let length = self
            .messages
            .remove(id)
            .map_err(|e| database_error(self.path, e))?
            .map_or(0, |record| record.value().len());
        self.stored_bytes = self
            .stored_bytes
            .saturating_sub(u64::try_from(length).unwrap_or(u64::MAX));
        Ok(())
    }

    /// Removes every queue entry of `target` (a module that left the
    /// deployment).
    pub fn remove_target(&mut self, target: &str) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let entries = {
                let range = self
                    .queue
                    .range::<(&str, u8, u64, &str)>(
                        (target, 0, 0, "")..(target, u8::MAX, u64::MAX, ""),
                    )
                    .map_err(|e| database_error(self.path, e))?;
                let mut entries = Vec::new();
                for item in range.take(SWEEP_LIMIT) {
                    let (key, _) = item.map_err(|e| database_error(self.path, e))?;
                    let (target, priority, id, input) = key.value();
                    entries.push(QueueEntry {
                        target: target.to_owned(),
                        priority,
                        id,
                        input: input.to_owned(),
                    });
                }
                entries
            };
            if entries.is_empty() {
                return Ok(removed);
            }
            for entry in &entries {
                self.remove_entry(entry, Removal::Delivered)?;
                removed += 1;
            }
        }
    }

    /// Removes up to [`SWEEP_LIMIT`] entries that expired before `now`;
    /// returns how many.
    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        let entries = {
            let range = self
                .expiry
                .range::<(u64, &str, u8, u64, &str)>(..(now, "", 0, 0, ""))
                .map_err(|e| database_error(self.path, e))?;
            let mut entries = Vec::new();
            for item in range.take(SWEEP_LIMIT) {
                let (key, _) = item.map_err(|e| database_error(self.path, e))?;
                let (_, target, priority, id, input) = key.value();
                entries.push(QueueEntry {
                    target: target.to_owned(),
                    priority,
                    id,
                    input: input.to_owned(),
                });
            }
            entries
        };
        for entry in &entries {
            self.remove_entry(entry, Removal::Expired)?;
        }
        Ok(entries.len())
    }

    /// A document.
    pub fn document(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .documents
            .get((kind, name))
            .map_err(|e| database_error(self.path, e))?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    /// Writes a document.
    pub fn put_document(&mut self, kind: &str, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.documents
            .insert((kind, name), value)
            .map_err(|e| database_error(self.path, e))?;
        Ok(())
    }

    /// Deletes a document, if there is one.
    pub fn delete_document(&mut self, kind: &str, name: &str) -> Result<(), StoreError> {
        self.documents
            .remove((kind, name))
            .map_err(|e| database_error(self.path, e))?;
        Ok(())
    }
}

impl Op {
    /// Whether the op's batch must be fsynced before its waiters hear back.
    fn needs_fsync(&self) -> bool {
        match self {
            Self::Job { durable, .. } => *durable,
            // An append whose every entry was elided writes nothing.
            Self::Append {
                durable, targets, ..
            } => *durable && !targets.is_empty(),
            Self::Remove { .. } => false,
        }
    }

    /// Whether the op changes the database.
    fn writes(&self) -> bool {
        match self {
            Self::Job { .. } => true,
            Self::Append { targets, .. } => !targets.is_empty(),
            Self::Remove { elided, .. } => !elided,
        }
    }

    /// The message id the op appends (or may append).
    fn message_id(&self) -> Option<u64> {
        match self {
            Self::Job { reserved, .. } => *reserved,
            Self::Append { id, .. } => Some(*id),
            Self::Remove { .. } => None,
        }
    }
}

/// Drops the entries of this batch's appends that this batch also removes
/// (a live delivery acknowledged before its message was committed), and
/// marks those removals elided: neither is written.
fn elide(ops: &mut [Op]) {
    let appended: HashSet<u64> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Append { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    if appended.is_empty() {
        return;
    }
    let mut removed: HashSet<QueueEntry> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Remove { entry, .. } if appended.contains(&entry.id) => Some(entry.clone()),
            _ => None,
        })
        .collect();
    if removed.is_empty() {
        return;
    }
    let mut elided = HashSet::new();
    for op in ops.iter_mut() {
        match op {
            Op::Append { id, targets, .. } => targets.retain(|target| {
                let entry = QueueEntry {
                    target: target.target.clone(),
                    priority: target.priority,
                    id: *id,
                    input: target.input.clone(),
                };
                match removed.take(&entry) {
                    Some(entry) => {
                        elided.insert(entry);
                        false
                    }
                    None => true,
                }
            }),
            Op::Remove {
                entry,
                elided: mark,
                ..
            } => *mark = elided.remove(entry),
            Op::Job { .. } => {}
        }
    }
}

/// The group-commit writer.
struct Writer {
    db: Arc<RwLock<Database>>,
    path: String,
    receiver: mpsc::Receiver<Op>,
    shared: Arc<Shared>,
    gate: Arc<Mutex<Gate>>,
    next_id: u64,
    stored_bytes: u64,
    limit: u64,
    when_full: WhenFull,
    tuning: Tuning,
    reserve: Reserve,
    /// When the free space was last checked while the disk is full.
    disk_checked: Instant,
    /// While the disk is full: the stored bytes the store may not grow past.
    disk_cap: Option<u64>,
    /// Why the database is unusable (it could not be opened again after a
    /// failed commit), and when that was last tried.
    broken: Option<(StoreError, Instant)>,
    /// The removals of failed batches, applied with the next batch.
    retry: VecDeque<(QueueEntry, Removal)>,
    /// The last sweep stopped at [`SWEEP_LIMIT`]: more expired entries wait.
    sweep_unfinished: bool,
    expired_log: LogThrottle,
    evicted_log: LogThrottle,
    failure_log: LogThrottle,
}

/// The writer's intervals.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    sweep_interval: Duration,
    compact_after_idle: Duration,
    disk_check_interval: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            sweep_interval: SWEEP_INTERVAL,
            compact_after_idle: COMPACT_AFTER_IDLE,
            disk_check_interval: DISK_CHECK_INTERVAL,
        }
    }
}

/// A file of allocated zeros beside the store that holds space back on its
/// file system. redb is copy-on-write, so even a transaction that only
/// deletes needs free pages: when the disk fills up, the writer deletes the
/// reserve, and the commits that free space (deliveries, expiry, eviction)
/// still have room; it takes the space back once the file system has room
/// again.
struct Reserve {
    path: PathBuf,
    bytes: u64,
}

/// The smallest reserve: room for redb to commit a batch of removals and
/// to repair its file on reopening.
const RESERVE_MINIMUM: u64 = 256 * 1024;
/// The largest reserve.
const RESERVE_MAXIMUM: u64 = 64 * 1024 * 1024;

impl Reserve {
    /// The reserve of the store at `store`: 1/64 of its size limit (16 MiB
    /// for the default 1 GiB), and no more than 1/64 of the file system it
    /// is on, within [`RESERVE_MINIMUM`] and [`RESERVE_MAXIMUM`]. An OS
    /// image's data partition may be small (tens of MiB) and also holds
    /// the deployments and the OS updates being written, which a reserve
    /// sized by the limit alone would crowd out.
    fn beside(store: &Path, limit: u64) -> Self {
        let directory = store.parent().unwrap_or(Path::new("."));
        let file_system = rustix::fs::statvfs(directory)
            .map(|stats| stats.f_blocks.saturating_mul(stats.f_frsize))
            .unwrap_or(u64::MAX);
        Self {
            path: store.with_file_name(RESERVE_FILE),
            bytes: (limit.min(file_system) / 64).clamp(RESERVE_MINIMUM, RESERVE_MAXIMUM),
        }
    }

    fn exists(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|metadata| metadata.len() == self.bytes)
    }

    /// Creates the file with its blocks allocated, then fsyncs it and its
    /// directory; a file that could not be completed is deleted, so it
    /// never holds space the writer does not know about.
    fn create(&self) -> std::io::Result<()> {
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .and_then(|file| {
                allocate(&file, self.bytes)?;
                file.sync_all()
            })
            .and_then(|()| match self.path.parent() {
                Some(directory) => std::fs::File::open(directory)?.sync_all(),
                None => Ok(()),
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }

    /// Deletes the file; returns whether there was one.
    fn release(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The bytes free for unprivileged use on the reserve's file system.
    fn available(&self) -> std::io::Result<u64> {
        let directory = self.path.parent().unwrap_or(Path::new("."));
        let stats = rustix::fs::statvfs(directory)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}

/// Allocates `bytes` for `file`, writing zeros where the file system cannot
/// allocate without writing.
fn allocate(file: &std::fs::File, bytes: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            use std::io::Write;
            let zeros = vec![0; 64 * 1024];
            let mut writer = std::io::BufWriter::new(file);
            let mut left = bytes;
            while left > 0 {
                let chunk = usize::try_from(left.min(64 * 1024)).unwrap_or(zeros.len());
                writer.write_all(&zeros[..chunk])?;
                left -= u64::try_from(chunk).unwrap_or(left);
            }
            writer.flush()
        }
        Err(error) => Err(error.into()),
    }
}

impl Writer {
    fn run(mut self) {
        let mut last_sweep = Instant::now();
        // When the last durable commit happened, and whether non-durable
        // commits came after it.
        let mut last_durable = Instant::now();
        let mut unflushed = false;
        // When the last operation came, and whether commits came since the
        // file was last checked for compaction.
        let mut last_activity = Instant::now();
        let mut compact_pending = false;
        loop {
            if self.disk_cap.is_some()
                && self.disk_checked.elapsed() >= self.tuning.disk_check_interval
            {
                self.check_disk();
            }
            if self
                .broken
                .as_ref()
                .is_some_and(|(_, tried)| tried.elapsed() >= REOPEN_INTERVAL)
            {
                self.reopen();
            }
            let mut wait = if self.sweep_unfinished {
                Duration::ZERO
            } else {
                self.tuning
                    .sweep_interval
                    .saturating_sub(last_sweep.elapsed())
            };
            if self.disk_cap.is_some() {
                wait = wait.min(
                    self.tuning
                        .disk_check_interval
                        .saturating_sub(self.disk_checked.elapsed()),
                );
            }
            if let Some((_, tried)) = &self.broken {
                wait = wait.min(REOPEN_INTERVAL.saturating_sub(tried.elapsed()));
            }
            if unflushed {
                wait = wait.min(CHECKPOINT_FLUSH.saturating_sub(last_durable.elapsed()));
            } else if compact_pending {
                let idle = self
                    .tuning
                    .compact_after_idle
                    .saturating_sub(last_activity.elapsed());
                if idle.is_zero() {
                    if self.compact_if_sparse() {
                        compact_pending = false;
                    } else {
                        // A read was in progress: try again after a while.
                        last_activity = Instant::now();
                    }
                    continue;
                }
                wait = wait.min(idle);
            }
            let mut ops = Vec::new();
            let mut closed = false;
            match self.receiver.recv_timeout(wait) {
                Ok(op) => ops.push(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => closed = true,
            }
            while ops.len() < MAXIMUM_BATCH {
                match self.receiver.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if !ops.is_empty() {
                last_activity = Instant::now();
            }
            elide(&mut ops);
            let sweep = self.sweep_unfinished || last_sweep.elapsed() >= self.tuning.sweep_interval;
            let flush = unflushed && (closed || last_durable.elapsed() >= CHECKPOINT_FLUSH);
            let durable = flush || ops.iter().any(Op::needs_fsync);
            if !ops.is_empty() || sweep || flush || !self.retry.is_empty() {
                if sweep {
                    last_sweep = Instant::now();
                }
                if self.commit(ops, sweep, durable) {
                    compact_pending = true;
                    if durable {
                        last_durable = Instant::now();
                        unflushed = false;
                    } else {
                        unflushed = true;
                    }
                }
            }
            if closed {
                return;
            }
        }
    }

    /// Makes sure the reserve exists; a disk without room for it puts the
    /// store in the disk-full state at once.
    fn take_reserve(&mut self) {
        if self.reserve.exists() {
            return;
        }
        match self.reserve.create() {
            Ok(()) => {}
            Err(error) if is_disk_full(&error) => self.disk_full(),
            Err(error) => tracing::warn!(
                path = %self.reserve.path.display(),
                %error,
                "cannot create the hub store's reserve file; should the disk fill up, the store may stop until space is freed"
            ),
        }
    }

    /// The disk is full: deletes the reserve, so that the commits that free
    /// space have room, and caps the store at what it holds plus a quarter
    /// of the reserve, so that messages between local modules (which are
    /// delivered and removed at once) keep flowing while backlogs cannot
    /// grow. Logged once per episode.
    fn disk_full(&mut self) {
        let released = match self.reserve.release() {
            Ok(released) => released,
            Err(error) => {
                tracing::warn!(path = %self.reserve.path.display(), %error, "cannot delete the hub store's reserve file");
                false
            }
        };
        let headroom = if released { self.reserve.bytes / 4 } else { 0 };
        let cap = self.stored_bytes.saturating_add(headroom);
        let first = self.disk_cap.is_none();
        self.disk_cap = Some(self.disk_cap.map_or(cap, |earlier| earlier.min(cap)));
        self.disk_checked = Instant::now();
        if first {
            tracing::warn!(
                path = %self.path,
                stored_bytes = self.stored_bytes,
                reserve_released = released,
                "the disk holding the hub store is full: the store keeps what it holds and no more (local routing goes on, backlogs do not grow, see when_full); free space on that file system and the hub recovers by itself"
            );
        }
    }

    /// While the disk is full: once the file system has room for the
    /// reserve twice over, takes the reserve back and lifts the cap.
    fn check_disk(&mut self) {
        self.disk_checked = Instant::now();
        let room = self
            .reserve
            .available()
            .is_ok_and(|available| available >= self.reserve.bytes.saturating_mul(2));
        if room && self.reserve.create().is_ok() {
            self.disk_cap = None;
            tracing::info!(
                path = %self.path,
                "the disk holding the hub store has room again: the store accepts messages up to its limit"
            );
        }
    }

    /// Closes the database and opens it again: after a failed write redb
    /// refuses every transaction until then. While it cannot be opened,
    /// readers see an empty placeholder and batches fail with the error.
    fn reopen(&mut self) {
        let mut database = self.db.write().unwrap_or_else(|poison| poison.into_inner());
        let placeholder =
            match Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()) {
                Ok(placeholder) => placeholder,
                Err(error) => {
                    self.broken = Some((database_error(&self.path, error), Instant::now()));
                    return;
                }
            };
        // The old database closes here, so that its file lock is released.
        drop(std::mem::replace(&mut *database, placeholder));
        match open_database(Path::new(&self.path)) {
            Ok(reopened) => {
                *database = reopened;
                if self.broken.take().is_some() {
                    tracing::info!(path = %self.path, "the hub store is open again");
                }
            }
            Err(error) => {
                if self.broken.is_none() {
                    tracing::error!(%error, "the hub store cannot be opened again after a failed write; retrying every second");
                }
                self.broken = Some((error, Instant::now()));
            }
        }
    }

    /// Compacts the file when it is much larger than what it holds (queues
    /// drained since it grew): redb reuses freed pages but only compaction
    /// gives the disk back. Returns whether the check is done (false: a
    /// read was in progress, try again later). A full disk is never
    /// compacted: compaction needs free space itself.
    fn compact_if_sparse(&mut self) -> bool {
        if self.disk_cap.is_some() || self.broken.is_some() {
            return true;
        }
        let size = || std::fs::metadata(&self.path).map_or(0, |metadata| metadata.len());
        let before = size();
        if before <= COMPACT_MINIMUM_BYTES
            || before <= self.stored_bytes.saturating_mul(COMPACT_RATIO) + COMPACT_MINIMUM_BYTES
        {
            return true;
        }
        let started = Instant::now();
        let mut database = self.db.write().unwrap_or_else(|poison| poison.into_inner());
        let mut passes = 0;
        loop {
            match database.compact() {
                Ok(true) if passes < COMPACT_PASSES => passes += 1,
                Ok(_) => break,
                Err(redb::CompactionError::TransactionInProgress) => return false,
                Err(error) => {
                    tracing::warn!(%error, "the hub store could not be compacted; it keeps its size");
                    return true;
                }
            }
        }
        drop(database);
        tracing::info!(
            before_bytes = before,
            after_bytes = size(),
            milliseconds = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "compacted the hub store after its queues drained"
        );
        true
    }

    /// Records that every id up to `last_id` is processed.
    fn processed(&self, last_id: Option<u64>) {
        if let Some(last_id) = last_id {
            self.shared
                .processed_through
                .fetch_max(last_id, Ordering::AcqRel);
            self.shared.processed.notify_waiters();
        }
    }

    /// Applies `ops` (after the removals of failed batches) in one
    /// transaction and commits; returns whether a commit happened.
    fn commit(&mut self, mut ops: Vec<Op>, sweep: bool, durable: bool) -> bool {
        if !self.retry.is_empty() {
            let retried = self.retry.drain(..).map(|(entry, reason)| Op::Remove {
                entry,
                reason,
                token: None,
                elided: false,
            });
            ops = retried.chain(ops).collect();
        }
        let count = u64::try_from(ops.len()).unwrap_or(u64::MAX);
        let last_id = ops.iter().filter_map(Op::message_id).max();
        if !sweep && !durable && !ops.iter().any(Op::writes) {
            // Only elided pairs: no transaction at all, so a module that
            // keeps up costs the disk nothing. Their ids need not be
            // recorded: no entry names them.
            for op in ops {
                if let Op::Append { done, .. } = op {
                    let _ = done.send(Ok(()));
                }
            }
            self.processed(last_id);
            return false;
        }
        let mut completions = Vec::with_capacity(ops.len());
        // Dropped at the end, once the commit is done either way.
        let mut tokens = Vec::new();
        let mut removals = Vec::new();
        let outcome = self.apply(
            ops,
            sweep,
            durable,
            &mut completions,
            &mut tokens,
            &mut removals,
        );
        self.sweep_unfinished = false;
        let result = match outcome {
            // A sweep that found nothing to remove.
            Ok(None) => return false,
            Ok(Some(applied)) => {
                failpoint::hit(Failpoint::StoreAfterCommitBeforeAck);
                self.sweep_unfinished = applied.swept >= SWEEP_LIMIT;
                self.next_id = applied.next_id;
                self.stored_bytes = applied.stored_bytes;
                self.shared
                    .stored_bytes
                    .store(applied.stored_bytes, Ordering::Relaxed);
                {
                    let mut endpoints = self
                        .shared
                        .endpoints
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner());
                    for (endpoint, change) in &applied.endpoints {
                        endpoints.entry(endpoint.clone()).or_default().apply(change);
                    }
                }
                self.log_drops(&applied.endpoints);
                let commits = &self.shared.commits;
                commits.commits.fetch_add(1, Ordering::Relaxed);
                if durable {
                    commits.durable_commits.fetch_add(1, Ordering::Relaxed);
                }
                commits.operations.fetch_add(count, Ordering::Relaxed);
                commits.largest_batch.fetch_max(count, Ordering::Relaxed);
                self.shared.arrived(&applied.arrived);
                Ok(())
            }
            Err(error) => {
                if let Some(failures) = self.failure_log.add(1) {
                    tracing::error!(%error, operations = count, failures, "a hub store transaction failed; its writes are refused");
                }
                self.retry.extend(removals);
                while self.retry.len() > RETRY_REMOVALS {
                    self.retry.pop_front();
                }
                match &error {
                    StoreError::DiskFull { .. } => {
                        self.disk_full();
                        self.reopen();
                    }
                    StoreError::Database { .. } if self.broken.is_none() => self.reopen(),
                    _ => {}
                }
                Err(error)
            }
        };
        let succeeded = result.is_ok();
        self.processed(last_id);
        for completion in completions {
            completion(result.clone());
        }
        succeeded
    }

    /// Logs the entries a batch expired or evicted, at most every
    /// [`LOG_INTERVAL`] per kind.
    fn log_drops(&self, endpoints: &HashMap<String, EndpointChange>) {
        let expired: u64 = endpoints.values().map(|change| change.expired).sum();
        let evicted: u64 = endpoints
            .values()
            .map(|change| change.quota + change.disk_full)
            .sum();
        if expired > 0
            && let Some(expired) = self.expired_log.add(expired)
        {
            tracing::info!(
                expired,
                "dropped messages whose time to live passed from the hub store"
            );
        }
        if evicted > 0
            && let Some(evicted) = self.evicted_log.add(evicted)
        {
            tracing::warn!(
                evicted,
                "evicted the oldest, least urgent messages from the full hub store to make room (when_full = \"drop-oldest\"; edged status counts them by endpoint)"
            );
        }
    }

    /// Answers the waiters of `ops`, whose batch could not start, with the
    /// batch's error, and keeps their removals to retry.
    fn abandon(
        ops: Vec<Op>,
        completions: &mut Vec<Completion>,
        tokens: &mut Vec<RemovalToken>,
        removals: &mut Vec<(QueueEntry, Removal)>,
    ) {
        for op in ops {
            match op {
                Op::Job { job, .. } => completions.push(job(None)),
                Op::Append { done, .. } => completions.push(Box::new(move |commit| {
                    let _ = done.send(commit);
                })),
                Op::Remove {
                    entry,
                    reason,
                    token,
                    elided,
                } => {
                    tokens.extend(token);
                    if !elided {
                        removals.push((entry, reason));
                    }
                }
            }
        }
    }

    fn begin(&self, durable: bool) -> Result<WriteTransaction, StoreError> {
        if let Some((error, _)) = &self.broken {
            return Err(error.clone());
        }
        let error = |error: redb::Error| database_error(&self.path, error);
        let mut txn = self
            .db
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .begin_write()
            .map_err(|e| error(e.into()))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(|e| error(e.into()))?;
        Ok(txn)
    }

    fn apply(
        &self,
        ops: Vec<Op>,
        sweep: bool,
        durable: bool,
        completions: &mut Vec<Completion>,
        tokens: &mut Vec<RemovalToken>,
        removals: &mut Vec<(QueueEntry, Removal)>,
    ) -> Result<Option<Applied>, StoreError> {
        let idle_sweep = ops.is_empty() && !durable;
        let error = |error: redb::Error| database_error(&self.path, error);
        let txn = match self.begin(durable) {
            Ok(txn) => txn,
            Err(failure) => {
                Self::abandon(ops, completions, tokens, removals);
                return Err(failure);
            }
        };
        let applied = {
            let mut batch = match Batch::open(&txn, self) {
                Ok(batch) => batch,
                Err(failure) => {
                    Self::abandon(ops, completions, tokens, removals);
                    return Err(error(failure));
                }
            };
            for op in ops {
                match op {
                    Op::Job { job, .. } => completions.push(job(Some(&mut batch))),
                    Op::Append {
                        id,
                        record,
                        targets,
                        done,
                        ..
                    } => {
                        let result = batch.insert(id, &record, &targets);
                        if let Err(error @ StoreError::Database { .. }) = &result {
                            batch.failed.get_or_insert_with(|| error.clone());
                        }
                        completions.push(Box::new(move |commit| {
                            let _ = done.send(commit.and(result));
                        }));
                    }
                    Op::Remove {
                        entry,
                        reason,
                        token,
                        elided,
                    } => {
                        tokens.extend(token);
                        if elided {
                            continue;
                        }
                        if let Err(failure) = batch.remove_entry(&entry, reason) {
                            batch.failed.get_or_insert(failure);
                        }
                        removals.push((entry, reason));
                    }
                }
            }
            let mut swept = 0;
            if sweep && batch.failed.is_none() {
                match batch.sweep(now_ms()) {
                    Ok(count) => swept = count,
                    Err(failure) => {
                        batch.failed.get_or_insert(failure);
                    }
                }
            }
            if let Some(failure) = batch.failed.take() {
                return Err(failure);
            }
            if idle_sweep && batch.endpoints.is_empty() {
                drop(batch);
                txn.abort().map_err(|e| error(e.into()))?;
                return Ok(None);
            }
            let mut counters = txn.open_table(COUNTERS).map_err(|e| error(e.into()))?;
            counters
                .insert(NEXT_ID, batch.next_id)
                .map_err(|e| error(e.into()))?;
            counters
                .insert(STORED_BYTES, batch.stored_bytes)
                .map_err(|e| error(e.into()))?;
            let mut depths = txn
                .open_table(PRIORITY_DEPTHS)
                .map_err(|e| error(e.into()))?;
            for (endpoint, change) in &batch.endpoints {
                for (priority, change) in (0..=LOWEST_PRIORITY).zip(change.by_priority) {
                    if change == 0 {
                        continue;
                    }
                    let key = (endpoint.as_str(), priority);
                    let depth = depths
                        .get(key)
                        .map_err(|e| error(e.into()))?
                        .map_or(0, |depth| depth.value())
                        .saturating_add_signed(change);
                    if depth == 0 {
                        depths.remove(key).map_err(|e| error(e.into()))?;
                    } else {
                        depths.insert(key, depth).map_err(|e| error(e.into()))?;
                    }
                }
            }
            if batch.endpoints.values().any(|change| change.dropped() > 0) {
                failpoint::hit(Failpoint::StoreBeforeCommitOfDrops);
            }
            Applied {
                next_id: batch.next_id,
                stored_bytes: batch.stored_bytes,
                endpoints: batch.endpoints,
                arrived: batch.arrived,
                swept,
            }
        };
        failpoint::hit(Failpoint::StoreBeforeCommit);
        txn.commit().map_err(|e| error(e.into()))?;
        Ok(Some(applied))
    }
}

/// What a committed batch changed in memory.
struct Applied {
    next_id: u64,
    stored_bytes: u64,
    endpoints: HashMap<String, EndpointChange>,
    arrived: HashMap<String, u16>,
    /// How many expired entries the timed sweep removed.
    swept: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message_strategy() -> impl Strategy<Value = StoredMessage> {
        let system = proptest::collection::btree_map(
            proptest::sample::select(SystemProperty::ALL.to_vec()),
            ".{0,40}",
            0..6,
        );
        let application = proptest::collection::vec((".{0,20}", ".{0,40}"), 0..8);
        let body = proptest::collection::vec(any::<u8>(), 0..2048);
        (any::<u64>(), ".{0,80}", system, application, body).prop_map(
            |(enqueued, source, system_properties, application_properties, body)| StoredMessage {
                enqueued,
                source,
                message: HubMessage {
                    system_properties,
                    application_properties,
                    body,
                },
            },
        )
    }

    proptest! {
        #[test]
        fn records_round_trip(record in message_strategy()) {
            prop_assert_eq!(decode_record(&encode_record(&record)), Ok(record));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_record(&bytes);
        }

        #[test]
        fn damaged_records_are_refused_or_decode(
            record in message_strategy(),
            position in any::<usize>(),
            flip in 1u8..,
        ) {
            let mut bytes = encode_record(&record);
            let position = position % bytes.len();
            bytes[position] ^= flip;
            // A flipped byte in the body or a text still decodes (to a
            // different message); anything else is an error, never a panic.
            if let Ok(decoded) = decode_record(&bytes) {
                prop_assert_ne!(decoded, record);
            }
            prop_assert!(decode_record(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    fn record(body: &str) -> StoredMessage {
        StoredMessage {
            enqueued: now_ms(),
            source: "/messages/modules/s".to_owned(),
            message: HubMessage {
                body: body.as_bytes().to_vec(),
                ..HubMessage::default()
            },
        }
    }

    fn target(input: &str, expiry: u64) -> Target {
        Target {
            target: "m".to_owned(),
            input: input.to_owned(),
            priority: 0,
            expiry,
        }
    }

    fn depth(store: &Store, endpoint: &str) -> EndpointCounters {
        store
            .shared
            .endpoints
            .lock()
            .expect("counters")
            .get(endpoint)
            .copied()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_sweep_drops_and_counts_expired_messages() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open_with(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
            Tuning {
                sweep_interval: Duration::from_millis(100),
                ..Tuning::default()
            },
        )
        .expect("store");
        let soon = now_ms() + 50;
        store
            .append(record("short"), vec![target("a", soon)], true)
            .await
            .expect("append");
        store
            .append(record("long"), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        assert_eq!(depth(&store, "m/a").depth, 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while depth(&store, "m/a").expired == 0 {
            assert!(Instant::now() < deadline, "the sweep did not run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            depth(&store, "m/a"),
            EndpointCounters {
                depth: 1,
                expired: 1,
                quota: 0,
                disk_full: 0,
                by_priority: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            }
        );
        let left = store
            .read_queue("m", &[], u64::MAX, 10)
            .expect("read")
            .into_iter()
            .map(|pending| pending.record.message.body)
            .collect::<Vec<_>>();
        assert_eq!(left, vec![b"long".to_vec()]);
    }

    #[tokio::test]
    async fn an_idle_store_does_not_commit() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open_with(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
            Tuning {
                sweep_interval: Duration::from_millis(20),
                ..Tuning::default()
            },
        )
        .expect("store");
        store
            .append(record("kept"), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The append's commit only: the sweeps found nothing to remove.
        assert_eq!(store.shared.commits.commits.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_idle_store_gives_the_disk_back_after_its_queues_drain() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.redb");
        let store = Store::open_with(
            &path,
            1 << 30,
            WhenFull::DropOldest,
            Tuning {
                compact_after_idle: Duration::from_millis(200),
                ..Tuning::default()
            },
        )
        .expect("store");
        let size = || std::fs::metadata(&path).expect("store file").len();
        let body = "x".repeat(20_000);
        for _ in 0..8 {
            let appends: Vec<_> = (0..50)
                .map(|_| store.append(record(&body), vec![target("a", NEVER)], true))
                .collect();
            for append in appends {
                append.await.expect("append");
            }
        }
        let full = size();
        assert!(full > 3 * COMPACT_MINIMUM_BYTES, "{full} bytes");
        let mut cursors = [const { None }; PRIORITIES];
        let mut removed = 0;
        loop {
            let queued = store
                .read_queue("m", &cursors, u64::MAX, 1000)
                .expect("read");
            let Some(last) = queued.last() else { break };
            cursors[0] = Some((last.entry.id, last.entry.input.clone()));
            for pending in queued {
                store.remove(pending.entry, Removal::Delivered, None);
                removed += 1;
            }
        }
        assert_eq!(removed, 400);
        store.write(true, |_| Ok(())).await.expect("flush");
        assert_eq!(store.shared.stored_bytes.load(Ordering::Relaxed), 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while size() > COMPACT_MINIMUM_BYTES {
            assert!(
                Instant::now() < deadline,
                "the file stayed at {} bytes (was {full})",
                size()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The store works on after compaction.
        store
            .append(record("after"), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        assert_eq!(
            store
                .read_queue("m", &[], u64::MAX, 10)
                .expect("read")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn references_free_the_message_with_the_last_entry() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
        )
        .expect("store");
        let message = record(&"x".repeat(1000));
        let length = u64::try_from(encode_record(&message).len()).expect("length");
        store
            .append(message, vec![target("a", NEVER), target("b", NEVER)], true)
            .await
            .expect("append");
        let stored = store.shared.stored_bytes.load(Ordering::Relaxed);
        assert_eq!(stored, length + 2 * ENTRY_OVERHEAD);
        let entry = |input: &str| QueueEntry {
            target: "m".to_owned(),
            priority: 0,
            id: 1,
            input: input.to_owned(),
        };
        store.remove(entry("a"), Removal::Delivered, None);
        // A second removal of the same entry (a redelivery acked twice)
        // changes nothing.
        store.remove(entry("a"), Removal::Delivered, None);
        store.write(true, |_| Ok(())).await.expect("flush");
        assert_eq!(
            store.shared.stored_bytes.load(Ordering::Relaxed),
            length + ENTRY_OVERHEAD
        );
        assert_eq!(
            store
                .read_queue("m", &[], u64::MAX, 10)
                .expect("read")
                .len(),
            1
        );
        store.remove(entry("b"), Removal::Delivered, None);
        store.write(true, |_| Ok(())).await.expect("flush");
        assert_eq!(store.shared.stored_bytes.load(Ordering::Relaxed), 0);
        assert!(
            store
                .read_queue("m", &[], u64::MAX, 10)
                .expect("read")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_full_store_refuses_without_writing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store =
            Store::open(&dir.path().join("store.redb"), 3000, WhenFull::RefuseNew).expect("store");
        store
            .append(record(&"x".repeat(2000)), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        let refused = store
            .append(record(&"y".repeat(2000)), vec![target("a", NEVER)], true)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Full { limit: 3000, .. })),
            "{refused:?}"
        );
        assert_eq!(depth(&store, "m/a").depth, 1);
    }

    /// Holds the writer inside a job for `hold`, so that what is sent
    /// meanwhile lands in one batch after it.
    fn hold_writer(store: &Arc<Store>, hold: Duration) -> tokio::task::JoinHandle<()> {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write(true, move |_| {
                    std::thread::sleep(hold);
                    Ok(())
                })
                .await
                .expect("held job");
        })
    }

    /// A durable append, running while the test holds the writer.
    fn spawn_append(
        store: &Arc<Store>,
        message: StoredMessage,
        targets: Vec<Target>,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let store = store.clone();
        tokio::spawn(async move { store.append(message, targets, true).await })
    }

    /// The next message `tail` gets within `wait`.
    async fn handed_over(store: &Store, tail: &Tail, wait: Duration) -> Pending {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(pending) = tail.pop(&store.shared).expect("live") {
                return pending;
            }
            assert!(Instant::now() < deadline, "nothing handed over");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn entry(id: u64, input: &str) -> QueueEntry {
        QueueEntry {
            target: "m".to_owned(),
            priority: 0,
            id,
            input: input.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_message_acknowledged_before_its_commit_is_never_written() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(
            Store::open(
                &dir.path().join("store.redb"),
                1 << 30,
                WhenFull::DropOldest,
            )
            .expect("store"),
        );
        let held = hold_writer(&store, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Two messages, one for two inputs; the first and one entry of the
        // second are acknowledged in the same batch as their appends.
        let first = spawn_append(&store, record("gone"), vec![target("a", NEVER)]);
        let second = spawn_append(
            &store,
            record("half"),
            vec![target("a", NEVER), target("b", NEVER)],
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.remove(entry(1, "a"), Removal::Delivered, None);
        store.remove(entry(2, "a"), Removal::Delivered, None);
        held.await.expect("held");
        first.await.expect("first").expect("append");
        second.await.expect("second").expect("append");
        let queued = store.read_queue("m", &[], u64::MAX, 10).expect("read");
        assert_eq!(
            queued
                .iter()
                .map(|pending| pending.entry.clone())
                .collect::<Vec<_>>(),
            vec![entry(2, "b")]
        );
        assert_eq!(depth(&store, "m/a").depth, 0);
        assert_eq!(depth(&store, "m/b").depth, 1);
        let length = u64::try_from(encode_record(&record("half")).len()).expect("length");
        assert_eq!(
            store.shared.stored_bytes.load(Ordering::Relaxed),
            length + ENTRY_OVERHEAD,
            "only the second message's remaining entry is stored"
        );
    }

    #[tokio::test]
    async fn a_batch_of_elided_pairs_is_not_committed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(
            Store::open(
                &dir.path().join("store.redb"),
                1 << 30,
                WhenFull::DropOldest,
            )
            .expect("store"),
        );
        let held = hold_writer(&store, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let appended = spawn_append(&store, record("gone"), vec![target("a", NEVER)]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.remove(entry(1, "a"), Removal::Delivered, None);
        held.await.expect("held");
        appended.await.expect("append task").expect("append");
        let commits = &store.shared.commits;
        assert_eq!(
            commits.commits.load(Ordering::Relaxed),
            1,
            "only the held job commits; the elided pair writes nothing"
        );
        assert!(
            store
                .read_queue("m", &[], u64::MAX, 10)
                .expect("read")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_tail_gets_each_message_from_its_first_id_before_the_commit() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(
            Store::open(
                &dir.path().join("store.redb"),
                1 << 30,
                WhenFull::DropOldest,
            )
            .expect("store"),
        );
        store
            .append(record("before"), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        assert_eq!(tail.from, 2);
        let held = hold_writer(&store, Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let appended = spawn_append(&store, record("live"), vec![target("a", NEVER)]);
        let pending = handed_over(&store, &tail, Duration::from_millis(300)).await;
        assert_eq!(pending.record.message.body, b"live");
        assert_eq!(pending.entry, entry(2, "a"));
        assert!(
            !appended.is_finished() && !store.shared.processed_below(3),
            "handed over while the writer was still busy"
        );
        held.await.expect("held");
        appended.await.expect("append task").expect("append");
        assert!(store.shared.processed_below(3));
        store.leave_tail(&tail);
        store
            .append(record("after"), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        assert!(matches!(tail.pop(&store.shared), Err(Overflowed)));
        assert_eq!(store.shared.tail_bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_full_tail_overflows_and_gives_its_bytes_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
        )
        .expect("store");
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        // Large messages fill all tails' byte budget long before the tail's
        // message count.
        let body = "x".repeat(256 * 1024);
        let fits = TAILS_BYTES / body.len();
        for _ in 0..=fits {
            store
                .append(record(&body), vec![target("a", NEVER)], false)
                .await
                .expect("append");
        }
        let mut taken = 0;
        while let Ok(Some(_)) = tail.pop(&store.shared) {
            taken += 1;
        }
        assert!(
            taken < fits + 1 && taken > 0,
            "{taken} of {} taken",
            fits + 1
        );
        assert!(matches!(tail.pop(&store.shared), Err(Overflowed)));
        assert_eq!(store.shared.tail_bytes.load(Ordering::Relaxed), 0);
        // Every message is in the store all the same.
        assert_eq!(
            depth(&store, "m/a").depth,
            u64::try_from(fits + 1).expect("count")
        );
    }

    #[tokio::test]
    async fn a_crowded_tail_holds_a_publish_back_once_then_overflows() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
        )
        .expect("store");
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        for _ in 1..TAIL_CROWDED {
            store
                .append(record("x"), vec![target("a", NEVER)], false)
                .await
                .expect("append");
        }
        // The message that crowds the tail is handed over at once; its
        // acknowledgement waits.
        let started = Instant::now();
        store
            .append(record("waits"), vec![target("a", NEVER)], false)
            .await
            .expect("append");
        assert!(started.elapsed() >= TAIL_WAIT, "{:?}", started.elapsed());
        // The tail overflowed: the next publish does not wait, and the
        // stream takes what the tail held, then reads the store.
        let started = Instant::now();
        store
            .append(record("free"), vec![target("a", NEVER)], false)
            .await
            .expect("append");
        assert!(started.elapsed() < TAIL_WAIT, "{:?}", started.elapsed());
        let mut taken = 0;
        while let Ok(Some(_)) = tail.pop(&store.shared) {
            taken += 1;
        }
        assert_eq!(taken, TAIL_CROWDED);
        assert!(matches!(tail.pop(&store.shared), Err(Overflowed)));
    }

    #[tokio::test]
    async fn depths_by_priority_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.redb");
        {
            let store = Store::open(&path, 1 << 30, WhenFull::DropOldest).expect("store");
            for priority in [0, 2, 2] {
                let target = Target {
                    priority,
                    ..target("a", NEVER)
                };
                store
                    .append(record("x"), vec![target], true)
                    .await
                    .expect("append");
            }
            store.remove(entry(1, "a"), Removal::Delivered, None);
            store.write(true, |_| Ok(())).await.expect("flush");
        }
        let store = Store::open(&path, 1 << 30, WhenFull::DropOldest).expect("store");
        assert_eq!(
            depth(&store, "m/a"),
            EndpointCounters {
                depth: 2,
                expired: 0,
                quota: 0,
                disk_full: 0,
                by_priority: [0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
            }
        );
    }

    #[tokio::test]
    async fn a_store_without_depths_by_priority_counts_its_queues_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("store.redb");
        {
            // The layout before priorities were counted: depths by endpoint.
            let db = Database::create(&path).expect("database");
            let txn = db.begin_write().expect("transaction");
            {
                let mut messages = txn.open_table(MESSAGES).expect("messages");
                let mut queue = txn.open_table(QUEUE).expect("queue");
                for (id, priority) in [(1, 0), (2, 3), (3, 3)] {
                    messages
                        .insert(id, encode_record(&record("old")).as_slice())
                        .expect("message");
                    queue
                        .insert(("m", priority, id, "a"), NEVER)
                        .expect("entry");
                }
                let mut legacy = txn.open_table(LEGACY_DEPTHS).expect("depths");
                legacy.insert("m/a", 3).expect("depth");
                let mut counters = txn.open_table(COUNTERS).expect("counters");
                counters.insert(NEXT_ID, 4).expect("next id");
            }
            txn.commit().expect("commit");
        }
        {
            let store = Store::open(&path, 1 << 30, WhenFull::DropOldest).expect("store");
            assert_eq!(
                depth(&store, "m/a"),
                EndpointCounters {
                    depth: 3,
                    expired: 0,
                    quota: 0,
                    disk_full: 0,
                    by_priority: [1, 0, 0, 2, 0, 0, 0, 0, 0, 0],
                }
            );
            assert_eq!(
                store
                    .read_queue("m", &[], u64::MAX, 10)
                    .expect("read")
                    .len(),
                3
            );
        }
        let db = Database::open(&path).expect("database");
        let txn = db.begin_read().expect("transaction");
        let tables: Vec<String> = txn
            .list_tables()
            .expect("tables")
            .map(|table| table.name().to_owned())
            .collect();
        assert!(!tables.contains(&"depths".to_owned()), "{tables:?}");
    }

    #[tokio::test]
    async fn a_tail_gives_the_most_urgent_message_first() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
        )
        .expect("store");
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        for (body, priority) in [("late-1", 5), ("late-2", 5), ("urgent", 0), ("late-3", 5)] {
            let target = Target {
                priority,
                ..target("a", NEVER)
            };
            store
                .append(record(body), vec![target], false)
                .await
                .expect("append");
        }
        let mut bodies = Vec::new();
        while let Ok(Some(pending)) = tail.pop(&store.shared) {
            bodies.push(String::from_utf8(pending.record.message.body).expect("text"));
        }
        assert_eq!(bodies, ["urgent", "late-1", "late-2", "late-3"]);
    }

    #[tokio::test]
    async fn a_message_acknowledged_live_is_acknowledged_to_its_sender_before_the_commit() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(
            Store::open(
                &dir.path().join("store.redb"),
                1 << 30,
                WhenFull::DropOldest,
            )
            .expect("store"),
        );
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        let held = hold_writer(&store, Duration::from_millis(1000));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let appended = spawn_append(&store, record("fast"), vec![target("a", NEVER)]);
        let pending = handed_over(&store, &tail, Duration::from_millis(500)).await;
        pending
            .live
            .as_ref()
            .expect("handed over live")
            .acknowledge();
        tokio::time::timeout(Duration::from_millis(300), appended)
            .await
            .expect("the sender hears back before the commit")
            .expect("append task")
            .expect("append");
        assert!(!held.is_finished(), "the writer is still held");
        assert!(!store.shared.processed_below(2));
        held.await.expect("held");
    }

    #[tokio::test]
    async fn a_message_also_queued_for_a_module_not_live_waits_for_its_commit() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(
            Store::open(
                &dir.path().join("store.redb"),
                1 << 30,
                WhenFull::DropOldest,
            )
            .expect("store"),
        );
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        let held = hold_writer(&store, Duration::from_millis(600));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elsewhere = Target {
            target: "offline".to_owned(),
            ..target("a", NEVER)
        };
        let appended = spawn_append(&store, record("two"), vec![target("a", NEVER), elsewhere]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pending = tail.pop(&store.shared).expect("live").expect("handed over");
        pending.live.as_ref().expect("live").acknowledge();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!appended.is_finished(), "acknowledged before the commit");
        held.await.expect("held");
        appended.await.expect("append task").expect("append");
    }

    /// A queue entry for `target` (a module's input or `$upstream`).
    fn queued(target: &str, input: &str, priority: u8) -> Target {
        Target {
            target: target.to_owned(),
            input: input.to_owned(),
            priority,
            expiry: NEVER,
        }
    }

    /// The bodies left in `target`'s queues, priority 0 first.
    fn bodies(store: &Store, target: &str) -> Vec<String> {
        store
            .read_queue(target, &[], u64::MAX, 1000)
            .expect("read")
            .into_iter()
            .map(|pending| String::from_utf8(pending.record.message.body).expect("text"))
            .collect()
    }

    /// The bytes one message with `body` and `entries` queue entries counts.
    fn counted(body: &str, entries: u64) -> u64 {
        u64::try_from(encode_record(&record(body)).len()).expect("length")
            + entries * ENTRY_OVERHEAD
    }

    #[tokio::test]
    async fn a_full_store_evicts_the_oldest_of_the_least_urgent_priority_first() {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Room for exactly five of these messages, each on one queue.
        let limit = 5 * counted("p0-old", 1);
        let store = Store::open(&dir.path().join("store.redb"), limit, WhenFull::DropOldest)
            .expect("store");
        // Upstream and a module input are alike: priority, then age.
        for (body, target, priority) in [
            ("p0-old", UPSTREAM, 0),
            ("p5-old", UPSTREAM, 5),
            ("p5-mid", "m", 5),
            ("p9-old", "m", 9),
            ("p9-new", UPSTREAM, 9),
            ("p2-new", "m", 2),
            ("p2-two", UPSTREAM, 2),
            ("p2-thr", "m", 2),
        ] {
            let input = if target == UPSTREAM { "" } else { "a" };
            store
                .append(record(body), vec![queued(target, input, priority)], true)
                .await
                .expect("append");
        }
        // The three appends past the limit evicted both priority 9 entries,
        // then the older priority 5 one.
        assert_eq!(bodies(&store, UPSTREAM), ["p0-old", "p2-two"]);
        assert_eq!(bodies(&store, "m"), ["p2-new", "p2-thr", "p5-mid"]);
        assert_eq!(depth(&store, "m/a").quota, 1);
        assert_eq!(depth(&store, UPSTREAM).quota, 2);
        assert_eq!(depth(&store, UPSTREAM).depth, 2);
        assert_eq!(store.shared.stored_bytes.load(Ordering::Relaxed), limit);
        assert_eq!(store.check().expect("check"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_message_is_refused_rather_than_evict_a_more_urgent_one() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let limit = 2 * counted("urgent", 1);
        let store = Store::open(&dir.path().join("store.redb"), limit, WhenFull::DropOldest)
            .expect("store");
        for body in ["urgent", "urgent"] {
            store
                .append(record(body), vec![queued(UPSTREAM, "", 1)], true)
                .await
                .expect("append");
        }
        let refused = store
            .append(record("lesser"), vec![queued(UPSTREAM, "", 4)], true)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Full { .. })),
            "{refused:?}"
        );
        // One as urgent takes the oldest one's place.
        store
            .append(record("urgent"), vec![queued(UPSTREAM, "", 1)], true)
            .await
            .expect("append");
        assert_eq!(depth(&store, UPSTREAM).quota, 1);
        assert_eq!(depth(&store, UPSTREAM).depth, 2);
        assert_eq!(store.check().expect("check"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_message_larger_than_the_store_evicts_nothing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store =
            Store::open(&dir.path().join("store.redb"), 3000, WhenFull::DropOldest).expect("store");
        store
            .append(record("small"), vec![target("a", NEVER)], true)
            .await
            .expect("append");
        let refused = store
            .append(record(&"x".repeat(4000)), vec![target("a", NEVER)], true)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Full { .. })),
            "{refused:?}"
        );
        assert_eq!(depth(&store, "m/a").depth, 1);
        assert_eq!(depth(&store, "m/a").quota, 0);
    }

    #[tokio::test]
    async fn eviction_frees_a_shared_message_with_its_last_entry() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let shared_bytes = counted("shared", 2);
        let limit = shared_bytes + counted("other", 1);
        let store = Store::open(&dir.path().join("store.redb"), limit, WhenFull::DropOldest)
            .expect("store");
        store
            .append(
                record("shared"),
                vec![queued("m", "a", 3), queued(UPSTREAM, "", 3)],
                true,
            )
            .await
            .expect("append");
        store
            .append(record("other"), vec![queued("m", "b", 3)], true)
            .await
            .expect("append");
        // The newcomer needs the shared message's room: both its entries go,
        // and with the second one its body.
        store
            .append(record("newer"), vec![queued(UPSTREAM, "", 3)], true)
            .await
            .expect("append");
        assert_eq!(bodies(&store, "m"), ["other"]);
        assert_eq!(bodies(&store, UPSTREAM), ["newer"]);
        assert_eq!(depth(&store, "m/a").quota, 1);
        assert_eq!(depth(&store, UPSTREAM).quota, 1);
        assert_eq!(
            store.shared.stored_bytes.load(Ordering::Relaxed),
            counted("other", 1) + counted("newer", 1)
        );
        assert_eq!(store.check().expect("check"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn an_evicted_entry_a_tail_holds_is_delivered_once_and_its_ack_changes_nothing() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let limit = 2 * counted("first", 1);
        let store = Store::open(&dir.path().join("store.redb"), limit, WhenFull::DropOldest)
            .expect("store");
        let wake = store.shared.wake("m");
        let tail = store.join_tail("m", &wake);
        for body in ["first", "secnd", "third"] {
            store
                .append(record(body), vec![target("a", NEVER)], true)
                .await
                .expect("append");
        }
        // The first was evicted from the store but the tail had it already.
        assert_eq!(depth(&store, "m/a").quota, 1);
        let mut delivered = Vec::new();
        while let Ok(Some(pending)) = tail.pop(&store.shared) {
            delivered.push(String::from_utf8(pending.record.message.body).expect("text"));
            store.remove(pending.entry, Removal::Delivered, None);
        }
        assert_eq!(delivered, ["first", "secnd", "third"]);
        store.write(true, |_| Ok(())).await.expect("flush");
        assert_eq!(
            depth(&store, "m/a"),
            EndpointCounters {
                quota: 1,
                ..EndpointCounters::default()
            }
        );
        assert_eq!(store.shared.stored_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(store.check().expect("check"), Vec::<String>::new());
        store.leave_tail(&tail);
    }

    #[tokio::test]
    async fn a_long_sweep_goes_on_in_bounded_transactions() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open_with(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
            Tuning {
                sweep_interval: Duration::from_millis(200),
                ..Tuning::default()
            },
        )
        .expect("store");
        let expiring = SWEEP_LIMIT * 2 + 10;
        // Late enough that no sweep removes any before the count below.
        let soon = now_ms() + 3000;
        let appends: Vec<_> = (0..expiring)
            .map(|_| store.append(record("x"), vec![target("a", soon)], false))
            .collect();
        // Polled together, they share the writer's batches.
        for appended in futures_util::future::join_all(appends).await {
            appended.expect("append");
        }
        let kept = store.append(record("kept"), vec![target("a", NEVER)], true);
        kept.await.expect("append");
        let before = store.shared.commits.commits.load(Ordering::Relaxed);
        assert!(
            now_ms() < soon,
            "the appends took too long to tell the sweeps apart"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while depth(&store, "m/a").depth > 1 {
            assert!(Instant::now() < deadline, "{:?}", depth(&store, "m/a"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let expired = u64::try_from(expiring).expect("count");
        assert_eq!(depth(&store, "m/a").expired, expired);
        // Three sweep transactions at least, each at most SWEEP_LIMIT.
        assert!(store.shared.commits.commits.load(Ordering::Relaxed) - before >= 3);
        assert_eq!(bodies(&store, "m"), ["kept"]);
        assert_eq!(store.check().expect("check"), Vec::<String>::new());
    }

    /// The files in `dir` and their total size.
    fn directory(dir: &Path) -> (Vec<String>, u64) {
        let mut names = Vec::new();
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir).expect("directory") {
            let entry = entry.expect("entry");
            names.push(entry.file_name().to_string_lossy().into_owned());
            bytes += entry.metadata().expect("metadata").len();
        }
        names.sort();
        (names, bytes)
    }

    #[tokio::test]
    async fn the_disk_returns_to_its_baseline_after_a_backlog_drains_and_expires() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open_with(
            &dir.path().join("store.redb"),
            1 << 30,
            WhenFull::DropOldest,
            Tuning {
                sweep_interval: Duration::from_millis(100),
                compact_after_idle: Duration::from_millis(200),
                ..Tuning::default()
            },
        )
        .expect("store");
        let (files, baseline) = directory(dir.path());
        assert_eq!(files, ["store.redb", "store.reserve"]);
        // Half the backlog is delivered, half expires unread upstream.
        let messages = 30_000;
        let body = "x".repeat(500);
        let expiry = now_ms() + 2_000;
        for chunk in 0..messages / 1000 {
            let appends: Vec<_> = (0..1000)
                .map(|index| {
                    let queue = if (chunk * 1000 + index) % 2 == 0 {
                        target("a", NEVER)
                    } else {
                        Target {
                            expiry,
                            ..queued(UPSTREAM, "", 0)
                        }
                    };
                    store.append(record(&body), vec![queue], false)
                })
                .collect();
            for appended in futures_util::future::join_all(appends).await {
                appended.expect("append");
            }
        }
        let (_, peak) = directory(dir.path());
        let mut cursors = [const { None }; PRIORITIES];
        loop {
            let queued = store
                .read_queue("m", &cursors, u64::MAX, 1000)
                .expect("read");
            let Some(last) = queued.last() else { break };
            cursors[0] = Some((last.entry.id, last.entry.input.clone()));
            for pending in queued {
                store.remove(pending.entry, Removal::Delivered, None);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.shared.stored_bytes.load(Ordering::Relaxed) > 0
            || directory(dir.path()).1 > baseline + COMPACT_MINIMUM_BYTES
        {
            assert!(
                Instant::now() < deadline,
                "the directory stayed at {} bytes (baseline {baseline}, peak {peak})",
                directory(dir.path()).1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (files, after) = directory(dir.path());
        eprintln!(
            "{messages} messages: directory {baseline} bytes empty, {peak} at the peak, {after} after they drained and expired"
        );
        assert_eq!(files, ["store.redb", "store.reserve"], "no side files");
        assert_eq!(
            depth(&store, UPSTREAM).expired,
            u64::try_from(messages / 2).expect("count")
        );
        assert_eq!(store.check().expect("check"), Vec::<String>::new());
    }
}
