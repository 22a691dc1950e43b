//! The node's durable state: every message, the per-destination outbox, the inbox and outbox
//! listings and the reply links, in one sled database behind a write-ahead log (`wal`, where a
//! write becomes durable; sled is checkpointed behind it). The only module that touches sled.
//!
//! Boundary: imports `domain`, `config` and `atomic_file` only; never TLS, the network or any
//! layer above it.
//!
//! Layout (one tree, prefixed keys, values are protobuf):
//!
//! | key | value |
//! | --- | --- |
//! | `m` id(16) | `StoredMessage` (its origin certificate as a SHA-256 naming an `f` key; older records hold the certificate) |
//! | `f` sha256(32) | an origin certificate (DER), stored once for every message it signed (see `certificates`) |
//! | `o` destination(2) precedence-rank(1) seq(8) | id — outbound messages still to be sent (rank: `domain::order::precedence_rank`) |
//! | `i` seq(8) | id — inbound requests (the inbox listing) |
//! | `s` seq(8) | id — outbound envelopes (the outbox listing) |
//! | `r` parent-id(16) seq(8) | id — envelopes that answer or continue `parent` |
//! | `a` ack-deadline-seconds(8) id(16) | empty — requests waiting for an acknowledgement |
//! | `e` event-seq(8) | `WatchResponse` — the lifecycle events, gap-free |
//! | `c` "events" | the last event sequence number as of the last checkpoint (a floor: the newest `e` key says where events stand) |
//! | `c` "pruned" | the last event sequence number removed by retention (none: 0) |
//! | `h` audit-seq(8) | `ListAuditResponse` — the audit log's hash chain, gap-free (see `audit`) |
//! | `c` "audit" | the chain head as of the last checkpoint: last audit sequence number(8) and its hash(32) (a floor: the newest `h` record past it is the head) |
//! | `c` "lsn" | the write-ahead log sequence number of the last record applied, in every write's batch |
//! | `w` node-code(2) | `SignedAuditHead` — the newest audit head that member signed and gave us in `Hello` (its signature checked before it is kept) |
//! | `q` client-request-id(16) client-name | message id(16) and request digest(32) — the `Submit` a desk client made under that request id (see [`ClientRequest`]) |
//! | `c` "recovery" | a recovery from peers asked by `restore --recover-from-peers`: its id(16) and since-seconds(8) |
//! | `c` "recovered" node-code(2) | the id(16) of the recovery done from that peer, then what came back (UTF-8) |
//! | `n` id(16) | JSON `Notification` — a notification still to be sent (see `notifications`) |
//! | `d` id(16) | JSON `Notification` — a notification sent (removed after `[retention] events`) |
//! | `u` sha256(32) | when that attachment was last uploaded (see `attachments`) |
//! | `x` sha256(32) id(16) | empty — message `id` lists that attachment (see `attachments`) |
//! | `k` closed-at-seconds(8) id(16) | empty — a closed case (its first request) whose content is still to be removed (see `closed_cases`) |
//!
//! Every write sets its own keys and `c` "lsn", nothing else: the event counter and the audit chain
//! head are kept in memory, derived on open from the newest `e` key and `h` record, and written
//! only at checkpoints (each sled key costs ~70–100 µs of CPU to persist; issue 13). The newest
//! event is never pruned, so the newest `e` key is always the last event.
//!
//! Invariants: an outbound message has an `o` key exactly while it is QUEUED or WAITING_RETRY; a
//! request has an `a` key exactly while it waits for an acknowledgement; every new timeline entry
//! and every overdue announcement is recorded as an event in the same batch as the change; every
//! change of a message, its keys and its events is applied in one atomic sled batch; nobody is
//! told that something is stored (and no event is visible to watchers) before
//! [`Store::persist`] has returned after the change. Every new timeline entry and overdue
//! announcement also appends an audit record in the same batch. A `q` key is written in the batch that stores the
//! message it names, so no crash leaves one without the other. Events are removed only oldest first, so those
//! kept are always `(pruned, events]` without gaps.

pub mod attachments;
pub mod audit;
pub mod backup;
mod certificates;
pub mod closed_cases;
pub mod crash_point;
pub mod events;
pub mod group_commit;
pub mod notifications;
pub mod wal;

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prost::Message as _;
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::identity::NodeCode;
use crate::domain::order::precedence_rank;
use crate::domain::timestamp;
use crate::proto::{
    Direction, Envelope, EnvelopeKind, ListAuditResponse, Message, MessageState, Precedence, WatchResponse,
};
use crate::store::audit::ChainHead;
use crate::store_proto::StoredMessage;

/// The last event sequence number at the last checkpoint (big-endian u64); see [`last_event_of`].
const EVENT_COUNTER_KEY: &[u8] = b"cevents";
/// The last event sequence number removed by retention (big-endian u64).
const EVENTS_PRUNED_KEY: &[u8] = b"cpruned";
const SCHEMA_KEY: &[u8] = b"cschema";
/// The audit chain head at the last checkpoint; see [`read_audit_head`].
const AUDIT_HEAD_KEY: &[u8] = b"caudit";
/// The highest signed-directory version this node has used (big-endian u64).
const DIRECTORY_VERSION_KEY: &[u8] = b"cdirectory";
/// The LSN of the last write-ahead log record applied to sled (big-endian u64), written in the
/// same batch as that record's changes: whatever sled recovers after a crash, it says exactly
/// which records it holds, and recovery replays only the ones after it.
const APPLIED_LSN_KEY: &[u8] = b"clsn";

/// The layout version this code reads and writes (the table above). A store written by a newer
/// version is refused; an older one is migrated on open (none exists yet: 1 is the first).
pub const SCHEMA_VERSION: u32 = 1;

/// A store operation failed; nothing of that operation was applied.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled could not read or write.
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    /// The device could not be synced.
    #[error("store sync failed: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be decoded: the store was written by something else or is damaged.
    #[error("store record {key} is damaged: {reason}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// What failed.
        reason: String,
    },
    /// A message lacks what every stored message has (an envelope with a UUID id).
    #[error("message cannot be stored: {0}")]
    Malformed(&'static str),
    /// A watcher asked for events that retention has removed.
    #[error(
        "after_sequence: events {first} to {through} were removed after the retention period ([retention] events); list the inbox and outbox to catch up, then watch from {through}"
    )]
    EventsPruned {
        /// The first event asked for.
        first: u64,
        /// The last event removed.
        through: u64,
    },
    /// The store was written by a newer hanoi247 with a layout this version does not know.
    #[error(
        "the store has schema version {found}, this hanoi247 reads up to {supported}: run the newer version, or restore a backup made by this one"
    )]
    NewerSchema {
        /// The version found.
        found: u32,
        /// The newest this code knows.
        supported: u32,
    },
    /// The store failed to write and is being reopened; nothing was changed.
    #[error("the store is recovering from a write failure ({0})")]
    Recovering(String),
}

/// The open sled database and a handle on its data file.
struct Opened {
    db: sled::Db,
    /// sled's own flush ends in `sync_file_range`, which survives a crash but not a power cut;
    /// `sync_data` on this handle makes a checkpoint mean "on the device".
    db_file: Arc<File>,
    /// Where every write becomes durable before anyone is told (see [`wal`]).
    wal: Arc<wal::Wal>,
    /// How many outbox keys each (destination, precedence rank) has: counted once when sled is
    /// opened and kept by every write, so the queue view and the metrics need not scan a long
    /// queue (a scan per refresh was 15 % of a sender's CPU while it drained 30,000).
    outbox_counts: Mutex<HashMap<OutboxQueue, usize>>,
}

/// One destination's queue of one precedence: the node code's bytes and the precedence rank.
type OutboxQueue = ([u8; 2], u8);

/// The queue an outbox key (`o` + destination + rank + sequence) belongs to.
fn outbox_queue_of(key: &[u8]) -> Option<OutboxQueue> {
    match key {
        [b'o', a, b, rank, ..] => Some(([*a, *b], *rank)),
        _ => None,
    }
}

/// Counts the outbox keys of each queue (once, when the store opens).
fn count_outbox(db: &sled::Db) -> Result<HashMap<OutboxQueue, usize>, StoreError> {
    let mut counts = HashMap::new();
    for key in db.scan_prefix([b'o']).keys() {
        if let Some(queue) = outbox_queue_of(&key?) {
            *counts.entry(queue).or_default() += 1;
        }
    }
    Ok(counts)
}

/// One store write: the sled batch and the same changes as a write-ahead log record.
#[derive(Default)]
struct WriteBatch {
    sled: sled::Batch,
    record: Vec<u8>,
    /// Keys set or removed (each costs sled work now and at the next checkpoint).
    keys: u64,
}

impl WriteBatch {
    fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        wal::encode_put(&mut self.record, key, value);
        self.sled.insert(key, value);
        self.keys += 1;
    }

    fn remove(&mut self, key: impl AsRef<[u8]>) {
        wal::encode_remove(&mut self.record, key.as_ref());
        self.sled.remove(key.as_ref());
        self.keys += 1;
    }
}

/// The node's sled database.
///
/// After a write or sync fails (disk full, I/O error), sled refuses every later operation, so
/// the store is marked broken and [`Store::recover`] reopens it: what was flushed is there, what
/// was not is not (sled recovers its log to the last complete batch).
#[derive(Clone)]
pub struct Store {
    dir: Arc<std::path::PathBuf>,
    /// `None` only while being reopened.
    opened: Arc<std::sync::RwLock<Option<Opened>>>,
    /// Why the store is broken (empty when it is healthy).
    broken: Arc<Mutex<String>>,
    /// sled keys set or removed by writes since the store opened.
    keys_written: Arc<AtomicU64>,
    /// Shares flushes between concurrent writers.
    commit: Arc<crate::store::group_commit::GroupCommit>,
    /// Serialises read-modify-write operations so each sees the effects of the one before.
    writer: Arc<Mutex<()>>,
    /// The sequence number of the last event applied (durable or not).
    last_event: Arc<AtomicU64>,
    /// The sequence number of the last event known to be on the device: watchers read up to it.
    durable_events: Arc<watch::Sender<u64>>,
    /// The end of the audit chain as applied (durable or not).
    audit_head: Arc<Mutex<ChainHead>>,
    /// This node's code and which notification targets want which events (`notifications`).
    notify_plan: NotifyPlan,
    /// Origin certificates known to be stored (`certificates`).
    certificates: Arc<certificates::Known>,
}

/// This node's code and every notification target's wants.
type NotifyPlan = Arc<std::sync::RwLock<(String, Arc<Vec<notifications::TargetWants>>)>>;

/// Which listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Requests received from other nodes.
    Inbox,
    /// Envelopes this node sent or will send.
    Outbox,
}

impl Listing {
    /// The first byte of this listing's keys (what a page token of it holds).
    pub fn key_prefix(self) -> u8 {
        self.prefix()
    }

