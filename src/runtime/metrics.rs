//! What a node counts as it happens ([`Metrics`]): envelopes received, duplicates, acknowledgement
//! lead time, signature failures, events pruned. Everything else the metrics listener shows is read
//! at scrape time (`node::metrics_listener`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Label pairs of one metric family member.
pub type Labels = Vec<(String, String)>;

/// What is counted as it happens.
#[derive(Debug)]
pub struct Metrics {
    /// Envelopes stored from peers, by peer and kind.
    pub envelopes_received: Family<Labels, Counter>,
    /// Envelopes a peer sent again (answered with the original receipt), by peer.
    pub duplicates_received: Family<Labels, Counter>,
    /// Seconds from a request's creation to its acknowledgement arriving here, by precedence.
    pub ack_lead_time: Family<Labels, Histogram>,
    /// Signatures that did not verify, by peer and what was signed (`envelope` refused here,
    /// `receipt` refused from the peer): tampering, or a misconfigured key or CA.
    pub signature_failures: Family<Labels, Counter>,
    /// Lifecycle events removed by retention.
    pub events_pruned: Counter,
    /// Panics in request handlers answered as internal errors, by listener (`peer`, `desk`,
    /// `console`): each one is a bug to report.
    pub panics: Family<Labels, Counter>,
    /// Audit heads a peer gave in `Hello` that are behind, or fork from, the one witnessed of it
    /// before (its log was cut short or rewritten), by peer.
    pub audit_head_rollbacks: Family<Labels, Counter>,
    /// Restarts from a backup that a peer announced in `Recover` with a head behind the one
    /// witnessed of it (taken, and audited, instead of counted as a rollback), by peer.
    pub audit_head_restarts: Family<Labels, Counter>,
    /// Connections refused or dropped before they carried a call, by listener and reason
    /// (`connections`, `handshakes`, `address`: over a `[limits]` cap; `handshake`: TLS
    /// refused; `timeout`: handshake too slow).
    pub connections_refused: Family<Labels, Counter>,
    /// Desk calls refused by the per-client rate (`limits.desk_calls_per_second`) or stream cap.
    pub desk_calls_limited: Family<Labels, Counter>,
    /// Notifications delivered to a `[notify]` target, by target and event.
    pub notifications_sent: Family<Labels, Counter>,
    /// Failed notification attempts (each is retried), by target and event.
    pub notifications_failed: Family<Labels, Counter>,
    /// Notifications waiting to be sent, by target (set by each target's sender).
    pub notifications_pending: Family<Labels, Gauge>,
    /// Attachment bytes sent to peers (`PutAttachment`).
    pub attachment_bytes_sent: Counter,
    /// Attachment bytes received from peers and synced to the disk.
    pub attachment_bytes_received: Counter,
    /// Attachment pushes to peers under way.
    pub attachment_transfers_in_flight: Gauge,
    /// Attachment pushes to peers that failed (each is retried with the delivery's backoff).
    pub attachment_transfers_failed: Counter,
    /// Attachment pieces refused from peers because their digest did not match.
    pub attachment_pieces_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            envelopes_received: Family::default(),
            duplicates_received: Family::default(),
            // 1 s to about 36 hours.
            ack_lead_time: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 18))),
            signature_failures: Family::default(),
            events_pruned: Counter::default(),
            panics: Family::default(),
            audit_head_rollbacks: Family::default(),
            audit_head_restarts: Family::default(),
            connections_refused: Family::default(),
            desk_calls_limited: Family::default(),
            notifications_sent: Family::default(),
            notifications_failed: Family::default(),
            notifications_pending: Family::default(),
            attachment_bytes_sent: Counter::default(),
            attachment_bytes_received: Counter::default(),
            attachment_transfers_in_flight: Gauge::default(),
            attachment_transfers_failed: Counter::default(),
            attachment_pieces_refused: Counter::default(),
        }
    }
}

/// Label helper.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
