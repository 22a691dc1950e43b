//! The backup file: a versioned, self-checking copy of one node's store, made by the node from a
//! [`Snapshot`] (desk RPC `Backup`, `hanoi247 backup`) and turned back into a store by
//! [`restore`] (`hanoi247 restore`, offline).
//!
//! Layout (integers big-endian):
//!
//! | bytes | content |
//! | --- | --- |
//! | 8 | magic `H247BKUP` |
//! | 4 | format version ([`FORMAT_VERSION`]) |
//! | 4 | store schema version of the records (`store::SCHEMA_VERSION` when made) |
//! | 2 | node code, ASCII |
//! | 8 | created at, milliseconds since the Unix epoch |
//! | 8 | sequence floor (the store's id generator must continue above it) |
//! | 8 | record count |
//! | … | records: key length (4), key, value length (4), value — the store's own key/values, then one per attachment a message lists: key `0xFF "attachment"` + SHA-256 (32), value the content |
//! | 32 | SHA-256 of every byte before it |
//! | L | format 2: the node's signature over that SHA-256 (`trust::witness`: ECDSA P-256, DER, after the prefix `"hanoi247-backup-v1\n"` and the node code) |
//! | 2 | format 2: L |
//!
//! A reader checks the magic and the format version first (a later format may check itself
//! differently), then the digest over the whole file, and only then trusts any length in it.
//!
//! The SHA-256 alone only catches accidents: anyone can change the records and recompute it. The
//! signature is made with the node key, which a copy of the backup does not hold, and
//! [`restore`] checks it with the node certificate, so a backup changed after it was made, or
//! made by another key, is refused. A format 1 backup (made before signatures) has none: restore
//! refuses it unless the operator says `--accept-unsigned` (its SHA-256 is still checked).

use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ring::digest::{Context, SHA256};

