//! The desk service (`DeskService`) on the desk listener: a thin adapter that reads the caller's
//! certificate identity from the TLS connection, has [`Desk::authorize`] turn it into a caller,
//! and hands the call to the matching [`Desk`] operation. It decides nothing itself; refusals
//! become statuses only through `status` (`From<DeskError> for Status`).

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::desk::{Desk, DeskError};
use crate::domain::access::{Action, Caller};
use crate::proto::desk_service_server::DeskService;
use crate::proto::{
    AcknowledgeRequest, AcknowledgeResponse, BackupRequest, BackupResponse, CancelRequest, CancelResponse,
    DisputePrecedenceRequest, DisputePrecedenceResponse, DownloadAttachmentRequest,
    DownloadAttachmentResponse, GetProofRequest, GetProofResponse, GetQueueRequest, GetQueueResponse,
    GetRequest, GetResponse, GetStatisticsRequest, GetStatisticsResponse, ListAuditRequest,
    ListAuditResponse, ListInboxRequest, ListInboxResponse, ListOutboxRequest, ListOutboxResponse,
    ListPeersRequest, ListPeersResponse, ListPreservationsRequest, ListPreservationsResponse,
    RecoverFromPeersRequest, RecoverFromPeersResponse, RequeueRequest, RequeueResponse, RespondRequest,
    RespondResponse, SubmitRequest, SubmitResponse, UploadAttachmentRequest, UploadAttachmentResponse,
    WatchRequest, WatchResponse,
};

/// Response header of `Watch`: the sequence number the stream starts after.
pub const WATCH_AFTER_HEADER: &str = "hanoi247-watch-after";

/// A desk stream as tonic sends it.
type StatusStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The desk service of one node.
pub struct DeskApi {
    desk: Arc<Desk>,
}

impl DeskApi {
    /// The gRPC face of `desk`.
    pub fn new(desk: Arc<Desk>) -> Self {
        Self { desk }
    }

    /// The caller of `request`, by its certificate, if it may make `action`.
    fn authorize<T>(&self, request: &Request<T>, action: Action) -> Result<Caller, DeskError> {
        self.desk.authorize(crate::trust::tls::caller_identity(request), action)
    }
}

/// A stream of desk results as a stream of gRPC results.
fn with_statuses<T: 'static>(
    stream: impl Stream<Item = Result<T, DeskError>> + Send + 'static,
) -> StatusStream<T> {
    Box::pin(stream.map(|item| item.map_err(Status::from)))
}

