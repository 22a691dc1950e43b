//! Node and desk-client configuration files (TOML), with their defaults and path resolution,
//! checked once at load.
//!
//! Boundary: imports `domain` only. The member list is not configuration: it is the signed
//! directory (`trust::directory`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::identity::NodeCode;
use crate::domain::names::ShortName;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are named here).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, naming the key.
        message: String,
    },
    /// A value is well-formed but not usable.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// A node's configuration: `hanoi247 node --config FILE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's code; must match the code in its certificate.
    pub code: NodeCode,
    /// The network name, as in every certificate's `spiffe://<network>/...` URI.
    pub network: String,
    /// Where the sled store lives (relative paths are relative to the config file).
    pub data_dir: PathBuf,
    /// Listener addresses.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Certificates and keys.
    pub tls: TlsConfig,
    /// Delivery tuning.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Acknowledgement deadlines per precedence.
    #[serde(default)]
    pub deadlines: DeadlinesConfig,
    /// The metrics and health listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Input limits: what this node accepts from desk clients and peers.
    #[serde(default)]
    pub limits: Limits,
    /// The desk console (HTTPS for officers' browsers).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The desk clients and their roles; a client not listed here is refused.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    /// The signed directory: the members of the network this node may talk to.
    pub directory: DirectoryConfig,
    /// When files are read again without a restart.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// How long lifecycle events are kept for `Watch`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// How the store keeps its state (`[store]`).
    #[serde(default)]
    pub store: StoreConfig,
    /// The preservation clock's reminders (`[preservation]`).
    #[serde(default)]
    pub preservation: PreservationConfig,
    /// The file this was loaded from (set by [`NodeConfig::load`]): a reload reads `[[clients]]`
    /// from it again.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Who is woken when something happens (`[notify]`): webhooks and e-mail.
    #[serde(default)]
    pub notify: NotifyConfig,
}

/// `[notify]`: webhook and e-mail targets for the events a person on call must hear about. What
/// is sent is written to the store first and retried with backoff (see `runtime::notify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// The console's address as officers' browsers reach it (`https://host:port`), for the link
    /// to the message in each notification; empty: no link.
    #[serde(default)]
    pub console_url: String,
    /// Upper bound of the first retry delay of a failed notification; default 5s.
    #[serde(default = "default_notify_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Upper bound of any retry delay; default 10 minutes.
    #[serde(default = "default_notify_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Deadline of one webhook call or one SMTP session; default 20s.
    #[serde(default = "default_notify_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed calls after which a peer is announced unreachable; default 3.
    #[serde(default = "default_unreachable_after")]
    pub peer_unreachable_after: u32,
    /// How long before a certificate or revocation list expires it is announced; default 14 days.
    #[serde(default = "default_expiry_warning", with = "humantime_serde")]
    pub expiry_warning: Duration,
    /// HTTPS webhooks (a pager, a chat bridge), one `[[notify.webhook]]` each.
    #[serde(default)]
    pub webhook: Vec<WebhookTarget>,
    /// E-mail over SMTP, one `[[notify.email]]` each.
    #[serde(default)]
    pub email: Vec<EmailTarget>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            console_url: String::new(),
            retry_initial: default_notify_retry_initial(),
            retry_max: default_notify_retry_max(),
            timeout: default_notify_timeout(),
            peer_unreachable_after: default_unreachable_after(),
            expiry_warning: default_expiry_warning(),
            webhook: Vec::new(),
            email: Vec::new(),
        }
    }
}

fn default_notify_retry_initial() -> Duration {
    Duration::from_secs(5)
}
fn default_notify_retry_max() -> Duration {
    Duration::from_secs(600)
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_unreachable_after() -> u32 {
    3
}
fn default_expiry_warning() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}

/// What a notification target can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A request from another member was stored here (filtered by `precedences`).
    RequestArrived,
    /// A request passed its acknowledgement deadline (filtered by `precedences`).
    RequestOverdue,
    /// Delivery to a peer failed `peer_unreachable_after` times in a row.
    PeerUnreachable,
    /// The store failed to write (announced once it is writable again).
    StoreUnwritable,
    /// This node's certificate or a revocation list expires within `expiry_warning`.
    CertificateExpiring,
    /// A preservation lapses soon (`[preservation] reminders`; filtered by `precedences`).
    PreservationExpiring,
}

