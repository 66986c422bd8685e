//! A write-ahead log in segment files: the Raft log (`raft-log` in the data dir) and the
//! event log (`events`) are each one. Its file operations go through the seam of
//! `disk.rs` (the real file system, or a simulated disk in the power-cut tests).
//!
//! A log only ever appends at its end, cuts its end (a conflicting leader) and drops its
//! beginning (after a snapshot), so it needs no B-tree: each append is one `pwrite` at the
//! end of the active segment, and making a group of appends durable is one `fdatasync`.
//!
//! Layout: files `<first index, 20 digits>.wal` in the log's folder. A record is
//! `len: u32 LE | crc32: u32 LE | index: u64 LE | payload (len bytes)`, the CRC covering
//! the index and the payload. A segment that is finished (the log moved on to the next)
//! gets an index file beside it, `<first index>.idx` (replaced whole, checksummed: the
//! segment's length and each record's offset), so that opening the log reads only the
//! index files of finished segments and the whole of the last one: the time to open does
//! not grow with the history the log holds. Every record read is checked (its CRC and
//! index). At open every record of the last segment is checked, and of a finished segment
//! whose index file is missing, damaged or of another length than the segment (then the
//! index file is written again): a damaged or half-written record at the end of the last
//! segment is the trace of a crash during an append that was never acknowledged, and is
//! cut off; damage anywhere else refuses the open, or the read.

use std::collections::{BTreeMap, VecDeque};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod disk;
pub mod slot;

use crate::histogram::Histogram;
use disk::{Disk, DiskFile};

/// Bytes of a record's header.
const HEADER: u64 = 16;

