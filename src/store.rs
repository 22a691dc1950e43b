//! The node's durable state: every message, the per-destination outbox, the inbox and outbox
//! listings and the reply links, in one sled database. The only module that touches sled.
//!
//! Layout (one tree, prefixed keys, values are protobuf):
//!
//! | key | value |
//! | --- | --- |
//! | `m` id(16) | `StoredMessage` |
//! | `o` destination(2) precedence-rank(1) seq(8) | id — outbound messages still to be sent |
//! | `i` seq(8) | id — inbound requests (the inbox listing) |
//! | `s` seq(8) | id — outbound envelopes (the outbox listing) |
//! | `r` parent-id(16) seq(8) | id — envelopes that answer or continue `parent` |
//!
//! Invariants: an outbound message has an `o` key exactly while it is QUEUED or WAITING_RETRY;
//! every change of a message and its keys is applied in one atomic sled batch; nobody is told
//! that something is stored before [`Store::persist`] has returned after the change.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use uuid::Uuid;

use crate::identity::NodeCode;
use crate::proto::{Direction, EnvelopeKind, Message, MessageState, Precedence};
use crate::store_proto::StoredMessage;

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
}

/// The node's sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// sled's own flush ends in `sync_file_range`, which survives a crash but not a power cut;
    /// `sync_data` on this handle makes "stored" mean "on the device".
    db_file: Arc<File>,
    /// Serialises read-modify-write operations so each sees the effects of the one before.
    writer: Arc<Mutex<()>>,
}

/// Which listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Requests received from other nodes.
    Inbox,
    /// Envelopes this node sent or will send.
    Outbox,
}

impl Listing {
    fn prefix(self) -> u8 {
        match self {
            Listing::Inbox => b'i',
            Listing::Outbox => b's',
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir).open()?;
        let db_file = Arc::new(File::open(dir.join("db"))?);
        Ok(Self { db, db_file, writer: Arc::new(Mutex::new(())) })
    }

    /// Makes every change applied so far durable on the device.
    pub async fn persist(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        let file = Arc::clone(&self.db_file);
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        Ok(())
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
        let mut changes = Changes { store: self, batch: sled::Batch::default(), pending: HashMap::new() };
        let result = operation(&mut changes)?;
        self.db.apply_batch(changes.batch).map_err(StoreError::from)?;
        Ok(result)
    }

    /// One message by id.
    pub fn get(&self, id: Uuid) -> Result<Option<StoredMessage>, StoreError> {
        let key = message_key(id);
        self.db.get(key)?.map(|bytes| decode(&key, &bytes)).transpose()
    }

    /// The envelopes that answer or continue `parent`, in the order they were stored.
    pub fn replies(&self, parent: Uuid) -> Result<Vec<StoredMessage>, StoreError> {
        let mut prefix = vec![b'r'];
        prefix.extend_from_slice(parent.as_bytes());
        self.ids_to_messages(self.db.scan_prefix(prefix).map(|kv| kv.map(|(_, id)| id)))
    }

    /// The newest `limit` entries of a listing, newest first.
    pub fn list(&self, listing: Listing, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let ids = self.db.scan_prefix([listing.prefix()]).rev().take(limit).map(|kv| kv.map(|(_, id)| id));
        self.ids_to_messages(ids)
    }

    /// The first `limit` messages waiting for `destination`, in sending order (precedence, then
    /// submission).
    pub fn outbox_for(&self, destination: NodeCode, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let mut prefix = vec![b'o'];
        prefix.extend_from_slice(destination.as_str().as_bytes());
        self.ids_to_messages(self.db.scan_prefix(prefix).take(limit).map(|kv| kv.map(|(_, id)| id)))
    }

    /// How many messages wait for `destination`.
    pub fn outbox_len(&self, destination: NodeCode) -> usize {
        let mut prefix = vec![b'o'];
        prefix.extend_from_slice(destination.as_str().as_bytes());
        self.db.scan_prefix(prefix).count()
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
    batch: sled::Batch,
    pending: HashMap<Uuid, StoredMessage>,
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
        Ok(self.store.db.generate_id()?)
    }

    /// Stores a message and keeps its index keys true to its state.
    pub fn put(&mut self, stored: StoredMessage) -> Result<(), StoreError> {
        let message = stored.message.as_ref().ok_or(StoreError::Malformed("no message"))?;
        let envelope = message.envelope.as_ref().ok_or(StoreError::Malformed("no envelope"))?;
        let id = Uuid::parse_str(&envelope.id).map_err(|_| StoreError::Malformed("id is not a UUID"))?;
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
                if matches!(message.state(), MessageState::Queued | MessageState::WaitingRetry) {
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
        self.batch.insert(message_key(id).as_slice(), stored.encode_to_vec());
        self.pending.insert(id, stored);
        Ok(())
    }
}

/// FLASH sorts first.
fn precedence_rank(precedence: Precedence) -> u8 {
    match precedence {
        Precedence::Flash => 1,
        Precedence::Immediate => 2,
        Precedence::Priority => 3,
        Precedence::Routine | Precedence::Unspecified => 4,
    }
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
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

/// Convenience: the stored message's desk view.
pub fn view(stored: &StoredMessage) -> Message {
    stored.message.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Envelope;

    fn outbound(store: &Store, destination: &str, precedence: Precedence) -> Uuid {
        let id = Uuid::now_v7();
        store
            .write(|changes| {
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
                changes.put(StoredMessage { message: Some(message), seq })
            })
            .unwrap();
        id
    }

    fn ids(messages: &[StoredMessage]) -> Vec<Uuid> {
        messages.iter().map(|m| Uuid::parse_str(&view(m).envelope.unwrap().id).unwrap()).collect()
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
        assert_eq!(ids(&store.list(Listing::Outbox, 10).unwrap()), vec![other, routine2, flash, routine1]);
        assert_eq!(store.outbox_len(fr), 3);
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
        assert_eq!(store.outbox_len(fr), 1, "an abandoned operation must not apply");
        store
            .write(|changes| {
                let mut stored = changes.get(id)?.unwrap();
                stored.message.as_mut().unwrap().set_state(MessageState::Delivered);
                changes.put(stored)
            })
            .unwrap();
        assert_eq!(store.outbox_len(fr), 0);
        assert_eq!(view(&store.get(id).unwrap().unwrap()).state(), MessageState::Delivered);
    }
}
