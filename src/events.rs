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