impl NotifyEvent {
    /// The name used in config and in notifications.
    pub fn name(self) -> &'static str {
        match self {
            NotifyEvent::RequestArrived => "request_arrived",
            NotifyEvent::RequestOverdue => "request_overdue",
            NotifyEvent::PeerUnreachable => "peer_unreachable",
            NotifyEvent::StoreUnwritable => "store_unwritable",
            NotifyEvent::CertificateExpiring => "certificate_expiring",
            NotifyEvent::PreservationExpiring => "preservation_expiring",
        }
    }
}

/// One HTTPS webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    /// A name for logs, metrics and the store (unique among all targets).
    pub name: String,
    /// Where the JSON is POSTed; must be `https://`.
    pub url: String,
    /// File holding the HMAC-SHA256 key for `X-Hanoi247-Signature` (its bytes, trailing newline
    /// removed); read at start.
    pub secret_file: PathBuf,
    /// CA certificate(s) (PEM) the webhook server's certificate must chain to.
    pub ca_file: PathBuf,
    /// Client certificate (PEM) for servers that require one; with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// What it is told about.
    pub events: Vec<NotifyEvent>,
    /// For `request_arrived` and `request_overdue`: the precedences wanted (`FLASH`, ...);
    /// empty: all.
    #[serde(default)]
    pub precedences: Vec<String>,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587); refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a server on 127.0.0.1 or ::1 (tests, a local relay).
    Plain,
}

/// One e-mail target (an SMTP submission server and its recipients).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailTarget {
    /// A name for logs, metrics and the store (unique among all targets).
    pub name: String,
    /// The SMTP server's host name (must match its certificate).
    pub host: String,
    /// Its port (587 for STARTTLS, 465 for TLS).
    pub port: u16,
    /// `starttls`, `tls` or `plain` (loopback only).
    pub security: SmtpSecurity,
    /// CA certificate(s) (PEM) the server's certificate must chain to; unset: the system's CA
    /// store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding `user:password` for SMTP AUTH; unset: no authentication.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The From address, e.g. `hanoi247 FR <hanoi247@fr.example>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// What it is told about.
    pub events: Vec<NotifyEvent>,
    /// As for webhooks: precedences wanted; empty: all.
    #[serde(default)]
    pub precedences: Vec<String>,
}

impl NotifyConfig {
    /// Every target's name, events and precedences, webhooks first.
    pub fn targets(&self) -> Vec<(&str, &[NotifyEvent], &[String])> {
        let webhooks =
            self.webhook.iter().map(|w| (w.name.as_str(), w.events.as_slice(), w.precedences.as_slice()));
        let emails =
            self.email.iter().map(|e| (e.name.as_str(), e.events.as_slice(), e.precedences.as_slice()));
        webhooks.chain(emails).collect()
    }

