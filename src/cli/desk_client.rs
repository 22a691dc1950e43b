//! Connecting to a node's desk API as a desk client (the CLI, the demo, tests, agency systems
//! written in Rust).

use std::time::Duration;

use tonic::transport::Channel;

use crate::config::ClientConfig;
use crate::proto::desk_service_client::DeskServiceClient;
use crate::trust::tls::{self, Dial, TlsError};

/// A desk API client over mutual TLS.
pub type DeskClient = DeskServiceClient<Channel>;

/// A client for the node that `config` points at. Connects lazily: the first call connects.
pub fn connect(config: &ClientConfig) -> Result<DeskClient, TlsError> {
    Ok(DeskServiceClient::new(channel(config)?))
}

/// A channel to the desk listener that `config` points at, for any service served there
/// (the desk API, `grpc.health.v1`, reflection).
pub fn channel(config: &ClientConfig) -> Result<Channel, TlsError> {
    // Read again when the files change: a long-running client survives a certificate rotation.
    let tls = tls::client_config_from_files(&config.ca, &config.cert, &config.key)?;
    let dial = Dial {
        endpoint: config.endpoint.clone(),
        expect: None,
        connect_timeout: Duration::from_secs(5),
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
