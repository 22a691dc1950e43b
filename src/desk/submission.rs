//! Sending: a new request from a desk client (`submit`), and the signing and queueing of every
//! envelope this node originates (requests and the replies `handling` makes).
//!
//! A `Submit` may carry a client request id (a UUID the client makes once per request and sends
//! with every retry). The store keeps (client, request id) → (message id, digest of the
//! request's content) in the write that stores the message, so no crash separates them, and
//! looks it up again under the writer lock before storing: a retry, whenever it comes and
//! however many arrive at once, gets the message already stored and never makes a second one.
//! A different request under a used id is refused (ALREADY_EXISTS).

use crate::domain::names::ShortName as _;
use uuid::Uuid;

use super::authorization::audit_call;
use super::{Desk, DeskError, parse_id_field};
use crate::config::DeadlinesConfig;
use crate::domain::access::{Action, Caller};
use crate::domain::identity::NodeCode;
use crate::domain::lifecycle;
use crate::domain::timestamp;
use crate::domain::validation::{FieldError, check_envelope, check_times, check_timestamp};
use crate::proto::{Direction, Envelope, EnvelopeKind, HandlingCode, Message, MessageState, SubmitRequest};
use crate::store::{Changes, ClientRequest, StoreError, peer_of, view};
use crate::store_proto::StoredMessage;
use crate::trust::signing::Signer;

/// What a `Submit` answers: the request it stored, or the one an earlier call with the same client
/// request id stored.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The stored request (QUEUED when stored by this call, as it stands now when replayed).
    pub message: Message,
    /// The call repeated an earlier one: nothing new was stored.
    pub replayed: bool,
    /// Stored, but worth a second look (e.g. a language the destination does not list).
    pub warnings: Vec<String>,
}

/// What the store write of a `Submit` did.
enum Stored {
    /// Stored this message.
    New(Box<Message>),
    /// Nothing: a concurrent call under the same client request id had stored `message_id`.
    Earlier {
        /// The client request id.
        request_id: Uuid,
        /// The message the other call stored.
        message_id: Uuid,
    },
}

/// The field a client request id comes in.
const REQUEST_ID_FIELD: &str = "client_request_id";

impl Desk {
    /// Stores a new request from `caller` to another node, signed and QUEUED, and wakes its
    /// delivery task. Returns the stored message (for a retry under a client request id, the one
    /// the first call stored: see [`Desk::submit_or_replay`]).
    pub async fn submit(&self, caller: &Caller, request: SubmitRequest) -> Result<Message, DeskError> {
        Ok(self.submit_or_replay(caller, request).await?.message)
    }

    /// [`Desk::submit`], saying whether the call replayed an earlier one: with a
    /// `client_request_id` this client already used for the same content, nothing is stored and
    /// the earlier message comes back; for other content, ALREADY_EXISTS.
    pub async fn submit_or_replay(
        &self,
        caller: &Caller,
        request: SubmitRequest,
    ) -> Result<Submitted, DeskError> {
        let mut submitted = self.store_or_replay(caller, request).await?;
        submitted.warnings = self.language_warning(&submitted.message).into_iter().collect();
        Ok(submitted)
    }

    /// A warning when the request's language is not one the destination's directory entry lists
    /// as a working language: the request is stored all the same (a desk may still read it), but
    /// the officer should know before the peer asks for a translation.
    fn language_warning(&self, message: &Message) -> Option<String> {
        let envelope = message.envelope.as_ref()?;
        let member = self.context.peer(envelope.destination.parse().ok()?)?;
        if crate::domain::local_time::suits_working_languages(&envelope.language, &member.languages) {
            return None;
        }
        Some(format!(
            "language: {} lists {} as its working languages, not {:?}; a translation may be asked for",
            member.code,
            member.languages.join(", "),
            envelope.language
        ))
    }

    /// Stores the request or finds the one an earlier call with its client request id stored.
    async fn store_or_replay(
        &self,
        caller: &Caller,
        mut request: SubmitRequest,
    ) -> Result<Submitted, DeskError> {
        let Some(request_id) = client_request_id(&request.client_request_id)? else {
            return self.submit_new(caller, request, None).await;
        };
        // The id is not content: a retry may spell the same UUID differently.
        request.client_request_id.clear();
        let digest = request_digest(&request);
        // A retry of a request already stored needs no signature and no lock; the check under
        // the lock in `submit_new` covers a first call still on its way.
        if let Some(earlier) = self.context.store.client_request(&caller.name, request_id)? {
            check_same_request(request_id, &earlier, &digest)?;
            let details = format!("replayed: client request id {request_id}");
            self.audit_read(caller, Action::Submit, &earlier.message_id.to_string(), &details).await?;
            return self.replayed(caller, request_id, earlier.message_id);
        }
        self.submit_new(caller, request, Some((request_id, digest))).await
    }

