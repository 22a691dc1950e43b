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
    until: Option<SystemTime>,
    case_reference: String,
    /// The words of `text`, lowercased.
    words: Vec<String>,
    /// Where this page starts.
    cursor: Cursor,
}

/// What a listing's filter searches for besides the states, precedences and peer.
#[derive(Debug, Clone, Copy, Default)]
struct Search<'a> {
    since: Option<&'a Timestamp>,
    until: Option<&'a Timestamp>,
    case_reference: &'a str,
    text: &'a str,
    page_token: &'a str,
}

/// Where a page of a listing starts. A listing is two parts: the overdue messages (oldest
/// deadline first, by the store's overdue index), then the others (newest first, by the
/// listing's keys); a cursor is the last key seen in one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Cursor {
    /// The first page.
    #[default]
    Start,
    /// In the overdue part, after this overdue-index key.
    Overdue(Vec<u8>),
    /// In the other messages, below this listing key (from the newest when `None`).
    Rest(Option<Vec<u8>>),
}

/// The first byte of every page token: its format, so that a later format can be told apart.
const TOKEN_FORMAT: u8 = 1;

impl Cursor {
    /// The opaque page token (URL-safe base64, so it fits a link's query string).
    fn token(&self) -> String {
        use base64::Engine as _;
        let (part, key): (u8, &[u8]) = match self {
            Cursor::Start => return String::new(),
            Cursor::Overdue(key) => (b'a', key),
            Cursor::Rest(key) => (b'r', key.as_deref().unwrap_or_default()),
        };
        let mut bytes = vec![TOKEN_FORMAT, part];
        bytes.extend_from_slice(key);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor a `page_token` names, or a refusal naming `page_token`.
    fn from_token(token: &str, listing_prefix: u8) -> Result<Self, FieldError> {
        use base64::Engine as _;
        if token.is_empty() {
            return Ok(Cursor::Start);
        }
        let refused = || {
            FieldError::new(
                "page_token",
                "not a page token of this listing: pass a next_page_token from a response, unchanged",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
        match bytes.as_slice() {
            [TOKEN_FORMAT, b'a', key @ ..] if key.len() == 25 && key[0] == b'a' => {
                Ok(Cursor::Overdue(key.to_vec()))
            }
            [TOKEN_FORMAT, b'r'] => Ok(Cursor::Rest(None)),
            [TOKEN_FORMAT, b'r', key @ ..] if key.len() == 9 && key[0] == listing_prefix => {
                Ok(Cursor::Rest(Some(key.to_vec())))
            }
            _ => Err(refused()),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The messages of this page.
    pub messages: Vec<Message>,
    /// The token of the next page; empty when this is the last.
    pub next_page_token: String,
}

impl ListFilter {
    fn new(
        listing: Listing,
        states: &[i32],
        precedences: &[i32],
        overdue_only: bool,
        peer: &str,
        search: Search<'_>,
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
        for (field, time) in [("since", search.since), ("until", search.until)] {
            if let Some(time) = time {
                crate::domain::validation::check_timestamp(field, time)?;
            }
        }
        if search.case_reference.chars().count() > MAX_SEARCH_CHARS {
            return Err(FieldError::over_limit(
                "case_reference",
                format!("at most {MAX_SEARCH_CHARS} characters"),
            ));
        }
        if search.text.chars().count() > MAX_SEARCH_CHARS {
            return Err(FieldError::over_limit("text", format!("at most {MAX_SEARCH_CHARS} characters")));
        }
        Ok(Self {
            states,
            precedences,
            overdue_only,
            peer,
            since: search.since.map(timestamp::to_system),
            until: search.until.map(timestamp::to_system),
            case_reference: search.case_reference.trim().to_owned(),
            words: search.text.split_whitespace().map(str::to_lowercase).collect(),
            cursor: Cursor::from_token(search.page_token.trim(), listing.key_prefix())?,
        })
    }

    /// The filter of a `ListInbox` call.
    pub fn inbox(request: &ListInboxRequest) -> Result<Self, FieldError> {
        Self::new(
            Listing::Inbox,
            &request.states,
            &request.precedences,
            request.overdue_only,
            &request.peer,
            Search {
                since: request.since.as_ref(),
                until: request.until.as_ref(),
                case_reference: &request.case_reference,
                text: &request.text,
                page_token: &request.page_token,
            },
        )
    }

    /// The filter of a `ListOutbox` call.
    pub fn outbox(request: &ListOutboxRequest) -> Result<Self, FieldError> {
        Self::new(
            Listing::Outbox,
            &request.states,
            &request.precedences,
            request.overdue_only,
            &request.peer,
            Search {
                since: request.since.as_ref(),
                until: request.until.as_ref(),
                case_reference: &request.case_reference,
                text: &request.text,
                page_token: &request.page_token,
            },
        )
    }

    fn matches(&self, message: &Message) -> bool {
        // Borrowed, not cloned: this runs for every message a listing scans.
        let no_envelope = crate::proto::Envelope::default();
        let envelope = message.envelope.as_ref().unwrap_or(&no_envelope);
        (self.states.is_empty() || self.states.contains(&message.state()))
            && (self.precedences.is_empty() || self.precedences.contains(&envelope.precedence()))
            && (!self.overdue_only || message.overdue)
            && self.peer.is_none_or(|p| peer_of(message) == p.as_str())
            && self.since.is_none_or(|since| {
                envelope.created_at.as_ref().is_some_and(|created| timestamp::to_system(created) >= since)
            })
            && self.until.is_none_or(|until| {
                envelope.created_at.as_ref().is_some_and(|created| timestamp::to_system(created) < until)
            })
            && (self.case_reference.is_empty()
                || envelope.case_reference.trim().eq_ignore_ascii_case(&self.case_reference))
            && (self.words.is_empty() || {
                let subject = envelope.subject.to_lowercase();
                let body = envelope.body.to_lowercase();
                self.words.iter().all(|word| subject.contains(word.as_str()) || body.contains(word.as_str()))
            })
    }
}

/// Longest `case_reference` or `text` a search takes, in characters.
const MAX_SEARCH_CHARS: usize = 256;

/// One page of a listing: overdue messages first (oldest deadline first), then the rest newest
/// first, from where `filter`'s page token says, at most `limit`.
pub fn list(
    context: &NodeContext,
    listing: Listing,
    filter: &ListFilter,
    caller: &Caller,
    limit: usize,
) -> Result<Page, StoreError> {
    let direction = match listing {
        Listing::Inbox => Direction::Inbound,
        Listing::Outbox => Direction::Outbound,
    };
    let now = context.clock.now();
    let mut page = Page::default();
    let rest_from = match &filter.cursor {
        Cursor::Rest(key) => key.clone(),
        Cursor::Start | Cursor::Overdue(_) => {
            let after = match &filter.cursor {
                Cursor::Overdue(key) => Some(key.as_slice()),
                _ => None,
            };
            // One more than the page, to know whether a next page exists.
            let overdue = context.store.overdue_page(now, after, limit + 1, |stored| {
                let message = view_at(stored, now);
                caller.may_see(&stored.submitted_by)
                    && message.direction() == direction
                    && message.overdue
                    && filter.matches(&message)
            })?;
            let mut last_key: Option<Vec<u8>> = None;
            for (key, stored) in overdue {
                if page.messages.len() == limit {
                    page.next_page_token = last_key.map_or(Cursor::Start, Cursor::Overdue).token();
                    return Ok(page);
                }
                page.messages.push(view_at(&stored, now));
                last_key = Some(key);
            }
            None
        }
    };
    if filter.overdue_only {
        return Ok(page);
    }
    let remaining = limit - page.messages.len();
    let rest = context.store.list_page(listing, rest_from.as_deref(), remaining + 1, |stored| {
        let message = view_at(stored, now);
        // Overdue messages were in the first part.
        caller.may_see(&stored.submitted_by) && !message.overdue && filter.matches(&message)
    })?;
    let mut last_key: Option<Vec<u8>> = None;
    for (key, stored) in rest {
        if page.messages.len() == limit {
            page.next_page_token = Cursor::Rest(last_key).token();
            return Ok(page);
        }
        page.messages.push(view_at(&stored, now));
        last_key = Some(key);
    }
    Ok(page)
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
        let info = peer_info(context, &entry);
        warn(format!("{}'s certificate", entry.code), info.certificate_expires_at.as_ref());
        response.peers.push(info);
    }
    response
}

/// One member as this node sees it: the directory's entry (who to call included) and the peer
/// board's status.
pub fn peer_info(context: &NodeContext, entry: &crate::config::DirectoryEntry) -> PeerInfo {
    let status = context.peers.get(entry.code);
    PeerInfo {
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
        languages: entry.languages.clone(),
        time_zone: entry.time_zone.clone(),
        phone: entry.phone.clone(),
        local_time: crate::domain::local_time::local_time_in(&entry.time_zone, SystemTime::now())
            .unwrap_or_default(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_belong_to_their_listing() {
        let inbox = Listing::Inbox.key_prefix();
        let outbox = Listing::Outbox.key_prefix();
        let mut listing_key = vec![inbox];
        listing_key.extend_from_slice(&42u64.to_be_bytes());
        let mut overdue_key = vec![b'a'];
        overdue_key.extend_from_slice(&[7; 24]);
        for cursor in
            [Cursor::Rest(None), Cursor::Rest(Some(listing_key.clone())), Cursor::Overdue(overdue_key)]
        {
            assert_eq!(Cursor::from_token(&cursor.token(), inbox), Ok(cursor));
        }
        assert_eq!(Cursor::from_token("", inbox), Ok(Cursor::Start));
        let inbox_token = Cursor::Rest(Some(listing_key)).token();
        assert_eq!(Cursor::from_token(&inbox_token, outbox).unwrap_err().field, "page_token");
        for garbage in ["%%%", "AAAA", "AQ", &inbox_token[..inbox_token.len() - 2]] {
            assert_eq!(Cursor::from_token(garbage, inbox).unwrap_err().field, "page_token", "{garbage}");
        }
    }
}
