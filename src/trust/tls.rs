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
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use crate::domain::identity::{Identity, identity_of_cert};
use crate::trust::admission::{Admission, ConnectionSlot, Refusal};

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
    /// A reload of the TLS material did not finish (its task panicked).
    #[error("TLS reload: {0}")]
    Reload(String),
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

/// A client configuration for notification webhooks (HTTP/1.1 to servers outside the network):
/// TLS 1.2 or 1.3, the server must chain to `server_ca`; a client certificate only if given.
pub fn webhook_client_config(
    server_ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(server_ca)?);
    let mut config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
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

/// The accept loop behind [`incoming_reloadable`] and [`incoming_console`]: `acceptor` is asked
/// for the configuration of each new handshake, `finish` turns a finished handshake into what the
/// server reads (or refuses it), with the connection's slot to hold while it is open. Returns the
/// connections and the loop, for the caller to run as a task it waits for: the loop ends soon
/// after `stop`, and no handshake of it runs on after it ends.
///
/// `admission` decides at accept, before any TLS byte is read: a connection over its caps is
/// closed at once. Handshakes run concurrently with its deadline, so a slow or silent client
/// holds up nobody; refusals are counted and logged at most once per interval.
fn accept_loop<S: Send + 'static>(
    listener: TcpListener,
    acceptor: impl Fn() -> TlsAcceptor + Send + 'static,
    finish: impl Fn(tokio_rustls::server::TlsStream<TcpStream>, ConnectionSlot) -> Result<S, std::io::Error>
    + Send
    + Sync
    + 'static,
    admission: Arc<Admission>,
    stop: CancellationToken,
) -> (ReceiverStream<Result<S, std::io::Error>>, impl Future<Output = ()> + Send + 'static) {
    let (sender, receiver) = mpsc::channel(64);
    let finish = Arc::new(finish);
    let accepting = async move {
        // The handshakes under way, owned by the loop so that none outlives it.
        let mut handshakes = JoinSet::new();
        loop {
            let (tcp, remote) = tokio::select! {
                () = stop.cancelled() => break,
                // Finished handshakes are collected as they end, so the set stays small.
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
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
            let (slot, handshake) = match admission.admit(remote.ip()) {
                Ok(admitted) => admitted,
                Err(why) => {
                    // Dropped unread: the socket closes now, before any handshake work.
                    drop(tcp);
                    admission.refused(remote, why, &"over the listener's limits");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor();
            let sender = sender.clone();
            let finish = Arc::clone(&finish);
            let admission = Arc::clone(&admission);
            handshakes.spawn(async move {
                let handshake_timeout = admission.handshake_timeout();
                let shaken =
                    tokio::time::timeout(handshake_timeout, acceptor.accept(tcp).into_fallible()).await;
                drop(handshake);
                match shaken {
                    Ok(Ok(stream)) => match finish(stream, slot) {
                        Ok(stream) => {
                            let _ = sender.send(Ok(stream)).await;
                        }
                        Err(error) => admission.refused(remote, Refusal::Handshake, &error),
                    },
                    Ok(Err((error, tcp))) => {
                        admission.refused(remote, Refusal::Handshake, &error);
                        close_after_alert(tcp).await;
                    }
                    Err(_) => admission.refused(remote, Refusal::Timeout, &"TLS handshake timed out"),
                }
            });
        }
        // Stopping: the servers take no new connection after `stop`, so a handshake still under
        // way could only end in a connection nobody serves. End them now rather than let them
        // run out their timeout after the node is gone.
        handshakes.shutdown().await;
    };
    (ReceiverStream::new(receiver), accepting)
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
    channel_pinned(dial, config, Vec::new())
}

/// Like [`channel`], and when `pins` are given (64 hex digits each: the signed directory's
/// `certificate_sha256` and, during a rotation, `next_certificate_sha256`) the server's leaf
/// certificate must have one of those SHA-256s: a handshake with any other certificate, even one
/// from the right CA, fails the connection, naming the pins.
pub fn channel_pinned(dial: Dial, config: Arc<ClientConfig>, pins: Vec<String>) -> Result<Channel, TlsError> {
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
        let pins = pins.clone();
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
                if !pins.is_empty() {
                    let presented = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| crate::domain::identity::fingerprint(c.as_ref()))
                        .unwrap_or_default();
                    if !pins.iter().any(|pin| pin.eq_ignore_ascii_case(&presented)) {
                        return Err(std::io::Error::other(format!(
                            "{address} presented a certificate with SHA-256 {presented}, the directory pins {}",
                            crate::config::describe_pins(&pins)
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

// ---------------------------------------------------------------------------------------------
// Revocation and rotation (issue 5): revocation lists, and TLS material that is reloaded while
// the node serves. New handshakes use the newest material; an established connection stays
// untouched unless the new material refuses its client certificate (revoked, expired), in which
// case it is closed (the sender's delivery task keeps the message queued and retries).
// ---------------------------------------------------------------------------------------------

use std::pin::Pin;
use std::sync::{Mutex, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateRevocationListDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Reads the revocation lists in `path` (PEM `X509 CRL` blocks, or one DER CRL) and checks that
/// each is signed by one of the CAs in `ca`: a CRL of another CA would refuse every certificate
/// (the verifier denies certificates whose revocation status it cannot know).
pub fn load_crls(path: &Path, ca: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let mut crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if crls.is_empty() {
        // A DER file (`openssl crl -outform DER`) starts with a SEQUENCE tag.
        if bytes.first() != Some(&0x30) {
            return Err(file_error(path, "no CRL in file (expected PEM 'X509 CRL' blocks or DER)"));
        }
        crls.push(CertificateRevocationListDer::from(bytes));
    }
    let cas = load_certs(ca)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for crl in &crls {
        let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| file_error(path, format!("not a CRL: {e}")))?;
        let signed_by_a_ca = cas.iter().any(|ca| {
            x509_parser::parse_x509_certificate(ca).is_ok_and(|(_, ca)| {
                ca.subject().as_raw() == parsed.issuer().as_raw()
                    && parsed.verify_signature(ca.public_key()).is_ok()
            })
        });
        if !signed_by_a_ca {
            return Err(file_error(
                path,
                format!("the CRL of '{}' is not signed by a CA in {}", parsed.issuer(), ca.display()),
            ));
        }
        if parsed.next_update().is_some_and(|next| next.timestamp() < i64::try_from(now).unwrap_or(i64::MAX))
        {
            // What happens next is `[tls] crl_stale`'s choice (the verifiers); the alert is
            // the same either way, and `hanoi247_crl_stale` stays 1 until a fresh list is loaded.
            tracing::error!(crl = %path.display(), issuer = %parsed.issuer(), "CRL is past its nextUpdate: publish a new one ([tls] crl_stale: serve keeps using it, strict refuses the handshakes it covers)");
        }
    }
    Ok(crls)
}

/// The nextUpdate of each revocation list in the file at `path` (PEM, or one DER list), read
/// now; empty when the file cannot be read or no list in it has one.
fn crl_next_updates(path: &Path) -> Vec<std::time::SystemTime> {
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let ders: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
    let ders = if ders.is_empty() { vec![CertificateRevocationListDer::from(bytes)] } else { ders };
    ders.iter()
        .filter_map(|der| x509_parser::parse_x509_crl(der.as_ref()).ok()?.1.next_update())
        .filter_map(|next| u64::try_from(next.timestamp()).ok())
        .filter_map(|seconds| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(seconds)))
        .collect()
}

/// The revocation lists among `files`' that are past their nextUpdate now (read from the files
/// at each call, so a list that goes stale while the node runs shows without a reload).
pub fn stale_crls(files: &crate::config::TlsConfig) -> Vec<std::path::PathBuf> {
    let now = std::time::SystemTime::now();
    [files.peer_crl.as_deref(), files.client_crl.as_deref()]
        .into_iter()
        .flatten()
        .filter(|path| crl_next_updates(path).iter().any(|next| *next < now))
        .map(Path::to_owned)
        .collect()
}

/// The earliest nextUpdate among the revocation lists in `path` (read at each call, like
/// [`stale_crls`]); `None` when the file cannot be read or no list in it has one.
pub fn crl_next_update(path: &Path) -> Option<std::time::SystemTime> {
    crl_next_updates(path).into_iter().min()
}

/// When each certificate file and revocation list `files` names runs out: the first
/// certificate's notAfter, each CRL's nextUpdate (unreadable files are left out; the node reports
/// them elsewhere). Read at each call, so renewed files count without a reload.
pub fn expiries(files: &crate::config::TlsConfig) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut found = Vec::new();
    for path in [&files.cert, &files.desk_cert, &files.network_ca, &files.local_ca] {
        let first = load_certs(path).ok().and_then(|certs| certs.into_iter().next());
        if let Some(at) = first.and_then(|cert| crate::domain::identity::cert_not_after(&cert).ok()) {
            found.push((path.clone(), at));
        }
    }
    for path in [files.peer_crl.as_deref(), files.client_crl.as_deref()].into_iter().flatten() {
        found.extend(crl_next_updates(path).into_iter().map(|at| (path.to_owned(), at)));
    }
    found
}

/// The verifier of client certificates chaining to `ca`, checked against `crl` when given.
fn client_verifier(
    ca: &Path,
    crl: Option<&Path>,
    stale: crate::config::CrlStalePolicy,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider());
    if let Some(crl) = crl {
        // Our CAs sign end entities only; a certificate whose CA has no CRL in the file is
        // refused (webpki's default), so a CRL file that misses a CA fails closed.
        builder = builder.with_crls(load_crls(crl, ca)?).only_check_end_entity_revocation();
        if stale == crate::config::CrlStalePolicy::Strict {
            builder = builder.enforce_revocation_expiration();
        }
    }
    Ok(builder.build()?)
}

/// The verifier of servers' certificates chaining to `ca`, checked against `crl` when given.
fn server_verifier(
    ca: &Path,
    crl: Option<&Path>,
    stale: crate::config::CrlStalePolicy,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut builder = WebPkiServerVerifier::builder_with_provider(load_roots(ca)?, provider());
    if let Some(crl) = crl {
        builder = builder.with_crls(load_crls(crl, ca)?).only_check_end_entity_revocation();
        if stale == crate::config::CrlStalePolicy::Strict {
            builder = builder.enforce_revocation_expiration();
        }
    }
    Ok(builder.build()?)
}

/// The value behind a lock that only ever holds whole values (assignments cannot panic half way,
/// so a poisoned lock still holds a consistent value).
fn current<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn replace_value<T>(lock: &RwLock<T>, value: T) {
    *lock.write().unwrap_or_else(PoisonError::into_inner) = value;
}

/// One listener's server configuration and the verifier inside it.
#[derive(Clone)]
struct ServerMaterial {
    config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// A connection accepted by a [`ReloadableServer`], kept to be checked again on reload.
struct Accepted {
    alive: Weak<()>,
    chain: Vec<CertificateDer<'static>>,
    cut: CancellationToken,
}

/// One listener's server side, swappable while serving: each handshake takes the newest
/// configuration; a reload closes the accepted connections whose client certificate the new
/// verifier refuses.
pub struct ReloadableServer {
    material: RwLock<ServerMaterial>,
    accepted: Mutex<Vec<Accepted>>,
}

impl ReloadableServer {
    fn new(material: ServerMaterial) -> Arc<Self> {
        Arc::new(Self { material: RwLock::new(material), accepted: Mutex::new(Vec::new()) })
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(current(&self.material).config)
    }

    /// Checks a finished handshake against the newest verifier (a reload may have happened
    /// during the handshake) and remembers it for the next reload. Under the `accepted` lock, so
    /// that a concurrent reload either sees this connection or ran before this check.
    fn register(
        &self,
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        slot: ConnectionSlot,
    ) -> Result<GuardedStream, std::io::Error> {
        let chain = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
        let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = verify_chain(&*current(&self.material).verifier, &chain) {
            return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, error.to_string()));
        }
        accepted.retain(|a| a.alive.strong_count() > 0);
        let (alive, cut) = (Arc::new(()), CancellationToken::new());
        accepted.push(Accepted { alive: Arc::downgrade(&alive), chain, cut: cut.clone() });
        Ok(GuardedStream {
            inner: stream,
            cut: Box::pin(cut.cancelled_owned()),
            refused: false,
            _alive: alive,
            _slot: slot,
        })
    }

    /// Closes the open connections whose client certificate names a desk client in `names`;
    /// returns how many.
    fn close_clients(&self, names: &[String], listener: &str) -> usize {
        if names.is_empty() {
            return 0;
        }
        let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        accepted.retain(|a| a.alive.strong_count() > 0);
        let mut closed = 0;
        for connection in accepted.iter().filter(|a| !a.cut.is_cancelled()) {
            let who = connection.chain.first().and_then(|c| identity_of_cert(c).ok());
            if let Some(Identity::Client { name, .. }) = &who
                && names.contains(name)
            {
                tracing::warn!(listener, client = %name, "closing a connection of a client no longer listed (or with another role) in [[clients]]");
                connection.cut.cancel();
                closed += 1;
            }
        }
        closed
    }

    /// Swaps in new material; returns how many open connections it refused and closed.
    fn replace(&self, material: ServerMaterial, listener: &str) -> usize {
        let verifier = Arc::clone(&material.verifier);
        replace_value(&self.material, material);
        let mut accepted = self.accepted.lock().unwrap_or_else(PoisonError::into_inner);
        accepted.retain(|a| a.alive.strong_count() > 0);
        let mut closed = 0;
        for connection in accepted.iter().filter(|a| !a.cut.is_cancelled()) {
            if let Err(error) = verify_chain(&*verifier, &connection.chain) {
                let who = connection.chain.first().and_then(|c| identity_of_cert(c).ok());
                let who = who.map_or_else(|| "unknown".to_owned(), |i| i.to_string());
                tracing::warn!(listener, client = %who, %error, "closing a connection whose certificate is no longer accepted");
                connection.cut.cancel();
                closed += 1;
            }
        }
        closed
    }
}

fn verify_chain(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    match chain.split_first() {
        Some((leaf, intermediates)) => {
            verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).map(|_| ())
        }
        None => Err(rustls::Error::NoCertificatesPresented),
    }
}

/// Like [`incoming`], but each handshake uses the newest configuration of `server`, and each
/// connection can be closed by a reload that revokes its client certificate.
pub fn incoming_reloadable(
    listener: TcpListener,
    server: Arc<ReloadableServer>,
    admission: Arc<Admission>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> ReceiverStream<Result<GuardedStream, std::io::Error>> {
    let for_accept = Arc::clone(&server);
    let (incoming, accepting) = accept_loop(
        listener,
        move || for_accept.acceptor(),
        move |stream, slot| server.register(stream, slot),
        admission,
        stop,
    );
    tasks.spawn(accepting);
    incoming
}

/// An accepted TLS connection that a reload can close: reads and writes fail once its client
/// certificate is refused, which makes the gRPC server drop the connection.
pub struct GuardedStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    cut: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    refused: bool,
    _alive: Arc<()>,
    /// Its place among the listener's connections, given back when the connection ends.
    _slot: ConnectionSlot,
}

impl GuardedStream {
    /// Registers the waker with the cut, so that an idle connection is closed at once too.
    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        if !self.refused && self.cut.as_mut().poll(cx).is_ready() {
            self.refused = true;
        }
        if self.refused {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the client certificate is no longer accepted (revoked, expired, or its client removed from [[clients]])",
            ));
        }
        Ok(())
    }
}