use crate::atomic_file::{self, AtomicFile, FileError};
use crate::domain::identity::NodeCode;
use crate::store::{Importer, SCHEMA_VERSION, Snapshot, StoreError};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"H247BKUP";
/// The file layout this code writes (it also reads [`UNSIGNED_FORMAT_VERSION`]).
pub const FORMAT_VERSION: u32 = 2;
/// The layout before backups were signed: read, but restored only when the operator accepts it.
pub const UNSIGNED_FORMAT_VERSION: u32 = 1;
/// Bytes before the first record.
const HEADER_LEN: usize = 8 + 4 + 4 + 2 + 8 + 8 + 8;
/// Bytes of the digest at the end.
const DIGEST_LEN: usize = 32;
/// Bytes of backup file per streamed chunk (well below the desk API's decode limit).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// A backup file could not be made, read or restored. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not start like a backup file.
    #[error("{}: not a hanoi247 backup file (it does not start with {MAGIC:?})", path.display())]
    NotABackup {
        /// The file.
        path: PathBuf,
    },
    /// The file has a layout this version does not know.
    #[error(
        "{}: backup format version {found}, this hanoi247 reads version {FORMAT_VERSION}: use the hanoi247 that made it, or a newer one",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its format version.
        found: u32,
    },
    /// The digest at the end does not match the content.
    #[error(
        "{}: the backup is damaged: its SHA-256 does not match its content (changed or cut short since it was made); use another copy",
        path.display()
    )]
    DigestMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The digest matches but the content is not what the header says (a bug or a forgery).
    #[error("{}: the backup is damaged: {reason}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The records were written by a newer hanoi247.
    #[error(
        "{}: the backup holds store schema version {found}, this hanoi247 reads up to {SCHEMA_VERSION}: restore it with the newer hanoi247",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
    },
    /// The node's stream ended before the file was whole (the node stopped, the connection
    /// broke); nothing was written under the target name.
    #[error(
        "{}: the backup stream ended before the file was complete ({reason}); nothing was written there: take the backup again",
        path.display()
    )]
    Incomplete {
        /// The file that was to be written.
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// The restore target already holds something.
    #[error(
        "{}: the restore target is not empty; restore only into a new or empty directory (move the old data_dir aside first)",
        path.display()
    )]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The backup has no signature (made before backups were signed, format 1).
    #[error(
        "{}: the backup is not signed (made by a hanoi247 before backups were signed), so nothing shows it was not changed since: its SHA-256 can be recomputed by anyone. Restore it only if you trust where the copy was kept, with --accept-unsigned",
        path.display()
    )]
    Unsigned {
        /// The file.
        path: PathBuf,
    },
    /// No certificate was given to check the signature with.
    #[error(
        "{}: the backup is signed, but no node certificate was given to check it: give --cert NODE.PEM (the node's certificate) or --config NODE.TOML",
        path.display()
    )]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The signature does not verify with the node certificate.
    #[error(
        "{}: the backup's signature does not verify with {}: it was changed after it was made (its SHA-256 recomputed) or signed by another key ({reason}); do not restore it, use another copy",
        path.display(), certificate.display()
    )]
    BadSignature {
        /// The file.
        path: PathBuf,
        /// The certificate it was checked with.
        certificate: PathBuf,
        /// What the check said.
        reason: String,
    },
    /// The backup is of another node than the config it is restored for.
    #[error("the backup is of node {found}, but {} is the config of node {expected}", config.display())]
    WrongNode {
        /// The node the backup is of.
        found: NodeCode,
        /// The node of the config.
        expected: NodeCode,
        /// The config.
        config: PathBuf,
    },
    /// The store could not be rebuilt.
    #[error("rebuilding the store in {}: {source} (delete what was written there before trying again)", path.display())]
    Store {
        /// The target directory.
        path: PathBuf,
        /// Why.
        source: StoreError,
    },
}

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The file layout ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The store layout of the records.
    pub schema_version: u32,
    /// The node whose store it is.
    pub node: NodeCode,
    /// When the node took the copy.
    pub created_at: SystemTime,
    /// The store's sequence numbers must continue above this.
    pub sequence_floor: u64,
    /// How many records follow.
    pub record_count: u64,
    /// SHA-256 of the file before it (filled in when read).
    pub digest: [u8; DIGEST_LEN],
    /// The node's signature over `digest`; `None` for format 1 or an empty one.
    pub signature: Option<Vec<u8>>,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        let millis = self.created_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
        let fields: [&[u8]; 7] = [
            MAGIC,
            &self.format_version.to_be_bytes(),
            &self.schema_version.to_be_bytes(),
            self.node.as_str().as_bytes(),
            &u64::try_from(millis).unwrap_or(u64::MAX).to_be_bytes(),
            &self.sequence_floor.to_be_bytes(),
            &self.record_count.to_be_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        bytes
    }

    /// Magic and format version only: what may be checked before the digest.
    fn check_start(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(BackupError::NotABackup { path: path.to_owned() });
        }
        let found = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if found != FORMAT_VERSION && found != UNSIGNED_FORMAT_VERSION {
            return Err(BackupError::UnknownFormat { path: path.to_owned(), found });
        }
        Ok(())
    }

    /// The rest, once the digest matched.
    fn decode(path: &Path, bytes: &[u8; HEADER_LEN]) -> Result<Self, BackupError> {
        let u32_at = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let u64_at = |at: usize| {
            let mut field = [0u8; 8];
            field.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(field)
        };
        let node = std::str::from_utf8(&bytes[16..18])
            .ok()
            .and_then(|code| code.parse::<NodeCode>().ok())
            .ok_or_else(|| BackupError::Damaged {
                path: path.to_owned(),
                reason: format!("node code {:?} is not a node code", &bytes[16..18]),
            })?;
        Ok(Self {
            format_version: u32_at(8),
            schema_version: u32_at(12),
            node,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_millis(u64_at(18)),
            sequence_floor: u64_at(26),
            record_count: u64_at(34),
            digest: [0; DIGEST_LEN],
            signature: None,
        })
    }
}

/// The backup file of `snapshot` as a sequence of chunks of about [`CHUNK_BYTES`]: header,
/// records, digest. Concatenated, they are the file.
pub struct Chunks {
    snapshot: Snapshot,
    next_record: usize,
    /// The attachments to carry after the records, and the next one.
    attachments: Vec<(crate::store::attachments::Digest, PathBuf, u64)>,
    next_attachment: usize,
    /// The attachment being copied, and how many of its bytes are still to come.
    reading: Option<(std::fs::File, u64)>,
    digest: Option<Context>,
    header: Option<[u8; HEADER_LEN]>,
    sign: Option<SignDigest>,
}

/// The key of an attachment record: never a store key (those start with a lowercase letter).
const ATTACHMENT_KEY: &[u8] = b"\xffattachment";

/// The digest an attachment record's key names, `None` for a store record.
fn attachment_of(key: &[u8]) -> Option<crate::store::attachments::Digest> {
    key.strip_prefix(ATTACHMENT_KEY).and_then(crate::store::attachments::digest_of)
}

/// Signs a backup's SHA-256 with the node key (`trust::witness::sign_backup`); an empty
/// signature if it cannot (restore then refuses the file as unsigned).
pub type SignDigest = Box<dyn FnOnce(&[u8; DIGEST_LEN]) -> Vec<u8> + Send>;

