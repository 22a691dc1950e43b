//! The desk API (`DeskService`): what focal points, operators and agency systems do at their own
//! node. Every change is stored and flushed before the call returns.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::config::DeadlinesConfig;
use crate::desk::operator_view::{self, ListFilter};
use crate::domain::access::{self, Action, Caller};
use crate::domain::identity::{Identity, NodeCode};
use crate::domain::lifecycle::{self, Happening, LifecycleError};
use crate::domain::timestamp;
use crate::domain::validation::{FieldError, check_envelope, check_reply_text};
use crate::proto::desk_service_server::DeskService;
use crate::proto::{
    AcknowledgeRequest, AcknowledgeResponse, CancelRequest, CancelResponse, Direction, Envelope,
    EnvelopeKind, Event, GetQueueRequest, GetQueueResponse, GetRequest, GetResponse, HandlingCode,
    ListInboxRequest, ListInboxResponse, ListOutboxRequest, ListOutboxResponse, ListPeersRequest,
    ListPeersResponse, Message, MessageState, RequeueRequest, RequeueResponse, RespondRequest,
    RespondResponse, SubmitRequest, SubmitResponse, WatchRequest,
};
use crate::proto::{AuditRecord, ListAuditRequest};
use crate::proto::{
    DisputePrecedenceRequest, DisputePrecedenceResponse, GetProofRequest, GetProofResponse, Precedence,
};
use crate::runtime::context::NodeContext;
use crate::store::{Changes, Listing, StoreError, view};
use crate::store_proto::StoredMessage;

/// Response header of `Watch`: the sequence number the stream starts after.
pub const WATCH_AFTER_HEADER: &str = "hanoi247-watch-after";

/// Listings return this many when the caller does not say.
const DEFAULT_LIST_LIMIT: usize = 100;
/// And never more than this.
const MAX_LIST_LIMIT: usize = 10_000;

/// Why a desk call was refused. Mapped to a gRPC status in `status.rs`.
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
    /// The caller may not make this call or see this message (certificate, role or ownership).
    #[error("{0}")]
    Forbidden(String),
    /// The store could not be read or written; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The envelope could not be signed; nothing was stored.
    #[error(transparent)]
    Signing(#[from] crate::trust::signing::SigningError),
}

/// The desk service of one node.
pub struct DeskApi {
    context: Arc<NodeContext>,
    stop: CancellationToken,
}

impl DeskApi {
    /// The desk service over a node's shared state; `stop` ends `Watch` streams at shutdown.
    pub fn new(context: Arc<NodeContext>, stop: CancellationToken) -> Self {
        Self { context, stop }
    }

    /// The desk client making the call, by its certificate, with its role from the config; refused
    /// unless its role may make `action` (the access table in `access`).
    fn authorize_caller<T>(&self, request: &Request<T>, action: Action) -> Result<Caller, DeskError> {
        let me = self.context.code();
        let name = match crate::trust::tls::caller_identity(request) {
            Some(Identity::Client { network, node, name })
                if network == self.context.config.network && node == me =>
            {
                name
            }
            Some(other) => {
                return Err(DeskError::Forbidden(format!("{other} is not a desk client of node {me}")));
            }
            None => return Err(DeskError::Forbidden("no client certificate identity".into())),
        };
        let Some(role) = self.context.config.role_of(&name) else {
            return Err(DeskError::Forbidden(format!(
                "client '{name}' has no role on node {me}: add it under [[clients]] in the node config"
            )));
        };
        let Some(scope) = access::scope(role, action) else {
            return Err(DeskError::Forbidden(format!(
                "client '{name}' ({}) may not call {action:?}",
                role.name()
            )));
        };
        Ok(Caller { name, role, scope })
    }

    /// Refuses a message the caller may not see.
    fn check_visible(caller: &Caller, id: Uuid, stored: &StoredMessage) -> Result<(), DeskError> {
        if caller.may_see(&stored.submitted_by) {
            Ok(())
        } else {
            Err(DeskError::Forbidden(format!("client '{}' did not submit {id}", caller.name)))
        }
    }

