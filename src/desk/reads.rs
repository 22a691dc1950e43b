//! Reading: one message with its replies, its proof, the inbox and outbox listings, the queues
//! and the peers. Every read that hands out message content is on the audit record (and
//! durable) before it is returned.

use uuid::Uuid;

use super::operator_view::{self, ListFilter, Page};
use super::{Desk, DeskError, list_limit};
use crate::domain::access::{Action, Caller};
use crate::domain::validation::FieldError;
use crate::proto::{
    GetProofRequest, GetProofResponse, GetRequest, GetResponse, ListInboxRequest, ListOutboxRequest,
    ListPeersResponse, ListPreservationsRequest, Message, PeerQueue,
};
use crate::runtime::context::NodeContext;
use crate::store::{Listing, view};
use crate::store_proto::StoredMessage;

impl Desk {
    /// One message and the replies to it that the caller may see.
    pub async fn get(&self, caller: &Caller, request: GetRequest) -> Result<GetResponse, DeskError> {
        let (id, stored) = self.visible_message(caller, &request.id)?;
        let replies = self.context.store.replies(id)?;
        let replies: Vec<Message> =
            replies.iter().filter(|r| caller.may_see(&r.submitted_by)).map(view).collect();
        let details = format!("replies: {}", replies.len());
        self.audit_read(caller, Action::Get, &id.to_string(), &details).await?;
        Ok(GetResponse { message: Some(view(&stored)), replies })
    }

    /// One page of the received messages the caller may see, as the request filters and searches
    /// them (overdue first).
    pub async fn list_inbox(&self, caller: &Caller, request: ListInboxRequest) -> Result<Page, DeskError> {
        self.check_filters(&request.states, &request.precedences, &request.text)?;
        let filter = ListFilter::inbox(&request)?;
        let limit = list_limit(request.limit);
        let scanner = caller.clone();
        let page = self
            .off_the_workers(move |context| {
                operator_view::list(context, Listing::Inbox, &filter, &scanner, limit)
            })
            .await?;
        self.audit_read(caller, Action::ListInbox, "", &format!("{} messages", page.messages.len())).await?;
        Ok(page)
    }

    /// One page of the sent messages the caller may see, as the request filters and searches them
    /// (overdue first).
    pub async fn list_outbox(&self, caller: &Caller, request: ListOutboxRequest) -> Result<Page, DeskError> {
        self.check_filters(&request.states, &request.precedences, &request.text)?;
        let filter = ListFilter::outbox(&request)?;
        let limit = list_limit(request.limit);
        let scanner = caller.clone();
        let page = self
            .off_the_workers(move |context| {
                operator_view::list(context, Listing::Outbox, &filter, &scanner, limit)
            })
            .await?;
        self.audit_read(caller, Action::ListOutbox, "", &format!("{} messages", page.messages.len())).await?;
        Ok(page)
    }

    /// Refuses a list filter (or search text) with more values (words) than
    /// `limits.max_filter_values`, naming it.
    fn check_filters(&self, states: &[i32], precedences: &[i32], text: &str) -> Result<(), DeskError> {
        let limits = &self.context.config.limits;
        crate::domain::validation::check_filter("states", states.len(), limits)?;
        crate::domain::validation::check_filter("precedences", precedences.len(), limits)?;
        crate::domain::validation::check_filter("text", text.split_whitespace().count(), limits)?;
        Ok(())
    }

    /// The preservation clock: requests the caller may see whose data is preserved until a date,
    /// soonest first; with `within`, only those that lapse by then.
    pub async fn list_preservations(
        &self,
        caller: &Caller,
        request: ListPreservationsRequest,
    ) -> Result<Vec<Message>, DeskError> {
        let until = match request.within {
            None => None,
            Some(within) => {
                let within = std::time::Duration::try_from(within)
                    .map_err(|_| FieldError::new("within", "must be a positive duration"))?;
                Some(crate::domain::timestamp::plus(self.context.clock.now(), within))
            }
        };
        let messages: Vec<Message> = self
            .context
            .store
            .preservations(until)?
            .iter()
            .filter(|stored| caller.may_see(&stored.submitted_by))
            .map(view)
            .collect();
        let details = format!("{} preservations", messages.len());
        self.audit_read(caller, Action::ListPreservations, "", &details).await?;
        Ok(messages)
    }

    /// What waits for each peer, by precedence.
    pub async fn get_queue(&self, caller: &Caller) -> Result<Vec<PeerQueue>, DeskError> {
        let peers = self.off_the_workers(operator_view::queue).await?;
        self.audit_read(caller, Action::GetQueue, "", &format!("{} peers", peers.len())).await?;
        Ok(peers)
    }

    /// The directory's peers with their reachability and certificates. Not audited: it shows no
    /// message content.
    pub fn list_peers(&self, _caller: &Caller) -> ListPeersResponse {
        operator_view::peers(&self.context)
    }

    /// One member of the directory as this node sees it (who to call about a message), without
    /// the certificate files the whole peers view reads; `None` when `code` is not a member.
    pub fn peer(&self, _caller: &Caller, code: &str) -> Option<crate::proto::PeerInfo> {
        let entry = self.context.peer(code.parse().ok()?)?;
        Some(operator_view::peer_info(&self.context, &entry))
    }

    /// What proves a message the caller may see: the canonical envelope, its signature and
    /// certificate, the receipt and the network CAs.
    pub async fn get_proof(
        &self,
        caller: &Caller,
        request: GetProofRequest,
    ) -> Result<GetProofResponse, DeskError> {
        let (id, stored) = self.visible_message(caller, &request.id)?;
        let proof = proof_of(&self.context, id, &stored)?;
        // Recorded as a `Get` (what it reads), told apart by its details.
        self.audit_read(caller, Action::Get, &id.to_string(), "proof (signatures and receipt)").await?;
        Ok(proof)
    }
}

/// What proves a stored message: the canonical envelope, its signature and certificate, the
/// receipt and the network CA.
fn proof_of(context: &NodeContext, id: Uuid, stored: &StoredMessage) -> Result<GetProofResponse, DeskError> {
    let message = view(stored);
    let envelope = message.envelope.clone().unwrap_or_default();
    let signer = context.signer.current();
    if envelope.origin_signature.is_empty() || stored.origin_certificate.is_empty() {
        return Err(DeskError::WrongMessage(format!(
            "{id} was stored before this node signed envelopes: there is no signature to prove it"
        )));
    }
    // Content removed (a closed case): the bytes that were signed are gone; the digest is kept.
    let removed = message.content_removed_at.is_some();
    Ok(GetProofResponse {
        network: context.config.network.clone(),
        envelope_canonical: if removed {
            Vec::new()
        } else {
            crate::trust::signing::canonical_envelope(&envelope)
        },
        envelope_sha256: if removed { message.envelope_sha256.clone() } else { Vec::new() },
        envelope_kept: removed.then(|| crate::proto::Envelope {
            origin_signature: Vec::new(),
            origin_batch: None,
            ..envelope.clone()
        }),
        content_removed_at: message.content_removed_at,
        content_removed: message.content_removed.clone(),
        origin_signature: envelope.origin_signature.clone(),
        origin_batch: envelope.origin_batch.clone(),
        origin_certificate: stored.origin_certificate.clone(),
        receipt: stored.receipt.clone(),
        network_ca_certificate: signer.network_ca_of(&stored.origin_certificate).to_vec(),
        receiver_network_ca_certificate: stored
            .receipt
            .as_ref()
            .map(|r| signer.network_ca_of(&r.receiver_certificate).to_vec())
            .unwrap_or_default(),
        direction: message.direction,
    })
}
