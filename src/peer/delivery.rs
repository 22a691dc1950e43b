//! One delivery task per directory peer: sends that peer's outbox in order (precedence, then
//! submission), up to `batches_in_flight` batches at once (numbered within a session, so the
//! receiver stores them in the order sent: see `batch_order`), retries with exponential backoff
//! and equal jitter (half the bound fixed, half random: every peer's attempts spread out, and an
//! unreachable peer costs at most two attempts per `retry_max`), and records receipts.
//!
//! A request cancelled while its batch is in a `Deliver` call may already be at the peer. The
//! task marks a batch's messages in its waker's `sending` set before it makes the batch durable
//! and unmarks them once the call's outcome is stored; the desk's cancellation reads that set
//! under the store's writer lock and, if the request is in it, queues a cancellation to the
//! peer (it follows the request, in batch order). After the flush, a batch member found
//! cancelled with no cancellation queued is dropped unsent: the desk saw it before it was marked,
//! so the peer never had it. (If the call then fails and the peer never stored the request, its
//! cancellation is refused as naming an unknown request and retried until it expires: a known
//! nuisance, the price of never leaving a peer with a request its origin withdrew.)
//!
//! Invariants: nothing is sent before it is durable at this node; a message leaves the outbox only when the peer's receipt for it has been stored
//! (or it expired or was cancelled), so a crash at any moment at most causes a resend, which the
//! receiver deduplicates. Each peer has its own task and channel: a dead peer slows nobody else.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use rustls::ClientConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::DirectoryEntry;
use crate::domain::clock::Clock;
use crate::domain::identity::Identity;
use crate::domain::lifecycle::{self, Happening};
use crate::domain::timestamp;
use crate::proto::delivery_result::Outcome;
use crate::proto::peer_service_client::PeerServiceClient;
use crate::proto::{ConnectionState, DeliverRequest, DeliverResponse, HelloRequest, Message, MessageState};
use crate::proto::{Envelope, Receipt};
use crate::runtime::context::{DeliveryWaker, NodeContext, SOFTWARE_VERSION};
use crate::store::{StoreError, view};
use crate::store_proto::StoredMessage;
use crate::trust::signing::SigningError;
use crate::trust::tls::{self, Dial};

/// Whether a stored message's envelope lists attachments (no store read).
fn has_attachments(stored: &StoredMessage) -> bool {
    stored.message.as_ref().and_then(|m| m.envelope.as_ref()).is_some_and(|e| !e.attachments.is_empty())
}

/// Never retry sooner than this, so a short bound cannot turn into a busy loop.
const MIN_RETRY: Duration = Duration::from_millis(50);
/// How far ahead of the batch the task looks for expired messages.
const SCAN_FACTOR: usize = 4;
/// How long to wait after the store failed before looking at the outbox again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How often an idle task says `Hello` (round-trip time, version, certificate for operators), at
/// least; see [`hello_interval`].
const HELLO_INTERVAL: Duration = Duration::from_secs(30);
/// The most `Hello`s a node says per second to all its peers together when idle.
const HELLOS_PER_SECOND: u64 = 1;

/// The pause before an idle task's next `Hello` to one of `peers` peers: [`HELLO_INTERVAL`], or
/// longer in a large network so the node says at most [`HELLOS_PER_SECOND`] in all (193 members:
/// every 192 s per peer), jittered by ±25 % so the tasks, started together, do not say it
/// together. Each `Hello` signs and checks audit heads at both ends; a full mesh of 193 nodes
/// saying it every 30 s came to ~1,200 calls a second and kept a 2-core machine busy
/// (docs/benchmarks.md, "193 members"). Delivery needs no `Hello`: a send finds a dead peer, and
/// a failing peer is probed on its backoff instead.
fn hello_interval(peers: usize) -> Duration {
    let spread = Duration::from_secs((peers as u64).div_ceil(HELLOS_PER_SECOND));
    HELLO_INTERVAL.max(spread).mul_f64(0.75 + 0.5 * fastrand::f64())
}

/// The delivery task for one peer.
pub struct PeerDelivery {
    context: Arc<NodeContext>,
    peer: DirectoryEntry,
    client: PeerServiceClient<tonic::transport::Channel>,
    waker: Arc<DeliveryWaker>,
    /// Consecutive failed attempts to reach the peer.
    failures: u32,
    /// When the last `Hello` was sent.
    last_hello: Option<std::time::Instant>,
    /// The idle pause before the next one ([`hello_interval`], drawn when the last was sent).
    hello_every: Duration,
    /// `Deliver` calls sent and not yet answered.
    in_flight: JoinSet<Answer>,
    /// The messages of those calls: never picked again until their call is answered.
    sending: HashSet<Uuid>,
    /// The current run of in-order batches (see `batch_order`); a new one after every failure.
    session: Session,
    /// After a failure, no new batch before this.
    backoff_until: Option<Instant>,
    /// After a failure, no new batch until every call of the failed session is answered: one of
    /// them may still be refused, and its messages must not be overtaken by the new session.
    resuming: bool,
    /// The peer's certificate chains already checked on its receipts.
    chains: crate::trust::signing::CheckedChains,
    /// The peer's batch receipt signatures already verified.
    batches: crate::trust::signing::VerifiedBatches,
}

