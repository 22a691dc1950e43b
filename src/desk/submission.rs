//! Sending: a new request from a desk client (`submit`), and the signing and queueing of every
//! envelope this node originates (requests and the replies `handling` makes).

use crate::domain::names::ShortName as _;
use uuid::Uuid;

use super::authorization::audit_call;
use super::{Desk, DeskError, parse_id_field};
use crate::config::DeadlinesConfig;
use crate::domain::access::{Action, Caller};
use crate::domain::identity::NodeCode;
use crate::domain::lifecycle;
use crate::domain::timestamp;
use crate::domain::validation::{FieldError, check_envelope, check_times, check_timestamp};
use crate::proto::{Direction, Envelope, EnvelopeKind, HandlingCode, Message, MessageState, SubmitRequest};
use crate::store::{Changes, peer_of, view};
use crate::store_proto::StoredMessage;
use crate::trust::signing::Signer;

impl Desk {
    /// Stores a new request from `caller` to another node, signed and QUEUED, and wakes its
    /// delivery task. Returns the stored message.
    pub async fn submit(&self, caller: &Caller, request: SubmitRequest) -> Result<Message, DeskError> {
        let envelope = self.submit_envelope(caller, request)?;
        let (id, destination, precedence) =
            (envelope.id.clone(), envelope.destination.clone(), envelope.precedence());
        // Signed before the store's lock, together with the envelopes of concurrent Submits to
        // the same destination when it verifies batch signatures.
        let in_groups =
            destination.parse().is_ok_and(|code| self.context.peers.verifies_batch_signatures(code));
        let signed = self.group_signer.sign(&self.context.signer, envelope, in_groups).await?;
        let (envelope, signer) = (signed.envelope, signed.signer);
        let message = self.context.store.write(|changes| {
            let details = format!("to {destination}, {}", precedence.short_name());
            audit_call(changes, caller, Action::Submit, &id, &details);
            queue_signed(
                changes,
                &self.context.config.deadlines,
                envelope,
                format!("submitted by {}", caller.name),
                caller.name.clone(),
                &signer,
            )
        })?;
        self.announce(std::slice::from_ref(&message)).await?;
        tracing::info!(message_id = %id, peer = %destination, precedence = precedence.as_str_name(), client = %caller.name, "request submitted");
        Ok(message)
    }

    /// The envelope a `SubmitRequest` describes, checked against the directory, the store (the
    /// request it answers) and the limits; not yet signed.
    fn submit_envelope(&self, caller: &Caller, request: SubmitRequest) -> Result<Envelope, DeskError> {
        let config = &self.context.config;
        let destination: NodeCode =
            request.destination.parse().map_err(|e| FieldError::new("destination", format!("{e}")))?;
        if destination == config.code {
            return Err(FieldError::new("destination", format!("{destination} is this node")).into());
        }
        let Some(member) = self.context.peer(destination) else {
            let known: Vec<String> = self.context.peers_listed().iter().map(|e| e.code.to_string()).collect();
            return Err(FieldError::new(
                "destination",
                format!("{destination} is not in this node's directory (known: {})", known.join(", ")),
            )
            .into());
        };
        member.check_accepts(request.request_type())?;
        let parent = match request.in_reply_to.as_str() {
            "" => None,
            id => Some(self.replied_to(caller, id, destination)?),
        };
        let case_reference = match (request.case_reference.trim(), &parent) {
            ("", Some(parent)) => {
                parent.envelope.as_ref().map(|e| e.case_reference.clone()).unwrap_or_default()
            }
            ("", None) => new_case_reference(config.code),
            (given, _) => given.to_owned(),
        };
        let now = timestamp::from_system(self.context.clock.now());
        if let Some(expires_at) = &request.expires_at {
            check_timestamp("expires_at", expires_at)?;
        }
        if let Some(expires_at) = &request.expires_at
            && timestamp::to_system(expires_at) <= timestamp::to_system(&now)
        {
            return Err(FieldError::new("expires_at", "must be in the future").into());
        }
        let handling_code = match request.handling_code() {
            HandlingCode::Unspecified => HandlingCode::H0 as i32,
            _ => request.handling_code,
        };
        let envelope = Envelope {
            id: Uuid::now_v7().to_string(),
            origin: config.code.to_string(),
            destination: destination.to_string(),
            kind: EnvelopeKind::Request as i32,
            request_type: request.request_type,
            precedence: request.precedence,
            case_reference,
            subject: request.subject,
            body: request.body,
            language: if request.language.is_empty() { "en".into() } else { request.language },
            created_at: Some(now),
            expires_at: Some(
                request.expires_at.unwrap_or_else(|| timestamp::after(config.delivery.default_expiry)),
            ),
            in_reply_to: request.in_reply_to,
            attachments: request.attachments,
            handling_code,
            handling_restrictions: request.handling_restrictions,
            preservation: request.preservation,
            // Signed when it is stored (`queue`).
            origin_signature: Vec::new(),
            origin_batch: None,
        };
        check_envelope(&envelope, &config.limits)?;
        check_times(&envelope, self.context.clock.now(), &config.limits)?;
        Ok(envelope)
    }
}

