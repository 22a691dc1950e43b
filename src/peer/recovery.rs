//! Recovery from peers (issue 19): every envelope lives on the two nodes that exchanged it, each
//! with the other's signature, so a node rebuilt from an older backup gets back from its peers
//! what it exchanged since.
//!
//! The answering side ([`answer`], behind `PeerService.Recover`): the caller is the node of its
//! mutual-TLS certificate, and only that; a request naming another node is refused
//! (PERMISSION_DENIED). It returns, in the order it stored them, the envelopes it received from
//! the caller and those it sent the caller, each with the origin's certificate and the signed
//! receipt it holds (an envelope still queued here has no receipt: delivery sends it anyway),
//! whose exchange completed (the receipt's `received_at`) at or after the point named, in
//! batches of [`BATCH`] (read in one scan of the store, which a rare recovery can afford). The
//! request carries the caller's signed audit head: its statement that it restarted from a
//! backup, which the answering node audits, counts and witnesses (`witness::accept_restart`), so
//! the shorter log is an announced restart, not a rollback.
//!
//! The recovering side ([`recover_from`]) runs in the delivery task of each peer, before it
//! sends anything more, while the store says a recovery from that peer is pending: marked by
//! `restore --recover-from-peers` for the node's start, or by the desk's `RecoverFromPeers` on a
//! running node (which wakes the tasks); a peer that does not answer is asked again with the
//! task's backoff. Every envelope is checked as `Deliver` checks one (the same validation, the
//! origin signature with the origin's certificate from the network CA naming the origin, the
//! receipt signature with the receiver's), and the first one that does not check out stops the
//! recovery from that peer, named with its id and field, with nothing of its batch stored.
//! Records are rebuilt idempotently: an envelope from the peer is stored as `Deliver` stores it
//! (RECEIVED, and a reply moves the request it answers); one of this node's own comes back
//! DELIVERED with the peer's receipt, and an acknowledgement, answer or cancellation of its own
//! moves the request it concerns; a message already held is left as it is, except one still
//! QUEUED (or WAITING_RETRY) that the peer holds a receipt for, which becomes DELIVERED instead
//! of being sent again. Running it again changes nothing.
//!
//! What cannot come back from peers (`restore` lists it): what this node sent that no peer
//! stored (still queued when the machine was lost), who submitted its own requests after the
//! backup (`submitted_by`: an agency no longer sees those), requests cancelled after the backup
//! before they were sent (queued again), local audit records and events since the backup, and
//! the timelines' intermediate entries (a recovered message has its first state and the state it
//! reached). The audit log records the recovery, per peer (`RECOVERED_FROM_PEER`).

use std::sync::Arc;

use prost_types::Timestamp;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::domain::identity::{Identity, NodeCode};
use crate::domain::lifecycle::{self, Happening};
use crate::domain::timestamp;
use crate::domain::validation::FieldError;
use crate::peer::receive::{BatchSigning, PeerError, check_parent, receive};
use crate::proto::peer_service_client::PeerServiceClient;
use crate::proto::{
    Direction, Envelope, EnvelopeKind, Message, MessageState, Receipt, RecoverRequest, RecoverResponse,
    RecoveredEnvelope,
};
use crate::runtime::context::NodeContext;
use crate::store::{RecoveryPending, StoreError, view};
use crate::store_proto::StoredMessage;

/// Envelopes per `RecoverResponse`.
pub const BATCH: usize = 100;

/// Why a recovery from one peer stopped. Whatever was stored before stays (it was checked).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The peer did not answer, or refused the call.
    #[error("{peer} did not answer the recovery: {status}")]
    Call {
        /// The peer.
        peer: NodeCode,
        /// What the call ended with.
        status: String,
    },
    /// An envelope of the answer does not check out: forged, altered or not this node's.
    #[error("recovery answer from {peer}: envelope {envelope} refused: {reason}")]
    Refused {
        /// The peer.
        peer: NodeCode,
        /// The envelope's id, as the answer gave it.
        envelope: String,
        /// What is wrong, naming the field.
        reason: FieldError,
    },
    /// This node's store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Storing a peer's envelope failed as `Deliver`'s would.
    #[error(transparent)]
    Receive(#[from] PeerError),
}