impl Chunks {
    /// The file of `snapshot`, a copy of `node`'s store taken at `created_at`, its SHA-256
    /// signed by `sign`.
    pub fn new(snapshot: Snapshot, node: NodeCode, created_at: SystemTime, sign: SignDigest) -> Self {
        let header = Header {
            format_version: FORMAT_VERSION,
            schema_version: snapshot.schema_version(),
            node,
            created_at,
            sequence_floor: snapshot.sequence_floor(),
            record_count: 0,
            digest: [0; DIGEST_LEN],
            signature: None,
        };
        let attachments = snapshot.attachments();
        let header = Header { record_count: (snapshot.len() + attachments.len()) as u64, ..header };
        Self {
            snapshot,
            next_record: 0,
            attachments,
            next_attachment: 0,
            reading: None,
            digest: Some(Context::new(&SHA256)),
            header: Some(header.encode()),
            sign: Some(sign),
        }
    }
}

impl Iterator for Chunks {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut digest = self.digest.take()?;
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + 1024);
        if let Some(header) = self.header.take() {
            chunk.extend_from_slice(&header);
        }
        while chunk.len() < CHUNK_BYTES {
            if let Some((file, left)) = self.reading.as_mut() {
                let want = (CHUNK_BYTES - chunk.len()).min(usize::try_from(*left).unwrap_or(usize::MAX));
                let start = chunk.len();
                chunk.resize(start + want, 0);
                // A file cut short or unreadable: the stream ends here, and the client's check
                // finds the file incomplete.
                file.read_exact(&mut chunk[start..]).ok()?;
                *left -= want as u64;
                if *left == 0 {
                    self.reading = None;
                }
            } else if let Some((key, value)) = self.snapshot.record(self.next_record) {
                // sled keys and values are far below 4 GiB (an envelope is at most 1 MiB).
                chunk.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
                chunk.extend_from_slice(key);
                chunk.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_be_bytes());
                chunk.extend_from_slice(value);
                self.next_record += 1;
            } else if let Some((digest, path, size)) = self.attachments.get(self.next_attachment) {
                // Attachments are at most `limits.max_attachment_bytes`, far below 4 GiB.
                let size32 = u32::try_from(*size).ok()?;
                let file = std::fs::File::open(path).ok()?;
                let key = [ATTACHMENT_KEY, digest.as_slice()].concat();
                chunk.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
                chunk.extend_from_slice(&key);
                chunk.extend_from_slice(&size32.to_be_bytes());
                if *size > 0 {
                    self.reading = Some((file, *size));
                }
                self.next_attachment += 1;
            } else {
                break;
            }
        }
        digest.update(&chunk);
        let more = self.reading.is_some()
            || self.next_record < self.snapshot.len()
            || self.next_attachment < self.attachments.len();
        if more {
            self.digest = Some(digest);
        } else {
            let mut digest_bytes = [0u8; DIGEST_LEN];
            digest_bytes.copy_from_slice(digest.finish().as_ref());
            chunk.extend_from_slice(&digest_bytes);
            let signature = self.sign.take().map(|sign| sign(&digest_bytes)).unwrap_or_default();
            // An ECDSA P-256 signature in DER is at most 72 bytes; a longer one is no signature.
            let signature = if signature.len() > usize::from(u16::MAX) { Vec::new() } else { signature };
            chunk.extend_from_slice(&signature);
            chunk.extend_from_slice(&u16::try_from(signature.len()).unwrap_or(0).to_be_bytes());
        }
        Some(chunk)
    }
}

/// Checks a backup file completely (magic, format, digest, every record's framing and the
/// count) without restoring it, and returns its header.
pub fn verify(path: &Path) -> Result<Header, BackupError> {
    read_records(path, |key, value| check_attachment(path, key, value))
}

/// Refuses an attachment record whose content does not have the SHA-256 its key names.
fn check_attachment(path: &Path, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
    match attachment_of(key) {
        Some(digest) if ring::digest::digest(&SHA256, value).as_ref() != digest.as_slice() => {
            Err(BackupError::Damaged {
                path: path.to_owned(),
                reason: format!("attachment {}: its content does not have this SHA-256", hex::encode(digest)),
            })
        }
        _ => Ok(()),
    }
}

