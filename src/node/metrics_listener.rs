//! The metrics listener: OpenMetrics text at `/metrics` (served as
//! `application/openmetrics-text`, so Prometheus parses it as what it is and keeps every family's
//! type), `/healthz` (the process is alive) and `/readyz` (store writable, listeners serving, not
//! shutting down). Plain HTTP, loopback by default.
//!
//! Most figures are read at scrape time from the store and the peer board, so they cannot drift
//! from what the desk API shows; only what happens in passing (envelopes received, acknowledgement
//! lead time) is counted as it happens, in [`Metrics`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::names::ShortName;
use crate::proto::{ConnectionState, Direction};
use crate::runtime::context::NodeContext;
use crate::store::{view, view_at};

use crate::runtime::metrics::{Labels, labels};

/// Serves the metrics listener until `stop`.
pub async fn serve(
    listener: TcpListener,
    context: Arc<NodeContext>,
    writable: Writable,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let state = (context, writable, stop.clone());
    let router = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await
}

/// Whether the store takes writes, as the node's store watch last found (false from a failed
/// write until a reopened store has taken writes for a while).
pub type Writable = tokio::sync::watch::Receiver<bool>;

type AppState = (Arc<NodeContext>, Writable, CancellationToken);

async fn ready(State((context, writable, stop)): State<AppState>) -> impl IntoResponse {
    if stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    if !*writable.borrow() {
        let why =
            context.store.broken().unwrap_or_else(|| "reopened after a failed write, not yet settled".into());
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store cannot write: {why}\n"));
    }
    match context.store.size_on_disk() {
        Ok(_) => (StatusCode::OK, "ready\n".to_owned()),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {error}\n")),
    }
}

/// The content type of the OpenMetrics 1.0 text `prometheus_client` encodes (`# EOF` at the end,
/// counters' samples named `<family>_total`). Under Prometheus's older `text/plain; version=0.0.4`
/// a `# TYPE x counter` line beside `x_total` samples loses the type.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn scrape(State((context, writable, _)): State<AppState>) -> impl IntoResponse {
    let mut root = Registry::default();
    // The process figures carry the names every Prometheus client library gives them.
    root.register_collector(Box::new(ProcessCollector));
    let registry = root.sub_registry_with_prefix("hanoi247");
    let metrics = &context.metrics;
    registry.register(
        "envelopes_received",
        "Envelopes stored from peers",
        metrics.envelopes_received.clone(),
    );
    registry.register(
        "duplicates_received",
        "Envelopes a peer sent again, answered with the original receipt",
        metrics.duplicates_received.clone(),
    );
    registry.register(
        "ack_lead_time_seconds",
        "Seconds from a request's creation to its acknowledgement arriving at the origin",
        metrics.ack_lead_time.clone(),
    );
    registry.register(
        "signature_failures",
        "Envelope signatures refused from peers and peer receipts that did not verify",
        metrics.signature_failures.clone(),
    );
    registry.register(
        "events_pruned",
        "Lifecycle events removed after [retention] events (messages and the audit log are kept)",
        metrics.events_pruned.clone(),
    );
    registry.register(
        "panics",
        "Panics in request handlers answered as internal errors (INTERNAL, HTTP 500), by listener",
        metrics.panics.clone(),
    );
    registry.register(
        "audit_head_rollbacks",
        "Audit heads a peer gave in Hello that are behind or fork from the one witnessed before (its log was cut or rewritten)",
        metrics.audit_head_rollbacks.clone(),
    );
    registry.register(
        "audit_head_restarts",
        "Restarts from a backup a peer announced when recovering from this node, its audit head behind the one witnessed before",
        metrics.audit_head_restarts.clone(),
    );
    registry.register(
        "connections_refused",
        "Connections refused or dropped before they carried a call, by listener and reason",
        metrics.connections_refused.clone(),
    );
    registry.register(
        "desk_calls_limited",
        "Desk calls refused by the per-client call rate or stream cap, by reason",
        metrics.desk_calls_limited.clone(),
    );
    registry.register(
        "notifications_sent",
        "Notifications delivered to a [notify] target, by target and event",
        metrics.notifications_sent.clone(),
    );
    registry.register(
        "notifications_failed",
        "Failed notification attempts (each is retried with backoff), by target and event",
        metrics.notifications_failed.clone(),
    );
    registry.register(
        "notifications_pending",
        "Notifications waiting to be sent, by target",
        metrics.notifications_pending.clone(),
    );
    registry.register(
        "attachment_bytes_sent",
        "Attachment bytes sent to peers",
        metrics.attachment_bytes_sent.clone(),
    );
    registry.register(
        "attachment_bytes_received",
        "Attachment bytes received from peers and synced to the disk",
        metrics.attachment_bytes_received.clone(),
    );
    registry.register(
        "attachment_transfers_in_flight",
        "Attachment transfers to peers under way",
        metrics.attachment_transfers_in_flight.clone(),
    );
    registry.register(
        "attachment_transfers_failed",
        "Attachment transfers to peers that failed (retried with the delivery's backoff)",
        metrics.attachment_transfers_failed.clone(),
    );
    registry.register(
        "attachment_pieces_refused",
        "Attachment pieces refused from peers because their SHA-256 did not match",
        metrics.attachment_pieces_refused.clone(),
    );
    let writable = *writable.borrow();
    registry.register_collector(Box::new(NodeCollector(Arc::clone(&context), writable)));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &root) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding failed\n".into(),
        ),
    }
}

