//! Acting on a stored message: acknowledging, disputing the precedence of and answering a request
//! this node received (each queues a reply to its origin), and cancelling or requeueing one it
//! sent.

use crate::domain::names::ShortName as _;
use uuid::Uuid;

use super::authorization::audit_call;
use super::{Desk, DeskError, parse_id_field, stored_for};
use crate::domain::access::{Action, Caller};
use crate::domain::lifecycle::{self, Happening};
use crate::domain::timestamp;
use crate::domain::validation::{FieldError, check_reply_text};
use crate::proto::{
    AcknowledgeRequest, CancelRequest, Direction, DisputePrecedenceRequest, Envelope, EnvelopeKind, Message,
    MessageState, Outcome, Precedence, RequestType, RequeueRequest, RespondRequest,
};
use crate::store::audit::text_digest;
use crate::store::{Changes, view};
use crate::store_proto::StoredMessage;

impl Desk {
    /// Acknowledges a received request (RECEIVED → ACKNOWLEDGED) and queues the acknowledgement
    /// to its origin. Returns the request as stored now.
    pub async fn acknowledge(
        &self,
        caller: &Caller,
        request: AcknowledgeRequest,
    ) -> Result<Message, DeskError> {
        let AcknowledgeRequest { id, note } = request;
        let id = parse_id_field("id", &id)?;
        check_reply_text("note", &note, &self.context.config.limits)?;
        let (request_message, ack) = self.context.store.write(|changes| {
            let details =
                if note.is_empty() { String::new() } else { format!("a note of {}", text_digest(&note)) };
            audit_call(changes, caller, Action::Acknowledge, &id.to_string(), &details);
            let (stored, envelope) = inbound_request(changes, id)?;
            let (_, updated) = change(
                changes,
                stored,
                id,
                Happening::AcknowledgedHere,
                format!("acknowledged by {}", caller.name),
            )?;
            let ack = self.reply(&envelope, EnvelopeKind::Acknowledgement, &envelope.origin, note);
            let ack = self.queue_reply(changes, ack, format!("acknowledgement of {id}"), String::new())?;
            Ok::<_, DeskError>((updated, ack))
        })?;
        self.announce(&[request_message.clone(), ack]).await?;
        Ok(request_message)
    }

    /// Queues a precedence dispute of a received request to its origin, proposing another
    /// precedence. Returns the dispute as stored.
    pub async fn dispute_precedence(
        &self,
        caller: &Caller,
        request: DisputePrecedenceRequest,
    ) -> Result<Message, DeskError> {
        let DisputePrecedenceRequest { id, precedence, reason } = request;
        let id = parse_id_field("id", &id)?;
        check_reply_text("reason", &reason, &self.context.config.limits)?;
        if reason.trim().is_empty() {
            return Err(FieldError::new("reason", "required: why the precedence is wrong").into());
        }
        let proposed = match Precedence::try_from(precedence) {
            Ok(Precedence::Unspecified) | Err(_) => {
                return Err(
                    FieldError::new("precedence", "required: FLASH, IMMEDIATE, PRIORITY or ROUTINE").into()
                );
            }
            Ok(proposed) => proposed,
        };
        let dispute = self.context.store.write(|changes| {
            let details = format!("proposes {}, a reason of {}", proposed.short_name(), text_digest(&reason));
            audit_call(changes, caller, Action::DisputePrecedence, &id.to_string(), &details);
            let (_, envelope) = inbound_request(changes, id)?;
            if envelope.precedence() == proposed {
                let message = format!("the request is already {}", proposed.as_str_name());
                return Err(DeskError::from(FieldError::new("precedence", message)));
            }
            let mut dispute =
                self.reply(&envelope, EnvelopeKind::PrecedenceDispute, &envelope.origin, reason);
            // A dispute carries the precedence it proposes (envelope.proto).
            dispute.precedence = proposed as i32;
            self.queue_reply(
                changes,
                dispute,
                format!("precedence of {id} disputed by {}", caller.name),
                String::new(),
            )
        })?;
        self.announce(std::slice::from_ref(&dispute)).await?;
        Ok(dispute)
    }

