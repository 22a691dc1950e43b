//! The desk's streams: lifecycle events (`watch`), the whole store as a backup file (`backup`),
//! the audit log (`list_audit`) and where a recovery from peers stands (`recover_from_peers`). Each is on the audit record before it starts; every task that
//! feeds one runs on the node's task tracker and ends when the node stops or the reader goes.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{Desk, DeskError, parse_id_field};
use crate::domain::access::{self, Action, Caller};
use crate::domain::validation::FieldError;
use crate::proto::{
    BackupRequest, BackupResponse, ListAuditRequest, ListAuditResponse, RecoverFromPeersRequest,
    RecoverFromPeersResponse, WatchRequest, WatchResponse,
};
use crate::store::StoreError;
use crate::store::audit::ChainHead;

/// Lifecycle events, in sequence order.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, DeskError>> + Send>>;
/// The chunks of a backup file.
pub type BackupStream = Pin<Box<dyn Stream<Item = Result<BackupResponse, DeskError>> + Send>>;
/// Audit records, in chain order.
pub type AuditStream = Pin<Box<dyn Stream<Item = Result<ListAuditResponse, DeskError>> + Send>>;

/// Where the recovery from each peer stands, whenever that changes.
pub type RecoveryStream = Pin<Box<dyn Stream<Item = Result<RecoverFromPeersResponse, DeskError>> + Send>>;

/// How often a recovery's progress is looked at.
const RECOVERY_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// A `watch` under way.
pub struct Watching {
    /// The sequence number the events start after: the one asked for, or the latest durable
    /// event when the caller asked for "from now" (so it can resume without a gap).
    pub after: u64,
    /// The events the caller may see.
    pub events: EventStream,
}

/// A `list_audit` under way.
pub struct AuditListing {
    /// The chain head the records end at (it includes the record of this very read).
    pub head: ChainHead,
    /// The records.
    pub records: AuditStream,
    /// The newest head of this log each peer says it witnessed (from its last `Hello` answer).
    pub witnessed: Vec<(crate::domain::identity::NodeCode, crate::proto::SignedAuditHead)>,
    /// With a `limit`: the page token of the next page; empty after the last.
    pub next_page_token: String,
}

/// Where a page of the audit listing starts: after `after`, up to `upto` (the head when the
/// first page was read, so that paging ends although every page's own read adds a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AuditCursor {
    after: u64,
    upto: u64,
}

/// The first bytes of an audit page token: its format and what it pages.
const AUDIT_TOKEN_TAG: [u8; 2] = [1, b'h'];