    fn prefix(self) -> u8 {
        match self {
            Listing::Inbox => b'i',
            Listing::Outbox => b's',
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, checkpointed every
    /// [`crate::config::DEFAULT_CHECKPOINT_INTERVAL`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, crate::config::DEFAULT_CHECKPOINT_INTERVAL)
    }

    /// Opens (or creates) the store in `dir`, replaying its write-ahead log, and checkpoints it
    /// every `checkpoint_every` while open.
    pub fn open_with(dir: &Path, checkpoint_every: std::time::Duration) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let opened = open_db(dir)?;
        check_schema(&opened.db)?;
        let last_event = last_event_of(&opened.db)?;
        let audit_head = read_audit_head(&opened.db)?;
        let opened = Arc::new(std::sync::RwLock::new(Some(opened)));
        let flushed = Arc::downgrade(&opened);
        // The flusher holds the database weakly: dropping the last `Store` closes it.
        let commit = group_commit::GroupCommit::start(group_commit::HOLD_AT_MOST, move || {
            let opened = flushed.upgrade().ok_or("the store is closed")?;
            let wal = {
                let opened = opened.read().unwrap_or_else(|p| p.into_inner());
                Arc::clone(&opened.as_ref().ok_or("the store is reopening")?.wal)
            };
            wal.sync().map(drop).map_err(|e| e.to_string())
        })?;
        let store = Self {
            dir: Arc::new(dir.to_owned()),
            opened,
            broken: Arc::new(Mutex::new(String::new())),
            keys_written: Arc::new(AtomicU64::new(0)),
            commit: Arc::new(commit),
            writer: Arc::new(Mutex::new(())),
            last_event: Arc::new(AtomicU64::new(last_event)),
            // What survived a restart is what was on the device.
            durable_events: Arc::new(watch::Sender::new(last_event)),
            audit_head: Arc::new(Mutex::new(audit_head)),
            notify_plan: NotifyPlan::default(),
            certificates: Arc::default(),
        };
        store.start_checkpoints(checkpoint_every)?;
        Ok(store)
    }

    /// Starts the thread that checkpoints sled every `interval` while the store is open. It
    /// holds the store weakly and ends within one interval after the last handle goes. Nobody
    /// joins it: a node's shutdown checkpoints by itself ([`Store::checkpoint`]), and a
    /// checkpoint cut short when the process exits is a crash the write-ahead log recovers from.
    fn start_checkpoints(&self, interval: std::time::Duration) -> std::io::Result<()> {
        let (opened, writer, broken) =
            (Arc::downgrade(&self.opened), Arc::downgrade(&self.writer), Arc::downgrade(&self.broken));
        let (last_event, audit_head) = (Arc::downgrade(&self.last_event), Arc::downgrade(&self.audit_head));
        std::thread::Builder::new().name("hanoi247-checkpoint".into()).spawn(move || {
            loop {
                std::thread::sleep(interval);
                let (Some(opened), Some(writer), Some(broken), Some(last_event), Some(audit_head)) = (
                    opened.upgrade(),
                    writer.upgrade(),
                    broken.upgrade(),
                    last_event.upgrade(),
                    audit_head.upgrade(),
                ) else {
                    return;
                };
                if !lock(&broken).is_empty() {
                    continue;
                }
                let heads = Heads { last_event: &last_event, audit_head: &audit_head };
                if let Err(error) = checkpoint(&opened, &writer, heads) {
                    mark_broken(&broken, error);
                }
            }
        })?;
        Ok(())
    }

    /// Makes sled hold every write applied so far durably, then deletes the write-ahead log
    /// segments it no longer needs (see [`checkpoint`]).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let heads = Heads { last_event: &self.last_event, audit_head: &self.audit_head };
        checkpoint(&self.opened, &self.writer, heads).map_err(|error| self.broke(error))
    }

    /// The write-ahead log in use.
    fn wal(&self) -> Result<Arc<wal::Wal>, StoreError> {
        let opened = self.opened.read().unwrap_or_else(|p| p.into_inner());
        opened.as_ref().map(|o| Arc::clone(&o.wal)).ok_or_else(|| StoreError::Recovering("reopening".into()))
    }

    /// The database, for one operation (sled handles are cheap clones).
    fn db(&self) -> Result<sled::Db, StoreError> {
        let opened = self.opened.read().unwrap_or_else(|p| p.into_inner());
        opened.as_ref().map(|o| o.db.clone()).ok_or_else(|| StoreError::Recovering("reopening".into()))
    }

    /// Why the store is broken, if it is.
    pub fn broken(&self) -> Option<String> {
        let broken = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        (!broken.is_empty()).then(|| broken.clone())
    }

    /// Notes a failure that sled will not recover from by itself, and returns it.
    fn broke(&self, error: StoreError) -> StoreError {
        mark_broken(&self.broken, error)
    }

    /// Reopens a broken store. Returns whether it is healthy afterwards; on failure it stays
    /// broken and the caller tries again later.
    pub fn recover(&self) -> bool {
        if self.broken().is_none() {
            return true;
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut opened = self.opened.write().unwrap_or_else(|p| p.into_inner());
        // sled's directory lock is released when the last handle goes; readers hold clones only
        // for one operation, so a later attempt succeeds if this one finds it still held.
        drop(opened.take());
        match open_db(&self.dir).and_then(|o| Ok((last_event_of(&o.db)?, o))) {
            Ok((last_event, reopened)) => {
                match read_audit_head(&reopened.db) {
                    Ok(head) => *self.audit_head.lock().unwrap_or_else(|p| p.into_inner()) = head,
                    Err(error) => {
                        tracing::warn!(%error, "store reopened but its audit chain head cannot be read");
                        return false;
                    }
                }
                *opened = Some(reopened);
                self.certificates.clear();
                self.last_event.store(last_event, Ordering::Release);
                self.durable_events.send_if_modified(|durable| {
                    let advanced = last_event > *durable;
                    *durable = (*durable).max(last_event);
                    advanced
                });
                self.broken.lock().unwrap_or_else(|p| p.into_inner()).clear();
                tracing::info!("store reopened; writes accepted again");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "store still cannot be reopened");
                false
            }
        }
    }

    /// Makes every change applied so far durable on the device, then lets watchers see the
    /// events those changes recorded.
    pub async fn persist(&self) -> Result<(), StoreError> {
        if let Some(why) = self.broken() {
            return Err(StoreError::Recovering(why));
        }
        let covered = self.last_event.load(Ordering::Acquire);
        let generation = self.commit.last_applied();
        if let Err(error) = self.commit.wait_durable(generation).await {
            return Err(self.broke(StoreError::Io(std::io::Error::other(error))));
        }
        self.durable_events.send_if_modified(|durable| {
            let advanced = covered > *durable;
            *durable = (*durable).max(covered);
            advanced
        });
        Ok(())
    }

    /// The sequence number of the last durable event, updated after every [`Store::persist`].
    pub fn durable_events(&self) -> watch::Receiver<u64> {
        self.durable_events.subscribe()
    }

    /// The last event sequence number removed by retention (0: none): events after it are kept.
    pub fn events_pruned_through(&self) -> Result<u64, StoreError> {
        read_u64(&self.db()?, EVENTS_PRUNED_KEY, "events pruned")
    }

    /// Removes up to `limit` of the oldest events recorded before `before`, oldest first, with an
    /// audit record saying which. Never the last event (its number is where "now" is for
    /// watchers). Returns the sequence numbers removed (an empty range: none).
    pub fn prune_events(
        &self,
        before: SystemTime,
        limit: usize,
        why: &str,
    ) -> Result<std::ops::RangeInclusive<u64>, StoreError> {
        let first = self.events_pruned_through()? + 1;
        let last_event = self.last_event.load(Ordering::Acquire);
        let mut through = first - 1;
        for event in self.events_between(through, last_event.saturating_sub(1), limit)? {
            if event.sequence != through + 1
                || event.at.as_ref().is_none_or(|at| timestamp::to_system(at) >= before)
            {
                break;
            }
            through = event.sequence;
        }
        if through >= first {
            self.write(|changes| {
                for sequence in first..=through {
                    changes.batch.remove(prefixed(b'e', &sequence.to_be_bytes()));
                }
                changes.batch.insert(EVENTS_PRUNED_KEY, through.to_be_bytes().as_slice());
                changes.audit("PRUNE_EVENTS", "", &format!("events {first} to {through}: {why}"));
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(first..=through)
    }

    /// Stored events with sequence numbers in `(after, upto]`, oldest first, at most `limit`.
    pub fn events_between(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<WatchResponse>, StoreError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let start = prefixed(b'e', &(after + 1).to_be_bytes());
        let end = prefixed(b'e', &upto.to_be_bytes());
        let mut events = Vec::new();
        for item in self.db()?.range(start..=end).take(limit) {
            let (key, bytes) = item?;
            events.push(
                WatchResponse::decode(bytes.as_ref())
                    .map_err(|e| StoreError::Corrupt { key: format!("{key:02x?}"), reason: e.to_string() })?,
            );
        }
        Ok(events)
    }

    /// Requests whose acknowledgement deadline is at or before `now` and that are still not
    /// acknowledged, oldest deadline first.
    pub fn overdue(&self, now: SystemTime) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let ids = self
            .db()?
            .scan_prefix([b'a'])
            .take_while(|kv| {
                kv.as_ref().map_or(true, |(key, _)| {
                    key.get(1..9).is_some_and(|s| s <= limit.to_be_bytes().as_slice())
                })
            })
            .map(|kv| kv.map(|(key, _)| sled::IVec::from(key.get(9..).unwrap_or_default())));
        self.ids_to_messages(ids)
    }

    /// Requests whose data is preserved until a date (`preserved_until`), soonest first; with
    /// `until`, only those whose date is at or before it. Cancelled ones and closed cases are not
    /// kept here.
    pub fn preservations(&self, until: Option<SystemTime>) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = until.map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs());
        let ids = self
            .db()?
            .scan_prefix([b'p'])
            .take_while(|kv| {
                kv.as_ref().map_or(true, |(key, _)| {
                    limit.is_none_or(|l| key.get(1..9).is_some_and(|s| s <= l.to_be_bytes().as_slice()))
                })
            })
            .map(|kv| kv.map(|(key, _)| sled::IVec::from(key.get(9..).unwrap_or_default())));
        self.ids_to_messages(ids)
    }

    /// The highest signed-directory version this node has used; 0 when none is recorded. A
    /// node refuses to start on an older directory, so a replayed old file cannot roll it back.
    pub fn directory_version(&self) -> Result<u64, StoreError> {
        read_u64(&self.db()?, DIRECTORY_VERSION_KEY, "directory version")
    }

    /// Says a write is on its way, so a flush requested meanwhile may wait briefly for it (see
    /// `group_commit`); drop the guard once the write is applied.
    pub fn intend_write(&self) -> group_commit::WriteIntent {
        self.commit.intend()
    }

    /// How many syncs of the write-ahead log the store has made since it opened.
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// How many sled keys writes have set or removed since the store opened.
    pub fn keys_written(&self) -> u64 {
        self.keys_written.load(Ordering::Relaxed)
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db()?.size_on_disk()?)
    }

    /// Runs a read-modify-write operation: `operation` reads through and writes into a
    /// [`Changes`], which are applied atomically if it returns `Ok`. Not yet durable: call
    /// [`Store::persist`] before telling anyone.
    pub fn write<R, E>(&self, operation: impl FnOnce(&mut Changes<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        // A poisoned lock only means another writer panicked; sled's batch was then not applied.
        let _guard = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let last_event = self.last_event.load(Ordering::Acquire);
        let audit_head = *self.audit_head.lock().unwrap_or_else(|p| p.into_inner());
        let mut changes = Changes {
            store: self,
            batch: WriteBatch::default(),
            pending: HashMap::new(),
            last_event,
            actor: NODE_ACTOR.to_owned(),
            audit_head,
            kept_out_of_audit: Vec::new(),
            outbox_delta: HashMap::new(),
            new_certificates: Vec::new(),
        };
        let result = operation(&mut changes)?;
        // The event counter and the audit head are not written here: the batch's own `e` keys
        // and `h` records say where they stand (checkpoints write them, as floors).
        let Changes {
            batch,
            last_event: new_last_event,
            audit_head: new_audit_head,
            outbox_delta,
            new_certificates,
            ..
        } = changes;
        if let Some(why) = self.broken() {
            return Err(StoreError::Recovering(why).into());
        }
        let wal = self.wal()?;
        let WriteBatch { sled: mut batch, record, keys } = batch;
        // sled writes its buffers to disk when they fill, not only at checkpoints, so after a
        // crash it may hold writes the log never synced; the LSN in the same batch tells
        // recovery where sled stands, so it never replays older records over newer ones.
        let lsn = wal.next_lsn();
        batch.insert(APPLIED_LSN_KEY, lsn.to_be_bytes().as_slice());
        if let Err(error) = self.db()?.apply_batch(batch) {
            return Err(self.broke(error.into()).into());
        }
        self.count_queued(outbox_delta);
        self.certificates.extend(new_certificates);
        // Appended in the order applied (both under the writer lock, so the LSN is the one read
        // above), and a replay applies the records in the same order.
        wal.append(&record);
        self.keys_written.fetch_add(keys + 1, Ordering::Relaxed);
        self.last_event.store(new_last_event, Ordering::Release);
        *self.audit_head.lock().unwrap_or_else(|p| p.into_inner()) = new_audit_head;
        self.commit.applied();
        Ok(result)
    }

    /// Applies a write's queue length changes (under the writer lock, after its batch applied).
    fn count_queued(&self, delta: HashMap<OutboxQueue, isize>) {
        if delta.is_empty() {
            return;
        }
        let opened = self.opened.read().unwrap_or_else(|p| p.into_inner());
        let Some(opened) = opened.as_ref() else { return };
        let mut counts = lock(&opened.outbox_counts);
        for (queue, change) in delta {
            let count = counts.entry(queue).or_default();
            *count = count.saturating_add_signed(change);
        }
    }

    /// One message by id.
    pub fn get(&self, id: Uuid) -> Result<Option<StoredMessage>, StoreError> {
        let key = message_key(id);
        let db = self.db()?;
        let Some(bytes) = db.get(key)? else { return Ok(None) };
        let mut stored = decode(&key, &bytes)?;
        certificates::resolve(&self.certificates, &db, &mut stored)?;
        Ok(Some(stored))
    }

    /// The envelopes that answer or continue `parent`, in the order they were stored.
    pub fn replies(&self, parent: Uuid) -> Result<Vec<StoredMessage>, StoreError> {
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(parent.as_bytes());
        self.ids_to_messages(self.db()?.scan_prefix(prefix).map(|kv| kv.map(|(_, id)| id)))
    }

    /// The newest `limit` entries of a listing that `keep` accepts, newest first.
    pub fn list(
        &self,
        listing: Listing,
        limit: usize,
        keep: impl Fn(&StoredMessage) -> bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut kept = Vec::new();
        for item in self.db()?.scan_prefix([listing.prefix()]).rev() {
            if kept.len() >= limit {
                break;
            }
            let (_, id) = item?;
            let message = self.ids_to_messages(std::iter::once(Ok(id)))?;
            kept.extend(message.into_iter().filter(|m| keep(m)));
        }
        Ok(kept)
    }

    /// Every message of a listing, oldest first, handed to `visit` one at a time (a report over
    /// the whole store never holds it in memory).
    pub fn visit(&self, listing: Listing, mut visit: impl FnMut(&StoredMessage)) -> Result<(), StoreError> {
        for item in self.db()?.scan_prefix([listing.prefix()]) {
            let (_, id) = item?;
            for message in self.ids_to_messages(std::iter::once(Ok(id)))? {
                visit(&message);
            }
        }
        Ok(())
    }

    /// One page of a listing, newest first: up to `limit` messages that `keep` accepts, from
    /// the first key below `before` (from the newest when `None`), each with its listing key
    /// (what the next page starts below). New messages take higher keys, so a page that
    /// continues below a key never shows them: paging is stable while messages arrive.
    pub fn list_page(
        &self,
        listing: Listing,
        before: Option<&[u8]>,
        limit: usize,
        keep: impl Fn(&StoredMessage) -> bool,
    ) -> Result<Vec<(Vec<u8>, StoredMessage)>, StoreError> {
        let db = self.db()?;
        let prefix = [listing.prefix()];
        let end = match before {
            Some(key) if key.first() == Some(&listing.prefix()) => key.to_vec(),
            _ => vec![listing.prefix() + 1],
        };
        let mut kept = Vec::new();
        for item in db.range(prefix.to_vec()..end).rev() {
            if kept.len() >= limit {
                break;
            }
            let (key, id) = item?;
            for message in self.ids_to_messages(std::iter::once(Ok(id)))? {
                if keep(&message) {
                    kept.push((key.to_vec(), message));
                }
            }
        }
        Ok(kept)
    }

    /// One page of the messages whose acknowledgement deadline passed by `now`, oldest deadline
    /// first: up to `limit` that `keep` accepts, from the first overdue-index key above `after`,
    /// each with its key (what the next page starts above).
    pub fn overdue_page(
        &self,
        now: SystemTime,
        after: Option<&[u8]>,
        limit: usize,
        keep: impl Fn(&StoredMessage) -> bool,
    ) -> Result<Vec<(Vec<u8>, StoredMessage)>, StoreError> {
        let seconds = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let db = self.db()?;
        let start = match after {
            Some(key) if key.first() == Some(&b'a') => std::ops::Bound::Excluded(key.to_vec()),
            _ => std::ops::Bound::Included(vec![b'a']),
        };
        let mut kept = Vec::new();
        for item in db.range::<Vec<u8>, _>((start, std::ops::Bound::Excluded(vec![b'a' + 1]))) {
            if kept.len() >= limit {
                break;
            }
            let (key, _) = item?;
            if key.get(1..9).is_none_or(|s| s > seconds.to_be_bytes().as_slice()) {
                break;
            }
            let id = sled::IVec::from(key.get(9..).unwrap_or_default());
            for message in self.ids_to_messages(std::iter::once(Ok(id)))? {
                if keep(&message) {
                    kept.push((key.to_vec(), message));
                }
            }
        }
        Ok(kept)
    }

    /// The first `limit` messages waiting for `destination`, in sending order (precedence, then
    /// submission).
    pub fn outbox_for(&self, destination: NodeCode, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let mut prefix = vec![b'o'];
        prefix.extend_from_slice(destination.as_str().as_bytes());
        // The keys are read under the writer lock. sled iterators are not snapshots: a scan that
        // overlapped two Submits could miss an earlier FLASH (its range already passed) yet see
        // a later ROUTINE, and send the ROUTINE first (the 100,000-message chaos run caught it).
        // Under the lock the scan sees the queue as it stood between two writes.
        let ids = {
            let _guard = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let keys = self.db()?.scan_prefix(prefix).take(limit);
            keys.map(|kv| kv.map(|(_, id)| id)).collect::<Result<Vec<_>, _>>()?
        };
        self.ids_to_messages(ids.into_iter().map(Ok))
    }

    /// Per precedence: how many messages wait for `destination`, and the first of them (the
    /// oldest of that precedence). Reads keys only, plus one message per precedence.
    pub fn outbox_summary(
        &self,
        destination: NodeCode,
    ) -> Result<Vec<(Precedence, usize, Option<StoredMessage>)>, StoreError> {
        let mut prefix = vec![b'o'];
        prefix.extend_from_slice(destination.as_str().as_bytes());
        let mut summary = Vec::new();
        for precedence in
            [Precedence::Flash, Precedence::Immediate, Precedence::Priority, Precedence::Routine]
        {
            let mut ranked = prefix.clone();
            ranked.push(precedence_rank(precedence));
            let first = match self.db()?.scan_prefix(&ranked).next() {
                Some(item) => self.ids_to_messages(std::iter::once(item.map(|(_, id)| id)))?.pop(),
                None => None,
            };
            let count = self.queued(destination, precedence)?;
            summary.push((precedence, count, first));
        }
        Ok(summary)
    }

    /// How many messages of `precedence` wait for `destination` (kept in memory, not scanned).
    fn queued(&self, destination: NodeCode, precedence: Precedence) -> Result<usize, StoreError> {
        let opened = self.opened.read().unwrap_or_else(|p| p.into_inner());
        let opened = opened.as_ref().ok_or_else(|| StoreError::Recovering("reopening".into()))?;
        let queue = <[u8; 2]>::try_from(destination.as_str().as_bytes())
            .ok()
            .map(|d| (d, precedence_rank(precedence)));
        Ok(queue.and_then(|q| lock(&opened.outbox_counts).get(&q).copied()).unwrap_or(0))
    }

    /// How many messages wait for `destination`.
    pub fn outbox_len(&self, destination: NodeCode) -> Result<usize, StoreError> {
        let mut prefix = vec![b'o'];
        prefix.extend_from_slice(destination.as_str().as_bytes());
        Ok(self.db()?.scan_prefix(prefix).count())
    }

    fn ids_to_messages(
        &self,
        ids: impl Iterator<Item = Result<sled::IVec, sled::Error>>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut messages = Vec::new();
        for id in ids {
            let id = id?;
            let id = Uuid::from_slice(&id)
                .map_err(|e| StoreError::Corrupt { key: "index".into(), reason: e.to_string() })?;
            // An index entry without its message would be a broken invariant; report it.
            let message = self.get(id)?.ok_or_else(|| StoreError::Corrupt {
                key: id.to_string(),
                reason: "indexed but missing".into(),
            })?;
            messages.push(message);
        }
        Ok(messages)
    }
}

