//! The one way this node writes a file that must never be seen half-written nor, for a moment,
//! with a wider mode than intended: private keys, PKCS#12 files and their passwords, backups
//! (all [`PRIVATE`]), and certificates, CRLs, the signed directory and public keys ([`PUBLIC`]).
//!
//! A file is written to a fresh temp file beside its target (same directory, so the rename stays
//! on one file system), created with its final mode, synced, renamed over the target, and then
//! the directory is synced so that the rename survives a crash. Until then the target keeps its
//! old contents; a temp file that is not renamed is removed.
//!
//! Rank: beside `config`, above `domain` (which does no I/O) and below `store` and `trust`, which
//! both write through it (they are siblings and may not import each other). It imports nothing of
//! this crate.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of a file only its owner may read: keys, passwords, case data.
pub const PRIVATE: u32 = 0o600;
/// Mode of a file anyone may read: certificates, CRLs, the signed directory, public keys.
pub const PUBLIC: u32 = 0o644;

/// A step of an atomic write failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    /// The path the failing step worked on: the temp file, the target or its directory.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

/// A file being written: a temp file beside `target` until [`AtomicFile::commit`] renames it into
/// place. Dropped before that, it removes the temp file.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    /// Empty once renamed: nothing left to clean up.
    temp: PathBuf,
    /// `None` once synced and closed.
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts the file that will be `target`, with `mode` from the moment it exists; the temp
    /// file is named `.<target name>.<random>.<suffix>`, so a leftover says what it was.
    pub fn create(target: &Path, mode: u32, suffix: &str) -> Result<Self, FileError> {
        let name = target.file_name().ok_or_else(|| FileError {
            path: target.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path does not name a file"),
        })?;
        // A random name and create_new: an existing file (a leftover, or another writer's) would
        // keep its own, possibly wider, mode, and a private file must never be readable by others.
        let temp = directory_of(target).join(format!(
            ".{}.{:016x}.{suffix}",
            name.to_string_lossy(),
            fastrand::u64(..)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(|source| FileError { path: temp.clone(), source })?;
        Ok(Self { target: target.to_owned(), temp, file: Some(BufWriter::new(file)) })
    }

    /// The temp file, to read back what was written (after [`AtomicFile::sync`]).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        let temp = &self.temp;
        let file = self.file.as_mut().ok_or_else(|| FileError {
            path: temp.clone(),
            source: std::io::Error::other("already synced: nothing more can be written"),
        })?;
        file.write_all(bytes).map_err(|source| FileError { path: temp.clone(), source })
    }

    /// Flushes, syncs and closes the temp file, so that what is read back from
    /// [`AtomicFile::temp_path`] is what the disk holds; nothing more can be written.
    pub fn sync(&mut self) -> Result<(), FileError> {
        let Some(file) = self.file.take() else { return Ok(()) };
        let io = |source| FileError { path: self.temp.clone(), source };
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }

    /// Syncs (unless [`AtomicFile::sync`] did), renames the temp file over the target and syncs
    /// the directory.
    pub fn commit(mut self) -> Result<(), FileError> {
        self.sync()?;
        std::fs::rename(&self.temp, &self.target)
            .map_err(|source| FileError { path: self.target.clone(), source })?;
        // Renamed: the temp file is the target now, Drop must not remove it.
        self.temp = PathBuf::new();
        let dir = directory_of(&self.target);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| FileError { path: dir.to_owned(), source })
    }
}

impl AtomicFile {
    /// [`AtomicFile::commit`] under another name in the same directory: for content whose name
    /// is known only once it is written (a file named by its digest).
    pub fn commit_as(mut self, target: &Path) -> Result<(), FileError> {
        if directory_of(target) != directory_of(&self.target) {
            return Err(FileError {
                path: target.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not in the temp file's directory: the rename would not be atomic",
                ),
            });
        }
        self.target = target.to_owned();
        self.commit()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            // Best effort: the temp file may not exist, and the error that got us here is the one
            // to report; a half-written file must not stay around.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `contents` to `path` atomically with `mode` (see the module docs).
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let mut file = AtomicFile::create(path, mode, "tmp")?;
    file.write_all(contents)?;
    file.commit()
}

/// Writes `contents` to `path` atomically, readable by its owner only ([`PRIVATE`]).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    write(path, contents, PRIVATE)
}

/// The directory holding `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_private_file_replaces_a_wider_one_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"secret").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(names(dir.path()), ["k.key"]);
    }

    #[test]
    fn a_file_dropped_before_commit_leaves_the_target_alone_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vn.backup");
        std::fs::write(&path, "previous").unwrap();
        let mut file = AtomicFile::create(&path, PRIVATE, "partial").unwrap();
        file.write_all(b"half").unwrap();
        file.sync().unwrap();
        assert_eq!(std::fs::read(file.temp_path()).unwrap(), b"half");
        assert!(file.write_all(b"more").is_err(), "a synced file takes no more bytes");
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
        assert_eq!(names(dir.path()), ["vn.backup"]);
    }

    #[test]
    fn a_file_committed_under_another_name_appears_only_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = AtomicFile::create(&dir.path().join("upload"), PRIVATE, "partial").unwrap();
        file.write_all(b"content").unwrap();
        file.commit_as(&dir.path().join("ab12")).unwrap();
        assert_eq!(names(dir.path()), ["ab12"]);
        let elsewhere = dir.path().join("sub");
        std::fs::create_dir(&elsewhere).unwrap();
        let file = AtomicFile::create(&dir.path().join("upload"), PRIVATE, "partial").unwrap();
        assert!(file.commit_as(&elsewhere.join("cd34")).is_err(), "only within one directory");
        assert_eq!(names(dir.path()), ["ab12", "sub"]);
    }

    #[test]
    fn failures_name_the_path_of_the_failing_step() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("k.key");
        let error = write_private(&missing, b"secret").unwrap_err();
        assert!(error.path.starts_with(dir.path().join("no-such-dir")), "{error}");
        // Renaming over a directory fails after the temp file was written: it is removed.
        let taken = dir.path().join("taken");
        std::fs::create_dir_all(taken.join("inside")).unwrap();
        assert_eq!(write(&taken, b"pem", PUBLIC).unwrap_err().path, taken);
        assert_eq!(names(dir.path()), ["taken"]);
        assert_eq!(write_private(Path::new("/"), b"secret").unwrap_err().path, Path::new("/"));
    }
}
