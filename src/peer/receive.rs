//! Receiving envelopes from other nodes (the logic behind `PeerService`). A receipt is returned
//! only after the envelope is flushed to this node's disk; a duplicate gets its original receipt.

use std::sync::Arc;

use uuid::Uuid;

use crate::config::{DeadlinesConfig, DirectoryEntry, NodeConfig};
use crate::domain::identity::{Identity, NodeCode};
use crate::domain::lifecycle::{self, Happening};
use crate::domain::names::ShortName;
use crate::domain::timestamp;
use crate::domain::validation::{FieldError, check_batch, check_envelope, check_times};
use crate::proto::delivery_result::Outcome;
use crate::proto::{
    DeliverRequest, DeliverResponse, DeliveryResult, Direction, Envelope, EnvelopeKind, HelloRequest,
    HelloResponse, Message, MessageState, Receipt, Refusal,
};
use crate::runtime::context::{NodeContext, SOFTWARE_VERSION};
use crate::runtime::metrics::labels;
use crate::store::{Changes, Store, StoreError, view};
use crate::store_proto::StoredMessage;

/// Why a whole `Deliver` call was refused. Mapped to a gRPC status in `status.rs`.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The caller's certificate does not name a node of this network.
    #[error("{0}")]
    NotAPeer(String),
    /// An envelope claims another origin than the caller's certificate.
    #[error("envelope {id}: origin '{claimed}' is not the caller, whose certificate says {certificate}")]
    OriginMismatch {
        /// The envelope.
        id: String,
        /// Its `origin` field.
        claimed: String,
        /// The caller's node code.
        certificate: NodeCode,
    },
    /// Nothing to deliver.
    #[error("envelopes: the batch is empty")]
    EmptyBatch,
    /// A pipelined batch cannot be stored in its sender's order; nothing was stored.
    #[error(transparent)]
    OutOfOrder(#[from] crate::peer::batch_order::OrderError),
    /// The batch is over a limit (`limits.max_batch_envelopes`); nothing was stored.
    #[error(transparent)]
    Batch(FieldError),
    /// The store could not be written; nothing was stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A receipt could not be signed; nothing was stored.
    #[error(transparent)]
    Signing(#[from] crate::trust::signing::SigningError),
    /// A `Recover` call asked for another node's exchanges (the message names the field).
    #[error("{0}")]
    OtherNode(String),
    /// A field of a `Recover` call is wrong (its time, its signed audit head); nothing was stored.
    #[error(transparent)]
    Invalid(FieldError),
    /// The caller's `Recover` is already being answered.
    #[error("{0}")]
    Busy(String),
}

/// Non-repudiation for one batch: the key of the sender's TLS certificate must have signed every
/// envelope, and this node signs the receipts.
pub struct BatchSigning<'a> {
    /// This node's signer (receipts).
    pub signer: &'a crate::trust::signing::Signer,
    /// The sender's TLS certificate (DER), whose key signed the envelopes.
    pub sender_certificate: &'a [u8],
    /// Counted per failed envelope signature (`signature_failures`), when given.
    pub metrics: Option<&'a crate::runtime::metrics::Metrics>,
    /// Batch signatures already verified (each signed root is checked once), when given.
    pub batches: Option<&'a crate::trust::signing::VerifiedBatches>,
    /// The sender takes batch receipts (format 2): one signature over the batch's receipts.
    pub batch_receipts: bool,
}