/// The figures read at scrape time (and whether the store takes writes).
struct NodeCollector(Arc<NodeContext>, bool);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeCollector({})", self.0.code())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&prometheus_client::registry::Unit>,
    values: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, unit, prometheus_client::metrics::MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (labels, value) in values {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn seconds_since_epoch(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let context = &self.0;
        let now = context.clock.now();
        let mut depth = Vec::new();
        let mut oldest = Vec::new();
        let (mut delivered, mut calls_failed, mut up, mut last_contact) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut expiry = Vec::new();
        let mut retries = Vec::new();
        for code in context.peers_with_queues() {
            let peer = code.to_string();
            for (precedence, count, first) in context.store.outbox_summary(code).unwrap_or_default() {
                let label = labels(&[("peer", &peer), ("precedence", precedence.short_name())]);
                let created = first.and_then(|f| view(&f).envelope).and_then(|e| e.created_at);
                let age = created
                    .map(|c| crate::domain::timestamp::to_system(&c))
                    .map_or(0.0, |created| now.duration_since(created).unwrap_or_default().as_secs_f64());
                depth.push((label.clone(), count as f64));
                oldest.push((label, age));
            }
            let status = context.peers.get(code);
            let peer_label = labels(&[("peer", &peer)]);
            delivered.push((peer_label.clone(), status.delivered));
            calls_failed.push((peer_label.clone(), status.failed_calls));
            retries.push((peer_label.clone(), status.retries));
            up.push((
                peer_label.clone(),
                if status.connection == ConnectionState::Connected { 1.0 } else { 0.0 },
            ));
            last_contact.push((peer_label, status.last_contact_at.map_or(0.0, seconds_since_epoch)));
            if let Some(at) = status.certificate_expires_at {
                expiry.push((labels(&[("certificate", &format!("peer {peer}"))]), seconds_since_epoch(at)));
            }
        }
        let tls = &context.config.tls;
        for (name, path) in [("own", &tls.cert), ("network_ca", &tls.network_ca), ("local_ca", &tls.local_ca)]
        {
            let at = crate::trust::tls::load_certs(path).ok().and_then(|certs| {
                certs.first().and_then(|c| crate::domain::identity::cert_not_after(c).ok())
            });
            if let Some(at) = at {
                expiry.push((labels(&[("certificate", name)]), seconds_since_epoch(at)));
            }
        }
        let overdue = context.store.overdue(now).unwrap_or_default();
        let count = |direction| {
            overdue
                .iter()
                .map(|m| view_at(m, now))
                .filter(|m| m.overdue && m.direction() == direction)
                .count() as f64
        };
        let overdue_counts = vec![
            (labels(&[("side", "receiver")]), count(Direction::Inbound)),
            (labels(&[("side", "sender")]), count(Direction::Outbound)),
        ];
        let (unacknowledged, unacknowledged_age) = unacknowledged_inbound(context, now);
        let week = crate::domain::timestamp::plus(now, Duration::from_secs(7 * 86_400));
        let expiring = context
            .store
            .preservations(Some(week))
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                m.message.as_ref()?.preserved_until.as_ref().map(crate::domain::timestamp::to_system)
            })
            .filter(|until| *until > now)
            .count() as f64;
        let store_size = context.store.size_on_disk().unwrap_or(0) as f64;
        let flushes = vec![(Vec::new(), context.store.flushes())];
        let keys_written = vec![(Vec::new(), context.store.keys_written())];

        gauge(
            &mut encoder,
            "queue_depth",
            "Messages waiting to be sent, by peer and precedence",
            None,
            &depth,
        )?;
        gauge(
            &mut encoder,
            "queue_oldest_age_seconds",
            "Age of the oldest waiting message, by peer and precedence",
            None,
            &oldest,
        )?;
        counter(
            &mut encoder,
            "envelopes_delivered",
            "Envelopes receipted by the peer since start",
            &delivered,
        )?;
        counter(
            &mut encoder,
            "delivery_failures",
            "Failed Deliver calls since start (each is retried)",
            &calls_failed,
        )?;
        counter(&mut encoder, "retries", "Envelopes scheduled for another attempt since start", &retries)?;
        gauge(&mut encoder, "peer_up", "1 when the last call to the peer succeeded", None, &up)?;
        gauge(
            &mut encoder,
            "peer_last_contact_timestamp_seconds",
            "When a call to the peer last succeeded",
            None,
            &last_contact,
        )?;
        gauge(
            &mut encoder,
            "overdue_requests",
            "Requests past their acknowledgement deadline, not acknowledged",
            None,
            &overdue_counts,
        )?;
        gauge(
            &mut encoder,
            "preservations_expiring_7d",
            "Preservations (sent and received) whose data is preserved until a date within the next 7 days: file the mutual legal assistance request or an extension",
            None,
            &[(Vec::new(), expiring)],
        )?;
        let stale_crls = crate::trust::tls::stale_crls(tls);
        gauge(
            &mut encoder,
            "crl_stale",
            "1 while a revocation list in use is past its nextUpdate (page: publish a new one; [tls] crl_stale says whether handshakes are refused meanwhile)",
            None,
            &[(Vec::new(), if stale_crls.is_empty() { 0.0 } else { 1.0 })],
        )?;
        gauge(
            &mut encoder,
            "certificate_expiry_timestamp_seconds",
            "When each certificate expires",
            None,
            &expiry,
        )?;
        gauge(
            &mut encoder,
            "unacknowledged_requests",
            "Requests received from peers that no one here has acknowledged yet, by precedence",
            None,
            &unacknowledged,
        )?;
        gauge(
            &mut encoder,
            "unacknowledged_oldest_age_seconds",
            "Age of the oldest request received from a peer and not acknowledged here, by precedence (0 when none)",
            None,
            &unacknowledged_age,
        )?;
        let writable = if self.1 { 1.0 } else { 0.0 };
        gauge(
            &mut encoder,
            "store_writable",
            "1 while the store accepts writes; 0 after a write or sync failed (disk full, I/O error) until it is reopened",
            None,
            &[(Vec::new(), writable)],
        )?;
        gauge(
            &mut encoder,
            "build_info",
            "Always 1; the version of the software serving",
            None,
            &[(labels(&[("version", env!("CARGO_PKG_VERSION"))]), 1.0)],
        )?;
        let crl_next_updates: Vec<(Labels, f64)> =
            [("peer", tls.peer_crl.as_deref()), ("client", tls.client_crl.as_deref())]
                .into_iter()
                .filter_map(|(name, path)| {
                    let at = crate::trust::tls::crl_next_update(path?)?;
                    Some((labels(&[("crl", name)]), seconds_since_epoch(at)))
                })
                .collect();
        gauge(
            &mut encoder,
            "crl_next_update_timestamp_seconds",
            "The nextUpdate of each revocation list in use (the earliest, when a file holds several): publish a new one before",
            None,
            &crl_next_updates,
        )?;
        gauge(
            &mut encoder,
            "store_size_bytes",
            "Bytes the sled store takes on disk",
            None,
            &[(Vec::new(), store_size)],
        )?;
        counter(
            &mut encoder,
            "store_flushes",
            "Syncs of the store's write-ahead log since start; shared by concurrent writes",
            &flushes,
        )?;
        counter(
            &mut encoder,
            "store_keys_written",
            "Database keys set or removed by the store's writes since start",
            &keys_written,
        )?;
        encode_directory_versions(&mut encoder, context)?;
        Ok(())
    }
}