    /// Answers a received request (acknowledging it first if it was not yet) and queues the
    /// response to its origin, with its typed outcome if one is given (which the request's state
    /// follows: `lifecycle::response_happening`). Returns the request as stored now.
    pub async fn respond(&self, caller: &Caller, request: RespondRequest) -> Result<Message, DeskError> {
        let RespondRequest { id, text, handling_code, handling_restrictions, attachments, outcome } = request;
        let id = parse_id_field("id", &id)?;
        check_reply_text("text", &text, &self.context.config.limits)?;
        let conditions = crate::domain::validation::check_response_handling(
            handling_code,
            &handling_restrictions,
            &self.context.config.limits,
        )?
        .map(|code| (code, handling_restrictions));
        if text.trim().is_empty() {
            return Err(FieldError::new("text", "required: the answer").into());
        }
        let attachments = self.respond_attachments(id, attachments)?;
        let (answered, changed) = self.context.store.write(|changes| {
            let kind = outcome.as_ref().map(|o| o.kind().short_name()).unwrap_or("none");
            let details = format!("an answer of {}, outcome {kind}", text_digest(&text));
            audit_call(changes, caller, Action::Respond, &id.to_string(), &details);
            let (mut stored, envelope) = inbound_request(changes, id)?;
            let outcome = outcome.map(|o| self.checked_outcome(o, &envelope)).transpose()?;
            let mut changed = Vec::new();
            if view(&stored).state() == MessageState::Received {
                let (after, updated) = change(
                    changes,
                    stored,
                    id,
                    Happening::AcknowledgedHere,
                    format!("acknowledged by {} (with the response)", caller.name),
                )?;
                stored = after;
                changed.push(updated);
                let ack =
                    self.reply(&envelope, EnvelopeKind::Acknowledgement, &envelope.origin, String::new());
                changed.push(self.queue_reply(
                    changes,
                    ack,
                    format!("acknowledgement of {id}"),
                    String::new(),
                )?);
            }
            let happening = lifecycle::response_happening(outcome.as_ref().map(|o| o.kind()), true);
            let verb = match &outcome {
                Some(o) => format!("answered {} by {}", o.kind().short_name(), caller.name),
                None => format!("answered by {}", caller.name),
            };
            let message = stored.message.get_or_insert_default();
            let moved = lifecycle::apply(message, happening, timestamp::now(), verb)
                .map_err(|error| DeskError::Lifecycle { id, error })?;
            let recorded = outcome.as_ref().is_some_and(|o| lifecycle::record_outcome(message, o));
            let answered = message.clone();
            changes.put(stored)?;
            if moved || recorded {
                changed.push(answered.clone());
            }
            if let Some(extended) = changes.extend_preservation(&envelope, outcome.as_ref())? {
                changed.push(extended);
            }
            let mut response = self.reply(&envelope, EnvelopeKind::Response, &envelope.origin, text);
            // The answering State's conditions on its own data; the request's are the default.
            if let Some((code, restrictions)) = conditions {
                response.handling_code = code as i32;
                response.handling_restrictions = restrictions;
            }
            response.outcome = outcome;
            if !attachments.is_empty() {
                response.attachments = attachments;
                super::attachments::check_still_held(changes, &response)?;
            }
            changed.push(self.queue_reply(changes, response, format!("response to {id}"), String::new())?);
            Ok::<_, DeskError>((answered, changed))
        })?;
        self.announce(&changed).await?;
        Ok(answered)
    }

    /// A typed outcome a desk client gave for an answer to `request`, checked (shape, the
    /// clock, whether the origin reads it) and linked: a traffic data disclosure names its
    /// preservation (the request, or the one it continues) unless the client did.
    fn checked_outcome(&self, mut outcome: Outcome, request: &Envelope) -> Result<Outcome, DeskError> {
        let limits = &self.context.config.limits;
        crate::domain::validation::check_outcome(&outcome, request.request_type(), limits)?;
        crate::domain::validation::check_preserved_until(&outcome, request, self.context.clock.now())?;
        if let Ok(origin) = request.origin.parse()
            && self.context.peers.known_not_to_read(origin, "outcome")
        {
            let version = self.context.peers.get(origin).software_version;
            return Err(DeskError::PeerCannotRead(FieldError::new(
                "outcome",
                format!(
                    "{origin} runs {}, which does not read typed outcomes: it would refuse the response as badly signed; answer in text only until {origin} is upgraded",
                    if version.is_empty() { "an older version".to_owned() } else { version }
                ),
            )));
        }
        if let Some(traffic) = outcome.traffic_data.as_mut()
            && traffic.preservation_id.is_empty()
        {
            traffic.preservation_id = if request.request_type() == RequestType::Preservation {
                request.id.clone()
            } else {
                request.in_reply_to.clone()
            };
        }
        Ok(outcome)
    }