/// What a recovery from one peer brought back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Envelopes the peer returned.
    pub returned: usize,
    /// Envelopes stored anew.
    pub stored: usize,
    /// Messages already held that became DELIVERED with the peer's receipt.
    pub delivered: usize,
    /// Envelopes already held as they are.
    pub held: usize,
}

/// The answering side's `Recover` calls, one at a time per caller: every answer scans the whole
/// store, so a peer calling in a loop costs at most one scan at a time (a second call while one
/// is under way is RESOURCE_EXHAUSTED; the recovering node retries).
pub struct RecoveryAnswers {
    context: Arc<NodeContext>,
    /// Peers whose `Recover` is being answered.
    answering: std::sync::Mutex<std::collections::HashSet<NodeCode>>,
}

impl RecoveryAnswers {
    /// No answer under way.
    pub fn new(context: Arc<NodeContext>) -> Self {
        Self { context, answering: Default::default() }
    }

    /// [`answer`]s `caller`'s `Recover`, unless one of its calls is being answered already.
    pub async fn answer(
        &self,
        caller: NodeCode,
        certificate: &[u8],
        request: &RecoverRequest,
    ) -> Result<Vec<RecoverResponse>, PeerError> {
        /// Takes `caller` off the set when the answer ends, also when its call is dropped.
        struct Answering<'a>(&'a std::sync::Mutex<std::collections::HashSet<NodeCode>>, NodeCode);
        impl Drop for Answering<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
            }
        }
        // A poisoned lock means a panic mid-insert of plain data; the set is still usable.
        if !self.answering.lock().unwrap_or_else(|p| p.into_inner()).insert(caller) {
            return Err(PeerError::Busy(format!(
                "a recovery answer for {caller} is under way: ask again once it has ended"
            )));
        }
        let _answering = Answering(&self.answering, caller);
        answer(&self.context, caller, certificate, request).await
    }
}

/// The answering side of `Recover`: the exchanges of `caller` (authenticated, with its TLS
/// `certificate`), in batches.
pub async fn answer(
    context: &NodeContext,
    caller: NodeCode,
    certificate: &[u8],
    request: &RecoverRequest,
) -> Result<Vec<RecoverResponse>, PeerError> {
    if !request.node.is_empty() && request.node != caller.as_str() {
        return Err(PeerError::OtherNode(format!(
            "node: a node recovers only its own exchanges: the caller's certificate says {caller}, the request names '{}'",
            crate::domain::text::printable(&request.node, false)
        )));
    }
    if let Some(since) = &request.since {
        crate::domain::validation::check_timestamp("since", since).map_err(PeerError::Invalid)?;
    }
    if let Some(head) = &request.audit_head {
        crate::peer::witness::accept_restart(context, caller, head, certificate).await.map_err(|error| {
            match error {
                crate::peer::witness::WitnessError::Store { source, .. } => PeerError::Store(source),
                signature => PeerError::Invalid(FieldError::new("audit_head", signature.to_string())),
            }
        })?;
    }
    let since = request.since.as_ref().map(timestamp::to_system);
    // A scan of the whole store: off the async workers, so no other call waits behind it.
    let store = context.store.clone();
    let scan = tokio::task::spawn_blocking(move || {
        store.exchanged_with(caller, |stored| {
            // Content removed (a closed case): what is left no longer matches its signature, and
            // this node chose not to keep it; the peer keeps its own copy by its own rules.
            if stored.message.as_ref().is_some_and(|m| m.content_removed_at.is_some()) {
                return false;
            }
            let received_at = stored.receipt.as_ref().and_then(|r| r.received_at.as_ref());
            match (received_at, since) {
                (None, _) => false,
                (Some(at), Some(since)) => timestamp::to_system(at) >= since,
                (Some(_), None) => true,
            }
        })
    });
    let exchanged = scan.await.map_err(|error| {
        StoreError::Io(std::io::Error::other(format!("the recovery scan failed: {error}")))
    })??;
    let returned = exchanged.len();
    let envelopes: Vec<RecoveredEnvelope> = exchanged
        .into_iter()
        .map(|stored| RecoveredEnvelope {
            envelope: view(&stored).envelope,
            receipt: stored.receipt.map(|receipt| Receipt { duplicate: false, ..receipt }),
            origin_certificate: stored.origin_certificate,
        })
        .collect();
    context.store.write(|changes| {
        changes.act_as(format!("peer:{caller}"));
        let since = request.since.as_ref().map_or_else(|| "the start".to_owned(), timestamp::rfc3339);
        changes.audit(
            "RECOVERY_ANSWERED",
            "",
            &format!("{returned} envelopes exchanged with {caller} since {since}"),
        );
        Ok::<_, StoreError>(())
    })?;
    context.store.persist().await?;
    tracing::info!(peer = %caller, returned, "answered a peer's recovery");
    Ok(envelopes.chunks(BATCH).map(|chunk| RecoverResponse { envelopes: chunk.to_vec() }).collect())
}