    fn submit_envelope(&self, request: SubmitRequest) -> Result<Envelope, DeskError> {
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
            id => Some(self.load(parse_id_field("in_reply_to", id)?).map_err(|e| match e {
                DeskError::NotFound(id) => {
                    FieldError::new("in_reply_to", format!("no message with id {id}")).into()
                }
                other => other,
            })?),
        };
        let case_reference = match (request.case_reference.trim(), &parent) {
            ("", Some(parent)) => {
                parent.envelope.as_ref().map(|e| e.case_reference.clone()).unwrap_or_default()
            }
            ("", None) => new_case_reference(config.code),
            (given, _) => given.to_owned(),
        };
        let now = timestamp::now();
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
        };
        check_envelope(&envelope, &config.limits)?;
        Ok(envelope)
    }

    fn load(&self, id: Uuid) -> Result<Message, DeskError> {
        self.context
            .store
            .get(id)?
            .map(|stored| view(&stored))
            .ok_or_else(|| DeskError::NotFound(id.to_string()))
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
            created_at: Some(timestamp::now()),
            expires_at: Some(timestamp::after(self.context.config.delivery.default_expiry)),
            in_reply_to: request.id.clone(),
            attachments: Vec::new(),
            handling_code: request.handling_code,
            handling_restrictions: request.handling_restrictions.clone(),
            preservation: None,
            // Signed when it is stored (`queue`).
            origin_signature: Vec::new(),
        }
    }
}

/// Signs a new outbound envelope and stores it, QUEUED (with the signing certificate, for proofs).
fn queue(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    mut envelope: Envelope,
    note: String,
    submitted_by: String,
    signer: &crate::trust::signing::Signer,
) -> Result<Message, DeskError> {
    signer.sign_envelope(&mut envelope)?;
    queue_signed(changes, deadlines, envelope, note, submitted_by, signer)
}

