//! The message lifecycle of docs/design.md as one transition function, and the timeline it writes.
//!
//! Every state change of every message goes through [`apply`]; nothing else assigns
//! `Message::state`. Envelopes can overtake each other (an acknowledgement may be stored before
//! the receipt of the request it acknowledges is processed), so transitions that are already
//! implied by a later state are accepted as "no change" rather than refused.

use prost_types::Timestamp;

use crate::domain::names::ShortName;
use crate::proto::{Direction, EnvelopeKind, Message, MessageState, TimelineEntry};

/// Something that happens to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    /// A delivery attempt failed (connection, timeout, or the peer refused the envelope).
    SendFailed,
    /// The destination's receipt says the envelope is on its disk.
    ReceiptArrived,
    /// The destination's desk acknowledged the request.
    AcknowledgementArrived,
    /// The destination's desk answered the request.
    ResponseArrived,
    /// `expires_at` passed before delivery.
    DeadlinePassed,
    /// This node's desk withdrew a request it sent.
    CancelledHere,
    /// An operator queued an expired request again, with a new expiry.
    RequeuedHere,
    /// The origin withdrew a request this node received.
    CancellationArrived,
    /// This node's desk took a received request.
    AcknowledgedHere,
    /// This node's desk answered a received request.
    AnsweredHere,
    /// The destination's desk answers that it needs more information (a response whose outcome
    /// is MORE_INFORMATION_NEEDED): the case stays open.
    InformationRequestArrived,
    /// This node's desk answered a received request that it needs more information first.
    InformationRequestedHere,
}

/// What a response does to its request: one with the outcome MORE_INFORMATION_NEEDED keeps the
/// case open (ACKNOWLEDGED), any other answers it. `here`: this node's desk answers.
pub fn response_happening(outcome: Option<crate::proto::OutcomeKind>, here: bool) -> Happening {
    let more_information = outcome == Some(crate::proto::OutcomeKind::MoreInformationNeeded);
    match (more_information, here) {
        (true, true) => Happening::InformationRequestedHere,
        (true, false) => Happening::InformationRequestArrived,
        (false, true) => Happening::AnsweredHere,
        (false, false) => Happening::ResponseArrived,
    }
}

/// What a happening does to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The message enters this state.
    Enter(MessageState),
    /// Nothing changes (the happening is already implied by the current state).
    Stay,
}

/// A happening that the message's current state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message is {state}: {reason}")]
pub struct LifecycleError {
    /// The state name, e.g. "ANSWERED".
    pub state: &'static str,
    /// What cannot be done and why.
    pub reason: &'static str,
}

/// The state name as operators read it ("WAITING_RETRY"): [`ShortName::short_name`], kept under
/// this name because the lifecycle's errors and many views call it.
pub fn state_name(state: MessageState) -> &'static str {
    state.short_name()
}

