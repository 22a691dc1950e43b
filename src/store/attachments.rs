//! Attachments' content: files named by their SHA-256 (lowercase hex) under
//! `<data>/attachments`, never in sled, so large files never sit in sled's page cache or its log.
//! sled keeps only small keys about them:
//!
//! | key | value |
//! | --- | --- |
//! | `u` sha256(32) | when it was last uploaded (seconds since the epoch, 8 bytes big-endian) |
//! | `x` sha256(32) message-id(16) | empty — the message lists the attachment |
//!
//! An upload is written to a temp file, synced, renamed to its digest and the directory synced
//! ([`crate::atomic_file`]) before the caller hears its digest; a temp file that is not renamed
//! is removed (a crash's leftover by [`Store::remove_unreferenced_uploads`]). A file received
//! from a peer grows under `incoming/<hex>.partial`, synced after every piece, so its length is
//! what the sender resumes from after a cut or a restart at either end; it becomes the
//! digest-named file only once its content has that digest.
//!
//! Invariant: a message's `x` keys are written in the batch that first stores it
//! ([`Changes::put`]), and an upload's file is removed only under the writer lock with its `u`
//! key and only while no `x` key names it, so no stored message ever lists a removed upload.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::time::SystemTime;

use uuid::Uuid;

use super::{Changes, Store, StoreError, prefixed};
use crate::atomic_file::{AtomicFile, FileError, PRIVATE};
use crate::domain::validation::FieldError;

/// The directory under the data directory that holds attachments.
pub const DIRECTORY: &str = "attachments";
/// Where files from peers grow until complete.
const INCOMING: &str = "incoming";
/// The name every upload's temp file starts from (`.upload.<random>.partial`).
const UPLOAD_NAME: &str = "upload";

/// An attachment's SHA-256.
pub type Digest = [u8; 32];

/// The digest in `bytes`, when it is one (32 bytes).
pub fn digest_of(bytes: &[u8]) -> Option<Digest> {
    bytes.try_into().ok()
}

impl From<FileError> for StoreError {
    fn from(error: FileError) -> Self {
        StoreError::Io(std::io::Error::new(error.source.kind(), error.to_string()))
    }
}

/// An upload being written: bytes are hashed as they come; [`Upload::finish`] makes the file
/// durable under its digest. Dropped before, it leaves nothing.
pub struct Upload {
    file: AtomicFile,
    hasher: ring::digest::Context,
    size: u64,
    dir: PathBuf,
}

impl Upload {
    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Syncs the file, renames it to its digest and syncs the directory: the content is on the
    /// device when this returns. Returns the digest and the size.
    pub fn finish(self) -> Result<(Digest, u64), StoreError> {
        let Self { file, hasher, size, dir } = self;
        let mut digest = [0; 32];
        digest.copy_from_slice(hasher.finish().as_ref());
        file.commit_as(&dir.join(hex::encode(digest)))?;
        Ok((digest, size))
    }
}

impl Store {
    /// The directory of attachments (created when first needed).
    pub fn attachments_dir(&self) -> PathBuf {
        self.dir.join(DIRECTORY)
    }

    /// Where the content with `digest` is (whether or not it is there).
    pub fn attachment_path(&self, digest: &Digest) -> PathBuf {
        self.attachments_dir().join(hex::encode(digest))
    }

