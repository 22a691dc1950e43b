//! The write-ahead log: where a store write becomes durable. Every write of the store is appended
//! here as one record with a log sequence number (LSN); concurrent writes that wait for
//! durability together are written as one *frame* (length-prefixed, CRC-checked) and made durable
//! by one `fdatasync`. sled holds the same changes in memory and is checkpointed in the background;
//! segments whose records sled holds durably are deleted ([`Wal::cut`]).
//!
//! On disk: `wal/<first LSN, 20 digits>.log` segments of up to [`SEGMENT_BYTES`], zero-filled
//! [`ALLOCATE_BYTES`] at a time ahead of the frames (so most appends change neither the file's
//! size nor its allocation, and their `fdatasync` writes only the data), holding frames back to
//! back:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `H247` |
//! | 4 | payload length, little endian |
//! | 4 | CRC-32 of everything after this field (first LSN, count, payload) |
//! | 8 | first LSN of the frame |
//! | 4 | number of records |
//! | … | records, each a 4-byte length and its bytes |
//!
//! **Invariant:** a frame is written only after every earlier frame was synced, so only the last
//! frame of the last segment can be torn by a crash. Recovery drops such a frame with a WARN (it
//! was never acknowledged) and truncates it away; a bad frame followed by a good one anywhere is
//! damage to acknowledged data, and recovery stops with an error naming the segment and offset —
//! never silent loss.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size of one segment file. A frame larger than a segment gets a segment of its own size.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// How far ahead of the frames a segment is zero-filled at a time. Growing a file changes its
/// size, which an `fdatasync` must then write too; doing it a MiB at a time keeps that off most
/// appends, and a device that is full refuses the growth before any frame is lost.
pub const ALLOCATE_BYTES: u64 = 1024 * 1024;
const MAGIC: [u8; 4] = *b"H247";
const HEADER: usize = 24;
/// Larger payload lengths are not believed (a damaged length field), whatever the file holds.
const MAX_FRAME: u64 = 1 << 30;

/// The log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The device refused a read or write.
    #[error("write-ahead log {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A frame that was acknowledged is damaged: later frames follow it.
    #[error(
        "write-ahead log {path}: the frame at byte {offset} is damaged ({why}) and later frames follow it, so acknowledged writes would be lost; restore the store from a backup or from its peers (docs: RUNBOOK, restore)"
    )]
    Damaged {
        /// The segment file.
        path: String,
        /// Where the damaged frame starts.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
    /// Records are missing between two frames or segments.
    #[error("write-ahead log {path}: byte {offset} holds LSN {found}, but LSN {expected} was expected")]
    Gap {
        /// The segment file.
        path: String,
        /// The frame's offset.
        offset: u64,
        /// The LSN that should follow.
        expected: u64,
        /// The LSN found.
        found: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.display().to_string(), source }
}

/// What recovery found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Records handed to `apply` (those after the checkpoint).
    pub replayed: u64,
    /// The LSN the next append gets.
    pub next_lsn: u64,
    /// Where a torn final frame was cut away (segment and offset), if one was.
    pub torn_tail: Option<(PathBuf, u64)>,
}

/// Records waiting for the next sync, already laid out as one frame (header space first).
struct Pending {
    frame: Vec<u8>,
    first_lsn: u64,
    count: u32,
    next_lsn: u64,
}

impl Pending {
    fn new(next_lsn: u64) -> Self {
        Self { frame: vec![0; HEADER], first_lsn: next_lsn, count: 0, next_lsn }
    }
}

/// The segment being appended to.
struct Segment {
    file: File,
    path: PathBuf,
    first_lsn: u64,
    /// Bytes of frames written.
    written: u64,
    /// Bytes zero-filled so far (the file's size).
    allocated: u64,
    /// Its largest size.
    capacity: u64,
}

/// One segment on disk: its first LSN and path.
#[derive(Debug, Clone)]
struct SegmentName {
    first_lsn: u64,
    path: PathBuf,
}

/// A store's write-ahead log.
pub struct Wal {
    dir: PathBuf,
    pending: Mutex<Pending>,
    /// Held while a frame is written and synced: one writer of the file at a time.
    current: Mutex<Segment>,
    /// Every segment on disk, oldest first (the current one last).
    segments: Mutex<Vec<SegmentName>>,
}

