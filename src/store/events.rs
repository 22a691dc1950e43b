//! Following the node's lifecycle events: replay the stored events after a given one, then follow
//! new ones as they become durable. Events themselves are recorded by `store` in the same atomic
//! write as the change they report, so a watcher sees every event once, in order, without gaps,
//! across restarts of the node and of the watcher.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::proto::Event;
use crate::store::{Store, StoreError};

/// Events read from the store per step, so a long replay does not hold much memory.
const REPLAY_CHUNK: usize = 1000;

/// The sequence number of the last event watchers can see now: "from now on" means after it.
pub fn latest(store: &Store) -> u64 {
    *store.durable_events().borrow()
}

/// The events after `after`, until `stop` or the receiver goes away.
pub fn follow(
    store: Store,
    after: u64,
    stop: CancellationToken,
) -> ReceiverStream<Result<Event, StoreError>> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut durable = store.durable_events();
        let mut last = after;
        loop {
            let upto = *durable.borrow_and_update();
            while last < upto {
                let events = match store.events_between(last, upto, REPLAY_CHUNK) {
                    Ok(events) if !events.is_empty() => events,
                    Ok(_) => break,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                // Events are gap-free except where retention removed the oldest (never the last
                // one): a watcher behind them is told, never given a silent gap.
                if let Some(next) = events.first()
                    && next.sequence != last + 1
                {
                    let gap = StoreError::EventsPruned { first: last + 1, through: next.sequence - 1 };
                    let _ = sender.send(Err(gap)).await;
                    return;
                }
                for event in events {
                    last = event.sequence;
                    // A watcher that stops reading must not keep the node from shutting down.
                    tokio::select! {
                        () = stop.cancelled() => return,
                        sent = sender.send(Ok(event)) => if sent.is_err() { return },
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = sender.closed() => return,
                changed = durable.changed() => if changed.is_err() { return },
            }
        }
    });
    ReceiverStream::new(receiver)
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
}
