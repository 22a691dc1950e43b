//! What this node knows about each peer right now (in memory): connection state, failures,
//! last contact, round-trip time and version from `Hello`, certificate expiry from the last
//! handshake. Written by the delivery tasks, read by the desk's queue and peer views and by
//! metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::domain::identity::NodeCode;
use crate::proto::ConnectionState;

/// One peer's status.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// How the last call went.
    pub connection: ConnectionState,
    /// Consecutive failed calls.
    pub failures: u32,
    /// The last error.
    pub last_error: String,
    /// When the delivery task tries next, while backing off.
    pub next_attempt_at: Option<SystemTime>,
    /// When a call last succeeded.
    pub last_contact_at: Option<SystemTime>,
    /// Round-trip time of the last `Hello`.
    pub round_trip: Option<Duration>,
    /// The peer's software version, from `Hello`.
    pub software_version: String,
    /// When the peer's certificate expires, from the last handshake.
    pub certificate_expires_at: Option<SystemTime>,
    /// The version of the signed directory the peer uses, from `Hello` (0: not known).
    pub directory_version: u64,
    /// Envelopes delivered (receipted) since start.
    pub delivered: u64,
    /// Failed calls since start.
    pub failed_calls: u64,
    /// Envelopes scheduled for another attempt since start (after a failed call or a refusal).
    pub retries: u64,
    /// The peer said in `Hello` that it verifies batch signatures (format 2).
    pub verifies_batch_signatures: bool,
    /// The newest head of THIS node's audit log that the peer says it witnessed (its last
    /// `Hello` answer, signature checked with this node's certificate); memory only, so a
    /// rewritten store cannot change it.
    pub witnessed_my_head: Option<crate::proto::SignedAuditHead>,
}

impl Default for PeerStatus {
    fn default() -> Self {
        Self {
            connection: ConnectionState::Idle,
            failures: 0,
            last_error: String::new(),
            next_attempt_at: None,
            last_contact_at: None,
            round_trip: None,
            software_version: String::new(),
            certificate_expires_at: None,
            directory_version: 0,
            delivered: 0,
            failed_calls: 0,
            retries: 0,
            verifies_batch_signatures: false,
            witnessed_my_head: None,
        }
    }
}

/// Every peer's status.
#[derive(Debug, Default)]
pub struct PeerBoard {
    peers: Mutex<HashMap<NodeCode, PeerStatus>>,
}

impl PeerBoard {
    /// Changes one peer's status.
    pub fn update(&self, peer: NodeCode, change: impl FnOnce(&mut PeerStatus)) {
        // A poisoned lock means a panic mid-update of plain data; the data is still usable.
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        change(peers.entry(peer).or_default());
    }

    /// One peer's status (the default for a peer not contacted yet).
    pub fn get(&self, peer: NodeCode) -> PeerStatus {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&peer).cloned().unwrap_or_default()
    }

    /// Whether `peer` said in its last `Hello` that it verifies batch signatures (format 2).
    pub fn verifies_batch_signatures(&self, peer: NodeCode) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&peer).is_some_and(|status| status.verifies_batch_signatures)
    }

    /// What each peer answered it witnessed of this node's audit log, ordered by peer.
    pub fn witnessed_my_heads(&self) -> Vec<(NodeCode, crate::proto::SignedAuditHead)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut heads: Vec<_> = peers
            .iter()
            .filter_map(|(code, status)| status.witnessed_my_head.clone().map(|head| (*code, head)))
            .collect();
        heads.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        heads
    }
}