/// A run of numbered batches (see `batch_order`).
struct Session {
    id: Uuid,
    /// The number of the last batch sent.
    last_sent: u64,
    /// The numbers of batches sent and not answered yet.
    unanswered: std::collections::BTreeSet<u64>,
}

impl Session {
    fn new() -> Self {
        Self { id: Uuid::now_v7(), last_sent: 0, unanswered: Default::default() }
    }

    /// Numbers the next batch; returns its number and how far the session is answered.
    fn next(&mut self) -> (u64, u64) {
        let answered_through = self.unanswered.first().map_or(self.last_sent, |first| first - 1);
        self.last_sent += 1;
        self.unanswered.insert(self.last_sent);
        (self.last_sent, answered_through)
    }
}

/// What came back for one `Deliver` call.
struct Answer {
    session: Uuid,
    number: u64,
    batch: Vec<StoredMessage>,
    result: Result<DeliverResponse, tonic::Status>,
}

/// What one look at the outbox found.
enum Pick {
    /// The next batch in queue order, not yet in flight.
    Batch(Vec<StoredMessage>),
    /// Nothing to send now; the next message-level retry is at this time, if any.
    Nothing(Option<SystemTime>),
}

/// What the task waits for after sending what it could.
struct Wait {
    /// Wake up at the latest after this long (newly queued work wakes it sooner; during a
    /// backoff only urgent work does).
    delay: Option<Duration>,
}

impl PeerDelivery {
    /// A delivery task for `peer`, over a channel that checks the peer's certificate identity.
    pub fn new(
        context: Arc<NodeContext>,
        peer: DirectoryEntry,
        tls: Arc<ClientConfig>,
        waker: Arc<DeliveryWaker>,
    ) -> Result<Self, crate::trust::tls::TlsError> {
        let delivery = &context.config.delivery;
        let observer = Arc::clone(&context);
        let code = peer.code;
        let dial = Dial {
            endpoint: peer.endpoint.clone(),
            expect: Some(Identity::Node { network: context.config.network.clone(), code: peer.code }),
            connect_timeout: delivery.connect_timeout,
            request_timeout: Some(delivery.request_timeout),
            observe: Some(Arc::new(move |cert| {
                let expiry = crate::domain::identity::cert_not_after(cert).ok();
                observer.peers.update(code, |status| status.certificate_expires_at = expiry);
            })),
        };
        let client = PeerServiceClient::new(tls::channel_pinned(dial, tls, peer.pins())?);
        Ok(Self {
            context,
            peer,
            client,
            waker,
            failures: 0,
            last_hello: None,
            hello_every: HELLO_INTERVAL,
            in_flight: JoinSet::new(),
            sending: HashSet::new(),
            session: Session::new(),
            backoff_until: None,
            resuming: false,
            chains: Default::default(),
            batches: Default::default(),
        })
    }

    /// Runs until `stop`; picks up whatever the outbox holds (also after a restart). Calls still
    /// in flight at `stop` are abandoned: their messages stay queued and are sent again later.
    pub async fn run(mut self, stop: CancellationToken) {
        self.recover(&stop).await;
        self.deliver(&stop).await;
        // Ended here rather than when the set drops, so that no call of this task runs on after
        // it: the node's shutdown waits for this task.
        self.in_flight.shutdown().await;
    }