/// Verifies the file, then hands every record to `visit` in order.
fn read_records(
    path: &Path,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), BackupError>,
) -> Result<Header, BackupError> {
    let io = |source| BackupError::Io { path: path.to_owned(), source };
    let damaged = |reason: String| BackupError::Damaged { path: path.to_owned(), reason };
    let open = || std::fs::File::open(path).map(|f| BufReader::with_capacity(1 << 20, f)).map_err(io);
    let length = std::fs::metadata(path).map_err(io)?.len();

    // The start, the digest, and only then anything that depends on lengths in the file.
    let mut file = open()?;
    let mut start = [0u8; 12];
    let got = read_up_to(&mut file, &mut start).map_err(io)?;
    Header::check_start(path, &start[..got])?;
    let format = u32::from_be_bytes([start[8], start[9], start[10], start[11]]);
    // Format 2 ends with the signature and its length, after the digest.
    let trailer = if format == UNSIGNED_FORMAT_VERSION {
        0
    } else {
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut len = [0u8; 2];
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(-2)).map_err(io)?;
        file.read_exact(&mut len).map_err(io)?;
        u64::from(u16::from_be_bytes(len)) + 2
    };
    let Some(content_length) =
        length.checked_sub(DIGEST_LEN as u64 + trailer).filter(|l| *l >= HEADER_LEN as u64)
    else {
        return Err(BackupError::DigestMismatch { path: path.to_owned() });
    };
    let mut file = open()?;
    let mut context = Context::new(&SHA256);
    let mut remaining = content_length;
    let mut buffer = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = buffer.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        file.read_exact(&mut buffer[..want]).map_err(io)?;
        context.update(&buffer[..want]);
        remaining -= want as u64;
    }
    let mut stored = [0u8; DIGEST_LEN];
    file.read_exact(&mut stored).map_err(io)?;
    if context.finish().as_ref() != stored {
        return Err(BackupError::DigestMismatch { path: path.to_owned() });
    }
    let mut signature = vec![0u8; usize::try_from(trailer.saturating_sub(2)).unwrap_or(0)];
    file.read_exact(&mut signature).map_err(io)?;

    let mut file = open()?;
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header).map_err(io)?;
    let mut header = Header::decode(path, &header)?;
    header.digest = stored;
    header.signature = (!signature.is_empty()).then_some(signature);
    let mut left = content_length - HEADER_LEN as u64;
    let mut key = Vec::new();
    let mut value = Vec::new();
    for record in 0..header.record_count {
        for part in [&mut key, &mut value] {
            let mut len = [0u8; 4];
            if left < 4 {
                return Err(damaged(format!("record {record} of {} is cut short", header.record_count)));
            }
            file.read_exact(&mut len).map_err(io)?;
            let len = u32::from_be_bytes(len);
            left -= 4;
            if u64::from(len) > left {
                return Err(damaged(format!("record {record} runs past the end of the file")));
            }
            part.resize(len as usize, 0);
            file.read_exact(part).map_err(io)?;
            left -= u64::from(len);
        }
        visit(&key, &value)?;
    }
    if left != 0 {
        return Err(damaged(format!(
            "{left} bytes after the {} records the header announces",
            header.record_count
        )));
    }
    Ok(header)
}

/// Reads until `buffer` is full or the file ends; how many bytes were read.
fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Receives a backup file: an [`AtomicFile`] (0600: it holds case data) next to the target,
/// filled chunk by chunk, verified, synced and renamed over the target only when complete.
/// Dropped before [`BackupFile::finish`], it removes the temp file, so an incomplete backup never
/// stays around looking like one.
pub struct BackupFile {
    target: PathBuf,
    file: AtomicFile,
    written: u64,
}

/// A failed step of the atomic write, naming the path it worked on.
fn file_error(error: FileError) -> BackupError {
    BackupError::Io { path: error.path, source: error.source }
}

impl BackupFile {
    /// Starts receiving the file that will be `target`.
    pub fn create(target: &Path) -> Result<Self, BackupError> {
        // `.partial`: a leftover after a crash says it is an incomplete backup.
        let file = AtomicFile::create(target, atomic_file::PRIVATE, "partial").map_err(file_error)?;
        Ok(Self { target: target.to_owned(), file, written: 0 })
    }

    /// Appends the next chunk.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BackupError> {
        self.file.write_all(chunk).map_err(file_error)?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Syncs, verifies the whole file, renames it into place and syncs the directory. Returns
    /// the header and the file's size.
    pub fn finish(mut self) -> Result<(Header, u64), BackupError> {
        self.file.sync().map_err(file_error)?;
        let header = verify(self.file.temp_path()).map_err(|error| match error {
            BackupError::DigestMismatch { .. }
            | BackupError::Damaged { .. }
            | BackupError::NotABackup { .. } => {
                BackupError::Incomplete { path: self.target.clone(), reason: error.to_string() }
            }
            other => other,
        })?;
        self.file.commit().map_err(file_error)?;
        Ok((header, self.written))
    }
}

