//! What every part of a running node shares: its configuration, store, signer, directory, peer
//! board, metrics and the wake-ups of its delivery tasks. Built by `node`, handed as an `Arc` to
//! the peer side, the desk and the console.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Notify;

use crate::config::NodeConfig;
use crate::domain::identity::NodeCode;
use crate::store::Store;

/// This software's version as peers and operators see it.
pub const SOFTWARE_VERSION: &str = concat!("hanoi247 ", env!("CARGO_PKG_VERSION"));
/// The optional envelope fields this version reads, said in every `Hello` (a peer sets such a
/// field only for a node that lists it: see `Envelope.exercise`).
pub const ENVELOPE_FIELDS_READ: &[&str] = &["exercise", ATTACHMENT_CONTENT, "outcome", "follow_up"];
/// Said in `Hello` (among the envelope fields) by a node that takes attachments' content
/// (`PutAttachment`) and receipts an envelope only once it holds its attachments.
pub const ATTACHMENT_CONTENT: &str = "attachment_content";

/// [`ENVELOPE_FIELDS_READ`] as a `Hello` carries it.
pub fn envelope_fields_read() -> Vec<String> {
    ENVELOPE_FIELDS_READ.iter().map(|f| (*f).to_owned()).collect()
}

/// Wakes one peer's delivery task when something is queued for that peer.
#[derive(Default)]
pub struct DeliveryWaker {
    /// Notified on every new message for the peer.
    pub(crate) work: Notify,
    /// FLASH or IMMEDIATE work was queued since the task last looked.
    pub(crate) urgent: AtomicBool,
    /// A recovery from peers was asked (`RecoverFromPeers`): the task recovers before it sends on.
    pub(crate) recover: AtomicBool,
    /// The peer, FAILING from here, called this node since the task last looked: probe it now.
    pub(crate) probe: AtomicBool,
    /// Messages in a `Deliver` call to the peer whose outcome is not yet stored: the peer may
    /// hold them already. A cancellation asks this, under the store's writer lock, to decide
    /// whether the peer must be told (see `peer::delivery`).
    pub(crate) sending: std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>,
}

impl DeliveryWaker {
    /// The set of messages in flight to the peer.
    pub(crate) fn sending(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<uuid::Uuid>> {
        // A poisoned lock means a panic mid-insert of plain data; the set is still usable.
        self.sending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` may be at the peer already: in a `Deliver` call whose outcome is not stored.
    pub fn may_be_at_peer(&self, id: uuid::Uuid) -> bool {
        self.sending().contains(&id)
    }

    /// Something was queued; `urgent` (FLASH or IMMEDIATE) work is tried at once even while
    /// the peer is in a retry backoff: the peer may be back, and an urgent request must not wait
    /// for a backoff of up to `retry_max` that ordinary traffic started.
    pub fn queued(&self, urgent: bool) {
        if urgent {
            self.urgent.store(true, std::sync::atomic::Ordering::Release);
        }
        self.work.notify_one();
    }
}

/// What every part of a running node shares.
pub struct NodeContext {
    /// The configuration the node started with.
    pub config: NodeConfig,
    /// What deadlines, expiry and retention take as "now": the system clock, except in tests.
    pub clock: crate::domain::clock::Clock,
    /// The durable state.
    pub store: Store,
    /// What the delivery tasks know about each peer.
    pub peers: crate::runtime::peer_board::PeerBoard,
    /// What is counted as it happens.
    pub metrics: crate::runtime::metrics::Metrics,
    /// The signed directory in use (replaced on reload).
    pub directory: crate::trust::directory::LiveDirectory,
    /// Fires on SIGHUP and when a watched file changes; reloadable parts subscribe to it.
    pub reload: crate::trust::reload::ReloadTrigger,
    /// The desk clients and their roles (`[[clients]]`), replaced on reload.
    pub clients: crate::trust::reload::LiveClients,
    /// Counts successful TLS reloads: the delivery tasks then reconnect, so that a connection
    /// this node opened to a peer whose certificate is now revoked does not outlive the reload.
    pub(crate) tls_reloaded: tokio::sync::watch::Sender<u64>,
    /// Signs this node's envelopes and receipts; knows the network CA that checks others'.
    pub signer: crate::trust::signing::LiveSigner,
    /// One wake-up per peer delivery task: notified when something is queued for that peer.
    /// Grows when the directory gains a member; a removed member's stays (its queue stays).
    pub(crate) wakers: std::sync::Mutex<HashMap<NodeCode, Arc<DeliveryWaker>>>,
}

impl NodeContext {
    /// This node's code.
    pub fn code(&self) -> NodeCode {
        self.config.code
    }

    /// Tells `peer`'s delivery task that its outbox has something new.
    pub fn wake(&self, peer: NodeCode, urgent: bool) {
        if let Some(waker) = self.wakers().get(&peer) {
            waker.queued(urgent);
        }
    }

    /// `peer` called this node successfully; if this node's calls to it are failing, its
    /// delivery task probes it now (so `peers` does not show FAILING for a whole backoff after
    /// the peer is back).
    pub fn heard_from(&self, peer: NodeCode) {
        if self.peers.is_failing(peer)
            && let Some(waker) = self.wakers().get(&peer)
        {
            waker.probe.store(true, std::sync::atomic::Ordering::Release);
            waker.work.notify_one();
        }
    }

    /// Tells every delivery task that a recovery from peers is pending in the store.
    pub fn wake_for_recovery(&self) {
        for waker in self.wakers().values() {
            waker.recover.store(true, std::sync::atomic::Ordering::Release);
            waker.work.notify_one();
        }
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, HashMap<NodeCode, Arc<DeliveryWaker>>> {
        // A poisoned lock means a panic mid-insert of plain data; the map is still usable.
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wake-up of `peer`'s delivery task, made on first use.
    pub(crate) fn waker(&self, peer: NodeCode) -> Arc<DeliveryWaker> {
        Arc::clone(self.wakers().entry(peer).or_default())
    }

    /// The directory entry of `code` if the directory in use lists it as another member.
    pub fn peer(&self, code: NodeCode) -> Option<crate::config::DirectoryEntry> {
        if code == self.code() {
            return None;
        }
        self.directory.current().member(code).cloned()
    }

    /// The other members of the directory in use.
    pub fn peers_listed(&self) -> Vec<crate::config::DirectoryEntry> {
        let code = self.code();
        self.directory.current().members.iter().filter(|m| m.code != code).cloned().collect()
    }

    /// How many other members the directory in use lists (without copying them).
    pub fn peer_count(&self) -> usize {
        let code = self.code();
        self.directory.current().members.iter().filter(|m| m.code != code).count()
    }

    /// The peers with a queue to show: the members listed now, then any peer that had a delivery
    /// task since start and was removed from the directory (its queued messages stay visible).
    pub fn peers_with_queues(&self) -> Vec<NodeCode> {
        let mut codes: Vec<NodeCode> = self.peers_listed().iter().map(|m| m.code).collect();
        let mut removed: Vec<NodeCode> =
            self.wakers().keys().copied().filter(|c| !codes.contains(c)).collect();
        removed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        codes.extend(removed);
        codes
    }
}