impl Wal {
    /// Opens the log in `dir` (made if missing), hands every record after `checkpoint` to `apply`
    /// in LSN order, cuts away a torn final frame, and starts a new segment for appends.
    pub fn recover(
        dir: &Path,
        checkpoint: u64,
        mut apply: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(Self, Recovered), WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut names = segment_names(dir)?;
        let mut recovered = Recovered { next_lsn: checkpoint + 1, ..Recovered::default() };
        let mut expected: Option<u64> = None;
        for (index, segment) in names.iter().enumerate() {
            let bytes = std::fs::read(&segment.path).map_err(io(&segment.path))?;
            let later_segments = &names[index + 1..];
            let mut offset = 0usize;
            let mut lsn_expected = expected.unwrap_or(segment.first_lsn);
            loop {
                match read_frame(&bytes, offset) {
                    Frame::End => break,
                    Frame::Good { first_lsn, records, next } => {
                        // Records at or below the checkpoint are in sled: a frame may start past
                        // them (the log was cut, or sled got ahead of a torn tail).
                        let gap = first_lsn > lsn_expected && first_lsn > checkpoint + 1;
                        if first_lsn < lsn_expected || gap {
                            return Err(WalError::Gap {
                                path: segment.path.display().to_string(),
                                offset: offset as u64,
                                expected: lsn_expected,
                                found: first_lsn,
                            });
                        }
                        for (i, record) in records.into_iter().enumerate() {
                            let lsn = first_lsn + i as u64;
                            if lsn > checkpoint {
                                apply(lsn, record).map_err(|why| WalError::Damaged {
                                    path: segment.path.display().to_string(),
                                    offset: offset as u64,
                                    why: format!("record {lsn} cannot be applied: {why}"),
                                })?;
                                recovered.replayed += 1;
                            }
                            lsn_expected = lsn + 1;
                        }
                        offset = next;
                    }
                    Frame::Bad(why) => {
                        let here = good_frame_after(&bytes, offset + 1);
                        let next_lsn = here.map(|(_, lsn)| lsn).or_else(|| {
                            later_segments.iter().find_map(|s| {
                                std::fs::read(&s.path)
                                    .ok()
                                    .and_then(|b| good_frame_after(&b, 0))
                                    .map(|(_, lsn)| lsn)
                            })
                        });
                        match next_lsn {
                            // What the damaged frame held is all in sled: a checkpoint covers it.
                            Some(lsn) if lsn <= checkpoint + 1 => {
                                tracing::warn!(
                                    segment = %segment.path.display(), offset, %why,
                                    "write-ahead log: a damaged frame is skipped; the checkpoint covers its records"
                                );
                                lsn_expected = lsn;
                                match here {
                                    Some((next, _)) => {
                                        offset = next;
                                        continue;
                                    }
                                    None => break,
                                }
                            }
                            Some(_) => {
                                return Err(WalError::Damaged {
                                    path: segment.path.display().to_string(),
                                    offset: offset as u64,
                                    why,
                                });
                            }
                            None => {}
                        }
                        tracing::warn!(
                            segment = %segment.path.display(), offset, %why,
                            "write-ahead log: dropping a torn final frame (it was never acknowledged)"
                        );
                        truncate(&segment.path, offset as u64)?;
                        recovered.torn_tail = Some((segment.path.clone(), offset as u64));
                        break;
                    }
                }
            }
            expected = Some(lsn_expected);
        }
        if let Some(next) = expected {
            recovered.next_lsn = recovered.next_lsn.max(next);
        }
        let current = Segment::create(dir, recovered.next_lsn, SEGMENT_BYTES)?;
        names.retain(|s| s.first_lsn != recovered.next_lsn);
        names.push(SegmentName { first_lsn: recovered.next_lsn, path: current.path.clone() });
        let wal = Self {
            dir: dir.to_owned(),
            pending: Mutex::new(Pending::new(recovered.next_lsn)),
            current: Mutex::new(current),
            segments: Mutex::new(names),
        };
        Ok((wal, recovered))
    }

    /// Adds one record to the next frame and returns its LSN. Not durable until [`Wal::sync`]
    /// returns an LSN at least as high. Callers append in the order they apply their changes.
    pub fn append(&self, record: &[u8]) -> u64 {
        let mut pending = lock(&self.pending);
        let lsn = pending.next_lsn;
        // Records are far below 4 GiB: the store's envelope limit is a few MiB.
        let length = u32::try_from(record.len()).unwrap_or(u32::MAX);
        pending.frame.extend_from_slice(&length.to_le_bytes());
        pending.frame.extend_from_slice(record);
        pending.count += 1;
        pending.next_lsn += 1;
        lsn
    }