/// One envelope of an answer, checked.
struct Checked {
    envelope: Envelope,
    receipt: Receipt,
    origin_certificate: Vec<u8>,
    /// Sent by this node (else by the peer).
    mine: bool,
}

/// Checks one envelope of `peer`'s answer as `Deliver` would, on either side of the exchange.
fn check(context: &NodeContext, peer: NodeCode, item: RecoveredEnvelope) -> Result<Checked, RecoveryError> {
    let me = context.code();
    let envelope = item.envelope.unwrap_or_default();
    // The id as the answer gave it, safe to print (a hostile peer chooses it).
    let named = crate::domain::text::printable(&envelope.id, false).into_owned();
    let refused = |reason: FieldError| RecoveryError::Refused { peer, envelope: named.clone(), reason };
    let network = context.config.network.clone();
    let node = |code| Identity::Node { network: network.clone(), code };
    let mine = envelope.origin == me.as_str() && envelope.destination == peer.as_str();
    let theirs = envelope.origin == peer.as_str() && envelope.destination == me.as_str();
    if !mine && !theirs {
        return Err(refused(FieldError::new(
            "origin",
            format!(
                "it is between '{}' and '{}', not between this node ({me}) and {peer}",
                crate::domain::text::printable(&envelope.origin, false),
                crate::domain::text::printable(&envelope.destination, false)
            ),
        )));
    }
    // The same checks as a receiver's (`check_from_peer`): well-formed, a UUID; addressed, above.
    crate::domain::validation::check_envelope(&envelope, &context.config.limits).map_err(&refused)?;
    Uuid::parse_str(&envelope.id).map_err(|_| refused(FieldError::new("id", "must be a UUID")))?;
    let (origin, receiver) = if mine { (me, peer) } else { (peer, me) };
    let signer = context.signer.current();
    let created_at =
        envelope.created_at.as_ref().map_or_else(std::time::SystemTime::now, timestamp::to_system);
    let origin_ca = signer.network_ca_of(&item.origin_certificate);
    crate::trust::signing::check_certificate(&item.origin_certificate, origin_ca, &node(origin), created_at)
        .and_then(|()| crate::trust::signing::verify_envelope(&envelope, &item.origin_certificate))
        .map_err(|error| {
            refused(FieldError::new(
                "origin_signature",
                format!("not signed by {origin}'s certificate: {error}"),
            ))
        })?;
    let receipt = item.receipt.ok_or_else(|| refused(FieldError::new("receipt", "missing")))?;
    let receiver_ca = signer.network_ca_of(&receipt.receiver_certificate);
    crate::trust::signing::verify_receipt(&receipt, &envelope, &node(receiver), receiver_ca).map_err(
        |error| refused(FieldError::new("receipt", format!("not {receiver}'s receipt for it: {error}"))),
    )?;
    Ok(Checked { envelope, receipt, origin_certificate: item.origin_certificate, mine })
}