impl Desk {
    /// The message a new request to `destination` answers (`in_reply_to`): one the caller may
    /// see (the rule of `Get`) and exchanged with `destination`. Anything else is refused as if
    /// the id were unknown, so that `Submit` tells nobody whether a message they may not see
    /// exists, and nobody threads a request into another's case or copies its case reference.
    fn replied_to(&self, caller: &Caller, id: &str, destination: NodeCode) -> Result<Message, DeskError> {
        let id = parse_id_field("in_reply_to", id)?;
        let parent = self
            .context
            .store
            .get(id)?
            .filter(|stored| caller.may_see(&stored.submitted_by))
            .map(|stored| view(&stored));
        match parent {
            Some(parent) if peer_of(&parent) == destination.as_str() => Ok(parent),
            _ => Err(FieldError::new("in_reply_to", format!("no message with id {id}")).into()),
        }
    }
}

/// A case reference for a request that starts a case: "<origin>-<year>-<8 hex digits>".
fn new_case_reference(origin: NodeCode) -> String {
    let year = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    format!("{origin}-{}-{:08x}", &year[..4], fastrand::u32(..))
}

impl Desk {
    /// Signs a reply this node sends (acknowledgement, response, dispute, cancellation) and
    /// stores it QUEUED in this write.
    pub(super) fn queue_reply(
        &self,
        changes: &mut Changes<'_>,
        envelope: Envelope,
        note: String,
        submitted_by: String,
    ) -> Result<Message, DeskError> {
        queue(
            changes,
            &self.context.config.deadlines,
            envelope,
            note,
            submitted_by,
            &self.context.signer.current(),
        )
    }
}

/// Signs a new outbound envelope and stores it, QUEUED (with the signing certificate, for proofs).
fn queue(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    mut envelope: Envelope,
    note: String,
    submitted_by: String,
    signer: &Signer,
) -> Result<Message, DeskError> {
    signer.sign_envelope(&mut envelope)?;
    queue_signed(changes, deadlines, envelope, note, submitted_by, signer)
}

/// Stores an outbound envelope that `signer` has just signed, QUEUED (with the signing
/// certificate, for proofs). `submit` signs before it takes the store's lock.
fn queue_signed(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    envelope: Envelope,
    note: String,
    submitted_by: String,
    signer: &Signer,
) -> Result<Message, DeskError> {
    let ack_deadline = deadlines.ack_deadline(&envelope);
    let mut message = Message {
        envelope: Some(envelope),
        direction: Direction::Outbound as i32,
        ack_deadline,
        ..Default::default()
    };
    lifecycle::enter(&mut message, MessageState::Queued, timestamp::now(), note);
    changes.put(StoredMessage {
        message: Some(message.clone()),
        seq: changes.next_seq()?,
        overdue_announced: false,
        hold_until: None,
        submitted_by,
        receipt: None,
        origin_certificate: signer.certificate().to_vec(),
    })?;
    Ok(message)
}