/// Stores an outbound envelope that `signer` has just signed, QUEUED (with the signing
/// certificate, for proofs). `Submit` signs before it takes the store's lock.
fn queue_signed(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    envelope: Envelope,
    note: String,
    submitted_by: String,
    signer: &crate::trust::signing::Signer,
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

/// What proves a stored message: the canonical envelope, its signature and certificate, the
/// receipt and the network CA.
fn proof_of(context: &NodeContext, id: Uuid, stored: &StoredMessage) -> Result<GetProofResponse, DeskError> {
    let message = view(stored);
    let envelope = message.envelope.clone().unwrap_or_default();
    let signer = context.signer.current();
    if envelope.origin_signature.is_empty() || stored.origin_certificate.is_empty() {
        return Err(DeskError::WrongMessage(format!(
            "{id} was stored before this node signed envelopes: there is no signature to prove it"
        )));
    }
    Ok(GetProofResponse {
        network: context.config.network.clone(),
        envelope_canonical: crate::trust::signing::canonical_envelope(&envelope),
        origin_signature: envelope.origin_signature.clone(),
        origin_certificate: stored.origin_certificate.clone(),
        receipt: stored.receipt.clone(),
        network_ca_certificate: signer.network_ca_of(&stored.origin_certificate).to_vec(),
        receiver_network_ca_certificate: stored
            .receipt
            .as_ref()
            .map(|r| signer.network_ca_of(&r.receiver_certificate).to_vec())
            .unwrap_or_default(),
        direction: message.direction,
    })
}

fn parse_id_field(field: &str, id: &str) -> Result<Uuid, FieldError> {
    Uuid::parse_str(id.trim())
        .map_err(|_| FieldError::new(field, format!("'{id}' is not a message id (UUID)")))
}

fn new_case_reference(origin: NodeCode) -> String {
    let year = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    format!("{origin}-{}-{:08x}", &year[..4], fastrand::u32(..))
}

fn list_limit(limit: u32) -> usize {
    match limit {
        0 => DEFAULT_LIST_LIMIT,
        n => (n as usize).min(MAX_LIST_LIMIT),
    }
}

fn stored_for(changes: &Changes<'_>, id: Uuid) -> Result<StoredMessage, DeskError> {
    changes.get(id)?.ok_or_else(|| DeskError::NotFound(id.to_string()))
}

/// The received request `id`, checked to be one.
fn inbound_request(changes: &Changes<'_>, id: Uuid) -> Result<(StoredMessage, Envelope), DeskError> {
    let stored = stored_for(changes, id)?;
    let message = view(&stored);
    let envelope = message.envelope.clone().unwrap_or_default();
    if message.direction() != Direction::Inbound || envelope.kind() != EnvelopeKind::Request {
        return Err(DeskError::WrongMessage(format!("{id} is not a request this node received")));
    }
    Ok((stored, envelope))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send>>;
type BackupStream = Pin<Box<dyn Stream<Item = Result<crate::proto::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl DeskService for DeskApi {
    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let client = self.authorize(&request, Action::Submit)?;
        let mut envelope = self.submit_envelope(request.into_inner())?;
        let (id, destination, precedence) =
            (envelope.id.clone(), envelope.destination.clone(), envelope.precedence().as_str_name());
        // Signed before the store's lock: concurrent Submits sign in parallel.
        let signer = self.context.signer.current();
        signer.sign_envelope(&mut envelope).map_err(DeskError::from)?;
        let message = self.context.store.write(|changes| {
            let details = format!("to {destination}, {}", precedence.trim_start_matches("PRECEDENCE_"));
            audit_call(changes, &client, Action::Submit, &id, &details);
            queue_signed(
                changes,
                &self.context.config.deadlines,
                envelope,
                format!("submitted by {}", client.name),
                client.name.clone(),
                &signer,
            )
        })?;
        self.announce(std::slice::from_ref(&message)).await?;
        tracing::info!(message_id = %id, peer = %destination, precedence, client = %client.name, "request submitted");
        Ok(Response::new(SubmitResponse { message: Some(message) }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let caller = self.authorize(&request, Action::Get)?;
        let (id, stored) = self.visible_message(&caller, &request.get_ref().id)?;
        let replies = self.context.store.replies(id).map_err(DeskError::from)?;
        let replies: Vec<Message> =
            replies.iter().filter(|r| caller.may_see(&r.submitted_by)).map(view).collect();
        let details = format!("replies: {}", replies.len());
        self.audit_read(&caller, Action::Get, &id.to_string(), &details).await?;
        Ok(Response::new(GetResponse { message: Some(view(&stored)), replies }))
    }

    async fn list_inbox(
        &self,
        request: Request<ListInboxRequest>,
    ) -> Result<Response<ListInboxResponse>, Status> {
        let caller = self.authorize(&request, Action::ListInbox)?;
        let filter = ListFilter::inbox(request.get_ref()).map_err(DeskError::from)?;
        let limit = list_limit(request.get_ref().limit);
        let messages = operator_view::list(&self.context, Listing::Inbox, &filter, &caller, limit)
            .map_err(DeskError::from)?;
        self.audit_read(&caller, Action::ListInbox, "", &format!("{} messages", messages.len())).await?;
        Ok(Response::new(ListInboxResponse { messages }))
    }

    async fn list_outbox(
        &self,
        request: Request<ListOutboxRequest>,
    ) -> Result<Response<ListOutboxResponse>, Status> {
        let caller = self.authorize(&request, Action::ListOutbox)?;
        let filter = ListFilter::outbox(request.get_ref()).map_err(DeskError::from)?;
        let limit = list_limit(request.get_ref().limit);
        let messages = operator_view::list(&self.context, Listing::Outbox, &filter, &caller, limit)
            .map_err(DeskError::from)?;
        self.audit_read(&caller, Action::ListOutbox, "", &format!("{} messages", messages.len())).await?;
        Ok(Response::new(ListOutboxResponse { messages }))
    }

    async fn get_queue(
        &self,
        request: Request<GetQueueRequest>,
    ) -> Result<Response<GetQueueResponse>, Status> {
        let caller = self.authorize(&request, Action::GetQueue)?;
        let peers = operator_view::queue(&self.context).map_err(DeskError::from)?;
        self.audit_read(&caller, Action::GetQueue, "", &format!("{} peers", peers.len())).await?;
        Ok(Response::new(GetQueueResponse { peers }))
    }

    async fn list_peers(
        &self,
        request: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        self.authorize(&request, Action::ListPeers)?;
        Ok(Response::new(operator_view::peers(&self.context)))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let client = self.authorize(&request, Action::Acknowledge)?;
        let AcknowledgeRequest { id, note } = request.into_inner();
        let id = parse_id_field("id", &id).map_err(DeskError::from)?;
        check_reply_text("note", &note, &self.context.config.limits).map_err(DeskError::from)?;
        let (request_message, ack) = self.context.store.write(|changes| {
            audit_call(changes, &client, Action::Acknowledge, &id.to_string(), &note);
            let (stored, envelope) = inbound_request(changes, id)?;
            let (_, updated) = change(
                changes,
                stored,
                id,
                Happening::AcknowledgedHere,
                format!("acknowledged by {}", client.name),
            )?;
            let ack = self.reply(&envelope, EnvelopeKind::Acknowledgement, &envelope.origin, note);
            let ack = queue(
                changes,
                &self.context.config.deadlines,
                ack,
                format!("acknowledgement of {id}"),
                String::new(),
                &self.context.signer.current(),
            )?;
            Ok::<_, DeskError>((updated, ack))
        })?;
        self.announce(&[request_message.clone(), ack]).await?;
        Ok(Response::new(AcknowledgeResponse { message: Some(request_message) }))
    }

    async fn dispute_precedence(
        &self,
        request: Request<DisputePrecedenceRequest>,
    ) -> Result<Response<DisputePrecedenceResponse>, Status> {
        let client = self.authorize(&request, Action::DisputePrecedence)?;
        let DisputePrecedenceRequest { id, precedence, reason } = request.into_inner();
        let id = parse_id_field("id", &id).map_err(DeskError::from)?;
        check_reply_text("reason", &reason, &self.context.config.limits).map_err(DeskError::from)?;
        if reason.trim().is_empty() {
            return Err(
                DeskError::from(FieldError::new("reason", "required: why the precedence is wrong")).into()
            );
        }
        let proposed = match Precedence::try_from(precedence) {
            Ok(Precedence::Unspecified) | Err(_) => {
                let field = FieldError::new("precedence", "required: FLASH, IMMEDIATE, PRIORITY or ROUTINE");
                return Err(DeskError::from(field).into());
            }
            Ok(proposed) => proposed,
        };
        let dispute = self.context.store.write(|changes| {
            let details =
                format!("proposes {}: {reason}", proposed.as_str_name().trim_start_matches("PRECEDENCE_"));
            audit_call(changes, &client, Action::DisputePrecedence, &id.to_string(), &details);
            let (_, envelope) = inbound_request(changes, id)?;
            if envelope.precedence() == proposed {
                let message = format!("the request is already {}", proposed.as_str_name());
                return Err(DeskError::from(FieldError::new("precedence", message)));
            }
            let mut dispute =
                self.reply(&envelope, EnvelopeKind::PrecedenceDispute, &envelope.origin, reason);
            // A dispute carries the precedence it proposes (envelope.proto).
            dispute.precedence = proposed as i32;
            queue(
                changes,
                &self.context.config.deadlines,
                dispute,
                format!("precedence of {id} disputed by {}", client.name),
                String::new(),
                &self.context.signer.current(),
            )
        })?;
        self.announce(std::slice::from_ref(&dispute)).await?;
        Ok(Response::new(DisputePrecedenceResponse { dispute: Some(dispute) }))
    }

    async fn respond(&self, request: Request<RespondRequest>) -> Result<Response<RespondResponse>, Status> {
        let client = self.authorize(&request, Action::Respond)?;
        let RespondRequest { id, text } = request.into_inner();
        let id = parse_id_field("id", &id).map_err(DeskError::from)?;
        check_reply_text("text", &text, &self.context.config.limits).map_err(DeskError::from)?;
        if text.trim().is_empty() {
            return Err(DeskError::from(FieldError::new("text", "required: the answer")).into());
        }
        let changed = self.context.store.write(|changes| {
            let details = format!("an answer of {} characters", text.chars().count());
            audit_call(changes, &client, Action::Respond, &id.to_string(), &details);
            let (mut stored, envelope) = inbound_request(changes, id)?;
            let mut changed = Vec::new();
            if view(&stored).state() == MessageState::Received {
                let (after, updated) = change(
                    changes,
                    stored,
                    id,
                    Happening::AcknowledgedHere,
                    format!("acknowledged by {} (with the response)", client.name),
                )?;
                stored = after;
                changed.push(updated);
                let ack =
                    self.reply(&envelope, EnvelopeKind::Acknowledgement, &envelope.origin, String::new());
                changed.push(queue(
                    changes,
                    &self.context.config.deadlines,
                    ack,
                    format!("acknowledgement of {id}"),
                    String::new(),
                    &self.context.signer.current(),
                )?);
            }
            let (_, updated) =
                change(changes, stored, id, Happening::AnsweredHere, format!("answered by {}", client.name))?;
            changed.push(updated);
            let response = self.reply(&envelope, EnvelopeKind::Response, &envelope.origin, text);
            changed.push(queue(
                changes,
                &self.context.config.deadlines,
                response,
                format!("response to {id}"),
                String::new(),
                &self.context.signer.current(),
            )?);
            Ok::<_, DeskError>(changed)
        })?;
        self.announce(&changed).await?;
        let request_message = changed.into_iter().rev().find(|m| m.direction() == Direction::Inbound);
        Ok(Response::new(RespondResponse { message: request_message }))
    }

    async fn cancel(&self, request: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        let client = self.authorize(&request, Action::Cancel)?;
        let CancelRequest { id, reason } = request.into_inner();
        let id = parse_id_field("id", &id).map_err(DeskError::from)?;
        check_reply_text("reason", &reason, &self.context.config.limits).map_err(DeskError::from)?;
        if reason.trim().is_empty() {
            return Err(
                DeskError::from(FieldError::new("reason", "required: why the request is withdrawn")).into()
            );
        }
        let changed = self.context.store.write(|changes| {
            audit_call(changes, &client, Action::Cancel, &id.to_string(), &reason);
            let stored = stored_for(changes, id)?;
            let before = view(&stored);
            let envelope = before.envelope.clone().unwrap_or_default();
            if before.direction() != Direction::Outbound || envelope.kind() != EnvelopeKind::Request {
                return Err(DeskError::WrongMessage(format!("{id} is not a request this node sent")));
            }
            let was_sent = !matches!(before.state(), MessageState::Queued | MessageState::WaitingRetry);
            let owner = stored.submitted_by.clone();
            let (_, updated) = change(
                changes,
                stored,
                id,
                Happening::CancelledHere,
                format!("cancelled by {}: {reason}", client.name),
            )?;
            let mut changed = vec![updated];
            if was_sent {
                let cancellation =
                    self.reply(&envelope, EnvelopeKind::Cancellation, &envelope.destination, reason);
                changed.push(queue(
                    changes,
                    &self.context.config.deadlines,
                    cancellation,
                    format!("cancellation of {id}"),
                    owner,
                    &self.context.signer.current(),
                )?);
            }
            Ok(changed)
        })?;
        self.announce(&changed).await?;
        Ok(Response::new(CancelResponse { message: changed.into_iter().next() }))
    }

    async fn requeue(&self, request: Request<RequeueRequest>) -> Result<Response<RequeueResponse>, Status> {
        let client = self.authorize(&request, Action::Requeue)?;
        let RequeueRequest { id, expires_at } = request.into_inner();
        let id = parse_id_field("id", &id).map_err(DeskError::from)?;
        let expires_at =
            expires_at.unwrap_or_else(|| timestamp::after(self.context.config.delivery.default_expiry));
        if timestamp::to_system(&expires_at) <= std::time::SystemTime::now() {
            return Err(DeskError::from(FieldError::new("expires_at", "must be in the future")).into());
        }
        let message = self.context.store.write(|changes| {
            let details = format!("expires {}", timestamp::rfc3339(&expires_at));
            audit_call(changes, &client, Action::Requeue, &id.to_string(), &details);
            let mut stored = stored_for(changes, id)?;
            if view(&stored).direction() != Direction::Outbound {
                return Err(DeskError::WrongMessage(format!("{id} is not a message this node sent")));
            }
            let message = stored.message.get_or_insert_default();
            let note = format!("requeued by {}, expires {}", client.name, timestamp::rfc3339(&expires_at));
            lifecycle::apply(message, Happening::RequeuedHere, timestamp::now(), note)
                .map_err(|error| DeskError::Lifecycle { id, error })?;
            message.next_attempt_at = None;
            if let Some(envelope) = message.envelope.as_mut() {
                envelope.expires_at = Some(expires_at);
                // The expiry is signed: sign again (the message was never delivered).
                self.context.signer.current().sign_envelope(envelope)?;
            }
            let message = message.clone();
            stored.origin_certificate = self.context.signer.current().certificate().to_vec();
            changes.put(stored)?;
            Ok::<_, DeskError>(message)
        })?;
        self.announce(std::slice::from_ref(&message)).await?;
        Ok(Response::new(RequeueResponse { message: Some(message) }))
    }

    async fn get_proof(
        &self,
        request: Request<GetProofRequest>,
    ) -> Result<Response<GetProofResponse>, Status> {
        let caller = self.authorize(&request, Action::Get)?;
        let (id, stored) = self.visible_message(&caller, &request.get_ref().id)?;
        let proof = proof_of(&self.context, id, &stored)?;
        // Recorded as a `Get` (what it reads), told apart by its details.
        self.audit_read(&caller, Action::Get, &id.to_string(), "proof (signatures and receipt)").await?;
        Ok(Response::new(proof))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.authorize(&request, Action::Watch)?;
        let after = request
            .into_inner()
            .after_sequence
            .unwrap_or_else(|| crate::store::events::latest(&self.context.store));
        let pruned = self.context.store.events_pruned_through().map_err(DeskError::from)?;
        if after < pruned {
            return Err(
                DeskError::from(StoreError::EventsPruned { first: after + 1, through: pruned }).into()
            );
        }
        self.audit_read(&caller, Action::Watch, "", &format!("events after {after}")).await?;
        let events = crate::store::events::follow(self.context.store.clone(), after, self.stop.clone());
        let store = self.context.store.clone();
        // An agency follows only its own messages' events.
        let visible = move |event: &Event| {
            caller.scope == access::Scope::All
                || event
                    .message_id
                    .parse()
                    .ok()
                    .and_then(|id| store.get(id).ok().flatten())
                    .is_some_and(|stored| caller.may_see(&stored.submitted_by))
        };
        let stream: WatchStream = Box::pin(
            events
                .filter(move |item| item.as_ref().map_or(true, &visible))
                .map(|item| item.map_err(|e| Status::from(DeskError::from(e)))),
        );
        let mut response = Response::new(stream);
        // Tells a watcher that asked for "from now" where now is, so it can resume without a gap.
        response.metadata_mut().insert(WATCH_AFTER_HEADER, after.into());
        Ok(response)
    }

    type BackupStream = BackupStream;

    async fn backup(
        &self,
        request: Request<crate::proto::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let caller = self.authorize(&request, Action::Backup)?;
        // A copy of every message is a read of every message: on the record before it is taken.
        self.audit_read(&caller, Action::Backup, "", "the whole store").await?;
        let store = self.context.store.clone();
        let taken_at = std::time::SystemTime::now();
        // The copy holds the writer lock for one walk over the keys: off the async workers.
        let snapshot = tokio::task::spawn_blocking(move || store.snapshot()).await.unwrap_or_else(|e| {
            Err(StoreError::Io(std::io::Error::other(format!("the snapshot task failed: {e}"))))
        });
        let snapshot = snapshot.map_err(DeskError::from)?;
        // Everything in the copy was applied before this flush began, so after it the copy holds
        // only what is on the device.
        self.context.store.persist().await.map_err(DeskError::from)?;
        tracing::info!(client = %caller.name, records = snapshot.len(), "backup taken; streaming it");
        let chunks = crate::store::backup::Chunks::new(snapshot, self.context.code(), taken_at);
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let stop = self.stop.clone();
        tokio::task::spawn_blocking(move || {
            let mut sent = 0;
            for data in chunks {
                sent += data.len();
                // A node shutting down, or a client gone, ends the stream; the file is then
                // incomplete and the client's check says so.
                if stop.is_cancelled()
                    || sender.blocking_send(Ok(crate::proto::BackupChunk { data })).is_err()
                {
                    tracing::warn!(client = %caller.name, "backup stream ended before the file was complete");
                    return;
                }
            }
            tracing::info!(client = %caller.name, bytes = sent, "backup sent");
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
    }
    type ListAuditStream = AuditStream;

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<Self::ListAuditStream>, Status> {
        let caller = self.authorize(&request, Action::ListAudit)?;
        let filter = match request.get_ref().message_id.trim() {
            "" => None,
            id => Some(parse_id_field("message_id", id).map_err(DeskError::from)?.to_string()),
        };
        let details = filter.as_ref().map(|id| format!("records of {id}")).unwrap_or_default();
        let head = self.audit_read(&caller, Action::ListAudit, "", &details).await?;
        let records = stream_audit(self.context.store.clone(), head.sequence, filter, self.stop.clone());
        let mut response = Response::new(records);
        // Digits, ':' and hex digits: always a valid header value.
        if let Ok(header) = head.to_text().parse() {
            response.metadata_mut().insert(crate::store::audit::AUDIT_HEAD_HEADER, header);
        }
        Ok(response)
    }
}

impl DeskApi {
    /// The message `id` names, if the caller may see it; a refusal is recorded in the audit log
    /// as a refused `Get` (both `Get` and `GetProof` read a message this way).
    fn visible_message(&self, caller: &Caller, id: &str) -> Result<(Uuid, StoredMessage), DeskError> {
        let id = parse_id_field("id", id)?;
        let stored = self.context.store.get(id)?.ok_or_else(|| DeskError::NotFound(id.to_string()))?;
        if let Err(error) = Self::check_visible(caller, id, &stored) {
            self.audit_refusal(audit_who(caller), Action::Get, &id.to_string(), &error);
            return Err(error);
        }
        Ok((id, stored))
    }
}

/// Who a desk caller is in the audit log: "<name> (<role>)".
fn audit_who(caller: &Caller) -> String {
    format!("{} ({})", caller.name, caller.role.name())
}

/// Names the caller in this operation's audit records and records the call itself (before the
/// state changes it causes, which `Changes::put` records).
fn audit_call(changes: &mut Changes<'_>, caller: &Caller, action: Action, id: &str, details: &str) {
    changes.act_as(audit_who(caller));
    changes.audit(&format!("{action:?}"), id, details);
}

impl DeskApi {
    /// [`DeskApi::authorize_caller`], recording a refusal in the audit log.
    fn authorize<T>(&self, request: &Request<T>, action: Action) -> Result<Caller, DeskError> {
        self.authorize_caller(request, action).inspect_err(|error| {
            let who = match crate::trust::tls::caller_identity(request) {
                Some(Identity::Client { name, .. }) => {
                    let role = self.context.config.role_of(&name).map_or("no role", |role| role.name());
                    format!("{name} ({role})")
                }
                Some(other) => other.to_string(),
                None => "no identity".to_owned(),
            };
            self.audit_refusal(who, action, "", error);
        })
    }

    /// Records a refused call. Not waited for: nobody is told anything stored, and the record
    /// becomes durable with the next flush (the next change, or sled's own within a second).
    fn audit_refusal(&self, who: String, action: Action, id: &str, error: &DeskError) {
        let recorded = self.context.store.write(|changes| {
            changes.act_as(who);
            changes.audit(&format!("{action:?}"), id, &format!("REFUSED: {error}"));
            Ok::<_, StoreError>(())
        });
        if let Err(error) = recorded {
            tracing::warn!(%error, "a refused desk call could not be recorded in the audit log");
        }
    }

    /// Records a read in the audit log and makes the record durable before anything is handed
    /// out: a read that cannot be recorded is refused (UNAVAILABLE while the store recovers).
    /// Returns the chain head that includes the record.
    async fn audit_read(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        details: &str,
    ) -> Result<crate::store::audit::ChainHead, DeskError> {
        let head = self.context.store.write(|changes| {
            audit_call(changes, caller, action, id, details);
            Ok::<_, DeskError>(changes.audit_head())
        })?;
        self.context.store.persist().await?;
        Ok(head)
    }
}

type AuditStream = Pin<Box<dyn Stream<Item = Result<AuditRecord, Status>> + Send>>;

/// Audit records read per store access while streaming.
const AUDIT_PAGE: usize = 512;

/// Streams the audit records up to `upto` (durable when the call began), only those about
/// `message_id` if given (damaged records always, so they are seen). Pages are read as the
/// client takes them, so a long chain is never held in memory whole.
fn stream_audit(
    store: crate::store::Store,
    upto: u64,
    message_id: Option<String>,
    stop: CancellationToken,
) -> AuditStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(AUDIT_PAGE);
    tokio::spawn(async move {
        let mut after = 0;
        while after < upto {
            let page = match store.audit_records(after, upto, AUDIT_PAGE) {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(Status::from(DeskError::from(error)))).await;
                    return;
                }
            };
            // Paged by the keys' sequence numbers, not the records' own (which may be forged).
            let Some(&(last, _)) = page.last() else { return };
            after = last;
            for (_, record) in page {
                if message_id.as_ref().is_some_and(|id| *id != record.message_id && record.damaged.is_empty())
                {
                    continue;
                }
                tokio::select! {
                    sent = sender.send(Ok(record)) => {
                        if sent.is_err() {
                            return;
                        }
                    }
                    () = stop.cancelled() => return,
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