impl tokio::io::AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(error) = self.check(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo =
        <tokio_rustls::server::TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    /// The TLS stream's own connect info, so `caller_identity` reads the certificates as before.
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Presents the newest certificate of this node on outgoing connections.
#[derive(Debug)]
struct LiveClientCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesClientCert for LiveClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(current(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks servers' certificates with the newest verifier (network CA and its CRL).
#[derive(Debug)]
struct LiveServerVerifier(RwLock<Arc<WebPkiServerVerifier>>);

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        current(&self.0).verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        current(&self.0).verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        current(&self.0).verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        current(&self.0).supported_verify_schemes()
    }
}

/// Everything a node loads from its `[tls]` files, checked as a whole before any of it is used.
struct Material {
    peer: ServerMaterial,
    desk: ServerMaterial,
    node_key: Arc<CertifiedKey>,
    peers_verifier: Arc<WebPkiServerVerifier>,
    identity: Identity,
}

fn server_material(
    verifier: Arc<dyn ClientCertVerifier>,
    cert: &Path,
    key: &Path,
) -> Result<ServerMaterial, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::clone(&verifier))
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerMaterial { config: Arc::new(config), verifier })
}

fn load_material(files: &crate::config::TlsConfig) -> Result<Material, TlsError> {
    let peer_verifier = client_verifier(&files.network_ca, files.peer_crl.as_deref(), files.crl_stale)?;
    let peer = server_material(Arc::clone(&peer_verifier), &files.cert, &files.key)?;
    let desk_verifier = client_verifier(&files.local_ca, files.client_crl.as_deref(), files.crl_stale)?;
    let desk = server_material(desk_verifier, &files.desk_cert, &files.desk_key)?;
    let node_certs = load_certs(&files.cert)?;
    // load_certs refuses an empty file, so there is a first certificate.
    let leaf = node_certs.first().cloned().unwrap_or_else(|| CertificateDer::from(Vec::new()));
    let identity = identity_of_cert(&leaf).map_err(|e| file_error(&files.cert, e))?;
    if let Err(error) = verify_chain(&*peer_verifier, &node_certs) {
        // Peers will refuse this node; say so loudly, but keep serving with what we have.
        tracing::error!(cert = %files.cert.display(), %error, "this node's own certificate fails the peer checks (revoked or expired?): issue a new one");
    }
    let node_key = Arc::new(CertifiedKey::from_der(node_certs, load_key(&files.key)?, &provider())?);
    let peers_verifier = server_verifier(&files.network_ca, files.peer_crl.as_deref(), files.crl_stale)?;
    Ok(Material { peer, desk, node_key, peers_verifier, identity })
}