/// The writes of one [`Store::write`] operation, readable before they are applied.
pub struct Changes<'a> {
    store: &'a Store,
    batch: WriteBatch,
    pending: HashMap<Uuid, StoredMessage>,
    last_event: u64,
    /// Who the audit records of this operation name.
    actor: String,
    /// The end of the audit chain including this operation's records.
    audit_head: ChainHead,
    /// Notes that carry foreign or officer text, each with the words the audit log gets in its
    /// place ([`Changes::note_with_text`]).
    kept_out_of_audit: Vec<(String, String)>,
    /// How this operation changes each queue's length (applied with the batch).
    outbox_delta: HashMap<OutboxQueue, isize>,
    /// Origin certificates this operation found stored or stores (known once it is applied).
    new_certificates: Vec<([u8; 32], Arc<[u8]>)>,
}

impl Changes<'_> {
    /// One message, as this operation has left it so far.
    pub fn get(&self, id: Uuid) -> Result<Option<StoredMessage>, StoreError> {
        match self.pending.get(&id) {
            Some(message) => Ok(Some(message.clone())),
            None => self.store.get(id),
        }
    }

    /// A new sequence number, greater than every one handed out before (also across restarts).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.store.db()?.generate_id()?)
    }

    /// Stores a message, keeps its index keys true to its state, and records an event for each
    /// new timeline entry and for a new overdue announcement.
    pub fn put(&mut self, stored: StoredMessage) -> Result<(), StoreError> {
        let id = id_of(&stored)?;
        let before = self.get(id)?;
        self.put_after(stored, id, before)
    }

    /// [`Changes::put`] for a message whose id was made just now (a UUIDv7 of this process, so no
    /// stored record has it): the previous record is not read back from sled, only from this
    /// operation's own writes. A `Submit` then reads nothing of the store to store its message.
    pub fn put_new(&mut self, stored: StoredMessage) -> Result<(), StoreError> {
        let id = id_of(&stored)?;
        let before = self.pending.get(&id).cloned();
        self.put_after(stored, id, before)
    }

    /// Stores `stored` (message `id`) over `before`, what it replaces.
    fn put_after(
        &mut self,
        mut stored: StoredMessage,
        id: Uuid,
        before: Option<StoredMessage>,
    ) -> Result<(), StoreError> {
        let message = stored.message.as_ref().ok_or(StoreError::Malformed("no message"))?;
        let envelope = message.envelope.as_ref().ok_or(StoreError::Malformed("no envelope"))?;
        if before.is_none() {
            // Costs nothing for a message without attachments (no read, no key).
            for attachment in &envelope.attachments {
                if let Some(digest) = attachments::digest_of(&attachment.sha256) {
                    self.reference_attachment(&digest, id);
                }
            }
        }
        let seq = stored.seq.to_be_bytes();
        match message.direction() {
            Direction::Outbound => {
                let destination = envelope.destination.as_bytes();
                if destination.len() != 2 {
                    return Err(StoreError::Malformed("destination is not a node code"));
                }
                let mut key = vec![b'o'];
                key.extend_from_slice(destination);
                key.push(precedence_rank(envelope.precedence()));
                key.extend_from_slice(&seq);
                let queued =
                    |m: &Message| matches!(m.state(), MessageState::Queued | MessageState::WaitingRetry);
                let was_queued = before.as_ref().and_then(|b| b.message.as_ref()).is_some_and(queued);
                let is_queued = queued(message);
                if let Some(queue) = outbox_queue_of(&key).filter(|_| was_queued != is_queued) {
                    *self.outbox_delta.entry(queue).or_default() += if is_queued { 1 } else { -1 };
                }
                if is_queued {
                    self.batch.insert(key, id.as_bytes().as_slice());
                } else {
                    self.batch.remove(key);
                }
                self.batch.insert(prefixed(b's', &seq), id.as_bytes().as_slice());
            }
            Direction::Inbound if envelope.kind() == EnvelopeKind::Request => {
                self.batch.insert(prefixed(b'i', &seq), id.as_bytes().as_slice());
            }
            _ => {}
        }
        if let Ok(parent) = Uuid::parse_str(&envelope.in_reply_to) {
            let mut key = prefixed(b'r', parent.as_bytes());
            key.extend_from_slice(&seq);
            self.batch.insert(key, id.as_bytes().as_slice());
        }
        let old_ack_key = before.as_ref().and_then(|b| b.message.as_ref()).and_then(|m| ack_key(m, id));
        let new_ack_key = ack_key(message, id);
        if let Some(old) = old_ack_key.filter(|old| Some(old) != new_ack_key.as_ref()) {
            self.batch.remove(old);
        }
        if let Some(new) = new_ack_key {
            self.batch.insert(new, &[] as &[u8]);
        }
        let old_clock_key = before.as_ref().and_then(|b| b.message.as_ref()).and_then(|m| clock_key(m, id));
        let new_clock_key = clock_key(message, id);
        if let Some(old) = old_clock_key.filter(|old| Some(old) != new_clock_key.as_ref()) {
            self.batch.remove(old);
        }
        if let Some(new) = new_clock_key {
            self.batch.insert(new, &[] as &[u8]);
        }

        let old_timeline = before.as_ref().and_then(|b| b.message.as_ref()).map_or(0, |m| m.timeline.len());
        for entry in message.timeline.iter().skip(old_timeline) {
            let event = WatchResponse {
                at: entry.at,
                state: entry.state,
                ..message_event(message, entry.note.clone())
            };
            self.record_event(event);
            let state = crate::domain::lifecycle::state_name(entry.state());
            self.audit(state, &envelope.id, &entry.note);
        }
        if stored.overdue_announced && !before.as_ref().is_some_and(|b| b.overdue_announced) {
            let deadline = message.ack_deadline.as_ref().map(timestamp::rfc3339).unwrap_or_default();
            let note = format!("OVERDUE: not acknowledged by its deadline {deadline}");
            let event = WatchResponse { overdue: true, ..message_event(message, note) };
            self.audit("OVERDUE", &envelope.id, &event.note);
            self.record_event(event);
            self.notify(
                crate::config::NotifyEvent::RequestOverdue,
                &notice_of(message, "not acknowledged by its deadline"),
            )?;
        }
        let reminded = |s: &StoredMessage| (s.reminded_until, s.reminded_lead_seconds);
        if stored.reminded_lead_seconds > 0 && before.as_ref().map(reminded) != Some(reminded(&stored)) {
            let until = stored.reminded_until.as_ref().map(timestamp::rfc3339).unwrap_or_default();
            let lead =
                humantime::format_duration(std::time::Duration::from_secs(stored.reminded_lead_seconds));
            let note = format!("PRESERVATION LAPSES {until}: the {lead} reminder");
            let event = WatchResponse { preservation_reminder: true, ..message_event(message, note) };
            self.audit("PRESERVATION_REMINDER", &envelope.id, &event.note);
            self.record_event(event);
            self.notify(
                crate::config::NotifyEvent::PreservationExpiring,
                &notice_of(message, &format!("preserved until {until}")),
            )?;
        }
        let arrived = before.is_none()
            && message.direction() == Direction::Inbound
            && envelope.kind() == EnvelopeKind::Request;
        if arrived {
            self.notify(crate::config::NotifyEvent::RequestArrived, &notice_of(message, "request received"))?;
        }
        let record = self.encode_record(&mut stored)?;
        self.batch.insert(message_key(id).as_slice(), record);
        self.pending.insert(id, stored);
        Ok(())
    }

    /// The preservation a follow-up (`request`, a PRESERVATION request with `in_reply_to`)
    /// continues: up the chain of PRESERVATION requests to the one that started it.
    fn preservation_of(&self, request: &Envelope) -> Result<Option<StoredMessage>, StoreError> {
        let mut parent_id = request.in_reply_to.clone();
        // A chain of follow-ups is short; the bound keeps a malformed loop finite.
        for _ in 0..32 {
            let Ok(id) = Uuid::parse_str(&parent_id) else { return Ok(None) };
            let Some(parent) = self.get(id)? else { return Ok(None) };
            let Some(envelope) = parent.message.as_ref().and_then(|m| m.envelope.as_ref()) else {
                return Ok(None);
            };
            if envelope.kind() != EnvelopeKind::Request
                || envelope.request_type() != crate::proto::RequestType::Preservation
            {
                return Ok(None);
            }
            if envelope.in_reply_to.is_empty() || envelope.preservation.is_some() {
                return Ok(Some(parent));
            }
            parent_id = envelope.in_reply_to.clone();
        }
        Ok(None)
    }

    /// An executed follow-up of a preservation (an extension, or the answer to the note that
    /// the mutual legal assistance request was sent: `request`, answered with `outcome`) moves
    /// the preservation's `preserved_until` too, at either end. Returns the preservation if it
    /// changed.
    pub fn extend_preservation(
        &mut self,
        request: &Envelope,
        outcome: Option<&crate::proto::Outcome>,
    ) -> Result<Option<Message>, StoreError> {
        let Some(until) = outcome.and_then(|o| o.preserved_until) else { return Ok(None) };
        let Some(mut root) = self.preservation_of(request)? else { return Ok(None) };
        let message = root.message.get_or_insert_default();
        if !crate::domain::lifecycle::record_preserved_until(message, Some(until)) {
            return Ok(None);
        }
        let message = message.clone();
        self.put(root)?;
        Ok(Some(message))
    }

    /// A follow-up that says the mutual legal assistance request was sent (`request`, new here:
    /// submitted or received) records its reference on the preservation, at either end.
    /// Returns the preservation if it changed.
    pub fn record_follow_up(&mut self, request: &Envelope) -> Result<Option<Message>, StoreError> {
        let Some(follow_up) = &request.follow_up else { return Ok(None) };
        if follow_up.mla_reference.is_empty() {
            return Ok(None);
        }
        let Some(mut root) = self.preservation_of(request)? else { return Ok(None) };
        let message = root.message.get_or_insert_default();
        message.mla_reference = follow_up.mla_reference.clone();
        message.mla_sent_at = request.created_at;
        let message = message.clone();
        self.put(root)?;
        Ok(Some(message))
    }

    /// Records that this node now uses signed-directory `version` (the caller never lowers it).
    pub fn record_directory_version(&mut self, version: u64) {
        self.batch.insert(DIRECTORY_VERSION_KEY, version.to_be_bytes().as_slice());
    }

    fn record_event(&mut self, mut event: WatchResponse) {
        self.last_event += 1;
        event.sequence = self.last_event;
        self.batch.insert(prefixed(b'e', &self.last_event.to_be_bytes()), event.encode_to_vec());
    }
}

