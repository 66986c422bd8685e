//! Files that are always replaced whole, atomically and durably: the data dir's identity,
//! the Raft vote and purge point, the applied state and the store's snapshot.
//!
//! A new content is written to `<name>.tmp`, synced, renamed over `<name>` and the folder
//! is synced: a power cut at any point leaves the old content or the new one, never a
//! mix. The content ends with a trailer (`crc32: u32 LE | length: u64 LE | "LTHSLOT1"`),
//! so a damaged file is refused rather than read. Like the logs, the file operations go
//! through the seam of `disk.rs`.
//!
//! Failpoints (tests): `<name>-write` fails the write of the new content, `<name>-sync`
//! its sync.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{Disk, DiskFile};

/// The end of every slot's content.
const MAGIC: &[u8; 8] = b"LTHSLOT1";
/// Bytes of the trailer.
const TRAILER: usize = 4 + 8 + 8;
/// Content is written to the file in pieces of this size.
const CHUNK: usize = 1 << 20;

/// Why a slot cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The content is damaged.
    #[error("{path} is damaged: {what}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        what: Damage,
    },
    /// The content is whole but does not parse as what the slot holds.
    #[error("{path} cannot be read: {source}")]
    Unparsable {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// What is wrong with a framed content (see [`unframe`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// Shorter than the trailer.
    #[error("{0} bytes are too few")]
    TooShort(usize),
    /// No trailer at the end.
    #[error("it does not end with the slot trailer")]
    NoTrailer,
    /// The trailer names another length.
    #[error("its length does not match its trailer")]
    Length,
    /// The checksum differs.
    #[error("its checksum does not match")]
    Checksum,
}

/// Appends the trailer to `content`: what a slot holds (and what a Raft snapshot sends).
pub fn frame(mut content: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&content);
    let len = content.len() as u64;
    content.extend_from_slice(&crc.to_le_bytes());
    content.extend_from_slice(&len.to_le_bytes());
    content.extend_from_slice(MAGIC);
    content
}

/// The content of `framed` (see [`frame`]), once its trailer is checked.
pub fn unframe(framed: &[u8]) -> Result<&[u8], Damage> {
    let Some(body_len) = framed.len().checked_sub(TRAILER) else {
        return Err(Damage::TooShort(framed.len()));
    };
    let (body, trailer) = framed.split_at(body_len);
    if &trailer[12..] != MAGIC {
        return Err(Damage::NoTrailer);
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&trailer[..4]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&trailer[4..12]);
    if u64::from_le_bytes(len) != body.len() as u64 {
        return Err(Damage::Length);
    }
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return Err(Damage::Checksum);
    }
    Ok(body)
}

/// One file, replaced whole (see the module doc).
#[derive(Clone)]
pub struct Slot {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    name: String,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("path", &self.path()).finish()
    }
}

/// An injected I/O error (failpoints, in tests; used only when they are compiled in).
#[allow(dead_code)]
fn injected(point: &str) -> std::io::Error {
    std::io::Error::other(format!("failpoint {point}"))
}

impl Slot {
    /// The slot `name` in the folder `dir` (which must exist) on `disk`.
    pub fn new(disk: Arc<dyn Disk>, dir: &Path, name: &str) -> Self {
        Slot {
            disk,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn tmp(&self) -> PathBuf {
        self.dir.join(format!("{}.tmp", self.name))
    }

    /// The content, as framed on disk (trailer checked); None when the slot was never
    /// written.
    fn read_framed(&self) -> Result<Option<Vec<u8>>, SlotError> {
        let path = self.path();
        let shown = || path.display().to_string();
        let file = match self.disk.open(&path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SlotError::Io {
                    path: shown(),
                    source,
                })
            }
        };
        let bytes = file.read_all().map_err(|source| SlotError::Io {
            path: shown(),
            source,
        })?;
        unframe(&bytes).map_err(|what| SlotError::Damaged {
            path: shown(),
            what,
        })?;
        Ok(Some(bytes))
    }

    /// The content (trailer checked and removed); None when the slot was never written.
    pub fn read(&self) -> Result<Option<Vec<u8>>, SlotError> {
        Ok(self.read_framed()?.map(|mut bytes| {
            bytes.truncate(bytes.len() - TRAILER);
            bytes
        }))
    }