    /// Withdraws a request this node sent; if it already left, queues a cancellation to its
    /// destination. Returns the request as stored now.
    pub async fn cancel(&self, caller: &Caller, request: CancelRequest) -> Result<Message, DeskError> {
        let CancelRequest { id, reason } = request;
        let id = parse_id_field("id", &id)?;
        check_reply_text("reason", &reason, &self.context.config.limits)?;
        if reason.trim().is_empty() {
            return Err(FieldError::new("reason", "required: why the request is withdrawn").into());
        }
        let (cancelled, changed) = self.context.store.write(|changes| {
            audit_call(
                changes,
                caller,
                Action::Cancel,
                &id.to_string(),
                &format!("a reason of {}", text_digest(&reason)),
            );
            let stored = stored_for(changes, id)?;
            let before = view(&stored);
            let envelope = before.envelope.clone().unwrap_or_default();
            if before.direction() != Direction::Outbound || envelope.kind() != EnvelopeKind::Request {
                return Err(DeskError::WrongMessage(format!("{id} is not a request this node sent")));
            }
            refuse_closed(&before, id)?;
            // Queued but in a `Deliver` call: the peer may hold it already (peer::delivery's
            // module docs); read under the writer lock, as the delivery task's re-check is.
            let in_flight =
                envelope.destination.parse().is_ok_and(|peer| self.context.waker(peer).may_be_at_peer(id));
            let was_sent =
                in_flight || !matches!(before.state(), MessageState::Queued | MessageState::WaitingRetry);
            let owner = stored.submitted_by.clone();
            let note = changes.note_with_text(format!("cancelled by {}", caller.name), &reason);
            let (_, cancelled) = change(changes, stored, id, Happening::CancelledHere, note)?;
            let mut changed = vec![cancelled.clone()];
            if was_sent {
                let cancellation =
                    self.reply(&envelope, EnvelopeKind::Cancellation, &envelope.destination, reason);
                changed.push(self.queue_reply(
                    changes,
                    cancellation,
                    format!("cancellation of {id}"),
                    owner,
                )?);
            }
            Ok((cancelled, changed))
        })?;
        self.announce(&changed).await?;
        Ok(cancelled)
    }

    /// Puts a message this node sent back in the queue with a new expiry (default: the node's
    /// default expiry from now), signed again. Returns the message as stored now.
    pub async fn requeue(&self, caller: &Caller, request: RequeueRequest) -> Result<Message, DeskError> {
        let RequeueRequest { id, expires_at } = request;
        let id = parse_id_field("id", &id)?;
        if let Some(expires_at) = &expires_at {
            crate::domain::validation::check_timestamp("expires_at", expires_at)?;
        }
        let expires_at =
            expires_at.unwrap_or_else(|| timestamp::after(self.context.config.delivery.default_expiry));
        if timestamp::to_system(&expires_at) <= self.context.clock.now() {
            return Err(FieldError::new("expires_at", "must be in the future").into());
        }
        let message = self.context.store.write(|changes| {
            let details = format!("expires {}", timestamp::rfc3339(&expires_at));
            audit_call(changes, caller, Action::Requeue, &id.to_string(), &details);
            let mut stored = stored_for(changes, id)?;
            if view(&stored).direction() != Direction::Outbound {
                return Err(DeskError::WrongMessage(format!("{id} is not a message this node sent")));
            }
            let message = stored.message.get_or_insert_default();
            let note = format!("requeued by {}, expires {}", caller.name, timestamp::rfc3339(&expires_at));
            lifecycle::apply(message, Happening::RequeuedHere, timestamp::now(), note)
                .map_err(|error| DeskError::Lifecycle { id, error })?;
            message.next_attempt_at = None;
            if let Some(envelope) = message.envelope.as_mut() {
                envelope.expires_at = Some(expires_at);
                // Peers check the lifetime from `created_at`, which a requeue keeps.
                crate::domain::validation::check_times(
                    envelope,
                    self.context.clock.now(),
                    &self.context.config.limits,
                )?;
                // The expiry is signed: sign again (the message was never delivered).
                self.context.signer.current().sign_envelope(envelope)?;
            }
            let message = message.clone();
            stored.origin_certificate = self.context.signer.current().certificate().to_vec();
            changes.put(stored)?;
            Ok::<_, DeskError>(message)
        })?;
        self.announce(std::slice::from_ref(&message)).await?;
        Ok(message)
    }

