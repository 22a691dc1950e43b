//! The follow-ups of a preservation this node sent: an extension request (the new date asked)
//! and the note that the mutual legal assistance request was sent (its reference). Both are a
//! PRESERVATION request chained to the preservation (`in_reply_to`), with `follow_up` set. The
//! command line (`extend`, `mla-sent`) and the console's two forms build them here, so both
//! send the same `Submit`; the desk then checks it as any other.

use crate::domain::timestamp::rfc3339;
use crate::domain::validation::{FieldError, check_safe_text};
use crate::proto::{Direction, Message, PreservationFollowUp, RequestType, SubmitRequest};

/// What follows a preservation up.
#[derive(Debug, Clone, PartialEq)]
pub enum FollowUp {
    /// An extension asked until this time (`None`: no date given).
    Extension(Option<prost_types::Timestamp>),
    /// The mutual legal assistance request was sent, under this reference.
    MlaSent(String),
}

/// Why no follow-up request could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowUpError {
    /// The message (its id) is not a preservation request this node sent.
    #[error("{0} is not a preservation request this node sent")]
    NotSentPreservation(String),
    /// A field of the follow-up is missing or not acceptable (named as in the proto).
    #[error(transparent)]
    Invalid(#[from] FieldError),
}

/// The `Submit` that follows `preservation` (as `Get` returned it) up with `follow_up` and the
/// free text `text`: to its destination, with its precedence, language and conditions. Refused
/// here: a message this node did not send or that is no preservation, a missing date or one
/// not later than the date the data is preserved until now, an empty reference. The caller sets
/// `client_request_id` if it may repeat the call.
pub fn request(
    preservation: &Message,
    follow_up: FollowUp,
    text: String,
) -> Result<SubmitRequest, FollowUpError> {
    let envelope = preservation.envelope.clone().unwrap_or_default();
    if preservation.direction() != Direction::Outbound || envelope.request_type() != RequestType::Preservation
    {
        return Err(FollowUpError::NotSentPreservation(envelope.id));
    }
    let (subject, follow_up) = match follow_up {
        FollowUp::Extension(None) => {
            return Err(FieldError::new(
                "follow_up.extend_until",
                "required: the date the data should be preserved until",
            )
            .into());
        }
        FollowUp::Extension(Some(until)) => {
            if let Some(current) = &preservation.preserved_until
                && (until.seconds, until.nanos) <= (current.seconds, current.nanos)
            {
                return Err(FieldError::new(
                    "follow_up.extend_until",
                    format!(
                        "must be later than the date the data is preserved until now ({})",
                        rfc3339(current)
                    ),
                )
                .into());
            }
            let subject = format!("Extension of the preservation until {}", rfc3339(&until));
            (subject, PreservationFollowUp { extend_until: Some(until), ..Default::default() })
        }
        FollowUp::MlaSent(reference) => {
            let reference = reference.trim().to_owned();
            if reference.is_empty() {
                return Err(FieldError::new(
                    "follow_up.mla_reference",
                    "required: the mutual legal assistance request's reference",
                )
                .into());
            }
            // Before it goes into the subject, which would be refused in its name.
            check_safe_text("follow_up.mla_reference", &reference, false)?;
            let subject = format!("Mutual legal assistance request sent: {reference}");
            (subject, PreservationFollowUp { mla_reference: reference, ..Default::default() })
        }
    };
    Ok(SubmitRequest {
        destination: envelope.destination,
        request_type: RequestType::Preservation as i32,
        precedence: envelope.precedence,
        subject,
        body: text,
        language: envelope.language,
        in_reply_to: envelope.id,
        handling_code: envelope.handling_code,
        handling_restrictions: envelope.handling_restrictions,
        follow_up: Some(follow_up),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Envelope, Precedence};

    fn sent(direction: Direction, request_type: RequestType) -> Message {
        Message {
            envelope: Some(Envelope {
                id: "p-1".into(),
                destination: "FR".into(),
                request_type: request_type as i32,
                precedence: Precedence::Flash as i32,
                language: "en".into(),
                ..Default::default()
            }),
            direction: direction as i32,
            preserved_until: Some(prost_types::Timestamp { seconds: 1_000_000, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn an_extension_chains_to_the_preservation_with_its_conditions() {
        let until = prost_types::Timestamp { seconds: 2_000_000, nanos: 0 };
        let preservation = sent(Direction::Outbound, RequestType::Preservation);
        let request = request(&preservation, FollowUp::Extension(Some(until)), "please".into()).unwrap();
        assert_eq!((request.destination.as_str(), request.in_reply_to.as_str()), ("FR", "p-1"));
        assert_eq!((request.precedence(), request.language.as_str()), (Precedence::Flash, "en"));
        assert_eq!(request.follow_up.unwrap().extend_until, Some(until));
        assert!(request.subject.starts_with("Extension of the preservation until"));
        assert!(request.client_request_id.is_empty(), "the caller's to set");
    }

    #[test]
    fn bad_follow_ups_are_refused_naming_the_field() {
        let preservation = sent(Direction::Outbound, RequestType::Preservation);
        let field = |follow_up| match request(&preservation, follow_up, String::new()) {
            Err(FollowUpError::Invalid(error)) => error.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(FollowUp::Extension(None)), "follow_up.extend_until");
        let same = prost_types::Timestamp { seconds: 1_000_000, nanos: 0 };
        assert_eq!(field(FollowUp::Extension(Some(same))), "follow_up.extend_until");
        assert_eq!(field(FollowUp::MlaSent(" ".into())), "follow_up.mla_reference");
        assert_eq!(field(FollowUp::MlaSent("MLA\u{7}1".into())), "follow_up.mla_reference");
        let mla = request(&preservation, FollowUp::MlaSent(" MLA-7 ".into()), String::new()).unwrap();
        assert_eq!(mla.follow_up.unwrap().mla_reference, "MLA-7");
        for other in [
            sent(Direction::Inbound, RequestType::Preservation),
            sent(Direction::Outbound, RequestType::TechnicalAdvice),
        ] {
            let refused = request(&other, FollowUp::MlaSent("M".into()), String::new());
            assert_eq!(refused, Err(FollowUpError::NotSentPreservation("p-1".into())));
        }
    }
}