/// What [`restore`] rebuilt.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The backup's header.
    pub header: Header,
    /// What the store now holds.
    pub imported: crate::store::Imported,
}

/// Checks a backup's signature: `Ok` if the node's key made `signature` over `digest`.
pub type VerifySignature<'a> = &'a dyn Fn(NodeCode, &[u8; DIGEST_LEN], &[u8]) -> Result<(), String>;

/// How [`restore`] checks that the backup is the node's own, unchanged.
pub struct Authenticity<'a> {
    /// The node certificate's check and the certificate's path (for messages); `None` when none
    /// was given.
    pub verify: Option<(VerifySignature<'a>, &'a Path)>,
    /// Restore a format 1 backup, which has no signature.
    pub accept_unsigned: bool,
}

/// Refuses a backup whose signature is missing (unless accepted) or does not verify.
fn check_authenticity(
    input: &Path,
    header: &Header,
    authenticity: &Authenticity<'_>,
) -> Result<(), BackupError> {
    let Some(signature) = &header.signature else {
        return if authenticity.accept_unsigned {
            Ok(())
        } else {
            Err(BackupError::Unsigned { path: input.to_owned() })
        };
    };
    let Some((verify, certificate)) = &authenticity.verify else {
        return Err(BackupError::NoCertificate { path: input.to_owned() });
    };
    verify(header.node, &header.digest, signature).map_err(|reason| BackupError::BadSignature {
        path: input.to_owned(),
        certificate: certificate.to_path_buf(),
        reason,
    })
}

