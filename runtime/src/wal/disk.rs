//! The file operations of the store (the write-ahead logs of `wal/mod.rs` and the files of
//! `slot.rs`), behind a small seam: the real file system ([`OsDisk`]) in a service, and in
//! tests a simulated disk that keeps only what was synced (`sim`), to check what a power
//! cut leaves behind.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An open file.
pub trait DiskFile: Send + Sync {
    /// The whole content.
    fn read_all(&self) -> std::io::Result<Vec<u8>>;
    /// Fills `buf` from byte `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Writes `buf` at byte `offset` (not durable until [`DiskFile::sync`]).
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Cuts or extends the file to `len` bytes (not durable until synced).
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// Makes the content durable (`fdatasync`).
    fn sync(&self) -> std::io::Result<()>;
    /// Its length in bytes.
    fn size(&self) -> std::io::Result<u64>;
}

/// The folder operations of the store.
pub trait Disk: Send + Sync {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// Opens `path` for reading and writing; with `create`, creates it (empty) if missing
    /// and empties it if present.
    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn DiskFile>>;
    /// Removes the file `path` (durable once its folder is synced).
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    /// Renames `from` to `to` (durable once the folders are synced).
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Makes the entries of `dir` durable (fsync of the folder).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real file system.
pub struct OsDisk;

struct OsFile(File);

impl DiskFile for OsFile {
    fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        (&self.0).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

impl Disk for OsDisk {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir)? {
            if let Some(name) = item?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn DiskFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A simulated disk for tests: it keeps, at a power cut, only what was synced — the
/// content of a file as of its last sync (plus, at random, a prefix of what was appended
/// after it, as pages the kernel wrote back on its own), and the entries of a folder as
/// of its last sync (the idea of ALICE and LazyFS).
///
/// The power can also go at a chosen point: [`SimDisk::cut_power_after`] lets a number of
/// changes (writes, syncs, creations, renames, removals) through, and fails every change
/// after them, as a machine that lost power does no more; [`SimDisk::cut_power`] then
/// decides what the disk kept and [`SimDisk::power_on`] lets a new process use it.
#[cfg(test)]
pub mod sim {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use super::{Disk, DiskFile};

    /// Whether the disk still has power, and how many changes it takes before it goes.
    #[derive(Default)]
    struct Power {
        off: AtomicBool,
        left: Mutex<Option<u64>>,
    }

    impl Power {
        /// Accounts for one change: an error once the power is gone.
        fn change(&self) -> std::io::Result<()> {
            if self.off.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the power is off"));
            }
            let mut left = lock(&self.left);
            match left.as_mut() {
                Some(0) => {
                    self.off.store(true, Ordering::SeqCst);
                    Err(std::io::Error::other("the power is off"))
                }
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }
    }

    #[derive(Default)]
    struct Inode {
        data: Mutex<Vec<u8>>,
        durable: Mutex<Vec<u8>>,
    }

    struct SimFile(Arc<Inode>, Arc<Power>);

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    impl DiskFile for SimFile {
        fn read_all(&self) -> std::io::Result<Vec<u8>> {
            Ok(lock(&self.0.data).clone())
        }

        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            let data = lock(&self.0.data);
            let start = offset as usize;
            let src = data
                .get(start..start + buf.len())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            Ok(())
        }

        fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            self.1.change()?;
            let mut data = lock(&self.0.data);
            let end = offset as usize + buf.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset as usize..end].copy_from_slice(buf);
            Ok(())
        }

        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.1.change()?;
            lock(&self.0.data).resize(len as usize, 0);
            Ok(())
        }

        fn sync(&self) -> std::io::Result<()> {
            self.1.change()?;
            let data = lock(&self.0.data).clone();
            *lock(&self.0.durable) = data;
            Ok(())
        }