#[tonic::async_trait]
impl DeskService for DeskApi {
    async fn submit(&self, request: Request<SubmitRequest>) -> Result<Response<SubmitResponse>, Status> {
        let caller = self.authorize(&request, Action::Submit)?;
        let submitted = self.desk.submit_or_replay(&caller, request.into_inner()).await?;
        Ok(Response::new(SubmitResponse {
            message: Some(submitted.message),
            replayed: submitted.replayed,
            warnings: submitted.warnings,
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let caller = self.authorize(&request, Action::Get)?;
        Ok(Response::new(self.desk.get(&caller, request.into_inner()).await?))
    }

    async fn list_inbox(
        &self,
        request: Request<ListInboxRequest>,
    ) -> Result<Response<ListInboxResponse>, Status> {
        let caller = self.authorize(&request, Action::ListInbox)?;
        let page = self.desk.list_inbox(&caller, request.into_inner()).await?;
        Ok(Response::new(ListInboxResponse {
            messages: page.messages,
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_outbox(
        &self,
        request: Request<ListOutboxRequest>,
    ) -> Result<Response<ListOutboxResponse>, Status> {
        let caller = self.authorize(&request, Action::ListOutbox)?;
        let page = self.desk.list_outbox(&caller, request.into_inner()).await?;
        Ok(Response::new(ListOutboxResponse {
            messages: page.messages,
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_queue(
        &self,
        request: Request<GetQueueRequest>,
    ) -> Result<Response<GetQueueResponse>, Status> {
        let caller = self.authorize(&request, Action::GetQueue)?;
        Ok(Response::new(GetQueueResponse { peers: self.desk.get_queue(&caller).await? }))
    }

    async fn list_peers(
        &self,
        request: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let caller = self.authorize(&request, Action::ListPeers)?;
        Ok(Response::new(self.desk.list_peers(&caller)))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeRequest>,
    ) -> Result<Response<AcknowledgeResponse>, Status> {
        let caller = self.authorize(&request, Action::Acknowledge)?;
        let message = self.desk.acknowledge(&caller, request.into_inner()).await?;
        Ok(Response::new(AcknowledgeResponse { message: Some(message) }))
    }

    async fn dispute_precedence(
        &self,
        request: Request<DisputePrecedenceRequest>,
    ) -> Result<Response<DisputePrecedenceResponse>, Status> {
        let caller = self.authorize(&request, Action::DisputePrecedence)?;
        let dispute = self.desk.dispute_precedence(&caller, request.into_inner()).await?;
        Ok(Response::new(DisputePrecedenceResponse { dispute: Some(dispute) }))
    }

    async fn respond(&self, request: Request<RespondRequest>) -> Result<Response<RespondResponse>, Status> {
        let caller = self.authorize(&request, Action::Respond)?;
        let message = self.desk.respond(&caller, request.into_inner()).await?;
        Ok(Response::new(RespondResponse { message: Some(message) }))
    }

    async fn cancel(&self, request: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        let caller = self.authorize(&request, Action::Cancel)?;
        let message = self.desk.cancel(&caller, request.into_inner()).await?;
        Ok(Response::new(CancelResponse { message: Some(message) }))
    }

    async fn close_case(
        &self,
        request: Request<crate::proto::CloseCaseRequest>,
    ) -> Result<Response<crate::proto::CloseCaseResponse>, Status> {
        let caller = self.authorize(&request, Action::CloseCase)?;
        let (message, closed_ids) = self.desk.close_case(&caller, request.into_inner()).await?;
        Ok(Response::new(crate::proto::CloseCaseResponse { message: Some(message), closed_ids }))
    }

    async fn requeue(&self, request: Request<RequeueRequest>) -> Result<Response<RequeueResponse>, Status> {
        let caller = self.authorize(&request, Action::Requeue)?;
        let message = self.desk.requeue(&caller, request.into_inner()).await?;
        Ok(Response::new(RequeueResponse { message: Some(message) }))
    }

    async fn get_statistics(
        &self,
        request: Request<GetStatisticsRequest>,
    ) -> Result<Response<GetStatisticsResponse>, Status> {
        let caller = self.authorize(&request, Action::GetStatistics)?;
        Ok(Response::new(self.desk.statistics(&caller, request.into_inner()).await?))
    }

    async fn list_preservations(
        &self,
        request: Request<ListPreservationsRequest>,
    ) -> Result<Response<ListPreservationsResponse>, Status> {
        let caller = self.authorize(&request, Action::ListPreservations)?;
        let messages = self.desk.list_preservations(&caller, request.into_inner()).await?;
        Ok(Response::new(ListPreservationsResponse { messages }))
    }

    async fn get_proof(
        &self,
        request: Request<GetProofRequest>,
    ) -> Result<Response<GetProofResponse>, Status> {
        // A proof is a read of the message: the same permission as `Get`.
        let caller = self.authorize(&request, Action::Get)?;
        Ok(Response::new(self.desk.get_proof(&caller, request.into_inner()).await?))
    }

    type WatchStream = StatusStream<WatchResponse>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.authorize(&request, Action::Watch)?;
        let watching = self.desk.watch(&caller, request.into_inner()).await?;
        let mut response = Response::new(with_statuses(watching.events));
        // Tells a watcher that asked for "from now" where now is, so it can resume without a gap.
        response.metadata_mut().insert(WATCH_AFTER_HEADER, watching.after.into());
        Ok(response)
    }

    type RecoverFromPeersStream = StatusStream<RecoverFromPeersResponse>;

    async fn recover_from_peers(
        &self,
        request: Request<RecoverFromPeersRequest>,
    ) -> Result<Response<Self::RecoverFromPeersStream>, Status> {
        let caller = self.authorize(&request, Action::RecoverFromPeers)?;
        let progress = self.desk.recover_from_peers(&caller, request.into_inner()).await?;
        Ok(Response::new(with_statuses(progress)))
    }

    type BackupStream = StatusStream<BackupResponse>;

    async fn backup(&self, request: Request<BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let caller = self.authorize(&request, Action::Backup)?;
        let chunks = self.desk.backup(&caller, request.into_inner()).await?;
        Ok(Response::new(with_statuses(chunks)))
    }

    async fn upload_attachment(
        &self,
        request: Request<tonic::Streaming<UploadAttachmentRequest>>,
    ) -> Result<Response<UploadAttachmentResponse>, Status> {
        let caller = self.authorize(&request, Action::UploadAttachment)?;
        // A stream that breaks is a client gone: what it sent is dropped, nothing is kept.
        let pieces = request.into_inner().map(|piece| {
            piece.map_err(|status| {
                DeskError::Invalid(crate::domain::validation::FieldError::new(
                    "data",
                    format!("the upload did not complete ({}); nothing was kept", status.message()),
                ))
            })
        });
        let attachment = self.desk.upload_attachment(&caller, pieces).await?;
        Ok(Response::new(UploadAttachmentResponse { attachment: Some(attachment) }))
    }

    type DownloadAttachmentStream = StatusStream<DownloadAttachmentResponse>;

    async fn download_attachment(
        &self,
        request: Request<DownloadAttachmentRequest>,
    ) -> Result<Response<Self::DownloadAttachmentStream>, Status> {
        let caller = self.authorize(&request, Action::DownloadAttachment)?;
        let pieces = self.desk.download_attachment(&caller, request.into_inner()).await?;
        Ok(Response::new(with_statuses(pieces)))
    }

    type ListAuditStream = StatusStream<ListAuditResponse>;

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<Self::ListAuditStream>, Status> {
        let caller = self.authorize(&request, Action::ListAudit)?;
        let listing = self.desk.list_audit(&caller, request.into_inner()).await?;
        let mut response = Response::new(with_statuses(listing.records));
        // Digits, ':' and hex digits: always a valid header value.
        if let Ok(header) = listing.head.to_text().parse() {
            response.metadata_mut().insert(crate::store::audit::AUDIT_HEAD_HEADER, header);
        }
        // URL-safe base64: always a valid header value.
        if let Ok(token) = listing.next_page_token.parse()
            && !listing.next_page_token.is_empty()
        {
            response.metadata_mut().insert(crate::desk::NEXT_PAGE_TOKEN_HEADER, token);
        }
        for (peer, head) in &listing.witnessed {
            let Ok(hash) = <[u8; 32]>::try_from(head.hash.as_slice()) else { continue };
            let witnessed = crate::store::audit::WitnessedHead {
                peer: peer.to_string(),
                head: crate::store::audit::ChainHead { sequence: head.sequence, hash },
                signed_at: head.signed_at.map_or(0, |at| at.seconds),
            };
            // A node code, digits, ':', hex digits and spaces: always a valid header value.
            if let Ok(value) = witnessed.to_text().parse() {
                response.metadata_mut().append(crate::store::audit::AUDIT_WITNESSED_HEADER, value);
            }
        }
        Ok(response)
    }
}