/// Rebuilds a store in `target` (new or empty) from the backup file `input`. With `expect`
/// (node code and the config naming it), a backup of another node is refused; a backup whose
/// signature does not verify (see [`Authenticity`]) is refused before anything is written.
/// Offline: never opens a directory that is not empty, so never a running node's store.
pub fn restore(
    input: &Path,
    target: &Path,
    expect: Option<(NodeCode, &Path)>,
    authenticity: &Authenticity<'_>,
) -> Result<Restored, BackupError> {
    let header = verify(input)?;
    if header.schema_version > SCHEMA_VERSION {
        return Err(BackupError::NewerSchema { path: input.to_owned(), found: header.schema_version });
    }
    if let Some((expected, config)) = expect
        && expected != header.node
    {
        return Err(BackupError::WrongNode { found: header.node, expected, config: config.to_owned() });
    }
    let io = |source| BackupError::Io { path: target.to_owned(), source };
    let exists = match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::TargetNotEmpty { path: target.to_owned() });
            }
            true
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => return Err(io(error)),
    };
    check_authenticity(input, &header, authenticity)?;
    if !exists {
        std::fs::create_dir_all(target).map_err(io)?;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let store_error = |source| BackupError::Store { path: target.to_owned(), source };
    let mut importer = Importer::create(target, header.sequence_floor).map_err(store_error)?;
    let attachments = target.join(crate::store::attachments::DIRECTORY);
    let mut carried = 0;
    let again = read_records(input, |key, value| {
        let Some(digest) = attachment_of(key) else {
            return importer.insert(key, value).map_err(store_error);
        };
        check_attachment(input, key, value)?;
        if carried == 0 {
            std::fs::create_dir_all(&attachments)
                .map_err(|source| BackupError::Io { path: attachments.clone(), source })?;
        }
        carried += 1;
        atomic_file::write_private(&attachments.join(hex::encode(digest)), value).map_err(file_error)
    })?;
    if again != header {
        return Err(BackupError::Damaged {
            path: input.to_owned(),
            reason: "the file changed while it was being restored".into(),
        });
    }
    let imported = importer.finish().map_err(store_error)?;
    Ok(Restored { header, imported })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Direction, Envelope, EnvelopeKind, Message, MessageState};
    use crate::store::{Listing, Store};
    use crate::store_proto::StoredMessage;

    fn put(store: &Store, subject: &str) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        store
            .write(|changes| {
                let seq = changes.next_seq()?;
                let mut message = Message {
                    envelope: Some(Envelope {
                        id: id.to_string(),
                        destination: "FR".into(),
                        subject: subject.into(),
                        kind: EnvelopeKind::Request as i32,
                        ..Default::default()
                    }),
                    direction: Direction::Outbound as i32,
                    ..Default::default()
                };
                crate::domain::lifecycle::enter(
                    &mut message,
                    MessageState::Queued,
                    crate::domain::timestamp::now(),
                    "t".into(),
                );
                changes.put(StoredMessage { message: Some(message), seq, ..Default::default() })
            })
            .unwrap();
        id
    }

    /// A stand-in for the node key (the real one is in `trust`, above the store): the digest
    /// reversed.
    fn test_sign() -> SignDigest {
        Box::new(|digest| digest.iter().rev().copied().collect())
    }

    fn test_verify(_: NodeCode, digest: &[u8; DIGEST_LEN], signature: &[u8]) -> Result<(), String> {
        let expected: Vec<u8> = digest.iter().rev().copied().collect();
        if signature == expected { Ok(()) } else { Err("not the test key's".into()) }
    }

    fn checked() -> Authenticity<'static> {
        Authenticity { verify: Some((&test_verify, Path::new("node.pem"))), accept_unsigned: false }
    }

    fn backup_of(store: &Store, path: &Path) {
        let mut file = BackupFile::create(path).unwrap();
        for chunk in
            Chunks::new(store.snapshot().unwrap(), "VN".parse().unwrap(), SystemTime::now(), test_sign())
        {
            file.write(&chunk).unwrap();
        }
        file.finish().unwrap();
    }

    #[tokio::test]
    async fn round_trip_keeps_every_record_and_the_sequence_continues_above_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live")).unwrap();
        // Enough records for several chunks.
        let body = "x".repeat(1000);
        let mut ids: Vec<_> = (0..600).map(|i| put(&store, &format!("{i} {body}"))).collect();
        store.persist().await.unwrap();
        // After a reopen sled's sequence numbers jump by millions: the copy must continue above them.
        drop(store);
        let store = Store::open(&dir.path().join("live")).unwrap();
        ids.push(put(&store, "after a reopen"));
        store.persist().await.unwrap();
        let file = dir.path().join("vn.backup");
        backup_of(&store, &file);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        let restored = restore(&file, &dir.path().join("restored"), None, &checked()).unwrap();
        assert_eq!(restored.header.node.as_str(), "VN");
        assert_eq!(restored.imported.messages, 601);
        assert!(restored.header.sequence_floor > 1_000_000, "{:?}", restored.header);
        // Reopened more than once, as a node is: sled's own counter checks hold.
        drop(Store::open(&dir.path().join("restored")).unwrap());
        let copy = Store::open(&dir.path().join("restored")).unwrap();
        for id in &ids {
            assert_eq!(copy.get(*id).unwrap(), store.get(*id).unwrap());
        }
        let next = copy.write(|c| c.next_seq()).unwrap();
        let floor = restored.header.sequence_floor;
        assert!(next > floor, "restored store hands out {next}, the copy's sequence floor is {floor}");
        let newer = put(&copy, "after the restore");
        let listed = copy.list(Listing::Outbox, 1000, |_| true).unwrap();
        assert_eq!(listed.len(), 602, "a new message must not overwrite an old listing key");
        assert_eq!(crate::store::view(&listed[0]).envelope.unwrap().id, newer.to_string());
    }

    /// Stores a message listing an uploaded attachment of `content`; its digest.
    fn put_with_attachment(store: &Store, content: &[u8]) -> [u8; 32] {
        let mut upload = store.begin_upload().unwrap();
        upload.write(content).unwrap();
        let (digest, size) = upload.finish().unwrap();
        let id = put(store, "with an attachment");
        let mut stored = store.get(id).unwrap().unwrap();
        let envelope = stored.message.as_mut().unwrap().envelope.as_mut().unwrap();
        envelope.id = uuid::Uuid::now_v7().to_string();
        envelope.attachments.push(crate::proto::Attachment {
            name: "a.bin".into(),
            media_type: "application/octet-stream".into(),
            size_bytes: size,
            sha256: digest.to_vec(),
        });
        store
            .write(|changes| {
                stored.seq = changes.next_seq()?;
                changes.put(stored)
            })
            .unwrap();
        digest
    }

    #[tokio::test]
    async fn a_backup_carries_the_attachments_messages_list_and_restore_checks_their_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live")).unwrap();
        // Larger than a chunk, so the content spans several.
        let content: Vec<u8> = (0..3 * CHUNK_BYTES + 5).map(|i| (i % 251) as u8).collect();
        let digest = put_with_attachment(&store, &content);
        let empty = put_with_attachment(&store, b"");
        // An upload no message lists is not carried.
        let mut unused = store.begin_upload().unwrap();
        unused.write(b"unused").unwrap();
        let (unused, _) = unused.finish().unwrap();
        store.persist().await.unwrap();
        let file = dir.path().join("vn.backup");
        backup_of(&store, &file);

        let target = dir.path().join("restored");
        restore(&file, &target, None, &checked()).unwrap();
        let restored = Store::open(&target).unwrap();
        assert_eq!(std::fs::read(restored.attachment_path(&digest)).unwrap(), content);
        assert_eq!(std::fs::read(restored.attachment_path(&empty)).unwrap(), b"");
        assert!(!restored.attachment_path(&unused).exists(), "an unused upload is not carried");

        // Content changed on the disk before the backup: the file's own digest holds, the
        // attachment's does not, and restore names it.
        let mut changed = content.clone();
        changed[10] ^= 1;
        std::fs::write(store.attachment_path(&digest), &changed).unwrap();
        let chunks: Vec<u8> =
            Chunks::new(store.snapshot().unwrap(), "VN".parse().unwrap(), SystemTime::now(), test_sign())
                .flatten()
                .collect();
        // `backup` checks the file it writes, and refuses it.
        let mut taken = BackupFile::create(&dir.path().join("taken.backup")).unwrap();
        taken.write(&chunks).unwrap();
        let error = taken.finish().unwrap_err();
        assert!(error.to_string().contains(&format!("attachment {}", hex::encode(digest))), "{error}");
        // A file written some other way: restore refuses it.
        let file = dir.path().join("changed.backup");
        std::fs::write(&file, &chunks).unwrap();
        let error = restore(&file, &dir.path().join("refused"), None, &checked()).unwrap_err();
        assert!(error.to_string().contains(&format!("attachment {}", hex::encode(digest))), "{error}");
        assert!(!dir.path().join("refused").exists(), "refused before anything is written");
    }

    /// Per message id: its timeline length (from `m` records) and its events (`e` records), and
    /// the newest event's number against their count: a copy with a write by halves has them
    /// disagree.
    fn check_whole(snapshot: &Snapshot) {
        use prost::Message as _;
        let mut timelines = std::collections::HashMap::new();
        let mut events = std::collections::HashMap::<String, usize>::new();
        let (mut counter, mut event_records) = (0, 0);
        for index in 0..snapshot.len() {
            let (key, value) = snapshot.record(index).unwrap();
            match key.first() {
                Some(b'm') => {
                    let stored = StoredMessage::decode(value).unwrap();
                    let message = stored.message.unwrap();
                    timelines.insert(message.envelope.unwrap().id, message.timeline.len());
                }
                Some(b'e') => {
                    counter = counter.max(u64::from_be_bytes(key[1..9].try_into().unwrap()));
                    *events
                        .entry(crate::proto::WatchResponse::decode(value).unwrap().message_id)
                        .or_default() += 1;
                    event_records += 1;
                }
                _ => {}
            }
        }
        assert_eq!(counter, event_records, "the event counter and the events");
        for (id, length) in &timelines {
            assert_eq!(events.get(id).copied().unwrap_or(0), *length, "events of {id}");
        }
    }

    #[test]
    fn snapshots_taken_while_writers_run_hold_whole_writes_only() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        const MOVES: usize = 400;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let done = std::sync::Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (store, done) = (store.clone(), std::sync::Arc::clone(&done));
                std::thread::spawn(move || {
                    for _ in 0..MOVES {
                        // Each write puts a message and its event; the next moves it on.
                        let id = put(&store, "moving");
                        store
                            .write(|changes| {
                                let mut stored = changes.get(id)?.unwrap();
                                let message = stored.message.as_mut().unwrap();
                                let now = crate::domain::timestamp::now();
                                crate::domain::lifecycle::enter(
                                    message,
                                    MessageState::WaitingRetry,
                                    now,
                                    "refused".into(),
                                );
                                changes.put(stored)
                            })
                            .unwrap();
                    }
                    done.fetch_add(1, SeqCst);
                })
            })
            .collect();
        let mut during = 0;
        while done.load(SeqCst) < 2 {
            let snapshot = store.snapshot().unwrap();
            check_whole(&snapshot);
            during += 1;
            // The lock is not fair: let the writers in between two copies.
            std::thread::yield_now();
        }
        for writer in writers {
            writer.join().unwrap();
        }
        check_whole(&store.snapshot().unwrap());
        assert!(during >= 5, "only {during} copies were taken while the writers ran");
    }

    #[test]
    fn a_stream_that_ends_early_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live")).unwrap();
        let body = "x".repeat(1000);
        for i in 0..600 {
            put(&store, &format!("{i} {body}"));
        }
        let chunks: Vec<_> =
            Chunks::new(store.snapshot().unwrap(), "VN".parse().unwrap(), SystemTime::now(), test_sign())
                .collect();
        assert!(chunks.len() > 1, "several chunks");
        let target = dir.path().join("vn.backup");
        let mut file = BackupFile::create(&target).unwrap();
        for chunk in &chunks[..chunks.len() - 1] {
            file.write(chunk).unwrap();
        }
        let error = file.finish().unwrap_err();
        assert!(matches!(error, BackupError::Incomplete { .. }), "{error}");
        assert!(error.to_string().contains("take the backup again"), "{error}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("live")], "neither the target nor the temp file");
    }

    #[test]
    fn damaged_and_foreign_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("live")).unwrap();
        put(&store, "one");
        let file = dir.path().join("vn.backup");
        backup_of(&store, &file);
        let good = std::fs::read(&file).unwrap();

        let mut flipped = good.clone();
        flipped[HEADER_LEN + 5] ^= 0x01;
        std::fs::write(&file, &flipped).unwrap();
        let error = verify(&file).unwrap_err();
        assert!(matches!(error, BackupError::DigestMismatch { .. }), "{error}");
        assert!(error.to_string().contains("SHA-256 does not match"), "{error}");

        std::fs::write(&file, &good[..good.len() - 10]).unwrap();
        assert!(matches!(verify(&file).unwrap_err(), BackupError::DigestMismatch { .. }));

        let mut newer = good.clone();
        newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
        std::fs::write(&file, &newer).unwrap();
        let error = verify(&file).unwrap_err();
        assert!(matches!(error, BackupError::UnknownFormat { found, .. } if found == FORMAT_VERSION + 1));

        std::fs::write(&file, b"hello").unwrap();
        assert!(matches!(verify(&file).unwrap_err(), BackupError::NotABackup { .. }));

        // A newer schema, with a digest that matches (made by a newer hanoi247).
        let signature_len = usize::from(u16::from_be_bytes([good[good.len() - 2], good[good.len() - 1]]));
        let content = &good[..good.len() - 2 - signature_len - DIGEST_LEN];
        let mut schema = content.to_vec();
        schema[12..16].copy_from_slice(&(SCHEMA_VERSION + 1).to_be_bytes());
        let digest = ring::digest::digest(&SHA256, &schema);
        schema.extend_from_slice(digest.as_ref());
        schema.extend_from_slice(&good[good.len() - 2 - signature_len..]);
        std::fs::write(&file, &schema).unwrap();
        let error = restore(&file, &dir.path().join("new"), None, &checked()).unwrap_err();
        assert!(matches!(error, BackupError::NewerSchema { .. }), "{error}");
        assert!(!dir.path().join("new").exists(), "nothing is created for a refused backup");

        std::fs::write(&file, &good).unwrap();
        let error = restore(
            &file,
            &dir.path().join("x"),
            Some(("FR".parse().unwrap(), Path::new("fr.toml"))),
            &checked(),
        )
        .unwrap_err();
        assert!(matches!(error, BackupError::WrongNode { .. }), "{error}");

        // Records changed and the SHA-256 recomputed: the signature no longer verifies.
        let mut forged = content.to_vec();
        forged[HEADER_LEN + 5] ^= 0x01;
        let digest = ring::digest::digest(&SHA256, &forged);
        forged.extend_from_slice(digest.as_ref());
        forged.extend_from_slice(&good[good.len() - 2 - signature_len..]);
        std::fs::write(&file, &forged).unwrap();
        assert!(verify(&file).is_ok(), "the SHA-256 alone cannot tell");
        let error = restore(&file, &dir.path().join("forged"), None, &checked()).unwrap_err();
        assert!(matches!(error, BackupError::BadSignature { .. }), "{error}");
        assert!(!dir.path().join("forged").exists(), "nothing is created for a refused backup");

        // Format 1 (no signature): refused unless accepted.
        let mut unsigned = content.to_vec();
        unsigned[8..12].copy_from_slice(&UNSIGNED_FORMAT_VERSION.to_be_bytes());
        let digest = ring::digest::digest(&SHA256, &unsigned);
        unsigned.extend_from_slice(digest.as_ref());
        std::fs::write(&file, &unsigned).unwrap();
        let error = restore(&file, &dir.path().join("old"), None, &checked()).unwrap_err();
        assert!(matches!(error, BackupError::Unsigned { .. }), "{error}");
        assert!(error.to_string().contains("--accept-unsigned"), "{error}");
        let accepted = Authenticity { accept_unsigned: true, ..checked() };
        let restored = restore(&file, &dir.path().join("old"), None, &accepted).unwrap();
        assert_eq!(restored.imported.messages, 1);
    }
}