        fn size(&self) -> std::io::Result<u64> {
            Ok(lock(&self.0.data).len() as u64)
        }
    }

    #[derive(Default)]
    struct Folder {
        current: BTreeMap<String, Arc<Inode>>,
        durable: BTreeMap<String, Arc<Inode>>,
    }

    /// The simulated disk.
    #[derive(Default)]
    pub struct SimDisk {
        folders: Mutex<BTreeMap<PathBuf, Folder>>,
        power: Arc<Power>,
    }

    fn split(path: &Path) -> std::io::Result<(PathBuf, String)> {
        match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(dir), Some(name)) => Ok((dir.to_path_buf(), name.to_string())),
            _ => Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
        }
    }

    fn missing() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    impl SimDisk {
        /// Lets `changes` more changes through; the power goes at the next one.
        pub fn cut_power_after(&self, changes: u64) {
            *lock(&self.power.left) = Some(changes);
        }

        /// Whether the power went (by [`SimDisk::cut_power_after`]).
        pub fn is_off(&self) -> bool {
            self.power.off.load(Ordering::SeqCst)
        }

        /// Turns the power on again (after [`SimDisk::cut_power`]), for a new process.
        pub fn power_on(&self) {
            *lock(&self.power.left) = None;
            self.power.off.store(false, Ordering::SeqCst);
        }

        /// Cuts the power: every folder goes back to its synced entries, every file to its
        /// synced content plus, when it only grew since, the first `keep(unsynced bytes)`
        /// of what it gained.
        ///
        /// Whoever used the disk must be gone by then, or its power off.
        pub fn cut_power(&self, mut keep: impl FnMut(usize) -> usize) {
            let mut folders = lock(&self.folders);
            let mut done: Vec<*const Inode> = Vec::new();
            for folder in folders.values_mut() {
                folder.current = folder.durable.clone();
                for inode in folder.current.values() {
                    let key = Arc::as_ptr(inode);
                    if done.contains(&key) {
                        continue;
                    }
                    done.push(key);
                    let mut data = lock(&inode.data);
                    let durable = lock(&inode.durable).clone();
                    let kept = if data.len() > durable.len() && data.starts_with(&durable) {
                        let extra = keep(data.len() - durable.len());
                        data[..durable.len() + extra].to_vec()
                    } else {
                        durable
                    };
                    *data = kept.clone();
                    *lock(&inode.durable) = kept;
                }
            }
        }
    }

    impl Disk for SimDisk {
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            if !lock(&self.folders).contains_key(dir) {
                self.power.change()?;
            }
            lock(&self.folders).entry(dir.to_path_buf()).or_default();
            Ok(())
        }

        fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            let folders = lock(&self.folders);
            let folder = folders.get(dir).ok_or_else(missing)?;
            Ok(folder.current.keys().cloned().collect())
        }

        fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn DiskFile>> {
            let (dir, name) = split(path)?;
            if create {
                self.power.change()?;
            }
            let mut folders = lock(&self.folders);
            let folder = folders.get_mut(&dir).ok_or_else(missing)?;
            let inode = match folder.current.get(&name) {
                Some(inode) => {
                    if create {
                        lock(&inode.data).clear();
                    }
                    inode.clone()
                }
                None if create => {
                    let inode = Arc::new(Inode::default());
                    folder.current.insert(name, inode.clone());
                    inode
                }
                None => return Err(missing()),
            };
            Ok(Arc::new(SimFile(inode, self.power.clone())))
        }

        fn remove(&self, path: &Path) -> std::io::Result<()> {
            let (dir, name) = split(path)?;
            self.power.change()?;
            let mut folders = lock(&self.folders);
            let folder = folders.get_mut(&dir).ok_or_else(missing)?;
            folder.current.remove(&name).map(|_| ()).ok_or_else(missing)
        }

        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            let ((fdir, fname), (tdir, tname)) = (split(from)?, split(to)?);
            self.power.change()?;
            let mut folders = lock(&self.folders);
            let inode = folders
                .get_mut(&fdir)
                .and_then(|f| f.current.remove(&fname))
                .ok_or_else(missing)?;
            folders
                .get_mut(&tdir)
                .ok_or_else(missing)?
                .current
                .insert(tname, inode);
            Ok(())
        }

        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.power.change()?;
            let mut folders = lock(&self.folders);
            let folder = folders.get_mut(dir).ok_or_else(missing)?;
            folder.durable = folder.current.clone();
            Ok(())
        }
    }
}