    fn resolve(&mut self, base: &Path) {
        for webhook in &mut self.webhook {
            webhook.secret_file = base.join(&webhook.secret_file);
            webhook.ca_file = base.join(&webhook.ca_file);
            for file in [webhook.client_cert.as_mut(), webhook.client_key.as_mut()].into_iter().flatten() {
                *file = base.join(&*file);
            }
        }
        for email in &mut self.email {
            for file in [email.ca_file.as_mut(), email.credentials_file.as_mut()].into_iter().flatten() {
                *file = base.join(&*file);
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err("notify.retry_initial/retry_max: need 0 < retry_initial <= retry_max".into());
        }
        if self.timeout.is_zero() {
            return Err("notify.timeout: must be more than 0".into());
        }
        if self.peer_unreachable_after == 0 {
            return Err("notify.peer_unreachable_after: must be at least 1".into());
        }
        if !self.console_url.is_empty() && !self.console_url.starts_with("https://") {
            return Err(format!("notify.console_url: {:?} must start with https://", self.console_url));
        }
        let mut names: Vec<&str> = Vec::new();
        for (name, events, precedences, key) in self
            .webhook
            .iter()
            .enumerate()
            .map(|(i, w)| (&w.name, &w.events, &w.precedences, format!("notify.webhook[{i}]")))
            .chain(
                self.email
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (&e.name, &e.events, &e.precedences, format!("notify.email[{i}]"))),
            )
        {
            crate::domain::identity::validate_client_name(name).map_err(|e| format!("{key}.name: {e}"))?;
            if names.contains(&name.as_str()) {
                return Err(format!("{key}.name: {name} names two targets"));
            }
            names.push(name);
            if events.is_empty() {
                return Err(format!("{key}.events: name at least one event"));
            }
            for precedence in precedences {
                if crate::domain::names::precedence_named(precedence).is_none() {
                    return Err(format!(
                        "{key}.precedences: {precedence:?} is not a precedence (FLASH, IMMEDIATE, PRIORITY, ROUTINE)"
                    ));
                }
            }
        }
        for (i, webhook) in self.webhook.iter().enumerate() {
            let key = format!("notify.webhook[{i}]");
            let Some(rest) = webhook.url.strip_prefix("https://") else {
                return Err(format!("{key}.url: {:?} must start with https://", webhook.url));
            };
            if http::Uri::try_from(webhook.url.as_str()).is_err() || rest.is_empty() {
                return Err(format!("{key}.url: {:?} is not a URL", webhook.url));
            }
            if webhook.client_cert.is_some() != webhook.client_key.is_some() {
                return Err(format!("{key}.client_cert/client_key: set both or neither"));
            }
        }
        for (i, email) in self.email.iter().enumerate() {
            let key = format!("notify.email[{i}]");
            if email.host.is_empty() {
                return Err(format!("{key}.host: required"));
            }
            if email.port == 0 {
                return Err(format!("{key}.port: required"));
            }
            match email.security {
                SmtpSecurity::Plain => {
                    let loopback = email.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                    if !loopback {
                        return Err(format!(
                            "{key}.security: \"plain\" only for a server on 127.0.0.1 or ::1, not {}; use \"starttls\" or \"tls\"",
                            email.host
                        ));
                    }
                }
                SmtpSecurity::Starttls | SmtpSecurity::Tls => {}
            }
            if email.to.is_empty() {
                return Err(format!("{key}.to: name at least one recipient"));
            }
            if !email.from.contains('@') {
                return Err(format!("{key}.from: {:?} is not an e-mail address", email.from));
            }
            if let Some(bad) = email.to.iter().find(|to| !to.contains('@')) {
                return Err(format!("{key}.to: {bad:?} is not an e-mail address"));
            }
        }
        Ok(())
    }
}

/// How long the lifecycle events behind `Watch` are kept, and the content of closed cases. The
/// messages themselves (ids, states, times, digests, receipts, signatures) and the audit log are
/// never removed by the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events older than this are removed; a watcher that resumes from before them is told so
    /// (OUT_OF_RANGE) instead of missing them silently. Default 30 days.
    #[serde(default = "default_event_retention", with = "humantime_serde")]
    pub events: Duration,
    /// How often old events are looked for; default 1 hour.
    #[serde(default = "default_retention_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// An uploaded attachment that no message lists is removed this long after its upload
    /// (looked for every `interval`). Default 24 hours.
    #[serde(default = "default_upload_retention", with = "humantime_serde")]
    pub uploads: Duration,
    /// How long after a case is closed (`CloseCase`) its content (bodies, subjects, free text,
    /// attachments) is removed; default 365 days.
    #[serde(default = "default_closed_content_retention", with = "humantime_serde")]
    pub closed_content: Duration,
}

fn default_upload_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_event_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_retention_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_closed_content_retention() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events: default_event_retention(),
            interval: default_retention_interval(),
            uploads: default_upload_retention(),
            closed_content: default_closed_content_retention(),
        }
    }
}

/// The preservation clock: how long before a preservation lapses (`preserved_until`) a reminder
/// is given, as a lifecycle event on `Watch` and a `preservation_expiring` notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreservationConfig {
    /// The lead times, e.g. `["14d", "7d", "1d"]` (the default); each given once per date.
    #[serde(default = "default_preservation_reminders")]
    pub reminders: Vec<humantime_serde::Serde<Duration>>,
}

fn default_preservation_reminders() -> Vec<humantime_serde::Serde<Duration>> {
    [14, 7, 1].into_iter().map(|days| Duration::from_secs(days * 86_400).into()).collect()
}

impl Default for PreservationConfig {
    fn default() -> Self {
        Self { reminders: default_preservation_reminders() }
    }
}

impl PreservationConfig {
    /// The lead times, longest first.
    pub fn leads(&self) -> Vec<Duration> {
        let mut leads: Vec<Duration> = self.reminders.iter().map(|lead| **lead).collect();
        leads.sort_unstable_by(|a, b| b.cmp(a));
        leads.dedup();
        leads
    }

