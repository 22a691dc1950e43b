//! Why a desk call was refused: one typed error for every desk operation, which each edge maps
//! to its own status (gRPC in `rpc::status`, HTTP in the console).

use uuid::Uuid;

use crate::domain::lifecycle::LifecycleError;
use crate::domain::validation::FieldError;
use crate::store::StoreError;

/// Why a desk call was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    /// A field of the request is wrong.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No message has this id.
    #[error("no message with id {0}")]
    NotFound(String),
    /// The message's state does not allow the call.
    #[error("{id}: {error}")]
    Lifecycle {
        /// The message.
        id: Uuid,
        /// Why not.
        error: LifecycleError,
    },
    /// The call needs a different kind of message (e.g. acknowledging one this node sent).
    #[error("{0}")]
    WrongMessage(String),
    /// The destination runs a version that does not read an optional envelope field the request
    /// sets (the field is named). Nothing was stored.
    #[error(transparent)]
    PeerCannotRead(FieldError),
    /// The caller may not make this call or see this message (certificate, role or ownership).
    #[error("{0}")]
    Forbidden(String),
    /// The client is over a `[limits]` bound of its own (call rate, open streams); the message
    /// names the limit and when to retry. Nothing was done.
    #[error("{0}")]
    Busy(String),
    /// What the call would create exists already and is not what the call asked for (a client
    /// request id reused for a different request); the message names the field. Nothing was done.
    #[error("{0}")]
    AlreadyExists(String),
    /// The store could not be read or written; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The envelope could not be signed; nothing was stored.
    #[error(transparent)]
    Signing(#[from] crate::trust::signing::SigningError),
}
