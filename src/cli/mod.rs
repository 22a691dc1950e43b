//! The `hanoi247` command line: its arguments and the client commands, which talk to a running
//! node through the desk API exactly as an agency system would.
//!
//! The top layer: may import everything. Client commands never open a store (`restore` is
//! offline, run by `main`); `demo` runs nodes in process, `bench` as child processes.

pub mod bench;
pub mod bench_network;
pub mod certs;
pub mod demo;
pub mod desk_client;
pub mod failure;
pub mod init;
pub mod inspect;
mod preservation;
pub mod render;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tokio_stream::StreamExt;

use crate::cli::desk_client::{CONNECT_TIMEOUT, DeskClient};
pub use crate::cli::failure::CliError;
use crate::cli::failure::Target;
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
#[command(name = "hanoi247", version, about, after_help = failure::EXIT_CODES_HELP)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Print JSON instead of text; a failure is then one JSON object on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// With a failure, also print its causes (the one-line message names only what to do).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Deadline of each call to the node, connecting included ("30s", "2m"; 30 s when not
    /// given); `watch` has none. For `backup` and `audit`, which stream, each chunk must come
    /// within it.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
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
        /// The node's config file (default: $HANOI247_CONFIG, else ./node.toml, else
        /// /etc/hanoi247/node.toml).
        #[arg(long, env = "HANOI247_CONFIG")]
        config: Option<PathBuf>,
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
        /// Save the attachments of the message and of its replies in this directory (each
        /// under its name, its SHA-256 checked).
        #[arg(long, value_name = "DIR")]
        save_attachments: Option<PathBuf>,
    },
    /// Check a proof file from `show --proof` offline: signatures, certificate chains,
    /// identities and digests; says what it proves or exactly what fails (exit status 7).
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
        /// The handling code this State sets on its answer (default: the request's).
        #[arg(long, value_enum)]
        handling: Option<HandlingArg>,
        /// The restrictions in words (required with --handling h3).
        #[arg(long, default_value = "")]
        restrictions: String,
        /// A file to attach to the answer (repeatable).
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<PathBuf>,
        /// The typed outcome beside the answer's text.
        #[command(flatten)]
        outcome: OutcomeArgs,
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
    /// Close a case: the request (sent or received) and its whole chain. Its content (bodies,
    /// subjects, free text) is removed at this node after `[retention] closed_content`.
    Close {
        /// Message and client options.
        #[command(flatten)]
        id: IdArgs,
        /// Why, for the record (optional; removed with the content).
        #[arg(long, default_value = "")]
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
    /// Figures for the network's reporting (operator or auditor role): requests sent and received
    /// by type, precedence, peer and state, and the median and 90th percentile of the time to
    /// receipt, acknowledgement and answer. Counts and times only, never content.
    Stats(StatsArgs),
    /// A connectivity drill: send a peer an EXERCISE request (technical advice, never counted
    /// in the statistics) and wait for its signed receipt; exit 0 with the time it took, 5 when
    /// it did not come.
    Drill(DrillArgs),
    /// The preservation clock: preservations (sent and received) by the date their data is
    /// preserved until, soonest first.
    Cases(preservation::CasesArgs),
    /// Ask for an extension of a preservation this node sent: a follow-up request with the new
    /// date (its executed answer moves the preservation's date at both ends).
    Extend(preservation::ExtendArgs),
    /// Record that the mutual legal assistance request of a preservation was sent, with its
    /// reference: a follow-up request tells the other end, and both record it on the case.
    MlaSent(preservation::MlaSentArgs),
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
    /// Get back from every peer what it exchanged with the running node (operator role), as
    /// `restore --recover-from-peers` does at start: shows each peer's progress until every one
    /// answered (a peer that is down is retried; Ctrl-C stops watching, not the recovery).
    Recover {
        /// Client options.
        #[command(flatten)]
        client: ClientArgs,
        /// Only exchanges completed since this time (RFC 3339); everything when omitted.
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        since: Option<std::time::SystemTime>,
    },
    /// Rebuild a node's store from a backup file, offline, into a new or empty directory.
    Restore(RestoreArgs),
    /// Browse a backup's messages and audit log offline (never delivers, never listens).
    Inspect(inspect::InspectArgs),
    /// Issue or revoke certificates with the dev CAs that `init` made (see certs/README.md for
    /// the same with an external CA).
    Certs(CertsArgs),
}

/// `drill` options.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The peer to drill (node code).
    #[arg(long)]
    pub to: String,
    /// How long to wait for the peer's receipt.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub wait: std::time::Duration,
}

/// `stats` options: the period and the output.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Client options.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Requests created at or after this date (2026-11-01, midnight UTC) or RFC 3339 time
    /// (default: since the first one stored).
    #[arg(long)]
    pub from: Option<String>,
    /// Requests created before this date or time (default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// CSV on stdout (one header line; a `record` column says `count` or `time`), for a
    /// spreadsheet (the global `--json` wins when both are given).
    #[arg(long)]
    pub csv: bool,
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
    /// Rotate a member's certificate without refusing it: `--next-cert` pins the new certificate
    /// beside the current one (both accepted), `--finish` makes it the only pin, `--cancel`
    /// drops it. Leaves the directory unsigned until `sign`.
    Rotate {
        /// The directory file.
        #[arg(long, default_value = "directory.toml")]
        file: PathBuf,
        /// The member's node code.
        #[arg(long)]
        code: NodeCode,
        /// The member's new node certificate (PEM).
        #[arg(long, required_unless_present_any = ["finish", "cancel"], conflicts_with_all = ["finish", "cancel"])]
        next_cert: Option<PathBuf>,
        /// The member now presents its new certificate: drop the previous pin.
        #[arg(long, conflicts_with = "cancel")]
        finish: bool,
        /// Abandon the rotation: drop the next pin.
        #[arg(long)]
        cancel: bool,
    },
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
    /// Check the signature and print the members; exits 7 when it does not verify.
    Verify {
        /// The directory file.
        #[arg(long, default_value = "directory.toml")]
        file: PathBuf,
        /// The secretariat's public key: 64 hex digits, or a file holding them (`secretariat.pub`).
        #[arg(long)]
        public_key: String,
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
    /// Fetch the whole hash chain and verify it here: exits 7 naming the first broken
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
    /// Then have the node, when it starts on the restored store, get back from each peer what
    /// the two exchanged since shortly before the backup (retrying peers that are down until each
    /// answers), before it sends anything; lists what cannot come back.
    #[arg(long)]
    pub recover_from_peers: bool,
}