impl BatchSigning<'_> {
    /// Checks an envelope's `origin_signature`; the refusal names the field and the envelope.
    /// Returns the envelope's digest.
    fn check(&self, sender: NodeCode, envelope: &Envelope) -> Result<[u8; 32], FieldError> {
        crate::trust::signing::verify_envelope_with(envelope, self.sender_certificate, self.batches).map_err(
            |error| {
                if let Some(metrics) = self.metrics {
                    let labels = labels(&[("peer", sender.as_str()), ("signed", "envelope")]);
                    metrics.signature_failures.get_or_create(&labels).inc();
                }
                FieldError::new(
                    "origin_signature",
                    format!("envelope {}: not signed by {sender}'s certificate: {error}", envelope.id),
                )
            },
        )
    }

    /// The receipt of an envelope already stored here: the signed one kept with it, or (stored
    /// before receipts were signed) a new signature over the same envelope and receive time.
    fn stored_receipt(&self, existing: &StoredMessage, me: &str) -> Result<Receipt, PeerError> {
        if let Some(receipt) = &existing.receipt {
            return Ok(receipt.clone());
        }
        let message = view(existing);
        let envelope = message.envelope.unwrap_or_default();
        let received_at = message.received_at.unwrap_or_default();
        Ok(self.signer.receipt(&envelope, me, received_at)?)
    }
}

/// The receiving side of one node: checks who sends, stores batches in order, signs receipts.
pub struct Receiver {
    context: Arc<NodeContext>,
    /// The order in which pipelined batches from each peer are stored.
    batch_order: crate::peer::batch_order::BatchOrder,
    /// Peers' batch signatures already verified.
    batches: crate::trust::signing::VerifiedBatches,
}

impl Receiver {
    /// The receiver over a node's shared state.
    pub fn new(context: Arc<NodeContext>) -> Self {
        Self { context, batch_order: Default::default(), batches: Default::default() }
    }

    /// The directory peer that `identity` (from the caller's certificate) names, refused unless
    /// `certificate` is one the directory pins for it (current or next; when it pins any).
    pub fn authenticate(
        &self,
        identity: Option<Identity>,
        certificate: &[u8],
    ) -> Result<NodeCode, PeerError> {
        match identity {
            Some(Identity::Node { network, code }) if network == self.context.config.network => {
                // A certificate from the network CA is not enough: only directory members talk here.
                let Some(member) = self.context.peer(code) else {
                    return Err(PeerError::NotAPeer(format!(
                        "node {code} is not in the directory of node {} (version {})",
                        self.context.code(),
                        self.context.directory.current().version
                    )));
                };
                check_fingerprint(certificate, &member)?;
                Ok(code)
            }
            Some(other) => Err(PeerError::NotAPeer(format!(
                "{other} is not a node of network {}",
                self.context.config.network
            ))),
            None => Err(PeerError::NotAPeer("no peer certificate identity".into())),
        }
    }

    /// Stores a `Deliver` batch from `sender` (whose `certificate` must have signed every
    /// envelope) in the order the sender numbered it, durably, and answers each envelope with a
    /// receipt or a refusal.
    pub async fn deliver(
        &self,
        sender: NodeCode,
        certificate: &[u8],
        request: DeliverRequest,
    ) -> Result<DeliverResponse, PeerError> {
        let DeliverRequest {
            envelopes,
            sender_session,
            batch_number,
            answered_through,
            accepts_batch_receipts,
        } = request;
        let config = &self.context.config;
        check_batch_shape(config, sender, &envelopes)?;
        let signer = self.context.signer.current();
        let signing = BatchSigning {
            signer: &signer,
            sender_certificate: certificate,
            metrics: Some(&self.context.metrics),
            batches: Some(&self.batches),
            batch_receipts: accepts_batch_receipts,
        };
        let mut checks =
            check_envelopes(config, sender, &envelopes, Some(&signing), self.context.clock.now());
        for (check, envelope) in checks.iter_mut().zip(&envelopes) {
            // Only an envelope with attachments costs a look at the disk.
            if check.is_ok()
                && !envelope.attachments.is_empty()
                && let Err(field) = self.context.store.check_held(envelope)
            {
                *check = Err(field);
            }
        }
        let turn = self
            .batch_order
            .admit(
                sender,
                &sender_session,
                batch_number,
                answered_through,
                crate::peer::batch_order::PREDECESSOR_WAIT,
            )
            .await?;
        let directory = self.context.directory.current();
        let own_entry = directory.member(config.code);
        // Signed after the batch's turn, so that `received_at` is when it is stored.
        let now = timestamp::now();
        let receipts = sign_receipts(&signing, config.code, &envelopes, &checks, now)?;
        // Every envelope that passed its checks has a receipt (its digest was checked).
        let checks = checks
            .into_iter()
            .zip(receipts)
            .map(|(c, r)| c.map(|(id, _)| (id, r.unwrap_or_default())))
            .collect();
        let (results, changed) =
            store_batch(&self.context.store, config, sender, envelopes, checks, Some(&signing), own_entry)?;
        // Written in order; the flush below covers this batch and every earlier one.
        turn.stored();
        self.context.store.persist().await?;
        self.count(sender, &changed, &results);
        self.context.heard_from(sender);
        for message in &changed {
            if let Some(envelope) = &message.envelope {
                tracing::info!(message_id = %envelope.id, peer = %sender, precedence = envelope.precedence().as_str_name(), state = message.state().as_str_name(), "stored from peer");
            }
        }
        Ok(DeliverResponse { results })
    }

