//! The peer service (`PeerService`) on the peer listener: a thin adapter that reads the caller's
//! certificate from the TLS connection and hands the call to [`Receiver`].

use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::peer::receive::Receiver;
use crate::peer::recovery::RecoveryAnswers;
use crate::peer::transfer::Transfers;
use crate::proto::peer_service_server::PeerService;
use crate::proto::{
    DeliverRequest, DeliverResponse, HelloRequest, HelloResponse, PutAttachmentRequest,
    PutAttachmentResponse, RecoverRequest, RecoverResponse,
};
use crate::runtime::context::NodeContext;

/// The peer service of one node.
pub struct PeerApi {
    receiver: Receiver,
    /// `Recover` answers, one at a time per caller.
    recovery: RecoveryAnswers,
    /// `PutAttachment` pieces, written one at a time.
    transfers: Transfers,
}

/// A stream of `Recover` batches.
type RecoverStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<RecoverResponse, Status>> + Send>>;

impl PeerApi {
    /// The peer service over a node's shared state.
    pub fn new(context: Arc<NodeContext>) -> Self {
        Self {
            receiver: Receiver::new(Arc::clone(&context)),
            transfers: Transfers::new(Arc::clone(&context)),
            recovery: RecoveryAnswers::new(context),
        }
    }
}

/// The DER of the caller's own certificate, empty without one.
fn caller_certificate<T>(request: &Request<T>) -> Vec<u8> {
    request.peer_certs().and_then(|c| c.first().map(|c| c.to_vec())).unwrap_or_default()
}

#[tonic::async_trait]
impl PeerService for PeerApi {
    async fn deliver(&self, request: Request<DeliverRequest>) -> Result<Response<DeliverResponse>, Status> {
        let certificate = caller_certificate(&request);
        let sender =
            self.receiver.authenticate(crate::trust::tls::caller_identity(&request), &certificate)?;
        Ok(Response::new(self.receiver.deliver(sender, &certificate, request.into_inner()).await?))
    }

    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let certificate = caller_certificate(&request);
        let caller =
            self.receiver.authenticate(crate::trust::tls::caller_identity(&request), &certificate)?;
        Ok(Response::new(self.receiver.hello_witnessed(caller, &certificate, request.get_ref()).await))
    }

    async fn put_attachment(
        &self,
        request: Request<tonic::Streaming<PutAttachmentRequest>>,
    ) -> Result<Response<PutAttachmentResponse>, Status> {
        use tokio_stream::StreamExt as _;
        let certificate = caller_certificate(&request);
        let sender =
            self.receiver.authenticate(crate::trust::tls::caller_identity(&request), &certificate)?;
        // A stream that breaks ends the call; what was synced stays for the sender to resume.
        let pieces = request.into_inner().map(|piece| {
            piece.map_err(|status| {
                crate::peer::receive::PeerError::Invalid(crate::domain::validation::FieldError::new(
                    "data",
                    format!("the transfer broke off ({}); what arrived before is kept", status.message()),
                ))
            })
        });
        Ok(Response::new(self.transfers.take(sender, pieces).await?))
    }

    type RecoverStream = RecoverStream;

    async fn recover(&self, request: Request<RecoverRequest>) -> Result<Response<RecoverStream>, Status> {
        let certificate = caller_certificate(&request);
        let caller =
            self.receiver.authenticate(crate::trust::tls::caller_identity(&request), &certificate)?;
        let batches = self.recovery.answer(caller, &certificate, request.get_ref()).await?;
        Ok(Response::new(Box::pin(tokio_stream::iter(batches.into_iter().map(Ok)))))
    }
}