/// How long before the backup's time peers are asked from: clocks of members differ, and
/// recovering more than needed only finds envelopes already held.
pub const RECOVERY_MARGIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Marks the store restored in `data_dir` (from a backup made at `backup_at`) as recovering from
/// its peers (see `peer::recovery`), audited; returns what cannot come back from peers.
pub async fn ask_recovery(
    data_dir: &std::path::Path,
    backup_at: std::time::SystemTime,
) -> Result<Vec<String>, CliError> {
    let failed = |error: crate::store::StoreError| {
        CliError::Backup(crate::store::backup::BackupError::Io {
            path: data_dir.to_owned(),
            source: std::io::Error::other(error.to_string()),
        })
    };
    let since = backup_at.checked_sub(RECOVERY_MARGIN).unwrap_or(std::time::UNIX_EPOCH);
    let since_seconds = since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let pending = crate::store::RecoveryPending {
        id: uuid::Uuid::now_v7(),
        since_seconds: i64::try_from(since_seconds).unwrap_or(i64::MAX),
    };
    let made = humantime::format_rfc3339_seconds(backup_at);
    let lost = vec![
        format!("messages submitted here after the backup ({made}) that no peer received: they were still queued when the machine was lost; submit them again"),
        format!("who submitted this node's requests after {made} (recovered requests have no submitting client: an agency no longer sees them)"),
        format!("this node's audit records and events after {made} (the audit log restarts from the backup's head, recorded as RECOVERY_ASKED; peers witness the restart)"),
        format!("requests cancelled here after {made} before they were sent: the backup holds them queued and they are sent once each peer answered; cancel them again at once"),
        "the intermediate timeline entries of recovered messages (each has its first state and the state it reached)".to_owned(),
    ];
    let store = crate::store::Store::open(data_dir).map_err(failed)?;
    store
        .write(|changes| {
            changes.act_as(crate::store::NODE_ACTOR);
            let details = format!(
                "restored from a backup made {made}; asking every peer for exchanges since {}; not recoverable: {}",
                humantime::format_rfc3339_seconds(since),
                lost.join("; ")
            );
            changes.audit("RECOVERY_ASKED", "", &details);
            changes.mark_recovery_pending(pending);
            Ok::<_, crate::store::StoreError>(())
        })
        .map_err(failed)?;
    store.persist().await.map_err(failed)?;
    store.checkpoint().map_err(failed)?;
    Ok(lost)
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
    /// A new node certificate (rotation: staged as node.next.pem / node.next.key beside the one in
    /// use, see `activate`) or a new desk client (its PEM files and .p12 rewritten).
    Issue(CertsIssueArgs),
    /// Put the node certificate staged by `issue --node` in use (the current pair is kept as
    /// node.previous.pem / node.previous.key); the running node switches within seconds.
    Activate {
        /// The node's config.
        #[arg(long)]
        config: PathBuf,
    },
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
            for line in issued.lines() {
                println!("{line}");
            }
        }
        CertsCommand::Activate { config } => {
            for line in certs::activate_node(&config)?.lines() {
                println!("{line}");
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
    /// With the receiver up: send one attachment of this many MiB and report its throughput
    /// end to end (upload, push to the receiver, receipt) beside this disk's sequential write
    /// speed (0: skip).
    #[arg(long, value_name = "MIB", default_value_t = 40)]
    pub attachment_mib: usize,
    /// Instead: a network of PEERS + 1 members, one node process each (e.g. 192 for the 193
    /// members of docs/benchmarks.md): start-up and CPU of one node with every peer down, then a
    /// FLASH from it to every peer at once, and its memory and open files with all connected.
    #[arg(long, value_name = "PEERS")]
    pub peers: Option<usize>,
    /// With --peers: how long the queued FLASHes are retried before the CPU window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", requires = "peers")]
    pub settle: std::time::Duration,
    /// With --peers: the CPU window with every peer down.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s", requires = "peers")]
    pub window: std::time::Duration,
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
    /// The client config (`<name>.client.toml` from `init`; default: $HANOI247_CONFIG, else
    /// ./client.toml, else /etc/hanoi247/client.toml).
    #[arg(long, env = "HANOI247_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text (the global `--json`).
    #[arg(skip)]
    pub json: bool,
    /// The deadline of each call (the global `--timeout`, 30 s when not given).
    #[arg(skip)]
    pub timeout: Option<std::time::Duration>,
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
    /// Only created more than this long ago ("1h").
    #[arg(long, value_parser = humantime::parse_duration)]
    pub until: Option<std::time::Duration>,
    /// Only with this case reference (ignoring ASCII case).
    #[arg(long)]
    pub case: Option<String>,
    /// Only those whose subject or body holds every word of this text (ignoring case).
    #[arg(long)]
    pub search: Option<String>,
    /// Start at this page (a `next_page_token` printed by an earlier call).
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Every page, not only the first (`--limit` per call).
    #[arg(long)]
    pub all: bool,
}

impl ListArgs {
    fn states(&self) -> Vec<i32> {
        self.states.iter().map(|s| state(*s) as i32).collect()
    }
    fn precedences(&self) -> Vec<i32> {
        self.precedences.iter().map(|p| precedence(*p) as i32).collect()
    }
    fn since(&self) -> Option<prost_types::Timestamp> {
        self.since.map(ago)
    }
    fn until(&self) -> Option<prost_types::Timestamp> {
        self.until.map(ago)
    }
    /// The inbox request of the page after `token` ("" for the first).
    fn inbox(&self, token: &str) -> ListInboxRequest {
        ListInboxRequest {
            limit: self.limit,
            states: self.states(),
            precedences: self.precedences(),
            overdue_only: self.overdue,
            peer: self.peer.clone().unwrap_or_default(),
            since: self.since(),
            page_token: token.to_owned(),
            case_reference: self.case.clone().unwrap_or_default(),
            text: self.search.clone().unwrap_or_default(),
            until: self.until(),
        }
    }
    /// The outbox request of the page after `token`, with the same filters.
    fn outbox(&self, token: &str) -> ListOutboxRequest {
        let inbox = self.inbox(token);
        ListOutboxRequest {
            limit: inbox.limit,
            states: inbox.states,
            precedences: inbox.precedences,
            overdue_only: inbox.overdue_only,
            peer: inbox.peer,
            since: inbox.since,
            page_token: inbox.page_token,
            case_reference: inbox.case_reference,
            text: inbox.text,
            until: inbox.until,
        }
    }
}

/// The time `ago` before now; `100000years` reaches before 1970: from the start, rather than an
/// overflow.
fn ago(ago: std::time::Duration) -> prost_types::Timestamp {
    let from = std::time::SystemTime::now().checked_sub(ago).unwrap_or(std::time::UNIX_EPOCH);
    crate::domain::timestamp::from_system(from.max(std::time::UNIX_EPOCH))
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
    /// An exercise (a drill), not a real request: shown as EXERCISE everywhere, left out of the
    /// statistics.
    #[arg(long)]
    pub exercise: bool,
    /// A file to attach (repeatable): uploaded first, then listed by its SHA-256.
    #[arg(long = "attach", value_name = "FILE")]
    pub attach: Vec<PathBuf>,
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

/// Runs a `directory` subcommand; prints what it did.
pub fn run_directory(
    command: DirectoryCommand,
    json: bool,
) -> Result<(), crate::trust::directory::DirectoryError> {
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
            // Refused here, where the secretariat types it, not when nodes load the directory:
            // a node with an older time zone database must not refuse a signed directory.
            if !args.time_zone.is_empty()
                && crate::domain::local_time::local_time_in(&args.time_zone, std::time::SystemTime::now())
                    .is_none()
            {
                return Err(DirectoryError::Usage(format!(
                    "--time-zone: '{}' is not an IANA time zone (e.g. Europe/Paris, Asia/Ho_Chi_Minh)",
                    args.time_zone
                )));
            }
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
                next_certificate_sha256: String::new(),
            };
            let replaced = directory.member(entry.code).is_some();
            let mut entry = entry;
            // A rotation under way stays under way when other values of the member change.
            if let Some(old) = directory.member(entry.code)
                && old.certificate_sha256 == entry.certificate_sha256
            {
                entry.next_certificate_sha256 = old.next_certificate_sha256.clone();
            }
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
        DirectoryCommand::Rotate { file, code, next_cert, finish, cancel } => {
            let mut directory = Directory::read(&file)?;
            let invalid = |message: String| DirectoryError::Invalid { path: file.clone(), message };
            let done = if let Some(cert) = next_cert {
                let pin = crate::trust::directory::fingerprint_of_file(&cert)?;
                directory.set_next_pin(code, &pin).map_err(invalid)?;
                format!("{code} next pin {pin} (both accepted)")
            } else if finish {
                let pin = directory.promote_next_pin(code).map_err(invalid)?;
                format!("{code} pins only {pin} now")
            } else {
                let _ = cancel;
                directory.set_next_pin(code, "").map_err(invalid)?;
                format!("{code} next pin dropped")
            };
            directory.signature.clear();
            directory.check().map_err(invalid)?;
            directory.write(&file)?;
            println!("{done}; {} is unsigned until `hanoi247 directory sign`", file.display());
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
        DirectoryCommand::Verify { file, public_key } => {
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

/// The deadline of a call when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One command's calls to its node: the deadline of each, and the node and files its failures
/// name.
struct Call {
    target: Target,
    timeout: Option<std::time::Duration>,
}

impl Call {
    /// Runs one call (or one step of a stream) within the deadline.
    async fn run<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, CliError> {
        let outcome = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .map_err(|_| CliError::Deadline { target: Box::new(self.target.clone()), waited: limit })?,
            None => call.await,
        };
        match outcome {
            Ok(value) => Ok(value),
            Err(status) => Err(self.fail(&status).await),
        }
    }

    /// A failed call said with the node's address and this client's files; a connection that
    /// broke for no reason it says is probed for a refused certificate.
    async fn fail(&self, status: &tonic::Status) -> CliError {
        tracing::debug!(?status, "call failed");
        let explained = match failure::from_status(status, &self.target) {
            CliError::Deadline { target, .. } => {
                CliError::Deadline { target, waited: self.timeout.unwrap_or(CONNECT_TIMEOUT) }
            }
            other => other,
        };
        if failure::transport_unexplained(status, &explained) {
            let within = self.timeout.unwrap_or(CONNECT_TIMEOUT).min(CONNECT_TIMEOUT);
            if let Some(mut refused) = failure::probe_certificate(&self.target, within).await {
                if let CliError::CertificateRefused { status: cause, .. }
                | CliError::UntrustedNode { status: cause, .. } = &mut refused
                {
                    *cause = Some(Box::new(status.clone()));
                }
                return refused;
            }
        }
        explained
    }
}

/// The client config a command uses: `--config`, `$HANOI247_CONFIG`, or a default place.
fn client_config(args: &ClientArgs) -> Result<(PathBuf, ClientConfig), CliError> {
    let path = failure::resolve_config(args.config.as_deref(), failure::CLIENT_CONFIG_DEFAULTS)?;
    let config = ClientConfig::load(&path).map_err(failure::config_error)?;
    Ok((path, config))
}

/// A desk client for the node `args` names, and how its calls are made.
fn connect(args: &ClientArgs) -> Result<(DeskClient, Call), CliError> {
    let (path, config) = client_config(args)?;
    let target = Target {
        config: path.clone(),
        endpoint: config.endpoint.clone(),
        cert: config.cert.clone(),
        ca: config.ca.clone(),
        key: config.key.clone(),
    };
    // The handshake is part of the call: a node that accepts and never finishes it ends at the
    // call's deadline, not later.
    let connect_timeout = args.timeout.unwrap_or(CONNECT_TIMEOUT);
    let client = desk_client::connect_within(&config, connect_timeout).map_err(|error| {
        let files = failure::client_config_files(&config);
        failure::name_config_file(CliError::Tls(error), &path, &files, &[("cert", "key")])
    })?;
    Ok((client, Call { target, timeout: args.timeout }))
}

/// A progress display on stderr for a long command (`backup`, `restore`, `audit verify`): drawn
/// only when stderr is a terminal and not with `--json`, so scripts and logs never see it.
/// `length` makes it a bar (`{pos}` of `{len}`), without one a spinner; the template names the
/// unit (`{bytes}` or `{pos}`).
pub fn progress(json: bool, length: Option<u64>, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal as _;
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match length {
        Some(length) => indicatif::ProgressBar::new(length),
        None => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
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

/// The client options of a client command.
fn client_args_mut(command: &mut Command) -> Option<&mut ClientArgs> {
    match command {
        Command::Send(args) => Some(&mut args.client),
        Command::Inbox(args) | Command::Outbox(args) => Some(&mut args.client),
        Command::Show { id, .. }
        | Command::Ack { id, .. }
        | Command::Dispute { id, .. }
        | Command::Respond { id, .. }
        | Command::Cancel { id, .. }
        | Command::Close { id, .. }
        | Command::Requeue { id, .. } => Some(&mut id.client),
        Command::Watch { client, .. }
        | Command::Backup { client, .. }
        | Command::Recover { client, .. }
        | Command::Audit(AuditCommand::Verify { client, .. } | AuditCommand::List { client, .. }) => {
            Some(client)
        }
        Command::Queue(client) | Command::Peers(client) => Some(client),
        Command::Stats(args) => Some(&mut args.client),
        Command::Drill(args) => Some(&mut args.client),
        Command::Cases(args) => Some(&mut args.client),
        Command::Extend(args) => Some(&mut args.id.client),
        Command::MlaSent(args) => Some(&mut args.id.client),
        Command::Demo
        | Command::Bench(_)
        | Command::Init(_)
        | Command::Node { .. }
        | Command::Verify { .. }
        | Command::Directory(_)
        | Command::Restore(_)
        | Command::Inspect(_)
        | Command::Certs(_) => None,
    }
}

/// Runs a client command with the global `--json` and `--timeout` (30 s when not given; none
/// for `watch`, which waits for events as long as it runs).
pub async fn run_client(
    mut command: Command,
    json: bool,
    timeout: Option<std::time::Duration>,
) -> Result<(), CliError> {
    // Both wait for as long as it takes (a recovery waits for peers that are down).
    let watching = matches!(command, Command::Watch { .. } | Command::Recover { .. });
    if let Some(args) = client_args_mut(&mut command) {
        args.json = json;
        args.timeout = if watching { None } else { Some(timeout.unwrap_or(DEFAULT_TIMEOUT)) };
    }
    match command {
        Command::Send(args) => send(args).await,
        Command::Inbox(args) => {
            let (mut desk, call) = connect(&args.client)?;
            let mut token = args.page_token.clone().unwrap_or_default();
            let mut messages = Vec::new();
            loop {
                let page = call.run(desk.list_inbox(args.inbox(&token))).await?.into_inner();
                messages.extend(page.messages);
                token = page.next_page_token;
                if !args.all || token.is_empty() {
                    break;
                }
            }
            print_list(&messages, args.client.json, &token);
            Ok(())
        }
        Command::Outbox(args) => {
            let (mut desk, call) = connect(&args.client)?;
            let mut token = args.page_token.clone().unwrap_or_default();
            let mut messages = Vec::new();
            loop {
                let page = call.run(desk.list_outbox(args.outbox(&token))).await?.into_inner();
                messages.extend(page.messages);
                token = page.next_page_token;
                if !args.all || token.is_empty() {
                    break;
                }
            }
            print_list(&messages, args.client.json, &token);
            Ok(())
        }
        Command::Queue(args) => {
            let (mut desk, call) = connect(&args)?;
            let queue = call.run(desk.get_queue(GetQueueRequest {})).await?.into_inner();
            if args.json {
                print_json(&Value::Array(queue.peers.iter().map(render::queue_json).collect()));
            } else {
                print!("{}", render::queue_table(&queue.peers));
            }
            Ok(())
        }
        Command::Peers(args) => {
            let (mut desk, call) = connect(&args)?;
            let peers = call.run(desk.list_peers(ListPeersRequest {})).await?.into_inner();
            if args.json {
                print_json(&render::peers_json(&peers));
            } else {
                print!("{}", render::peers_table(&peers));
            }
            Ok(())
        }
        Command::Drill(args) => drill(args).await,
        Command::Cases(args) => preservation::cases(args).await,
        Command::Extend(args) => preservation::extend(args).await,
        Command::MlaSent(args) => preservation::mla_sent(args).await,
        Command::Stats(args) => {
            let bound = |flag: &str, text: &Option<String>| {
                text.as_deref()
                    .map(crate::desk::statistics::period_bound)
                    .transpose()
                    .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
            };
            let request = crate::proto::GetStatisticsRequest {
                from: bound("--from", &args.from)?,
                to: bound("--to", &args.to)?,
            };
            let (mut desk, call) = connect(&args.client)?;
            let figures = call.run(desk.get_statistics(request)).await?.into_inner();
            if args.client.json {
                print_json(&render::statistics_json(&figures));
            } else if args.csv {
                print!("{}", render::statistics_csv(&figures));
            } else {
                print!("{}", render::statistics_table(&figures));
            }
            Ok(())
        }
        Command::Show { id: args, proof: Some(path), .. } => {
            let request = crate::proto::GetProofRequest { id: args.id.clone() };
            let (mut desk, call) = connect(&args.client)?;
            let response = call.run(desk.get_proof(request)).await?.into_inner();
            let proof = crate::trust::proof::build(&response)?;
            let text = serde_json::to_string_pretty(&proof).map_err(crate::trust::proof::ProofError::from)?;
            // Case facts: readable by the officer only (0600), never a half-written file.
            crate::atomic_file::write_private(&path, (text + "\n").as_bytes()).map_err(|source| {
                CliError::File { path: path.clone(), source: std::io::Error::other(source) }
            })?;
            println!(
                "proof of {} written to {}; check it with: hanoi247 verify {}",
                args.id,
                path.display(),
                path.display()
            );
            Ok(())
        }
        Command::Verify { file, ca } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| CliError::File { path: file.clone(), source })?;
            let cas = match ca {
                Some(path) => {
                    Some(crate::trust::tls::load_certs(&path)?.iter().map(|c| c.to_vec()).collect::<Vec<_>>())
                }
                None => None,
            };
            let verified = crate::trust::proof::verify(&text, cas.as_deref())
                .map_err(|e| CliError::Proof(format!("{}: NOT VERIFIED: {e}", file.display())))?;
            if json {
                print_json(&serde_json::json!({
                    "verified": true,
                    "envelope_id": verified.envelope.id,
                    "sha256": verified.sha256,
                    "ca": verified.ca,
                    "ca_given": verified.ca_given,
                    "origin": verified.origin,
                    "receipt": verified.receipt.as_ref().map(|(by, at)| serde_json::json!({ "by": by, "at": at })),
                    "content_removed": verified.removed.as_ref().map(|(at, fields)| serde_json::json!({ "at": at, "fields": fields })),
                }));
            } else {
                print!("{verified}");
            }
            Ok(())
        }
        Command::Show { id: args, proof: None, save_attachments } => {
            let (mut desk, call) = connect(&args.client)?;
            let got = call.run(desk.get(GetRequest { id: args.id })).await?.into_inner();
            let message = got.message.unwrap_or_default();
            if let Some(dir) = save_attachments {
                let saved = save_attachments_to(
                    &mut desk,
                    &call,
                    &dir,
                    std::iter::once(&message).chain(&got.replies),
                )
                .await?;
                for path in saved {
                    eprintln!("saved {} (SHA-256 checked)", path.display());
                }
            }
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
            let (mut desk, call) = connect(&id.client)?;
            let response = call.run(desk.acknowledge(AcknowledgeRequest { id: id.id, note })).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Dispute { id, precedence: proposed, reason } => {
            let request =
                DisputePrecedenceRequest { id: id.id, precedence: precedence(proposed) as i32, reason };
            let (mut desk, call) = connect(&id.client)?;
            let response = call.run(desk.dispute_precedence(request)).await?;
            print_message(&response.into_inner().dispute.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Respond { id, text, handling: code, restrictions, attach, outcome } => {
            let (mut desk, call) = connect(&id.client)?;
            let attachments = upload_files(&mut desk, &call, &attach).await?;
            let request = RespondRequest {
                id: id.id,
                text,
                handling_code: code.map_or(HandlingCode::Unspecified, handling) as i32,
                handling_restrictions: restrictions,
                attachments,
                outcome: outcome.into_outcome(),
            };
            let response = call.run(desk.respond(request)).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Cancel { id, reason } => {
            let (mut desk, call) = connect(&id.client)?;
            let response = call.run(desk.cancel(CancelRequest { id: id.id, reason })).await?;
            print_message(&response.into_inner().message.unwrap_or_default(), id.client.json);
            Ok(())
        }
        Command::Close { id, reason } => {
            let (mut desk, call) = connect(&id.client)?;
            let request = crate::proto::CloseCaseRequest { id: id.id, reason };
            let closed = call.run(desk.close_case(request)).await?.into_inner();
            if id.client.json {
                let mut value = render::message_json(&closed.message.unwrap_or_default());
                value["closed_ids"] = serde_json::json!(closed.closed_ids);
                print_json(&value);
            } else {
                print!("{}", render::message_details(&closed.message.unwrap_or_default(), &[]));
                println!(
                    "case closed: {} envelopes ({})",
                    closed.closed_ids.len(),
                    closed.closed_ids.join(", ")
                );
            }
            Ok(())
        }
        Command::Requeue { id, expires_in } => {
            let expires_at = expires_in.map(crate::domain::timestamp::after);
            let (mut desk, call) = connect(&id.client)?;
            let response = call.run(desk.requeue(RequeueRequest { id: id.id, expires_at })).await?;
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
        Command::Recover { client: args, since } => recover(&args, since).await,
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
/// Ends (with its exit code) when retrying cannot help: the node refuses this client's
/// certificate, or refuses the call.
async fn watch(args: &ClientArgs, mut after: Option<u64>) -> Result<(), CliError> {
    let (mut desk, call) = connect(args)?;
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
        let explained = match &ended {
            Some(status) => Some(call.fail(status).await),
            None => None,
        };
        let lost = match explained {
            None => "the node ended the stream".to_owned(),
            Some(
                error @ (CliError::CertificateRefused { .. }
                | CliError::UntrustedNode { .. }
                | CliError::Refused { .. }
                | CliError::NotFound { .. }),
            ) => return Err(error),
            Some(error) => error.to_string(),
        };
        eprintln!("watch: {lost}; reconnecting in {backoff:?} (resuming after event {})", after.unwrap_or(0));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Receives the node's backup stream into `out` (temp file, verified, renamed) and says what it holds.
async fn backup(args: &ClientArgs, out: &std::path::Path) -> Result<(), CliError> {
    let (mut desk, call) = connect(args)?;
    let mut chunks = call.run(desk.backup(crate::proto::BackupRequest {})).await?.into_inner();
    let mut file = crate::store::backup::BackupFile::create(out)?;
    let shown = progress(args.json, None, "{spinner} backup: {bytes} received ({bytes_per_sec}, {elapsed})");
    while let Some(chunk) = call.run(chunks.message()).await? {
        file.write(&chunk.data)?;
        shown.inc(chunk.data.len() as u64);
    }
    shown.finish_and_clear();
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

/// `recover`: asks the node to recover from its peers and shows each peer's progress.
async fn recover(args: &ClientArgs, since: Option<std::time::SystemTime>) -> Result<(), CliError> {
    let (mut desk, call) = connect(args)?;
    let request =
        crate::proto::RecoverFromPeersRequest { since: since.map(crate::domain::timestamp::from_system) };
    let mut progress = call.run(desk.recover_from_peers(request)).await?.into_inner();
    let mut last = std::collections::BTreeMap::new();
    while let Some(peer) = call.run(progress.message()).await? {
        if !args.json {
            let peer_code = crate::domain::text::printable(&peer.peer, false);
            if peer.done {
                println!("{peer_code}: done: {}", crate::domain::text::printable(&peer.result, false));
            } else if peer.last_error.is_empty() {
                println!("{peer_code}: recovering");
            } else {
                println!(
                    "{peer_code}: waiting, retrying: {}",
                    crate::domain::text::printable(&peer.last_error, false)
                );
            }
        }
        last.insert(peer.peer.clone(), peer);
    }
    if args.json {
        let peers: Vec<_> = last
            .values()
            .map(|p| {
                serde_json::json!({"peer": p.peer, "done": p.done, "result": p.result, "last_error": p.last_error})
            })
            .collect();
        print_json(&serde_json::json!({ "peers": peers }));
    } else {
        let done = last.values().filter(|p| p.done).count();
        println!("recovered from {done} of {} peers", last.len());
    }
    Ok(())
}

/// One event on stdout, flushed (a watcher's reader sees it at once); a write error is returned,
/// never a panic, so that a closed pipe ends `watch` quietly.
fn print_event(event: &crate::proto::WatchResponse, json: bool) -> std::io::Result<()> {
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

/// A listing on stdout (always the same shape); with a next page, its token on stderr (a JSON
/// object `{"next_page_token": ...}` with `--json`).
fn print_list(messages: &[Message], json: bool, next_page_token: &str) {
    if json {
        print_json(&Value::Array(messages.iter().map(render::message_json).collect()));
    } else {
        print!("{}", render::message_table(messages));
    }
    if !next_page_token.is_empty() {
        if json {
            eprintln!("{}", serde_json::json!({ "next_page_token": next_page_token }));
        } else {
            eprintln!("more: --page-token {next_page_token}");
        }
    }
}

/// Uploads each file (its name, a media type from its extension) and returns what to list.
async fn upload_files(
    desk: &mut DeskClient,
    call: &Call,
    paths: &[PathBuf],
) -> Result<Vec<crate::proto::Attachment>, CliError> {
    let mut attachments = Vec::new();
    for path in paths {
        let content = std::fs::read(path).map_err(|source| CliError::File { path: path.clone(), source })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let uploaded =
            call.run(desk_client::upload_attachment(desk, &name, media_type_of(path), content)).await?;
        attachments.push(uploaded);
    }
    Ok(attachments)
}

/// The media type of a file by its extension (what desks commonly exchange), else
/// application/octet-stream.
fn media_type_of(path: &std::path::Path) -> &'static str {
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "csv" => "text/csv",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "zip" => "application/zip",
        "eml" => "message/rfc822",
        _ => "application/octet-stream",
    }
}

/// Downloads the attachments `messages` list into `dir` (created if needed), each under its
/// file name (a bare name: no directory of the sender's choosing), checking every SHA-256; a
/// name already taken by other content gets the digest's first hex digits before it. Returns
/// the files written.
async fn save_attachments_to<'a>(
    desk: &mut DeskClient,
    call: &Call,
    dir: &std::path::Path,
    messages: impl Iterator<Item = &'a crate::proto::Message>,
) -> Result<Vec<PathBuf>, CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::File { path: dir.to_owned(), source })?;
    let mut saved = Vec::new();
    for message in messages {
        let Some(envelope) = message.envelope.as_ref() else { continue };
        for attachment in &envelope.attachments {
            let content =
                call.run(desk_client::download_attachment(desk, &envelope.id, &attachment.sha256)).await?;
            let digest = ring::digest::digest(&ring::digest::SHA256, &content);
            if digest.as_ref() != attachment.sha256.as_slice() {
                return Err(CliError::Proof(format!(
                    "attachment {} of {}: the content downloaded has SHA-256 {}, the envelope lists {}; nothing saved",
                    crate::domain::text::printable(&attachment.name, false),
                    envelope.id,
                    hex::encode(digest.as_ref()),
                    hex::encode(&attachment.sha256)
                )));
            }
            let name = safe_file_name(&attachment.name, &attachment.sha256);
            let mut path = dir.join(&name);
            // The same content saved before (show run again) is written again under its name.
            let same = std::fs::read(&path).is_ok_and(|held| {
                ring::digest::digest(&ring::digest::SHA256, &held).as_ref() == attachment.sha256.as_slice()
            });
            if (path.exists() && !same) || saved.contains(&path) {
                path = dir.join(format!("{}-{name}", &hex::encode(&attachment.sha256)[..12]));
            }
            crate::atomic_file::write_private(&path, &content).map_err(|source| CliError::File {
                path: path.clone(),
                source: std::io::Error::other(source),
            })?;
            saved.push(path);
        }
    }
    Ok(saved)
}

/// A file name for a foreign attachment name: its last path component, without leading dots
/// or characters a shell or file system would take otherwise; the digest when nothing is left.
fn safe_file_name(name: &str, sha256: &[u8]) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') { c } else { '_' })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').trim().to_owned();
    if cleaned.is_empty() { hex::encode(sha256) } else { cleaned }
}

async fn send(args: SendArgs) -> Result<(), CliError> {
    let body = match (&args.body, &args.body_file) {
        (Some(body), _) => body.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|source| CliError::File { path: path.clone(), source })?
        }
        (None, None) => String::new(),
    };
    let (mut desk, call) = connect(&args.client)?;
    let attachments = upload_files(&mut desk, &call, &args.attach).await?;
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
        attachments,
        handling_code: handling(args.handling) as i32,
        handling_restrictions: args.restrictions.clone(),
        preservation: preservation_from_fields(&args.fields)?,
        // One per invocation: every retry below repeats it, so the node stores the request once.
        client_request_id: uuid::Uuid::now_v7().to_string(),
        exercise: args.exercise,
        follow_up: None,
    };
    let request_id = request.client_request_id.clone();
    let mut retry = desk_client::SubmitRetry::default();
    // `--timeout` bounds each attempt; the retries themselves are bounded in count.
    if let Some(limit) = args.client.timeout {
        retry.attempt_timeout = limit;
    }
    let retried = desk_client::submit_retrying(&mut desk, request, retry, |attempt, status, pause| {
        eprintln!(
            "Submit failed ({}: {}); retrying in {} ms (attempt {attempt} of {}, same client request id {request_id})",
            desk_client::attempt_failure(status),
            crate::domain::text::printable(status.message(), false),
            pause.as_millis(),
            retry.attempts
        );
    })
    .await;
    let response = match retried {
        Ok(response) => response,
        Err(status) => return Err(call.fail(&status).await),
    };
    if response.replayed {
        eprintln!(
            "the node had already stored this request (client request id {request_id}): nothing was stored twice"
        );
    }
    // Stored all the same: the warnings are for the officer, e.g. a language the peer does not list.
    for warning in &response.warnings {
        eprintln!("warning: {}", crate::domain::text::printable(warning, false));
    }
    let message = response.message.unwrap_or_default();
    if args.client.json {
        let mut json = render::message_json(&message);
        json["warnings"] = serde_json::json!(response.warnings);
        print_json(&json);
    } else {
        // QUEUED when stored now; a replayed request may have moved on (DELIVERED, ...).
        let state = crate::domain::lifecycle::state_name(message.state());
        let envelope = message.envelope.unwrap_or_default();
        println!("{}  {state} for {} (case {})", envelope.id, envelope.destination, envelope.case_reference);
    }
    Ok(())
}

/// `hanoi247 drill`: an EXERCISE technical-advice request to the peer, then its events
/// followed (`Watch`, opened first so none is missed) until the peer's receipt is recorded
/// (DELIVERED or later) or `--wait` passes.
async fn drill(args: DrillArgs) -> Result<(), CliError> {
    use tokio_stream::StreamExt as _;
    let (mut desk, call) = connect(&args.client)?;
    let mut events = call.run(desk.watch(WatchRequest { after_sequence: None })).await?.into_inner();
    let started = std::time::Instant::now();
    let request = SubmitRequest {
        destination: args.to.clone(),
        request_type: RequestType::TechnicalAdvice as i32,
        precedence: Precedence::Routine as i32,
        subject: "Connectivity drill".into(),
        body: "A drill of the 24/7 network: no action is needed. Acknowledging it drills the desk too."
            .into(),
        handling_code: HandlingCode::H0 as i32,
        client_request_id: uuid::Uuid::now_v7().to_string(),
        exercise: true,
        ..Default::default()
    };
    let response = call.run(desk.submit(request)).await?.into_inner();
    let id = response.message.and_then(|m| m.envelope).map(|e| e.id).unwrap_or_default();
    let receipted = |state: crate::proto::MessageState| {
        use crate::proto::MessageState as S;
        !matches!(state, S::Queued | S::WaitingRetry | S::Unspecified)
    };
    let waited = tokio::time::timeout(args.wait, async {
        while let Some(event) = events.next().await {
            match event {
                Ok(event) if event.message_id == id && receipted(event.state()) => return Ok(event.state()),
                Ok(_) => {}
                Err(status) => return Err(status),
            }
        }
        Err(tonic::Status::unavailable("the node ended the event stream"))
    })
    .await;
    match waited {
        Ok(Ok(state)) => {
            let took = started.elapsed();
            let state = crate::domain::lifecycle::state_name(state);
            if args.client.json {
                let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
                print_json(
                    &serde_json::json!({ "id": id, "peer": args.to, "state": state, "receipt_ms": ms }),
                );
            } else {
                println!(
                    "{} stored the drill request {id} {} ms after it was sent: its signed receipt is recorded ({state})",
                    args.to,
                    took.as_millis()
                );
            }
            Ok(())
        }
        Ok(Err(status)) => Err(call.fail(&status).await),
        Err(_) => {
            let message = call.run(desk.get(GetRequest { id: id.clone() })).await?.into_inner().message;
            let message = message.unwrap_or_default();
            Err(CliError::DrillUndelivered {
                id,
                peer: args.to,
                waited: args.wait,
                state: crate::domain::lifecycle::state_name(message.state()).to_owned(),
                last_error: crate::domain::text::printable(&message.last_error, false).into_owned(),
            })
        }
    }
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

/// `respond`'s typed outcome: `--outcome` and the fields its kind takes (the node checks which
/// are required and refuses naming the field).
#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// executed, partly-executed, refused, preservation-not-possible, more-information-needed
    /// or forwarded.
    #[arg(long, value_parser = outcome_kind_arg)]
    outcome: Option<crate::proto::OutcomeKind>,
    /// Until when the data is preserved (executed preservations): a date (the end of that day,
    /// UTC) or an RFC 3339 time.
    #[arg(long, value_parser = preserved_until_arg, requires = "outcome")]
    preserved_until: Option<prost_types::Timestamp>,
    /// The provider's or the authority's reference.
    #[arg(long, default_value = "", requires = "outcome")]
    reference: String,
    /// The grounds of a refusal (required with --outcome refused).
    #[arg(long, default_value = "", requires = "outcome")]
    grounds: String,
    /// The authority the request was passed to (required with --outcome forwarded).
    #[arg(long, default_value = "", requires = "outcome")]
    forwarded_to: String,
    /// Traffic data disclosed: the provider or path identified.
    #[arg(long, default_value = "", requires = "outcome")]
    provider_or_path: String,
    /// Traffic data disclosed: the third State the communication came through (e.g. DE).
    #[arg(long, default_value = "", requires = "provider_or_path")]
    third_state: String,
}

impl OutcomeArgs {
    /// The outcome to send, if `--outcome` was given.
    fn into_outcome(self) -> Option<crate::proto::Outcome> {
        let kind = self.outcome?;
        let traffic_data = (!self.provider_or_path.is_empty()).then(|| crate::proto::TrafficDataDisclosure {
            provider_or_path: self.provider_or_path,
            third_state: self.third_state,
            preservation_id: String::new(),
        });
        Some(crate::proto::Outcome {
            kind: kind as i32,
            reference: self.reference,
            refusal_grounds: self.grounds,
            preserved_until: self.preserved_until,
            forwarded_to: self.forwarded_to,
            traffic_data,
        })
    }
}

/// `--outcome`'s value by its short name (dashes or underscores, any case).
fn outcome_kind_arg(name: &str) -> Result<crate::proto::OutcomeKind, String> {
    crate::domain::names::outcome_kind_named(name).ok_or_else(|| {
        "one of executed, partly-executed, refused, preservation-not-possible, more-information-needed, forwarded"
            .to_owned()
    })
}

/// `--preserved-until`: a date means the end of that day in UTC (the data is kept through it).
pub(crate) fn preserved_until_arg(text: &str) -> Result<prost_types::Timestamp, String> {
    let text = text.trim();
    let full = if text.len() == 10 { format!("{text}T23:59:59Z") } else { text.to_owned() };
    humantime::parse_rfc3339_weak(&full)
        .map(crate::domain::timestamp::from_system)
        .map_err(|e| format!("{e}: a date (2027-03-01) or an RFC 3339 time"))
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
        CliError::BadAnswer(format!(
            "the node did not report its audit head ({})",
            crate::store::audit::AUDIT_HEAD_HEADER
        ))
    })?;
    let text = value.to_str().unwrap_or_default();
    ChainHead::parse(text)
        .map_err(|e| CliError::BadAnswer(format!("the node reported a bad audit head: {e}")))
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
                .map_err(|e| CliError::BadAnswer(format!("the node reported a bad witnessed head: {e}")))
        })
        .collect()
}

