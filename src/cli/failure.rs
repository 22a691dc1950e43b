//! What the command line says when a command fails, and with which exit code.
//!
//! Scripts and cron jobs tell failures apart by the exit code alone, so every failure has exactly
//! one kind ([`ExitKind`]), chosen in one place ([`CliError::exit_kind`]). People read one line:
//! what failed, the file or config key involved, and what to do. The layers below put their
//! cause into their own `Display` (`"{path}: {source}"`), so the line is each error's `Display`
//! and never its cause chain printed after it (which would repeat every cause); the chain is
//! printed only with `--verbose`, each text once, and logged at debug level.

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// The documented exit codes; `after_help` and the README list the same.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  internal: anything not below (a bug, a store or disk failure); see the message
  2  usage: bad arguments
  3  refused: the node refused the call (permission, invalid argument, failed precondition)
  4  not found: no such message (or other named thing)
  5  unreachable: cannot connect to the node, or it is unavailable; try again later
  6  deadline exceeded: no answer within --timeout (30s by default; none for watch)
  7  integrity failure: audit verify, proof verify or a backup check found damage or tampering
  8  config error: a config file, or a file it names, is missing, unreadable or invalid
  9  certificate refused: the node refused this client's certificate (revoked or unknown), or
     the node's certificate is not from the CA the config trusts

Config: --config FILE, else $HANOI247_CONFIG, else ./client.toml then /etc/hanoi247/client.toml
(for `node`: ./node.toml then /etc/hanoi247/node.toml).
With --json, a failure is one JSON object on stderr:
  {\"error\": {\"code\": 5, \"kind\": \"unreachable\", \"message\": \"...\", \"file\": \"...\", \"config_key\": \"...\"}}";

/// The kinds of failure, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Anything not below.
    Internal,
    /// Bad arguments.
    Usage,
    /// The node refused the call.
    Refused,
    /// The named thing does not exist.
    NotFound,
    /// The node cannot be reached or is unavailable.
    Unreachable,
    /// No answer within the deadline.
    Deadline,
    /// A check of an audit log, proof or backup failed.
    Integrity,
    /// A config file or a file it names cannot be used.
    Config,
    /// The TLS handshake failed over a certificate.
    Certificate,
}

impl ExitKind {
    /// Every kind, in code order.
    pub const ALL: [ExitKind; 9] = [
        ExitKind::Internal,
        ExitKind::Usage,
        ExitKind::Refused,
        ExitKind::NotFound,
        ExitKind::Unreachable,
        ExitKind::Deadline,
        ExitKind::Integrity,
        ExitKind::Config,
        ExitKind::Certificate,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitKind::Internal => 1,
            ExitKind::Usage => 2,
            ExitKind::Refused => 3,
            ExitKind::NotFound => 4,
            ExitKind::Unreachable => 5,
            ExitKind::Deadline => 6,
            ExitKind::Integrity => 7,
            ExitKind::Config => 8,
            ExitKind::Certificate => 9,
        }
    }

    /// The stable name in `--json` errors.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Internal => "internal",
            ExitKind::Usage => "usage",
            ExitKind::Refused => "refused",
            ExitKind::NotFound => "not_found",
            ExitKind::Unreachable => "unreachable",
            ExitKind::Deadline => "deadline_exceeded",
            ExitKind::Integrity => "integrity",
            ExitKind::Config => "config",
            ExitKind::Certificate => "certificate_refused",
        }
    }
}

/// Where a client command was going: named in its failures.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The client config file.
    pub config: PathBuf,
    /// The node's desk listener (`endpoint` in the config).
    pub endpoint: String,
    /// This client's certificate (`cert`).
    pub cert: PathBuf,
    /// The CA the node's certificate must chain to (`ca`).
    pub ca: PathBuf,
    /// This client's private key (`key`).
    pub key: PathBuf,
}