    /// Stores `request` as a new message, recording `client_request` (its request id and the
    /// digest of its content) with it, unless the id turns out to be taken under the store's
    /// writer lock (by a concurrent call): then that call's message is the answer.
    async fn submit_new(
        &self,
        caller: &Caller,
        request: SubmitRequest,
        client_request: Option<(Uuid, [u8; 32])>,
    ) -> Result<Submitted, DeskError> {
        // Concurrent Submits on their way to the store share the next log sync.
        let intent = self.context.store.intend_write();
        let envelope = self.submit_envelope(caller, request)?;
        let (id, destination, precedence) =
            (envelope.id.clone(), envelope.destination.clone(), envelope.precedence());
        // Signed before the store's lock, together with the envelopes of concurrent Submits to
        // the same destination when it verifies batch signatures.
        let in_groups =
            destination.parse().is_ok_and(|code| self.context.peers.verifies_batch_signatures(code));
        let signed = self.group_signer.sign(&self.context.signer, envelope, in_groups).await?;
        let (envelope, signer) = (signed.envelope, signed.signer);
        let message_id = Uuid::parse_str(&id).map_err(|_| StoreError::Malformed("id is not a UUID"))?;
        let stored = self.context.store.write(|changes| {
            if let Some((request_id, digest)) = client_request {
                if let Some(earlier) = changes.client_request(&caller.name, request_id)? {
                    // A concurrent call with this id stored first; this envelope is dropped.
                    check_same_request(request_id, &earlier, &digest)?;
                    let details = format!("replayed: client request id {request_id}");
                    audit_call(changes, caller, Action::Submit, &earlier.message_id.to_string(), &details);
                    return Ok(Stored::Earlier { request_id, message_id: earlier.message_id });
                }
                changes.record_client_request(&caller.name, request_id, ClientRequest { message_id, digest });
            }
            if let Some(envelope) = Some(&envelope).filter(|e| !e.attachments.is_empty()) {
                super::attachments::check_still_held(changes, envelope)?;
            }
            let details = format!("to {destination}, {}", precedence.short_name());
            audit_call(changes, caller, Action::Submit, &id, &details);
            // The note that the mutual legal assistance request was sent goes on the case here too.
            changes.record_follow_up(&envelope)?;
            queue_signed(
                changes,
                &self.context.config.deadlines,
                envelope,
                format!("submitted by {}", caller.name),
                caller.name.clone(),
                &signer,
            )
            .map(|message| Stored::New(Box::new(message)))
        })?;
        drop(intent);
        let message = match stored {
            Stored::New(message) => *message,
            Stored::Earlier { request_id, message_id } => {
                // The earlier call's write is applied; make it durable before answering with it.
                self.context.store.persist().await?;
                return self.replayed(caller, request_id, message_id);
            }
        };
        self.announce(std::slice::from_ref(&message)).await?;
        // Durable, not yet answered: a crash test kills the node here and retries.
        crate::store::crash_point::reached("submit-answer");
        tracing::info!(message_id = %id, peer = %destination, precedence = precedence.as_str_name(), client = %caller.name, "request submitted");
        Ok(Submitted { message, replayed: false, warnings: Vec::new() })
    }

    /// The answer to a replayed `Submit`: the message the earlier call stored, as it stands now.
    /// Call only after that message is durable.
    fn replayed(&self, caller: &Caller, request_id: Uuid, message_id: Uuid) -> Result<Submitted, DeskError> {
        let stored = self.context.store.get(message_id)?.ok_or_else(|| StoreError::Corrupt {
            key: format!("request id {request_id} of {}", caller.name),
            reason: format!("names message {message_id}, which is not stored"),
        })?;
        tracing::info!(%message_id, %request_id, client = %caller.name, "submit replayed");
        Ok(Submitted { message: view(&stored), replayed: true, warnings: Vec::new() })
    }

