//! Attachments' content between nodes (`PeerService.PutAttachment`): the delivery task pushes
//! the content of a batch's attachments before the batch ([`push`]), and the receiver takes it
//! in pieces synced to its disk ([`Transfers::take`]), so a cut connection or a restart at either
//! end resumes where the receiver's disk stands. The receiver refuses an envelope whose
//! attachments it does not hold (`Store::check_held`): its receipt covers the content, whose
//! digest the envelope's signature covers.
//!
//! Invariant: the receiver holds a digest-named file only once its whole content has that
//! digest (`store::attachments`); a piece whose own digest does not match is never written.

use std::io::{Read as _, Seek as _};
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};

use crate::domain::identity::NodeCode;
use crate::domain::validation::FieldError;
use crate::peer::receive::PeerError;
use crate::proto::peer_service_client::PeerServiceClient;
use crate::proto::{Attachment, PutAttachmentRequest, PutAttachmentResponse};
use crate::runtime::context::NodeContext;
use crate::store::StoreError;
use crate::store::attachments::{Digest, Incoming, IncomingError, digest_of};

/// Bytes per piece sent.
pub const PIECE_BYTES: usize = 1024 * 1024;
/// Bytes per `PutAttachment` call at most, so one call stays well within the delivery's
/// request timeout; the next call goes on from where the receiver stands.
const CALL_BYTES: u64 = 8 * 1024 * 1024;
/// Calls in a row that move nothing before the push gives up (the delivery retries later).
const MOST_STALLS: u32 = 3;

/// The receiving side of `PutAttachment`.
pub struct Transfers {
    context: Arc<NodeContext>,
    /// One piece written at a time: a piece is checked against the partial file's length and
    /// appended under it, so two calls for the same content never interleave their bytes.
    writing: tokio::sync::Mutex<()>,
}

impl Transfers {
    /// The receiving side over a node's shared state.
    pub fn new(context: Arc<NodeContext>) -> Self {
        Self { context, writing: tokio::sync::Mutex::new(()) }
    }

    /// Takes the pieces `sender` sends, each synced to the disk before the next is read, and
    /// answers how much of the content is held (see `PeerService.PutAttachment`).
    pub async fn take<S>(&self, sender: NodeCode, mut pieces: S) -> Result<PutAttachmentResponse, PeerError>
    where
        S: Stream<Item = Result<PutAttachmentRequest, PeerError>> + Unpin,
    {
        let limits = &self.context.config.limits;
        let mut held = PutAttachmentResponse::default();
        while let Some(piece) = pieces.next().await {
            let PutAttachmentRequest { sha256, size_bytes, offset, data, piece_sha256 } = piece?;
            let digest = digest_of(&sha256)
                .ok_or_else(|| PeerError::Invalid(FieldError::new("sha256", "must be exactly 32 bytes")))?;
            if size_bytes > limits.max_attachment_bytes {
                return Err(PeerError::Invalid(FieldError::over_limit(
                    "size_bytes",
                    format!(
                        "{size_bytes} bytes, at most {} (limits.max_attachment_bytes)",
                        limits.max_attachment_bytes
                    ),
                )));
            }
            if !piece_sha256.is_empty() && piece_sha256 != sha256_of(&data) {
                self.context.metrics.attachment_pieces_refused.inc();
                tracing::warn!(peer = %sender, sha256 = %hex::encode(digest), offset, "attachment piece refused: its digest does not match");
                return Err(PeerError::Invalid(FieldError::new(
                    "piece_sha256",
                    format!(
                        "the piece at offset {offset} does not have this SHA-256: nothing of it was kept; send it again"
                    ),
                )));
            }
            let store = self.context.store.clone();
            let length = data.len() as u64;
            let _turn = self.writing.lock().await;
            let appended = tokio::task::spawn_blocking(move || {
                store.append_incoming(&digest, size_bytes, offset, &data)
            })
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(format!("an attachment task failed: {e}"))))?;
            match appended {
                Ok(Incoming::Complete) => {
                    self.context.metrics.attachment_bytes_received.inc_by(length);
                    // Removed like an unused upload if no envelope ever lists it (the write is
                    // durable with the next flush; lost, the file is only kept longer).
                    let now = self.context.clock.now();
                    self.context.store.write(|changes| {
                        changes.record_upload(&digest, now);
                        Ok::<_, StoreError>(())
                    })?;
                    tracing::info!(peer = %sender, sha256 = %hex::encode(digest), size = size_bytes, "attachment received");
                    return Ok(PutAttachmentResponse { offset: size_bytes, complete: true });
                }
                Ok(Incoming::Partial(now)) => {
                    self.context.metrics.attachment_bytes_received.inc_by(length);
                    held = PutAttachmentResponse { offset: now, complete: false };
                }
                Err(IncomingError::Offset(now)) => {
                    return Ok(PutAttachmentResponse { offset: now, complete: false });
                }
                Err(error @ IncomingError::TooLong { .. }) => {
                    return Err(PeerError::Invalid(FieldError::new("data", error.to_string())));
                }
                Err(error @ IncomingError::Mismatch) => {
                    tracing::warn!(peer = %sender, sha256 = %hex::encode(digest), "attachment discarded: its content does not have its digest");
                    let message = error.to_string();
                    let text = message.strip_prefix("sha256: ").unwrap_or(&message);
                    return Err(PeerError::Invalid(FieldError::new("sha256", text)));
                }
                Err(IncomingError::Store(error)) => return Err(error.into()),
            }
        }
        Ok(held)
    }
}

