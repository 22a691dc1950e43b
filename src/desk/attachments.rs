//! Attachments at the desk: uploading content before the `Submit` or `Respond` that lists it,
//! checking that what an envelope lists is held here, and downloading the content of a message
//! the caller may read (the rule of `Get`, so an agency gets only its own).
//!
//! The content lives in the store's attachment files (`store::attachments`); an upload is
//! answered only once its file is on the device and its `u` key is flushed.

use std::io::Read as _;
use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};

use super::authorization::audit_call;
use super::{Desk, DeskError};
use crate::domain::access::{Action, Caller};
use crate::domain::validation::FieldError;
use crate::proto::{
    Attachment, DownloadAttachmentRequest, DownloadAttachmentResponse, Envelope, UploadAttachmentRequest,
};
use crate::store::attachments::{Digest, digest_of};
use crate::store::{Changes, StoreError};

/// The pieces of an attachment's content, in order.
pub type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadAttachmentResponse, DeskError>> + Send>>;

/// Bytes per downloaded piece.
const PIECE_BYTES: usize = 256 * 1024;

/// The media type of an upload that names none.
const DEFAULT_MEDIA_TYPE: &str = "application/octet-stream";

use crate::runtime::context::ATTACHMENT_CONTENT;

impl Desk {
    /// Stores the content `pieces` carry as an attachment and answers what to list for it, once
    /// it is on the device. Over `limits.max_attachment_bytes`: refused naming the limit, and
    /// nothing is kept (the temp file is removed).
    pub async fn upload_attachment<S>(&self, caller: &Caller, mut pieces: S) -> Result<Attachment, DeskError>
    where
        S: Stream<Item = Result<UploadAttachmentRequest, DeskError>> + Unpin,
    {
        let limits = &self.context.config.limits;
        let mut upload = Some(self.context.store.begin_upload()?);
        let (mut name, mut media_type) = (String::new(), String::new());
        let mut first = true;
        while let Some(piece) = pieces.next().await {
            let piece = piece?;
            if first {
                (name, media_type) = (piece.name, piece.media_type);
                if name.trim().is_empty() {
                    return Err(
                        FieldError::new("name", "required in the first piece: the file's name").into()
                    );
                }
                if media_type.trim().is_empty() {
                    media_type = DEFAULT_MEDIA_TYPE.to_owned();
                }
                first = false;
            }
            let Some(mut writing) = upload.take() else { break };
            if writing.size() + piece.data.len() as u64 > limits.max_attachment_bytes {
                return Err(FieldError::over_limit(
                    "data",
                    format!(
                        "more than {} bytes (limits.max_attachment_bytes); nothing was kept",
                        limits.max_attachment_bytes
                    ),
                )
                .into());
            }
            // Into the page cache: cheap, but off the async workers all the same.
            let data = piece.data;
            let written = tokio::task::spawn_blocking(move || writing.write(&data).map(|()| writing)).await;
            upload = Some(joined(written)??);
        }
        if first {
            return Err(FieldError::new("name", "required: an upload sends at least one piece").into());
        }
        let Some(writing) = upload else {
            return Err(StoreError::Io(std::io::Error::other("the upload was lost")).into());
        };
        let (digest, size) = joined(tokio::task::spawn_blocking(move || writing.finish()).await)??;
        let now = self.context.clock.now();
        let attachment = Attachment { name, media_type, size_bytes: size, sha256: digest.to_vec() };
        crate::domain::validation::check_attachment_names("", &attachment, limits)?;
        self.context.store.write(|changes| {
            changes.record_upload(&digest, now);
            let details = format!("{size} bytes, sha256 {}", hex::encode(digest));
            audit_call(changes, caller, Action::UploadAttachment, "", &details);
            Ok::<_, DeskError>(())
        })?;
        self.context.store.persist().await?;
        tracing::info!(client = %caller.name, size, sha256 = %hex::encode(digest), "attachment uploaded");
        Ok(attachment)
    }

    /// Fills in the size of every attachment `envelope` lists from the content held here, and
    /// checks the sizes against the limits; refuses (naming the field) a digest with no content
    /// here or a size that is not the content's.
    pub(super) fn resolve_attachments(&self, envelope: &mut Envelope) -> Result<(), DeskError> {
        if envelope.attachments.is_empty() {
            return Ok(());
        }
        if let Ok(destination) = envelope.destination.parse()
            && self.context.peers.known_not_to_read(destination, ATTACHMENT_CONTENT)
        {
            return Err(DeskError::PeerCannotRead(FieldError::new(
                "attachments",
                format!(
                    "{destination} runs a version that does not take attachments' content; send without attachments, or once it is upgraded"
                ),
            )));
        }
        for (i, attachment) in envelope.attachments.iter_mut().enumerate() {
            let digest = attachment_digest(i, attachment)?;
            let Some(size) = self.context.store.attachment_size(&digest)? else {
                return Err(unknown_digest(i, &digest).into());
            };
            if attachment.size_bytes != 0 && attachment.size_bytes != size {
                return Err(FieldError::new(
                    format!("attachments[{i}].size_bytes"),
                    format!(
                        "{} bytes, but the content uploaded under this digest has {size}",
                        attachment.size_bytes
                    ),
                )
                .into());
            }
            attachment.size_bytes = size;
        }
        crate::domain::validation::check_attachment_sizes(envelope, &self.context.config.limits)?;
        Ok(())
    }