    /// The size of the content with `digest`, `None` when this node does not hold it.
    pub fn attachment_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match std::fs::metadata(self.attachment_path(digest)) {
            Ok(metadata) => Ok(Some(metadata.len())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Opens the content with `digest` for reading, `None` when this node does not hold it.
    pub fn open_attachment(&self, digest: &Digest) -> Result<Option<std::fs::File>, StoreError> {
        match std::fs::File::open(self.attachment_path(digest)) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Starts an upload (see [`Upload`]).
    pub fn begin_upload(&self) -> Result<Upload, StoreError> {
        let dir = self.attachments_dir();
        std::fs::create_dir_all(&dir)?;
        let file = AtomicFile::create(&dir.join(UPLOAD_NAME), PRIVATE, "partial")?;
        Ok(Upload { file, hasher: ring::digest::Context::new(&ring::digest::SHA256), size: 0, dir })
    }

    /// Whether a stored message lists `digest`.
    pub fn attachment_referenced(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.db()?.scan_prefix(prefixed(b'x', digest)).next().transpose()?.is_some())
    }

    /// Removes the uploads (and contents from peers) recorded before `before` that no message
    /// lists (file and `u` key), upload temp files left by a crash and partial files from peers
    /// not written to since `before`. Returns how many uploads were removed.
    pub fn remove_unreferenced_uploads(&self, before: SystemTime) -> Result<usize, StoreError> {
        let cutoff = before.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut old = Vec::new();
        for entry in self.db()?.scan_prefix([b'u']) {
            let (key, value) = entry?;
            let at = value.get(..8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
            if let Some(digest) = key.get(1..).and_then(digest_of)
                && at < cutoff
            {
                old.push(digest);
            }
        }
        let mut removed = 0;
        for digest in old {
            let gone = self.write(|changes| -> Result<bool, StoreError> {
                if changes.store.attachment_referenced(&digest)? {
                    // Listed by a message: kept for good; the `u` key has done its work.
                    changes.batch.remove(prefixed(b'u', &digest));
                    return Ok(false);
                }
                // Under the writer lock: no `Submit` can list it between this check and the
                // removal (it checks the file under the same lock).
                match std::fs::remove_file(changes.store.attachment_path(&digest)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error.into()),
                }
                changes.batch.remove(prefixed(b'u', &digest));
                Ok(true)
            })?;
            removed += usize::from(gone);
        }
        self.remove_stale_temp_files(before)?;
        Ok(removed)
    }

    /// Removes upload temp files not written to since `before` (a crash's leftovers).
    fn remove_stale_temp_files(&self, before: SystemTime) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(self.attachments_dir()) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let prefix = format!(".{UPLOAD_NAME}.");
        let stale = |entry: &std::fs::DirEntry| {
            entry.metadata().and_then(|m| m.modified()).is_ok_and(|at| at < before)
        };
        for entry in entries {
            let entry = entry?;
            if stale(&entry) && entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        // Partial files from peers that stopped sending (the sender starts again from 0).
        if let Ok(entries) = std::fs::read_dir(self.attachments_dir().join(INCOMING)) {
            for entry in entries.flatten() {
                if stale(&entry) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

impl Changes<'_> {
    /// Records that `digest` was uploaded at `at` (the grace period of an unreferenced upload
    /// starts again).
    pub fn record_upload(&mut self, digest: &Digest, at: SystemTime) {
        let seconds = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.batch.insert(prefixed(b'u', digest), seconds.to_be_bytes());
    }

    /// The size of the content with `digest`, read under the writer lock (so that the removal of
    /// unreferenced uploads cannot remove it before this operation lists it).
    pub fn attachment_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.store.attachment_size(digest)
    }

    /// Records that message `id` lists `digest` (see [`Changes::put`]).
    pub(super) fn reference_attachment(&mut self, digest: &Digest, id: Uuid) {
        let mut key = prefixed(b'x', digest);
        key.extend_from_slice(id.as_bytes());
        self.batch.insert(key, []);
    }

    /// Drops message `id`'s references to its attachments (its content was removed): content no
    /// other message lists is then removed with the unused uploads at the next retention pass
    /// (its `u` key is dated at the epoch, so no grace period applies).
    pub(super) fn release_attachments(&mut self, envelope: &crate::proto::Envelope, id: Uuid) {
        for attachment in &envelope.attachments {
            if let Some(digest) = digest_of(&attachment.sha256) {
                let mut key = prefixed(b'x', &digest);
                key.extend_from_slice(id.as_bytes());
                self.batch.remove(key);
                self.record_upload(&digest, SystemTime::UNIX_EPOCH);
            }
        }
    }
}

impl Store {
    /// Refuses (naming the field) an envelope that lists an attachment this node does not hold whole.
    /// Free for an envelope without attachments.
    pub fn check_held(&self, envelope: &crate::proto::Envelope) -> Result<(), FieldError> {
        for (i, attachment) in envelope.attachments.iter().enumerate() {
            let field = format!("attachments[{i}].sha256");
            let Some(digest) = digest_of(&attachment.sha256) else {
                return Err(FieldError::new(field, "must be exactly 32 bytes"));
            };
            match self.attachment_size(&digest) {
                Ok(Some(size)) if size == attachment.size_bytes => {}
                Ok(Some(size)) => {
                    return Err(FieldError::new(
                        format!("attachments[{i}].size_bytes"),
                        format!(
                            "{} bytes listed, the content with this digest has {size}",
                            attachment.size_bytes
                        ),
                    ));
                }
                Ok(None) => {
                    return Err(FieldError::new(
                        field,
                        "this node does not hold the attachment's content yet: send it first (PutAttachment)",
                    ));
                }
                Err(error) => {
                    return Err(FieldError::new(field, format!("cannot be read here now: {error}")));
                }
            }
        }
        Ok(())
    }
}

/// Where a file from a peer stands at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// The whole content is here under its digest.
    Complete,
    /// This many bytes are on the device; the sender goes on from there.
    Partial(u64),
}

impl Store {
    /// The partial file of content `digest` from a peer.
    fn incoming_path(&self, digest: &Digest) -> PathBuf {
        self.attachments_dir().join(INCOMING).join(format!("{}.partial", hex::encode(digest)))
    }

    /// Where the content `digest` from a peer stands.
    pub fn incoming(&self, digest: &Digest) -> Result<Incoming, StoreError> {
        if self.attachment_size(digest)?.is_some() {
            return Ok(Incoming::Complete);
        }
        match std::fs::metadata(self.incoming_path(digest)) {
            Ok(metadata) => Ok(Incoming::Partial(metadata.len())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Incoming::Partial(0)),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes `data` at `offset` of the partial file of `digest` (which must be its length:
    /// anything else is refused with the length, so the sender resumes from there) and syncs
    /// it. Once `size` bytes are there, checks the digest: the file becomes the content named by
    /// it (synced, renamed, directory synced), or, when the bytes have another digest, the
    /// partial file is removed and `Err(Mismatch)` tells the sender to start again.
    pub fn append_incoming(
        &self,
        digest: &Digest,
        size: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Incoming, IncomingError> {
        let current = self.incoming(digest)?;
        let Incoming::Partial(length) = current else { return Ok(current) };
        if offset != length {
            return Err(IncomingError::Offset(length));
        }
        if length + data.len() as u64 > size {
            return Err(IncomingError::TooLong { size });
        }
        let path = self.incoming_path(digest);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::from)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(PRIVATE)
            .open(&path)
            .map_err(StoreError::from)?;
        file.write_all(data).map_err(StoreError::from)?;
        file.sync_data().map_err(StoreError::from)?;
        if length == 0
            && let Some(dir) = path.parent()
        {
            // A new file: its directory entry must survive a crash too, or the sender's resume
            // point would be gone.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::from)?;
        }
        let length = length + data.len() as u64;
        if length < size {
            return Ok(Incoming::Partial(length));
        }
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut read = std::fs::File::open(&path).map_err(StoreError::from)?;
        read.rewind().map_err(StoreError::from)?;
        let mut buffer = vec![0; 256 * 1024];
        loop {
            let n = read.read(&mut buffer).map_err(StoreError::from)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        if hasher.finish().as_ref() != digest.as_slice() {
            std::fs::remove_file(&path).map_err(StoreError::from)?;
            return Err(IncomingError::Mismatch);
        }
        let target = self.attachment_path(digest);
        std::fs::rename(&path, &target).map_err(StoreError::from)?;
        std::fs::File::open(self.attachments_dir()).and_then(|d| d.sync_all()).map_err(StoreError::from)?;
        Ok(Incoming::Complete)
    }
}

/// Why a piece of a file from a peer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    /// The piece does not start where the partial file ends.
    #[error("offset: this node holds {0} bytes of the attachment; send from there")]
    Offset(u64),
    /// The piece goes beyond the attachment's size.
    #[error("data: the attachment has {size} bytes; the piece goes beyond them")]
    TooLong {
        /// The attachment's size.
        size: u64,
    },
    /// The whole content does not have the digest it was sent under: it was removed.
    #[error("sha256: the content received does not have this digest; it was discarded, send it again")]
    Mismatch,
    /// The store could not write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Digest {
        digest_of(ring::digest::digest(&ring::digest::SHA256, data).as_ref()).unwrap()
    }

    #[test]
    fn a_file_from_a_peer_grows_only_at_its_end_and_is_named_only_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"0123456789".repeat(10);
        let digest = sha256(&content);
        assert_eq!(store.incoming(&digest).unwrap(), Incoming::Partial(0));
        assert_eq!(store.append_incoming(&digest, 100, 0, &content[..40]).unwrap(), Incoming::Partial(40));
        // Not where the file ends: the answer says where it does; nothing written.
        assert!(matches!(
            store.append_incoming(&digest, 100, 10, &content[10..20]),
            Err(IncomingError::Offset(40))
        ));
        assert!(matches!(
            store.append_incoming(&digest, 100, 40, &[0; 61]),
            Err(IncomingError::TooLong { size: 100 })
        ));
        assert_eq!(store.incoming(&digest).unwrap(), Incoming::Partial(40));
        assert_eq!(store.attachment_size(&digest).unwrap(), None, "not named before it is whole");
        assert_eq!(store.append_incoming(&digest, 100, 40, &content[40..]).unwrap(), Incoming::Complete);
        assert_eq!(std::fs::read(store.attachment_path(&digest)).unwrap(), content);
        assert_eq!(store.incoming(&digest).unwrap(), Incoming::Complete);

        // Other bytes under a digest: discarded whole, to be sent again from 0.
        let claimed = sha256(b"something else");
        assert!(matches!(store.append_incoming(&claimed, 4, 0, b"abcd"), Err(IncomingError::Mismatch)));
        assert_eq!(store.incoming(&claimed).unwrap(), Incoming::Partial(0));
        assert_eq!(store.attachment_size(&claimed).unwrap(), None);
    }

    #[test]
    fn an_upload_dropped_before_it_is_finished_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut upload = store.begin_upload().unwrap();
        upload.write(b"half").unwrap();
        drop(upload);
        assert_eq!(std::fs::read_dir(store.attachments_dir()).unwrap().count(), 0);
        let mut upload = store.begin_upload().unwrap();
        upload.write(b"whole").unwrap();
        let (digest, size) = upload.finish().unwrap();
        assert_eq!((digest, size), (sha256(b"whole"), 5));
        assert_eq!(std::fs::read(store.attachment_path(&digest)).unwrap(), b"whole");
    }
}