    /// The envelope a `SubmitRequest` describes, checked against the directory, the store (the
    /// request it answers) and the limits; not yet signed.
    fn submit_envelope(&self, caller: &Caller, request: SubmitRequest) -> Result<Envelope, DeskError> {
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
        if request.exercise && self.context.peers.known_not_to_read(destination, "exercise") {
            let version = self.context.peers.get(destination).software_version;
            return Err(DeskError::PeerCannotRead(FieldError::new(
                "exercise",
                format!(
                    "{destination} runs {}, which does not read the exercise flag: it would refuse the envelope as badly signed; send the drill once {destination} is upgraded",
                    if version.is_empty() { "an older version".to_owned() } else { version }
                ),
            )));
        }
        let parent = match request.in_reply_to.as_str() {
            "" => None,
            id => Some(self.replied_to(caller, id, destination)?),
        };
        if let Some(follow_up) = &request.follow_up {
            self.check_follow_up(follow_up, destination, parent.as_ref())?;
        }
        let case_reference = match (request.case_reference.trim(), &parent) {
            ("", Some(parent)) => {
                parent.envelope.as_ref().map(|e| e.case_reference.clone()).unwrap_or_default()
            }
            ("", None) => new_case_reference(config.code),
            (given, _) => given.to_owned(),
        };
        let now = timestamp::from_system(self.context.clock.now());
        if let Some(expires_at) = &request.expires_at {
            check_timestamp("expires_at", expires_at)?;
        }
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
                request
                    .expires_at
                    .unwrap_or_else(|| self.context.clock.after(config.delivery.default_expiry)),
            ),
            in_reply_to: request.in_reply_to,
            attachments: request.attachments,
            handling_code,
            handling_restrictions: request.handling_restrictions,
            preservation: request.preservation,
            exercise: request.exercise,
            // Requests carry no outcome: responses do.
            outcome: None,
            follow_up: request.follow_up,
            // Signed when it is stored (`queue`).
            origin_signature: Vec::new(),
            origin_batch: None,
        };
        check_envelope(&envelope, &config.limits)?;
        check_times(&envelope, self.context.clock.now(), &config.limits)?;
        let mut envelope = envelope;
        self.resolve_attachments(&mut envelope)?;
        Ok(envelope)
    }
}

impl Desk {
    /// What the desk checks of a preservation's follow-up beyond its shape: the destination reads
    /// it, it continues a preservation, and an extension's date is in the future.
    fn check_follow_up(
        &self,
        follow_up: &crate::proto::PreservationFollowUp,
        destination: NodeCode,
        parent: Option<&crate::proto::Message>,
    ) -> Result<(), DeskError> {
        if self.context.peers.known_not_to_read(destination, "follow_up") {
            let version = self.context.peers.get(destination).software_version;
            return Err(DeskError::PeerCannotRead(FieldError::new(
                "follow_up",
                format!(
                    "{destination} runs {}, which does not read preservation follow-ups: it would refuse the envelope as badly signed; send the extension or the note in a plain request",
                    if version.is_empty() { "an older version".to_owned() } else { version }
                ),
            )));
        }
        // Without a parent, the envelope's own check names `follow_up`.
        let Some(parent) = parent else { return Ok(()) };
        let continues_preservation = parent
            .envelope
            .as_ref()
            .is_some_and(|e| e.request_type() == crate::proto::RequestType::Preservation);
        if !continues_preservation {
            return Err(FieldError::new(
                "in_reply_to",
                "a follow-up (extension, mutual legal assistance request sent) continues a PRESERVATION request",
            )
            .into());
        }
        if let Some(until) = &follow_up.extend_until {
            check_timestamp("follow_up.extend_until", until)?;
            if timestamp::to_system(until) <= self.context.clock.now() {
                return Err(FieldError::new("follow_up.extend_until", "must be in the future").into());
            }
        }
        Ok(())
    }

    /// The message a new request to `destination` answers (`in_reply_to`): one the caller may
    /// see (the rule of `Get`) and exchanged with `destination`. Anything else is refused as if
    /// the id were unknown, so that `Submit` tells nobody whether a message they may not see
    /// exists, and nobody threads a request into another's case or copies its case reference.
    fn replied_to(&self, caller: &Caller, id: &str, destination: NodeCode) -> Result<Message, DeskError> {
        let id = parse_id_field("in_reply_to", id)?;
        let parent = self
            .context
            .store
            .get(id)?
            .filter(|stored| caller.may_see(&stored.submitted_by))
            .map(|stored| view(&stored));
        match parent {
            Some(parent) if peer_of(&parent) == destination.as_str() => Ok(parent),
            _ => Err(FieldError::new("in_reply_to", format!("no message with id {id}")).into()),
        }
    }
}

