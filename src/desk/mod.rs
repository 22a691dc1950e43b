//! The desk: what focal points, operators and agency systems do at their own node, as plain
//! operations of [`Desk`] over typed requests with a typed error ([`DeskError`]), and the
//! operator views over queues and peers. It owns the business rules of every desk call: who may
//! make it ([`Desk::authorize`], the one place an identity becomes a role), validation, the
//! lifecycle, the audit records, and when a change is durable. Both edges call it the same way:
//! the gRPC desk service (`rpc::desk_service`) and the console.
//!
//! Boundary: may import `runtime` and everything below it (and `crate::proto`); never the peer
//! side, the gRPC edge, the console or the node. Nothing here knows of tonic requests or
//! statuses: errors become gRPC statuses in `rpc::status` and HTTP statuses in the console.

mod attachments;
mod authorization;
mod bounds;
mod closing;
mod error;
mod group_signing;
mod handling;
pub mod operator_view;
mod reads;
pub mod statistics;
mod streams;
mod submission;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::domain::access::Caller;
use crate::domain::validation::FieldError;
use crate::proto::{Direction, Message, MessageState, Precedence};
use crate::runtime::context::NodeContext;
use crate::store::Changes;
use crate::store_proto::StoredMessage;

pub use attachments::DownloadStream;
pub use error::DeskError;
pub use streams::{AuditListing, AuditStream, BackupStream, EventStream, Watching};
pub use submission::Submitted;

/// The `ListAudit` response header with the page token of the next page (when paged).
pub const NEXT_PAGE_TOKEN_HEADER: &str = "hanoi247-next-page-token";

/// Listings return this many when the caller does not say.
const DEFAULT_LIST_LIMIT: usize = 100;
/// And never more than this.
const MAX_LIST_LIMIT: usize = 10_000;

/// The desk of one node: every desk call as a method taking the [`Caller`] that
/// [`Desk::authorize`] returned for that call's action. Every change is stored and flushed
/// before the method returns.
pub struct Desk {
    context: Arc<NodeContext>,
    /// Ends the streams (`watch`, `backup`, `list_audit`) when the node stops.
    stop: CancellationToken,
    /// The node's tasks: the streams' producer tasks run on it, so shutdown waits for them.
    tasks: TaskTracker,
    /// Signs concurrent `Submit`s' envelopes together.
    group_signer: group_signing::GroupSigner,
    /// Each client's call rate (`limits.desk_calls_per_second`).
    rate: bounds::CallRate,
    /// Each client's open streams (`limits.max_streams_per_client`).
    streams: bounds::StreamCount,
    /// Repeated audit records, counted until the end of `limits.audit_aggregation_interval`.
    series: Arc<bounds::AuditSeries>,
}

impl Desk {
    /// The desk over a node's shared state; `stop` ends its streams and `tasks` tracks the tasks
    /// that feed them (the node's own tracker, so shutdown waits for them).
    /// Its task writing the counts of repeated audit records runs on `tasks` too.
    pub fn new(context: Arc<NodeContext>, stop: CancellationToken, tasks: TaskTracker) -> Self {
        let limits = &context.config.limits;
        let (rate, streams) = (bounds::CallRate::new(limits), bounds::StreamCount::new(limits));
        let series = Arc::new(bounds::AuditSeries::new());
        tasks.spawn(authorization::write_repeats(Arc::clone(&context), Arc::clone(&series), stop.clone()));
        Self { context, stop, tasks, group_signer: Default::default(), rate, streams, series }
    }

    /// Runs `work` (a listing that scans the store) off the async workers.
    async fn off_the_workers<T: Send + 'static, E: Into<DeskError> + Send + 'static>(
        &self,
        work: impl FnOnce(&NodeContext) -> Result<T, E> + Send + 'static,
    ) -> Result<T, DeskError> {
        let context = Arc::clone(&self.context);
        match self.tasks.spawn_blocking(move || work(&context)).await {
            Ok(done) => done.map_err(Into::into),
            Err(e) => Err(crate::store::StoreError::Io(std::io::Error::other(format!(
                "a listing task failed: {e}"
            )))
            .into()),
        }
    }

    /// The node's shared state this desk works on.
    pub fn context(&self) -> &Arc<NodeContext> {
        &self.context
    }

    /// Persists (which also releases the changes' events to watchers), then wakes the delivery
    /// tasks: in that order, so nobody hears of a change that a crash could still undo.
    async fn announce(&self, changed: &[Message]) -> Result<(), DeskError> {
        self.context.store.persist().await?;
        for message in changed {
            if message.direction() == Direction::Outbound
                && message.state() == MessageState::Queued
                && let Some(envelope) = message.envelope.as_ref()
                && let Ok(code) = envelope.destination.parse()
            {
                let urgent = matches!(envelope.precedence(), Precedence::Flash | Precedence::Immediate);
                self.context.wake(code, urgent);
            }
        }
        Ok(())
    }

    /// The message `id` names, if the caller may see it; a refusal is recorded in the audit log
    /// as a refused `Get` (both `Get` and `GetProof` read a message this way).
    fn visible_message(&self, caller: &Caller, id: &str) -> Result<(Uuid, StoredMessage), DeskError> {
        let id = parse_id_field("id", id)?;
        let stored = self.context.store.get(id)?.ok_or_else(|| DeskError::NotFound(id.to_string()))?;
        if !caller.may_see(&stored.submitted_by) {
            let error = DeskError::Forbidden(format!("client '{}' did not submit {id}", caller.name));
            self.audit_refusal(
                authorization::audit_who(caller),
                crate::domain::access::Action::Get,
                &id.to_string(),
                &error,
            );
            return Err(error);
        }
        Ok((id, stored))
    }
}

/// The message id in `field`, or a refusal naming the field.
fn parse_id_field(field: &str, id: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(id.trim())
        .map_err(|_| FieldError::new(field, format!("'{id}' is not a message id (UUID)")))
}

/// How many messages a listing returns for the `limit` asked (0: the default).
fn list_limit(limit: u32) -> usize {
    match limit {
        0 => DEFAULT_LIST_LIMIT,
        n => (n as usize).min(MAX_LIST_LIMIT),
    }
}

/// The stored message `id`, read under the store's writer lock.
fn stored_for(changes: &Changes<'_>, id: Uuid) -> Result<StoredMessage, DeskError> {
    changes.get(id)?.ok_or_else(|| DeskError::NotFound(id.to_string()))
}