    /// Answers a peer's `Hello`, noting the directory version it uses.
    pub fn hello(&self, caller: NodeCode, request: &HelloRequest) -> HelloResponse {
        let theirs = request.directory_version;
        self.context.heard_from(caller);
        let (fields, version) = (request.envelope_fields.clone(), request.software_version.clone());
        self.context.peers.update(caller, |status| {
            if theirs > 0 {
                status.directory_version = theirs;
            }
            if !version.is_empty() {
                status.software_version = version;
            }
            status.envelope_fields = Some(fields);
        });
        HelloResponse {
            node: self.context.code().to_string(),
            software_version: SOFTWARE_VERSION.to_owned(),
            time: Some(timestamp::now()),
            directory_version: self.context.directory.current().version,
            verifies_batch_signatures: true,
            audit_head: None,
            witnessed_head: None,
            envelope_fields: crate::runtime::context::envelope_fields_read(),
        }
    }

    /// [`Receiver::hello`], witnessing the caller's signed audit head (checked with its TLS
    /// `certificate`) and answering with this node's head and the newest head of the caller's.
    pub async fn hello_witnessed(
        &self,
        caller: NodeCode,
        certificate: &[u8],
        request: &HelloRequest,
    ) -> HelloResponse {
        let mut response = self.hello(caller, request);
        if let Some(head) = &request.audit_head
            && let Err(error) = crate::peer::witness::keep(&self.context, caller, head, certificate).await
        {
            tracing::warn!(%error, "audit head from Hello not kept");
        }
        response.audit_head = crate::peer::witness::own_head_for(&self.context, caller);
        response.witnessed_head = self.context.store.witnessed_head(caller).unwrap_or_else(|error| {
            tracing::warn!(%error, peer = %caller, "reading the witnessed audit head");
            None
        });
        response
    }

    /// Counts what a `Deliver` call stored, once it is durable.
    fn count(&self, sender: NodeCode, changed: &[Message], results: &[DeliveryResult]) {
        let metrics = &self.context.metrics;
        let peer = sender.to_string();
        for message in changed {
            let envelope = message.envelope.clone().unwrap_or_default();
            if message.direction() == Direction::Inbound {
                let kind = envelope.kind().short_name();
                metrics.envelopes_received.get_or_create(&labels(&[("peer", &peer), ("kind", kind)])).inc();
            } else if message.state() == MessageState::Acknowledged {
                // One of our requests was just acknowledged: how long did it take?
                let created = envelope.created_at.as_ref().map(timestamp::to_system);
                let lead = created.and_then(|c| std::time::SystemTime::now().duration_since(c).ok());
                let precedence = envelope.precedence().short_name();
                if let Some(lead) = lead {
                    metrics
                        .ack_lead_time
                        .get_or_create(&labels(&[("precedence", precedence)]))
                        .observe(lead.as_secs_f64());
                }
            }
        }
        let duplicates = results
            .iter()
            .filter(|r| matches!(&r.outcome, Some(Outcome::Receipt(receipt)) if receipt.duplicate))
            .count();
        if duplicates > 0 {
            metrics.duplicates_received.get_or_create(&labels(&[("peer", &peer)])).inc_by(duplicates as u64);
        }
    }
}