    /// While the store says a recovery from this peer is pending (`restore --recover-from-peers`,
    /// or the desk's `RecoverFromPeers`), asks the peer for what the two exchanged (`recovery`),
    /// retrying with backoff until it answers, before anything more is sent: what the peer
    /// already holds is not sent again. A stop ends it mid-way (each batch is stored whole, and
    /// the recovery runs again at the next start).
    async fn recover(&mut self, stop: &CancellationToken) {
        let peer = self.peer.code;
        let mut attempt = 0;
        loop {
            let pending = match self.context.store.recovery_pending(peer) {
                Ok(Some(pending)) => pending,
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(peer = %peer, %error, "cannot read whether a recovery is pending");
                    return;
                }
            };
            tracing::info!(peer = %peer, "recovering from peer");
            let recovered = tokio::select! {
                () = stop.cancelled() => return,
                recovered = crate::peer::recovery::recover_from(&self.context, peer, &mut self.client, pending) => recovered,
            };
            match recovered {
                Ok(_) => return,
                Err(error) => {
                    attempt += 1;
                    let delay = self.retry_delay(attempt);
                    tracing::error!(peer = %peer, %error, retry_in = ?delay, "recovery from peer failed; retrying");
                    self.record_peer_failure(&error.to_string(), delay);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn deliver(&mut self, stop: &CancellationToken) {
        loop {
            let wait = tokio::select! {
                () = stop.cancelled() => return,
                wait = self.send_what_is_due() => wait,
            };
            let wait = wait.unwrap_or_else(|error| {
                // The store failed; the messages are still queued. Try again shortly (the node
                // reopens a broken store within a second or so).
                tracing::error!(peer = %self.peer.code, %error, "delivery cannot read or write the store");
                Wait { delay: Some(STORE_RETRY) }
            });
            let woken = self.waker.work.notified();
            let sleep = async {
                match wait.delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    let completed = match joined {
                        Ok(answer) => self.complete(answer).await,
                        // Only a panic in the call (tasks are aborted only when the set drops).
                        Err(error) => {
                            tracing::error!(peer = %self.peer.code, %error, "a delivery call failed unexpectedly");
                            self.sending.clear();
                            self.waker.sending().clear();
                            self.in_flight.abort_all();
                            self.session = Session::new();
                            Ok(())
                        }
                    };
                    if let Err(error) = completed {
                        tracing::error!(peer = %self.peer.code, %error, "delivery cannot record a result");
                    }
                }
                () = sleep => {}
                () = woken => {
                    if self.waker.recover.swap(false, Ordering::AcqRel) {
                        self.recover(stop).await;
                    }
                    if self.waker.urgent.swap(false, Ordering::AcqRel) && self.backoff_until.take().is_some() {
                        tracing::info!(peer = %self.peer.code, "urgent work queued: trying the peer now, ahead of its backoff");
                    }
                    if self.waker.probe.swap(false, Ordering::AcqRel) {
                        // The peer called this node: it is back. Probe it now rather than show
                        // it FAILING until the backoff ends.
                        tracing::info!(peer = %self.peer.code, "the failing peer called this node: probing it now");
                        self.backoff_until = None;
                        self.last_hello = None;
                    }
                }
            }
        }
    }

    /// Sends batches in queue order until `batches_in_flight` are out or nothing is due, and says
    /// what to wait for next.
    async fn send_what_is_due(&mut self) -> Result<Wait, StoreError> {
        let most = self.context.config.delivery.batches_in_flight;
        loop {
            if let Some(until) = self.backoff_until {
                let now = Instant::now();
                if now < until {
                    return Ok(Wait { delay: Some(until - now) });
                }
                self.backoff_until = None;
            }
            if self.resuming {
                if !self.in_flight.is_empty() {
                    return Ok(Wait { delay: None });
                }
                self.resuming = false;
            }
            if self.in_flight.len() >= most {
                return Ok(Wait { delay: None });
            }
            match self.pick().await? {
                Pick::Batch(batch) => {
                    // Marked first: from here a cancellation tells the peer (module docs).
                    self.waker.sending().extend(batch.iter().map(message_id));
                    // The outbox shows writes as soon as they are applied, before their flush
                    // (a Submit waits for it before it answers). Send only what is on disk: a
                    // crash must never leave the receiver holding what the sender forgot.
                    // Usually this joins the flush already under way; it is free when idle.
                    let flushed = self.context.store.persist().await;
                    let ids: Vec<Uuid> = batch.iter().map(message_id).collect();
                    let batch = match flushed.and_then(|()| self.not_withdrawn(batch)) {
                        Ok(batch) => batch,
                        Err(error) => {
                            self.unmark(ids);
                            return Err(error);
                        }
                    };
                    // The content of the batch's attachments first: the peer receipts an
                    // envelope only once it holds them. Costs nothing without attachments.
                    if batch.iter().any(has_attachments)
                        && let Err(error) = self.push_attachments(&batch).await
                    {
                        let ids: Vec<Uuid> = batch.iter().map(message_id).collect();
                        self.unmark(ids);
                        self.context.metrics.attachment_transfers_failed.inc();
                        self.failures = self.failures.saturating_add(1);
                        let delay = self.retry_delay(self.failures);
                        self.backoff_until = Some(Instant::now() + delay);
                        let error = match error {
                            crate::peer::transfer::PushError::Status(status) => {
                                format!("attachment transfer: {}", describe(&status))
                            }
                            other => other.to_string(),
                        };
                        tracing::warn!(peer = %self.peer.code, %error, attempt = self.failures, retry_in = ?delay, "attachment transfer failed");
                        self.record_peer_failure(&error, delay);
                        self.record_failures(batch, &error, delay).await?;
                        continue;
                    }
                    if !batch.is_empty() {
                        self.send(batch);
                    }
                }
                Pick::Nothing(next_retry) => {
                    let mut wake_at = next_retry;
                    if self.in_flight.is_empty() {
                        // Idle: say Hello now and then, and while the peer is failing probe it
                        // with the backoff delay, so its status recovers without new work.
                        let probe_every = if self.failures > 0 {
                            self.retry_delay(self.failures)
                        } else {
                            self.hello_every
                        };
                        if self.last_hello.is_none_or(|at| at.elapsed() >= probe_every) {
                            self.hello().await;
                        }
                        let probe_at = crate::domain::timestamp::plus(self.context.clock.now(), probe_every);
                        wake_at = Some(wake_at.map_or(probe_at, |t| t.min(probe_at)));
                    }
                    let delay = wake_at.map(|t| {
                        t.duration_since(self.context.clock.now()).unwrap_or_default().max(MIN_RETRY)
                    });
                    return Ok(Wait { delay });
                }
            }
        }
    }

    /// The next batch: queued messages in queue order that are not in flight, not held after a
    /// refusal, and fit the batch limits. Expires what is past its `expires_at` on the way.
    async fn pick(&mut self) -> Result<Pick, StoreError> {
        let batch_size = self.context.config.delivery.batch_size;
        let candidates =
            self.context.store.outbox_for(self.peer.code, self.sending.len() + batch_size * SCAN_FACTOR)?;
        let now = self.context.clock.now();
        let mut expired = Vec::new();
        let mut due = Vec::new();
        let mut due_bytes = 0;
        let mut full = false;
        let mut next_retry: Option<SystemTime> = None;
        for stored in candidates {
            if self.sending.contains(&message_id(&stored)) {
                continue;
            }
            let message = view(&stored);
            let envelope = message.envelope.clone().unwrap_or_default();
            if envelope.expires_at.as_ref().is_some_and(|at| timestamp::to_system(at) <= now) {
                expired.push(stored);
            } else if let Some(at) = stored.hold_until.as_ref().map(timestamp::to_system)
                && at > now
            {
                next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
            } else if !full {
                // Stop at the first envelope that does not fit, so the batch keeps queue order.
                let size = stored_bytes(&stored);
                if due.len() < batch_size && due_bytes + size <= crate::domain::validation::MAX_BATCH_BYTES {
                    due_bytes += size;
                    due.push(stored);
                } else {
                    full = true;
                }
            }
        }
        if !expired.is_empty() {
            self.expire(expired).await?;
        }
        Ok(if due.is_empty() { Pick::Nothing(next_retry) } else { Pick::Batch(due) })
    }

    /// Pushes the content of every attachment `batch` lists to the peer (see `transfer`), unless
    /// the peer said in `Hello` that it does not take attachments' content (an older version: it
    /// gets the envelopes as before).
    async fn push_attachments(
        &mut self,
        batch: &[StoredMessage],
    ) -> Result<(), crate::peer::transfer::PushError> {
        if self.context.peers.known_not_to_read(self.peer.code, crate::runtime::context::ATTACHMENT_CONTENT) {
            return Ok(());
        }
        let mut pushed = HashSet::new();
        for stored in batch {
            let Some(envelope) = stored.message.as_ref().and_then(|m| m.envelope.as_ref()) else { continue };
            for attachment in &envelope.attachments {
                if pushed.insert(attachment.sha256.clone()) {
                    crate::peer::transfer::push(&self.context, &mut self.client, attachment).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends one batch as the next of the current session, without waiting for the answer.
    fn send(&mut self, batch: Vec<StoredMessage>) {
        let (number, answered_through) = self.session.next();
        let request = DeliverRequest {
            envelopes: batch.iter().filter_map(|s| self.signed(s)).collect(),
            sender_session: self.session.id.to_string(),
            batch_number: number,
            answered_through,
            accepts_batch_receipts: true,
        };
        self.sending.extend(batch.iter().map(message_id));
        let mut client = self.client.clone();
        let session = self.session.id;
        self.in_flight.spawn(async move {
            let result = client.deliver(request).await.map(tonic::Response::into_inner);
            Answer { session, number, batch, result }
        });
    }

    /// Records the answer to one call. The first failure of a session starts the backoff and a
    /// new session; later failures of the same session follow from it (the receiver refuses
    /// what comes after a missing batch) and only release their messages for resending.
    async fn complete(&mut self, answer: Answer) -> Result<(), StoreError> {
        let ids: Vec<Uuid> = answer.batch.iter().map(message_id).collect();
        let completed = self.complete_call(answer).await;
        // Only now, with the outcome stored (or the batch released for resending), may a
        // cancellation of these messages take them for never sent.
        self.unmark(ids);
        completed
    }

    /// These messages are no longer in a `Deliver` call.
    fn unmark(&self, ids: impl IntoIterator<Item = Uuid>) {
        let mut sending = self.waker.sending();
        for id in ids {
            sending.remove(&id);
        }
    }

    /// `batch` without the messages cancelled since they were picked that the peer is not told
    /// of (see the module docs): they were never sent and never will be.
    fn not_withdrawn(&self, batch: Vec<StoredMessage>) -> Result<Vec<StoredMessage>, StoreError> {
        let own = self.context.code().to_string();
        let mut kept = Vec::with_capacity(batch.len());
        for stored in batch {
            let id = message_id(&stored);
            let cancelled =
                self.context.store.get(id)?.is_some_and(|now| view(&now).state() == MessageState::Cancelled);
            let peer_told = cancelled
                && self.context.store.replies(id)?.iter().any(|reply| {
                    reply.message.as_ref().and_then(|m| m.envelope.as_ref()).is_some_and(|e| {
                        e.kind() == crate::proto::EnvelopeKind::Cancellation && e.origin == own
                    })
                });
            if cancelled && !peer_told {
                self.waker.sending().remove(&id);
                tracing::info!(message_id = %id, peer = %self.peer.code, "cancelled before it was sent: not sent");
            } else {
                kept.push(stored);
            }
        }
        Ok(kept)
    }

    /// Records the answer to one call (see [`PeerDelivery::complete`]).
    async fn complete_call(&mut self, answer: Answer) -> Result<(), StoreError> {
        let Answer { session, number, batch, result } = answer;
        for stored in &batch {
            self.sending.remove(&message_id(stored));
        }
        let count = batch.len();
        match result {
            Ok(response) => {
                if session == self.session.id {
                    self.session.unanswered.remove(&number);
                }
                self.failures = 0;
                self.context.peers.update(self.peer.code, |status| {
                    status.connection = ConnectionState::Connected;
                    status.failures = 0;
                    status.next_attempt_at = None;
                    status.last_contact_at = Some(self.context.clock.now());
                    status.delivered += count as u64;
                });
                if response.results.len() != count {
                    let error = format!(
                        "{} answered {} results for {count} envelopes",
                        self.peer.code,
                        response.results.len()
                    );
                    return self.record_failures(batch, &error, self.retry_delay(1)).await;
                }
                self.record_results(batch, response.results).await
            }
            Err(status) if session == self.session.id => {
                self.failures = self.failures.saturating_add(1);
                let delay = self.retry_delay(self.failures);
                self.backoff_until = Some(Instant::now() + delay);
                self.session = Session::new();
                self.resuming = true;
                let error = describe(&status);
                tracing::warn!(peer = %self.peer.code, %error, attempt = self.failures, retry_in = ?delay, "delivery failed");
                self.record_peer_failure(&error, delay);
                let recorded = self.record_failures(batch, &error, delay).await;
                if self.failures == self.context.config.notify.peer_unreachable_after {
                    let notice = crate::store::notifications::Notice {
                        peer: self.peer.code.to_string(),
                        // The error text may come from the peer: the queue view shows it, not this.
                        detail: format!("{} calls in a row failed", self.failures),
                        ..Default::default()
                    };
                    let notified =
                        self.context.store.notify(crate::config::NotifyEvent::PeerUnreachable, &notice);
                    if let Err(error) = notified.await {
                        tracing::error!(peer = %self.peer.code, %error, "cannot store the peer-unreachable notification");
                    }
                }
                recorded
            }
            Err(status) => {
                tracing::debug!(peer = %self.peer.code, error = %describe(&status), "batch of an abandoned session failed; resending");
                Ok(())
            }
        }
    }

    fn record_peer_failure(&self, error: &str, delay: Duration) {
        let failures = self.failures;
        self.context.peers.update(self.peer.code, |status| {
            status.connection = ConnectionState::Failing;
            status.failures = failures;
            status.failed_calls += 1;
            status.last_error = error.to_owned();
            status.last_error_at = Some(self.context.clock.now());
            status.next_attempt_at = Some(crate::domain::timestamp::plus(self.context.clock.now(), delay));
        });
    }

    /// `Hello`: the peer's version and the round-trip time, for operators. A failure here only
    /// shows in the status; delivery finds out for itself.
    async fn hello(&mut self) {
        self.last_hello = Some(std::time::Instant::now());
        self.hello_every = hello_interval(self.context.peer_count());
        let request = HelloRequest {
            node: self.context.code().to_string(),
            software_version: SOFTWARE_VERSION.to_owned(),
            time: Some(self.context.clock.timestamp()),
            directory_version: self.context.directory.current().version,
            verifies_batch_signatures: true,
            audit_head: crate::peer::witness::own_head_for(&self.context, self.peer.code),
            envelope_fields: crate::runtime::context::envelope_fields_read(),
        };
        let started = std::time::Instant::now();
        let result = self.client.hello(request).await;
        let round_trip = started.elapsed();
        if let Ok(response) = &result {
            let response = response.get_ref();
            crate::peer::witness::on_hello_answer(
                &self.context,
                self.peer.code,
                response.audit_head.as_ref(),
                response.witnessed_head.as_ref(),
            )
            .await;
        }
        if result.is_ok() {
            self.failures = 0;
        }
        self.context.peers.update(self.peer.code, |status| match result {
            Ok(response) => {
                let response = response.into_inner();
                status.connection = ConnectionState::Connected;
                status.failures = 0;
                status.next_attempt_at = None;
                status.last_contact_at = Some(self.context.clock.now());
                status.round_trip = Some(round_trip);
                status.software_version = response.software_version;
                status.directory_version = response.directory_version;
                status.verifies_batch_signatures = response.verifies_batch_signatures;
                status.envelope_fields = Some(response.envelope_fields);
            }
            Err(error) => {
                status.connection = ConnectionState::Failing;
                status.last_error = describe(&error);
                status.last_error_at = Some(self.context.clock.now());
            }
        });
    }

    /// Exponential backoff with equal jitter: random in [b/2, b], b = min(cap, initial·2^(n-1)).
    /// Not full jitter ([0, b]): with many peers down, draws near 0 made a node retry each of them
    /// about twice per `retry_max`, and every attempt costs a store write and a log sync (193
    /// members: 0.7 % of a core, 0.37 % with this; docs/benchmarks.md). The fixed half keeps it
    /// to at most one attempt per half bound; the random half still spreads the peers out.
    fn retry_delay(&self, attempt: u32) -> Duration {
        let delivery = &self.context.config.delivery;
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        let bound = delivery.retry_initial.saturating_mul(factor).min(delivery.retry_max);
        bound.mul_f64(0.5 + 0.5 * fastrand::f64()).max(MIN_RETRY)
    }

    async fn record_results(
        &self,
        due: Vec<StoredMessage>,
        results: Vec<crate::proto::DeliveryResult>,
    ) -> Result<(), StoreError> {
        let peer = self.peer.code;
        // A receipt counts only if it is signed by the peer for exactly the envelope sent; one that
        // is not is a failed delivery (the envelope is sent again later). Checked before the
        // store's lock is taken: signature checks are the costly part.
        let bad_receipts: Vec<Option<String>> = due
            .iter()
            .zip(&results)
            .map(|(stored, result)| match &result.outcome {
                Some(Outcome::Receipt(receipt)) => self.check_receipt(stored, receipt).err().map(|error| {
                    tracing::warn!(message_id = %message_id(stored), peer = %peer, %error, "receipt does not verify");
                    let labels = crate::runtime::metrics::labels(&[("peer", peer.as_str()), ("signed", "receipt")]);
                    self.context.metrics.signature_failures.get_or_create(&labels).inc();
                    format!("receipt from {peer} does not verify: {error}")
                }),
                _ => None,
            })
            .collect();
        let clock = &self.context.clock;
        let changed = self.context.store.write(|changes| {
            let mut changed = Vec::new();
            for ((stored, result), bad_receipt) in due.into_iter().zip(results).zip(bad_receipts) {
                let id = message_id(&stored);
                // Re-read: a desk call may have changed it since the batch was picked.
                let Some(mut current) = changes.get(id)? else { continue };
                let refused_delay = self.retry_delay(current.message.as_ref().map_or(0, |m| m.attempts) + 1);
                let outcome = match (result.outcome, &bad_receipt) {
                    (Some(Outcome::Receipt(_)), Some(_)) => None,
                    (Some(Outcome::Receipt(receipt)), None) => {
                        // Kept for proofs.
                        current.receipt = Some(Receipt { duplicate: false, ..receipt.clone() });
                        Some(Outcome::Receipt(receipt))
                    }
                    (other, _) => other,
                };
                current.hold_until = match &outcome {
                    Some(Outcome::Receipt(_)) => None,
                    _ => Some(clock.after(refused_delay)),
                };
                let message = current.message.get_or_insert_default();
                let changed_now = match outcome {
                    None if bad_receipt.is_some() => {
                        self.context.peers.update(peer, |status| status.retries += 1);
                        fail(message, bad_receipt.as_deref().unwrap_or_default(), refused_delay, clock)
                    }
                    Some(Outcome::Receipt(receipt)) => {
                        message.received_at = receipt.received_at;
                        message.next_attempt_at = None;
                        let note = if receipt.duplicate {
                            format!("receipt from {peer} (duplicate)")
                        } else {
                            format!("receipt from {peer}")
                        };
                        apply_logged(message, Happening::ReceiptArrived, note, clock)
                    }
                    Some(Outcome::Refusal(refusal)) => {
                        self.context.peers.update(peer, |status| status.retries += 1);
                        // The peer's words, kept out of the audit log (a hostile peer could echo content).
                        let error = changes.note_with_text(format!("refused by {peer}"), &refusal.message);
                        fail(message, &error, refused_delay, clock)
                    }
                    None => fail(message, &format!("{peer} returned an empty result"), refused_delay, clock),
                };
                if changed_now {
                    changed.push(message.clone());
                }
                changes.put(current)?;
            }
            Ok::<_, StoreError>(changed)
        })?;
        // Persisting makes the new states' events visible to watchers (a lost receipt alone would
        // only cost a resend, answered with the same receipt).
        self.context.store.persist().await?;
        for message in &changed {
            if let Some(envelope) = &message.envelope {
                tracing::info!(message_id = %envelope.id, peer = %peer, precedence = envelope.precedence().as_str_name(), state = message.state().as_str_name(), "delivery result");
            }
        }
        Ok(())
    }

    /// An envelope as sent: queued envelopes are signed when stored. One stored unsigned (by an
    /// older version), signed with a key the node no longer presents (its certificate was
    /// rotated since), or signed in a batch for a peer that no longer says it verifies batch
    /// signatures (it was downgraded), is signed again alone for sending: receivers check
    /// against the TLS certificate. The stored signature stays, with the certificate that made
    /// it, for proofs.
    fn signed(&self, stored: &StoredMessage) -> Option<Envelope> {
        let mut envelope = view(stored).envelope?;
        let signer = self.context.signer.current();
        let batch_refused =
            envelope.origin_batch.is_some() && !self.context.peers.verifies_batch_signatures(self.peer.code);
        if (envelope.origin_signature.is_empty()
            || stored.origin_certificate != signer.certificate()
            || batch_refused)
            && let Err(error) = signer.sign_envelope(&mut envelope)
        {
            tracing::error!(message_id = %envelope.id, %error, "cannot sign an envelope again");
        }
        Some(envelope)
    }

    /// Checks a receipt from this task's peer for the message `sent`.
    fn check_receipt(&self, sent: &StoredMessage, receipt: &Receipt) -> Result<(), SigningError> {
        // The digest leaves the signature out, so an envelope stored unsigned checks the same.
        let envelope = view(sent).envelope.unwrap_or_default();
        let receiver = Identity::Node { network: self.context.config.network.clone(), code: self.peer.code };
        let signer = self.context.signer.current();
        let network_ca = signer.network_ca_of(&receipt.receiver_certificate);
        crate::trust::signing::verify_receipt_with(
            receipt,
            &envelope,
            &receiver,
            network_ca,
            Some(&self.chains),
            Some(&self.batches),
        )
    }

    async fn record_failures(
        &self,
        due: Vec<StoredMessage>,
        error: &str,
        delay: Duration,
    ) -> Result<(), StoreError> {
        self.context.peers.update(self.peer.code, |status| status.retries += due.len() as u64);
        let clock = &self.context.clock;
        let changed = self.context.store.write(|changes| {
            let mut changed = Vec::new();
            for stored in due {
                let Some(mut current) = changes.get(message_id(&stored))? else { continue };
                let message = current.message.get_or_insert_default();
                if fail(message, error, delay, clock) {
                    changed.push(message.clone());
                }
                changes.put(current)?;
            }
            Ok::<_, StoreError>(changed)
        })?;
        if !changed.is_empty() {
            self.context.store.persist().await?;
        }
        Ok(())
    }

    async fn expire(&self, expired: Vec<StoredMessage>) -> Result<(), StoreError> {
        let clock = &self.context.clock;
        let changed = self.context.store.write(|changes| {
            let mut changed = Vec::new();
            for stored in expired {
                let Some(mut current) = changes.get(message_id(&stored))? else { continue };
                let message = current.message.get_or_insert_default();
                // The last error may hold a peer's refusal, which stays out of the audit log.
                let note = match message.last_error.as_str() {
                    "" => "expired before delivery".to_owned(),
                    error => changes.note_with_text("expired before delivery; last error", error),
                };
                if apply_logged(message, Happening::DeadlinePassed, note, clock) {
                    message.next_attempt_at = None;
                    changed.push(message.clone());
                }
                changes.put(current)?;
            }
            Ok::<_, StoreError>(changed)
        })?;
        // Expiry is an operator-visible end state: make it durable before announcing it.
        self.context.store.persist().await?;
        for message in &changed {
            let envelope = message.envelope.clone().unwrap_or_default();
            tracing::warn!(message_id = %envelope.id, peer = %self.peer.code, precedence = envelope.precedence().as_str_name(), "message expired undelivered");
        }
        Ok(())
    }
}

/// Records a failed attempt on a message still waiting; returns whether its state changed.
fn fail(message: &mut Message, error: &str, delay: Duration, clock: &Clock) -> bool {
    if !matches!(message.state(), MessageState::Queued | MessageState::WaitingRetry) {
        return false;
    }
    message.attempts = message.attempts.saturating_add(1);
    message.last_error = error.to_owned();
    message.next_attempt_at = Some(clock.after(delay));
    apply_logged(message, Happening::SendFailed, format!("{error} (attempt {})", message.attempts), clock)
}

fn apply_logged(message: &mut Message, happening: Happening, note: String, clock: &Clock) -> bool {
    match lifecycle::apply(message, happening, clock.timestamp(), note) {
        Ok(changed) => changed,
        Err(error) => {
            tracing::warn!(%error, ?happening, "delivery outcome does not apply");
            false
        }
    }
}

fn stored_bytes(stored: &StoredMessage) -> usize {
    stored.message.as_ref().and_then(|m| m.envelope.as_ref()).map_or(0, prost::Message::encoded_len)
}

fn message_id(stored: &StoredMessage) -> Uuid {
    stored
        .message
        .as_ref()
        .and_then(|m| m.envelope.as_ref())
        .and_then(|e| Uuid::parse_str(&e.id).ok())
        .unwrap_or_default()
}

/// A delivery error as operators read it: the status and its causes, e.g. "UNAVAILABLE: transport
/// error: connection refused".
pub fn describe(status: &tonic::Status) -> String {
    use std::error::Error as _;
    // tonic repeats the innermost cause in its message and in the chain: keep each text once.
    let mut parts: Vec<String> = Vec::new();
    let mut source = status.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if !status.message().is_empty() && !parts.iter().any(|p| p.contains(status.message())) {
        parts.insert(0, status.message().to_owned());
    }
    format!("{:?}: {}", status.code(), parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::Clock;
    use crate::node::testing;

    #[tokio::test]
    async fn a_queued_message_expires_once_the_clock_passes_its_expiry() {
        let start = SystemTime::now();
        let manual = Clock::manual(start);
        let (_dir, context) = testing::context(manual.clock()).await;
        let expiry = Duration::from_secs(3600);
        let id = testing::store_request(&context, MessageState::Queued, start, start + expiry);
        let fr = "FR".parse().unwrap();
        let entry = context.peer(fr).unwrap();
        let tls = crate::trust::tls::NodeTls::load(&context.config.tls).unwrap().client_config();
        let mut delivery = PeerDelivery::new(Arc::clone(&context), entry, tls, context.waker(fr)).unwrap();

        let Pick::Batch(batch) = delivery.pick().await.unwrap() else { panic!("due before its expiry") };
        assert_eq!(batch.iter().map(message_id).collect::<Vec<_>>(), vec![id]);

        manual.advance(expiry);
        assert!(matches!(delivery.pick().await.unwrap(), Pick::Nothing(None)), "nothing left to send");
        let message = view(&context.store.get(id).unwrap().unwrap());
        assert_eq!(message.state(), MessageState::Expired);
        let expired_at = message.timeline.last().and_then(|t| t.at).unwrap();
        assert_eq!(timestamp::to_system(&expired_at), start + expiry, "stamped with the node's clock");
        assert!(context.store.outbox_for(fr, 10).unwrap().is_empty());
    }

    #[test]
    fn a_node_says_hello_every_30_s_or_at_most_once_a_second_in_all_jittered() {
        for _ in 0..200 {
            let small = hello_interval(2);
            assert!(
                small >= Duration::from_millis(22_500) && small <= Duration::from_millis(37_500),
                "{small:?}"
            );
            let large = hello_interval(192);
            assert!(large >= Duration::from_secs(144) && large <= Duration::from_secs(240), "{large:?}");
        }
    }
}