    fn check(&self) -> Result<(), String> {
        if self.reminders.iter().any(|lead| lead.is_zero()) {
            return Err("preservation.reminders: a lead time must be more than 0".into());
        }
        if self.reminders.len() > 16 {
            return Err("preservation.reminders: at most 16 lead times".into());
        }
        Ok(())
    }
}

/// How the store keeps its state: writes are durable in the write-ahead log, and sled, which
/// serves every read, is checkpointed behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How often sled is checkpointed (and the log cut behind it); default 2s. Longer: less work
    /// per write, more log to replay after a crash (about this long's writes).
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

/// How often the store is checkpointed when the config does not say.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

fn default_checkpoint_interval() -> Duration {
    DEFAULT_CHECKPOINT_INTERVAL
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { checkpoint_interval: default_checkpoint_interval() }
    }
}

/// When files are read again without a restart (besides SIGHUP, which always reloads).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// How often the directory file is looked at for changes (modification time and size);
    /// default 2s.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

/// How often watched files are looked at when the config does not say.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { poll_interval: default_poll_interval() }
    }
}

/// Where the signed directory is and the key that must have signed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The directory file (`hanoi247 directory sign` makes it), reloaded on SIGHUP and on change.
    pub file: PathBuf,
    /// The network secretariat's Ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// While the secretariat rotates its key: the next key (64 hex digits). A directory signed by
    /// either key is accepted; once every directory is signed by the next key it becomes
    /// `public_key` and this is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_public_key: Option<String>,
}

impl DirectoryConfig {
    /// The keys a directory signature may verify with: `public_key`, then `next_public_key`.
    pub fn public_keys(&self) -> Result<Vec<crate::domain::identity::PublicKey>, String> {
        let mut keys = vec![
            crate::domain::identity::PublicKey::from_hex(&self.public_key)
                .map_err(|e| format!("directory.public_key: {e}"))?,
        ];
        if let Some(next) = &self.next_public_key {
            keys.push(
                crate::domain::identity::PublicKey::from_hex(next)
                    .map_err(|e| format!("directory.next_public_key: {e}"))?,
            );
        }
        Ok(keys)
    }
}

/// A desk client of this node and its role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The name in its certificate (`spiffe://<network>/node/<CC>/client/<name>`).
    pub name: String,
    /// `officer`, `operator`, `agency` or `auditor`.
    pub role: crate::domain::access::Role,
}

/// Listener addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// The peer listener (other nodes), default `0.0.0.0:7247`.
    #[serde(default = "default_peer_listen")]
    pub peer: SocketAddr,
    /// The desk listener (officers, operators, agencies), default `127.0.0.1:7248`.
    #[serde(default = "default_desk_listen")]
    pub desk: SocketAddr,
}

fn default_peer_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7247))
}

fn default_desk_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7248))
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { peer: default_peer_listen(), desk: default_desk_listen() }
    }
}

/// Certificate and key files (PEM). Relative paths are relative to the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The network CA: peers' certificates must chain to it.
    pub network_ca: PathBuf,
    /// This node's certificate, issued by the network CA (peer listener and outgoing calls).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// This node's local CA: desk clients' certificates must chain to it.
    pub local_ca: PathBuf,
    /// The desk listener's server certificate, issued by the local CA.
    pub desk_cert: PathBuf,
    /// Its private key.
    pub desk_key: PathBuf,
    /// Revocation list(s) of the network CA (PEM, one `X509 CRL` block per CA in `network_ca`):
    /// a peer whose certificate is listed is refused at the handshake, in both directions.
    /// Unset: peers' certificates are not checked for revocation.
    #[serde(default)]
    pub peer_crl: Option<PathBuf>,
    /// Revocation list(s) of the local CA (PEM): a listed desk client is refused at the handshake.
    /// Unset: desk clients' certificates are not checked for revocation.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
    /// What a revocation list past its nextUpdate does: `serve` (default) keeps using it, logs
    /// an ERROR and sets `hanoi247_crl_stale` to 1 so the operator is paged; `strict` refuses
    /// every handshake its CA's certificates make until a fresh CRL is published.
    #[serde(default)]
    pub crl_stale: CrlStalePolicy,
}