    /// Replaces the content with `content`, durably.
    pub fn write(&self, content: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer()?;
        w.write_all(content)?;
        w.commit()
    }

    /// Replaces the content with `framed`, which already ends with its trailer, checked
    /// by the caller (with [`unframe`], which it needs anyway to read the content).
    pub fn write_framed(&self, framed: &[u8]) -> std::io::Result<()> {
        let file = self.disk.open(&self.tmp(), true)?;
        let mut offset = 0u64;
        for piece in framed.chunks(CHUNK) {
            self.write_piece(&*file, piece, offset)?;
            offset += piece.len() as u64;
        }
        self.install(&*file)
    }

    /// A writer for a new content, streamed to the file; nothing changes until
    /// [`SlotWriter::commit`].
    pub fn writer(&self) -> std::io::Result<SlotWriter> {
        let file = self.disk.open(&self.tmp(), true)?;
        Ok(SlotWriter {
            slot: self.clone(),
            file,
            buf: Vec::with_capacity(CHUNK),
            offset: 0,
            crc: crc32fast::Hasher::new(),
        })
    }

    fn write_piece(&self, file: &dyn DiskFile, piece: &[u8], offset: u64) -> std::io::Result<()> {
        fail::fail_point!(&format!("{}-write", self.name), |_| Err(injected(
            &format!("{}-write", self.name)
        )));
        file.write_at(piece, offset)
    }

    /// Syncs the new content and puts it in place of the old one.
    fn install(&self, file: &dyn DiskFile) -> std::io::Result<()> {
        fail::fail_point!(&format!("{}-sync", self.name), |_| Err(injected(&format!(
            "{}-sync",
            self.name
        ))));
        file.sync()?;
        self.disk.rename(&self.tmp(), &self.path())?;
        self.disk.sync_dir(&self.dir)
    }
}

/// A new content of a [`Slot`], being written.
pub struct SlotWriter {
    slot: Slot,
    file: Arc<dyn DiskFile>,
    buf: Vec<u8>,
    offset: u64,
    crc: crc32fast::Hasher,
}

impl SlotWriter {
    fn spill(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.slot.write_piece(&*self.file, &self.buf, self.offset)?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Ends the content with its trailer, makes it durable and puts it in place.
    pub fn commit(mut self) -> std::io::Result<()> {
        let len = self.offset + self.buf.len() as u64;
        let crc = std::mem::take(&mut self.crc).finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(MAGIC);
        self.spill()?;
        self.slot.install(&*self.file)
    }
}

impl Write for SlotWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.crc.update(data);
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.spill()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::disk::sim::SimDisk;

    #[test]
    fn a_power_cut_leaves_the_old_content_or_the_new_one() {
        let dir = Path::new("/d");
        for cut_after in 0..12 {
            let disk = Arc::new(SimDisk::default());
            disk.create_dir_all(dir).unwrap();
            let slot = Slot::new(disk.clone(), dir, "s");
            slot.write(b"old").unwrap();
            disk.cut_power_after(cut_after);
            let big = vec![7u8; 3 * CHUNK + 5];
            let written = slot.write(&big).is_ok();
            disk.cut_power(|unsynced| unsynced / 2);
            disk.power_on();
            let now = slot.read().unwrap().unwrap();
            assert!(now == b"old" || now == big, "cut after {cut_after} ops");
            if written {
                assert_eq!(now, big, "a write that returned is durable");
            }
        }
    }

    #[test]
    fn damage_is_refused() {
        let dir = Path::new("/d");
        let disk = Arc::new(SimDisk::default());
        disk.create_dir_all(dir).unwrap();
        let slot = Slot::new(disk.clone(), dir, "s");
        slot.write(b"content").unwrap();
        let file = disk.open(&dir.join("s"), false).unwrap();
        file.write_at(b"X", 2).unwrap();
        assert!(matches!(slot.read(), Err(SlotError::Damaged { .. })));
        assert!(Slot::new(disk, dir, "none").read().unwrap().is_none());
        assert_eq!(unframe(&frame(b"abc".to_vec())).unwrap(), b"abc");
    }
}