    /// The attachments of a response to request `id`, checked and with their sizes (see
    /// [`Desk::resolve_attachments`]); nothing to check without any.
    pub(super) fn respond_attachments(
        &self,
        id: uuid::Uuid,
        attachments: Vec<Attachment>,
    ) -> Result<Vec<Attachment>, DeskError> {
        if attachments.is_empty() {
            return Ok(attachments);
        }
        let limits = &self.context.config.limits;
        if attachments.len() > limits.max_attachments {
            return Err(FieldError::over_limit(
                "attachments",
                format!(
                    "{} attachments, at most {} (limits.max_attachments)",
                    attachments.len(),
                    limits.max_attachments
                ),
            )
            .into());
        }
        for (i, attachment) in attachments.iter().enumerate() {
            crate::domain::validation::check_attachment_names(
                &format!("attachments[{i}]."),
                attachment,
                limits,
            )?;
        }
        // The request's origin is where the response goes; an unknown id fails in `respond`.
        let origin = self
            .context
            .store
            .get(id)?
            .and_then(|s| s.message)
            .and_then(|m| m.envelope)
            .map(|e| e.origin)
            .unwrap_or_default();
        let mut probe = Envelope { destination: origin, attachments, ..Default::default() };
        self.resolve_attachments(&mut probe)?;
        Ok(probe.attachments)
    }

    /// The content of an attachment `request.id` lists, in pieces, if the caller may read the
    /// message. The read is audited before the first piece.
    pub async fn download_attachment(
        &self,
        caller: &Caller,
        request: DownloadAttachmentRequest,
    ) -> Result<DownloadStream, DeskError> {
        let digest = digest_of(&request.sha256).ok_or_else(|| {
            FieldError::new("sha256", "must be exactly 32 bytes (the attachment's SHA-256)")
        })?;
        let (id, stored) = self.visible_message(caller, &request.id)?;
        let listed = stored
            .message
            .as_ref()
            .and_then(|m| m.envelope.as_ref())
            .is_some_and(|e| e.attachments.iter().any(|a| a.sha256 == digest));
        if !listed {
            return Err(DeskError::NotFound(format!(
                "{id} lists no attachment with sha256 {}",
                hex::encode(digest)
            )));
        }
        let Some(mut file) = self.context.store.open_attachment(&digest)? else {
            return Err(DeskError::NotFound(format!(
                "the content of attachment {} of {id} is not on this node yet",
                hex::encode(digest)
            )));
        };
        let details = format!("sha256 {}", hex::encode(digest));
        self.audit_read(caller, Action::DownloadAttachment, &id.to_string(), &details).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let stop = self.stop.clone();
        self.tasks.spawn_blocking(move || {
            let mut buffer = vec![0; PIECE_BYTES];
            loop {
                let piece = match file.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(n) => Ok(DownloadAttachmentResponse { data: buffer[..n].to_vec() }),
                    Err(error) => Err(DeskError::Store(StoreError::Io(error))),
                };
                let failed = piece.is_err();
                if stop.is_cancelled() || sender.blocking_send(piece).is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver)))
    }
}

/// Under the writer lock: every attachment `envelope` lists is still held (an unreferenced upload
/// may have been removed since [`Desk::resolve_attachments`]); the write that stores the
/// envelope then keeps it for good.
pub(super) fn check_still_held(changes: &Changes<'_>, envelope: &Envelope) -> Result<(), DeskError> {
    for (i, attachment) in envelope.attachments.iter().enumerate() {
        let digest = attachment_digest(i, attachment)?;
        if changes.attachment_size(&digest)?.is_none() {
            return Err(unknown_digest(i, &digest).into());
        }
    }
    Ok(())
}

/// The digest of the `i`th attachment, or a refusal naming its field.
fn attachment_digest(i: usize, attachment: &Attachment) -> Result<Digest, FieldError> {
    digest_of(&attachment.sha256)
        .ok_or_else(|| FieldError::new(format!("attachments[{i}].sha256"), "must be exactly 32 bytes"))
}

/// The refusal of a digest this node holds no content for.
fn unknown_digest(i: usize, digest: &Digest) -> FieldError {
    FieldError::new(
        format!("attachments[{i}].sha256"),
        format!(
            "no uploaded attachment has sha256 {} (or it was removed, unused, after the grace period): upload it first (UploadAttachment)",
            hex::encode(digest)
        ),
    )
}

/// A blocking task's result, its failure as a store error.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Io(std::io::Error::other(format!("an attachment task failed: {e}"))))
}