    /// The LSN the next appended record gets.
    pub fn next_lsn(&self) -> u64 {
        lock(&self.pending).next_lsn
    }

    /// The LSN of the last record appended (durable or not); 0 before the first.
    pub fn last_appended(&self) -> u64 {
        lock(&self.pending).next_lsn - 1
    }

    /// Writes every record appended so far as one frame and makes it durable with one
    /// `fdatasync`; returns the highest durable LSN. Concurrent callers take turns.
    pub fn sync(&self) -> Result<u64, WalError> {
        let mut segment = lock(&self.current);
        let (mut frame, first_lsn, count) = {
            let mut pending = lock(&self.pending);
            let next = pending.next_lsn;
            let taken = std::mem::replace(&mut *pending, Pending::new(next));
            (taken.frame, taken.first_lsn, taken.count)
        };
        if count == 0 {
            return Ok(first_lsn - 1);
        }
        let payload = frame.len() - HEADER;
        frame[0..4].copy_from_slice(&MAGIC);
        frame[4..8].copy_from_slice(&u32::try_from(payload).unwrap_or(u32::MAX).to_le_bytes());
        frame[12..20].copy_from_slice(&first_lsn.to_le_bytes());
        frame[20..24].copy_from_slice(&count.to_le_bytes());
        let crc = crc32fast::hash(&frame[12..]);
        frame[8..12].copy_from_slice(&crc.to_le_bytes());
        let length = frame.len() as u64;
        if segment.written + length > segment.capacity {
            // Every frame in the old segment was synced before this one: nothing of it is pending.
            let next = Segment::create(&self.dir, first_lsn, SEGMENT_BYTES.max(length))?;
            lock(&self.segments).push(SegmentName { first_lsn, path: next.path.clone() });
            *segment = next;
        }
        let end = segment.written + length;
        segment.allocate(end)?;
        let at = segment.written;
        if super::crash_point::armed_for("append") {
            // Half the frame on its way to the disk, the rest not: a torn frame.
            segment.file.write_all_at(&frame[..frame.len() / 2], at).map_err(io(&segment.path))?;
            super::crash_point::reached("append");
        }
        segment.file.write_all_at(&frame, at).map_err(io(&segment.path))?;
        segment.file.sync_data().map_err(io(&segment.path))?;
        segment.written += length;
        Ok(first_lsn + u64::from(count) - 1)
    }

    /// Deletes the segments whose every record is at or below `checkpoint` (sled holds them
    /// durably). The segment being appended to is always kept. Returns how many were deleted.
    pub fn cut(&self, checkpoint: u64) -> Result<usize, WalError> {
        let current = lock(&self.current).first_lsn;
        let mut segments = lock(&self.segments);
        let mut deleted = 0;
        while segments.len() > 1 {
            let (first, second) = (&segments[0], &segments[1]);
            // The first segment holds LSNs up to the second's first LSN minus one.
            if first.first_lsn == current || second.first_lsn > checkpoint + 1 {
                break;
            }
            std::fs::remove_file(&first.path).map_err(io(&first.path))?;
            super::crash_point::reached("cut");
            segments.remove(0);
            deleted += 1;
        }
        if deleted > 0 {
            File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        }
        Ok(deleted)
    }

    /// How many segment files the log has now.
    pub fn segment_count(&self) -> usize {
        lock(&self.segments).len()
    }
}

/// One change of a record: a key set to a value, or removed.
const PUT: u8 = 1;
const REMOVE: u8 = 2;

/// Appends "set `key` to `value`" to a record.
pub fn encode_put(record: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    record.push(PUT);
    encode_bytes(record, key);
    encode_bytes(record, value);
}

/// Appends "remove `key`" to a record.
pub fn encode_remove(record: &mut Vec<u8>, key: &[u8]) {
    record.push(REMOVE);
    encode_bytes(record, key);
}

fn encode_bytes(record: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (the envelope limit is a few MiB).
    record.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    record.extend_from_slice(bytes);
}

