//! The one place where errors become gRPC statuses, each with a message a person can act on.

use tonic::{Code, Status};

use crate::desk::DeskError;
use crate::peer_service::PeerError;
use crate::store::StoreError;
use crate::validation::FieldError;

fn store_status(error: &StoreError) -> Status {
    match error {
        StoreError::Sled(_) | StoreError::Io(_) | StoreError::Recovering(_) => Status::unavailable(format!(
            "the node cannot write its store right now ({error}); this call was not confirmed as stored: \
             retry later (after a Submit, check the outbox first: the store keeps whole messages or nothing)"
        )),
        StoreError::Corrupt { .. } | StoreError::Malformed(_) | StoreError::NewerSchema { .. } => {
            Status::internal(error.to_string())
        }
    }
}

/// The status code for a field refusal, also used in per-envelope `Refusal`s.
pub fn field_code(error: &FieldError) -> Code {
    if error.over_limit { Code::ResourceExhausted } else { Code::InvalidArgument }
}

impl From<DeskError> for Status {
    fn from(error: DeskError) -> Self {
        match &error {
            DeskError::Invalid(field) => Status::new(field_code(field), field.to_string()),
            DeskError::NotFound(_) => Status::not_found(error.to_string()),
            DeskError::Lifecycle { .. } | DeskError::WrongMessage(_) => {
                Status::failed_precondition(error.to_string())
            }
            DeskError::Forbidden(_) => Status::permission_denied(error.to_string()),
            DeskError::Store(store) => store_status(store),
        }
    }
}

impl From<PeerError> for Status {
    fn from(error: PeerError) -> Self {
        match &error {
            PeerError::NotAPeer(_) | PeerError::OriginMismatch { .. } => {
                Status::permission_denied(error.to_string())
            }
            PeerError::EmptyBatch => Status::invalid_argument(error.to_string()),
            PeerError::OutOfOrder(crate::batch_order::OrderError::BadSession(_)) => {
                Status::invalid_argument(error.to_string())
            }
            PeerError::OutOfOrder(_) => Status::aborted(error.to_string()),
            PeerError::Batch(field) => Status::new(field_code(field), error.to_string()),
            PeerError::Store(store) => store_status(store),
        }
    }
}