/// This node's TLS material (`[tls]` of node.toml): the configurations of both listeners and
/// of outgoing peer connections, reloadable while serving with [`NodeTls::reload`].
pub struct NodeTls {
    files: crate::config::TlsConfig,
    identity: Identity,
    peer: Arc<ReloadableServer>,
    desk: Arc<ReloadableServer>,
    outgoing_cert: Arc<LiveClientCert>,
    outgoing_verifier: Arc<LiveServerVerifier>,
    client: Arc<ClientConfig>,
}

/// What a reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadReport {
    /// Open peer connections closed because their certificate is no longer accepted.
    pub closed_peer_connections: usize,
    /// Open desk connections closed because their certificate is no longer accepted.
    pub closed_desk_connections: usize,
}

impl NodeTls {
    /// Loads and checks every file of `[tls]`.
    pub fn load(files: &crate::config::TlsConfig) -> Result<Self, TlsError> {
        let material = load_material(files)?;
        let outgoing_cert = Arc::new(LiveClientCert(RwLock::new(material.node_key)));
        let outgoing_verifier = Arc::new(LiveServerVerifier(RwLock::new(material.peers_verifier)));
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&outgoing_verifier) as Arc<dyn ServerCertVerifier>)
            .with_client_cert_resolver(Arc::clone(&outgoing_cert) as Arc<dyn ResolvesClientCert>);
        client.alpn_protocols = vec![b"h2".to_vec()];
        // A resumed session skips the server certificate check, so a peer revoked since the
        // first handshake would be let in again: every connection does a full handshake (they
        // are long-lived, so this costs nothing that matters).
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            files: files.clone(),
            identity: material.identity,
            peer: ReloadableServer::new(material.peer),
            desk: ReloadableServer::new(material.desk),
            outgoing_cert,
            outgoing_verifier,
            client: Arc::new(client),
        })
    }

    /// The peer listener's server side, for [`incoming_reloadable`].
    pub fn peer_server(&self) -> Arc<ReloadableServer> {
        Arc::clone(&self.peer)
    }

    /// The desk listener's server side, for [`incoming_reloadable`].
    pub fn desk_server(&self) -> Arc<ReloadableServer> {
        Arc::clone(&self.desk)
    }

    /// The configuration of outgoing peer connections; it always presents the newest node
    /// certificate and checks servers against the newest network CRL.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }

    /// The files a reload reads (to watch for changes).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let f = &self.files;
        [&f.network_ca, &f.cert, &f.key, &f.local_ca, &f.desk_cert, &f.desk_key]
            .into_iter()
            .chain(f.peer_crl.iter())
            .chain(f.client_crl.iter())
            .cloned()
            .collect()
    }

    /// Reads the CRLs, this node's certificate and key and the desk certificate and key again
    /// and swaps them in for new handshakes; open connections whose client certificate is now
    /// refused are closed. All or nothing: on any error the previous material stays in use.
    /// The CA files are read again too, so adding a new CA next to the old one (rotating a CA)
    /// takes effect the same way.
    pub fn reload(&self) -> Result<ReloadReport, TlsError> {
        let material = load_material(&self.files)?;
        if material.identity != self.identity {
            return Err(file_error(
                &self.files.cert,
                format!("names {}, but this node is {}", material.identity, self.identity),
            ));
        }
        replace_value(&self.outgoing_cert.0, material.node_key);
        replace_value(&self.outgoing_verifier.0, material.peers_verifier);
        Ok(ReloadReport {
            closed_peer_connections: self.peer.replace(material.peer, "peer"),
            closed_desk_connections: self.desk.replace(material.desk, "desk"),
        })
    }
}