/// A command failed. `Display` is the one line a person reads.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// No config was given and none is at the default places.
    #[error(
        "no config file: give --config FILE or set HANOI247_CONFIG (looked for {})",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    NoConfig {
        /// The default places looked at.
        tried: Vec<PathBuf>,
    },
    /// The config file itself could not be read.
    #[error("{}: config file not found: give the right --config FILE or set HANOI247_CONFIG", path.display())]
    ConfigMissing {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The config is not valid (the message names the key).
    #[error("{0}; fix the file and try again")]
    Config(#[source] crate::config::ConfigError),
    /// A file a config key names does not exist.
    #[error("{}: file not found (config key {key} in {}): install the file there or correct the key", file.display(), config.display())]
    MissingFile {
        /// The file.
        file: PathBuf,
        /// The key naming it.
        key: String,
        /// The config file.
        config: PathBuf,
        /// The error explained (for `--verbose`).
        #[source]
        cause: Box<CliError>,
    },
    /// A file a config key names cannot be used.
    #[error("{}: {message} (config key {key} in {}): replace the file or correct the key", file.display(), config.display())]
    BadFile {
        /// The file.
        file: PathBuf,
        /// The key naming it.
        key: String,
        /// The config file.
        config: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The error explained (for `--verbose`).
        #[source]
        cause: Box<CliError>,
    },
    /// A private key is not the key of the certificate beside it.
    #[error("the key {} does not match the certificate {} (config keys {key_key} and {cert_key} in {}): point both keys at one pair, or issue a new pair", key.display(), cert.display(), config.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The config key naming the certificate.
        cert_key: &'static str,
        /// The config key naming the key.
        key_key: &'static str,
        /// The config file.
        config: PathBuf,
        /// The error explained (for `--verbose`).
        #[source]
        cause: Box<CliError>,
    },
    /// Another process holds the store's lock.
    #[error("the data directory {} is in use: is another node running? (config key data_dir in {}): stop it, or give this node its own data_dir", dir.display(), config.display())]
    DataDirInUse {
        /// The data directory.
        dir: PathBuf,
        /// The node config.
        config: PathBuf,
        /// The error explained (for `--verbose`).
        #[source]
        cause: Box<CliError>,
    },
    /// A listener address is taken.
    #[error("cannot listen on {address}: {reason} (config key {key} in {}): is another node running? stop it or choose another port", config.display())]
    ListenerInUse {
        /// The address.
        address: String,
        /// The config key.
        key: String,
        /// The node config.
        config: PathBuf,
        /// The system's words.
        reason: String,
        /// The error explained (for `--verbose`).
        #[source]
        cause: Box<CliError>,
    },
    /// The node could not be reached.
    #[error("cannot reach the node at {}: {reason}; is it running? (endpoint in {})", target.endpoint, target.config.display())]
    Unreachable {
        /// Where.
        target: Box<Target>,
        /// Why, in the system's words.
        reason: String,
        /// The failed call's status (for `--verbose`).
        #[source]
        status: Option<Box<tonic::Status>>,
    },
    /// The node is there but unavailable.
    #[error("the node at {} is unavailable: {reason}; try again later", target.endpoint)]
    Unavailable {
        /// Where.
        target: Box<Target>,
        /// What it said.
        reason: String,
        /// The failed call's status (for `--verbose`).
        #[source]
        status: Option<Box<tonic::Status>>,
    },
    /// A drill request was stored but the peer's receipt did not come within the wait.
    #[error("the drill request {id} to {peer} was not receipted within {}: it is {state}{}; {peer} may be unreachable: see `hanoi247 peers` for its phone fallback", humantime::format_duration(*waited), if last_error.is_empty() { String::new() } else { format!(" (last error: {last_error})") })]
    DrillUndelivered {
        /// The drill request.
        id: String,
        /// The peer drilled.
        peer: String,
        /// How long it waited.
        waited: Duration,
        /// Where the request stands.
        state: String,
        /// Its last delivery error.
        last_error: String,
    },
    /// No answer within the deadline.
    #[error("no answer from the node at {} within {}: it accepts connections but does not answer; check its log, or give a longer --timeout", target.endpoint, humantime::format_duration(*waited))]
    Deadline {
        /// Where.
        target: Box<Target>,
        /// How long it waited.
        waited: Duration,
    },
    /// The node refused this client's certificate at the handshake.
    #[error("the node at {} refused this client's certificate {}: revoked or unknown ({alert}); ask the node's operator for a new one (hanoi247 certs issue --client NAME)", target.endpoint, target.cert.display())]
    CertificateRefused {
        /// Where.
        target: Box<Target>,
        /// The TLS alert.
        alert: String,
        /// The failed call's status (for `--verbose`).
        #[source]
        status: Option<Box<tonic::Status>>,
    },
    /// The node's certificate does not chain to the CA this client trusts.
    #[error("the node at {} presented a certificate that {} does not trust ({reason}): is `ca` in {} the node's local CA, and `endpoint` the right node?", target.endpoint, target.ca.display(), target.config.display())]
    UntrustedNode {
        /// Where.
        target: Box<Target>,
        /// What TLS said.
        reason: String,
        /// The failed call's status (for `--verbose`).
        #[source]
        status: Option<Box<tonic::Status>>,
    },
    /// The node refused the call.
    #[error("the node refused: {message} ({code:?}){}", advice(*code))]
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// The node's message (naming the field).
        message: String,
    },
    /// The node has no such thing.
    #[error("not found: {message}")]
    NotFound {
        /// The node's message.
        message: String,
    },
    /// The node failed the call.
    #[error("the node at {} failed the call: {message} ({code:?})", target.endpoint)]
    Remote {
        /// Where.
        target: Box<Target>,
        /// The gRPC code.
        code: tonic::Code,
        /// The node's message.
        message: String,
        /// The failed call's status (for `--verbose`).
        #[source]
        status: Option<Box<tonic::Status>>,
    },
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `audit verify` found a broken link.
    #[error("the audit log is broken: {0}")]
    AuditBroken(#[from] crate::store::audit::BrokenLink),
    /// The node reported something this client cannot check.
    #[error("{0}")]
    BadAnswer(String),
    /// The backup file could not be written, or is not whole, or does not check.
    #[error("{0}")]
    Backup(#[from] crate::store::backup::BackupError),
    /// A proof file could not be made or does not verify.
    #[error("{0}")]
    Proof(String),
    /// TLS files could not be used (outside a config's keys).
    #[error("{0}")]
    Tls(#[from] crate::trust::tls::TlsError),
    /// The node failed to start or stop.
    #[error("{0}")]
    Node(#[from] crate::node::NodeError),
    /// `certs` failed.
    #[error("{0}")]
    Certs(#[from] crate::cli::certs::CertsError),
    /// `directory` failed.
    #[error("{0}")]
    Directory(#[from] crate::trust::directory::DirectoryError),
    /// `inspect` could not open or read the backup (a damaged backup is [`CliError::Backup`]).
    #[error("{0}")]
    Inspect(crate::cli::inspect::InspectError),
    /// `init` failed.
    #[error("{0}")]
    Init(#[from] crate::cli::init::InitError),
    /// `demo` failed.
    #[error("{0}")]
    Demo(#[from] crate::cli::demo::DemoError),
    /// `bench` failed.
    #[error("{0}")]
    Bench(#[from] crate::cli::bench::BenchError),
}

impl From<crate::trust::proof::ProofError> for CliError {
    fn from(error: crate::trust::proof::ProofError) -> Self {
        CliError::Proof(error.to_string())
    }
}

/// What to do about a refusal, by code.
fn advice(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::PermissionDenied => "; use a client whose role may do this",
        tonic::Code::InvalidArgument => "; correct the field it names",
        tonic::Code::FailedPrecondition => "; the message is not in a state that allows this",
        tonic::Code::ResourceExhausted => "; send less, or less often",
        tonic::Code::Unauthenticated => "; add this client under [[clients]] of the node",
        _ => "",
    }
}

impl CliError {
    /// The one mapping from a failure to its exit code.
    pub fn exit_kind(&self) -> ExitKind {
        use crate::store::backup::BackupError as B;
        match self {
            CliError::Usage(_) => ExitKind::Usage,
            CliError::NoConfig { .. }
            | CliError::ConfigMissing { .. }
            | CliError::Config(_)
            | CliError::MissingFile { .. }
            | CliError::BadFile { .. }
            | CliError::KeyMismatch { .. } => ExitKind::Config,
            CliError::Unreachable { .. }
            | CliError::Unavailable { .. }
            | CliError::DrillUndelivered { .. } => ExitKind::Unreachable,
            CliError::Deadline { .. } => ExitKind::Deadline,
            CliError::CertificateRefused { .. } | CliError::UntrustedNode { .. } => ExitKind::Certificate,
            CliError::Refused { .. } => ExitKind::Refused,
            CliError::NotFound { .. } => ExitKind::NotFound,
            CliError::AuditBroken(_) | CliError::Proof(_) => ExitKind::Integrity,
            CliError::Backup(error) => match error {
                B::NotABackup { .. }
                | B::UnknownFormat { .. }
                | B::DigestMismatch { .. }
                | B::Damaged { .. }
                | B::Incomplete { .. }
                | B::Unsigned { .. }
                | B::BadSignature { .. } => ExitKind::Integrity,
                B::NoCertificate { .. } | B::TargetNotEmpty { .. } | B::WrongNode { .. } => ExitKind::Usage,
                _ => ExitKind::Internal,
            },
            CliError::Directory(crate::trust::directory::DirectoryError::Signature { .. }) => {
                ExitKind::Integrity
            }
            CliError::Inspect(crate::cli::inspect::InspectError::Message(_)) => ExitKind::NotFound,
            CliError::Directory(crate::trust::directory::DirectoryError::Usage(_))
            | CliError::Certs(crate::cli::certs::CertsError::Invalid(_))
            | CliError::Init(crate::cli::init::InitError::Invalid(_)) => ExitKind::Usage,
            CliError::Certs(crate::cli::certs::CertsError::Config(_)) => ExitKind::Config,
            CliError::DataDirInUse { .. }
            | CliError::ListenerInUse { .. }
            | CliError::Remote { .. }
            | CliError::File { .. }
            | CliError::Io(_)
            | CliError::BadAnswer(_)
            | CliError::Tls(_)
            | CliError::Node(_)
            | CliError::Certs(_)
            | CliError::Directory(_)
            | CliError::Inspect(_)
            | CliError::Init(_)
            | CliError::Demo(_)
            | CliError::Bench(_) => ExitKind::Internal,
        }
    }

    /// The file involved, when there is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            CliError::ConfigMissing { path, .. } | CliError::File { path, .. } => Some(path),
            CliError::MissingFile { file, .. } | CliError::BadFile { file, .. } => Some(file),
            CliError::KeyMismatch { key, .. } => Some(key),
            CliError::DataDirInUse { dir, .. } => Some(dir),
            CliError::CertificateRefused { target, .. } => Some(&target.cert),
            CliError::UntrustedNode { target, .. } => Some(&target.ca),
            CliError::Unreachable { target, .. } | CliError::Deadline { target, .. } => Some(&target.config),
            _ => None,
        }
    }

    /// The config key involved, when there is one.
    pub fn config_key(&self) -> Option<&str> {
        match self {
            CliError::MissingFile { key, .. } | CliError::BadFile { key, .. } => Some(key),
            CliError::KeyMismatch { key_key, .. } => Some(key_key),
            CliError::ListenerInUse { key, .. } => Some(key),
            CliError::DataDirInUse { .. } => Some("data_dir"),
            CliError::Unreachable { .. } | CliError::Deadline { .. } => Some("endpoint"),
            CliError::CertificateRefused { .. } => Some("cert"),
            CliError::UntrustedNode { .. } => Some("ca"),
            _ => None,
        }
    }

    /// The causes below the line, each text once and none already in the line (for `--verbose`).
    pub fn causes(&self) -> Vec<String> {
        let mut said = vec![self.to_string()];
        let mut causes = Vec::new();
        let mut source = self.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !said.iter().any(|s| s.contains(&text)) {
                causes.push(text.clone());
                said.push(text);
            }
            source = cause.source();
        }
        causes
    }

    /// The `--json` form: one object.
    pub fn json(&self) -> Value {
        let kind = self.exit_kind();
        let mut error = json!({ "code": kind.code(), "kind": kind.name(), "message": self.to_string() });
        if let Some(file) = self.file() {
            error["file"] = json!(file.display().to_string());
        }
        if let Some(key) = self.config_key() {
            error["config_key"] = json!(key);
        }
        json!({ "error": error })
    }

    /// Names the node and the files of `target` in a failure of a call to it.
    pub fn at(self, target: &Target) -> CliError {
        match self {
            CliError::Remote { code, message, status, .. } => {
                CliError::Remote { target: Box::new(target.clone()), code, message, status }
            }
            other => other,
        }
    }
}

/// TLS alerts by which a server refuses the client's certificate.
const REFUSED_CERTIFICATE_ALERTS: &[&str] = &[
    "CertificateRevoked",
    "UnknownCA",
    "BadCertificate",
    "CertificateUnknown",
    "CertificateExpired",
    "CertificateRequired",
    "AccessDenied",
    "UnsupportedCertificate",
];

/// Explains a failed call to the node at `target`: a transport failure by what the system said
/// (refused connection, refused certificate, untrusted node), a status by its code.
pub fn from_status(status: &tonic::Status, target: &Target) -> CliError {
    // The transport's causes, innermost last; an `io::Error` hides the error it wraps from
    // `source()`, so that one is read with `get_ref`.
    let mut texts: Vec<String> = Vec::new();
    let mut io_kind = None;
    let mut source = status.source();
    while let Some(cause) = source {
        texts.push(cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
            if let Some(inner) = io.get_ref() {
                texts.push(inner.to_string());
            }
        }
        source = cause.source();
    }
    if let Some(alert) = texts.iter().find_map(|text| {
        let (_, alert) = text.split_once("received fatal alert: ")?;
        let alert = alert.trim();
        REFUSED_CERTIFICATE_ALERTS.contains(&alert).then(|| alert.to_owned())
    }) {
        return CliError::CertificateRefused {
            status: Some(Box::new(status.clone())),
            target: Box::new(target.clone()),
            alert,
        };
    }
    if let Some(reason) = texts.iter().find_map(|text| text.split_once("invalid peer certificate: ")) {
        return CliError::UntrustedNode {
            status: Some(Box::new(status.clone())),
            target: Box::new(target.clone()),
            reason: reason.1.trim().to_owned(),
        };
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => {
            return CliError::Unreachable {
                status: Some(Box::new(status.clone())),
                target: Box::new(target.clone()),
                reason: "connection refused".into(),
            };
        }
        Some(std::io::ErrorKind::TimedOut) => {
            return CliError::Deadline { target: Box::new(target.clone()), waited: Duration::ZERO };
        }
        Some(_) => {
            let reason = texts.last().cloned().unwrap_or_else(|| status.message().to_owned());
            return CliError::Unreachable {
                status: Some(Box::new(status.clone())),
                target: Box::new(target.clone()),
                reason,
            };
        }
        None => {}
    }
    let message = status.message().to_owned();
    match status.code() {
        tonic::Code::Unavailable => CliError::Unavailable {
            status: Some(Box::new(status.clone())),
            target: Box::new(target.clone()),
            reason: message,
        },
        // CANCELLED "Timeout expired" is tonic's word for a deadline the node enforced.
        tonic::Code::DeadlineExceeded => {
            CliError::Deadline { target: Box::new(target.clone()), waited: Duration::ZERO }
        }
        tonic::Code::Cancelled if message.contains("Timeout expired") => {
            CliError::Deadline { target: Box::new(target.clone()), waited: Duration::ZERO }
        }
        tonic::Code::NotFound => CliError::NotFound { message },
        code @ (tonic::Code::PermissionDenied
        | tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::AlreadyExists
        | tonic::Code::OutOfRange
        | tonic::Code::ResourceExhausted
        | tonic::Code::Unauthenticated) => {
            // The reason and the field from the status details, when the node gave them.
            let message = crate::cli::render::refusal_from_details(status).unwrap_or(message);
            CliError::Refused { code, message }
        }
        code => {
            // A transport failure without an I/O cause (an HTTP/2 error): say what it was.
            let message = if texts.is_empty() { message } else { texts.last().cloned().unwrap_or(message) };
            CliError::Remote {
                status: Some(Box::new(status.clone())),
                target: Box::new(target.clone()),
                code,
                message,
            }
        }
    }
}

/// Whether a failed call is worth a [`probe_certificate`]: it failed in the transport (the
/// connection closed or broke) for a reason its status does not say.
pub fn transport_unexplained(status: &tonic::Status, explained: &CliError) -> bool {
    status.source().is_some()
        && matches!(
            explained,
            CliError::Remote { .. } | CliError::Unreachable { .. } | CliError::Unavailable { .. }
        )
        && !matches!(explained, CliError::Unreachable { reason, .. } if reason == "connection refused")
}

/// Tells apart a node that refuses this client's certificate from other broken connections: a
/// server refuses a TLS 1.3 client certificate only after the handshake, with an alert that a
/// call can lose in a closing connection, so one bare handshake and one read are made to hear
/// it. Returns the failure found, or `None` when the certificate was accepted (or no answer came
/// within `within`).
pub async fn probe_certificate(target: &Target, within: Duration) -> Option<CliError> {
    use tokio::io::AsyncReadExt as _;
    let tls = crate::trust::tls::client_config(&target.ca, &target.cert, &target.key).ok()?;
    let host = crate::config::endpoint_host(&target.endpoint).to_owned();
    let name = rustls::pki_types::ServerName::try_from(host).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(&target.endpoint).await?;
        let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
        let mut byte = [0u8; 1];
        stream.read(&mut byte).await
    };
    let error = match tokio::time::timeout(within, attempt).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(_)) | Err(_) => return None,
    };
    if let Some(alert) = error.strip_prefix("received fatal alert: ")
        && REFUSED_CERTIFICATE_ALERTS.contains(&alert.trim())
    {
        return Some(CliError::CertificateRefused {
            status: None,
            target: Box::new(target.clone()),
            alert: alert.trim().to_owned(),
        });
    }
    if let Some(reason) = error.strip_prefix("invalid peer certificate: ") {
        return Some(CliError::UntrustedNode {
            status: None,
            target: Box::new(target.clone()),
            reason: reason.trim().to_owned(),
        });
    }
    None
}

/// The files a node config names, with their keys.
pub fn node_config_files(config: &crate::config::NodeConfig) -> Vec<(&'static str, PathBuf)> {
    let tls = &config.tls;
    let mut files = vec![
        ("tls.network_ca", tls.network_ca.clone()),
        ("tls.cert", tls.cert.clone()),
        ("tls.key", tls.key.clone()),
        ("tls.local_ca", tls.local_ca.clone()),
        ("tls.desk_cert", tls.desk_cert.clone()),
        ("tls.desk_key", tls.desk_key.clone()),
        ("directory.file", config.directory.file.clone()),
    ];
    if let Some(crl) = &tls.peer_crl {
        files.push(("tls.peer_crl", crl.clone()));
    }
    if let Some(crl) = &tls.client_crl {
        files.push(("tls.client_crl", crl.clone()));
    }
    files
}

/// The files a client config names, with their keys.
pub fn client_config_files(config: &crate::config::ClientConfig) -> Vec<(&'static str, PathBuf)> {
    vec![("ca", config.ca.clone()), ("cert", config.cert.clone()), ("key", config.key.clone())]
}

/// Names the config key of a file in `error` (the first of `files` its text mentions): a
/// missing file, a file that cannot be used, a key that does not match its certificate.
/// `pairs` are the (certificate key, private key key) pairs that must match.
pub fn name_config_file(
    error: CliError,
    config: &Path,
    files: &[(&'static str, PathBuf)],
    pairs: &[(&'static str, &'static str)],
) -> CliError {
    let text = error.to_string();
    if text.contains("KeyMismatch") || text.contains("keys may not be consistent") {
        let path_of = |key: &str| files.iter().find(|(k, _)| *k == key).map(|(_, p)| p.clone());
        for (cert_key, key_key) in pairs {
            let (Some(cert), Some(key)) = (path_of(cert_key), path_of(key_key)) else { continue };
            if !pair_matches(&cert, &key) {
                return CliError::KeyMismatch {
                    cause: Box::new(error),
                    cert,
                    key,
                    cert_key,
                    key_key,
                    config: config.to_owned(),
                };
            }
        }
        return error;
    }
    // The file the text starts with (errors say "{path}: {what}"): the earliest mention, the
    // longest path where two start at one place (`vn/node.pem` rather than a shorter one in it).
    let mentioned = files
        .iter()
        .filter_map(|(key, file)| {
            let shown = file.display().to_string();
            text.find(&shown).map(|at| (at, std::cmp::Reverse(shown.len()), key, file, shown))
        })
        .min_by_key(|(at, length, ..)| (*at, *length));
    if let Some((at, _, key, file, shown)) = mentioned {
        let key = (*key).to_owned();
        if !file.exists() {
            return CliError::MissingFile {
                file: file.clone(),
                key,
                config: config.to_owned(),
                cause: Box::new(error),
            };
        }
        let rest = text[at + shown.len()..].trim_start_matches(':').trim();
        let message = if rest.is_empty() { text.clone() } else { rest.to_owned() };
        return CliError::BadFile {
            file: file.clone(),
            key,
            config: config.to_owned(),
            message,
            cause: Box::new(error),
        };
    }
    error
}

/// Whether the private key in `key` belongs to the certificate in `cert` (files that cannot be
/// read count as matching: their own error is reported instead).
fn pair_matches(cert: &Path, key: &Path) -> bool {
    let (Ok(certs), Ok(key)) = (crate::trust::tls::load_certs(cert), crate::trust::tls::load_key(key)) else {
        return true;
    };
    let Ok(signing) = rustls::crypto::ring::sign::any_supported_type(&key) else { return true };
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    !matches!(certified.keys_match(), Err(rustls::Error::InconsistentKeys(_)))
}

/// Explains a node that did not start: the store's lock held by another process, a listener
/// address taken, a file a config key names.
pub fn node_start(
    error: crate::node::NodeError,
    config: &crate::config::NodeConfig,
    path: &Path,
) -> CliError {
    let text = chain_text(&error);
    if text.contains("could not acquire lock") || text.contains("WouldBlock") {
        let (dir, config) = (config.data_dir.clone(), path.to_owned());
        return CliError::DataDirInUse { dir, config, cause: Box::new(CliError::Node(error)) };
    }
    if let crate::node::NodeError::Listen { address, source } = &error {
        let listeners = [
            ("listen.peer", config.listen.peer),
            ("listen.desk", config.listen.desk),
            ("metrics.listen", config.metrics.listen),
            ("console.listen", config.console.listen),
        ];
        if let Some((key, _)) = listeners.iter().find(|(_, a)| a == address) {
            let (address, key, reason) = (address.to_string(), (*key).to_owned(), source.to_string());
            let cause = Box::new(CliError::Node(error));
            return CliError::ListenerInUse { address, key, config: path.to_owned(), reason, cause };
        }
    }
    let pairs = [("tls.cert", "tls.key"), ("tls.desk_cert", "tls.desk_key")];
    name_config_file(CliError::Node(error), path, &node_config_files(config), &pairs)
}

/// Every text of an error's chain, one per line.
fn chain_text(error: &dyn std::error::Error) -> String {
    let mut texts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    texts.join("\n")
}

/// Explains a config file that could not be loaded: a missing file by its path.
pub fn config_error(error: crate::config::ConfigError) -> CliError {
    match error {
        crate::config::ConfigError::Read { path, source }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            CliError::ConfigMissing { path, source }
        }
        other => CliError::Config(other),
    }
}

/// The config file a command uses: `--config`, else `$HANOI247_CONFIG` (clap reads both into
/// `given`), else the first of `defaults` that exists.
pub fn resolve_config(given: Option<&Path>, defaults: &[&str]) -> Result<PathBuf, CliError> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let tried: Vec<PathBuf> = defaults.iter().map(PathBuf::from).collect();
    tried.iter().find(|p| p.exists()).cloned().ok_or(CliError::NoConfig { tried })
}

/// Default client configs, in the order looked at.
pub const CLIENT_CONFIG_DEFAULTS: &[&str] = &["client.toml", "/etc/hanoi247/client.toml"];
/// Default node configs, in the order looked at.
pub const NODE_CONFIG_DEFAULTS: &[&str] = &["node.toml", "/etc/hanoi247/node.toml"];

impl From<crate::cli::inspect::InspectError> for CliError {
    /// A backup that does not check is an integrity failure like `restore`'s; the rest is said
    /// as it is.
    fn from(error: crate::cli::inspect::InspectError) -> Self {
        match error {
            crate::cli::inspect::InspectError::Backup(backup) => CliError::Backup(backup),
            other => CliError::Inspect(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_lists_every_exit_code_once_with_its_name() {
        for kind in ExitKind::ALL {
            let line = format!("\n  {}  ", kind.code());
            assert_eq!(EXIT_CODES_HELP.matches(&line).count(), 1, "{kind:?}");
        }
        let codes: std::collections::HashSet<u8> = ExitKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), ExitKind::ALL.len(), "codes are distinct");
    }

    #[test]
    fn a_cause_in_the_line_is_not_repeated_below_it() {
        let error = CliError::File {
            path: "x.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file"),
        };
        assert_eq!(error.to_string(), "x.toml: No such file");
        assert!(error.causes().is_empty(), "{:?}", error.causes());
    }

    #[test]
    fn a_status_is_explained_by_its_code() {
        let target = Target { endpoint: "127.0.0.1:1".into(), ..Target::default() };
        let refused = from_status(&tonic::Status::permission_denied("may not call Backup"), &target);
        assert_eq!(refused.exit_kind(), ExitKind::Refused);
        assert_eq!(refused.to_string().matches("may not call Backup").count(), 1, "{refused}");
        let missing = from_status(&tonic::Status::not_found("no message with id x"), &target);
        assert_eq!(missing.exit_kind(), ExitKind::NotFound);
        let down = from_status(&tonic::Status::unavailable("shutting down"), &target);
        assert_eq!(down.exit_kind(), ExitKind::Unreachable);
    }
}
