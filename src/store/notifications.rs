//! Notifications waiting to be sent (`n` keys) and sent (`d` keys): one record per event and
//! target, written in the same batch as the event that caused it (a request stored, a request
//! overdue) or right after it (peer unreachable, store unwritable, an expiry ahead), so a
//! restart loses none. `runtime::notify` sends them and records the outcome here.
//!
//! What a record holds is chosen for people who may read it outside the node (a pager, a
//! mailbox): ids, type, precedence, the other member, the deadline; never a request's subject,
//! body or case reference (docs/design.md: those may be sensitive).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{NotifyConfig, NotifyEvent};
use crate::domain::names::{ShortName, precedence_named};
use crate::proto::Precedence;
use crate::store::{Changes, Store, StoreError};

/// Prefix of pending notifications: `n` id(16), value JSON [`Notification`].
const PENDING: u8 = b'n';
/// Prefix of sent notifications: `d` id(16), value JSON [`Notification`] with `sent_at`.
const SENT: u8 = b'd';

/// What one target wants to hear about.
#[derive(Debug, Clone)]
pub struct TargetWants {
    /// The target's name (`[notify]`).
    pub target: String,
    /// The events it wants.
    pub events: HashSet<NotifyEvent>,
    /// For request events: the precedences it wants (empty: all).
    pub precedences: HashSet<Precedence>,
}

/// Every target's wants, from `[notify]`.
pub fn plan(config: &NotifyConfig) -> Vec<TargetWants> {
    config
        .targets()
        .into_iter()
        .map(|(target, events, precedences)| TargetWants {
            target: target.to_owned(),
            events: events.iter().copied().collect(),
            precedences: precedences.iter().filter_map(|p| precedence_named(p)).collect(),
        })
        .collect()
}

/// Something that happened, as a notification tells it.
#[derive(Debug, Clone, Default)]
pub struct Notice {
    /// The message concerned (empty for node events).
    pub message_id: String,
    /// Its request type (short name), if any.
    pub request_type: String,
    /// Its precedence.
    pub precedence: Option<Precedence>,
    /// The other member concerned: the origin of an inbound request, the unreachable peer.
    pub peer: String,
    /// The message is an exercise (a drill): the notification says EXERCISE.
    pub exercise: bool,
    /// The acknowledgement deadline (RFC 3339), if any.
    pub deadline: String,
    /// A short description the node wrote (never foreign text).
    pub detail: String,
}

/// One notification for one target, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique: the receiver deduplicates on it (`X-Hanoi247-Notification-Id`).
    pub id: String,
    /// The target's name.
    pub target: String,
    /// What happened (`request_arrived`, ...).
    pub event: String,
    /// This node's code.
    pub node: String,
    /// When it happened (RFC 3339).
    pub at: String,
    /// The message concerned, if any.
    pub message_id: String,
    /// Its request type, if any.
    pub request_type: String,
    /// Its precedence (short name), if any.
    pub precedence: String,
    /// The other member concerned, if any.
    pub peer: String,
    /// The acknowledgement deadline (RFC 3339), if any.
    pub deadline: String,
    /// A short description the node wrote.
    pub detail: String,
    /// The message is an exercise (a drill). Absent in records stored before exercises existed.
    #[serde(default)]
    pub exercise: bool,
    /// Not sent before the event with this sequence number is durable (0: no event).
    pub after_event: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not tried again before this (milliseconds since the Unix epoch).
    pub next_attempt_ms: u64,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When it was sent (RFC 3339; empty while pending).
    pub sent_at: String,
}

impl Notification {
    fn key(&self, prefix: u8) -> Result<Vec<u8>, StoreError> {
        let id =
            Uuid::parse_str(&self.id).map_err(|_| StoreError::Malformed("notification id is not a UUID"))?;
        let mut key = vec![prefix];
        key.extend_from_slice(id.as_bytes());
        Ok(key)
    }

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self)
            .map_err(|e| StoreError::Corrupt { key: format!("n{}", self.id), reason: e.to_string() })
    }
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<Notification, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Changes<'_> {
    /// Writes one pending notification per target that wants `event` (and, for request events,
    /// the notice's precedence), sent only once the last event recorded so far is durable.
    /// Returns how many were written.
    pub fn notify(&mut self, event: NotifyEvent, notice: &Notice) -> Result<usize, StoreError> {
        let wants = self.store.notification_plan();
        let by_precedence = matches!(
            event,
            NotifyEvent::RequestArrived | NotifyEvent::RequestOverdue | NotifyEvent::PreservationExpiring
        );
        let now = SystemTime::now();
        let mut written = 0;
        for target in wants.iter().filter(|t| t.events.contains(&event)) {
            if by_precedence
                && !target.precedences.is_empty()
                && !notice.precedence.is_some_and(|p| target.precedences.contains(&p))
            {
                continue;
            }
            let record = Notification {
                id: Uuid::now_v7().to_string(),
                target: target.target.clone(),
                event: event.name().to_owned(),
                node: self.store.node_code(),
                at: crate::domain::timestamp::rfc3339(&crate::domain::timestamp::from_system(now)),
                message_id: notice.message_id.clone(),
                request_type: notice.request_type.clone(),
                precedence: notice.precedence.map(|p| p.short_name().to_owned()).unwrap_or_default(),
                peer: notice.peer.clone(),
                deadline: notice.deadline.clone(),
                detail: notice.detail.clone(),
                exercise: notice.exercise,
                after_event: self.last_event,
                attempts: 0,
                next_attempt_ms: 0,
                last_error: String::new(),
                sent_at: String::new(),
            };
            self.batch.insert(record.key(PENDING)?, record.encode()?);
            written += 1;
        }
        Ok(written)
    }
}