/// The changes of one record as a sled batch, to apply again after a crash. Applying a record
/// twice leaves the same result: every change sets or removes a whole value.
pub fn decode_record(record: &[u8]) -> Result<sled::Batch, String> {
    let mut batch = sled::Batch::default();
    let mut rest = record;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
        let length = rest.get(..4).ok_or("a length cut short")?;
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let bytes = rest.get(4..4 + length).ok_or("bytes cut short")?.to_vec();
        *rest = &rest[4 + length..];
        Ok(bytes)
    };
    while let Some((&kind, after)) = rest.split_first() {
        rest = after;
        match kind {
            PUT => {
                let key = take(&mut rest)?;
                let value = take(&mut rest)?;
                batch.insert(key, value);
            }
            REMOVE => batch.remove(take(&mut rest)?),
            other => return Err(format!("unknown change kind {other}")),
        }
    }
    Ok(batch)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic between two plain assignments; the data is still whole.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Segment {
    /// A new segment file whose first record will be `first_lsn`, of at most `capacity` bytes,
    /// with its first [`ALLOCATE_BYTES`] zero-filled and synced with its folder entry.
    fn create(dir: &Path, first_lsn: u64, capacity: u64) -> Result<Self, WalError> {
        let path = dir.join(format!("{first_lsn:020}.log"));
        let temp = dir.join(format!("{first_lsn:020}.log.new"));
        let file =
            OpenOptions::new().create(true).truncate(true).write(true).open(&temp).map_err(io(&temp))?;
        let mut segment = Self { file, path: temp, first_lsn, written: 0, allocated: 0, capacity };
        segment.allocate(ALLOCATE_BYTES.min(capacity))?;
        segment.file.sync_all().map_err(io(&segment.path))?;
        std::fs::rename(&segment.path, &path).map_err(io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        segment.path = path;
        Ok(segment)
    }

    /// Zero-fills the file up to at least `needed` bytes ([`ALLOCATE_BYTES`] at a time, never past
    /// its capacity). Not synced here: the next frame's `fdatasync` covers it.
    fn allocate(&mut self, needed: u64) -> Result<(), WalError> {
        if needed <= self.allocated {
            return Ok(());
        }
        let target = needed.max(self.allocated + ALLOCATE_BYTES).min(self.capacity.max(needed));
        let zeros = vec![0u8; ALLOCATE_BYTES as usize];
        while self.allocated < target {
            let step = (target - self.allocated).min(ALLOCATE_BYTES) as usize;
            self.file.write_all_at(&zeros[..step], self.allocated).map_err(io(&self.path))?;
            self.allocated += step as u64;
        }
        Ok(())
    }
}

/// The segments in `dir`, oldest first; leftovers of an interrupted segment creation removed.
fn segment_names(dir: &Path) -> Result<Vec<SegmentName>, WalError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.ends_with(".log.new") {
            std::fs::remove_file(&path).map_err(io(&path))?;
        } else if let Some(first_lsn) = name.strip_suffix(".log").and_then(|n| n.parse::<u64>().ok()) {
            names.push(SegmentName { first_lsn, path });
        }
    }
    names.sort_by_key(|s| s.first_lsn);
    Ok(names)
}

enum Frame<'a> {
    /// Zeros (never written) or the end of the file.
    End,
    Good {
        first_lsn: u64,
        records: Vec<&'a [u8]>,
        next: usize,
    },
    Bad(String),
}

fn read_frame(bytes: &[u8], offset: usize) -> Frame<'_> {
    let Some(header) = bytes.get(offset..offset + HEADER) else {
        return if bytes[offset.min(bytes.len())..].iter().all(|b| *b == 0) {
            Frame::End
        } else {
            Frame::Bad("a header cut short".into())
        };
    };
    if header.iter().all(|b| *b == 0) {
        return Frame::End;
    }
    if header[0..4] != MAGIC {
        return Frame::Bad("no frame marker".into());
    }
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let payload = u64::from(word(4));
    let end = offset as u64 + HEADER as u64 + payload;
    if payload > MAX_FRAME || end > bytes.len() as u64 {
        return Frame::Bad(format!("a length of {payload} bytes runs past the file"));
    }
    let end = end as usize;
    if crc32fast::hash(&bytes[offset + 12..end]) != word(8) {
        return Frame::Bad("its checksum does not match".into());
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[12..20]);
    let count = word(20) as usize;
    let mut records = Vec::with_capacity(count);
    let mut at = offset + HEADER;
    for _ in 0..count {
        let Some(length) = bytes.get(at..at + 4) else {
            return Frame::Bad("a record runs past the frame".into());
        };
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let Some(record) = bytes.get(at + 4..at + 4 + length).filter(|_| at + 4 + length <= end) else {
            return Frame::Bad("a record runs past the frame".into());
        };
        records.push(record);
        at += 4 + length;
    }
    if at != end {
        return Frame::Bad("its records do not fill it".into());
    }
    Frame::Good { first_lsn: u64::from_le_bytes(lsn), records, next: end }
}