/// Asks `peer` (over `client`) for what the two nodes exchanged since `pending.since_seconds`,
/// checks it all and rebuilds this node's records; records the recovery from `peer` as done.
pub async fn recover_from(
    context: &NodeContext,
    peer: NodeCode,
    client: &mut PeerServiceClient<Channel>,
    pending: RecoveryPending,
) -> Result<Recovered, RecoveryError> {
    let call = |status: tonic::Status| RecoveryError::Call {
        peer,
        status: format!("{:?}: {}", status.code(), status.message()),
    };
    let since = Timestamp { seconds: pending.since_seconds, nanos: 0 };
    let request = RecoverRequest {
        node: context.code().to_string(),
        since: Some(since),
        audit_head: crate::peer::witness::own_head(context),
    };
    let mut stream = client.recover(request).await.map_err(call)?.into_inner();
    let mut recovered = Recovered::default();
    while let Some(batch) = stream.message().await.map_err(call)? {
        let checked = batch
            .envelopes
            .into_iter()
            .map(|item| check(context, peer, item))
            .collect::<Result<Vec<_>, _>>()?;
        recovered.returned += checked.len();
        store_batch(context, peer, checked, &mut recovered)?;
        context.store.persist().await?;
    }
    context.store.write(|changes| {
        changes.act_as(crate::store::NODE_ACTOR);
        let details = format!(
            "from {peer} since {}: {} returned, {} stored, {} became DELIVERED, {} already held",
            timestamp::rfc3339(&since),
            recovered.returned,
            recovered.stored,
            recovered.delivered,
            recovered.held
        );
        changes.audit("RECOVERED_FROM_PEER", "", &details);
        changes.mark_recovered(peer, pending.id, &details);
        Ok::<_, StoreError>(())
    })?;
    context.store.persist().await?;
    tracing::info!(peer = %peer, returned = recovered.returned, stored = recovered.stored, delivered = recovered.delivered, held = recovered.held, "recovered from peer");
    Ok(recovered)
}

/// Rebuilds the records of one checked batch in one write.
fn store_batch(
    context: &NodeContext,
    peer: NodeCode,
    checked: Vec<Checked>,
    recovered: &mut Recovered,
) -> Result<(), RecoveryError> {
    let signer = context.signer.current();
    let deadlines = &context.config.deadlines;
    context.store.write(|changes| {
        changes.act_as(format!("recovery:{peer}"));
        for Checked { envelope, receipt, origin_certificate, mine } in checked {
            // Validated: a UUID.
            let Ok(id) = Uuid::parse_str(&envelope.id) else { continue };
            let existing = changes.get(id)?;
            match (existing, mine) {
                (Some(mut stored), true) => {
                    let message = stored.message.get_or_insert_default();
                    let queued = message.direction() == Direction::Outbound
                        && matches!(message.state(), MessageState::Queued | MessageState::WaitingRetry);
                    if !queued {
                        recovered.held += 1;
                        continue;
                    }
                    message.received_at = receipt.received_at;
                    message.next_attempt_at = None;
                    let at = receipt.received_at.unwrap_or_else(timestamp::now);
                    let note = format!("receipt from {peer} (recovered from it)");
                    if lifecycle::apply(message, Happening::ReceiptArrived, at, note).unwrap_or(false) {
                        stored.receipt = Some(receipt);
                        stored.hold_until = None;
                        changes.put(stored)?;
                        recovered.delivered += 1;
                    } else {
                        recovered.held += 1;
                    }
                }
                (Some(_), false) => recovered.held += 1,
                (None, false) => {
                    if let Err(field) = check_parent(changes, peer, &envelope)? {
                        return Err(RecoveryError::Refused {
                            peer,
                            envelope: envelope.id.clone(),
                            reason: field,
                        });
                    }
                    let signing = BatchSigning {
                        signer: &signer,
                        sender_certificate: &origin_certificate,
                        metrics: None,
                        batches: None,
                        batch_receipts: false,
                    };
                    receive(changes, deadlines, peer, envelope, &receipt, Some(&signing))?;
                    recovered.stored += 1;
                }
                (None, true) => {
                    store_own(changes, deadlines, peer, envelope, receipt, origin_certificate)?;
                    recovered.stored += 1;
                }
            }
        }
        Ok(())
    })
}