    /// A reply to `request` from this node to `to`, carrying `body`.
    fn reply(&self, request: &Envelope, kind: EnvelopeKind, to: &str, body: String) -> Envelope {
        let label = match kind {
            EnvelopeKind::Acknowledgement => "Acknowledged",
            EnvelopeKind::Response => "Response",
            EnvelopeKind::Cancellation => "Cancelled",
            EnvelopeKind::PrecedenceDispute => "Precedence disputed",
            _ => "Re",
        };
        let subject: String = format!("{label}: {}", request.subject)
            .chars()
            .take(self.context.config.limits.max_subject_chars)
            .collect();
        Envelope {
            id: Uuid::now_v7().to_string(),
            origin: self.context.code().to_string(),
            destination: to.to_owned(),
            kind: kind as i32,
            request_type: request.request_type,
            precedence: request.precedence,
            case_reference: request.case_reference.clone(),
            subject,
            body,
            language: request.language.clone(),
            // The node's clock, as every deadline and expiry here reads it.
            created_at: Some(self.context.clock.timestamp()),
            expires_at: Some(self.context.clock.after(self.context.config.delivery.default_expiry)),
            in_reply_to: request.id.clone(),
            attachments: Vec::new(),
            handling_code: request.handling_code,
            handling_restrictions: request.handling_restrictions.clone(),
            preservation: None,
            // A reply to an exercise is part of the exercise.
            exercise: request.exercise,
            outcome: None,
            follow_up: None,
            // Signed when it is stored (`queue`).
            origin_signature: Vec::new(),
            origin_batch: None,
        }
    }
}

/// Applies `happening` to a stored message and stores the result.
fn change(
    changes: &mut Changes<'_>,
    mut stored: StoredMessage,
    id: Uuid,
    happening: Happening,
    note: String,
) -> Result<(StoredMessage, Message), DeskError> {
    let message = stored.message.get_or_insert_default();
    lifecycle::apply(message, happening, timestamp::now(), note)
        .map_err(|error| DeskError::Lifecycle { id, error })?;
    let message = message.clone();
    changes.put(stored.clone())?;
    Ok((stored, message))
}

/// The received request `id`, checked to be one.
fn inbound_request(changes: &Changes<'_>, id: Uuid) -> Result<(StoredMessage, Envelope), DeskError> {
    let stored = stored_for(changes, id)?;
    let message = view(&stored);
    let envelope = message.envelope.clone().unwrap_or_default();
    if message.direction() != Direction::Inbound || envelope.kind() != EnvelopeKind::Request {
        return Err(DeskError::WrongMessage(format!("{id} is not a request this node received")));
    }
    refuse_closed(&message, id)?;
    Ok((stored, envelope))
}

/// A closed case takes no more acknowledgements, answers, disputes or cancellations: its content
/// is on its way out (`CloseCase`).
fn refuse_closed(message: &Message, id: Uuid) -> Result<(), DeskError> {
    match &message.closed_at {
        Some(at) => Err(DeskError::WrongMessage(format!(
            "the case of {id} was closed at {} by {}: nothing more is done in it",
            timestamp::rfc3339(at),
            message.closed_by
        ))),
        None => Ok(()),
    }
}
