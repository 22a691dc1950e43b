//! Receiver-side order of pipelined `Deliver` batches.
//!
//! A sender keeps several batches in flight on one connection, and HTTP/2 hands them to us as
//! concurrent calls in any order. Guarantee 5 of docs/design.md (higher precedence first, equal
//! precedence in submission order) needs them stored in the order they were sent. So each sender
//! numbers its batches within a *session* (a run of batches that follow each other without a
//! failure): a batch is stored only after every earlier batch of its session was stored, and once
//! one batch of a session fails, every later batch of that session is refused too. The sender then
//! starts a new session with whatever is still queued, in queue order, so a lost batch can never be
//! overtaken by the one behind it.
//!
//! Invariants: within a session, batches are applied to the store in strictly increasing
//! `batch_number` with no gaps; an older session of a sender is never applied after a newer one
//! has been seen (sessions are UUIDv7, so they order by creation time).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::identity::NodeCode;

/// How long a batch waits for the batches sent before it. Longer than any normal gap between two
/// pipelined calls on one connection; shorter than a sender's request deadline.
pub const PREDECESSOR_WAIT: Duration = Duration::from_secs(2);

/// Why a batch may not be stored now. The sender retries it in a new session.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// `sender_session` is not a UUID.
    #[error("sender_session: '{0}' is not a UUID")]
    BadSession(String),
    /// A newer session of the same sender was already seen.
    #[error("batch {number} of delivery session {session}: that session was superseded by a newer one")]
    Superseded {
        /// The session.
        session: Uuid,
        /// The batch.
        number: u64,
    },
    /// An earlier batch of the session failed or never arrived.
    #[error("batch {number} of delivery session {session}: {reason}; resend in a new session")]
    Broken {
        /// The session.
        session: Uuid,
        /// The batch.
        number: u64,
        /// Which earlier batch is missing or failed.
        reason: String,
    },
}

/// Where one sender's current session stands.
struct Session {
    id: Uuid,
    /// The highest batch number stored (0: none yet).
    applied: u64,
    /// Set when a batch failed or a predecessor never came: nothing more is stored in it.
    broken: Option<String>,
}

/// The sessions of all senders of this node.
#[derive(Default)]
pub struct BatchOrder {
    sessions: Mutex<HashMap<NodeCode, Session>>,
    changed: Notify,
}

/// The right to store one batch now. Dropping it without [`Turn::stored`] breaks the session, so
/// that a batch that failed halfway (or whose call was abandoned) is never overtaken.
pub struct Turn<'a> {
    order: &'a BatchOrder,
    place: Option<(NodeCode, Uuid, u64)>,
    stored: bool,
}

impl BatchOrder {
    fn lock(&self) -> MutexGuard<'_, HashMap<NodeCode, Session>> {
        // A panic while holding this lock cannot leave a session half-updated (every update is
        // one assignment), so a poisoned lock is still consistent.
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until batch `number` of `session` from `sender` may be stored. An empty session or
    /// number 0 means the sender does not pipeline: stored at once, in arrival order. The sender
    /// says every batch up to `answered_through` was answered: stored, if not by this process
    /// then by the one before a restart, so they are not waited for.
    pub async fn admit(
        &self,
        sender: NodeCode,
        session: &str,
        number: u64,
        answered_through: u64,
        wait: Duration,
    ) -> Result<Turn<'_>, OrderError> {
        if session.is_empty() || number == 0 {
            return Ok(Turn { order: self, place: None, stored: false });
        }
        let id = Uuid::parse_str(session).map_err(|_| OrderError::BadSession(session.to_owned()))?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register before looking, so a batch stored between the look and the wait wakes us.
            let changed = self.changed.notified();
            {
                let mut sessions = self.lock();
                let current = sessions.entry(sender).or_insert(Session { id, applied: 0, broken: None });
                if current.id < id {
                    *current = Session { id, applied: 0, broken: None };
                }
                if current.id > id {
                    return Err(OrderError::Superseded { session: id, number });
                }
                if let Some(reason) = &current.broken {
                    return Err(OrderError::Broken { session: id, number, reason: reason.clone() });
                }
                // Only batches before this one can have been answered (a larger claim is ignored).
                let answered = answered_through.min(number - 1);
                if answered > current.applied {
                    current.applied = answered;
                    // Batches waiting for one of those may go now.
                    self.changed.notify_waiters();
                }
                if number <= current.applied {
                    return Err(OrderError::Broken {
                        session: id,
                        number,
                        reason: format!("batch {number} was already stored in this session"),
                    });
                }
                if number == current.applied + 1 {
                    return Ok(Turn { order: self, place: Some((sender, id, number)), stored: false });
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let mut sessions = self.lock();
                let reason = match sessions.get_mut(&sender) {
                    Some(current) if current.id == id => {
                        let reason = format!("batch {} never arrived", current.applied + 1);
                        current.broken.get_or_insert(reason).clone()
                    }
                    _ => "the session was superseded".to_owned(),
                };
                drop(sessions);
                self.changed.notify_waiters();
                return Err(OrderError::Broken { session: id, number, reason });
            }
        }
    }
}