/// The client request id of a `Submit`: none when empty; refused naming the field unless a UUID
/// other than the nil one (which a client that forgot to make one would send every time).
fn client_request_id(text: &str) -> Result<Option<Uuid>, FieldError> {
    if text.is_empty() {
        return Ok(None);
    }
    match Uuid::parse_str(text.trim()) {
        Ok(id) if id.is_nil() => {
            Err(FieldError::new(REQUEST_ID_FIELD, "must not be the nil UUID: make a new UUID per request"))
        }
        Ok(id) => Ok(Some(id)),
        Err(_) => Err(FieldError::new(
            REQUEST_ID_FIELD,
            format!("'{text}' is not a UUID: make a new UUID per request and send it again with every retry"),
        )),
    }
}

/// SHA-256 of a request's content (its protobuf encoding, with `client_request_id` cleared):
/// what a retry must repeat exactly. prost encodes a message's fields in field order, so the
/// same content gives the same bytes.
fn request_digest(request: &SubmitRequest) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, &prost::Message::encode_to_vec(request));
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Refuses a request under an id that `earlier` (a different request of the same client) took.
fn check_same_request(request_id: Uuid, earlier: &ClientRequest, digest: &[u8; 32]) -> Result<(), DeskError> {
    if earlier.digest == *digest {
        return Ok(());
    }
    Err(DeskError::AlreadyExists(format!(
        "{REQUEST_ID_FIELD}: {request_id} was used by this client for a different request (message {}); nothing was stored: make a new UUID for a new request",
        earlier.message_id
    )))
}

/// A case reference for a request that starts a case: "<origin>-<year>-<8 hex digits>".
fn new_case_reference(origin: NodeCode) -> String {
    let year = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
    format!("{origin}-{}-{:08x}", &year[..4], fastrand::u32(..))
}

impl Desk {
    /// Signs a reply this node sends (acknowledgement, response, dispute, cancellation) and
    /// stores it QUEUED in this write.
    pub(super) fn queue_reply(
        &self,
        changes: &mut Changes<'_>,
        envelope: Envelope,
        note: String,
        submitted_by: String,
    ) -> Result<Message, DeskError> {
        queue(
            changes,
            &self.context.config.deadlines,
            envelope,
            note,
            submitted_by,
            &self.context.signer.current(),
        )
    }
}

/// Signs a new outbound envelope and stores it, QUEUED (with the signing certificate, for proofs).
fn queue(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    mut envelope: Envelope,
    note: String,
    submitted_by: String,
    signer: &Signer,
) -> Result<Message, DeskError> {
    signer.sign_envelope(&mut envelope)?;
    queue_signed(changes, deadlines, envelope, note, submitted_by, signer)
}

/// Stores an outbound envelope that `signer` has just signed, QUEUED (with the signing
/// certificate, for proofs). `submit` signs before it takes the store's lock.
fn queue_signed(
    changes: &mut Changes<'_>,
    deadlines: &DeadlinesConfig,
    envelope: Envelope,
    note: String,
    submitted_by: String,
    signer: &Signer,
) -> Result<Message, DeskError> {
    let ack_deadline = deadlines.ack_deadline(&envelope);
    let mut message = Message {
        envelope: Some(envelope),
        direction: Direction::Outbound as i32,
        ack_deadline,
        ..Default::default()
    };
    lifecycle::enter(&mut message, MessageState::Queued, timestamp::now(), note);
    // Every envelope queued here was made with a new `Uuid::now_v7` (`submit_envelope`,
    // `Desk::reply`), so there is no previous record to read back.
    changes.put_new(StoredMessage {
        message: Some(message.clone()),
        seq: changes.next_seq()?,
        overdue_announced: false,
        hold_until: None,
        submitted_by,
        receipt: None,
        origin_certificate: signer.certificate().to_vec(),
        origin_certificate_sha256: Vec::new(),
        reminded_until: None,
        reminded_lead_seconds: 0,
    })?;
    Ok(message)
}
