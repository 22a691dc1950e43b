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
    /// The last error (kept after a later success; `last_error_at` against `last_contact_at`
    /// tells whether it is still current).
    pub last_error: String,
    /// When `last_error` happened.
    pub last_error_at: Option<SystemTime>,
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
    /// The optional envelope fields the peer said in `Hello` it reads (`None`: no `Hello` yet).
    pub envelope_fields: Option<Vec<String>>,
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
            last_error_at: None,
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
            envelope_fields: None,
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

    /// Records a failed call to `peer` at `now`: FAILING, with the error and its time.
    pub fn record_error(&self, peer: NodeCode, error: String, now: SystemTime) {
        self.update(peer, |status| {
            status.connection = ConnectionState::Failing;
            status.last_error = error;
            status.last_error_at = Some(now);
        });
    }

    /// Whether `peer` is FAILING from this side (so that a call from it, which shows it is back,
    /// should make the delivery task probe it now instead of after its backoff).
    pub fn is_failing(&self, peer: NodeCode) -> bool {
        // Asked on every received batch: look without cloning the status.
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.get(&peer).is_some_and(|status| status.connection == ConnectionState::Failing)
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

    /// Whether `peer` is known not to read the optional envelope field `field`: it said in a
    /// `Hello` which fields it reads, and `field` was not among them. Unknown (no `Hello` yet)
    /// is not "no": the peer runs this version or newer unless it said otherwise.
    pub fn known_not_to_read(&self, peer: NodeCode, field: &str) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get(&peer)
            .and_then(|status| status.envelope_fields.as_ref())
            .is_some_and(|fields| !fields.iter().any(|f| f == field))
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

/// Whether an error at `error_at` is older than the last success at `success_at` (then views show
/// it as past, never beside CONNECTED as if current).
pub fn error_is_past(error_at: Option<SystemTime>, success_at: Option<SystemTime>) -> bool {
    match (error_at, success_at) {
        (Some(error), Some(success)) => error <= success,
        (None, Some(_)) => true,
        _ => false,
    }
}

/// The last error as views show it: "" when there is none; "last error 12:03:04Z, before the last
/// success at 12:05:10Z: …" once a later call succeeded; "since 12:03:04Z: …" while current.
pub fn last_error_note(error: &str, error_at: Option<SystemTime>, success_at: Option<SystemTime>) -> String {
    if error.is_empty() {
        return String::new();
    }
    let clock = |at: SystemTime| {
        let text = humantime::format_rfc3339_seconds(at).to_string();
        // "2026-12-04T12:03:04Z" -> "12:03:04Z": the date is rarely needed in a live view.
        text.split_once('T').map_or(text.clone(), |(_, time)| time.to_owned())
    };
    match (error_at, success_at) {
        (error_time, Some(success)) if error_is_past(error_time, Some(success)) => match error_time {
            Some(at) => {
                format!("last error {}, before the last success at {}: {error}", clock(at), clock(success))
            }
            None => format!("last error before the last success at {}: {error}", clock(success)),
        },
        (Some(at), _) => format!("since {}: {error}", clock(at)),
        (None, _) => error.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_before_the_last_success_is_past() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = t + Duration::from_secs(5);
        assert!(error_is_past(Some(t), Some(later)));
        assert!(!error_is_past(Some(later), Some(t)));
        assert!(!error_is_past(Some(t), None));
    }

    #[test]
    fn the_note_says_past_or_current() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(12 * 3600 + 3 * 60 + 4);
        let later = t + Duration::from_secs(126);
        assert_eq!(
            last_error_note("refused", Some(t), Some(later)),
            "last error 12:03:04Z, before the last success at 12:05:10Z: refused"
        );
        assert_eq!(last_error_note("refused", Some(later), Some(t)), "since 12:05:10Z: refused");
        assert_eq!(last_error_note("", Some(t), None), "");
    }

    #[test]
    fn record_error_keeps_its_time_and_marks_failing() {
        let board = PeerBoard::default();
        let fr: NodeCode = "FR".parse().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        board.record_error(fr, "refused".into(), t);
        let status = board.get(fr);
        assert_eq!(status.connection, ConnectionState::Failing);
        assert_eq!(status.last_error_at, Some(t));
        assert!(board.is_failing(fr));
    }
}