/// The lifecycle event about `message` now, in its current state, with `note` (not overdue, not
/// a reminder); callers change what differs.
fn message_event(message: &Message, note: String) -> WatchResponse {
    use crate::domain::names::ShortName as _;
    let envelope = message.envelope.as_ref();
    WatchResponse {
        sequence: 0,
        at: Some(timestamp::now()),
        message_id: envelope.map(|e| e.id.clone()).unwrap_or_default(),
        state: message.state,
        peer: peer_of(message).to_owned(),
        precedence: envelope.map_or(0, |e| e.precedence),
        note,
        overdue: false,
        exercise: envelope.is_some_and(|e| e.exercise),
        outcome: message.outcome.as_ref().map(|o| o.kind().short_name().to_owned()).unwrap_or_default(),
        preservation_reminder: false,
    }
}

/// What a notification says of `message`: ids, type, precedence, the other member, the deadline.
fn notice_of(message: &Message, detail: &str) -> notifications::Notice {
    use crate::domain::names::ShortName as _;
    let envelope = message.envelope.clone().unwrap_or_default();
    notifications::Notice {
        message_id: envelope.id.clone(),
        request_type: envelope.request_type().short_name().to_owned(),
        precedence: Some(envelope.precedence()),
        peer: peer_of(message).to_owned(),
        deadline: message.ack_deadline.as_ref().map(timestamp::rfc3339).unwrap_or_default(),
        detail: detail.to_owned(),
        exercise: envelope.exercise,
    }
}

/// Who audit records name when nobody else acted: delivery, retries, expiry, overdue.
pub const NODE_ACTOR: &str = "node";

impl Changes<'_> {
    /// Names who the audit records of this operation are about: a desk client, a peer
    /// (`peer:<CC>`); [`NODE_ACTOR`] until set.
    pub fn act_as(&mut self, who: impl Into<String>) {
        self.actor = who.into();
    }

    /// The end of the audit chain including this operation's records so far.
    pub fn audit_head(&self) -> ChainHead {
        self.audit_head
    }

    /// "summary: text", a note for a message's timeline (which officers read) that carries
    /// foreign or officer `text` (a body, a note, a reason, a peer's refusal). Wherever the note
    /// reaches this operation's audit records, the text stands as its length and digest
    /// ([`audit::text_digest`]): the auditor sees who did what, never content.
    pub fn note_with_text(&mut self, summary: impl Into<String>, text: &str) -> String {
        let summary = summary.into();
        if text.is_empty() {
            return summary;
        }
        let note = format!("{summary}: {text}");
        let audited = format!("{summary}: {}", audit::text_digest(text));
        self.kept_out_of_audit.push((note.clone(), audited));
        note
    }

    /// Appends an audit record (who: the actor, `action`, the message concerned or "", short
    /// `details` with no content: see [`Changes::note_with_text`]) to the hash chain, in this
    /// operation's batch.
    pub fn audit(&mut self, action: &str, message_id: &str, details: &str) {
        let mut details = details.to_owned();
        for (note, audited) in &self.kept_out_of_audit {
            if details.contains(note.as_str()) {
                details = details.replace(note.as_str(), audited);
            }
        }
        let mut record = ListAuditResponse {
            at: Some(timestamp::now()),
            who: self.actor.clone(),
            action: action.to_owned(),
            message_id: message_id.to_owned(),
            details,
            ..Default::default()
        };
        self.audit_head = crate::store::audit::seal(&self.audit_head, &mut record);
        self.batch.insert(audit_record_key(record.sequence), record.encode_to_vec());
    }
}