/// The samples of one gauge family.
type Samples = Vec<(Labels, f64)>;

/// Inbound requests waiting for a person here to acknowledge them: how many, and the age of the
/// oldest, for every precedence (zero when none, so an alert's series always exists).
fn unacknowledged_inbound(context: &NodeContext, now: SystemTime) -> (Samples, Samples) {
    use crate::proto::Precedence;
    // Every request awaiting acknowledgement has an entry in the deadline index, and no
    // deadline lies a century ahead: "overdue by then" reads all of them.
    let horizon = now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)).unwrap_or(now);
    let waiting = context.store.overdue(horizon).unwrap_or_default();
    let precedences = [Precedence::Flash, Precedence::Immediate, Precedence::Priority, Precedence::Routine];
    let mut counts = [0usize; 4];
    let mut oldest = [0f64; 4];
    for stored in &waiting {
        let message = view(stored);
        if message.direction() != Direction::Inbound || !crate::store::awaits_acknowledgement(&message) {
            continue;
        }
        let Some(envelope) = message.envelope.as_ref() else { continue };
        let Some(slot) = precedences.iter().position(|p| *p == envelope.precedence()) else { continue };
        counts[slot] += 1;
        let age = envelope
            .created_at
            .as_ref()
            .map(crate::domain::timestamp::to_system)
            .map_or(0.0, |created| now.duration_since(created).unwrap_or_default().as_secs_f64());
        oldest[slot] = oldest[slot].max(age);
    }
    let label = |p: Precedence| labels(&[("precedence", p.short_name())]);
    (
        precedences.iter().zip(counts).map(|(p, n)| (label(*p), n as f64)).collect(),
        precedences.iter().zip(oldest).map(|(p, age)| (label(*p), age)).collect(),
    )
}

