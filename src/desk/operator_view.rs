//! What operators look at: the per-peer queue, the peers, and the filters of the inbox and
//! outbox listings (overdue first). Read-only over the store and the peer board.

use std::time::{Duration, SystemTime};

use prost_types::Timestamp;

use crate::domain::access::Caller;
use crate::domain::identity::NodeCode;
use crate::domain::timestamp;
use crate::domain::validation::FieldError;
use crate::proto::{
    Direction, ListInboxRequest, ListOutboxRequest, ListPeersResponse, Message, MessageState, PeerInfo,
    PeerQueue, Precedence,
};
use crate::runtime::context::NodeContext;
use crate::store::{Listing, StoreError, peer_of, view, view_at};

/// Certificates expiring within this are warned about.
pub const CERTIFICATE_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which messages a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    states: Vec<MessageState>,
    precedences: Vec<Precedence>,
    overdue_only: bool,
    peer: Option<NodeCode>,
    since: Option<SystemTime>,
}

impl ListFilter {
    fn new(
        states: &[i32],
        precedences: &[i32],
        overdue_only: bool,
        peer: &str,
        since: Option<&Timestamp>,
    ) -> Result<Self, FieldError> {
        let states = states
            .iter()
            .map(|s| {
                MessageState::try_from(*s)
                    .map_err(|_| FieldError::new("states", format!("{s} is not a state")))
            })
            .collect::<Result<_, _>>()?;
        let precedences = precedences
            .iter()
            .map(|p| {
                Precedence::try_from(*p)
                    .map_err(|_| FieldError::new("precedences", format!("{p} is not a precedence")))
            })
            .collect::<Result<_, _>>()?;
        let peer = match peer {
            "" => None,
            code => Some(code.parse().map_err(|e| FieldError::new("peer", format!("{e}")))?),
        };
        if let Some(since) = since {
            crate::domain::validation::check_timestamp("since", since)?;
        }
        Ok(Self { states, precedences, overdue_only, peer, since: since.map(timestamp::to_system) })
    }

    /// The filter of a `ListInbox` call.
    pub fn inbox(request: &ListInboxRequest) -> Result<Self, FieldError> {
        Self::new(
            &request.states,
            &request.precedences,
            request.overdue_only,
            &request.peer,
            request.since.as_ref(),
        )
    }

    /// The filter of a `ListOutbox` call.
    pub fn outbox(request: &ListOutboxRequest) -> Result<Self, FieldError> {
        Self::new(
            &request.states,
            &request.precedences,
            request.overdue_only,
            &request.peer,
            request.since.as_ref(),
        )
    }

    fn matches(&self, message: &Message) -> bool {
        let envelope = message.envelope.clone().unwrap_or_default();
        (self.states.is_empty() || self.states.contains(&message.state()))
            && (self.precedences.is_empty() || self.precedences.contains(&envelope.precedence()))
            && (!self.overdue_only || message.overdue)
            && self.peer.is_none_or(|p| peer_of(message) == p.as_str())
            && self.since.is_none_or(|since| {
                envelope.created_at.as_ref().is_some_and(|created| timestamp::to_system(created) >= since)
            })
    }
}

/// A listing: overdue messages first (oldest deadline first), then the rest newest first.
pub fn list(
    context: &NodeContext,
    listing: Listing,
    filter: &ListFilter,
    caller: &Caller,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let direction = match listing {
        Listing::Inbox => Direction::Inbound,
        Listing::Outbox => Direction::Outbound,
    };
    let now = context.clock.now();
    let mut shown: Vec<Message> = context
        .store
        .overdue(now)?
        .iter()
        .filter(|stored| caller.may_see(&stored.submitted_by))
        .map(|stored| view_at(stored, now))
        .filter(|m| m.direction() == direction && m.overdue && filter.matches(m))
        .take(limit)
        .collect();
    let overdue_ids: Vec<String> =
        shown.iter().filter_map(|m| m.envelope.as_ref().map(|e| e.id.clone())).collect();
    if !filter.overdue_only {
        let rest = context.store.list(listing, limit - shown.len(), |stored| {
            let message = view_at(stored, now);
            let id = message.envelope.as_ref().map(|e| e.id.as_str()).unwrap_or_default();
            caller.may_see(&stored.submitted_by)
                && filter.matches(&message)
                && !overdue_ids.iter().any(|o| o == id)
        })?;
        shown.extend(rest.iter().map(|stored| view_at(stored, now)));
    }
    Ok(shown)
}

