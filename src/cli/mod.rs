//! The `hanoi247` command line: its arguments and the client commands, which talk to a running
//! node through the desk API exactly as an agency system would.
//!
//! The top layer: may import everything. Client commands never open a store (`restore` is
//! offline, run by `main`); `demo` runs nodes in process, `bench` as child processes.

pub mod bench;
pub mod certs;
pub mod demo;
pub mod desk_client;
pub mod init;
pub mod inspect;
pub mod render;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tokio_stream::StreamExt;

use crate::cli::desk_client::DeskClient;
use crate::config::ClientConfig;
use crate::domain::identity::NodeCode;
use crate::proto::{
    AcknowledgeRequest, CancelRequest, GetQueueRequest, GetRequest, HandlingCode, ListInboxRequest,
    ListOutboxRequest, ListPeersRequest, Message, Precedence, PreservationRequest, RequestType,
    RequeueRequest, RespondRequest, SubmitRequest, WatchRequest,
};
use crate::proto::{DisputePrecedenceRequest, ListAuditRequest};
use crate::store::audit::ChainHead;

/// hanoi247: a node of the 24/7 network of the UN Convention against Cybercrime.
#[derive(Debug, Parser)]
#[command(name = "hanoi247", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a three-node network (VN, FR, DE) on loopback and tell one request's story; exits 0.
    Demo,
    /// Measure durable latency and throughput over real mTLS: two nodes on loopback.
    Bench(BenchArgs),
    /// Make a network CA, node and client certificates and ready configs for a loopback network.
    Init(InitArgs),
    /// Run a node in the foreground (logs to stderr; Ctrl-C or SIGTERM stops it gracefully,
    /// SIGHUP reloads its CRLs, certificates and keys).
    Node {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Send a request to another node.
    Send(SendArgs),
    /// Requests received from other nodes, newest first.
    Inbox(ListArgs),
    /// Envelopes this node sent or will send, newest first.
    Outbox(ListArgs),
    /// One message with its fields, timeline and replies; with `--proof FILE`, also writes its
    /// proof of origin and receipt (signatures and certificates) to FILE for `verify`.
    Show {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// Write the message's proof file (JSON) here.
        #[arg(long)]
        proof: Option<PathBuf>,
    },
    /// Check a proof file from `show --proof` offline: signatures, certificate chains,
    /// identities and digests; says what it proves or exactly what fails (exit status 1).
    Verify {
        /// The proof file.
        file: PathBuf,
        /// The network CA (PEM) to trust; without it, the CA inside the file is used.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Acknowledge a received request (a person has taken it).
    Ack {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// Words for the origin.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Dispute the precedence of a received request: the origin sees the proposed precedence and
    /// the reason among the request's replies.
    Dispute {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// The precedence the request deserves.
        #[arg(long, value_enum)]
        precedence: PrecedenceArg,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
    /// Answer a received request.
    Respond {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// The answer.
        #[arg(long)]
        text: String,
    },
    /// Withdraw a request this node sent.
    Cancel {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Queue an EXPIRED request again with a new expiry.
    Requeue {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// The new lifetime from now ("2days"); the node's default when omitted.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// Follow the node's lifecycle events as they happen; reconnects and resumes if the node
    /// restarts, without gaps or repeats.
    Watch {
        /// Client options.
        #[command(flatten)]
        client: ClientArgs,
        /// Start after this event sequence number (replaying stored events after it).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Per peer: queued messages by precedence, oldest age, next retry, failures, last error.
    Queue(ClientArgs),
    /// Every directory member: reachability, last contact, round trip, version, certificate expiry.
    Peers(ClientArgs),
    /// The node's tamper-evident audit log (role `auditor`).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The network secretariat's signed directory: make it, add members, sign it, check it.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Take a consistent backup of the running node's whole store (operator role) into a file
    /// (mode 0600: it holds case data), written whole or not at all.
    Backup {
        /// Client options.
        #[command(flatten)]
        client: ClientArgs,
        /// The backup file to write (replaced only once the new one is complete and verified).
        #[arg(long)]
        out: PathBuf,
    },
    /// Rebuild a node's store from a backup file, offline, into a new or empty directory.
    Restore(RestoreArgs),
    /// Browse a backup's messages and audit log offline (never delivers, never listens).
    Inspect(inspect::InspectArgs),
    /// Issue or revoke certificates with the dev CAs that `init` made (see certs/README.md for
    /// the same with an external CA).
    Certs(CertsArgs),
}

/// `directory` subcommands (run by the network secretariat; `verify` by anyone).
#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Make the secretariat's Ed25519 key (0600, never overwritten), its public key beside it
    /// (`<key>.pub` with `.key` replaced) and an empty signed directory (version 1).
    Init {
        /// The directory file to make.
        #[arg(long, default_value = "directory.toml")]
        file: PathBuf,
        /// The secretariat's private key file to make.
        #[arg(long, default_value = "secretariat.key")]
        key: PathBuf,
        /// The network name (as in every certificate's identity).
        #[arg(long)]
        network: String,
    },
    /// Add a member or replace the member with its code. Leaves the directory unsigned until
    /// `sign`: work on a copy and publish the signed file.
    Add(DirectoryAddArgs),
    /// Remove a member. Leaves the directory unsigned until `sign`.
    Remove {
        /// The directory file.
        #[arg(long, default_value = "directory.toml")]
        file: PathBuf,
        /// The member's node code.
        #[arg(long)]
        code: NodeCode,
    },
    /// Bump the version, set the issue time and sign with the secretariat's key.
    Sign {
        /// The directory file.
        #[arg(long, default_value = "directory.toml")]
        file: PathBuf,
        /// The secretariat's private key.
        #[arg(long, default_value = "secretariat.key")]
        key: PathBuf,
    },
    /// Check the signature and print the members; exits non-zero when it does not verify.
    Verify {
        /// The directory file.
        #[arg(long, default_value = "directory.toml")]
        file: PathBuf,
        /// The secretariat's public key: 64 hex digits, or a file holding them (`secretariat.pub`).
        #[arg(long)]
        public_key: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `directory add` options.
#[derive(Debug, Args)]
pub struct DirectoryAddArgs {
    /// The directory file.
    #[arg(long, default_value = "directory.toml")]
    pub file: PathBuf,
    /// The member's node code.
    #[arg(long)]
    pub code: NodeCode,
    /// The authority's name.
    #[arg(long)]
    pub name: String,
    /// Its peer listener, host:port (the host must be in its certificate).
    #[arg(long)]
    pub endpoint: String,
    /// Its node certificate (PEM); its SHA-256 is pinned in the directory.
    #[arg(long)]
    pub cert: PathBuf,
    /// Working languages (BCP 47), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Request types it accepts (e.g. PRESERVATION), comma separated; none means all.
    #[arg(long, value_delimiter = ',')]
    pub request_types: Vec<String>,
    /// Its time zone (IANA name).
    #[arg(long, default_value = "")]
    pub time_zone: String,
    /// A human phone fallback.
    #[arg(long, default_value = "")]
    pub phone: String,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Fetch the whole hash chain and verify it here: exits non-zero naming the first broken
    /// link (a changed, deleted, damaged or reordered record).
    Verify {
        /// Client options.
        #[command(flatten)]
        client: ClientArgs,
        /// Also check that record SEQ still has the hash noted earlier ("SEQ:HASH", as printed
        /// by an earlier `audit verify`), which catches a rewritten chain.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Show the audit log, oldest first.
    List {
        /// Client options.
        #[command(flatten)]
        client: ClientArgs,
        /// Only the records about this message.
        #[arg(long)]
        message: Option<String>,
    },
}

/// `restore` options: the backup, and where to rebuild the store.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["data_dir", "config"])))]
pub struct RestoreArgs {
    /// The backup file (made by `hanoi247 backup`).
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// Rebuild the store in this directory (new or empty); then point `data_dir` at it.
    #[arg(long, conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// Or: the node config; rebuilds the store in its `data_dir` (new or empty) and refuses a
    /// backup of another node.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The node certificate that checks the backup's signature (default with --config: its
    /// `[tls] cert`); a backup whose signature does not verify with it is refused.
    #[arg(long, value_name = "NODE.PEM")]
    pub cert: Option<PathBuf>,
    /// Restore a backup made before backups were signed (format 1): only its SHA-256, which
    /// anyone can recompute, is checked.
    #[arg(long)]
    pub accept_unsigned: bool,
}

/// `certs` subcommands.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: CertsCommand,
}

/// `certs issue` and `certs revoke`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A new node certificate (rotation: replaces tls.cert and tls.key) or a new desk client.
    Issue(CertsIssueArgs),
    /// Add a certificate to its CA's revocation list (tls.peer_crl or tls.client_crl) and re-sign
    /// it; running nodes refuse the certificate after SIGHUP or within seconds.
    Revoke(CertsRevokeArgs),
}

/// `certs issue` options.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["node", "client"])))]
pub struct CertsIssueArgs {
    /// The node's config (names the CA files and where the node's certificate lives).
    #[arg(long)]
    pub config: PathBuf,
    /// A new certificate and key for the node itself, from the network CA.
    #[arg(long)]
    pub node: bool,
    /// A new desk client NAME, from the node's local CA: NAME.pem, NAME.key, NAME.client.toml.
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// More host names or IP addresses for a node certificate (loopback names are always in).
    #[arg(long = "host", requires = "node")]
    pub hosts: Vec<String>,
    /// Lifetime in days.
    #[arg(long, default_value_t = crate::cli::init::VALIDITY_DAYS)]
    pub days: u32,
}

/// `certs revoke` options.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["cert", "serial"])))]
pub struct CertsRevokeArgs {
    /// The node's config (names the CAs and their CRLs).
    #[arg(long)]
    pub config: PathBuf,
    /// The certificate to revoke (PEM); its issuer says which CRL.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// The serial number to revoke (hex, as `certs issue` or `openssl x509 -serial` prints it).
    #[arg(long, requires = "ca")]
    pub serial: Option<String>,
    /// Which CA issued --serial.
    #[arg(long, value_enum)]
    pub ca: Option<CaArg>,
}

/// A node's two CAs.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CaArg {
    /// The network CA (peers).
    Network,
    /// The node's local CA (desk clients).
    Local,
}

/// Runs `certs issue` or `certs revoke` and prints what it did.
pub fn run_certs(args: CertsArgs) -> Result<(), crate::cli::certs::CertsError> {
    use crate::cli::certs::{self, Authority, CertsError, RevokeTarget};
    match args.command {
        CertsCommand::Issue(args) => {
            let issued = match &args.client {
                Some(name) => certs::issue_client(&args.config, name, args.days)?,
                None => certs::issue_node(&args.config, &args.hosts, args.days)?,
            };
            println!("issued serial {}", issued.serial);
            for file in &issued.files {
                println!("wrote {}", file.display());
            }
            if let Some(note) = issued.note {
                println!("note: {note}");
            }
        }
        CertsCommand::Revoke(args) => {
            let target = match (args.cert, args.serial) {
                (Some(cert), _) => RevokeTarget::Certificate(cert),
                (None, Some(serial)) => {
                    let bytes = crate::trust::pki::parse_serial(&serial).ok_or_else(|| {
                        CertsError::Invalid(format!("--serial {serial}: expected a hex serial number"))
                    })?;
                    let which = match args.ca {
                        Some(CaArg::Local) => Authority::Local,
                        Some(CaArg::Network) | None => Authority::Network,
                    };
                    RevokeTarget::Serial(bytes, which)
                }
                (None, None) => {
                    return Err(CertsError::Invalid("give --cert FILE or --serial HEX --ca".into()));
                }
            };
            let done = certs::revoke(&args.config, &target)?;
            if done.already_listed {
                println!("serial {} is already revoked in {}", done.serial, done.crl.display());
            } else {
                println!("revoked serial {}: wrote {}", done.serial, done.crl.display());
                println!(
                    "running nodes refuse it after SIGHUP (kill -HUP <pid>) or within seconds by themselves"
                );
            }
        }
    }
    Ok(())
}

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages per throughput phase (and the backlog the receiver drains).
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Concurrent Submit calls in the throughput phases.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Precedence of every message.
    #[arg(long, value_enum, default_value_t = PrecedenceArg::Routine)]
    pub precedence: PrecedenceArg,
    /// Messages in each concurrency-1 latency phase.
    #[arg(long, default_value_t = 1000)]
    pub latency_samples: usize,
    /// Keep the temp dir (both nodes' stores, configs and logs, e.g. vn.log, fr-restart.log) and
    /// print its path.
    #[arg(long)]
    pub keep: bool,
    /// After the run, fill the receiver's store offline to this many inbound messages and time
    /// its start-up (the issue 9 figure is for 1000000; the fill takes minutes and gigabytes).
    #[arg(long)]
    pub startup_messages: Option<usize>,
    /// Then submit this many messages to the sender with checkpoints held off, kill it with
    /// SIGKILL and time its start-up, which replays them from the write-ahead log (0: skip).
    #[arg(long, default_value_t = 100_000)]
    pub recovery_writes: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `init` options.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Network name (in every certificate's identity).
    #[arg(long, default_value = "hanoi247-dev")]
    pub network: String,
    /// Node codes, comma separated, e.g. VN,FR,DE.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<NodeCode>,
    /// Desk clients as NODE:NAME[:ROLE] (role officer, operator, agency or auditor; officer when
    /// omitted), comma separated; a node without any gets `officer` and `operator`.
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<String>,
    /// The i-th node listens on peer P+10i, desk P+10i+1 (metrics +2, console +3 reserved).
    #[arg(long, default_value_t = 7247)]
    pub base_port: u16,
}

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The client config (`<name>.client.toml` from `init`).
    #[arg(long)]
    pub config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A message id and the client options.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The message id.
    pub id: String,
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Listing options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Only these states (repeat or comma-separate).
    #[arg(long = "state", value_enum, value_delimiter = ',')]
    pub states: Vec<StateArg>,
    /// Only these precedences.
    #[arg(long = "precedence", value_enum, value_delimiter = ',')]
    pub precedences: Vec<PrecedenceArg>,
    /// Only overdue requests.
    #[arg(long)]
    pub overdue: bool,
    /// Only from (inbox) or to (outbox) this node.
    #[arg(long)]
    pub peer: Option<String>,
    /// Only created within this long ago ("2h", "3days").
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
}

impl ListArgs {
    fn states(&self) -> Vec<i32> {
        self.states.iter().map(|s| state(*s) as i32).collect()
    }
    fn precedences(&self) -> Vec<i32> {
        self.precedences.iter().map(|p| precedence(*p) as i32).collect()
    }
    fn since(&self) -> Option<prost_types::Timestamp> {
        // `--since 100000years` reaches before 1970: from the start, rather than an overflow.
        self.since.map(|ago| {
            let from = std::time::SystemTime::now().checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH);
            crate::domain::timestamp::from_system(from.max(std::time::UNIX_EPOCH))
        })
    }
}

/// Message states on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(missing_docs)]
pub enum StateArg {
    Queued,
    WaitingRetry,
    Delivered,
    Acknowledged,
    Answered,
    Expired,
    Cancelled,
    Received,
}

fn state(arg: StateArg) -> crate::proto::MessageState {
    use crate::proto::MessageState as S;
    match arg {
        StateArg::Queued => S::Queued,
        StateArg::WaitingRetry => S::WaitingRetry,
        StateArg::Delivered => S::Delivered,
        StateArg::Acknowledged => S::Acknowledged,
        StateArg::Answered => S::Answered,
        StateArg::Expired => S::Expired,
        StateArg::Cancelled => S::Cancelled,
        StateArg::Received => S::Received,
    }
}

/// `send` options.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Destination node code.
    #[arg(long)]
    pub to: String,
    /// Request type.
    #[arg(long = "type", value_enum)]
    pub request_type: RequestTypeArg,
    /// Precedence.
    #[arg(long, value_enum)]
    pub precedence: PrecedenceArg,
    /// One line for the receiving officer.
    #[arg(long)]
    pub subject: String,
    /// The body text.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from a file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Case reference (made by the node when omitted).
    #[arg(long, default_value = "")]
    pub case: String,
    /// Language (BCP 47).
    #[arg(long, default_value = "en")]
    pub language: String,
    /// The id of the request this one continues.
    #[arg(long, default_value = "")]
    pub in_reply_to: String,
    /// Handling code.
    #[arg(long, value_enum, default_value_t = HandlingArg::H0)]
    pub handling: HandlingArg,
    /// The restrictions in words (required with --handling h3).
    #[arg(long, default_value = "")]
    pub restrictions: String,
    /// Typed fields as key=value, e.g. for preservation: requesting_authority=…, offence=…,
    /// facts=…, data_to_preserve=…, link_to_offence=…, custodian_or_location=…, necessity=…,
    /// mutual_legal_assistance_to_follow=true, preservation_days=90.
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
    /// The request's lifetime from now ("2days"); the node's default for its type when omitted.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
}

/// Request types on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(missing_docs)]
pub enum RequestTypeArg {
    Preservation,
    TrafficDataDisclosure,
    TechnicalAdvice,
    LegalInformation,
    EvidenceCollection,
    LocatePerson,
    Other,
}

/// Precedences on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(missing_docs)]
pub enum PrecedenceArg {
    Flash,
    Immediate,
    Priority,
    Routine,
}

/// Handling codes on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[allow(missing_docs)]
pub enum HandlingArg {
    H0,
    H1,
    H2,
    H3,
}

/// A client command failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The config could not be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] crate::trust::tls::TlsError),
    /// The node refused or could not be reached.
    #[error("{}", describe_status(.0))]
    Status(#[from] tonic::Status),
    /// A local file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `audit verify` found a broken link.
    #[error("the audit log is broken: {0}")]
    AuditBroken(#[from] crate::store::audit::BrokenLink),
    /// The backup file could not be written or is not whole.
    #[error(transparent)]
    Backup(#[from] crate::store::backup::BackupError),
    /// A proof file could not be made or does not verify.
    #[error("{0}")]
    Proof(String),
}

impl From<crate::trust::proof::ProofError> for CliError {
    fn from(error: crate::trust::proof::ProofError) -> Self {
        CliError::Proof(error.to_string())
    }
}

/// Runs a `directory` subcommand; prints what it did.
pub fn run_directory(command: DirectoryCommand) -> Result<(), crate::trust::directory::DirectoryError> {
    use crate::trust::directory::{Directory, DirectoryError, PublicKey, SecretariatKey};
    match command {
        DirectoryCommand::Init { file, key, network } => {
            crate::domain::identity::validate_network_name(&network)
                .map_err(|e| DirectoryError::Usage(format!("--network: {e}")))?;
            if file.exists() {
                return Err(DirectoryError::Usage(format!(
                    "{} already exists (init never overwrites a directory)",
                    file.display()
                )));
            }
            let public_path = key.with_extension("pub");
            let secretariat = SecretariatKey::create(&key, &public_path)?;
            let mut directory = Directory::empty(&network);
            directory.sign(&secretariat);
            directory.write(&file)?;
            println!("secretariat key: {} (keep it offline)", key.display());
            println!("public key: {} ({})", secretariat.public_key().to_hex(), public_path.display());
            println!("directory: {} version {}", file.display(), directory.version);
        }
        DirectoryCommand::Add(args) => {
            let mut directory = Directory::read(&args.file)?;
            let entry = crate::config::DirectoryEntry {
                code: args.code,
                name: args.name,
                endpoint: args.endpoint,
                languages: args.languages,
                request_types: args.request_types,
                time_zone: args.time_zone,
                phone: args.phone,
                certificate_sha256: crate::trust::directory::fingerprint_of_file(&args.cert)?,
            };
            let replaced = directory.member(entry.code).is_some();
            directory.upsert(entry);
            directory.signature.clear();
            directory
                .check()
                .map_err(|message| DirectoryError::Invalid { path: args.file.clone(), message })?;
            directory.write(&args.file)?;
            let done = if replaced { "replaced" } else { "added" };
            println!(
                "{} {done}; {} is unsigned until `hanoi247 directory sign`",
                args.code,
                args.file.display()
            );
        }
        DirectoryCommand::Remove { file, code } => {
            let mut directory = Directory::read(&file)?;
            if directory.member(code).is_none() {
                return Err(DirectoryError::Invalid {
                    path: file,
                    message: format!("{code} is not a member"),
                });
            }
            directory.members.retain(|m| m.code != code);
            directory.signature.clear();
            directory.write(&file)?;
            println!("{code} removed; {} is unsigned until `hanoi247 directory sign`", file.display());
        }
        DirectoryCommand::Sign { file, key } => {
            let secretariat = SecretariatKey::load(&key)?;
            let mut directory = Directory::read(&file)?;
            directory.sign(&secretariat);
            directory.write(&file)?;
            println!(
                "{} signed: version {}, issued at {}",
                file.display(),
                directory.version,
                directory.issued_at
            );
        }
        DirectoryCommand::Verify { file, public_key, json } => {
            let public_key = PublicKey::from_hex_or_file(&public_key)
                .map_err(|e| DirectoryError::Usage(format!("--public-key: {e}")))?;
            let directory = Directory::read(&file)?;
            directory
                .verify(&public_key)
                .map_err(|message| DirectoryError::Signature { path: file.clone(), message })?;
            if json {
                print_json(&serde_json::to_value(&directory).unwrap_or_default());
            } else {
                print!("{}", render::directory_table(&directory));
            }
        }
    }
    Ok(())
}

fn describe_status(status: &tonic::Status) -> String {
    crate::peer::delivery::describe(status)
}

fn client(args: &ClientArgs) -> Result<DeskClient, CliError> {
    Ok(desk_client::connect(&ClientConfig::load(&args.config)?)?)
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn print_message(message: &Message, json: bool) {
    if json {
        print_json(&render::message_json(message));
    } else {
        print!("{}", render::message_details(message, &[]));
    }
}

/// Builds the preservation fields from `--field key=value` pairs.
pub fn preservation_from_fields(fields: &[String]) -> Result<Option<PreservationRequest>, CliError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut p = PreservationRequest::default();
    for field in fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--field {field}: expected key=value")))?;
        let value = value.to_owned();
        match key {
            "requesting_authority" => p.requesting_authority = value,
            "offence" => p.offence = value,
            "facts" => p.facts = value,
            "data_to_preserve" => p.data_to_preserve = value,
            "link_to_offence" => p.link_to_offence = value,
            "custodian_or_location" => p.custodian_or_location = value,
            "necessity" => p.necessity = value,
            "mutual_legal_assistance_to_follow" => {
                p.mutual_legal_assistance_to_follow = value
                    .parse()
                    .map_err(|_| CliError::Usage(format!("--field {key}: expected true or false")))?;
            }
            "preservation_days" => {
                p.preservation_days = value
                    .parse()
                    .map_err(|_| CliError::Usage(format!("--field {key}: expected a number of days")))?;
            }
            other => return Err(CliError::Usage(format!("--field {other}: unknown field"))),
        }
    }
    Ok(Some(p))
}

/// Runs a client command.
pub async fn run_client(command: Command) -> Result<(), CliError> {
    match command {
        Command::Send(args) => send(args).await,
        Command::Inbox(args) => {
            let request = ListInboxRequest {
                limit: args.limit,
                states: args.states(),
                precedences: args.precedences(),
                overdue_only: args.overdue,
                peer: args.peer.clone().unwrap_or_default(),
                since: args.since(),
            };
            let list = client(&args.client)?.list_inbox(request).await?.into_inner();
            print_list(&list.messages, args.client.json);
            Ok(())
        }
        Command::Outbox(args) => {
            let request = ListOutboxRequest {
                limit: args.limit,
                states: args.states(),
                precedences: args.precedences(),
                overdue_only: args.overdue,
                peer: args.peer.clone().unwrap_or_default(),
                since: args.since(),
            };
            let list = client(&args.client)?.list_outbox(request).await?.into_inner();
            print_list(&list.messages, args.client.json);
            Ok(())
        }
        Command::Queue(args) => {
            let queue = client(&args)?.get_queue(GetQueueRequest {}).await?.into_inner();
            if args.json {
                print_json(&Value::Array(queue.peers.iter().map(render::queue_json).collect()));
            } else {
                print!("{}", render::queue_table(&queue.peers));
            }
            Ok(())
        }
        Command::Peers(args) => {
            let peers = client(&args)?.list_peers(ListPeersRequest {}).await?.into_inner();
            if args.json {
                print_json(&render::peers_json(&peers));
            } else {
                print!("{}", render::peers_table(&peers));
            }
            Ok(())
        }
        Command::Show { id: args, proof: Some(path) } => {
            let request = crate::proto::GetProofRequest { id: args.id.clone() };
            let response = client(&args.client)?.get_proof(request).await?.into_inner();
            let proof = crate::trust::proof::build(&response)?;
            let text = serde_json::to_string_pretty(&proof).map_err(crate::trust::proof::ProofError::from)?;
            // Case facts: readable by the officer only (0600), never a half-written file.
            crate::atomic_file::write_private(&path, (text + "\n").as_bytes())
                .map_err(std::io::Error::other)?;
            println!(
                "proof of {} written to {}; check it with: hanoi247 verify {}",
                args.id,
                path.display(),
                path.display()
            );
            Ok(())
        }
        Command::Verify { file, ca } => {
            let text = std::fs::read_to_string(&file)?;
            let cas = match ca {
                Some(path) => {
                    Some(crate::trust::tls::load_certs(&path)?.iter().map(|c| c.to_vec()).collect::<Vec<_>>())
                }
                None => None,
            };
            let verified = crate::trust::proof::verify(&text, cas.as_deref())
                .map_err(|e| CliError::Proof(format!("{}: NOT VERIFIED: {e}", file.display())))?;
            print!("{verified}");
            Ok(())
        }
        Command::Show { id: args, proof: None } => {
            let got = client(&args.client)?.get(GetRequest { id: args.id }).await?.into_inner();
            let message = got.message.unwrap_or_default();
            if args.client.json {
                let mut value = render::message_json(&message);
                value["replies"] = got.replies.iter().map(render::message_json).collect();
                print_json(&value);
            } else {
                print!("{}", render::message_details(&message, &got.replies));
            }
            Ok(())
        }
        Command::Ack { id, note } => {
            let response = client(&id.client)?.acknowledge(AcknowledgeRequest { id: id.id, note }).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Dispute { id, precedence: proposed, reason } => {
            let request =
                DisputePrecedenceRequest { id: id.id, precedence: precedence(proposed) as i32, reason };
            let response = client(&id.client)?.dispute_precedence(request).await?;
            print_message(&response.into_inner().dispute.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Respond { id, text } => {
            let response = client(&id.client)?.respond(RespondRequest { id: id.id, text }).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Cancel { id, reason } => {
            let response = client(&id.client)?.cancel(CancelRequest { id: id.id, reason }).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Requeue { id, expires_in } => {
            let expires_at = expires_in.map(crate::domain::timestamp::after);
            let response = client(&id.client)?.requeue(RequeueRequest { id: id.id, expires_at }).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Watch { client: args, after } => watch(&args, after).await,
        Command::Audit(AuditCommand::Verify { client: args, anchor }) => {
            audit_verify(&args, anchor.as_deref()).await
        }
        Command::Audit(AuditCommand::List { client: args, message }) => {
            audit_list(&args, message.as_deref()).await
        }
        Command::Backup { client: args, out } => backup(&args, &out).await,
        Command::Demo
        | Command::Init(_)
        | Command::Node { .. }
        | Command::Bench(_)
        | Command::Restore(_)
        | Command::Inspect(_)
        | Command::Certs(_)
        | Command::Directory(_) => Err(CliError::Usage("not a client command".into())),
    }
}

/// Follows `Watch`, reconnecting after the node goes away and resuming after the last event seen.
async fn watch(args: &ClientArgs, mut after: Option<u64>) -> Result<(), CliError> {
    let mut desk = client(args)?;
    let mut backoff = std::time::Duration::from_millis(200);
    // Events retention removed, said once the stream that goes on after them is open, so that
    // nothing that happens after the notice is missed.
    let mut removed: Option<String> = None;
    loop {
        // Why the stream ended: a status, or none when the node simply closed it.
        let ended: Option<tonic::Status> = match desk.watch(WatchRequest { after_sequence: after }).await {
            Ok(stream) => {
                let start = stream.metadata().get(crate::rpc::desk_service::WATCH_AFTER_HEADER);
                let start = start.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                after = after.or(start);
                if let Some(message) = removed.take() {
                    eprintln!("watch: {message}; continuing with new events");
                }
                let mut events = stream.into_inner();
                loop {
                    match events.next().await {
                        Some(Ok(event)) => {
                            after = Some(event.sequence);
                            backoff = std::time::Duration::from_millis(200);
                            match print_event(&event, args.json) {
                                Ok(()) => {}
                                // The reader went away (`watch | head`): done, as Unix tools are.
                                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                                Err(error) => return Err(CliError::Io(error)),
                            }
                        }
                        Some(Err(status)) => break Some(status),
                        None => break None,
                    }
                }
            }
            Err(status) => Some(status),
        };
        if let Some(status) = ended.as_ref().filter(|s| s.code() == tonic::Code::OutOfRange) {
            // Retention removed events this watcher had not seen: go on with what happens from now
            // (the lists show the current state of everything), and say so.
            removed = Some(status.message().to_owned());
            after = None;
            continue;
        }
        let lost = ended.as_ref().map_or_else(|| "the node ended the stream".to_owned(), describe_status);
        eprintln!("watch: {lost}; reconnecting in {backoff:?} (resuming after event {})", after.unwrap_or(0));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Receives the node's backup stream into `out` (temp file, verified, renamed) and says what it holds.
async fn backup(args: &ClientArgs, out: &std::path::Path) -> Result<(), CliError> {
    let mut chunks = client(args)?.backup(crate::proto::BackupRequest {}).await?.into_inner();
    let mut file = crate::store::backup::BackupFile::create(out)?;
    while let Some(chunk) = chunks.next().await {
        file.write(&chunk?.data)?;
    }
    // A stream cut short (the node stopped) fails the digest check here; nothing is renamed.
    let (header, bytes) = file.finish()?;
    let created_at =
        crate::domain::timestamp::rfc3339(&crate::domain::timestamp::from_system(header.created_at));
    if args.json {
        print_json(&serde_json::json!({
            "file": out.display().to_string(),
            "node": header.node.as_str(),
            "created_at": created_at,
            "records": header.record_count,
            "bytes": bytes,
            "schema_version": header.schema_version,
            "format_version": header.format_version,
        }));
    } else {
        println!(
            "backup of node {} taken {created_at}: {} records, {bytes} bytes, SHA-256 verified -> {}",
            header.node,
            header.record_count,
            out.display()
        );
    }
    Ok(())
}

/// One event on stdout, flushed (a watcher's reader sees it at once); a write error is returned,
/// never a panic, so that a closed pipe ends `watch` quietly.
fn print_event(event: &crate::proto::Event, json: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", render::event_json(event))?;
    } else {
        writeln!(
            stdout,
            "{:>6}  {}  {:<13}{} {}  {}  {}",
            event.sequence,
            event.at.as_ref().map(crate::domain::timestamp::rfc3339).unwrap_or_default(),
            crate::domain::lifecycle::state_name(event.state()),
            if event.overdue { " OVERDUE" } else { "" },
            crate::domain::text::printable(&event.message_id, false),
            crate::domain::text::printable(&event.peer, false),
            crate::domain::text::printable(&event.note, false)
        )?;
    }
    stdout.flush()
}

fn print_list(messages: &[Message], json: bool) {
    if json {
        print_json(&Value::Array(messages.iter().map(render::message_json).collect()));
    } else {
        print!("{}", render::message_table(messages));
    }
}

async fn send(args: SendArgs) -> Result<(), CliError> {
    let body = match (&args.body, &args.body_file) {
        (Some(body), _) => body.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)?,
        (None, None) => String::new(),
    };
    let request = SubmitRequest {
        destination: args.to.clone(),
        request_type: request_type(args.request_type) as i32,
        precedence: precedence(args.precedence) as i32,
        case_reference: args.case.clone(),
        subject: args.subject.clone(),
        body,
        language: args.language.clone(),
        expires_at: args.expires_in.map(crate::domain::timestamp::after),
        in_reply_to: args.in_reply_to.clone(),
        attachments: Vec::new(),
        handling_code: handling(args.handling) as i32,
        handling_restrictions: args.restrictions.clone(),
        preservation: preservation_from_fields(&args.fields)?,
    };
    let response = client(&args.client)?.submit(request).await?.into_inner();
    let message = response.message.unwrap_or_default();
    if args.client.json {
        print_json(&render::message_json(&message));
    } else {
        let envelope = message.envelope.unwrap_or_default();
        println!("{}  QUEUED for {} (case {})", envelope.id, envelope.destination, envelope.case_reference);
    }
    Ok(())
}

/// The proto request type of a command-line one.
pub fn request_type(arg: RequestTypeArg) -> RequestType {
    match arg {
        RequestTypeArg::Preservation => RequestType::Preservation,
        RequestTypeArg::TrafficDataDisclosure => RequestType::TrafficDataDisclosure,
        RequestTypeArg::TechnicalAdvice => RequestType::TechnicalAdvice,
        RequestTypeArg::LegalInformation => RequestType::LegalInformation,
        RequestTypeArg::EvidenceCollection => RequestType::EvidenceCollection,
        RequestTypeArg::LocatePerson => RequestType::LocatePerson,
        RequestTypeArg::Other => RequestType::Other,
    }
}

/// The proto precedence of a command-line one.
pub fn precedence(arg: PrecedenceArg) -> Precedence {
    match arg {
        PrecedenceArg::Flash => Precedence::Flash,
        PrecedenceArg::Immediate => Precedence::Immediate,
        PrecedenceArg::Priority => Precedence::Priority,
        PrecedenceArg::Routine => Precedence::Routine,
    }
}

fn handling(arg: HandlingArg) -> HandlingCode {
    match arg {
        HandlingArg::H0 => HandlingCode::H0,
        HandlingArg::H1 => HandlingCode::H1,
        HandlingArg::H2 => HandlingCode::H2,
        HandlingArg::H3 => HandlingCode::H3,
    }
}

/// The chain head the node reported in the `ListAudit` response header.
/// Without it a verifier could not tell a chain cut short from a whole one, so it is required.
fn reported_head<T>(response: &tonic::Response<T>) -> Result<ChainHead, CliError> {
    let value = response.metadata().get(crate::store::audit::AUDIT_HEAD_HEADER).ok_or_else(|| {
        CliError::Usage(format!(
            "the node did not report its audit head ({})",
            crate::store::audit::AUDIT_HEAD_HEADER
        ))
    })?;
    let text = value.to_str().unwrap_or_default();
    ChainHead::parse(text).map_err(|e| CliError::Usage(format!("the node reported a bad audit head: {e}")))
}

/// The heads of this log that peers witnessed, from the `ListAudit` response headers.
fn witnessed_heads<T>(
    response: &tonic::Response<T>,
) -> Result<Vec<crate::store::audit::WitnessedHead>, CliError> {
    response
        .metadata()
        .get_all(crate::store::audit::AUDIT_WITNESSED_HEADER)
        .iter()
        .map(|value| {
            crate::store::audit::WitnessedHead::parse(value.to_str().unwrap_or_default())
                .map_err(|e| CliError::Usage(format!("the node reported a bad witnessed head: {e}")))
        })
        .collect()
}

/// `audit verify`: fetches the whole chain and verifies it here, record by record.
async fn audit_verify(args: &ClientArgs, anchor: Option<&str>) -> Result<(), CliError> {
    let anchor =
        anchor.map(ChainHead::parse).transpose().map_err(|e| CliError::Usage(format!("--anchor {e}")))?;
    let response = client(args)?.list_audit(ListAuditRequest::default()).await?;
    let reported = reported_head(&response)?;
    let witnessed = witnessed_heads(&response)?;
    let mut witnessed_hashes = std::collections::HashMap::new();
    let mut records = response.into_inner();
    let mut verifier = crate::store::audit::Verifier::new();
    let mut anchor_found = false;
    let outcome = loop {
        match records.next().await {
            Some(Ok(record)) => {
                if let Err(broken) = verifier.push(&record) {
                    break Err(broken);
                }
                if witnessed.iter().any(|w| w.head.sequence == record.sequence) {
                    witnessed_hashes.insert(record.sequence, verifier.head().hash);
                }
                if let Some(checked) =
                    anchor.as_ref().and_then(|a| crate::store::audit::check_anchor(a, &record))
                {
                    anchor_found = true;
                    if let Err(broken) = checked {
                        break Err(broken);
                    }
                }
            }
            Some(Err(status)) => return Err(status.into()),
            None => break verifier.finish(Some(&reported)),
        }
    };
    let outcome = outcome.and_then(|head| match anchor {
        Some(anchor) if !anchor_found => Err(crate::store::audit::BrokenLink::AnchorMismatch {
            sequence: anchor.sequence,
            reason: format!("the chain ends at record {}", head.sequence),
        }),
        _ => Ok(head),
    });
    let outcome = outcome.and_then(|head| {
        crate::store::audit::check_witnessed(&head, &witnessed, |sequence| {
            witnessed_hashes.get(&sequence).copied()
        })
        .map(|()| head)
    });
    match outcome {
        Ok(head) => {
            if args.json {
                let witnessed: Vec<_> = witnessed
                    .iter()
                    .map(|w| serde_json::json!({ "peer": w.peer, "head": w.head.to_text(), "signed_at": w.signed_at }))
                    .collect();
                print_json(&serde_json::json!({
                    "intact": true, "records": head.sequence, "head": head.to_text(), "witnessed": witnessed,
                }));
            } else {
                println!("audit log intact: {} records; head {}", head.sequence, head.to_text());
                for w in &witnessed {
                    println!("witnessed by {}: head {} (reached by this log)", w.peer, w.head.to_text());
                }
                println!("(note the head somewhere else and check it later with --anchor)");
            }
            Ok(())
        }
        Err(broken) => {
            if args.json {
                print_json(&serde_json::json!({
                    "intact": false,
                    "verified_up_to": verifier.head().sequence,
                    "broken": broken.to_string(),
                }));
            }
            Err(broken.into())
        }
    }
}

/// `audit list`: the records as the node streams them, oldest first.
async fn audit_list(args: &ClientArgs, message: Option<&str>) -> Result<(), CliError> {
    let request = ListAuditRequest { message_id: message.unwrap_or_default().to_owned() };
    let mut stream = client(args)?.list_audit(request).await?.into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.next().await {
        records.push(record?);
    }
    if args.json {
        print_json(&Value::Array(records.iter().map(render::audit_json).collect()));
    } else {
        print!("{}", render::audit_table(&records));
    }
    Ok(())
}