/// The transition table. `is_request` is false for acknowledgements, responses and the like,
/// which only travel (QUEUED → DELIVERED) and are never acknowledged themselves.
pub fn next(
    direction: Direction,
    is_request: bool,
    current: MessageState,
    happening: Happening,
) -> Result<Outcome, LifecycleError> {
    use Happening as H;
    use MessageState as S;
    use Outcome::{Enter, Stay};
    let refuse = |reason| Err(LifecycleError { state: state_name(current), reason });
    match direction {
        Direction::Outbound => match (current, happening) {
            (S::Queued, H::SendFailed) => Ok(Enter(S::WaitingRetry)),
            (S::WaitingRetry, H::SendFailed) => Ok(Stay),
            (S::Queued | S::WaitingRetry | S::Expired, H::ReceiptArrived) => Ok(Enter(S::Delivered)),
            (S::Queued | S::WaitingRetry, H::DeadlinePassed) => Ok(Enter(S::Expired)),
            // A late failure report or receipt for something already past that point.
            (_, H::SendFailed | H::ReceiptArrived | H::DeadlinePassed) => Ok(Stay),
            (
                _,
                H::AcknowledgementArrived
                | H::ResponseArrived
                | H::InformationRequestArrived
                | H::CancelledHere,
            ) if !is_request => refuse("only requests are acknowledged, answered or cancelled"),
            (S::Queued | S::WaitingRetry | S::Delivered | S::Expired, H::AcknowledgementArrived) => {
                Ok(Enter(S::Acknowledged))
            }
            (_, H::AcknowledgementArrived) => Ok(Stay),
            // Asked for more information, the case stays open: at least ACKNOWLEDGED, never
            // back from ANSWERED (a later answer may still ask for more).
            (S::Queued | S::WaitingRetry | S::Delivered | S::Expired, H::InformationRequestArrived) => {
                Ok(Enter(S::Acknowledged))
            }
            (_, H::InformationRequestArrived) => Ok(Stay),
            (
                S::Queued | S::WaitingRetry | S::Delivered | S::Acknowledged | S::Expired,
                H::ResponseArrived,
            ) => Ok(Enter(S::Answered)),
            (_, H::ResponseArrived) => Ok(Stay),
            (S::Queued | S::WaitingRetry | S::Delivered | S::Acknowledged, H::CancelledHere) => {
                Ok(Enter(S::Cancelled))
            }
            (S::Cancelled, H::CancelledHere) => refuse("it is already cancelled"),
            (S::Answered, H::CancelledHere) => refuse("it was already answered"),
            (S::Expired, H::CancelledHere) => refuse("it expired undelivered and will never be sent"),
            (_, H::CancelledHere) => refuse("it cannot be cancelled"),
            (S::Expired, H::RequeuedHere) => Ok(Enter(S::Queued)),
            (_, H::RequeuedHere) => refuse("only an EXPIRED message can be requeued"),
            (
                _,
                H::CancellationArrived | H::AcknowledgedHere | H::AnsweredHere | H::InformationRequestedHere,
            ) => refuse("this node sent it; only its destination can acknowledge or answer it"),
        },
        Direction::Inbound => match (current, happening) {
            (
                _,
                H::AcknowledgedHere | H::AnsweredHere | H::InformationRequestedHere | H::CancellationArrived,
            ) if !is_request => refuse("only requests can be acknowledged, answered or cancelled"),
            (S::Received, H::AcknowledgedHere) => Ok(Enter(S::Acknowledged)),
            (S::Acknowledged | S::Answered, H::AcknowledgedHere) => refuse("it is already acknowledged"),
            (S::Received | S::Acknowledged, H::AnsweredHere) => Ok(Enter(S::Answered)),
            // Further answers (partial, then complete) are normal between 24/7 desks.
            (S::Answered, H::AnsweredHere) => Ok(Stay),
            (S::Received, H::InformationRequestedHere) => Ok(Enter(S::Acknowledged)),
            (S::Acknowledged | S::Answered, H::InformationRequestedHere) => Ok(Stay),
            (S::Cancelled, H::InformationRequestedHere) => refuse("its origin withdrew it"),
            (S::Cancelled, H::AcknowledgedHere | H::AnsweredHere) => refuse("its origin withdrew it"),
            (S::Received | S::Acknowledged | S::Answered, H::CancellationArrived) => Ok(Enter(S::Cancelled)),
            (S::Cancelled, H::CancellationArrived) => Ok(Stay),
            _ => refuse("this node received it; only its origin tracks its delivery"),
        },
        Direction::Unspecified => refuse("the message has no direction"),
    }
}

/// Applies a happening to a message: on a state change the new state is set and a timeline
/// entry written. Returns whether the state changed.
pub fn apply(
    message: &mut Message,
    happening: Happening,
    at: Timestamp,
    note: String,
) -> Result<bool, LifecycleError> {
    let is_request = message.envelope.as_ref().is_some_and(|e| e.kind() == EnvelopeKind::Request);
    match next(message.direction(), is_request, message.state(), happening)? {
        Outcome::Stay => Ok(false),
        Outcome::Enter(state) => {
            enter(message, state, at, note);
            Ok(true)
        }
    }
}

/// Records a response's typed outcome on the request it answers (not a state change: the state
/// follows [`response_happening`]): the latest outcome, and `preserved_until` when it says one.
/// Returns whether the record changed.
pub fn record_outcome(request: &mut Message, outcome: &crate::proto::Outcome) -> bool {
    let mut changed = request.outcome.as_ref() != Some(outcome);
    request.outcome = Some(outcome.clone());
    changed |= record_preserved_until(request, outcome.preserved_until);
    changed
}

/// Moves a preservation's `preserved_until` to `until` (from its own outcome or an executed
/// extension's). Returns whether it changed.
pub fn record_preserved_until(request: &mut Message, until: Option<Timestamp>) -> bool {
    match until {
        Some(until) if request.preserved_until != Some(until) => {
            request.preserved_until = Some(until);
            true
        }
        _ => false,
    }
}

/// Puts a new message in its first state, with the first timeline entry.
pub fn enter(message: &mut Message, state: MessageState, at: Timestamp, note: String) {
    message.set_state(state);
    message.timeline.push(TimelineEntry { at: Some(at), state: state as i32, note });
}

#[cfg(test)]
mod tests {
    use super::*;
    use Happening as H;
    use MessageState as S;