/// A new segment is started once the active one passes this size (the data dir's logs use
/// it; tests pass smaller ones).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Why the log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A record before the end is damaged.
    #[error("{path} is damaged at byte {offset}: {what}. Refusing to start rather than lose data")]
    Corrupt {
        /// The segment.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A record read from a finished segment is damaged.
    #[error("{path} is damaged at byte {offset}: {what}")]
    Damaged {
        /// The segment.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// An entry does not fit a record (its length is a `u32`).
    #[error("entry {index} is larger than 4 GiB")]
    TooLarge {
        /// The entry's index.
        index: u64,
    },
}

/// Where an entry is in its segment (the segment whose first index is the greatest not
/// above the entry's).
#[derive(Clone, Copy, Debug)]
struct Loc {
    offset: u32,
    len: u32,
}

/// The magic bytes of a finished segment's index file.
const INDEX_MAGIC: &[u8; 8] = b"LTHWIDX1";

/// One segment file.
struct Segment {
    file: Arc<dyn DiskFile>,
    path: PathBuf,
    len: u64,
}

/// The write-ahead log.
pub struct Wal {
    /// Where the files are (the real file system, or a simulated disk in tests).
    disk: Arc<dyn Disk>,
    /// A new segment is started once the active one passes this size.
    segment_bytes: u64,
    dir: PathBuf,
    /// The folder's name (`raft-log`, `events`): names the log's failpoints
    /// (`<name>-write`, `<name>-sync`, `<name>-truncate`, `<name>-remove`).
    name: String,
    /// By first index.
    segments: BTreeMap<u64, Segment>,
    /// Locations of entries `first ..= first + len - 1`.
    locs: VecDeque<Loc>,
    first: u64,
    /// A segment was created or removed since the last [`Wal::syncer`].
    dir_changed: bool,
    /// Where its syncs' durations go (see [`Wal::observe_syncs`]).
    observed: Option<Histogram>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Reads the record at the start of `rest`: its index and payload, or what is wrong with
/// it and whether that can only be an append a crash cut short (the record ends the file).
fn decode(rest: &[u8]) -> Result<(u64, &[u8]), (String, bool)> {
    let Some(head) = rest.get(..HEADER as usize) else {
        return Err(("a record header is cut short".to_string(), true));
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let sum = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let mut ix = [0u8; 8];
    ix.copy_from_slice(&head[8..16]);
    let index = u64::from_le_bytes(ix);
    let end = HEADER as usize + len as usize;
    let Some(payload) = rest.get(HEADER as usize..end) else {
        return Err((format!("record {index} is cut short"), true));
    };
    if crc(index, payload) != sum {
        // Only the very last record can be a write the crash interrupted.
        return Err((
            format!("record {index} fails its checksum"),
            end == rest.len(),
        ));
    }
    Ok((index, payload))
}

/// Encodes entries as records, the first at byte `offset` of `segment`: the bytes and
/// where each entry lands.
fn encode(entries: &[(u64, Vec<u8>)], mut offset: u64) -> Result<(Vec<u8>, Vec<Loc>), WalError> {
    let mut buf = Vec::new();
    let mut locs = Vec::with_capacity(entries.len());
    for (index, payload) in entries {
        let too_large = || WalError::TooLarge { index: *index };
        let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc(*index, payload).to_le_bytes());
        buf.extend_from_slice(&index.to_le_bytes());
        buf.extend_from_slice(payload);
        locs.push(Loc {
            offset: u32::try_from(offset).map_err(|_| too_large())?,
            len,
        });
        offset += HEADER + len as u64;
    }
    Ok((buf, locs))
}

/// The name of the index file of the segment starting at `first`.
fn index_name(first: u64) -> String {
    format!("{first:020}.idx")
}

/// An index file's content: the segment's length, then each record's offset.
fn index_content(len: u64, locs: &[Loc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + locs.len() * 4);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(locs.len() as u64).to_le_bytes());
    for loc in locs {
        out.extend_from_slice(&loc.offset.to_le_bytes());
    }
    out
}

/// The locations an index file gives for a segment of `len` bytes (None: it is not the
/// index of a segment of that length).
fn index_locs(content: &[u8], len: u64) -> Option<Vec<Loc>> {
    let word = |at: usize| -> Option<u64> {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(content.get(at..at + 8)?);
        Some(u64::from_le_bytes(eight))
    };
    if content.get(..8)? != INDEX_MAGIC || word(8)? != len {
        return None;
    }
    let count = usize::try_from(word(16)?).ok()?;
    let offsets = content.get(24..)?;
    if offsets.len() != count.checked_mul(4)? || count == 0 {
        return None;
    }
    let offsets: Vec<u64> = offsets
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let mut locs = Vec::with_capacity(count);
    for (i, offset) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(len);
        let payload = end.checked_sub(offset + HEADER)?;
        locs.push(Loc {
            offset: u32::try_from(*offset).ok()?,
            len: u32::try_from(payload).ok()?,
        });
    }
    (offsets.first() == Some(&0)).then_some(locs)
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

/// What makes a group of appends durable: the active segment and, when segments were
/// created or removed, the folder.
pub struct Syncer {
    disk: Arc<dyn Disk>,
    file: Option<Arc<dyn DiskFile>>,
    dir: Option<PathBuf>,
    /// The log's name (for its failpoint; read only when failpoints are compiled in).
    #[allow(dead_code)]
    name: String,
    /// Where each sync's duration goes, if anywhere.
    observed: Option<Histogram>,
}

/// An injected I/O error (failpoints, in tests; used only when they are compiled in).
#[allow(dead_code)]
fn injected(name: &str) -> std::io::Error {
    std::io::Error::other(format!("failpoint {name}"))
}

impl Syncer {
    /// Takes over what an older syncer had to do: the folder sync it carried, if any
    /// (the active file is the same or newer, and a finished segment was synced when the
    /// next one began).
    pub fn absorb(&mut self, older: Syncer) {
        if self.dir.is_none() {
            self.dir = older.dir;
        }
    }

    /// `fdatasync`s the active segment (and the folder when it changed).
    pub fn sync(&self) -> std::io::Result<()> {
        fail::fail_point!(&format!("{}-sync", self.name), |_| Err(injected(&format!(
            "{}-sync",
            self.name
        ))));
        let started = std::time::Instant::now();
        if let Some(f) = &self.file {
            f.sync()?;
        }
        if let Some(d) = &self.dir {
            self.disk.sync_dir(d)?;
        }
        if let Some(h) = &self.observed {
            h.observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir` (see the module's doc for what is checked).
    #[cfg(any(test, feature = "testing"))]
    pub fn open(dir: &Path) -> Result<Wal, WalError> {
        Self::open_on(Arc::new(disk::OsDisk), dir, SEGMENT_BYTES)
    }

    /// Opens the log in `dir` on `disk`, starting a new segment every `segment_bytes`.
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path, segment_bytes: u64) -> Result<Wal, WalError> {
        disk.create_dir_all(dir).map_err(io_err(dir))?;
        let mut firsts: Vec<u64> = Vec::new();
        for name in disk.list(dir).map_err(io_err(dir))? {
            let Some(first) = name
                .strip_suffix(".wal")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut wal = Wal {
            disk,
            segment_bytes,
            dir: dir.to_path_buf(),
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            first: 0,
            dir_changed: false,
            observed: None,
        };
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let last = n + 1 == count;
            if last || !wal.load_indexed(first)? {
                wal.load_segment(first, last)?;
                if !last {
                    wal.write_index(first);
                }
            }
        }
        Ok(wal)
    }

    /// Entries before a segment that does not continue the log were purged: a segment
    /// starts afresh after everything before it was dropped.
    fn continue_with(&mut self, first: u64) {
        if self.next_index() != Some(first) {
            self.locs.clear();
            self.first = first;
        }
    }

    /// Takes a finished segment's entries from its index file, without reading the
    /// segment; answers false when there is no usable index file.
    fn load_indexed(&mut self, first: u64) -> Result<bool, WalError> {
        let index = slot::Slot::new(self.disk.clone(), &self.dir, &index_name(first));
        let Ok(Some(content)) = index.read() else {
            return Ok(false);
        };
        let path = self.dir.join(segment_name(first));
        let file = self.disk.open(&path, false).map_err(io_err(&path))?;
        let len = file.size().map_err(io_err(&path))?;
        let Some(locs) = index_locs(&content, len) else {
            return Ok(false);
        };
        self.continue_with(first);
        self.locs.extend(locs);
        self.segments.insert(first, Segment { file, path, len });
        Ok(true)
    }

    /// Writes the index file of the finished segment starting at `first`. A failure
    /// costs only time: the next open reads the segment instead.
    fn write_index(&self, first: u64) {
        let Some(seg) = self.segments.get(&first) else {
            return;
        };
        // Its entries end where the next segment starts (or the log ends).
        let end = self
            .segments
            .range(first + 1..)
            .next()
            .map(|(k, _)| *k)
            .or_else(|| self.next_index());
        let (Some(end), Some(from)) = (end, first.checked_sub(self.first)) else {
            return;
        };
        let (from, to) = (from as usize, end.saturating_sub(self.first) as usize);
        if from >= to || to > self.locs.len() {
            return;
        }
        let locs: Vec<Loc> = self.locs.range(from..to).copied().collect();
        let index = slot::Slot::new(self.disk.clone(), &self.dir, &index_name(first));
        if let Err(e) = index.write(&index_content(seg.len, &locs)) {
            tracing::warn!(
                segment = %seg.path.display(),
                error = %e,
                "cannot write the index of a finished log segment; the next start reads the segment"
            );
        }
    }

    /// Removes the segment starting at `first` and its index file.
    fn remove_segment(&mut self, first: u64) -> Result<(), WalError> {
        if let Some(seg) = self.segments.remove(&first) {
            self.remove_index(first);
            self.disk.remove(&seg.path).map_err(io_err(&seg.path))?;
            self.dir_changed = true;
        }
        Ok(())
    }

    /// Removes the index file of the segment starting at `first`, if there is one (a
    /// stale one is never used: it must match the segment's length, and the last segment
    /// is always read whole).
    fn remove_index(&self, first: u64) {
        let path = self.dir.join(index_name(first));
        if let Err(e) = self.disk.remove(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "a log index file stays");
            }
        }
    }

    fn load_segment(&mut self, first: u64, last: bool) -> Result<(), WalError> {
        let path = self.dir.join(segment_name(first));
        let file = self.disk.open(&path, false).map_err(io_err(&path))?;
        let bytes = file.read_all().map_err(io_err(&path))?;
        self.continue_with(first);
        let mut offset = 0u64;
        let mut expected = first;
        // (what is wrong, whether it can only be an append cut short by a crash)
        let problem: Option<(String, bool)> = loop {
            let rest = &bytes[offset as usize..];
            if rest.is_empty() {
                break None;
            }
            let (index, payload) = match decode(rest) {
                Ok(record) => record,
                Err(problem) => break Some(problem),
            };
            if index != expected {
                break Some((
                    format!("record {index} where {expected} was expected"),
                    false,
                ));
            }
            let Ok(at) = u32::try_from(offset) else {
                break Some((format!("record {index} starts past 4 GiB"), false));
            };
            self.locs.push_back(Loc {
                offset: at,
                len: payload.len() as u32,
            });
            offset += HEADER + payload.len() as u64;
            expected += 1;
        };
        if let Some((what, torn)) = problem {
            // Nothing but zeros from the damaged record on: space the file system gave to
            // an append that a power loss cut short.
            let zeros = bytes[offset as usize..].iter().all(|b| *b == 0);
            if !last || !(torn || zeros) {
                return Err(WalError::Corrupt {
                    path: path.display().to_string(),
                    offset,
                    what,
                });
            }
            // The end of the last segment: an append that never completed, so never
            // acknowledged. Cut it off.
            tracing::warn!(path = %path.display(), offset, %what, "cutting off an unfinished append at the end of the log");
            file.set_len(offset).map_err(io_err(&path))?;
            file.sync().map_err(io_err(&path))?;
        }
        self.segments.insert(
            first,
            Segment {
                file,
                path,
                len: offset,
            },
        );
        Ok(())
    }

    /// The index after the last entry (None: the log holds no entry).
    fn next_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64)
    }

    /// The last index held.
    pub fn last_index(&self) -> Option<u64> {
        self.next_index().map(|n| n - 1)
    }

    /// The first index held.
    pub fn first_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then_some(self.first)
    }

    /// The index the log starts at (or will start at, when empty).
    pub fn start(&self) -> u64 {
        self.first
    }

    fn start_segment(&mut self, first: u64) -> Result<(), WalError> {
        if let Some((&finished, active)) = self.segments.iter().next_back() {
            // The finished segment is made durable before the log moves on, then indexed.
            active.file.sync().map_err(io_err(&active.path))?;
            self.write_index(finished);
        }
        let path = self.dir.join(segment_name(first));
        let file = self.disk.open(&path, true).map_err(io_err(&path))?;
        self.segments.insert(first, Segment { file, path, len: 0 });
        self.dir_changed = true;
        Ok(())
    }

    /// Appends entries `(index, payload)`, which continue the log (or start it, or start
    /// it afresh after everything was purged). Not durable until synced.
    pub fn append(&mut self, entries: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        let Some((first_new, _)) = entries.first() else {
            return Ok(());
        };
        let bytes: u64 = entries.iter().map(|(_, p)| HEADER + p.len() as u64).sum();
        match self.next_index() {
            Some(next) if next == *first_new => {
                // Offsets in a segment stay below 4 GiB.
                let full = self.segments.values().next_back().is_none_or(|s| {
                    s.len >= self.segment_bytes || s.len + bytes > u64::from(u32::MAX)
                });
                if full {
                    self.start_segment(*first_new)?;
                }
            }
            Some(next) => {
                return Err(WalError::Corrupt {
                    path: self.dir.display().to_string(),
                    offset: 0,
                    what: format!("append of {first_new} where {next} was expected"),
                })
            }
            None => {
                self.first = *first_new;
                self.start_segment(*first_new)?;
            }
        }
        let Some(active) = self.segments.values_mut().next_back() else {
            return Ok(());
        };
        let (buf, locs) = encode(entries, active.len)?;
        let offset = active.len + buf.len() as u64;
        fail::fail_point!(&format!("{}-write", self.name), |_| Err(io_err(
            &active.path
        )(
            injected(&format!("{}-write", self.name))
        )));
        active
            .file
            .write_at(&buf, active.len)
            .map_err(io_err(&active.path))?;
        active.len = offset;
        self.locs.extend(locs);
        Ok(())
    }

    /// Continues the log at `index`, after a gap: what a node does after installing a
    /// snapshot. The segments before are removed (a follower fetches what it misses again,
    /// see [`Wal::adopt`]).
    pub fn restart_at(&mut self, index: u64) -> Result<(), WalError> {
        if self.next_index() == Some(index) {
            return Ok(());
        }
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for first in firsts {
            self.remove_segment(first)?;
        }
        self.locs.clear();
        self.first = index;
        self.start_segment(index)
    }

    /// Writes entries `(index, payload)` as a segment file at `path` (outside the log),
    /// synced: to be handed to [`Wal::adopt`].
    pub fn write_segment(path: &Path, entries: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_err(path))?;
        let (buf, _) = encode(entries, 0)?;
        use std::io::Write;
        file.write_all(&buf).map_err(io_err(path))?;
        file.sync_data().map_err(io_err(path))
    }

    /// Takes the segment file at `path` (written by [`Wal::write_segment`]), which must hold
    /// the entries from `first` up to just before this log's first entry, into the log:
    /// entries fetched again after a gap.
    pub fn adopt(&mut self, path: &Path, first: u64) -> Result<(), WalError> {
        let refuse = |what: String| WalError::Corrupt {
            path: path.display().to_string(),
            offset: 0,
            what,
        };
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let mut offset = 0u64;
        let mut locs = Vec::new();
        while (offset as usize) < bytes.len() {
            let (index, payload) =
                decode(&bytes[offset as usize..]).map_err(|(what, _)| refuse(what))?;
            if index != first + locs.len() as u64 {
                return Err(refuse(format!("record {index} is out of order")));
            }
            locs.push(Loc {
                offset: u32::try_from(offset)
                    .map_err(|_| refuse(format!("record {index} starts past 4 GiB")))?,
                len: payload.len() as u32,
            });
            offset += HEADER + payload.len() as u64;
        }
        if first + locs.len() as u64 != self.first || self.segments.contains_key(&first) {
            return Err(refuse(format!(
                "entries {first}..{} do not end where the log starts ({})",
                first + locs.len() as u64,
                self.first
            )));
        }
        let target = self.dir.join(segment_name(first));
        self.disk.rename(path, &target).map_err(io_err(&target))?;
        self.disk.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        let file = self.disk.open(&target, false).map_err(io_err(&target))?;
        self.segments.insert(
            first,
            Segment {
                file,
                path: target,
                len: offset,
            },
        );
        for loc in locs.into_iter().rev() {
            self.locs.push_front(loc);
        }
        self.first = first;
        if self.segments.len() > 1 {
            self.write_index(first);
        }
        Ok(())
    }

    /// What a flush needs, taken under the log's lock and run outside it.
    pub fn syncer(&mut self) -> Syncer {
        let dir = std::mem::take(&mut self.dir_changed).then(|| self.dir.clone());
        Syncer {
            disk: self.disk.clone(),
            file: self.segments.values().next_back().map(|s| s.file.clone()),
            dir,
            name: self.name.clone(),
            observed: self.observed.clone(),
        }
    }

    /// Records how long each of its syncs takes in `histogram` (seconds).
    pub fn observe_syncs(&mut self, histogram: Histogram) {
        self.observed = Some(histogram);
    }

    /// The payload of entry `index`.
    pub fn read(&self, index: u64) -> Result<Option<Vec<u8>>, WalError> {
        let Some(loc) = index
            .checked_sub(self.first)
            .and_then(|i| self.locs.get(i as usize))
        else {
            return Ok(None);
        };
        let Some((_, seg)) = self.segments.range(..=index).next_back() else {
            return Ok(None);
        };
        let mut buf = vec![0u8; HEADER as usize + loc.len as usize];
        seg.file
            .read_at(&mut buf, u64::from(loc.offset))
            .map_err(io_err(&seg.path))?;
        // Checked on every read: a finished segment was not read at open.
        match decode(&buf) {
            Ok((found, _)) if found == index => {}
            Ok((found, _)) => {
                return Err(WalError::Damaged {
                    path: seg.path.display().to_string(),
                    offset: u64::from(loc.offset),
                    what: format!("record {found} where {index} was expected"),
                })
            }
            Err((what, _)) => {
                return Err(WalError::Damaged {
                    path: seg.path.display().to_string(),
                    offset: u64::from(loc.offset),
                    what,
                })
            }
        }
        buf.drain(..HEADER as usize);
        Ok(Some(buf))
    }

    /// Removes entries `from` and after, durably.
    pub fn truncate(&mut self, from: u64) -> Result<(), WalError> {
        fail::fail_point!(&format!("{}-truncate", self.name), |_| Err(io_err(
            &self.dir
        )(
            injected(&format!("{}-truncate", self.name))
        )));
        let Some(next) = self.next_index() else {
            return Ok(());
        };
        if from >= next {
            return Ok(());
        }
        let keep = from.saturating_sub(self.first) as usize;
        let cut = self.locs.get(keep).copied();
        self.locs.truncate(keep);
        let Some(cut) = cut else {
            return Ok(());
        };
        let cut_index = self.first + keep as u64;
        let Some(segment) = self
            .segments
            .range(..=cut_index)
            .next_back()
            .map(|(k, _)| *k)
        else {
            return Ok(());
        };
        let later: Vec<u64> = self
            .segments
            .range(segment + 1..)
            .map(|(k, _)| *k)
            .collect();
        for first in later {
            self.remove_segment(first)?;
        }
        // The cut segment is the last one now: it is read whole at open.
        self.remove_index(segment);
        if let Some(seg) = self.segments.get_mut(&segment) {
            let offset = u64::from(cut.offset);
            seg.file.set_len(offset).map_err(io_err(&seg.path))?;
            seg.file.sync().map_err(io_err(&seg.path))?;
            seg.len = offset;
        }
        if self.dir_changed {
            self.dir_changed = false;
            self.disk.sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        Ok(())
    }

    /// Drops entries up to `upto` from view; their files stay until
    /// [`Wal::remove_segments`].
    pub fn forget(&mut self, upto: u64) {
        while self.first <= upto && self.locs.pop_front().is_some() {
            self.first += 1;
        }
        if self.locs.is_empty() {
            self.first = self.first.max(upto + 1);
        }
    }

    /// Removes the segments that hold nothing after `upto` (never the active one).
    pub fn remove_segments(&mut self, upto: u64) -> Result<(), WalError> {
        fail::fail_point!(&format!("{}-remove", self.name), |_| Err(
            io_err(&self.dir)(injected(&format!("{}-remove", self.name)))
        ));
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            // Every entry of segment pair[0] is before pair[1]'s first.
            if pair[1] <= upto + 1 {
                self.remove_segment(pair[0])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn entries(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry {i}").into_bytes()))
            .collect()
    }

    #[test]
    fn appends_reopen_truncate_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut wal = Wal::open(dir.path()).unwrap();
            wal.append(&entries(1..6)).unwrap();
            wal.append(&entries(6..9)).unwrap();
            wal.syncer().sync().unwrap();
        }
        let mut wal = Wal::open(dir.path()).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (Some(1), Some(8)));
        assert_eq!(wal.read(7).unwrap().unwrap(), b"entry 7");
        wal.truncate(6).unwrap();
        assert_eq!(wal.last_index(), Some(5));
        wal.append(&entries(6..7)).unwrap();
        wal.forget(3);
        wal.remove_segments(3).unwrap();
        assert_eq!(wal.first_index(), Some(4));
        assert_eq!(wal.read(3).unwrap(), None);
        drop(wal);
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.last_index(), Some(6));
        assert_eq!(wal.read(6).unwrap().unwrap(), b"entry 6");
    }

    #[test]
    fn after_a_gap_the_missing_entries_are_adopted_in_front() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        {
            let mut wal = Wal::open(&log_dir).unwrap();
            wal.append(&entries(1..4)).unwrap();
            // A snapshot skipped 4..=9.
            wal.restart_at(10).unwrap();
            assert_eq!((wal.first_index(), wal.start()), (None, 10));
            wal.append(&entries(10..13)).unwrap();
            assert_eq!(wal.first_index(), Some(10));
            let scratch = dir.path().join("fetched");
            // Entries that do not end where the log starts are refused.
            Wal::write_segment(&scratch, &entries(1..5)).unwrap();
            assert!(wal.adopt(&scratch, 1).is_err());
            std::fs::remove_file(&scratch).unwrap();
            Wal::write_segment(&scratch, &entries(1..6)).unwrap();
            Wal::write_segment(&scratch, &entries(6..10)).unwrap();
            wal.adopt(&scratch, 1).unwrap();
            assert_eq!((wal.first_index(), wal.last_index()), (Some(1), Some(12)));
            assert_eq!(wal.read(7).unwrap().unwrap(), b"entry 7");
        }
        let wal = Wal::open(&log_dir).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (Some(1), Some(12)));
        assert_eq!(wal.read(11).unwrap().unwrap(), b"entry 11");
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_it_refuses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut wal = Wal::open(dir.path()).unwrap();
            wal.append(&entries(1..4)).unwrap();
        }
        let seg = dir.path().join(segment_name(1));
        let len = std::fs::metadata(&seg).unwrap().len();
        // Half a record at the end: an append that never finished.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[7, 0, 0, 0, 1, 2], len).unwrap();
        drop(f);
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.last_index(), Some(3));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        drop(wal);
        // Zeros after the last record: space given to an append that never landed.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0u8; 64], len).unwrap();
        drop(f);
        let mut wal = Wal::open(dir.path()).unwrap();
        assert_eq!(wal.last_index(), Some(3));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        wal.append(&entries(4..5)).unwrap();
        drop(wal);
        // A flipped byte in a record followed by others is damage, not a torn append.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(b"X", HEADER + 2).unwrap();
        drop(f);
        match Wal::open(dir.path()) {
            Err(WalError::Corrupt { what, .. }) => assert!(what.contains("checksum"), "{what}"),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }

    /// Finished segments are opened from their index files, without reading them; their
    /// records are checked when read. A missing index, or one of another length than its
    /// segment, makes the open read the segment (and write the index again).
    #[test]
    fn finished_segments_open_from_their_index_and_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let open = || Wal::open_on(Arc::new(disk::OsDisk), d, 100);
        {
            let mut wal = open().unwrap();
            for i in 1..=30 {
                wal.append(&entries(i..i + 1)).unwrap();
            }
            wal.syncer().sync().unwrap();
        }
        let mut firsts: Vec<u64> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".wal").map(|n| n.parse().unwrap())
            })
            .collect();
        firsts.sort_unstable();
        assert!(firsts.len() > 3, "{firsts:?}");
        let (finished, last) = (&firsts[..firsts.len() - 1], firsts[firsts.len() - 1]);
        for f in finished {
            assert!(d.join(index_name(*f)).exists(), "no index of segment {f}");
        }
        assert!(!d.join(index_name(last)).exists());
        let all = |wal: &Wal| -> Vec<Vec<u8>> {
            (1..=30).map(|i| wal.read(i).unwrap().unwrap()).collect()
        };
        let expected: Vec<Vec<u8>> = entries(1..31).into_iter().map(|(_, p)| p).collect();
        assert_eq!(all(&open().unwrap()), expected);

        // Damage inside a finished segment: the open does not read it, the read refuses.
        let second = d.join(segment_name(finished[1]));
        let f = OpenOptions::new().write(true).open(&second).unwrap();
        f.write_all_at(b"#", HEADER + 1).unwrap();
        drop(f);
        let wal = open().unwrap();
        assert!(matches!(
            wal.read(finished[1]),
            Err(WalError::Damaged { .. })
        ));
        assert!(wal.read(finished[1] + 1).is_ok());
        drop(wal);
        // Without its index the segment is read at open, and its damage refuses the open.
        std::fs::remove_file(d.join(index_name(finished[1]))).unwrap();
        assert!(matches!(open(), Err(WalError::Corrupt { .. })));
        let f = OpenOptions::new().write(true).open(&second).unwrap();
        f.write_all_at(b"n", HEADER + 1).unwrap();
        drop(f);
        assert_eq!(all(&open().unwrap()), expected);
        assert!(
            d.join(index_name(finished[1])).exists(),
            "the index is written again"
        );

        // An index of another length than its segment is not used: the segment is read,
        // and the bytes past its records refuse the open (they are not the log's end).
        let first = d.join(segment_name(finished[0]));
        let bytes = std::fs::read(&first).unwrap();
        std::fs::write(&first, [bytes.clone(), vec![0u8; 8]].concat()).unwrap();
        assert!(d.join(index_name(finished[0])).exists());
        assert!(matches!(open(), Err(WalError::Corrupt { .. })));
        std::fs::write(&first, &bytes).unwrap();
        assert_eq!(all(&open().unwrap()), expected);
    }

    /// Power cuts at random points across appends, syncs, truncations, purges, segment
    /// changes and restarts after a gap, on a disk that keeps only what was synced: the
    /// log always opens again, and holds every entry synced before the cut (and nothing
    /// that was not written).
    #[test]
    fn power_cuts_keep_every_synced_entry_and_the_log_always_opens() {
        use super::disk::sim::SimDisk;
        use rand::{Rng, SeedableRng};
        let dir = Path::new("/sim/log");
        let mut cuts = 0;
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let disk = Arc::new(SimDisk::default());
            let open = |disk: &Arc<SimDisk>| {
                let d: Arc<dyn Disk> = disk.clone();
                Wal::open_on(d, dir, 600)
            };
            let mut wal = open(&disk).unwrap();
            // What must be there after a cut (synced), what may be (written since).
            let mut synced: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut written: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            // Entries below this were purged or skipped: they may or may not be there.
            let mut floor = 1u64;
            for step in 0..80 {
                let next = wal.last_index().map_or(wal.start().max(1), |l| l + 1);
                match rng.gen_range(0..100) {
                    0..=44 => {
                        let n = rng.gen_range(1..5);
                        let batch: Vec<(u64, Vec<u8>)> = (next..next + n)
                            .map(|i| {
                                let len = rng.gen_range(1..120);
                                (
                                    i,
                                    format!("{seed}-{step}-{i}-{}", "x".repeat(len)).into_bytes(),
                                )
                            })
                            .collect();
                        wal.append(&batch).unwrap();
                        written.extend(batch);
                    }
                    45..=69 => {
                        wal.syncer().sync().unwrap();
                        synced.append(&mut written);
                    }
                    70..=77 if next > floor + 1 => {
                        // A conflicting leader: cut the end (durable at once).
                        let from = rng.gen_range(floor..next);
                        wal.truncate(from).unwrap();
                        synced.retain(|i, _| *i < from);
                        written.retain(|i, _| *i < from);
                    }
                    78..=85 if next > floor + 2 => {
                        // A purge after a snapshot: entries leave view, then the disk.
                        let upto = rng.gen_range(floor..next - 1);
                        wal.forget(upto);
                        wal.remove_segments(upto).unwrap();
                        floor = upto + 1;
                    }
                    86..=89 => {
                        // A snapshot installed: the log continues after a gap.
                        let at = next + rng.gen_range(1..20);
                        wal.restart_at(at).unwrap();
                        wal.syncer().sync().unwrap();
                        synced.clear();
                        written.clear();
                        floor = at;
                    }
                    _ => {
                        cuts += 1;
                        drop(wal);
                        disk.cut_power(|unsynced| rng.gen_range(0..=unsynced));
                        wal = open(&disk).unwrap_or_else(|e| {
                            panic!("seed {seed} step {step}: the log does not open after a power cut: {e}")
                        });
                        for (i, payload) in synced.iter().filter(|(i, _)| **i >= floor) {
                            assert_eq!(
                                wal.read(*i).unwrap().as_ref(),
                                Some(payload),
                                "seed {seed} step {step}: synced entry {i} lost"
                            );
                        }
                        // What survived of the rest is exactly what was written.
                        if let (Some(first), Some(last)) = (wal.first_index(), wal.last_index()) {
                            for i in first.max(floor)..=last {
                                let got = wal.read(i).unwrap().unwrap();
                                let expected = synced.get(&i).or(written.get(&i));
                                assert_eq!(
                                    Some(&got),
                                    expected,
                                    "seed {seed} step {step}: entry {i}"
                                );
                            }
                        }
                        // It is all durable now (the open cut any torn tail).
                        written.clear();
                        synced.clear();
                        if let (Some(first), Some(last)) = (wal.first_index(), wal.last_index()) {
                            for i in first.max(floor)..=last {
                                synced.insert(i, wal.read(i).unwrap().unwrap());
                            }
                        }
                        floor = floor.max(wal.first_index().unwrap_or(wal.start()));
                    }
                }
            }
        }
        assert!(cuts > 500, "only {cuts} power cuts");
    }
}
