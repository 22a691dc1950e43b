//! Closed cases: the index of cases whose content waits for removal (`k` closed-at-seconds(8)
//! first-request-id(16), empty value), and removing a case's content once its retention period
//! is over (`domain::closing` says what goes).
//!
//! Invariant: a case has a `k` key from the write that closes it until the write that removed
//! the content of every envelope of its chain; each removal is an audit record in that write.

use std::time::SystemTime;

use uuid::Uuid;

use super::{Changes, Store, StoreError, prefixed, view};
use crate::domain::timestamp;
use crate::proto::{Direction, Envelope, EnvelopeKind, Message, MessageState};
use crate::store_proto::StoredMessage;

/// The most envelopes one case may hold for closing and removal (a chain is a handful; this
/// bounds a write whatever the store holds).
pub const MAX_CASE_ENVELOPES: usize = 10_000;

fn closed_key(at: SystemTime, first: Uuid) -> Vec<u8> {
    let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut key = prefixed(b'k', &seconds.to_be_bytes());
    key.extend_from_slice(first.as_bytes());
    key
}

impl Changes<'_> {
    /// Records that the case starting with request `first` was closed at `at`: its content is
    /// removed once the retention period after `at` is over ([`Store::closed_cases_due`]).
    pub fn mark_case_closed(&mut self, first: Uuid, at: SystemTime) {
        self.batch.insert(closed_key(at, first), [] as [u8; 0]);
    }

    /// Records a lifecycle event (and its audit record, `action`) about `message` that changes
    /// no state: the event carries the state it is in and `note` (no content).
    pub fn record_note_event(&mut self, message: &Message, action: &str, note: &str) {
        let event = super::message_event(message, note.to_owned());
        self.audit(action, &event.message_id, note);
        self.record_event(event);
    }
}

/// What one removal pass did to one case.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CaseRemoval {
    /// The ids of the envelopes whose content was removed now.
    pub ids: Vec<String>,
    /// Envelopes that still wait to be sent: kept for the next pass.
    pub waiting: usize,
}

impl Store {
    /// The first requests of cases closed before `before` whose content is still to be removed,
    /// with when they were closed (to the second), oldest closing first, at most `limit`.
    pub fn closed_cases_due(
        &self,
        before: SystemTime,
        limit: usize,
    ) -> Result<Vec<(Uuid, SystemTime)>, StoreError> {
        let end = closed_key(before, Uuid::nil());
        let mut due = Vec::new();
        for item in self.db()?.range(prefixed(b'k', &[])..end).take(limit) {
            let (key, _) = item?;
            let corrupt =
                || StoreError::Corrupt { key: format!("{key:02x?}"), reason: "not a closed-case key".into() };
            let id = key.get(9..25).and_then(|b| Uuid::from_slice(b).ok()).ok_or_else(corrupt)?;
            let seconds = key.get(1..9).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds.ok_or_else(corrupt)?);
            due.push((id, at));
        }
        Ok(due)
    }

    /// Every envelope of the case that starts with `first`: it, and what answers or continues
    /// it, and so on, in the order stored (at most [`MAX_CASE_ENVELOPES`]).
    pub fn case_envelopes(&self, first: Uuid) -> Result<Vec<StoredMessage>, StoreError> {
        let mut case = Vec::new();
        let Some(root) = self.get(first)? else { return Ok(case) };
        let mut seen = std::collections::HashSet::from([first]);
        case.push(root);
        let mut next = 0;
        while next < case.len() && case.len() < MAX_CASE_ENVELOPES {
            let id = envelope_id(&case[next]);
            next += 1;
            if let Some(id) = id {
                for reply in self.replies(id)? {
                    if envelope_id(&reply).is_some_and(|r| seen.insert(r)) {
                        case.push(reply);
                    }
                }
            }
        }
        case.truncate(MAX_CASE_ENVELOPES);
        Ok(case)
    }

    /// Removes the content of the envelopes of the case that starts with `first` that were closed
    /// at `closed_at` or before (those closed later have their own key) and of the replies that
    /// joined them after the closing, each with an audit record (`CONTENT_REMOVED`, which fields,
    /// `why`), at `now`. `digest` gives an
    /// envelope's SHA-256 as signed (`trust::signing`, above the store). An envelope that still
    /// waits to be sent keeps its content, and so does the case's index key, for the next pass;
    /// otherwise the key goes in the same write.
    pub fn remove_case_content(
        &self,
        first: Uuid,
        closed_at: SystemTime,
        now: SystemTime,
        why: &str,
        digest: impl Fn(&Envelope) -> [u8; 32],
    ) -> Result<CaseRemoval, StoreError> {
        let closed_seconds = closed_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.write(|changes| {
            let mut done = CaseRemoval::default();
            // Parents come before their replies (`case_envelopes`), so a reply that joined the
            // case after the closing goes with the envelope it answers.
            let mut removable = std::collections::HashSet::new();
            for mut stored in self.case_envelopes(first)? {
                let message = view(&stored);
                let envelope = message.envelope.clone().unwrap_or_default();
                let closed_then = message
                    .closed_at
                    .is_some_and(|at| u64::try_from(at.seconds).is_ok_and(|s| s <= closed_seconds));
                // Not closed: an answer or acknowledgement that joined after the closing goes;
                // a request that did (a follow-up) is open until it is closed itself.
                let joined = message.closed_at.is_none()
                    && envelope.kind() != EnvelopeKind::Request
                    && removable.contains(&envelope.in_reply_to);
                if !(closed_then || joined) {
                    continue;
                }
                removable.insert(envelope.id.clone());
                let waiting = message.direction() == Direction::Outbound
                    && matches!(message.state(), MessageState::Queued | MessageState::WaitingRetry);
                if waiting {
                    done.waiting += 1;
                    continue;
                }
                let Some(message) = stored.message.as_mut() else { continue };
                let sha256 = message.envelope.as_ref().map(|e| digest(e).to_vec()).unwrap_or_default();
                let id = message.envelope.as_ref().map(|e| e.id.clone()).unwrap_or_default();
                let removed =
                    crate::domain::closing::remove_content(message, timestamp::from_system(now), sha256);
                // Empty: removed by an earlier pass (a case with a reply that waited to be sent).
                if removed.is_empty() {
                    continue;
                }
                changes.audit("CONTENT_REMOVED", &id, &format!("{}: {why}", removed.join(", ")));
                if let Ok(uuid) = Uuid::parse_str(&id) {
                    changes.release_attachments(&envelope, uuid);
                }
                changes.put(stored)?;
                done.ids.push(id);
            }
            if done.waiting == 0 {
                changes.batch.remove(closed_key(closed_at, first));
            }
            Ok(done)
        })
    }
}

fn envelope_id(stored: &StoredMessage) -> Option<Uuid> {
    let envelope = stored.message.as_ref()?.envelope.as_ref()?;
    Uuid::parse_str(&envelope.id).ok()
}
