//! Connecting to a node's desk API as a desk client (the CLI, the demo, tests, agency systems
//! written in Rust).

use std::time::Duration;

use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::proto::desk_service_client::DeskServiceClient;
use crate::trust::tls::{self, Dial, TlsError};

/// A desk API client over mutual TLS.
pub type DeskClient = DeskServiceClient<Channel>;

/// How long connecting (TCP and the TLS handshake) may take by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the node that `config` points at. Connects lazily: the first call connects.
pub fn connect(config: &ClientConfig) -> Result<DeskClient, TlsError> {
    connect_within(config, CONNECT_TIMEOUT)
}

/// [`connect`] with its own bound on connecting (the CLI's `--timeout`).
pub fn connect_within(config: &ClientConfig, connect_timeout: Duration) -> Result<DeskClient, TlsError> {
    Ok(DeskServiceClient::new(channel_within(config, connect_timeout)?))
}

/// A channel to the desk listener that `config` points at, for any service served there
/// (the desk API, `grpc.health.v1`, reflection).
pub fn channel(config: &ClientConfig) -> Result<Channel, TlsError> {
    channel_within(config, CONNECT_TIMEOUT)
}

/// [`channel`] with its own bound on connecting.
pub fn channel_within(config: &ClientConfig, connect_timeout: Duration) -> Result<Channel, TlsError> {
    // Read again when the files change: a long-running client survives a certificate rotation.
    let tls = tls::client_config_from_files(&config.ca, &config.cert, &config.key)?;
    let dial = Dial {
        endpoint: config.endpoint.clone(),
        expect: None,
        connect_timeout,
        request_timeout: None,
        observe: None,
    };
    tls::channel(dial, tls)
}

/// Why waiting for a state ended without it.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed; the message was last seen in `last`.
    #[error("message {id} did not reach {wanted} within {waited:?}; it is {last}")]
    Timeout {
        /// The message.
        id: String,
        /// The state waited for.
        wanted: &'static str,
        /// How long.
        waited: Duration,
        /// The state it was in.
        last: String,
    },
    /// The node refused the read.
    #[error(transparent)]
    Status(#[from] tonic::Status),
}

/// Polls `Get` until the message is in `state` (or the deadline passes), returning it.
pub async fn wait_for_state(
    client: &mut DeskClient,
    id: &str,
    state: crate::proto::MessageState,
    within: Duration,
) -> Result<crate::proto::Message, WaitError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let found = client.get(crate::proto::GetRequest { id: id.to_owned() }).await;
        let last = match found {
            Ok(response) => {
                let message = response.into_inner().message.unwrap_or_default();
                if message.state() == state {
                    return Ok(message);
                }
                crate::domain::lifecycle::state_name(message.state()).to_owned()
            }
            // Not there yet (a receiver waiting for delivery) is a normal step of waiting.
            Err(status) if status.code() == tonic::Code::NotFound => "not stored yet".to_owned(),
            Err(status) => return Err(status.into()),
        };
        if tokio::time::Instant::now() >= deadline {
            let wanted = crate::domain::lifecycle::state_name(state);
            return Err(WaitError::Timeout { id: id.to_owned(), wanted, waited: within, last });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How `Submit` is retried by [`submit_retrying`]: attempts in all, the pause before the first
/// retry (doubled for each next one, up to `max_pause`), and how long one attempt may take.
#[derive(Debug, Clone, Copy)]
pub struct SubmitRetry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The pause before the first retry.
    pub first_pause: Duration,
    /// The longest pause.
    pub max_pause: Duration,
    /// The deadline of one attempt (sent as `grpc-timeout`): a node that does not answer in time
    /// becomes DEADLINE_EXCEEDED, which is retried.
    pub attempt_timeout: Duration,
}