impl AuditCursor {
    fn token(self) -> String {
        use base64::Engine as _;
        let mut bytes = AUDIT_TOKEN_TAG.to_vec();
        bytes.extend_from_slice(&self.after.to_be_bytes());
        bytes.extend_from_slice(&self.upto.to_be_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor of `token`, or a refusal naming `page_token`.
    fn from_token(token: &str) -> Result<Self, FieldError> {
        use base64::Engine as _;
        let refused = || {
            FieldError::new(
                "page_token",
                "not a page token of the audit listing: pass a hanoi247-next-page-token header's value, unchanged",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
        let (tag, rest) = bytes.split_at_checked(2).ok_or_else(refused)?;
        let (after, upto) = rest.split_at_checked(8).ok_or_else(refused)?;
        let after = u64::from_be_bytes(after.try_into().map_err(|_| refused())?);
        let upto = u64::from_be_bytes(upto.try_into().map_err(|_| refused())?);
        if tag != AUDIT_TOKEN_TAG || after > upto {
            return Err(refused());
        }
        Ok(Self { after, upto })
    }
}

/// Audit records read per store access while streaming.
const AUDIT_PAGE: usize = 512;

impl Desk {
    /// The lifecycle events after `request.after_sequence` (default: from now), until the node
    /// stops or the reader goes; an agency sees only its own messages' events. Events that
    /// retention removed are refused (the error says how to catch up).
    pub async fn watch(&self, caller: &Caller, request: WatchRequest) -> Result<Watching, DeskError> {
        let after =
            request.after_sequence.unwrap_or_else(|| crate::store::events::latest(&self.context.store));
        let pruned = self.context.store.events_pruned_through()?;
        if after < pruned {
            return Err(StoreError::EventsPruned { first: after + 1, through: pruned }.into());
        }
        let slot = self.open_stream(caller)?;
        self.audit_read(caller, Action::Watch, "", &format!("events after {after}")).await?;
        let events = crate::store::events::follow(self.context.store.clone(), after, self.stop.clone());
        let store = self.context.store.clone();
        let caller = caller.clone();
        // An agency follows only its own messages' events.
        let visible = move |event: &WatchResponse| {
            caller.scope == access::Scope::All
                || event
                    .message_id
                    .parse()
                    .ok()
                    .and_then(|id| store.get(id).ok().flatten())
                    .is_some_and(|stored| caller.may_see(&stored.submitted_by))
        };
        let events: EventStream = Box::pin(
            events
                .filter(move |item| item.as_ref().map_or(true, &visible))
                // The stream holds its place among the client's streams until it is dropped.
                .map(move |item| {
                    let _open = &slot;
                    item.map_err(DeskError::from)
                }),
        );
        Ok(Watching { after, events })
    }

    /// A consistent copy of the whole store as a backup file, in chunks, taken after the read is
    /// on the record and holding only what is on the device.
    pub async fn backup(&self, caller: &Caller, _request: BackupRequest) -> Result<BackupStream, DeskError> {
        // A copy of every message is a read of every message: on the record before it is taken.
        self.audit_read(caller, Action::Backup, "", "the whole store").await?;
        let store = self.context.store.clone();
        let taken_at = std::time::SystemTime::now();
        // The copy holds the writer lock for one walk over the keys: off the async workers.
        let snapshot = self.tasks.spawn_blocking(move || store.snapshot()).await.unwrap_or_else(|e| {
            Err(StoreError::Io(std::io::Error::other(format!("the snapshot task failed: {e}"))))
        })?;
        // Everything in the copy was applied before this flush began, so after it the copy holds
        // only what is on the device.
        self.context.store.persist().await?;
        let client = caller.name.clone();
        tracing::info!(%client, records = snapshot.len(), "backup taken; streaming it");
        let signer = self.context.signer.current();
        let node = self.context.code();
        let sign: crate::store::backup::SignDigest = Box::new(move |digest| {
            crate::trust::witness::sign_backup(&signer, node, digest).unwrap_or_else(|error| {
                tracing::error!(%error, "could not sign the backup; restore will refuse it as unsigned");
                Vec::new()
            })
        });
        let chunks = crate::store::backup::Chunks::new(snapshot, node, taken_at, sign);
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let stop = self.stop.clone();
        self.tasks.spawn_blocking(move || {
            let mut sent = 0;
            for data in chunks {
                sent += data.len();
                // A node shutting down, or a client gone, ends the stream; the file is then
                // incomplete and the client's check says so.
                if stop.is_cancelled() || sender.blocking_send(Ok(BackupResponse { data })).is_err() {
                    tracing::warn!(%client, "backup stream ended before the file was complete");
                    return;
                }
            }
            tracing::info!(%client, bytes = sent, "backup sent");
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    /// The audit records up to and including the record of this read, only those about
    /// `request.message_id` if given (damaged records always, so they are seen).
    pub async fn list_audit(
        &self,
        caller: &Caller,
        request: ListAuditRequest,
    ) -> Result<AuditListing, DeskError> {
        let filter = match request.message_id.trim() {
            "" => None,
            id => Some(parse_id_field("message_id", id)?.to_string()),
        };
        let cursor = match request.page_token.trim() {
            "" => None,
            token => Some(AuditCursor::from_token(token)?),
        };
        let details = filter.as_ref().map(|id| format!("records of {id}")).unwrap_or_default();
        let head = self.audit_read(caller, Action::ListAudit, "", &details).await?;
        let witnessed = self.context.peers.witnessed_my_heads();
        if request.limit == 0 && cursor.is_none() {
            let records = self.stream_audit(head.sequence, filter);
            return Ok(AuditListing { head, records, witnessed, next_page_token: String::new() });
        }
        // A page: read whole (at most `limit` records) before answering, so that the next
        // page's token can be in the response headers.
        let cursor = cursor.unwrap_or(AuditCursor { after: 0, upto: head.sequence });
        let limit = super::list_limit(request.limit);
        let (page, next) = self
            .off_the_workers(move |context| audit_page(&context.store, cursor, filter.as_deref(), limit))
            .await?;
        let records: AuditStream = Box::pin(tokio_stream::iter(page.into_iter().map(Ok)));
        let next_page_token = next.map(AuditCursor::token).unwrap_or_default();
        Ok(AuditListing { head, records, witnessed, next_page_token })
    }

    /// Streams the audit records up to `upto` (durable when the call began), only those about
    /// `message_id` if given (damaged records always, so they are seen). Pages are read as the
    /// client takes them, so a long chain is never held in memory whole.
    fn stream_audit(&self, upto: u64, message_id: Option<String>) -> AuditStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(AUDIT_PAGE);
        let store = self.context.store.clone();
        let stop: CancellationToken = self.stop.clone();
        self.tasks.spawn(async move {
            let mut after = 0;
            while after < upto {
                // Each page is read off the async workers.
                let reader = store.clone();
                let page = tokio::task::spawn_blocking(move || reader.audit_records(after, upto, AUDIT_PAGE))
                    .await
                    .unwrap_or_else(|e| {
                        Err(StoreError::Io(std::io::Error::other(format!("an audit page task failed: {e}"))))
                    });
                let page = match page {
                    Ok(page) => page,
                    Err(error) => {
                        // The reader may be gone already; then nobody is left to tell.
                        let _ = sender.send(Err(DeskError::from(error))).await;
                        return;
                    }
                };
                // Paged by the keys' sequence numbers, not the records' own (which may be forged).
                let Some(&(last, _)) = page.last() else { return };
                after = last;
                for (_, record) in page {
                    if message_id
                        .as_ref()
                        .is_some_and(|id| *id != record.message_id && record.damaged.is_empty())
                    {
                        continue;
                    }
                    tokio::select! {
                        sent = sender.send(Ok(record)) => {
                            if sent.is_err() {
                                return;
                            }
                        }
                        () = stop.cancelled() => return,
                    }
                }
            }
        });
        Box::pin(ReceiverStream::new(receiver))
    }
}

/// One page of the audit records in `cursor`'s range: at most `limit`, only those about
/// `message_id` if given (damaged records always), and the cursor of the next page if a record
/// is left after it.
fn audit_page(
    store: &crate::store::Store,
    cursor: AuditCursor,
    message_id: Option<&str>,
    limit: usize,
) -> Result<(Vec<ListAuditResponse>, Option<AuditCursor>), StoreError> {
    let mut kept = Vec::new();
    let mut after = cursor.after;
    while after < cursor.upto {
        let records = store.audit_records(after, cursor.upto, AUDIT_PAGE)?;
        let Some(&(last, _)) = records.last() else { break };
        for (sequence, record) in records {
            if message_id.is_some_and(|id| id != record.message_id && record.damaged.is_empty()) {
                continue;
            }
            if kept.len() == limit {
                return Ok((kept, Some(AuditCursor { after: sequence - 1, upto: cursor.upto })));
            }
            kept.push(record);
        }
        after = last;
    }
    Ok((kept, None))
}

impl Desk {
    /// Asks every peer's delivery task to recover from its peer (see `peer::recovery`), on the
    /// audit record, and streams where each peer stands until every one answered.
    pub async fn recover_from_peers(
        &self,
        caller: &Caller,
        request: RecoverFromPeersRequest,
    ) -> Result<RecoveryStream, DeskError> {
        if let Some(since) = &request.since {
            crate::domain::validation::check_timestamp("since", since)?;
        }
        // One of the client's open streams (`limits.max_streams_per_client`) while it runs.
        let slot = self.open_stream(caller)?;
        let since_seconds = request.since.map_or(0, |since| since.seconds);
        let pending = crate::store::RecoveryPending { id: uuid::Uuid::now_v7(), since_seconds };
        let since =
            request.since.as_ref().map_or_else(|| "the start".to_owned(), crate::domain::timestamp::rfc3339);
        self.context.store.write(|changes| {
            super::authorization::audit_call(
                changes,
                caller,
                Action::RecoverFromPeers,
                "",
                &format!("every peer, exchanges since {since}"),
            );
            changes.mark_recovery_pending(pending);
            Ok::<_, DeskError>(())
        })?;
        self.context.store.persist().await?;
        self.context.wake_for_recovery();
        let peers: Vec<_> = self.context.peers_listed().into_iter().map(|m| m.code).collect();
        let context = std::sync::Arc::clone(&self.context);
        let stop = self.stop.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(peers.len().max(1));
        self.tasks.spawn(async move {
            let _slot = slot;
            let mut shown: std::collections::HashMap<_, RecoverFromPeersResponse> = Default::default();
            loop {
                let mut all_done = true;
                for &peer in &peers {
                    let now = match context.store.recovery_pending(peer) {
                        Ok(Some(_)) => RecoverFromPeersResponse {
                            peer: peer.to_string(),
                            done: false,
                            result: String::new(),
                            last_error: context.peers.get(peer).last_error,
                        },
                        Ok(None) => RecoverFromPeersResponse {
                            peer: peer.to_string(),
                            done: true,
                            result: context.store.recovery_result(peer).ok().flatten().unwrap_or_default(),
                            last_error: String::new(),
                        },
                        Err(error) => {
                            let _ = sender.send(Err(error.into())).await;
                            return;
                        }
                    };
                    all_done &= now.done;
                    if shown.get(&peer) != Some(&now) {
                        shown.insert(peer, now.clone());
                        if sender.send(Ok(now)).await.is_err() {
                            // The client went; the recovery goes on.
                            return;
                        }
                    }
                }
                if all_done {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECOVERY_POLL) => {}
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}