/// The `[tls] crl_stale` policy: what a revocation list past its nextUpdate does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlStalePolicy {
    /// Keep serving with the stale list (revocations it holds still apply) and raise the alert:
    /// refusing would lock every peer or client out at once when a CA is late.
    #[default]
    Serve,
    /// Refuse the handshakes of certificates whose CA's list is stale (fail closed).
    Strict,
}

/// How the delivery tasks send and retry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Upper bound of the first retry delay (equal jitter: the delay is random between half of it and it).
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Upper bound of any retry delay.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Envelopes per `Deliver` call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// `Deliver` calls in flight per peer at once (the receiver stores them in the order sent).
    #[serde(default = "default_batches_in_flight")]
    pub batches_in_flight: usize,
    /// Lifetime of a request submitted without `expires_at`.
    #[serde(default = "default_expiry", with = "humantime_serde")]
    pub default_expiry: Duration,
    /// Deadline of one `Deliver` or `Hello` call, so a hung peer is given up on.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Deadline of a TCP connect plus TLS handshake to a peer.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_batch_size() -> usize {
    64
}
fn default_batches_in_flight() -> usize {
    4
}
fn default_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry_initial: default_retry_initial(),
            retry_max: default_retry_max(),
            batch_size: default_batch_size(),
            batches_in_flight: default_batches_in_flight(),
            default_expiry: default_expiry(),
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// How long a request may wait for a person at its destination to acknowledge it, counted from
/// its `created_at`. Past it, the request is OVERDUE at both ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlinesConfig {
    /// FLASH: life or evidence at immediate risk.
    #[serde(default = "default_flash_deadline", with = "humantime_serde")]
    pub flash: Duration,
    /// IMMEDIATE: within the hour.
    #[serde(default = "default_immediate_deadline", with = "humantime_serde")]
    pub immediate: Duration,
    /// PRIORITY: within hours.
    #[serde(default = "default_priority_deadline", with = "humantime_serde")]
    pub priority: Duration,
    /// ROUTINE: within a day.
    #[serde(default = "default_routine_deadline", with = "humantime_serde")]
    pub routine: Duration,
}

fn default_flash_deadline() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_immediate_deadline() -> Duration {
    Duration::from_secs(3600)
}
fn default_priority_deadline() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_routine_deadline() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for DeadlinesConfig {
    fn default() -> Self {
        Self {
            flash: default_flash_deadline(),
            immediate: default_immediate_deadline(),
            priority: default_priority_deadline(),
            routine: default_routine_deadline(),
        }
    }
}

impl DeadlinesConfig {
    /// The acknowledgement deadline of a precedence (ROUTINE's when unspecified).
    pub fn for_precedence(&self, precedence: crate::proto::Precedence) -> Duration {
        use crate::proto::Precedence;
        match precedence {
            Precedence::Flash => self.flash,
            Precedence::Immediate => self.immediate,
            Precedence::Priority => self.priority,
            Precedence::Routine | Precedence::Unspecified => self.routine,
        }
    }
}

impl DeadlinesConfig {
    /// By when a request must be acknowledged (`None` for envelopes that are not requests).
    pub fn ack_deadline(&self, envelope: &crate::proto::Envelope) -> Option<prost_types::Timestamp> {
        if envelope.kind() != crate::proto::EnvelopeKind::Request {
            return None;
        }
        let created = crate::domain::timestamp::to_system(envelope.created_at.as_ref()?);
        let deadline = crate::domain::timestamp::plus(created, self.for_precedence(envelope.precedence()));
        Some(crate::domain::timestamp::from_system(deadline))
    }
}

/// The plain-HTTP listener for Prometheus (`/metrics`) and probes (`/healthz`, `/readyz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address, default `127.0.0.1:9247`; loopback by default because it has no authentication.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9247))
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: default_metrics_listen() }
    }
}

pub use crate::domain::validation::Limits;

/// The desk console: HTTPS with TLS 1.3 and a client certificate from the local CA, for the
/// officers' browsers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address, default `127.0.0.1:7249`.
    #[serde(default = "default_console_listen")]
    pub listen: SocketAddr,
}

fn default_console_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7249))
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { listen: default_console_listen() }
    }
}

