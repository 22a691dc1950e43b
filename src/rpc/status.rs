//! The one place where errors become gRPC statuses, each with a message a person can act on and,
//! for a refusal of what the caller sent or of what it asked for in this state, details a
//! program can act on: `google.rpc.ErrorInfo` with a stable [`Reason`] (domain
//! [`ERROR_DOMAIN`]) and, when a field is at fault, `google.rpc.BadRequest` naming it.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::desk::DeskError;
use crate::domain::validation::FieldError;
use crate::peer::receive::PeerError;
use crate::store::StoreError;

/// The `domain` of every `ErrorInfo` this node sends.
pub const ERROR_DOMAIN: &str = "hanoi247";

/// Why a call was refused, as a program reads it (`ErrorInfo.reason`). The names are part of the
/// API: never rename one (the README lists them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// INVALID_ARGUMENT: a field of the request is wrong; `BadRequest` names it.
    InvalidField,
    /// RESOURCE_EXHAUSTED: a field is well-formed but over a `[limits]` bound; `BadRequest`
    /// names it.
    FieldOverLimit,
    /// INVALID_ARGUMENT: the request is not a decodable protobuf message.
    MalformedRequest,
    /// FAILED_PRECONDITION: the message's state does not allow the call (`metadata.state`).
    WrongState,
    /// FAILED_PRECONDITION: the call needs another kind of message (e.g. acknowledging one this
    /// node sent).
    WrongMessage,
    /// INVALID_ARGUMENT (peer API): a `Deliver` batch without envelopes.
    EmptyBatch,
    /// FAILED_PRECONDITION: the destination runs a version that does not read an optional
    /// envelope field the request sets (`exercise`); `BadRequest` names it.
    PeerCannotRead,
}

impl Reason {
    /// Every reason, for the README and its test.
    pub const ALL: [Reason; 7] = [
        Reason::InvalidField,
        Reason::FieldOverLimit,
        Reason::MalformedRequest,
        Reason::WrongState,
        Reason::WrongMessage,
        Reason::EmptyBatch,
        Reason::PeerCannotRead,
    ];

    /// The stable SCREAMING_SNAKE name sent in `ErrorInfo.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidField => "INVALID_FIELD",
            Reason::FieldOverLimit => "FIELD_OVER_LIMIT",
            Reason::MalformedRequest => "MALFORMED_REQUEST",
            Reason::WrongState => "WRONG_STATE",
            Reason::WrongMessage => "WRONG_MESSAGE",
            Reason::EmptyBatch => "EMPTY_BATCH",
            Reason::PeerCannotRead => "PEER_CANNOT_READ",
        }
    }
}

fn store_status(error: &StoreError) -> Status {
    match error {
        StoreError::Sled(_) | StoreError::Io(_) | StoreError::Recovering(_) => Status::unavailable(format!(
            "the node cannot write its store right now ({error}); this call was not confirmed as stored: \
             retry later (after a Submit, check the outbox first: the store keeps whole messages or nothing)"
        )),
        StoreError::EventsPruned { .. } => Status::out_of_range(error.to_string()),
        StoreError::Corrupt { .. } | StoreError::Malformed(_) | StoreError::NewerSchema { .. } => {
            Status::internal(error.to_string())
        }
    }
}

impl From<DeskError> for Status {
    fn from(error: DeskError) -> Self {
        match &error {
            DeskError::Invalid(field) => field_status(field, &field.to_string()),
            DeskError::NotFound(_) => capped(Status::not_found(error.to_string())),
            DeskError::Lifecycle { id, error: lifecycle } => refusal(
                Code::FailedPrecondition,
                &error.to_string(),
                Reason::WrongState,
                [("id", id.to_string()), ("state", lifecycle.state.to_owned())].into(),
            ),
            DeskError::PeerCannotRead(field) => {
                let mut details = ErrorDetails::new();
                let metadata = [("field".to_owned(), field.field.clone())];
                details.set_error_info(Reason::PeerCannotRead.as_str(), ERROR_DOMAIN, metadata);
                details.add_bad_request_violation(field.field.clone(), cut(&field.message));
                Status::with_error_details(Code::FailedPrecondition, cut(&field.to_string()), details)
            }
            DeskError::WrongMessage(_) => {
                refusal(Code::FailedPrecondition, &error.to_string(), Reason::WrongMessage, HashMap::new())
            }
            DeskError::Forbidden(_) => capped(Status::permission_denied(error.to_string())),
            DeskError::Busy(_) => capped(Status::resource_exhausted(error.to_string())),
            DeskError::AlreadyExists(_) => capped(Status::already_exists(error.to_string())),
            DeskError::Store(store) => capped(store_status(store)),
            DeskError::Signing(_) => capped(Status::internal(error.to_string())),
        }
    }
}