/// Refuses a caller whose certificate is not one the directory pins for its code (its current
/// pin or, during a rotation, its next one; when it pins any): a stolen or mis-issued
/// certificate from the network CA is not enough.
fn check_fingerprint(certificate: &[u8], member: &crate::config::DirectoryEntry) -> Result<(), PeerError> {
    let presented = if certificate.is_empty() {
        String::new()
    } else {
        crate::domain::identity::fingerprint(certificate)
    };
    if member.pin_accepts(&presented) {
        Ok(())
    } else {
        Err(PeerError::NotAPeer(format!(
            "node {}'s certificate (SHA-256 {presented}) is not the one in the directory (it pins {})",
            member.code,
            member.describe_pins()
        )))
    }
}

/// Stores one new inbound envelope (with the sender's certificate and the signed receipt, when
/// signing) as received at the receipt's time, and applies it to the message it answers.
/// Returns the changed messages (for events).
pub(super) fn receive(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    sender: NodeCode,
    envelope: Envelope,
    receipt: &Receipt,
    signing: Option<&BatchSigning<'_>>,
) -> Result<Vec<Message>, PeerError> {
    let now = receipt.received_at.unwrap_or_else(timestamp::now);
    let mut changed = Vec::new();
    let kind = envelope.kind();
    let parent_id = Uuid::parse_str(&envelope.in_reply_to).ok();
    let body = envelope.body.clone();
    let outcome = envelope.outcome.clone();
    // The note that the mutual legal assistance request was sent goes on the case at once.
    let follow_up = changes.record_follow_up(&envelope)?;
    let owner = match parent_id {
        Some(parent) => changes.get(parent)?.map(|p| p.submitted_by).unwrap_or_default(),
        None => String::new(),
    };
    let mut message = Message {
        ack_deadline: deadlines.ack_deadline(&envelope),
        envelope: Some(envelope),
        direction: Direction::Inbound as i32,
        received_at: Some(now),
        ..Default::default()
    };
    let note = match message.envelope.as_ref() {
        // The sending desk must notice a dispute: its note (in the event on `Watch`) says it all.
        Some(dispute) if kind == EnvelopeKind::PrecedenceDispute => {
            let proposed = dispute.precedence().short_name();
            tracing::warn!(message_id = %dispute.in_reply_to, peer = %sender, proposed, "precedence disputed");
            let summary = format!(
                "received from {sender}: disputes the precedence of {}, proposes {proposed}",
                dispute.in_reply_to
            );
            changes.note_with_text(summary, &body)
        }
        _ => format!("received from {sender}"),
    };
    lifecycle::enter(&mut message, MessageState::Received, now, note);
    changes.put(StoredMessage {
        message: Some(message.clone()),
        seq: changes.next_seq()?,
        overdue_announced: false,
        hold_until: None,
        // A reply belongs to whoever owns the request it answers.
        submitted_by: owner,
        receipt: signing.map(|_| receipt.clone()),
        origin_certificate: signing.map(|s| s.sender_certificate.to_vec()).unwrap_or_default(),
        origin_certificate_sha256: Vec::new(),
        reminded_until: None,
        reminded_lead_seconds: 0,
    })?;
    changed.push(message);
    changed.extend(follow_up);

    let answered = match &outcome {
        Some(o) => format!("answered {}", o.kind().short_name()),
        None => "answered".to_owned(),
    };
    let happening = match kind {
        EnvelopeKind::Acknowledgement => Some((Happening::AcknowledgementArrived, "acknowledged".to_owned())),
        EnvelopeKind::Response => {
            Some((lifecycle::response_happening(outcome.as_ref().map(|o| o.kind()), false), answered))
        }
        EnvelopeKind::Cancellation => Some((Happening::CancellationArrived, "withdrawn".to_owned())),
        _ => None,
    };
    if let (Some((happening, verb)), Some(parent_id)) = (happening, parent_id)
        && let Some(mut parent) = changes.get(parent_id)?
    {
        let target = parent.message.get_or_insert_default();
        let parent_envelope = target.envelope.clone().unwrap_or_default();
        // Only the node the request concerns may move it: the destination acknowledges and
        // answers our requests, the origin withdraws the ones we received.
        let concerned = match target.direction() {
            Direction::Outbound => parent_envelope.destination == sender.as_str(),
            _ => parent_envelope.origin == sender.as_str(),
        };
        let note = changes.note_with_text(format!("{verb} by {sender}"), &body);
        if concerned {
            let moved = match lifecycle::apply(target, happening, now, note) {
                Ok(moved) => moved,
                Err(error) => {
                    tracing::warn!(message_id = %parent_id, peer = %sender, %error, "reply does not apply");
                    false
                }
            };
            // The outcome of our own request, from the node that answers it (both ends then
            // show the same outcome and `preserved_until`).
            let recorded = match &outcome {
                Some(o) if target.direction() == Direction::Outbound => lifecycle::record_outcome(target, o),
                _ => false,
            };
            if moved || recorded {
                changed.push(target.clone());
                changes.put(parent)?;
            }
            if recorded
                && let Some(extended) = changes.extend_preservation(&parent_envelope, outcome.as_ref())?
            {
                changed.push(extended);
            }
        } else {
            tracing::warn!(message_id = %parent_id, peer = %sender, "reply from a node the request does not concern");
        }
    }
    Ok(changed)
}