/// The first whole, checksummed frame at or after `from`: its offset and first LSN.
fn good_frame_after(bytes: &[u8], from: usize) -> Option<(usize, u64)> {
    (from..bytes.len().saturating_sub(HEADER)).filter(|&at| bytes[at..at + 4] == MAGIC).find_map(|at| {
        match read_frame(bytes, at) {
            Frame::Good { first_lsn, .. } => Some((at, first_lsn)),
            _ => None,
        }
    })
}

#[cfg(test)]
fn segment_has_frames(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| good_frame_after(&bytes, 0).is_some())
}

fn truncate(path: &Path, length: u64) -> Result<(), WalError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io(path))?;
    file.set_len(length).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Replayed = (Wal, Recovered, Vec<(u64, Vec<u8>)>);

    fn replay(dir: &Path, checkpoint: u64) -> Result<Replayed, WalError> {
        let mut seen = Vec::new();
        let (wal, recovered) = Wal::recover(dir, checkpoint, |lsn, record| {
            seen.push((lsn, record.to_vec()));
            Ok(())
        })?;
        Ok((wal, recovered, seen))
    }

    #[test]
    fn records_come_back_in_order_after_the_checkpoint_only() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, recovered, seen) = replay(dir.path(), 0).unwrap();
        assert_eq!((recovered.next_lsn, seen.len()), (1, 0));
        assert_eq!(wal.append(b"one"), 1);
        assert_eq!(wal.append(b"two"), 2);
        assert_eq!(wal.sync().unwrap(), 2);
        assert_eq!(wal.append(b""), 3);
        assert_eq!(wal.sync().unwrap(), 3);
        assert_eq!(wal.sync().unwrap(), 3, "nothing pending: nothing written");
        drop(wal);
        let (wal, recovered, seen) = replay(dir.path(), 1).unwrap();
        assert_eq!(seen, vec![(2, b"two".to_vec()), (3, Vec::new())]);
        assert_eq!((recovered.replayed, recovered.next_lsn, recovered.torn_tail), (2, 4, None));
        assert_eq!(wal.append(b"four"), 4);
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered, seen) = replay(dir.path(), 0).unwrap();
        assert_eq!(seen.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(recovered.next_lsn, 5);
    }

    #[test]
    fn unsynced_records_are_not_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = replay(dir.path(), 0).unwrap();
        wal.append(b"durable");
        wal.sync().unwrap();
        wal.append(b"never synced");
        drop(wal);
        let (_, recovered, seen) = replay(dir.path(), 0).unwrap();
        assert_eq!(seen, vec![(1, b"durable".to_vec())]);
        assert_eq!(recovered.next_lsn, 2);
    }

    /// The last segment's last frame, partly written (as a crash inside an append leaves it).
    fn last_frame(dir: &Path) -> (PathBuf, u64, u64) {
        let names = segment_names(dir).unwrap();
        let path = names.iter().rev().find(|s| segment_has_frames(&s.path)).unwrap().path.clone();
        let bytes = std::fs::read(&path).unwrap();
        let (mut offset, mut last) = (0, 0);
        while let Frame::Good { next, .. } = read_frame(&bytes, offset) {
            last = offset;
            offset = next;
        }
        (path, last as u64, offset as u64)
    }

    #[test]
    fn a_torn_final_frame_is_dropped_and_cut_away() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = replay(dir.path(), 0).unwrap();
        wal.append(b"first");
        wal.sync().unwrap();
        wal.append(b"second");
        wal.append(b"third");
        wal.sync().unwrap();
        drop(wal);
        let (path, start, end) = last_frame(dir.path());
        // Half the frame reached the disk: its tail is still zeros.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0; ((end - start) / 2) as usize], start + (end - start) / 2).unwrap();
        drop(file);
        let (wal, recovered, seen) = replay(dir.path(), 0).unwrap();
        assert_eq!(seen, vec![(1, b"first".to_vec())]);
        assert_eq!(recovered.torn_tail, Some((path.clone(), start)));
        assert_eq!(recovered.next_lsn, 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), start);
        // Appends after recovery go to a new segment and come back next time, with no complaint.
        assert_eq!(wal.append(b"again"), 2);
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered, seen) = replay(dir.path(), 0).unwrap();
        assert_eq!(seen, vec![(1, b"first".to_vec()), (2, b"again".to_vec())]);
        assert_eq!(recovered.torn_tail, None);
    }

    #[test]
    fn damage_before_a_good_frame_stops_recovery_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = replay(dir.path(), 0).unwrap();
        for text in [b"one".as_slice(), b"two", b"three"] {
            wal.append(text);
            wal.sync().unwrap();
        }
        drop(wal);
        let names = segment_names(dir.path()).unwrap();
        let path = names[0].path.clone();
        let bytes = std::fs::read(&path).unwrap();
        let Frame::Good { next: second, .. } = read_frame(&bytes, 0) else { panic!("first frame") };
        // One flipped bit in the second frame's record.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[bytes[second + HEADER + 4] ^ 1], (second + HEADER + 4) as u64).unwrap();
        drop(file);
        let Err(error) = replay(dir.path(), 0) else { panic!("damage was not found") };
        match &error {
            WalError::Damaged { offset, .. } => assert_eq!(*offset, second as u64),
            other => panic!("{other}"),
        }
        assert!(error.to_string().contains(&format!("at byte {second}")), "{error}");
    }

    #[test]
    fn damage_the_checkpoint_covers_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = replay(dir.path(), 0).unwrap();
        for text in [b"one".as_slice(), b"two", b"three"] {
            wal.append(text);
            wal.sync().unwrap();
        }
        drop(wal);
        let path = segment_names(dir.path()).unwrap()[0].path.clone();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"XXXX", 0).unwrap();
        drop(file);
        assert!(matches!(replay(dir.path(), 0), Err(WalError::Damaged { offset: 0, .. })));
        let (_, recovered, seen) = replay(dir.path(), 1).unwrap();
        assert_eq!(seen, vec![(2, b"two".to_vec()), (3, b"three".to_vec())]);
        assert_eq!(recovered.next_lsn, 4);
    }

    #[test]
    fn full_segments_roll_over_and_cut_deletes_only_what_sled_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = replay(dir.path(), 0).unwrap();
        // Records of a third of a segment: every third sync rolls over to a new segment.
        let record = vec![7u8; (SEGMENT_BYTES / 3) as usize];
        for _ in 0..4 {
            wal.append(&record);
            wal.sync().unwrap();
        }
        assert_eq!(wal.segment_count(), 2, "segments: 1..=2, 3..");
        assert_eq!(wal.cut(1).unwrap(), 0, "LSN 2 is in the first segment and sled does not hold it");
        assert_eq!(wal.cut(2).unwrap(), 1);
        assert_eq!(wal.cut(4).unwrap(), 0, "the segment being appended to stays");
        drop(wal);
        let (_, recovered, seen) = replay(dir.path(), 2).unwrap();
        assert_eq!(seen.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(recovered.next_lsn, 5);
    }

    #[test]
    fn a_record_becomes_the_same_sled_batch_again() {
        let mut record = Vec::new();
        encode_put(&mut record, b"m1", b"message");
        encode_remove(&mut record, b"o1");
        encode_put(&mut record, b"e1", b"");
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.insert(b"o1", b"queued").unwrap();
        for _ in 0..2 {
            db.apply_batch(decode_record(&record).unwrap()).unwrap();
        }
        assert_eq!(db.get(b"m1").unwrap().unwrap(), b"message".as_slice());
        assert_eq!(db.get(b"e1").unwrap().unwrap(), b"".as_slice());
        assert!(db.get(b"o1").unwrap().is_none());
        assert!(decode_record(&[PUT, 9, 0, 0, 0, b'x']).is_err());
        assert!(decode_record(&[7]).is_err());
    }

    #[test]
    fn a_missing_segment_is_a_gap_not_silence() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _, _) = replay(dir.path(), 0).unwrap();
        let record = vec![1u8; (SEGMENT_BYTES / 2) as usize];
        for _ in 0..3 {
            wal.append(&record);
            wal.sync().unwrap();
        }
        drop(wal);
        let names = segment_names(dir.path()).unwrap();
        assert!(names.len() >= 3, "{names:?}");
        std::fs::remove_file(&names[1].path).unwrap();
        assert!(matches!(replay(dir.path(), 0), Err(WalError::Gap { .. })));
    }
}