impl Store {
    /// The end of the audit chain as applied so far (durable after the next [`Store::persist`]).
    pub fn audit_head(&self) -> ChainHead {
        *self.audit_head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Audit records stored under sequence numbers in `(after, upto]`, in order, at most `limit`,
    /// each with the sequence number of its key. A record whose bytes do not decode comes back
    /// with only `sequence` (from its key) and `damaged` set, so that a verifier can name it
    /// rather than the read failing.
    pub fn audit_records(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ListAuditResponse)>, StoreError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let range = audit_record_key(after + 1)..=audit_record_key(upto);
        let mut records = Vec::new();
        for item in self.db()?.range(range).take(limit) {
            let (key, bytes) = item?;
            let sequence = key.get(1..9).and_then(|s| s.try_into().ok()).map_or(0, u64::from_be_bytes);
            let record = ListAuditResponse::decode(bytes.as_ref()).unwrap_or_else(|error| {
                ListAuditResponse { sequence, damaged: error.to_string(), ..Default::default() }
            });
            records.push((sequence, record));
        }
        Ok(records)
    }
}

/// What a desk client's `Submit` under a client request id stored: the message, and the digest
/// of the request's content, so that a retry can be told from a different request reusing the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRequest {
    /// The message that `Submit` stored.
    pub message_id: Uuid,
    /// SHA-256 of the request's content fields, as the desk computes it.
    pub digest: [u8; 32],
}

impl ClientRequest {
    fn to_bytes(self) -> [u8; 48] {
        let mut bytes = [0; 48];
        bytes[..16].copy_from_slice(self.message_id.as_bytes());
        bytes[16..].copy_from_slice(&self.digest);
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let message_id = Uuid::from_slice(bytes.get(..16)?).ok()?;
        let digest = bytes.get(16..)?.try_into().ok()?;
        Some(Self { message_id, digest })
    }
}

/// The key of `client`'s request id `request_id`: the id first, so that a point read finds it
/// and the names of clients need no separator (keys are only ever read whole).
fn client_request_key(client: &str, request_id: Uuid) -> Vec<u8> {
    let mut key = prefixed(b'q', request_id.as_bytes());
    key.extend_from_slice(client.as_bytes());
    key
}

impl Store {
    /// What `client`'s `Submit` under `request_id` stored, if it made one. Outside the writer
    /// lock: a hint only (the answer may be about to change); decide under [`Store::write`]
    /// with [`Changes::client_request`].
    pub fn client_request(
        &self,
        client: &str,
        request_id: Uuid,
    ) -> Result<Option<ClientRequest>, StoreError> {
        let key = client_request_key(client, request_id);
        match self.db()?.get(&key)? {
            None => Ok(None),
            Some(bytes) => ClientRequest::from_bytes(&bytes).map(Some).ok_or_else(|| StoreError::Corrupt {
                key: format!("request id {request_id} of {client}"),
                reason: format!("{} bytes, expected 48", bytes.len()),
            }),
        }
    }
}

impl Changes<'_> {
    /// What `client`'s `Submit` under `request_id` stored, read under the writer lock (so no
    /// other write can record the same id between this read and this operation's own record).
    /// An operation records at most one request id.
    pub fn client_request(
        &self,
        client: &str,
        request_id: Uuid,
    ) -> Result<Option<ClientRequest>, StoreError> {
        self.store.client_request(client, request_id)
    }

    /// Records that `client`'s `Submit` under `request_id` stored `request` (one small key, in
    /// the batch and log record that store the message).
    pub fn record_client_request(&mut self, client: &str, request_id: Uuid, request: ClientRequest) {
        self.batch.insert(client_request_key(client, request_id), request.to_bytes());
    }
}

impl Changes<'_> {
    /// Keeps `head` as the newest audit head witnessed of its node (the caller checked its
    /// signature and that it is newer than the one kept).
    pub fn keep_witnessed_head(&mut self, node: NodeCode, head: &crate::proto::SignedAuditHead) {
        self.batch.insert(prefixed(b'w', node.as_str().as_bytes()), head.encode_to_vec());
    }
}

impl Store {
    /// The newest audit head witnessed of `node` (from its `Hello`s), if any.
    pub fn witnessed_head(
        &self,
        node: NodeCode,
    ) -> Result<Option<crate::proto::SignedAuditHead>, StoreError> {
        let Some(bytes) = self.db()?.get(prefixed(b'w', node.as_str().as_bytes()))? else {
            return Ok(None);
        };
        crate::proto::SignedAuditHead::decode(bytes.as_ref()).map(Some).map_err(|e| StoreError::Corrupt {
            key: format!("witnessed audit head of {node}"),
            reason: e.to_string(),
        })
    }
}

/// The recovery from peers that a restore asked for (`restore --recover-from-peers`): its id
/// (16 bytes) and the point it asks peers from (Unix seconds, i64 BE).
const RECOVERY_KEY: &[u8] = b"crecovery";

/// A recovery from peers that a restore asked for, as the store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPending {
    /// Names this recovery: a peer is done when its key holds this id (a later restore of a
    /// backup made after a recovery asks every peer again).
    pub id: Uuid,
    /// Peers are asked for exchanges completed since this time (Unix seconds).
    pub since_seconds: i64,
}

impl Changes<'_> {
    /// Asks the node to recover from every peer (see `peer::recovery`).
    pub fn mark_recovery_pending(&mut self, pending: RecoveryPending) {
        let mut value = pending.id.as_bytes().to_vec();
        value.extend_from_slice(&pending.since_seconds.to_be_bytes());
        self.batch.insert(RECOVERY_KEY, value);
    }

    /// Records that recovery `id` from `peer` is done, with what came back (`result`).
    pub fn mark_recovered(&mut self, peer: NodeCode, id: Uuid, result: &str) {
        let mut value = id.as_bytes().to_vec();
        value.extend_from_slice(result.as_bytes());
        self.batch.insert(recovered_key(peer), value);
    }
}

/// The key saying which recovery from `peer` is done (`c` "recovered" code(2)).
fn recovered_key(peer: NodeCode) -> Vec<u8> {
    let mut key = b"crecovered".to_vec();
    key.extend_from_slice(peer.as_str().as_bytes());
    key
}

impl Store {
    /// The recovery from `peer` still to do, if a restore asked for one.
    pub fn recovery_pending(&self, peer: NodeCode) -> Result<Option<RecoveryPending>, StoreError> {
        let db = self.db()?;
        let Some(value) = db.get(RECOVERY_KEY)? else { return Ok(None) };
        let corrupt = || StoreError::Corrupt { key: "recovery".into(), reason: "not 24 bytes".into() };
        let id = value.get(..16).and_then(|b| Uuid::from_slice(b).ok()).ok_or_else(corrupt)?;
        let since = value.get(16..24).and_then(|b| <[u8; 8]>::try_from(b).ok()).ok_or_else(corrupt)?;
        let done =
            db.get(recovered_key(peer))?.is_some_and(|done| done.get(..16) == Some(id.as_bytes().as_slice()));
        Ok((!done).then_some(RecoveryPending { id, since_seconds: i64::from_be_bytes(since) }))
    }

    /// What the last recovery done from `peer` brought back, if one was.
    pub fn recovery_result(&self, peer: NodeCode) -> Result<Option<String>, StoreError> {
        let value = self.db()?.get(recovered_key(peer))?;
        Ok(value.map(|v| String::from_utf8_lossy(v.get(16..).unwrap_or_default()).into_owned()))
    }

    /// Every message exchanged with `peer` (sent to it or received from it) that `keep` accepts,
    /// in the order this node stored them (sequence number). A scan of every message: only a
    /// peer's recovery reads it, once after a restore.
    pub fn exchanged_with(
        &self,
        peer: NodeCode,
        keep: impl Fn(&StoredMessage) -> bool,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut kept = Vec::new();
        for item in self.db()?.scan_prefix([b'm']) {
            let (key, bytes) = item?;
            let mut stored = decode(&key, &bytes)?;
            certificates::resolve(&self.certificates, &self.db()?, &mut stored)?;
            let ours = stored.message.as_ref().is_some_and(|m| peer_of(m) == peer.as_str());
            if ours && keep(&stored) {
                kept.push(stored);
            }
        }
        kept.sort_by_key(|stored| stored.seq);
        Ok(kept)
    }
}

/// The key of audit record `sequence` (`h` sequence(8)); public so that tests can tamper with
/// the chain the way an intruder with access to the files would.
pub fn audit_record_key(sequence: u64) -> Vec<u8> {
    prefixed(b'h', &sequence.to_be_bytes())
}

/// The audit chain head: the newest `h` record, or the head the last checkpoint wrote if that is
/// further (records after it were deleted: the node appends after the head, so the gap shows in
/// `audit verify`). Never behind the newest record, so that a head that was deleted or rolled
/// back cannot make the node overwrite records.
fn read_audit_head(db: &sled::Db) -> Result<ChainHead, StoreError> {
    let stored = match db.get(AUDIT_HEAD_KEY)? {
        Some(bytes) => ChainHead::from_bytes(&bytes).ok_or_else(|| StoreError::Corrupt {
            key: "audit chain head".into(),
            reason: "not 40 bytes".into(),
        })?,
        None => ChainHead::default(),
    };
    let Some((key, bytes)) = db.scan_prefix([b'h']).next_back().transpose()? else {
        return Ok(stored);
    };
    let sequence = key.get(1..9).and_then(|s| s.try_into().ok()).map_or(0, u64::from_be_bytes);
    if sequence <= stored.sequence {
        return Ok(stored);
    }
    // The usual case since writes stopped writing the head (issue 13): records appended after
    // the last checkpoint.
    tracing::debug!(
        checkpointed = stored.sequence,
        newest = sequence,
        "audit chain head from its newest record"
    );
    // A damaged newest record has no hash to link to: the next record's link then breaks
    // visibly, after the damaged one.
    let hash = ListAuditResponse::decode(bytes.as_ref())
        .ok()
        .and_then(|record| <[u8; 32]>::try_from(record.hash).ok())
        .unwrap_or(crate::store::audit::GENESIS_HASH);
    Ok(ChainHead { sequence, hash })
}

/// The other node concerned: the destination of an outbound message, the origin of an inbound one.
pub fn peer_of(message: &Message) -> &str {
    let envelope = message.envelope.as_ref();
    match message.direction() {
        Direction::Inbound => envelope.map_or("", |e| e.origin.as_str()),
        _ => envelope.map_or("", |e| e.destination.as_str()),
    }
}

/// Whether a request still waits for a person at its destination to take it (a closed case waits
/// for nobody: it is never overdue).
pub fn awaits_acknowledgement(message: &Message) -> bool {
    let is_request = message.envelope.as_ref().is_some_and(|e| e.kind() == EnvelopeKind::Request);
    is_request
        && message.closed_at.is_none()
        && match message.direction() {
            Direction::Outbound => {
                matches!(
                    message.state(),
                    MessageState::Queued | MessageState::WaitingRetry | MessageState::Delivered
                )
            }
            Direction::Inbound => message.state() == MessageState::Received,
            Direction::Unspecified => false,
        }
}

