//! TLS 1.3 with client certificates for both gRPC listeners and every outgoing connection:
//! rustls configurations, the accept loop that feeds tonic, the connector for tonic channels,
//! and reading the caller's identity from its certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{Identity, identity_of_cert};

/// A TLS file or configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// An endpoint is not usable as a URI or server name.
    #[error("endpoint {endpoint}: {message}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in file"));
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: TLS 1.3 only, a client certificate chaining to `client_ca` required.
pub fn server_config(client_ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(load_roots(client_ca)?, provider()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration: TLS 1.3 only, the server must chain to `server_ca`, and we present
/// `cert`.
pub fn client_config(server_ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(load_roots(server_ca)?)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS connections accepted on `listener`, for `Server::serve_with_incoming_shutdown`.
/// Handshakes run concurrently with a deadline, so a slow or silent client holds up nobody;
/// failed handshakes are logged and dropped. Stops accepting when `stop` is cancelled.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    stop: CancellationToken,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Running out of file descriptors and the like: pause, do not spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp).into_fallible()).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err((error, tcp))) => {
                        tracing::warn!(%remote, %error, "TLS handshake refused");
                        close_after_alert(tcp).await;
                    }
                    Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// Closes a refused connection so that the client reads our TLS alert ("certificate required",
/// "unknown CA") instead of a reset: in TLS 1.3 the client has usually sent its first request
/// already, and closing a socket with unread data makes the kernel send RST, which can overtake
/// the alert. So: send FIN, then drain what the client sends for a moment.
async fn close_after_alert(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(1..) = tcp.read(&mut sink).await {}
    })
    .await;
}

/// The identity in the certificate the caller of a gRPC request presented.
pub fn caller_identity<T>(request: &tonic::Request<T>) -> Option<Identity> {
    let certs = request.peer_certs()?;
    identity_of_cert(certs.first()?).ok()
}

/// Told the server's leaf certificate after each successful handshake.
pub type CertificateObserver = Arc<dyn Fn(&CertificateDer<'_>) + Send + Sync>;

/// How a channel reaches its server.
#[derive(Clone)]
pub struct Dial {
    /// `host:port` to connect to.
    pub endpoint: String,
    /// The identity the server's certificate must carry (besides naming `host`).
    pub expect: Option<Identity>,
    /// Deadline for TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Deadline of each call on the channel.
    pub request_timeout: Option<Duration>,
    /// Told the server's certificate after each handshake (for expiry warnings).
    pub observe: Option<CertificateObserver>,
}

/// A lazily connecting gRPC channel over our TLS: reconnects by itself after failures.
pub fn channel(dial: Dial, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    channel_pinned(dial, config, None)
}

/// Like [`channel`], and when `pin_sha256` is given (64 hex digits, the signed directory's
/// `certificate_sha256`) the server's leaf certificate must have exactly that SHA-256: a
/// handshake with any other certificate, even one from the right CA, fails the connection.
pub fn channel_pinned(
    dial: Dial,
    config: Arc<ClientConfig>,
    pin_sha256: Option<String>,
) -> Result<Channel, TlsError> {
    let endpoint_error = |message: String| TlsError::Endpoint { endpoint: dial.endpoint.clone(), message };
    let host = crate::config::endpoint_host(&dial.endpoint).to_owned();
    let server_name = ServerName::try_from(host).map_err(|e| endpoint_error(e.to_string()))?;
    let mut endpoint = Endpoint::from_shared(format!("http://{}", dial.endpoint))
        .map_err(|e| endpoint_error(e.to_string()))?
        .connect_timeout(dial.connect_timeout)
        // Keepalive finds a peer that accepts and then never answers, instead of waiting forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(timeout) = dial.request_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let connector = TlsConnector::from(config);
    let Dial { endpoint: address, expect, connect_timeout, observe, .. } = dial;
    let connect = tower::service_fn(move |_: http::Uri| {
        let (connector, server_name, address, expect, observe) =
            (connector.clone(), server_name.clone(), address.clone(), expect.clone(), observe.clone());
        let pin_sha256 = pin_sha256.clone();
        async move {
            let attempt = async {
                let tcp = TcpStream::connect(&address).await?;
                let _ = tcp.set_nodelay(true);
                let stream = connector.connect(server_name, tcp).await?;
                if let Some(expect) = &expect {
                    let found = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| identity_of_cert(c));
                    match found {
                        Some(Ok(found)) if &found == expect => {}
                        Some(Ok(found)) => {
                            return Err(std::io::Error::other(format!(
                                "{address} is {found}, expected {expect}"
                            )));
                        }
                        _ => return Err(std::io::Error::other(format!("{address} presented no identity"))),
                    }
                }
                if let Some(pin) = &pin_sha256 {
                    let presented = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| crate::directory::fingerprint(c.as_ref()))
                        .unwrap_or_default();
                    if !presented.eq_ignore_ascii_case(pin) {
                        return Err(std::io::Error::other(format!(
                            "{address} presented a certificate with SHA-256 {presented}, the directory pins {pin}"
                        )));
                    }
                }
                if let (Some(observe), Some(leaf)) =
                    (&observe, stream.get_ref().1.peer_certificates().and_then(|c| c.first()))
                {
                    observe(leaf);
                }
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            };
            tokio::time::timeout(connect_timeout, attempt)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}
