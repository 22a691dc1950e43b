//! `hanoi247 inspect --backup FILE`: browse a backup's messages and audit log offline. The
//! backup is checked and restored into a temporary directory (removed on exit) and only read
//! from there: no listener, no delivery task, no peer is ever contacted, so looking into an old
//! backup cannot resend what it holds (RUNBOOK §6a).

use std::path::PathBuf;

use clap::Args;

use crate::cli::render;
use crate::domain::identity::NodeCode;
use crate::store::backup::{Authenticity, BackupError};
use crate::store::{Listing, Store, StoreError, view};

/// `inspect` options.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The backup file (made by `hanoi247 backup`).
    #[arg(long, value_name = "FILE")]
    pub backup: PathBuf,
    /// The node certificate that checks the backup's signature; a backup whose signature does
    /// not verify with it is refused.
    #[arg(long, value_name = "NODE.PEM")]
    pub cert: Option<PathBuf>,
    /// Open a backup made before backups were signed (format 1): only its SHA-256 is checked.
    #[arg(long)]
    pub accept_unsigned: bool,
    /// Show this one message (fields, timeline, replies) instead of the listings.
    #[arg(long, value_name = "ID")]
    pub message: Option<String>,
    /// At most this many messages per listing and audit records (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// Why a backup could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The backup is damaged, unsigned or not signed by `--cert`.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The restored copy could not be read.
    #[error("reading the backup's store: {0}")]
    Store(#[from] StoreError),
    /// `--cert` could not be read.
    #[error("--cert: {0}")]
    Certificate(#[from] crate::trust::tls::TlsError),
    /// The temporary directory could not be made.
    #[error("making a temporary directory: {0}")]
    TempDir(std::io::Error),
    /// `--message` names no message of the backup, or is not an id.
    #[error("--message {0}")]
    Message(String),
}

/// Opens the backup offline and prints what `args` asks for.
pub fn run(args: &InspectArgs) -> Result<(), InspectError> {
    let certificate = args.cert.as_deref().map(crate::trust::tls::load_certs).transpose()?;
    let certificate = certificate.and_then(|certs| certs.first().map(|c| c.to_vec()));
    let check = |node: NodeCode, digest: &[u8; 32], signature: &[u8]| {
        let certificate = certificate.as_deref().unwrap_or_default();
        crate::trust::witness::verify_backup(certificate, node, digest, signature).map_err(|e| e.to_string())
    };
    let authenticity = Authenticity {
        verify: args.cert.as_deref().map(|path| (&check as _, path)),
        accept_unsigned: args.accept_unsigned,
    };
    let scratch =
        tempfile::Builder::new().prefix("hanoi247-inspect-").tempdir().map_err(InspectError::TempDir)?;
    let target = scratch.path().join("store");
    let restored = crate::store::backup::restore(&args.backup, &target, None, &authenticity)?;
    let store = Store::open(&target)?;
    let header = &restored.header;
    println!(
        "backup of node {} taken {} ({}): messages {}, events {}, audit records {}; opened read-only, nothing is delivered",
        header.node,
        humantime::format_rfc3339_seconds(header.created_at),
        args.backup.display(),
        restored.imported.messages,
        restored.imported.events,
        restored.imported.records
    );
    match &args.message {
        Some(id) => print!("{}", one_message(&store, id)?),
        None => print!("{}", listings(&store, args.limit)?),
    }
    // The store is closed before its temporary directory is removed.
    drop(store);
    drop(scratch);
    Ok(())
}

/// Inbox, outbox (newest first) and the newest audit records.
fn listings(store: &Store, limit: usize) -> Result<String, StoreError> {
    let inbox: Vec<_> = store.list(Listing::Inbox, limit, |_| true)?.iter().map(view).collect();
    let outbox: Vec<_> = store.list(Listing::Outbox, limit, |_| true)?.iter().map(view).collect();
    let head = store.audit_head().sequence;
    let records: Vec<_> = store
        .audit_records(head.saturating_sub(limit as u64), head, limit)?
        .into_iter()
        .map(|(_, record)| record)
        .collect();
    Ok(format!(
        "\nINBOX ({} shown, newest first)\n{}\nOUTBOX ({} shown, newest first)\n{}\nAUDIT LOG (the last {} of {})\n{}",
        inbox.len(),
        render::message_table(&inbox),
        outbox.len(),
        render::message_table(&outbox),
        records.len(),
        head,
        render::audit_table(&records)
    ))
}

/// One message with its replies.
fn one_message(store: &Store, id: &str) -> Result<String, InspectError> {
    let uuid: uuid::Uuid =
        id.parse().map_err(|e| InspectError::Message(format!("'{id}': not a message id ({e})")))?;
    let stored =
        store.get(uuid)?.ok_or_else(|| InspectError::Message(format!("{id}: not in this backup")))?;
    let replies: Vec<_> = store.replies(uuid)?.iter().map(view).collect();
    Ok(render::message_details(&view(&stored), &replies))
}