/// One member of the network, as the signed directory lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    /// The member's node code.
    pub code: NodeCode,
    /// The authority's name, e.g. "Cybercrime 24/7 point of contact, France".
    #[serde(default)]
    pub name: String,
    /// Its peer listener as `host:port`; `host` must be in its certificate.
    pub endpoint: String,
    /// Working languages (BCP 47).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Request types it accepts (as in the proto, e.g. "PRESERVATION"); empty means all.
    #[serde(default)]
    pub request_types: Vec<String>,
    /// Its time zone (IANA name), for people reading times.
    #[serde(default)]
    pub time_zone: String,
    /// A human phone fallback.
    #[serde(default)]
    pub phone: String,
    /// SHA-256 of its node certificate (DER), 64 hex digits; when set, a peer presenting another
    /// certificate is refused even if the network CA issued it.
    #[serde(default)]
    pub certificate_sha256: String,
    /// SHA-256 of the certificate it rotates to, 64 hex digits, during a rotation: while both are
    /// listed, both are accepted. Absent (empty) otherwise, and then left out of the signed bytes,
    /// so directories signed before this field existed verify unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_certificate_sha256: String,
}

impl DirectoryEntry {
    /// The certificate SHA-256s accepted for this member: the current pin and, during a
    /// rotation, the next one. Empty when the directory pins nothing for it.
    pub fn pins(&self) -> Vec<String> {
        [&self.certificate_sha256, &self.next_certificate_sha256]
            .into_iter()
            .filter(|pin| !pin.is_empty())
            .map(|pin| pin.to_ascii_lowercase())
            .collect()
    }

    /// Whether a certificate with SHA-256 `presented` (hex) may speak for this member: it pins
    /// nothing, or `presented` is its current or its next pin.
    pub fn pin_accepts(&self, presented: &str) -> bool {
        let pins = self.pins();
        pins.is_empty() || pins.iter().any(|pin| pin.eq_ignore_ascii_case(presented))
    }

    /// The pins for a refusal message: "current X" or "current X or next Y".
    pub fn describe_pins(&self) -> String {
        describe_pins(&self.pins())
    }

    /// The host part of `endpoint`, which the peer's certificate must name.
    pub fn host(&self) -> &str {
        endpoint_host(&self.endpoint)
    }

    /// Refuses a request type this member does not list (none listed: it accepts them all),
    /// naming the field, what it lists and its phone fallback.
    pub fn check_accepts(
        &self,
        request_type: crate::proto::RequestType,
    ) -> Result<(), crate::domain::validation::FieldError> {
        let name = request_type.short_name();
        let listed = |listed: &String| crate::domain::names::request_type_named(listed) == Some(request_type);
        if request_type == crate::proto::RequestType::Unspecified
            || self.request_types.is_empty()
            || self.request_types.iter().any(listed)
        {
            return Ok(());
        }
        let phone = if self.phone.is_empty() { String::new() } else { format!(" {}", self.phone) };
        Err(crate::domain::validation::FieldError::new(
            "request_type",
            format!(
                "{} does not accept {name} requests (its directory entry lists: {}); call its phone fallback{phone}",
                self.code,
                self.request_types.join(", "),
            ),
        ))
    }
}

/// Pins as a refusal names them: the first is the current one, a second the next one.
pub fn describe_pins(pins: &[String]) -> String {
    match pins {
        [] => "no certificate".to_owned(),
        [current] => format!("current {current}"),
        [current, next, ..] => format!("current {current} or next {next}"),
    }
}