/// What `Deliver` does with a batch from `sender` (whose certificate was checked), short of
/// ordering pipelined batches and making it durable: `check_batch_shape`, `check_envelopes`,
/// then `store_batch`. Returns the results in batch order and the messages that changed. The caller
/// must `Store::persist` before it tells anyone. (The property tests and the fuzz target drive
/// the peer service through this.) Without signatures: `Deliver` also checks each envelope's
/// signature and signs the receipts (`BatchSigning`).
pub fn receive_batch(
    store: &Store,
    config: &NodeConfig,
    sender: NodeCode,
    envelopes: Vec<Envelope>,
) -> Result<(Vec<DeliveryResult>, Vec<Message>), PeerError> {
    check_batch_shape(config, sender, &envelopes)?;
    // No node clock here (the property tests and the fuzz target): the system's.
    let now = timestamp::now();
    let checks = check_envelopes(config, sender, &envelopes, None, timestamp::to_system(&now))
        .into_iter()
        .zip(&envelopes)
        .map(|(check, envelope)| {
            check.map(|(id, _)| {
                let receipt = Receipt {
                    envelope_id: envelope.id.clone(),
                    receiver: config.code.to_string(),
                    received_at: Some(now),
                    ..Default::default()
                };
                (id, receipt)
            })
        })
        .collect();
    store_batch(store, config, sender, envelopes, checks, None, None)
}

/// Refuses a whole batch that is empty, over `limits.max_batch_envelopes` or claims another
/// origin than `sender`, before anything is stored.
fn check_batch_shape(config: &NodeConfig, sender: NodeCode, envelopes: &[Envelope]) -> Result<(), PeerError> {
    if envelopes.is_empty() {
        return Err(PeerError::EmptyBatch);
    }
    check_batch(envelopes.len(), &config.limits).map_err(PeerError::Batch)?;
    // The whole call is refused before anything is stored if any envelope lies about its origin.
    if let Some(bad) = envelopes.iter().find(|e| e.origin != sender.as_str()) {
        return Err(PeerError::OriginMismatch {
            id: bad.id.clone(),
            claimed: bad.origin.clone(),
            certificate: sender,
        });
    }
    Ok(())
}

