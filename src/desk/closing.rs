//! Closing a case: the request an officer names (sent or received), the chain it belongs to
//! from its first request down (what is not closed yet: a follow-up that joined a closed case is
//! closed by naming it), marked closed with the time and who closed it. Nothing goes to
//! the peer: closing is this node's decision about what it keeps (`node::retention` removes the
//! content once `[retention] closed_content` is over).

use uuid::Uuid;

use super::authorization::audit_call;
use super::{Desk, DeskError, parse_id_field, stored_for};
use crate::domain::access::{Action, Caller};
use crate::domain::lifecycle::state_name;
use crate::domain::timestamp;
use crate::domain::validation::check_reply_text;
use crate::proto::{CloseCaseRequest, Direction, EnvelopeKind, Message, MessageState};
use crate::store::audit::text_digest;
use crate::store::closed_cases::MAX_CASE_ENVELOPES;
use crate::store::{Changes, view};

impl Desk {
    /// Closes the case of request `id` (every envelope of its chain). Returns the request as
    /// stored now and the ids closed, the first request first.
    pub async fn close_case(
        &self,
        caller: &Caller,
        request: CloseCaseRequest,
    ) -> Result<(Message, Vec<String>), DeskError> {
        let CloseCaseRequest { id, reason } = request;
        let id = parse_id_field("id", &id)?;
        check_reply_text("reason", &reason, &self.context.config.limits)?;
        let now = self.context.clock.now();
        let closed = self.context.store.write(|changes| {
            let details =
                if reason.is_empty() { String::new() } else { format!("a reason of {}", text_digest(&reason)) };
            audit_call(changes, caller, Action::CloseCase, &id.to_string(), &details);
            let named = view(&stored_for(changes, id)?);
            if named.envelope.as_ref().is_none_or(|e| e.kind() != EnvelopeKind::Request) {
                return Err(DeskError::WrongMessage(format!(
                    "{id} is not a request: close the case by its request's id"
                )));
            }
            if let Some(at) = &named.closed_at {
                return Err(DeskError::WrongMessage(format!(
                    "the case of {id} was already closed at {} by {}",
                    timestamp::rfc3339(at),
                    named.closed_by
                )));
            }
            let first = first_request(changes, id)?;
            // What is closed already (before a follow-up joined) keeps its closing.
            let case: Vec<_> = self
                .context
                .store
                .case_envelopes(first)?
                .into_iter()
                .filter(|stored| stored.message.as_ref().is_some_and(|m| m.closed_at.is_none()))
                .collect();
            if let Some(waiting) = case.iter().map(view).find(|m| {
                m.direction() == Direction::Outbound
                    && matches!(m.state(), MessageState::Queued | MessageState::WaitingRetry)
            }) {
                return Err(DeskError::WrongMessage(format!(
                    "{} of this case still waits to be sent ({}): wait for its delivery or cancel it, then close the case",
                    waiting.envelope.as_ref().map(|e| e.id.as_str()).unwrap_or_default(),
                    state_name(waiting.state())
                )));
            }
            let note = format!("case closed by {}", caller.name);
            let mut ids = Vec::with_capacity(case.len());
            let mut named_now = named;
            for mut stored in case {
                let Some(message) = stored.message.as_mut() else { continue };
                message.closed_at = Some(timestamp::from_system(now));
                message.closed_by.clone_from(&caller.name);
                message.close_reason.clone_from(&reason);
                let message = message.clone();
                changes.put(stored)?;
                changes.record_note_event(&message, "CLOSED", &note);
                let message_id = message.envelope.as_ref().map(|e| e.id.clone()).unwrap_or_default();
                if message_id == id.to_string() {
                    named_now = message;
                }
                ids.push(message_id);
            }
            changes.mark_case_closed(first, now);
            Ok::<_, DeskError>((named_now, ids))
        })?;
        self.announce(&[]).await?;
        Ok(closed)
    }
}

/// The first request of the chain `id` belongs to: up the `in_reply_to` links while they name a
/// stored request.
fn first_request(changes: &Changes<'_>, id: Uuid) -> Result<Uuid, DeskError> {
    let mut first = id;
    for _ in 0..MAX_CASE_ENVELOPES {
        let message = view(&stored_for(changes, first)?);
        let parent = message.envelope.as_ref().and_then(|e| Uuid::parse_str(&e.in_reply_to).ok());
        let Some(parent) = parent else { break };
        match changes.get(parent)? {
            Some(stored) if view(&stored).envelope.is_some_and(|e| e.kind() == EnvelopeKind::Request) => {
                first = parent;
            }
            _ => break,
        }
    }
    Ok(first)
}