/// Why pushing an attachment to a peer failed (the delivery retries later).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The attachment cannot be pushed as it is.
    #[error("{0}")]
    Call(String),
    /// The peer refused or the call failed.
    #[error("attachment transfer: {}", .0.message())]
    Status(tonic::Status),
    /// This node cannot read the content.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Pushes `attachment`'s content to the peer behind `client` until the peer holds it whole,
/// from wherever the peer's disk stands.
pub async fn push(
    context: &NodeContext,
    client: &mut PeerServiceClient<tonic::transport::Channel>,
    attachment: &Attachment,
) -> Result<(), PushError> {
    let Some(digest) = digest_of(&attachment.sha256) else {
        return Err(PushError::Call("the attachment's sha256 is not 32 bytes".into()));
    };
    let size = attachment.size_bytes;
    let path = context.store.attachment_path(&digest);
    if context.store.attachment_size(&digest)? != Some(size) {
        return Err(PushError::Call(format!(
            "the content of attachment {} is not on this node whole",
            hex::encode(digest)
        )));
    }
    // Where the peer stands: a piece without data.
    let probe = PutAttachmentRequest { sha256: digest.to_vec(), size_bytes: size, ..Default::default() };
    let mut held = call(client, tokio_stream::iter([probe])).await?;
    let mut stalls = 0;
    context.metrics.attachment_transfers_in_flight.inc();
    let _counted = Decrement(&context.metrics.attachment_transfers_in_flight);
    while !held.complete {
        let from = held.offset;
        let until = size.min(from.saturating_add(CALL_BYTES));
        let pieces = read_pieces(path.clone(), digest, size, from, until);
        held = call(client, pieces).await?;
        if !held.complete && held.offset <= from {
            stalls += 1;
            if stalls >= MOST_STALLS {
                return Err(PushError::Call(format!(
                    "attachment {}: the peer holds {} of {size} bytes and takes no more",
                    hex::encode(digest),
                    held.offset
                )));
            }
        } else {
            stalls = 0;
        }
        let sent = held.offset.saturating_sub(from);
        context.metrics.attachment_bytes_sent.inc_by(if held.complete { until - from } else { sent });
    }
    Ok(())
}

/// One `PutAttachment` call.
async fn call(
    client: &mut PeerServiceClient<tonic::transport::Channel>,
    pieces: impl Stream<Item = PutAttachmentRequest> + Send + 'static,
) -> Result<PutAttachmentResponse, PushError> {
    client.put_attachment(pieces).await.map(tonic::Response::into_inner).map_err(PushError::Status)
}

/// The pieces of bytes `from..until` of the file at `path`, read off the async workers.
fn read_pieces(
    path: std::path::PathBuf,
    digest: Digest,
    size: u64,
    from: u64,
    until: u64,
) -> impl Stream<Item = PutAttachmentRequest> + Send + 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let Ok(mut file) = std::fs::File::open(&path) else { return };
        if file.seek(std::io::SeekFrom::Start(from)).is_err() {
            return;
        }
        let mut offset = from;
        while offset < until {
            let mut data = vec![0; PIECE_BYTES.min((until - offset) as usize)];
            if file.read_exact(&mut data).is_err() {
                return;
            }
            let piece = PutAttachmentRequest {
                sha256: digest.to_vec(),
                size_bytes: size,
                offset,
                piece_sha256: sha256_of(&data),
                data,
            };
            offset += piece.data.len() as u64;
            // The call ended (the peer answered or the connection broke): stop reading.
            if sender.blocking_send(piece).is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// SHA-256 of `data`.
fn sha256_of(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
}

/// Takes one off a gauge when dropped (a push ends however it ends).
struct Decrement<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