/// An envelope's id and, when its signature was checked, its digest; or why it is refused.
type Checked = Result<(Uuid, Option<[u8; 32]>), FieldError>;

/// Validates each envelope and, when signing, its signature: the costly part of receiving, so it
/// runs before the batch waits for its turn (`batch_order`) and before the store's lock, where
/// pipelined batches check concurrently.
fn check_envelopes(
    config: &NodeConfig,
    sender: NodeCode,
    envelopes: &[Envelope],
    signing: Option<&BatchSigning<'_>>,
    now: std::time::SystemTime,
) -> Vec<Checked> {
    envelopes
        .iter()
        .map(|envelope| {
            let id = check_from_peer(config, envelope)?;
            check_times(envelope, now, &config.limits)?;
            let digest = match signing {
                Some(signing) => Some(signing.check(sender, envelope)?),
                None => None,
            };
            Ok((id, digest))
        })
        .collect()
}

/// The signed receipts of a batch's checked envelopes, all received at `now`: one signature for
/// the whole batch when the sender takes batch receipts, else one each. A duplicate's receipt is
/// made too and then replaced by the one stored with it (in a batch it costs a leaf, not a
/// signature). `None` for a refused envelope.
fn sign_receipts(
    signing: &BatchSigning<'_>,
    me: NodeCode,
    envelopes: &[Envelope],
    checks: &[Checked],
    now: prost_types::Timestamp,
) -> Result<Vec<Option<Receipt>>, PeerError> {
    let members: Vec<(&str, [u8; 32])> = envelopes
        .iter()
        .zip(checks)
        .filter_map(|(envelope, check)| match check {
            Ok((_, Some(digest))) => Some((envelope.id.as_str(), *digest)),
            _ => None,
        })
        .collect();
    let mut signed = signing.signer.receipts(&members, me.as_str(), now, signing.batch_receipts)?.into_iter();
    Ok(checks
        .iter()
        .map(|check| if matches!(check, Ok((_, Some(_)))) { signed.next() } else { None })
        .collect())
}

/// In one atomic write: refuses the envelopes whose `checks` failed (a `Refusal` naming the
/// field), deduplicates the others by id, origin and digest (a duplicate gets its original
/// receipt; other content under a known id is refused), refuses replies to messages not
/// exchanged with `sender`, and stores the new ones with the receipt made for them.
fn store_batch(
    store: &Store,
    config: &NodeConfig,
    sender: NodeCode,
    envelopes: Vec<Envelope>,
    checks: Vec<Result<(Uuid, Receipt), FieldError>>,
    signing: Option<&BatchSigning<'_>>,
    own_entry: Option<&DirectoryEntry>,
) -> Result<(Vec<DeliveryResult>, Vec<Message>), PeerError> {
    let me = config.code.to_string();
    let refused = |envelope: &Envelope, field: FieldError| {
        let precedence = envelope.precedence().as_str_name();
        tracing::warn!(message_id = %envelope.id, peer = %sender, %precedence, %field, "envelope refused");
        let refusal = Refusal {
            envelope_id: envelope.id.clone(),
            code: field.code() as i32,
            message: field.to_string(),
        };
        DeliveryResult { outcome: Some(Outcome::Refusal(refusal)) }
    };
    store.write(|changes| {
        changes.act_as(format!("peer:{sender}"));
        let mut results = Vec::with_capacity(envelopes.len());
        let mut changed = Vec::new();
        for (envelope, check) in envelopes.into_iter().zip(checks) {
            let envelope_id = envelope.id.clone();
            let (id, new_receipt) = match check {
                Ok(checked) => checked,
                Err(field) => {
                    results.push(refused(&envelope, field));
                    continue;
                }
            };
            let existing = changes.get(id)?;
            let reference = match &existing {
                Some(existing) => check_same_envelope(existing, sender, &envelope),
                None => check_parent(changes, sender, &envelope)?,
            };
            if let Err(field) = reference {
                results.push(refused(&envelope, field));
                continue;
            }
            // A new request of a type this node's directory entry leaves out is refused (the
            // sender's directory may be older); a resent one already stored keeps its receipt.
            if existing.is_none()
                && envelope.kind() == EnvelopeKind::Request
                && let Some(Err(field)) = own_entry.map(|entry| entry.check_accepts(envelope.request_type()))
            {
                results.push(refused(&envelope, field));
                continue;
            }
            let receipt = match (existing, signing) {
                (Some(existing), Some(signing)) => {
                    Receipt { duplicate: true, ..signing.stored_receipt(&existing, &me)? }
                }
                (Some(existing), None) => Receipt {
                    envelope_id,
                    receiver: me.clone(),
                    received_at: view(&existing).received_at,
                    duplicate: true,
                    ..Default::default()
                },
                (None, _) => {
                    changed.append(&mut receive(
                        changes,
                        &config.deadlines,
                        sender,
                        envelope,
                        &new_receipt,
                        signing,
                    )?);
                    new_receipt
                }
            };
            results.push(DeliveryResult { outcome: Some(Outcome::Receipt(receipt)) });
        }
        Ok::<_, PeerError>((results, changed))
    })
}