/// The preservation clock's index key: requests with a `preserved_until` that are neither
/// cancelled nor closed (a closed case asks for no reminder), by that time (seconds, rounded
/// down) then id.
fn clock_key(message: &Message, id: Uuid) -> Option<Vec<u8>> {
    let until = message.preserved_until.as_ref()?;
    let is_request = message.envelope.as_ref().is_some_and(|e| e.kind() == EnvelopeKind::Request);
    if !is_request || message.state() == MessageState::Cancelled || message.closed_at.is_some() {
        return None;
    }
    let mut key = prefixed(b'p', &u64::try_from(until.seconds).unwrap_or(0).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    Some(key)
}

fn ack_key(message: &Message, id: Uuid) -> Option<Vec<u8>> {
    let deadline = message.ack_deadline.as_ref()?;
    if !awaits_acknowledgement(message) {
        return None;
    }
    // Rounded up, so that "deadline second <= now second" in `overdue` implies the deadline passed.
    let seconds = u64::try_from(deadline.seconds).unwrap_or(0) + u64::from(deadline.nanos > 0);
    let mut key = prefixed(b'a', &seconds.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    Some(key)
}

/// Marks the store broken by `error` (a failed write or sync: it refuses writes until it is
/// reopened), unless it already is; returns the error.
fn mark_broken(broken: &Mutex<String>, error: StoreError) -> StoreError {
    if matches!(error, StoreError::Sled(_) | StoreError::Io(_)) {
        let mut broken = lock(broken);
        if broken.is_empty() {
            tracing::error!(%error, "store write failed; refusing writes until it is reopened");
            *broken = error.to_string();
        }
    }
    error
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means another writer panicked; sled's batch was then not applied.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A checkpoint: makes sled hold every write applied so far durably, then deletes the write-ahead
/// log segments it no longer needs. The log stays the durability point; this only bounds how much
/// of it a restart replays and how much disk it takes.
/// The event counter and audit chain head in memory, which a checkpoint writes as floors.
struct Heads<'a> {
    last_event: &'a AtomicU64,
    audit_head: &'a Mutex<ChainHead>,
}

fn checkpoint(
    opened: &std::sync::RwLock<Option<Opened>>,
    writer: &Mutex<()>,
    heads: Heads<'_>,
) -> Result<(), StoreError> {
    let (db, file, wal) = {
        let opened = opened.read().unwrap_or_else(|p| p.into_inner());
        let opened = opened.as_ref().ok_or_else(|| StoreError::Recovering("reopening".into()))?;
        (opened.db.clone(), Arc::clone(&opened.db_file), Arc::clone(&opened.wal))
    };
    // Under the writer lock, every record up to `through` is applied to sled (each with its LSN):
    // after the flush, sled holds them durably and the log before them can go.
    // The counters go in outside the log: they only say where the `e` keys and `h` records
    // written up to `through` end, which a replay of the log after a crash derives again.
    let through = {
        let _writer = lock(writer);
        let mut counters = sled::Batch::default();
        counters.insert(EVENT_COUNTER_KEY, heads.last_event.load(Ordering::Acquire).to_be_bytes().as_slice());
        counters.insert(AUDIT_HEAD_KEY, lock(heads.audit_head).to_bytes().as_slice());
        db.apply_batch(counters)?;
        wal.last_appended()
    };
    db.flush()?;
    crash_point::reached("checkpoint");
    file.sync_data()?;
    wal.cut(through).map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
    Ok(())
}

/// sled's page cache. Its default (1 GiB) would let a busy node grow far past the 200 MiB a
/// node should need. sled counts only part of what a cached page costs (a node's resident memory
/// grows by about twice this), and the hot part of the store (queues, recent messages, indexes)
/// fits in 32 MiB: against 64 MiB, the bench measured the receiver at 178 instead of 261 MiB
/// after 100,000 messages, with the same or better throughput (docs/benchmarks.md).
const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// How long an open waits for a directory lock that is being released.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens a sled database, waiting briefly while its directory lock is still held by a handle
/// that was just dropped. sled 0.34 releases the lock only when its background threads exit,
/// after `Drop` returns (spacejam/sled#1234), so an immediate reopen in the same process (a
/// restore, a store recovering from a write failure) or by a process started right after
/// another closed it can find the lock still taken. A lock held by a live node is held far
/// longer than the wait, so two nodes on one directory are still refused.
fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_RELEASE_WAIT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            result => return result,
        }
    }
}

fn open_db(dir: &Path) -> Result<Opened, StoreError> {
    let db = open_sled(
        &sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            // Checkpoints flush sled; its own background flush would only add work.
            .flush_every_ms(None)
            // Writes come in bursts of small records; favour throughput over file compactness.
            .mode(sled::Mode::HighThroughput),
    )?;
    let db_file = Arc::new(File::open(dir.join("db"))?);
    let checkpoint = read_u64(&db, APPLIED_LSN_KEY, "applied LSN")?;
    let (wal, recovered) = wal::Wal::recover(&dir.join("wal"), checkpoint, |lsn, record| {
        let mut batch = wal::decode_record(record)?;
        batch.insert(APPLIED_LSN_KEY, lsn.to_be_bytes().as_slice());
        db.apply_batch(batch).map_err(|e| e.to_string())
    })
    .map_err(|e| StoreError::Corrupt { key: "write-ahead log".into(), reason: e.to_string() })?;
    let outbox_counts = Mutex::new(count_outbox(&db)?);
    let opened = Opened { db, db_file, wal: Arc::new(wal), outbox_counts };
    if recovered.replayed > 0 {
        tracing::info!(records = recovered.replayed, checkpoint, "write-ahead log replayed");
    }
    Ok(opened)
}

/// Refuses a newer layout, records the current one in a new store (or in one made before the
/// version key existed, whose layout is version 1).
fn check_schema(db: &sled::Db) -> Result<(), StoreError> {
    match db.get(SCHEMA_KEY)? {
        None => {
            db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes().as_slice())?;
            db.flush()?;
            Ok(())
        }
        Some(bytes) => {
            let found = u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                key: "schema version".into(),
                reason: "not 4 bytes".into(),
            })?);
            if found > SCHEMA_VERSION {
                return Err(StoreError::NewerSchema { found, supported: SCHEMA_VERSION });
            }
            // found < SCHEMA_VERSION: migrations go here, oldest first, each in one batch.
            Ok(())
        }
    }
}

/// The last event's sequence number: the newest `e` key, or the counter a checkpoint wrote if that
/// is higher (retention never removes the newest event, so it is not, short of damage).
fn last_event_of(db: &sled::Db) -> Result<u64, StoreError> {
    let counted = read_u64(db, EVENT_COUNTER_KEY, "event counter")?;
    let newest = match db.scan_prefix([b'e']).keys().next_back().transpose()? {
        Some(key) => {
            key.get(1..9).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes).ok_or_else(|| {
                StoreError::Corrupt {
                    key: format!("{key:02x?}"),
                    reason: "an event key is not 9 bytes".into(),
                }
            })?
        }
        None => 0,
    };
    Ok(counted.max(newest))
}

/// A big-endian u64 under `key` (absent: 0); `name` says what it is when it is damaged.
fn read_u64(db: &sled::Db, key: &[u8], name: &str) -> Result<u64, StoreError> {
    match db.get(key)? {
        Some(bytes) => Ok(u64::from_be_bytes(
            bytes
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt { key: name.into(), reason: "not 8 bytes".into() })?,
        )),
        None => Ok(0),
    }
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

/// The id of a message to store.
fn id_of(stored: &StoredMessage) -> Result<Uuid, StoreError> {
    let message = stored.message.as_ref().ok_or(StoreError::Malformed("no message"))?;
    let envelope = message.envelope.as_ref().ok_or(StoreError::Malformed("no envelope"))?;
    Uuid::parse_str(&envelope.id).map_err(|_| StoreError::Malformed("id is not a UUID"))
}

fn message_key(id: Uuid) -> [u8; 17] {
    let mut key = [b'm'; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    StoredMessage::decode(bytes)
        .map_err(|e| StoreError::Corrupt { key: format!("{key:02x?}"), reason: e.to_string() })
}

/// The stored message as the desk API shows it, with `overdue` worked out for this moment.
pub fn view(stored: &StoredMessage) -> Message {
    view_at(stored, SystemTime::now())
}

/// The stored message as shown at `now` (a node's clock): `overdue` once its acknowledgement
/// deadline is at or before `now` and it still waits for one.
pub fn view_at(stored: &StoredMessage, now: SystemTime) -> Message {
    let mut message = stored.message.clone().unwrap_or_default();
    message.overdue = awaits_acknowledgement(&message)
        && message.ack_deadline.as_ref().is_some_and(|d| timestamp::to_system(d) <= now);
    message
}

// Backups: `backup` owns the file format; the store takes consistent copies and rebuilds from them.

/// A consistent copy of every record of the store, taken between two writes (never inside one).
pub struct Snapshot {
    records: Vec<(sled::IVec, sled::IVec)>,
    sequence_floor: u64,
    schema_version: u32,
    /// Where the attachments' content is (a backup carries what messages list: such files are
    /// never removed, so they are there when the backup is streamed).
    attachments_dir: std::path::PathBuf,
}

impl Snapshot {
    /// The `index`-th record (key, value) in key order; `None` past the last.
    pub fn record(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.records.get(index).map(|(key, value)| (key.as_ref(), value.as_ref()))
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none (never, for a store that was opened: it holds its schema version).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Greater than every sequence number handed out before the copy: a store rebuilt from it
    /// must hand out only greater ones, or new messages would overwrite listing keys.
    pub fn sequence_floor(&self) -> u64 {
        self.sequence_floor
    }

    /// The layout version of the records.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// The attachments the copy's messages list that this node holds: digest, file and size,
    /// each once, in digest order.
    pub fn attachments(&self) -> Vec<(attachments::Digest, std::path::PathBuf, u64)> {
        let mut listed = Vec::new();
        for (key, _) in &self.records {
            if let [b'x', rest @ ..] = key.as_ref()
                && let Some(digest) = rest.get(..32).and_then(attachments::digest_of)
                && listed.last().is_none_or(|(last, _, _)| *last != digest)
            {
                let path = self.attachments_dir.join(hex::encode(digest));
                if let Ok(metadata) = std::fs::metadata(&path) {
                    listed.push((digest, path, metadata.len()));
                }
            }
        }
        listed
    }
}

impl Store {
    /// A consistent copy of the whole store, for a backup. Taken under the writer lock, so it
    /// holds every write applied before it completely and none after it; the copy shares sled's
    /// buffers (reference-counted), so the lock is held for one walk over the keys. Not yet
    /// durable: call [`Store::persist`] after it and before handing the copy out, so that it
    /// holds only what is on the device.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        if let Some(why) = self.broken() {
            return Err(StoreError::Recovering(why));
        }
        let _guard = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = self.db()?;
        let records = db.iter().collect::<Result<Vec<_>, _>>()?;
        // sled's id generator is not a record: carry its position so a rebuilt store continues it.
        let sequence_floor = db.generate_id()?;
        let schema_version = records
            .iter()
            .find(|(key, _)| key.as_ref() == SCHEMA_KEY)
            .and_then(|(_, value)| <[u8; 4]>::try_from(value.as_ref()).ok())
            .map_or(SCHEMA_VERSION, u32::from_be_bytes);
        Ok(Snapshot { records, sequence_floor, schema_version, attachments_dir: self.attachments_dir() })
    }
}

/// What [`Importer::finish`] rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Records written.
    pub records: u64,
    /// Messages among them.
    pub messages: u64,
    /// Lifecycle events among them.
    pub events: u64,
}

/// Rebuilds a store in an empty directory from a snapshot's records (read back from a backup).
/// Offline: the directory must not belong to a running node.
pub struct Importer {
    dir: std::path::PathBuf,
    db: sled::Db,
    batch: sled::Batch,
    pending: usize,
    records: u64,
    sequence_floor: u64,
}

/// sled's default id-generator persist interval, which `open_db` runs with.
const IDGEN_INTERVAL: u64 = 1_000_000;

/// Records per sled batch while importing: bounds memory, keeps batches large.
const IMPORT_BATCH: usize = 10_000;

fn import_config(dir: &Path, idgen_interval: u64) -> sled::Config {
    // Segment size and compression must match `open_db` (sled refuses a change); both are
    // sled's defaults there too.
    sled::Config::new()
        .path(dir)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(None)
        .idgen_persist_interval(idgen_interval)
}

impl Importer {
    /// Starts a new store in `dir` (which the caller made sure is empty); `sequence_floor` is
    /// [`Snapshot::sequence_floor`] of the copy.
    pub fn create(dir: &Path, sequence_floor: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = open_sled(&import_config(dir, IDGEN_INTERVAL))?;
        Ok(Self {
            dir: dir.to_owned(),
            db,
            batch: sled::Batch::default(),
            pending: 0,
            records: 0,
            sequence_floor,
        })
    }

