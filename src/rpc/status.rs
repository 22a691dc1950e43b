//! The one place where errors become gRPC statuses, each with a message a person can act on.

use tonic::Status;

use crate::desk::DeskError;
use crate::peer::receive::PeerError;
use crate::store::StoreError;

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
        let status = match &error {
            DeskError::Invalid(field) => Status::new(field.code(), field.to_string()),
            DeskError::NotFound(_) => Status::not_found(error.to_string()),
            DeskError::Lifecycle { .. } | DeskError::WrongMessage(_) => {
                Status::failed_precondition(error.to_string())
            }
            DeskError::Forbidden(_) => Status::permission_denied(error.to_string()),
            DeskError::Busy(_) => Status::resource_exhausted(error.to_string()),
            DeskError::AlreadyExists(_) => Status::already_exists(error.to_string()),
            DeskError::Store(store) => store_status(store),
            DeskError::Signing(_) => Status::internal(error.to_string()),
        };
        capped(status)
    }
}

impl From<PeerError> for Status {
    fn from(error: PeerError) -> Self {
        let status = match &error {
            PeerError::NotAPeer(_) | PeerError::OriginMismatch { .. } => {
                Status::permission_denied(error.to_string())
            }
            PeerError::EmptyBatch => Status::invalid_argument(error.to_string()),
            PeerError::OutOfOrder(crate::peer::batch_order::OrderError::BadSession(_)) => {
                Status::invalid_argument(error.to_string())
            }
            PeerError::OutOfOrder(_) => Status::aborted(error.to_string()),
            PeerError::Batch(field) => Status::new(field.code(), error.to_string()),
            PeerError::Store(store) => store_status(store),
            PeerError::Signing(_) => Status::internal(error.to_string()),
        };
        capped(status)
    }
}

/// Longest status message, in bytes. Messages quote what the caller sent (an id that is not a
/// UUID, a claimed origin); a huge value must not become a huge `grpc-message` header, which
/// HTTP/2 peers refuse (the caller would see a broken connection instead of the refusal).
const MAX_MESSAGE_BYTES: usize = 1024;

/// `status` with its message cut to [`MAX_MESSAGE_BYTES`] (at a character boundary).
fn capped(status: Status) -> Status {
    let message = status.message();
    if message.len() <= MAX_MESSAGE_BYTES {
        return status;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Status::new(status.code(), format!("{}… ({} bytes in all)", &message[..end], message.len()))
}