    /// Sender side, for requests: the lifecycle diagram of docs/design.md.
    #[test]
    fn outbound_request_table() {
        let cases = [
            (S::Queued, H::SendFailed, Some(S::WaitingRetry)),
            (S::WaitingRetry, H::SendFailed, None),
            (S::WaitingRetry, H::ReceiptArrived, Some(S::Delivered)),
            (S::Queued, H::ReceiptArrived, Some(S::Delivered)),
            (S::Delivered, H::ReceiptArrived, None),
            (S::Delivered, H::AcknowledgementArrived, Some(S::Acknowledged)),
            (S::Queued, H::AcknowledgementArrived, Some(S::Acknowledged)),
            (S::Acknowledged, H::ReceiptArrived, None),
            (S::Acknowledged, H::ResponseArrived, Some(S::Answered)),
            (S::Delivered, H::ResponseArrived, Some(S::Answered)),
            (S::Answered, H::AcknowledgementArrived, None),
            (S::Answered, H::ResponseArrived, None),
            (S::Queued, H::DeadlinePassed, Some(S::Expired)),
            (S::WaitingRetry, H::DeadlinePassed, Some(S::Expired)),
            (S::Delivered, H::DeadlinePassed, None),
            (S::Queued, H::CancelledHere, Some(S::Cancelled)),
            (S::Delivered, H::CancelledHere, Some(S::Cancelled)),
            (S::Cancelled, H::ReceiptArrived, None),
            (S::Expired, H::RequeuedHere, Some(S::Queued)),
            (S::Delivered, H::InformationRequestArrived, Some(S::Acknowledged)),
            (S::Acknowledged, H::InformationRequestArrived, None),
            (S::Answered, H::InformationRequestArrived, None),
        ];
        for (from, happening, to) in cases {
            let got = next(Direction::Outbound, true, from, happening).unwrap();
            let want = to.map_or(Outcome::Stay, Outcome::Enter);
            assert_eq!(got, want, "{from:?} + {happening:?}");
        }
    }

    #[test]
    fn outbound_refusals() {
        for (from, happening) in [
            (S::Answered, H::CancelledHere),
            (S::Cancelled, H::CancelledHere),
            (S::Expired, H::CancelledHere),
            (S::Queued, H::AcknowledgedHere),
            (S::Delivered, H::RequeuedHere),
            (S::Cancelled, H::RequeuedHere),
        ] {
            assert!(next(Direction::Outbound, true, from, happening).is_err(), "{from:?} + {happening:?}");
        }
        assert!(next(Direction::Outbound, false, S::Delivered, H::CancelledHere).is_err());
    }

    #[test]
    fn inbound_request_table() {
        let cases = [
            (S::Received, H::AcknowledgedHere, Some(S::Acknowledged)),
            (S::Received, H::AnsweredHere, Some(S::Answered)),
            (S::Acknowledged, H::AnsweredHere, Some(S::Answered)),
            (S::Answered, H::AnsweredHere, None),
            (S::Received, H::CancellationArrived, Some(S::Cancelled)),
            (S::Cancelled, H::CancellationArrived, None),
        ];
        for (from, happening, to) in cases {
            let got = next(Direction::Inbound, true, from, happening).unwrap();
            assert_eq!(got, to.map_or(Outcome::Stay, Outcome::Enter), "{from:?} + {happening:?}");
        }
        for (from, to) in [(S::Acknowledged, None), (S::Answered, None)] {
            let got = next(Direction::Inbound, true, from, H::InformationRequestedHere).unwrap();
            assert_eq!(got, to.map_or(Outcome::Stay, Outcome::Enter));
        }
        assert!(next(Direction::Inbound, true, S::Cancelled, H::InformationRequestedHere).is_err());
        let err = next(Direction::Inbound, true, S::Acknowledged, H::AcknowledgedHere).unwrap_err();
        assert_eq!(err.to_string(), "message is ACKNOWLEDGED: it is already acknowledged");
        assert!(next(Direction::Inbound, true, S::Cancelled, H::AnsweredHere).is_err());
        assert!(next(Direction::Inbound, false, S::Received, H::AcknowledgedHere).is_err());
        assert!(next(Direction::Inbound, true, S::Received, H::ReceiptArrived).is_err());
    }

    #[test]
    fn apply_writes_the_timeline_only_on_change() {
        let mut message = Message {
            envelope: Some(crate::proto::Envelope {
                kind: EnvelopeKind::Request as i32,
                ..Default::default()
            }),
            direction: Direction::Outbound as i32,
            ..Default::default()
        };
        enter(&mut message, S::Queued, Timestamp::default(), "stored".into());
        assert!(apply(&mut message, H::SendFailed, Timestamp::default(), "refused".into()).unwrap());
        assert!(!apply(&mut message, H::SendFailed, Timestamp::default(), "refused".into()).unwrap());
        assert_eq!(message.state(), S::WaitingRetry);
        assert_eq!(message.timeline.len(), 2);
    }
}