    /// Adds one record.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.batch.insert(key, value);
        self.pending += 1;
        self.records += 1;
        if self.pending >= IMPORT_BATCH {
            self.db.apply_batch(std::mem::take(&mut self.batch))?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Writes the rest, flushes, moves the sequence generator past the copy's floor, and opens
    /// the result as a node would (so a layout this version cannot read is refused here).
    pub fn finish(self) -> Result<Imported, StoreError> {
        let Self { dir, db, batch, records, sequence_floor, .. } = self;
        db.apply_batch(batch)?;
        db.flush()?;
        let messages = db.scan_prefix([b'm']).count() as u64;
        let events = db.scan_prefix([b'e']).count() as u64;
        let stored = db.len() as u64;
        drop(db);
        if stored != records {
            return Err(StoreError::Corrupt {
                key: "backup".into(),
                reason: format!("{records} records written but {stored} stored (duplicate keys?)"),
            });
        }
        // sled has no way to set its id generator; but on reopening it continues at the last
        // persisted counter plus twice the persist interval. An interval of at least half the
        // floor puts it past the floor, and the first id then persists that position for later
        // opens. sled expects the persisted counter to be a multiple of the interval it runs
        // with (it asserts so), so the interval is a multiple of the one `open_db` uses.
        let interval = (sequence_floor / 2 / IDGEN_INTERVAL + 1) * IDGEN_INTERVAL;
        let db = open_sled(&import_config(&dir, interval))?;
        let next = db.generate_id()?;
        db.flush()?;
        drop(db);
        if next < sequence_floor {
            return Err(StoreError::Corrupt {
                key: "sequence generator".into(),
                reason: format!("at {next} after the import, below the backup's {sequence_floor}"),
            });
        }
        drop(Store::open(&dir)?);
        // sled's flush stops at `sync_file_range`; a restored store must survive a power cut.
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                File::open(entry.path())?.sync_all()?;
            }
        }
        File::open(&dir)?.sync_all()?;
        Ok(Imported { records, messages, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Envelope;

    #[test]
    fn every_key_a_write_sets_or_removes_is_counted_and_comes_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|changes| {
                changes.batch.insert(b"xkey", b"value");
                changes.batch.remove(b"xgone");
                Ok::<_, StoreError>(())
            })
            .unwrap();
        assert_eq!(store.keys_written(), 3, "two keys and the applied LSN");
        // Never checkpointed: the write is only in the log, and the reopen replays it.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(store.persist()).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.db().unwrap().get(b"xkey").unwrap().unwrap(), b"value".as_slice());
    }

