//! The node's live stream of lifecycle events, fanned out to every `Watch` caller.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;

use crate::proto::{Direction, Event, Message};

/// How many events a slow watcher may fall behind before it misses some (it is told).
const BACKLOG: usize = 4096;

/// Publishes lifecycle events in the order they happen.
pub struct Events {
    sender: broadcast::Sender<Event>,
    sequence: AtomicU64,
}

impl Default for Events {
    fn default() -> Self {
        Self { sender: broadcast::channel(BACKLOG).0, sequence: AtomicU64::new(0) }
    }
}

impl Events {
    /// Announces the latest timeline entry of `message` (call after the change is persisted).
    pub fn publish(&self, message: &Message) {
        let Some(envelope) = &message.envelope else { return };
        let Some(entry) = message.timeline.last() else { return };
        let peer = match message.direction() {
            Direction::Inbound => envelope.origin.clone(),
            _ => envelope.destination.clone(),
        };
        let event = Event {
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed) + 1,
            at: entry.at,
            message_id: envelope.id.clone(),
            state: entry.state,
            peer,
            precedence: envelope.precedence,
            note: entry.note.clone(),
        };
        // No watcher is not an error: events are for whoever is listening now.
        let _ = self.sender.send(event);
    }

    /// A new watcher, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