/// A client certificate read from its files again when they change (modification time and
/// size, looked at on each handshake): a desk client whose certificate is rotated under it (a
/// `watch` running for days) reconnects with the new one. A pair that does not load (a key that
/// does not match, a file half written) keeps the previous one.
#[derive(Debug)]
struct FileClientCert {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    loaded: Mutex<(Option<FilesSeen>, Arc<CertifiedKey>)>,
}

/// The (modification time, size) of a certificate file and of its key file.
type FilesSeen = [Option<(std::time::SystemTime, u64)>; 2];

impl FileClientCert {
    fn seen(&self) -> FilesSeen {
        let state =
            |path: &Path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
        [state(&self.cert), state(&self.key)]
    }

    fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
        Ok(Arc::new(CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider())?))
    }
}

impl ResolvesClientCert for FileClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let seen = self.seen();
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if loaded.0 != Some(seen) {
            match Self::load(&self.cert, &self.key) {
                Ok(key) => *loaded = (Some(seen), key),
                Err(error) => {
                    tracing::warn!(cert = %self.cert.display(), %error, "client certificate not reloaded; using the previous one")
                }
            }
        }
        Some(Arc::clone(&loaded.1))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks that the private key in `key` belongs to the (first) certificate in `cert`.
pub fn check_key_pair(cert: &Path, key: &Path) -> Result<(), TlsError> {
    CertifiedKey::from_der(load_certs(cert)?, load_key(key)?, &provider())
        .map(|_| ())
        .map_err(|e| file_error(key, format!("not the key of {}: {e}", cert.display())))
}