/// `audit verify`: fetches the whole chain and verifies it here, record by record.
async fn audit_verify(args: &ClientArgs, anchor: Option<&str>) -> Result<(), CliError> {
    let anchor =
        anchor.map(ChainHead::parse).transpose().map_err(|e| CliError::Usage(format!("--anchor {e}")))?;
    let (mut desk, call) = connect(args)?;
    let response = call.run(desk.list_audit(ListAuditRequest::default())).await?;
    let reported = reported_head(&response)?;
    let witnessed = witnessed_heads(&response)?;
    let mut witnessed_hashes = std::collections::HashMap::new();
    let mut records = response.into_inner();
    let shown = progress(
        args.json,
        Some(reported.sequence),
        "audit verify: {bar:30} {pos}/{len} records ({per_sec}, {elapsed})",
    );
    let mut verifier = crate::store::audit::Verifier::new();
    let mut anchor_found = false;
    let outcome = loop {
        match call.run(records.message()).await {
            Ok(Some(record)) => {
                shown.inc(1);
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
            Err(error) => return Err(error),
            Ok(None) => break verifier.finish(Some(&reported)),
        }
    };
    shown.finish_and_clear();
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
    let request =
        ListAuditRequest { message_id: message.unwrap_or_default().to_owned(), ..Default::default() };
    let (mut desk, call) = connect(args)?;
    let mut stream = call.run(desk.list_audit(request)).await?.into_inner();
    let mut records = Vec::new();
    while let Some(record) = call.run(stream.message()).await? {
        records.push(record);
    }
    if args.json {
        print_json(&Value::Array(records.iter().map(render::audit_json).collect()));
    } else {
        print!("{}", render::audit_table(&records));
    }
    Ok(())
}