    /// Every key of the store, with its value.
    fn all_keys(store: &Store) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        store.db().unwrap().iter().map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap()).collect()
    }

    /// A key as the table in the module doc names it: its prefix letter, and the rest of a `c` key.
    fn key_name(key: &[u8]) -> String {
        match key {
            [b'c', rest @ ..] => format!("c{}", String::from_utf8_lossy(rest)),
            [prefix, ..] => char::from(*prefix).to_string(),
            [] => String::new(),
        }
    }

    /// Issue 13: the keys the write of one `Submit` (destination down, so nothing is delivered)
    /// sets, as `desk::submission` makes it: the call's audit record, then the new outbound
    /// request, QUEUED, with an acknowledgement deadline. Each sled key costs ~70–100 µs of CPU
    /// to persist, so this list is what a stored message costs.
    #[test]
    fn the_keys_one_submit_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        outbound(&store, "FR", Precedence::Routine);
        let certificate = vec![0x30; 600];
        let submit = |store: &Store| {
            let before = all_keys(store);
            let written = store.keys_written();
            let id = Uuid::now_v7();
            store
                .write(|changes| {
                    changes.act_as("duty (officer)");
                    changes.audit("Submit", &id.to_string(), "to FR, ROUTINE");
                    let now = timestamp::now();
                    let mut message = Message {
                        envelope: Some(Envelope {
                            id: id.to_string(),
                            destination: "FR".into(),
                            kind: EnvelopeKind::Request as i32,
                            precedence: Precedence::Routine as i32,
                            created_at: Some(now),
                            ..Default::default()
                        }),
                        direction: Direction::Outbound as i32,
                        ack_deadline: Some(timestamp::from_system(
                            SystemTime::now() + std::time::Duration::from_secs(3600),
                        )),
                        ..Default::default()
                    };
                    crate::domain::lifecycle::enter(
                        &mut message,
                        MessageState::Queued,
                        now,
                        "submitted".into(),
                    );
                    let seq = changes.next_seq()?;
                    changes.put_new(StoredMessage {
                        message: Some(message),
                        seq,
                        submitted_by: "duty".into(),
                        origin_certificate: certificate.clone(),
                        ..Default::default()
                    })
                })
                .unwrap();
            let after = all_keys(store);
            let mut set: Vec<String> =
                after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, _)| key_name(k)).collect();
            set.sort();
            assert_eq!(store.keys_written() - written, set.len() as u64);
            (id, set)
        };
        // h ×2: the call's audit record and the QUEUED change's; m the message; o its outbox
        // entry; s its outbox listing entry; a its acknowledgement deadline; e the QUEUED event;
        // clsn the applied log sequence number (recovery needs it in every batch). The event
        // counter and the audit chain head are derived from `e` and `h` on open instead; the
        // origin certificate (f) is written by the first message it signed only.
        let (_, first) = submit(&store);
        assert_eq!(first, ["a", "clsn", "e", "f", "h", "h", "m", "o", "s"]);
        let (id, set) = submit(&store);
        assert_eq!(set, ["a", "clsn", "e", "h", "h", "m", "o", "s"]);
        // Stored without reading a previous record, it is indexed as `put` would have it.
        assert_eq!(ids(&store.outbox_for("FR".parse().unwrap(), 10).unwrap())[2], id);
        assert_eq!(store.queued("FR".parse().unwrap(), Precedence::Routine).unwrap(), 3);
        // The record holds the certificate's digest, a read gives the certificate back.
        let record =
            StoredMessage::decode(store.db().unwrap().get(message_key(id)).unwrap().unwrap().as_ref())
                .unwrap();
        assert!(record.origin_certificate.is_empty());
        assert_eq!(record.origin_certificate_sha256.len(), 32);
        assert_eq!(store.get(id).unwrap().unwrap().origin_certificate, certificate);
    }

    #[test]
    fn a_certificate_is_stored_once_and_old_records_with_the_whole_certificate_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let certificate = vec![0x31; 700];
        let (kept, old) = {
            let store = Store::open(dir.path()).unwrap();
            let kept = outbound_with(&store, |_, _| {});
            let mut stored = store.get(kept).unwrap().unwrap();
            stored.origin_certificate = certificate.clone();
            store.write(|changes| changes.put(stored)).unwrap();
            // A record as written before certificates were kept apart: the whole certificate.
            let old = outbound_with(&store, |_, _| {});
            let mut stored = store.get(old).unwrap().unwrap();
            stored.origin_certificate = vec![0x32; 650];
            store.db().unwrap().insert(message_key(old), stored.encode_to_vec()).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(store.persist()).unwrap();
            (kept, old)
        };
        // Reopened, nothing cached: the certificate is read from its own key (after a replay).
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get(kept).unwrap().unwrap().origin_certificate, certificate);
        assert_eq!(store.get(old).unwrap().unwrap().origin_certificate, vec![0x32; 650]);
        let certificates = store.db().unwrap().scan_prefix([b'f']).count();
        assert_eq!(certificates, 1);
        // Its key gone (damage), the message names the certificate it misses.
        let digest =
            StoredMessage::decode(store.db().unwrap().get(message_key(kept)).unwrap().unwrap().as_ref())
                .unwrap()
                .origin_certificate_sha256;
        drop(store);
        {
            let db = open_sled(&sled::Config::new().path(dir.path())).unwrap();
            db.remove(prefixed(b'f', &digest)).unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let error = store.get(kept).unwrap_err().to_string();
        assert!(error.contains(&format!("certificate {}", hex::encode(&digest))), "{error}");
    }

    #[test]
    fn put_new_sees_what_its_own_operation_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = outbound_with(&store, |_, _| {});
        let mut stored = store.get(id).unwrap().unwrap();
        let fresh = Uuid::now_v7();
        store
            .write(|changes| {
                let envelope = stored.message.as_mut().unwrap().envelope.as_mut().unwrap();
                envelope.id = fresh.to_string();
                stored.seq = changes.next_seq()?;
                changes.put_new(stored.clone())?;
                // The same new message moved on in the same operation: its outbox key goes.
                stored.message.as_mut().unwrap().state = MessageState::Delivered as i32;
                changes.put_new(stored)
            })
            .unwrap();
        assert_eq!(ids(&store.outbox_for("FR".parse().unwrap(), 10).unwrap()), [id]);
        assert_eq!(store.queued("FR".parse().unwrap(), Precedence::Routine).unwrap(), 1);
    }

    fn outbound(store: &Store, destination: &str, precedence: Precedence) -> Uuid {
        outbound_to(store, destination, precedence, |_, _| {})
    }

    /// A routine outbound message to FR, with whatever `also` writes in its batch.
    fn outbound_with(store: &Store, also: impl FnOnce(&mut Changes<'_>, Uuid)) -> Uuid {
        outbound_to(store, "FR", Precedence::Routine, also)
    }

    fn outbound_to(
        store: &Store,
        destination: &str,
        precedence: Precedence,
        also: impl FnOnce(&mut Changes<'_>, Uuid),
    ) -> Uuid {
        let id = Uuid::now_v7();
        store
            .write(|changes| {
                also(changes, id);
                let seq = changes.next_seq()?;
                let message = Message {
                    envelope: Some(Envelope {
                        id: id.to_string(),
                        destination: destination.into(),
                        kind: EnvelopeKind::Request as i32,
                        precedence: precedence as i32,
                        ..Default::default()
                    }),
                    direction: Direction::Outbound as i32,
                    state: MessageState::Queued as i32,
                    ..Default::default()
                };
                changes.put(StoredMessage {
                    message: Some(message),
                    seq,
                    overdue_announced: false,
                    hold_until: None,
                    submitted_by: String::new(),
                    receipt: None,
                    origin_certificate: Vec::new(),
                    origin_certificate_sha256: Vec::new(),
                    reminded_until: None,
                    reminded_lead_seconds: 0,
                })
            })
            .unwrap();
        id
    }

    fn ids(messages: &[StoredMessage]) -> Vec<Uuid> {
        messages.iter().map(|m| Uuid::parse_str(&view(m).envelope.unwrap().id).unwrap()).collect()
    }

    #[tokio::test]
    async fn a_client_request_id_is_in_the_log_record_of_its_message_and_per_client() {
        let dir = tempfile::tempdir().unwrap();
        let (request_id, digest) = (Uuid::now_v7(), [7; 32]);
        let message_id = {
            let store = Store::open(dir.path()).unwrap();
            let message_id = outbound(&store, "FR", Precedence::Routine);
            // The store was empty: what the first message cost is what one message costs.
            let per_message = store.keys_written();
            let written = ClientRequest {
                message_id: outbound_with(&store, |changes, id| {
                    changes.record_client_request(
                        "police",
                        request_id,
                        ClientRequest { message_id: id, digest },
                    );
                }),
                digest,
            };
            // One small key more than a message without a request id.
            assert_eq!(store.keys_written(), 2 * per_message + 1, "keys of one message, plus one");
            store.persist().await.unwrap();
            assert_ne!(written.message_id, message_id);
            written.message_id
        };
        // Never checkpointed: both come back from the same log record.
        let store = Store::open(dir.path()).unwrap();
        let found = store.client_request("police", request_id).unwrap().unwrap();
        assert_eq!(found, ClientRequest { message_id, digest });
        assert!(store.get(message_id).unwrap().is_some());
        assert_eq!(store.client_request("customs", request_id).unwrap(), None, "per client");
        assert_eq!(store.client_request("polic", request_id).unwrap(), None, "whole names only");
    }

    #[tokio::test]
    async fn outbox_orders_by_precedence_then_submission_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (routine1, flash, routine2, other) = {
            let store = Store::open(dir.path()).unwrap();
            let routine1 = outbound(&store, "FR", Precedence::Routine);
            let flash = outbound(&store, "FR", Precedence::Flash);
            let routine2 = outbound(&store, "FR", Precedence::Routine);
            let other = outbound(&store, "DE", Precedence::Flash);
            store.persist().await.unwrap();
            (routine1, flash, routine2, other)
        };
        let store = Store::open(dir.path()).unwrap();
        let fr: NodeCode = "FR".parse().unwrap();
        assert_eq!(ids(&store.outbox_for(fr, 10).unwrap()), vec![flash, routine1, routine2]);
        assert_eq!(
            ids(&store.list(Listing::Outbox, 10, |_| true).unwrap()),
            vec![other, routine2, flash, routine1]
        );
        assert_eq!(store.outbox_len(fr).unwrap(), 3);
    }

    #[test]
    fn a_directory_held_by_a_live_store_is_refused_and_free_again_once_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let live = Store::open(dir.path()).unwrap();
        let error = Store::open(dir.path()).err().expect("a second store on a live directory");
        assert!(error.to_string().contains("could not acquire lock"), "{error}");
        drop(live);
        // Right after the drop sled's threads may still hold the lock; the open waits for them.
        Store::open(dir.path()).expect("the directory is free once the store is dropped");
    }

    #[test]
    fn a_store_of_this_version_reopens_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open(dir.path()).expect("a store made by this version opens");
        drop(store);
        {
            let db = open_sled(&sled::Config::new().path(dir.path())).unwrap();
            db.insert(SCHEMA_KEY, (SCHEMA_VERSION + 1).to_be_bytes().as_slice()).unwrap();
            db.flush().unwrap();
        }
        let error = Store::open(dir.path()).err().expect("a newer store is refused");
        assert!(
            matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{error}"
        );
        assert!(error.to_string().contains("run the newer version"), "{error}");
    }

    #[test]
    fn leaving_the_queue_removes_the_outbox_key_and_failed_writes_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = outbound(&store, "FR", Precedence::Flash);
        let fr: NodeCode = "FR".parse().unwrap();
        let result: Result<(), StoreError> = store.write(|changes| {
            let mut stored = changes.get(id)?.unwrap();
            stored.message.as_mut().unwrap().set_state(MessageState::Delivered);
            changes.put(stored)?;
            Err(StoreError::Malformed("abandoned"))
        });
        assert!(result.is_err());
        assert_eq!(store.outbox_len(fr).unwrap(), 1, "an abandoned operation must not apply");
        store
            .write(|changes| {
                let mut stored = changes.get(id)?.unwrap();
                stored.message.as_mut().unwrap().set_state(MessageState::Delivered);
                changes.put(stored)
            })
            .unwrap();
        assert_eq!(store.outbox_len(fr).unwrap(), 0);
        assert_eq!(view(&store.get(id).unwrap().unwrap()).state(), MessageState::Delivered);
    }

    /// The queue lengths kept in memory, as the queue view reads them.
    fn summary_counts(store: &Store, destination: NodeCode) -> Vec<usize> {
        store.outbox_summary(destination).unwrap().into_iter().map(|(_, count, _)| count).collect()
    }

    #[test]
    fn queue_lengths_kept_in_memory_equal_the_outbox_keys_through_writes_failures_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let fr: NodeCode = "FR".parse().unwrap();
        let de: NodeCode = "DE".parse().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let flash = outbound(&store, "FR", Precedence::Flash);
        outbound(&store, "FR", Precedence::Flash);
        outbound(&store, "FR", Precedence::Routine);
        outbound(&store, "DE", Precedence::Priority);
        assert_eq!(summary_counts(&store, fr), [2, 0, 0, 1]);
        assert_eq!(summary_counts(&store, de), [0, 0, 1, 0]);
        // Queued -> waiting for a retry stays in the queue; put twice in one write counts once.
        store
            .write(|changes| {
                let mut stored = changes.get(flash)?.unwrap();
                stored.message.as_mut().unwrap().set_state(MessageState::WaitingRetry);
                changes.put(stored.clone())?;
                changes.put(stored)
            })
            .unwrap();
        assert_eq!(summary_counts(&store, fr), [2, 0, 0, 1]);
        let abandoned: Result<(), StoreError> = store.write(|changes| {
            let mut stored = changes.get(flash)?.unwrap();
            stored.message.as_mut().unwrap().set_state(MessageState::Delivered);
            changes.put(stored)?;
            Err(StoreError::Malformed("abandoned"))
        });
        assert!(abandoned.is_err());
        assert_eq!(summary_counts(&store, fr), [2, 0, 0, 1], "an abandoned write changes no count");
        store
            .write(|changes| {
                let mut stored = changes.get(flash)?.unwrap();
                stored.message.as_mut().unwrap().set_state(MessageState::Delivered);
                changes.put(stored)
            })
            .unwrap();
        assert_eq!(summary_counts(&store, fr), [1, 0, 0, 1]);
        assert_eq!(store.outbox_len(fr).unwrap(), 2, "the counts and the keys agree");
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(summary_counts(&reopened, fr), [1, 0, 0, 1], "counted again from sled on open");
        assert_eq!(summary_counts(&reopened, de), [0, 0, 1, 0]);
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;
    use crate::proto::Envelope;

    fn queued(id: Uuid) -> StoredMessage {
        let mut message = Message {
            envelope: Some(Envelope {
                id: id.to_string(),
                destination: "FR".into(),
                kind: EnvelopeKind::Request as i32,
                ..Default::default()
            }),
            direction: Direction::Outbound as i32,
            ..Default::default()
        };
        crate::domain::lifecycle::enter(
            &mut message,
            MessageState::Queued,
            timestamp::now(),
            "submitted".into(),
        );
        StoredMessage { message: Some(message), seq: 1, ..Default::default() }
    }

    #[test]
    fn state_changes_and_calls_extend_one_chain_that_survives_reopen_and_abandoned_writes() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::now_v7();
        let head = {
            let store = Store::open(dir.path()).unwrap();
            store.write(|changes| changes.put(queued(id))).unwrap();
            let abandoned: Result<(), StoreError> = store.write(|changes| {
                changes.audit("Get", "", "");
                Err(StoreError::Malformed("abandoned"))
            });
            assert!(abandoned.is_err());
            assert_eq!(store.audit_head().sequence, 1, "an abandoned write appends nothing");
            store.audit_head()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.audit_head(), head, "the head is stored with the records");
        store
            .write(|changes| {
                changes.act_as("alice (officer)");
                changes.audit("Get", &id.to_string(), "with 0 replies");
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let records: Vec<ListAuditResponse> =
            store.audit_records(0, 10, 10).unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].who.as_str(), records[0].action.as_str()), ("node", "QUEUED"));
        assert_eq!(records[0].message_id, id.to_string());
        assert_eq!((records[1].who.as_str(), records[1].action.as_str()), ("alice (officer)", "Get"));
        assert_eq!(crate::store::audit::verify(&records, Some(&store.audit_head())), Ok(store.audit_head()));
        assert_eq!(store.audit_records(1, 10, 10).unwrap().len(), 1, "after 1, up to the head");
    }

    #[test]
    fn a_note_with_text_keeps_the_text_in_the_timeline_and_its_digest_in_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = Uuid::now_v7();
        let text = "a: the informant's name";
        let note = store
            .write(|changes| {
                let mut stored = queued(id);
                let note = changes.note_with_text("cancelled by alice", text);
                assert_eq!(changes.note_with_text("acknowledged by FR", ""), "acknowledged by FR");
                let message = stored.message.as_mut().unwrap();
                crate::domain::lifecycle::apply(
                    message,
                    crate::domain::lifecycle::Happening::CancelledHere,
                    timestamp::now(),
                    note.clone(),
                )
                .unwrap();
                changes.put(stored)?;
                Ok::<_, StoreError>(note)
            })
            .unwrap();
        assert_eq!(note, format!("cancelled by alice: {text}"), "the timeline keeps the text");
        let timeline = view(&store.get(id).unwrap().unwrap()).timeline;
        assert_eq!(timeline.last().unwrap().note, note);
        let records: Vec<ListAuditResponse> =
            store.audit_records(0, 10, 10).unwrap().into_iter().map(|(_, r)| r).collect();
        let cancelled = records.iter().find(|r| r.action == "CANCELLED").unwrap();
        let digest = crate::store::audit::text_digest(text);
        assert_eq!(cancelled.details, format!("cancelled by alice: {digest}"));
        let hex = digest.strip_prefix("23 characters, SHA-256 ").unwrap();
        assert!(hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{digest}");
        assert!(records.iter().all(|r| !r.details.contains("informant")), "{records:#?}");
    }

    #[test]
    fn old_events_are_pruned_oldest_first_never_the_last_with_an_audit_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for _ in 0..3 {
                store.write(|changes| changes.put(queued(Uuid::now_v7()))).unwrap();
            }
            assert_eq!(store.events_between(0, 3, 10).unwrap().len(), 3);
            // Nothing is older than the epoch.
            let none = store.prune_events(SystemTime::UNIX_EPOCH, 100, "test").unwrap();
            assert!(none.is_empty(), "{none:?}");
            let later = SystemTime::now() + std::time::Duration::from_secs(3600);
            assert_eq!(store.prune_events(later, 1, "test").unwrap(), 1..=1, "a step at a time");
            assert_eq!(store.prune_events(later, 100, "older than 1h").unwrap(), 2..=2, "never the last");
            assert!(store.prune_events(later, 100, "test").unwrap().is_empty());
            let kept: Vec<u64> = store.events_between(0, 3, 10).unwrap().iter().map(|e| e.sequence).collect();
            assert_eq!(kept, vec![3]);
            let head = store.audit_head().sequence;
            let (_, last) = store.audit_records(head - 1, head, 1).unwrap().remove(0);
            assert_eq!(
                (last.action.as_str(), last.details.as_str()),
                ("PRUNE_EVENTS", "events 2 to 2: older than 1h")
            );
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.events_pruned_through().unwrap(), 2, "the mark survives a restart");
    }

    #[test]
    fn a_deleted_or_rolled_back_head_never_makes_the_node_overwrite_records() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = Store::open(dir.path()).unwrap();
            for action in ["Get", "ListInbox"] {
                store
                    .write(|changes| {
                        changes.audit(action, "", "");
                        Ok::<_, StoreError>(())
                    })
                    .unwrap();
            }
            store.audit_records(0, 1, 1).unwrap().remove(0).1
        };
        {
            let db = open_sled(&sled::Config::new().path(dir.path())).unwrap();
            db.remove(AUDIT_HEAD_KEY).unwrap();
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.audit_head().sequence, 2);
        store
            .write(|changes| {
                changes.audit("Watch", "", "");
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let records: Vec<ListAuditResponse> =
            store.audit_records(0, 10, 10).unwrap().into_iter().map(|(_, r)| r).collect();
        assert_eq!(records[0], first, "record 1 is untouched");
        assert_eq!(
            records.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
            ["Get", "ListInbox", "Watch"]
        );
        assert!(crate::store::audit::verify(&records, Some(&store.audit_head())).is_ok());
    }
}