/// Refuses an envelope under an id already stored here unless it is the same envelope resent by
/// its origin (same origin, same digest): only then is it a duplicate, answered with the stored
/// receipt. A member sending another pair's id, or other content under a known id, learns
/// nothing of that message and changes nothing.
fn check_same_envelope(
    existing: &StoredMessage,
    sender: NodeCode,
    envelope: &Envelope,
) -> Result<(), FieldError> {
    let stored = view(existing);
    // Content removed (a closed case): the digest as signed is kept beside what is left.
    let removed = stored.content_removed_at.is_some().then_some(stored.envelope_sha256.as_slice());
    let same = stored.direction() == Direction::Inbound
        && stored.envelope.as_ref().is_some_and(|kept| {
            let digest = crate::trust::signing::envelope_digest(envelope);
            kept.origin == sender.as_str()
                && removed
                    .map_or_else(|| crate::trust::signing::envelope_digest(kept) == digest, |d| d == digest)
        });
    if same {
        Ok(())
    } else {
        Err(FieldError::new("id", format!("this node holds another envelope under {}", envelope.id)))
    }
}

/// Refuses a new envelope whose `in_reply_to` is not a message exchanged with `sender` (one it
/// sent here, or one this node sent it): a member may neither thread into a case between other
/// members nor move their messages. An unknown parent is refused the same way (the sender
/// retries, so a parent that arrives later is not lost), which also keeps the refusal from
/// telling whether another pair's message exists.
pub(super) fn check_parent(
    changes: &Changes<'_>,
    sender: NodeCode,
    envelope: &Envelope,
) -> Result<Result<(), FieldError>, StoreError> {
    let Ok(parent_id) = Uuid::parse_str(&envelope.in_reply_to) else {
        // No reference (validation refused a malformed one before).
        return Ok(Ok(()));
    };
    let exchanged = changes
        .get(parent_id)?
        .is_some_and(|parent| crate::store::peer_of(&view(&parent)) == sender.as_str());
    Ok(if exchanged {
        Ok(())
    } else {
        Err(FieldError::new(
            "in_reply_to",
            format!("no message with id {parent_id} between {sender} and this node"),
        ))
    })
}

/// Checks an envelope from a peer against this node (`config`); the refusal names the field.
fn check_from_peer(config: &NodeConfig, envelope: &Envelope) -> Result<Uuid, FieldError> {
    check_envelope(envelope, &config.limits)?;
    if envelope.destination != config.code.as_str() {
        return Err(FieldError::new(
            "destination",
            format!("this node is {}, not {}", config.code, envelope.destination),
        ));
    }
    Uuid::parse_str(&envelope.id).map_err(|_| FieldError::new("id", "must be a UUID"))
}