/// The host of a `host:port` endpoint (brackets of an IPv6 literal removed).
pub fn endpoint_host(endpoint: &str) -> &str {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl NodeConfig {
    /// Read and check a node config; relative paths become relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: NodeConfig = read_toml(path)?;
        let base = base_dir(path);
        config.data_dir = base.join(&config.data_dir);
        for file in [
            &mut config.tls.network_ca,
            &mut config.tls.cert,
            &mut config.tls.key,
            &mut config.tls.local_ca,
            &mut config.tls.desk_cert,
            &mut config.tls.desk_key,
            &mut config.directory.file,
        ] {
            *file = base.join(&*file);
        }
        for file in [config.tls.peer_crl.as_mut(), config.tls.client_crl.as_mut()].into_iter().flatten() {
            *file = base.join(&*file);
        }
        config.notify.resolve(&base);
        config.check().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })?;
        config.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()));
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        crate::domain::identity::validate_network_name(&self.network).map_err(|e| format!("network: {e}"))?;
        self.limits.check()?;
        if self.delivery.batch_size > self.limits.max_batch_envelopes {
            return Err(format!(
                "delivery.batch_size: {} is more than limits.max_batch_envelopes ({}): peers with the same limits would refuse every batch",
                self.delivery.batch_size, self.limits.max_batch_envelopes
            ));
        }
        if self.delivery.default_expiry > self.limits.max_lifetime {
            return Err(format!(
                "delivery.default_expiry: {} is more than limits.max_lifetime ({}): every request sent with the default expiry would be refused",
                humantime::format_duration(self.delivery.default_expiry),
                humantime::format_duration(self.limits.max_lifetime)
            ));
        }
        let d = &self.delivery;
        if d.batch_size == 0 {
            return Err("delivery.batch_size: must be at least 1".into());
        }
        if d.batches_in_flight == 0 {
            return Err("delivery.batches_in_flight: must be at least 1".into());
        }
        if d.retry_initial.is_zero() || d.retry_max < d.retry_initial {
            return Err("delivery.retry_initial/retry_max: need 0 < retry_initial <= retry_max".into());
        }
        if self.store.checkpoint_interval < Duration::from_millis(100) {
            return Err("store.checkpoint_interval: at least 100ms".into());
        }
        if self.retention.events.is_zero() || self.retention.interval.is_zero() {
            return Err("retention.events/interval: must be more than 0".into());
        }
        if self.retention.closed_content.is_zero() {
            return Err("retention.closed_content: must be more than 0".into());
        }
        for (i, client) in self.clients.iter().enumerate() {
            crate::domain::identity::validate_client_name(&client.name)
                .map_err(|e| format!("clients[{i}].name: {e}"))?;
            if self.clients[..i].iter().any(|c| c.name == client.name) {
                return Err(format!("clients[{i}]: {} is listed twice", client.name));
            }
        }
        self.directory.public_keys()?;
        if self.reload.poll_interval < Duration::from_millis(100) {
            return Err("reload.poll_interval: at least 100ms".into());
        }
        self.notify.check()?;
        self.preservation.check()?;
        Ok(())
    }

    /// The role of desk client `name`, if it has one here.
    pub fn role_of(&self, name: &str) -> Option<crate::domain::access::Role> {
        self.clients.iter().find(|c| c.name == name).map(|c| c.role)
    }
}