/// Stores one of this node's own envelopes that `peer` holds: DELIVERED with its receipt, and a
/// reply of this node's moves the request it concerns as the desk moved it.
fn store_own(
    changes: &mut crate::store::Changes<'_>,
    deadlines: &crate::config::DeadlinesConfig,
    peer: NodeCode,
    envelope: Envelope,
    receipt: Receipt,
    origin_certificate: Vec<u8>,
) -> Result<(), RecoveryError> {
    let created = envelope.created_at.unwrap_or_else(timestamp::now);
    let received = receipt.received_at.unwrap_or(created);
    let parent_id = Uuid::parse_str(&envelope.in_reply_to).ok();
    let kind = envelope.kind();
    let parent = match parent_id {
        Some(parent_id) => changes.get(parent_id)?,
        None => None,
    };
    let mut message = Message {
        ack_deadline: deadlines.ack_deadline(&envelope),
        envelope: Some(envelope),
        direction: Direction::Outbound as i32,
        ..Default::default()
    };
    lifecycle::enter(
        &mut message,
        MessageState::Queued,
        created,
        format!("sent to {peer} (recovered from it)"),
    );
    message.received_at = Some(received);
    let note = format!("receipt from {peer} (recovered from it)");
    // A new QUEUED message takes a receipt.
    let _ = lifecycle::apply(&mut message, Happening::ReceiptArrived, received, note);
    changes.put(StoredMessage {
        message: Some(message),
        seq: changes.next_seq()?,
        overdue_announced: false,
        hold_until: None,
        // A reply belongs to whoever owns the request; who submitted a request is not recoverable.
        submitted_by: parent.as_ref().map(|p| p.submitted_by.clone()).unwrap_or_default(),
        receipt: Some(receipt),
        origin_certificate,
        origin_certificate_sha256: Vec::new(),
        reminded_until: None,
        reminded_lead_seconds: 0,
    })?;
    let happening = match kind {
        EnvelopeKind::Acknowledgement => Happening::AcknowledgedHere,
        EnvelopeKind::Response => Happening::AnsweredHere,
        EnvelopeKind::Cancellation => Happening::CancelledHere,
        _ => return Ok(()),
    };
    if let Some(mut parent) = parent {
        let target = parent.message.get_or_insert_default();
        let verb = match happening {
            Happening::AcknowledgedHere => "acknowledged",
            Happening::AnsweredHere => "answered",
            _ => "cancelled",
        };
        let note = format!("{verb} here (recovered from {peer})");
        match lifecycle::apply(target, happening, received, note) {
            Ok(true) => changes.put(parent)?,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(message_id = %target.envelope.as_ref().map_or("", |e| e.id.as_str()), %error, "a recovered reply does not apply")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::Clock;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_recover_answer_at_a_time_per_peer_and_the_gate_opens_after_it() {
        let (_dir, context) = crate::node::testing::context(Clock::system()).await;
        let answers = RecoveryAnswers::new(Arc::clone(&context));
        let fr: NodeCode = "FR".parse().unwrap();
        answers.answering.lock().unwrap().insert(fr);
        let busy = answers.answer(fr, &[], &RecoverRequest::default()).await.unwrap_err();
        assert!(matches!(busy, PeerError::Busy(ref text) if text.contains("under way")), "{busy}");
        answers.answering.lock().unwrap().clear();
        let answered = answers.answer(fr, &[], &RecoverRequest::default()).await.unwrap();
        assert!(answered.is_empty(), "nothing exchanged with FR yet");
        assert!(answers.answering.lock().unwrap().is_empty(), "the gate is open again");
    }
}
