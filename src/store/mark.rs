//! The sequence mark: a small file in the output directory holding a number
//! at least as high as any sequence number ever given to a durable file of
//! this namespace (the camera's, or the whole directory's when the template
//! has no `{camera}`). Numbering continues after it, so numbers never repeat
//! even when every image is deleted and there is no manifest to read.
//!
//! Writing it per file would cost a sync per frame: instead numbers are
//! reserved in blocks. Before a file numbered past the reservation becomes
//! visible, the mark is moved [`BLOCK`] numbers ahead (written to a new file,
//! synced, renamed over the old one). A clean shutdown writes the exact
//! highest number used, so only a crash skips numbers (at most [`BLOCK`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// The longest mark file read: a u64 in decimal and a newline.
const MAX_MARK_BYTES: u64 = 64;

/// How far ahead numbers are reserved.
pub(crate) const BLOCK: u64 = 1024;

/// The mark of one namespace, shared by the encoder threads.
pub(crate) struct SeqMark {
    path: PathBuf,
    fsync: AtomicBool,
    mode: AtomicU32,
    /// Numbers up to this one are covered by the mark on disk.
    reserved: AtomicU64,
    /// The highest number a file was written under in this run.
    used: AtomicU64,
    /// Held while the file is rewritten.
    writing: Mutex<()>,
}

/// Why the mark could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MarkError {
    #[error("cannot read the sequence mark {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is in the way of the sequence mark (framerec writes a file there): remove it")]
    Obstructed { path: PathBuf },
    #[error("the sequence mark {path} does not hold a number ({text:?}); it is framerec's record of the numbers used: restore it, or remove it if no file of this camera was ever written into this directory")]
    Damaged { path: PathBuf, text: String },
}

impl SeqMark {
    /// Reads the mark named `name` in `dir` (none yet: 0).
    pub(crate) fn open(
        dir: &Path,
        name: &str,
        fsync: bool,
        mode: u32,
    ) -> Result<(SeqMark, u64), MarkError> {
        let path = dir.join(name);
        // Where new marks are written: anything but a file there (a
        // directory someone made) would fail every write later.
        let new_path = dir.join(format!("{name}.new"));
        if std::fs::symlink_metadata(&new_path).is_ok_and(|m| !m.is_file()) {
            return Err(MarkError::Obstructed { path: new_path });
        }
        let read_error = |source| MarkError::Read {
            path: path.clone(),
            source,
        };
        let highest = match super::beneath::open_file(dir, name, File::options().read(true)) {
            Ok(file) => {
                let mut text = String::new();
                // A number and a newline; anything longer is not a mark.
                file.take(MAX_MARK_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(read_error)?;
                if text.len() as u64 > MAX_MARK_BYTES {
                    return Err(MarkError::Damaged {
                        path: path.clone(),
                        text: format!("{}...", text.chars().take(16).collect::<String>()),
                    });
                }
                text.trim().parse().map_err(|_| MarkError::Damaged {
                    path: path.clone(),
                    text: text.clone(),
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(read_error(e)),
        };
        Ok((
            SeqMark {
                path,
                fsync: AtomicBool::new(fsync),
                mode: AtomicU32::new(mode),
                reserved: AtomicU64::new(highest),
                used: AtomicU64::new(0),
                writing: Mutex::new(()),
            },
            highest,
        ))
    }

    /// Makes sure the mark on disk covers `seq` before a file with that
    /// number becomes visible. Costs an atomic load, and a small synced
    /// write once every [`BLOCK`] numbers.
    pub(crate) fn cover(&self, seq: u64) -> io::Result<()> {
        self.used.fetch_max(seq, Ordering::Relaxed);
        if seq <= self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if seq <= self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let ahead = seq.saturating_add(BLOCK);
        self.write(ahead)?;
        self.reserved.store(ahead, Ordering::Release);
        Ok(())
    }

    /// At a clean shutdown: the mark becomes the highest number used (the
    /// reservation beyond it is given back), if any file was written.
    pub(crate) fn finish(&self) -> io::Result<()> {
        let used = self.used.load(Ordering::Relaxed);
        if used == 0 {
            return Ok(());
        }
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write(used)?;
        self.reserved.store(used, Ordering::Release);
        Ok(())
    }

    /// A reload's `fsync` and file mode, from the next write on.
    pub(crate) fn set_options(&self, fsync: bool, mode: u32) {
        self.fsync.store(fsync, Ordering::Relaxed);
        self.mode.store(mode, Ordering::Relaxed);
    }

    /// Writes the mark again (its directory was made anew).
    pub(crate) fn rewrite(&self) -> io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write(self.reserved.load(Ordering::Acquire))
    }

    /// Replaces the mark with `value`, durably: new file, sync, rename over.
    fn write(&self, value: u64) -> io::Result<()> {
        let mut new_path = self.path.clone().into_os_string();
        new_path.push(".new");
        let new_path = PathBuf::from(new_path);
        // A fresh file (whatever lay there before, a planted FIFO or link
        // included, is removed first, never opened).
        match std::fs::remove_file(&new_path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(self.mode.load(Ordering::Relaxed))
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&new_path)?;
        file.write_all(format!("{value}\n").as_bytes())?;
        let fsync = self.fsync.load(Ordering::Relaxed);
        if fsync {
            file.sync_data()?;
        }
        drop(file);
        std::fs::rename(&new_path, &self.path)?;
        if fsync {
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_ahead_and_gives_back_at_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, highest) = SeqMark::open(dir.path(), ".m", true, 0o640).unwrap();
        assert_eq!(highest, 0);
        mark.cover(1).unwrap();
        let on_disk = || std::fs::read_to_string(dir.path().join(".m")).unwrap();
        assert_eq!(on_disk(), format!("{}\n", 1 + BLOCK));
        mark.cover(2).unwrap();
        mark.cover(BLOCK).unwrap();
        assert_eq!(
            on_disk(),
            format!("{}\n", 1 + BLOCK),
            "rewritten within a block"
        );
        mark.cover(BLOCK + 7).unwrap();
        assert_eq!(on_disk(), format!("{}\n", 2 * BLOCK + 7));
        mark.finish().unwrap();
        assert_eq!(on_disk(), format!("{}\n", BLOCK + 7));
        let (_, highest) = SeqMark::open(dir.path(), ".m", true, 0o640).unwrap();
        assert_eq!(highest, BLOCK + 7);
    }

    #[test]
    fn a_damaged_mark_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".m"), "12x").unwrap();
        let err = SeqMark::open(dir.path(), ".m", true, 0o640).err().unwrap();
        assert!(err.to_string().contains(".m"), "{err}");
    }
}