/// A desk client's configuration: how the CLI (or any agency system) reaches a node's desk API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The desk listener as `host:port`; `host` must be in the desk certificate.
    pub endpoint: String,
    /// The node's local CA, which issued the desk server certificate.
    pub ca: PathBuf,
    /// This client's certificate, issued by the local CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl ClientConfig {
    /// Read a client config; relative paths become relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: ClientConfig = read_toml(path)?;
        let base = base_dir(path);
        for file in [&mut config.ca, &mut config.cert, &mut config.key] {
            *file = base.join(&*file);
        }
        Ok(config)
    }
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_owned).unwrap_or_default()
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
code = "VN"
network = "hanoi247-dev"
data_dir = "data"
[tls]
network_ca = "../network-ca.pem"
cert = "node.pem"
key = "node.key"
local_ca = "local-ca.pem"
desk_cert = "desk.pem"
desk_key = "desk.key"
[directory]
file = "../directory.toml"
public_key = "0000000000000000000000000000000000000000000000000000000000000000"
"#;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.listen.desk, default_desk_listen());
        assert_eq!(config.delivery.retry_initial, Duration::from_secs(1));
        assert_eq!(config.delivery.retry_max, Duration::from_secs(60));
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.tls.network_ca, dir.path().join("../network-ca.pem"));
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{MINIMAL}\n[delivery]\nretry_fast = \"1s\"\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("retry_fast"), "{err}");
    }

    #[test]
    fn retention_has_defaults_and_refuses_zero() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.retention.events, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.retention.interval, Duration::from_secs(3600));
        assert_eq!(config.retention.closed_content, Duration::from_secs(365 * 24 * 3600));
        for bad in ["events = \"0s\"", "interval = \"0s\""] {
            let text = format!("{MINIMAL}\n[retention]\n{bad}\n");
            let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
            assert!(err.contains("retention.events/interval: must be more than 0"), "{err}");
        }
        let text = format!("{MINIMAL}\n[retention]\nclosed_content = \"0s\"\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("retention.closed_content: must be more than 0"), "{err}");
        let text = format!("{MINIMAL}\n[retention]\nclosed_content = \"90days\"\n");
        let config = NodeConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(config.retention.closed_content, Duration::from_secs(90 * 24 * 3600));
    }

    #[test]
    fn bad_directory_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace("public_key = \"00", "public_key = \"zz");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("directory.public_key"), "{err}");
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.directory.file, dir.path().join("../directory.toml"));
    }

    #[test]
    fn the_secretariats_next_key_is_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.directory.public_keys().unwrap().len(), 1);
        let next = format!("{MINIMAL}next_public_key = \"{}\"\n", "1".repeat(64));
        let config = NodeConfig::load(&write(dir.path(), &next)).unwrap();
        assert_eq!(config.directory.public_keys().unwrap().len(), 2);
        let bad = format!("{MINIMAL}next_public_key = \"12\"\n");
        let err = NodeConfig::load(&write(dir.path(), &bad)).unwrap_err().to_string();
        assert!(err.contains("directory.next_public_key"), "{err}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.limits.max_envelope_bytes, 1024 * 1024);
        let text = format!("{MINIMAL}\n[limits]\nmax_subject_chars = 20\nmax_attachments = 0\n");
        let config = NodeConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!((config.limits.max_subject_chars, config.limits.max_attachments), (20, 0));
        assert_eq!(config.limits.max_body_chars, Limits::default().max_body_chars);
        let text = format!("{MINIMAL}\n[limits]\nmax_body_chars = 0\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("limits.max_body_chars"), "{err}");
        let text = format!("{MINIMAL}\n[limits]\nmax_envelope_bytes = 100000000\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("limits.max_envelope_bytes"), "{err}");
        let text = format!("{MINIMAL}\n[limits]\nmax_batch_envelopes = 10\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("delivery.batch_size") && err.contains("max_batch_envelopes"), "{err}");
        let text = format!("{MINIMAL}\n[limits]\nmax_subject = 20\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("max_subject"), "{err}");
    }

    #[test]
    fn time_limits_have_defaults_and_hold_the_default_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.limits.max_clock_skew, Duration::from_secs(300));
        assert_eq!(config.limits.max_lifetime, Duration::from_secs(365 * 86_400));
        let text = format!("{MINIMAL}\n[limits]\nmax_clock_skew = \"30s\"\nmax_lifetime = \"30days\"\n");
        let config = NodeConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(config.limits.max_clock_skew, Duration::from_secs(30));
        let text = format!("{MINIMAL}\n[limits]\nmax_lifetime = \"1day\"\n");
        let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
        assert!(err.contains("delivery.default_expiry") && err.contains("limits.max_lifetime"), "{err}");
        // A deadline far beyond year 9999 saturates instead of overflowing.
        let huge = DeadlinesConfig { flash: Duration::MAX, ..DeadlinesConfig::default() };
        let envelope = crate::proto::Envelope {
            kind: crate::proto::EnvelopeKind::Request as i32,
            precedence: crate::proto::Precedence::Flash as i32,
            created_at: Some(prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }),
            ..Default::default()
        };
        assert_eq!(huge.ack_deadline(&envelope).unwrap().seconds, crate::domain::timestamp::MAX_SECONDS);
    }

    #[test]
    fn resource_bounds_have_defaults_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&write(dir.path(), MINIMAL)).unwrap();
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.max_connections_per_listener, 1024);
        assert_eq!(config.limits.audit_aggregation_interval, Duration::from_secs(60));
        let text = format!("{MINIMAL}\n[limits]\nhandshake_timeout = \"3s\"\nmax_filter_values = 4\n");
        let config = NodeConfig::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(
            (config.limits.handshake_timeout, config.limits.max_filter_values),
            (Duration::from_secs(3), 4)
        );
        for (bad, named) in [
            ("max_streams_per_client = 0", "limits.max_streams_per_client"),
            ("desk_calls_per_second = 0", "limits.desk_calls_per_second"),
            ("request_timeout = \"0s\"", "limits.request_timeout"),
            ("max_handshakes_per_listener = 2000", "limits.max_handshakes_per_listener"),
            ("max_peer_connections_per_address = 2000", "limits.max_peer_connections_per_address"),
        ] {
            let text = format!("{MINIMAL}\n[limits]\n{bad}\n");
            let err = NodeConfig::load(&write(dir.path(), &text)).unwrap_err().to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn endpoint_host_strips_port_and_brackets() {
        assert_eq!(endpoint_host("localhost:7247"), "localhost");
        assert_eq!(endpoint_host("[::1]:7247"), "::1");
    }
}