impl From<PeerError> for Status {
    fn from(error: PeerError) -> Self {
        match &error {
            PeerError::NotAPeer(_) | PeerError::OriginMismatch { .. } | PeerError::OtherNode(_) => {
                capped(Status::permission_denied(error.to_string()))
            }
            PeerError::EmptyBatch => {
                refusal(Code::InvalidArgument, &error.to_string(), Reason::EmptyBatch, HashMap::new())
            }
            PeerError::OutOfOrder(crate::peer::batch_order::OrderError::BadSession(_)) => {
                field_status(&FieldError::new("sender_session", "not a UUID"), &error.to_string())
            }
            PeerError::OutOfOrder(_) => capped(Status::aborted(error.to_string())),
            PeerError::Batch(field) | PeerError::Invalid(field) => field_status(field, &error.to_string()),
            PeerError::Store(store) => capped(store_status(store)),
            PeerError::Signing(_) => capped(Status::internal(error.to_string())),
            PeerError::Busy(_) => capped(Status::resource_exhausted(error.to_string())),
        }
    }
}

/// INVALID_ARGUMENT for a request that does not decode (`message` says where), with its reason.
pub fn malformed_request(message: &str) -> Status {
    refusal(Code::InvalidArgument, message, Reason::MalformedRequest, HashMap::new())
}

/// The status of a refused field: its code, `message`, `ErrorInfo` (with `metadata.field`) and a
/// `BadRequest` violation naming the field.
fn field_status(field: &FieldError, message: &str) -> Status {
    let reason = if field.over_limit { Reason::FieldOverLimit } else { Reason::InvalidField };
    let mut details = ErrorDetails::new();
    details.set_error_info(reason.as_str(), ERROR_DOMAIN, [("field".to_owned(), field.field.clone())]);
    details.add_bad_request_violation(field.field.clone(), cut(&field.message));
    Status::with_error_details(field.code(), cut(message), details)
}

/// A refusal with `code`, `message` and an `ErrorInfo` of `reason`.
fn refusal(code: Code, message: &str, reason: Reason, metadata: HashMap<&str, String>) -> Status {
    let metadata: HashMap<String, String> =
        metadata.into_iter().map(|(k, v)| (k.to_owned(), cut(&v))).collect();
    let details = ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata);
    Status::with_error_details(code, cut(message), details)
}

/// Longest status message, in bytes. Messages quote what the caller sent (an id that is not a
/// UUID, a claimed origin); a huge value must not become a huge `grpc-message` header, which
/// HTTP/2 peers refuse (the caller would see a broken connection instead of the refusal). The
/// same bound holds for each text in the details (`grpc-status-details-bin`, also a header).
const MAX_MESSAGE_BYTES: usize = 1024;

/// `status` with its message cut to [`MAX_MESSAGE_BYTES`] (a status without details).
fn capped(status: Status) -> Status {
    if status.message().len() <= MAX_MESSAGE_BYTES {
        return status;
    }
    Status::new(status.code(), cut(status.message()))
}

/// `message` cut to [`MAX_MESSAGE_BYTES`] (at a character boundary), saying how long it was.
fn cut(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &message[..end], message.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_carries_bad_request_and_error_info() {
        let status = Status::from(DeskError::Invalid(FieldError::new("subject", "required")));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("a BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "subject");
        let info = status.get_details_error_info().expect("an ErrorInfo detail");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_FIELD", ERROR_DOMAIN));
    }

    #[test]
    fn reasons_are_screaming_snake_and_distinct() {
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for name in names {
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{name}");
        }
    }

    #[test]
    fn the_readme_lists_every_reason() {
        let readme = include_str!("../../README.md");
        for reason in Reason::ALL {
            assert!(
                readme.contains(&format!("| `{}` |", reason.as_str())),
                "{} not in the README",
                reason.as_str()
            );
        }
    }

    #[test]
    fn a_huge_message_is_cut_in_the_details_too() {
        let huge = "x".repeat(10_000);
        let status = Status::from(DeskError::Invalid(FieldError::new("id", huge)));
        assert!(status.message().len() < 1200);
        let bad = status.get_details_bad_request().expect("a BadRequest detail");
        assert!(bad.field_violations[0].description.len() < 1200);
    }
}