impl Default for SubmitRetry {
    /// Eight attempts over about 18 seconds of pauses (long enough for a node to restart), 30 s
    /// each.
    fn default() -> Self {
        Self {
            attempts: 8,
            first_pause: Duration::from_millis(250),
            max_pause: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// Whether a failed `Submit` may have been cut short on its way (the node down or restarting,
/// no answer in time, the connection cut), so that the same request, under the same
/// `client_request_id`, is worth sending again: UNAVAILABLE, DEADLINE_EXCEEDED, and a
/// connection that broke before any answer came. tonic reports the last (a node killed
/// mid-call) as UNKNOWN "transport error", with its transport error as the source; an UNKNOWN
/// the node itself answered has no source and is not retried.
pub fn worth_retrying(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => true,
        tonic::Code::Unknown => connection_broke(status),
        _ => false,
    }
}

/// Whether `status` is this client's own report of a connection that broke (no answer came).
fn connection_broke(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<tonic::transport::Error>())
}

/// A failed attempt in a few words: its code, or "connection cut" for a broken connection.
pub fn attempt_failure(status: &tonic::Status) -> String {
    if status.code() == tonic::Code::Unknown && connection_broke(status) {
        return "connection cut".into();
    }
    format!("{:?}", status.code())
}

/// `Submit`s `request` and retries it, as it is, when [`worth_retrying`] (UNAVAILABLE,
/// DEADLINE_EXCEEDED, a connection cut), within `retry`. The request should carry a `client_request_id`: the node then stores it once however
/// many attempts reach it, and answers a retry with the message already stored (`replayed`).
/// `on_retry` hears of each retry (the attempt about to be made, why, and the pause before it).
pub async fn submit_retrying(
    client: &mut DeskClient,
    request: crate::proto::SubmitRequest,
    retry: SubmitRetry,
    mut on_retry: impl FnMut(u32, &tonic::Status, Duration),
) -> Result<crate::proto::SubmitResponse, tonic::Status> {
    let mut pause = retry.first_pause;
    let mut attempt = 1;
    loop {
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(retry.attempt_timeout);
        match client.submit(call).await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if worth_retrying(&status) && attempt < retry.attempts => {
                attempt += 1;
                on_retry(attempt, &status, pause);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(retry.max_pause);
            }
            Err(status) => return Err(status),
        }
    }
}

/// Bytes per uploaded piece: well under every desk listener's decode limit.
pub const UPLOAD_PIECE_BYTES: usize = 256 * 1024;

/// Uploads `content` as an attachment named `name` (`media_type`) in pieces; returns what to
/// list in `Submit` or `Respond`.
pub async fn upload_attachment(
    client: &mut DeskClient,
    name: &str,
    media_type: &str,
    content: Vec<u8>,
) -> Result<crate::proto::Attachment, tonic::Status> {
    let mut pieces = Vec::new();
    let mut chunks = content.chunks(UPLOAD_PIECE_BYTES).peekable();
    if chunks.peek().is_none() {
        pieces.push(crate::proto::UploadAttachmentRequest {
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            data: Vec::new(),
        });
    }
    for (i, chunk) in chunks.enumerate() {
        let first = i == 0;
        pieces.push(crate::proto::UploadAttachmentRequest {
            name: if first { name.to_owned() } else { String::new() },
            media_type: if first { media_type.to_owned() } else { String::new() },
            data: chunk.to_vec(),
        });
    }
    let response = client.upload_attachment(tokio_stream::iter(pieces)).await?.into_inner();
    response
        .attachment
        .ok_or_else(|| tonic::Status::internal("the node answered the upload without an attachment"))
}

/// The content of attachment `sha256` of message `id`, whole.
pub async fn download_attachment(
    client: &mut DeskClient,
    id: &str,
    sha256: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    use tokio_stream::StreamExt as _;
    let request = crate::proto::DownloadAttachmentRequest { id: id.to_owned(), sha256: sha256.to_vec() };
    let mut pieces = client.download_attachment(request).await?.into_inner();
    let mut content = Vec::new();
    while let Some(piece) = pieces.next().await {
        content.extend_from_slice(&piece?.data);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_may_have_been_cut_short_is_retried() {
        assert!(worth_retrying(&tonic::Status::unavailable("node restarting")));
        assert!(worth_retrying(&tonic::Status::deadline_exceeded("no answer in time")));
        // An answer of the node, however bad, is final: retrying would not change it.
        for answered in [
            tonic::Status::unknown("the node said so"),
            tonic::Status::already_exists("client_request_id: used"),
            tonic::Status::invalid_argument("subject: required"),
            tonic::Status::resource_exhausted("over its call rate"),
            tonic::Status::internal("damaged"),
        ] {
            assert!(!worth_retrying(&answered), "{answered:?}");
            assert_eq!(attempt_failure(&answered), format!("{:?}", answered.code()));
        }
    }
}
