//! Following the node's lifecycle events: replay the stored events after a given one, then follow
//! new ones as they become durable. Events themselves are recorded by `store` in the same atomic
//! write as the change they report, so a watcher sees every event once, in order, without gaps,
//! across restarts of the node and of the watcher.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use crate::proto::WatchResponse;
use crate::store::{Store, StoreError};

/// Events read from the store per step, so a long replay does not hold much memory.
const REPLAY_CHUNK: usize = 1000;

/// The sequence number of the last event watchers can see now: "from now on" means after it.
pub fn latest(store: &Store) -> u64 {
    *store.durable_events().borrow()
}

/// The events after `after`, until `stop` or the stream is dropped.
///
/// No task of its own: the stream reads the store when it is polled, so it runs inside the call
/// that serves it (the node waits for those at shutdown) and reads no further ahead than the
/// watcher takes.
pub fn follow(store: Store, after: u64, stop: CancellationToken) -> Follow {
    let durable = store.durable_events();
    let follower = Follower { store, durable, last: after, stop, read: VecDeque::new(), ended: false };
    Follow { idle: Some(follower), step: None }
}

/// The stream of events [`follow`] returns.
pub struct Follow {
    /// The follower between two events (`None` while a step runs, and after the end).
    idle: Option<Follower>,
    /// The step under way: the next event and the follower after it.
    step: Option<Step>,
}

type Step = Pin<Box<dyn Future<Output = Option<(Result<WatchResponse, StoreError>, Follower)>> + Send>>;

impl Stream for Follow {
    type Item = Result<WatchResponse, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let step = match &mut this.step {
            Some(step) => step,
            None => match this.idle.take() {
                Some(follower) => this.step.insert(Box::pin(follower.next())),
                None => return Poll::Ready(None),
            },
        };
        let Poll::Ready(stepped) = step.as_mut().poll(cx) else { return Poll::Pending };
        this.step = None;
        Poll::Ready(stepped.map(|(item, follower)| {
            this.idle = Some(follower);
            item
        }))
    }
}

/// Where a watcher is: the last event it was given and the events read but not given yet.
struct Follower {
    store: Store,
    durable: watch::Receiver<u64>,
    last: u64,
    stop: CancellationToken,
    read: VecDeque<WatchResponse>,
    /// An error was given: nothing follows it.
    ended: bool,
}

impl Follower {
    /// The next event (or error) and the follower after it; `None` at the end.
    async fn next(mut self) -> Option<(Result<WatchResponse, StoreError>, Self)> {
        loop {
            // A watcher that stops reading must not keep the node from shutting down.
            if self.ended || self.stop.is_cancelled() {
                return None;
            }
            if let Some(event) = self.read.pop_front() {
                self.last = event.sequence;
                return Some((Ok(event), self));
            }
            let upto = *self.durable.borrow_and_update();
            if self.last < upto {
                match self.store.events_between(self.last, upto, REPLAY_CHUNK) {
                    Ok(events) if !events.is_empty() => {
                        // Events are gap-free except where retention removed the oldest (never
                        // the last one): a watcher behind them is told, never given a silent gap.
                        if let Some(next) = events.first()
                            && next.sequence != self.last + 1
                        {
                            let gap =
                                StoreError::EventsPruned { first: self.last + 1, through: next.sequence - 1 };
                            self.ended = true;
                            return Some((Err(gap), self));
                        }
                        self.read = events.into();
                        continue;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        self.ended = true;
                        return Some((Err(error), self));
                    }
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                changed = self.durable.changed() => if changed.is_err() { return None },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Direction, Envelope, EnvelopeKind, Message, MessageState};
    use crate::store_proto::StoredMessage;
    use tokio_stream::StreamExt;

    fn queue_one(store: &Store) {
        let mut message = Message {
            envelope: Some(Envelope {
                id: uuid::Uuid::now_v7().to_string(),
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
            crate::domain::timestamp::now(),
            "t".into(),
        );
        store
            .write(|changes| {
                changes.put(StoredMessage { message: Some(message), seq: 1, ..Default::default() })
            })
            .unwrap();
    }

    #[tokio::test]
    async fn a_watcher_behind_pruned_events_is_told_and_one_after_them_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for _ in 0..3 {
            queue_one(&store);
        }
        store.persist().await.unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(store.prune_events(later, 100, "test").unwrap(), 1..=2);

        let stop = CancellationToken::new();
        let mut behind = follow(store.clone(), 0, stop.clone());
        match behind.next().await {
            Some(Err(StoreError::EventsPruned { first: 1, through: 2 })) => {}
            other => panic!("expected the removed range to be named, got {other:?}"),
        }
        let mut after = follow(store.clone(), 2, stop.clone());
        assert_eq!(after.next().await.unwrap().unwrap().sequence, 3);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_follower_gives_events_once_durable_and_ends_at_stop_while_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let stop = CancellationToken::new();
        let mut events = follow(store.clone(), 0, stop.clone());
        queue_one(&store);
        store.persist().await.unwrap();
        assert_eq!(events.next().await.unwrap().unwrap().sequence, 1);

        // Nothing more is durable: the follower waits, then ends when the node stops.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), events.next()).await;
        assert!(waiting.is_err(), "no event to give: {waiting:?}");
        stop.cancel();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await;
        assert!(ended.unwrap().is_none(), "the stream ends at stop");
    }
}