/// Like [`client_config`], but the certificate and key are read again from their files when
/// they change, for the next handshake (desk clients that run for long: `watch`).
pub fn client_config_from_files(
    server_ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let resolver = FileClientCert {
        cert: cert.to_owned(),
        key: key.to_owned(),
        loaded: Mutex::new((None, FileClientCert::load(cert, key)?)),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(load_roots(server_ca)?)
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // A resumed session carries the certificate of the first handshake: always a full one, so
    // that a rotated certificate is the one presented.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

impl NodeTls {
    /// Closes the open desk and console connections of the desk clients `names` (removed from
    /// `[[clients]]`, or given another role); returns how many.
    pub fn close_desk_clients(&self, names: &[String]) -> usize {
        self.desk.close_clients(names, "desk")
    }
}

/// The desk console's connections: like [`incoming_reloadable`] on the desk listener's server
/// side (each handshake with the newest certificate, local CA and client CRL; registered so that
/// a reload revoking a client certificate closes its console connections too), but offering
/// `http/1.1` to browsers instead of gRPC's `h2`. The accept loop is a task of `tasks`.
pub fn incoming_console(
    listener: TcpListener,
    desk: Arc<ReloadableServer>,
    admission: Arc<Admission>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> ReceiverStream<Result<GuardedStream, std::io::Error>> {
    let (incoming, accepting) = console_accept_loop(listener, desk, admission, stop);
    tasks.spawn(accepting);
    incoming
}

fn console_accept_loop(
    listener: TcpListener,
    desk: Arc<ReloadableServer>,
    admission: Arc<Admission>,
    stop: CancellationToken,
) -> (ReceiverStream<Result<GuardedStream, std::io::Error>>, impl Future<Output = ()> + Send + 'static) {
    let for_accept = Arc::clone(&desk);
    accept_loop(
        listener,
        move || {
            let mut config = (*current(&for_accept.material).config).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        },
        move |stream, slot| desk.register(stream, slot),
        admission,
        stop,
    )
}

#[cfg(test)]
mod reload_tests {
    use super::*;
    use crate::cli::init::{InitOptions, init_network};
    use crate::config::NodeConfig;

    /// A two-node network from `init`; VN's config.
    fn network() -> (tempfile::TempDir, NodeConfig, NodeConfig) {
        let dir = tempfile::tempdir().unwrap();
        let codes = ["VN".parse().unwrap(), "FR".parse().unwrap()];
        let options =
            InitOptions::with_base_port(dir.path().join("net"), "net".into(), &codes, 30000).unwrap();
        let report = init_network(&options).unwrap();
        let vn = NodeConfig::load(report.node_config(codes[0]).unwrap()).unwrap();
        let fr = NodeConfig::load(report.node_config(codes[1]).unwrap()).unwrap();
        (dir, vn, fr)
    }

    #[test]
    fn a_reload_that_fails_names_the_file_and_the_reason() {
        let (_dir, vn, fr) = network();
        let tls = NodeTls::load(&vn.tls).unwrap();
        assert_eq!(
            tls.reload().unwrap(),
            ReloadReport { closed_peer_connections: 0, closed_desk_connections: 0 }
        );

        let (original_cert, original_key) =
            (std::fs::read(&vn.tls.cert).unwrap(), std::fs::read(&vn.tls.key).unwrap());
        // A key that is not the certificate's.
        std::fs::copy(&fr.tls.key, &vn.tls.key).unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.to_lowercase().contains("key"), "{err}");
        // A certificate (with its key) of another node.
        std::fs::copy(&fr.tls.cert, &vn.tls.cert).unwrap();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains("but this node is spiffe://net/node/VN"), "{err}");
        std::fs::write(&vn.tls.cert, original_cert).unwrap();
        std::fs::write(&vn.tls.key, original_key).unwrap();
        tls.reload().unwrap();

        // CRLs: junk, and the CRL of another CA (FR's local CA is not VN's).
        let client_crl = vn.tls.client_crl.clone().unwrap();
        std::fs::write(&client_crl, "junk").unwrap();
        let err = load_crls(&client_crl, &vn.tls.local_ca).unwrap_err().to_string();
        assert!(err.contains("no CRL in file"), "{err}");
        std::fs::copy(fr.tls.client_crl.as_ref().unwrap(), &client_crl).unwrap();
        let err = load_crls(&client_crl, &vn.tls.local_ca).unwrap_err().to_string();
        assert!(err.contains("is not signed by a CA in"), "{err}");
        let err = NodeTls::load(&vn.tls).err().unwrap().to_string();
        assert!(err.contains("is not signed by a CA in"), "a node does not start with it either: {err}");
    }

    #[test]
    fn files_lists_everything_a_reload_reads() {
        let (_dir, vn, _) = network();
        let files = NodeTls::load(&vn.tls).unwrap().files();
        assert_eq!(files.len(), 8);
        assert!(files.contains(vn.tls.peer_crl.as_ref().unwrap()));
        assert!(files.contains(vn.tls.client_crl.as_ref().unwrap()));
    }
}