impl Store {
    /// Sets which targets want which events (from `[notify]`; none until set).
    pub fn set_notification_plan(&self, node: &str, plan: Vec<TargetWants>) {
        let mut held = self.notify_plan.write().unwrap_or_else(|p| p.into_inner());
        *held = (node.to_owned(), std::sync::Arc::new(plan));
    }

    fn notification_plan(&self) -> std::sync::Arc<Vec<TargetWants>> {
        let held = self.notify_plan.read().unwrap_or_else(|p| p.into_inner());
        std::sync::Arc::clone(&held.1)
    }

    fn node_code(&self) -> String {
        self.notify_plan.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// Writes the notifications of `event` (see [`Changes::notify`]) and makes them durable.
    pub async fn notify(&self, event: NotifyEvent, notice: &Notice) -> Result<usize, StoreError> {
        let written = self.write(|changes| changes.notify(event, notice))?;
        if written > 0 {
            self.persist().await?;
        }
        Ok(written)
    }

    /// The pending notifications of `target` due at `now` whose event is durable, oldest first.
    pub fn due_notifications(&self, target: &str, now: SystemTime) -> Result<Vec<Notification>, StoreError> {
        let durable = *self.durable_events.borrow();
        let now = millis(now);
        let mut due = Vec::new();
        for entry in self.db()?.scan_prefix([PENDING]) {
            let (key, value) = entry?;
            let record = decode(&key, &value)?;
            if record.target == target && record.after_event <= durable && record.next_attempt_ms <= now {
                due.push(record);
            }
        }
        Ok(due)
    }

    /// Every pending notification (any target).
    pub fn pending_notifications(&self) -> Result<Vec<Notification>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.db()?.scan_prefix([PENDING]) {
            let (key, value) = entry?;
            pending.push(decode(&key, &value)?);
        }
        Ok(pending)
    }

    /// Every sent notification (any target), oldest first.
    pub fn sent_notifications(&self) -> Result<Vec<Notification>, StoreError> {
        let mut sent = Vec::new();
        for entry in self.db()?.scan_prefix([SENT]) {
            let (key, value) = entry?;
            sent.push(decode(&key, &value)?);
        }
        Ok(sent)
    }

    /// Records that `notification` was sent: it moves from pending to sent, durably.
    pub async fn notification_sent(&self, notification: &Notification) -> Result<(), StoreError> {
        let mut sent = notification.clone();
        sent.sent_at = crate::domain::timestamp::rfc3339(&crate::domain::timestamp::now());
        self.write(|changes| {
            changes.batch.remove(notification.key(PENDING)?);
            changes.batch.insert(sent.key(SENT)?, sent.encode()?);
            Ok::<_, StoreError>(())
        })?;
        self.persist().await
    }

    /// Removes sent notifications made before `before` (their id is a UUIDv7, which holds its
    /// creation time); returns how many. Pending ones are never removed.
    pub async fn prune_sent_notifications(&self, before: SystemTime) -> Result<usize, StoreError> {
        let limit = millis(before);
        let mut old = Vec::new();
        for entry in self.db()?.scan_prefix([SENT]) {
            let (key, _) = entry?;
            let made = Uuid::from_slice(&key[1..]).ok().and_then(|id| id.get_timestamp()).map(|t| {
                let (seconds, nanos) = t.to_unix();
                seconds.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000))
            });
            // Keys are in creation order: the first one young enough ends the scan.
            if made.is_some_and(|made| made >= limit) {
                break;
            }
            old.push(key.to_vec());
        }
        if old.is_empty() {
            return Ok(0);
        }
        self.write(|changes| {
            for key in &old {
                changes.batch.remove(key);
            }
            Ok::<_, StoreError>(())
        })?;
        self.persist().await?;
        Ok(old.len())
    }

    /// Records a failed attempt and when to try again (not made durable by itself: a crash only
    /// makes the next attempt come sooner).
    pub fn notification_failed(
        &self,
        notification: &Notification,
        error: &str,
        retry_in: Duration,
    ) -> Result<Notification, StoreError> {
        let mut failed = notification.clone();
        failed.attempts = failed.attempts.saturating_add(1);
        failed.last_error = error.chars().take(500).collect();
        failed.next_attempt_ms = millis(SystemTime::now() + retry_in);
        self.write(|changes| {
            changes.batch.insert(failed.key(PENDING)?, failed.encode()?);
            Ok::<_, StoreError>(())
        })?;
        Ok(failed)
    }
}
