//! The metrics listener: Prometheus text at `/metrics`, `/healthz` (the process is alive) and
//! `/readyz` (store open, listeners serving, not shutting down). Plain HTTP, loopback by default.
//!
//! Most figures are read at scrape time from the store and the peer board, so they cannot drift
//! from what the desk API shows; only what happens in passing (envelopes received, acknowledgement
//! lead time) is counted as it happens, in [`Metrics`].

use std::sync::Arc;
use std::time::SystemTime;

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
    stop: CancellationToken,
) -> std::io::Result<()> {
    let state = (context, stop.clone());
    let router = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await
}

type AppState = (Arc<NodeContext>, CancellationToken);

async fn ready(State((context, stop)): State<AppState>) -> impl IntoResponse {
    if stop.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".to_owned());
    }
    if let Some(why) = context.store.broken() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store cannot write: {why}\n"));
    }
    match context.store.size_on_disk() {
        Ok(_) => (StatusCode::OK, "ready\n".to_owned()),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("store: {error}\n")),
    }
}

async fn scrape(State((context, _)): State<AppState>) -> impl IntoResponse {
    let mut registry = Registry::with_prefix("hanoi247");
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
    registry.register_collector(Box::new(NodeCollector(Arc::clone(&context))));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "encoding failed\n".into(),
        ),
    }
}

/// The figures read at scrape time.
struct NodeCollector(Arc<NodeContext>);

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