/// The process figures (Linux, from `/proc/self`; nothing elsewhere), under the names every
/// Prometheus client library uses: `process_resident_memory_bytes`, `process_open_fds`,
/// `process_max_fds`.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let resident_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(kib) = resident_kib {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                &[(Vec::new(), (kib * 1024) as f64)],
            )?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle being read is one of the entries; it is not the node's.
            let open = entries.count().saturating_sub(1);
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                None,
                &[(Vec::new(), open as f64)],
            )?;
        }
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let max_open = limits
            .lines()
            .find_map(|line| line.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(max) = max_open {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors (the soft limit)",
                None,
                &[(Vec::new(), max as f64)],
            )?;
        }
        Ok(())
    }
}

/// The directory version in use here (`node=""`) and each peer's from its last `Hello`, so an
/// alert can find a peer on an older directory.
fn encode_directory_versions(
    encoder: &mut DescriptorEncoder,
    context: &NodeContext,
) -> Result<(), std::fmt::Error> {
    let mut versions = vec![(labels(&[("peer", "")]), context.directory.current().version as f64)];
    for member in context.peers_listed() {
        let version = context.peers.get(member.code).directory_version;
        if version > 0 {
            versions.push((labels(&[("peer", member.code.as_str())]), version as f64));
        }
    }
    gauge(
        encoder,
        "directory_version",
        "Version of the signed directory in use: this node's (peer=\"\") and each peer's from Hello",
        None,
        &versions,
    )
}