impl Turn<'_> {
    /// The batch was written to the store: the next one of its session may go.
    pub fn stored(mut self) {
        self.stored = true;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some((sender, id, number)) = self.place else { return };
        let mut sessions = self.order.lock();
        if let Some(current) = sessions.get_mut(&sender)
            && current.id == id
        {
            if self.stored {
                current.applied = number;
            } else {
                current.broken.get_or_insert_with(|| format!("batch {number} was not stored"));
            }
        }
        drop(sessions);
        self.order.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> NodeCode {
        "VN".parse().expect("valid code")
    }

    #[tokio::test]
    async fn later_batch_waits_for_earlier_one() {
        let order = BatchOrder::default();
        let session = Uuid::now_v7().to_string();
        let first = order.admit(code(), &session, 1, 0, PREDECESSOR_WAIT).await.expect("first");
        let second = order.admit(code(), &session, 2, 0, PREDECESSOR_WAIT);
        tokio::pin!(second);
        // The second cannot go while the first is not stored.
        assert!(futures_poll_once(second.as_mut()).await.is_none());
        first.stored();
        second.await.expect("second after first").stored();
    }

    #[tokio::test]
    async fn failed_batch_breaks_its_session_and_a_new_session_starts_clean() {
        let order = BatchOrder::default();
        let session = Uuid::now_v7().to_string();
        drop(order.admit(code(), &session, 1, 0, PREDECESSOR_WAIT).await.expect("first"));
        let error = order.admit(code(), &session, 2, 0, PREDECESSOR_WAIT).await.err().expect("refused");
        assert!(error.to_string().contains("batch 1 was not stored"), "{error}");
        let newer = Uuid::now_v7().to_string();
        order.admit(code(), &newer, 1, 0, PREDECESSOR_WAIT).await.expect("new session").stored();
        let old = order.admit(code(), &session, 3, 0, PREDECESSOR_WAIT).await.err().expect("superseded");
        assert!(matches!(old, OrderError::Superseded { .. }), "{old}");
    }

    #[tokio::test]
    async fn missing_predecessor_times_out_and_breaks_the_session() {
        let order = BatchOrder::default();
        let session = Uuid::now_v7().to_string();
        let error =
            order.admit(code(), &session, 2, 0, Duration::from_millis(20)).await.err().expect("refused");
        assert!(error.to_string().contains("batch 1 never arrived"), "{error}");
        let late = order.admit(code(), &session, 1, 0, PREDECESSOR_WAIT).await.err().expect("still broken");
        assert!(matches!(late, OrderError::Broken { .. }), "{late}");
    }

    #[tokio::test]
    async fn after_a_restart_batches_the_sender_saw_answered_are_not_waited_for() {
        // This process never saw the session: batches up to 329 were stored before a restart.
        let order = BatchOrder::default();
        let session = Uuid::now_v7().to_string();
        let first = order.admit(code(), &session, 330, 329, PREDECESSOR_WAIT);
        tokio::pin!(first);
        futures_poll_once(first.as_mut()).await.expect("at once").expect("admitted").stored();

        // 332 arrives before 331 and says 330 was answered: 331 goes first, then 332.
        let order = BatchOrder::default();
        let waiting = order.admit(code(), &session, 331, 329, PREDECESSOR_WAIT);
        tokio::pin!(waiting);
        assert!(futures_poll_once(waiting.as_mut()).await.is_none(), "331 waits for 330");
        let later = order.admit(code(), &session, 332, 330, PREDECESSOR_WAIT);
        tokio::pin!(later);
        assert!(futures_poll_once(later.as_mut()).await.is_none(), "332 waits for 331");
        waiting.await.expect("331 once 330 is known answered").stored();
        later.await.expect("332 after 331").stored();

        // A claim past the batch itself only covers the batches before it: 5 still needs 4.
        let order = BatchOrder::default();
        order.admit(code(), &session, 3, 9, PREDECESSOR_WAIT).await.expect("1 and 2 answered").stored();
        let error =
            order.admit(code(), &session, 5, 0, Duration::from_millis(20)).await.err().expect("refused");
        assert!(error.to_string().contains("batch 4 never arrived"), "{error}");
    }

    #[tokio::test]
    async fn unnumbered_batches_pass_and_bad_sessions_are_named() {
        let order = BatchOrder::default();
        order.admit(code(), "", 0, 0, PREDECESSOR_WAIT).await.expect("unordered").stored();
        let error = order.admit(code(), "nope", 1, 0, PREDECESSOR_WAIT).await.err().expect("bad");
        assert!(error.to_string().starts_with("sender_session"), "{error}");
    }

    /// Polls a future once: `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