/// The queue view: one entry per directory peer.
pub fn queue(context: &NodeContext) -> Result<Vec<PeerQueue>, StoreError> {
    let mut peers = Vec::new();
    for code in context.peers_with_queues() {
        let status = context.peers.get(code);
        let mut queue = PeerQueue {
            peer: code.to_string(),
            failures: status.failures,
            last_error: status.last_error,
            connection: status.connection as i32,
            next_attempt_at: status.next_attempt_at.map(timestamp::from_system),
            last_error_at: status.last_error_at.map(timestamp::from_system),
            last_success_at: status.last_contact_at.map(timestamp::from_system),
            ..Default::default()
        };
        for (precedence, count, first) in context.store.outbox_summary(code)? {
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            match precedence {
                Precedence::Flash => queue.flash = count,
                Precedence::Immediate => queue.immediate = count,
                Precedence::Priority => queue.priority = count,
                Precedence::Routine | Precedence::Unspecified => queue.routine = count,
            }
            let created = first
                .and_then(|f| view(&f).envelope)
                .and_then(|e| e.created_at)
                .map(|t| timestamp::to_system(&t));
            let oldest = queue.oldest_created_at.as_ref().map(timestamp::to_system);
            if let Some(created) = created
                && oldest.is_none_or(|oldest| created < oldest)
            {
                queue.oldest_created_at = Some(timestamp::from_system(created));
            }
        }
        peers.push(queue);
    }
    Ok(peers)
}

/// The peers view, with certificate expiry warnings.
pub fn peers(context: &NodeContext) -> ListPeersResponse {
    let tls = &context.config.tls;
    let expiry = |path: &std::path::Path| {
        crate::trust::tls::load_certs(path)
            .ok()
            .and_then(|certs| certs.first().and_then(|c| crate::domain::identity::cert_not_after(c).ok()))
    };
    let mut response = ListPeersResponse {
        own_certificate_expires_at: expiry(&tls.cert).map(timestamp::from_system),
        network_ca_expires_at: expiry(&tls.network_ca).map(timestamp::from_system),
        local_ca_expires_at: expiry(&tls.local_ca).map(timestamp::from_system),
        ..Default::default()
    };
    let mut warn = |what: String, at: Option<&Timestamp>| {
        if let Some(warning) = at.and_then(|at| expiry_warning(&what, timestamp::to_system(at))) {
            response.warnings.push(warning);
        }
    };
    warn("this node's certificate".into(), response.own_certificate_expires_at.clone().as_ref());
    warn("the network CA".into(), response.network_ca_expires_at.clone().as_ref());
    warn("the local CA".into(), response.local_ca_expires_at.clone().as_ref());
    response.directory_version = context.directory.current().version;
    for entry in context.peers_listed() {
        let status = context.peers.get(entry.code);
        let info = PeerInfo {
            peer: entry.code.to_string(),
            name: entry.name.clone(),
            endpoint: entry.endpoint.clone(),
            connection: status.connection as i32,
            last_contact_at: status.last_contact_at.map(timestamp::from_system),
            round_trip_ms: status.round_trip.map_or(0.0, |rtt| rtt.as_secs_f64() * 1000.0),
            software_version: status.software_version,
            certificate_expires_at: status.certificate_expires_at.map(timestamp::from_system),
            last_error: status.last_error,
            directory_version: status.directory_version,
            last_error_at: status.last_error_at.map(timestamp::from_system),
        };
        warn(format!("{}'s certificate", entry.code), info.certificate_expires_at.as_ref());
        response.peers.push(info);
    }
    response
}

/// "…expires in 12 days" / "…expired", or nothing when it is further away than the warning period.
pub fn expiry_warning(what: &str, expires_at: SystemTime) -> Option<String> {
    let now = SystemTime::now();
    match expires_at.duration_since(now) {
        Err(_) => Some(format!("{what} expired at {}", humantime::format_rfc3339_seconds(expires_at))),
        Ok(left) if left <= CERTIFICATE_WARNING => Some(format!(
            "{what} expires in {} days, at {}",
            left.as_secs() / 86_400,
            humantime::format_rfc3339_seconds(expires_at)
        )),
        Ok(_) => None,
    }
}
