//! The durable write: hidden temp file in the final directory → `fsync` →
//! rename without replacing → directory `fsync`.
//!
//! A reader never sees a partial file under a final name, an existing file is
//! never replaced (`RENAME_NOREPLACE`), and a failed write removes its temp
//! file. With `fsync = false` the two syncs are skipped: faster, but a power
//! cut can lose the newest files. Each encoder thread owns a [`Writer`],
//! which keeps its name buffers and the open directory between frames, so a
//! file costs the syscalls above and nothing more.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags, RenameFlags};

use super::beneath::{self, BeneathError, Create, Held};
use super::manifest::{Line, Rfc3339};
use super::{naming, Store, StoreError};
use crate::frame::{Frame, ImageFormat, WrittenFile};

/// Why a file could not be written. The frame is lost; nothing on disk is
/// damaged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} already exists and is never replaced (is another program writing these names?)"
    )]
    Exists { path: PathBuf },
    #[error(transparent)]
    Beneath(#[from] BeneathError),
    #[error("cannot make the output directory again")]
    Store(#[source] Box<StoreError>),
    #[error("{dir} is no longer this recorder's (its locks could not be taken back); nothing is written")]
    NotOurs { dir: PathBuf },
    #[error("{path} keeps moving away while files are written into it")]
    Moving { path: PathBuf },
}

impl WriteError {
    /// Whether the disk or the user's quota is full (ENOSPC, EDQUOT).
    pub(crate) fn is_disk_full(&self) -> bool {
        let full = |e: &io::Error| {
            matches!(
                rustix::io::Errno::from_io_error(e),
                Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
            )
        };
        match self {
            WriteError::Io { source, .. } => full(source),
            WriteError::Beneath(BeneathError::Io { source, .. }) => full(source),
            _ => false,
        }
    }
}

/// An encoder thread's writer: reusable buffers and the current directory.
pub(crate) struct Writer<'s> {
    store: &'s Store,
    /// The file's name relative to the output directory, and its path.
    name: String,
    path: PathBuf,
    temp: String,
    line: Vec<u8>,
    /// The directory last written into, open.
    current_dir: Option<Held>,
}

/// What the manifest needs to know about the frame behind a file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileInfo {
    pub seq: u64,
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub pixel_format: &'static str,
    pub format: ImageFormat,
}

impl FileInfo {
    pub(crate) fn of(frame: &Frame, format: ImageFormat) -> FileInfo {
        FileInfo {
            seq: frame.seq,
            captured_at: frame.captured_at,
            width: frame.width,
            height: frame.height,
            pixel_format: frame.format.name(),
            format,
        }
    }
}

/// An error maker for `map_err`: the path is copied only if it is used.
fn io_error<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> WriteError + 'p {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// How a write attempt ended short of success.
enum Attempt {
    /// The directory moved away or was removed under the write: open it
    /// again and write once more.
    Retry,
    /// The directory moved away between the check and the rename: the file
    /// is in it, outside the tree, and must be brought back.
    Landed,
    Failed(WriteError),
}

impl<'s> Writer<'s> {
    pub(crate) fn new(store: &'s Store) -> Writer<'s> {
        Writer {
            store,
            name: String::new(),
            path: PathBuf::new(),
            temp: String::new(),
            line: Vec::new(),
            current_dir: None,
        }
    }

    /// Opens the directory `relative` beneath the output directory (making
    /// what is missing, and the output directory itself if it was removed).
    fn open_dir(&mut self, relative: &str) -> Result<(), WriteError> {
        let store = self.store;
        let create = Some(Create {
            mode: store.dir_mode(),
            sync: store.fsync(),
        });
        self.current_dir = None;
        // The output directory may have been removed, or removed and made
        // again by someone else: then it is made ours again (its locks,
        // manifest and mark) before anything is written into it.
        let reestablish = || {
            store
                .reestablish()
                .map_err(|e| WriteError::Store(Box::new(e)))
        };
        let held = match beneath::open(&store.dir, relative, create) {
            Err(e) if e.root_is_gone() => {
                reestablish()?;
                beneath::open(&store.dir, relative, create)?
            }
            other => other?,
        };
        reestablish()?;
        self.current_dir = Some(held);
        Ok(())
    }

    /// Writes `bytes` as the file for `info.seq`, durably, and returns it
    /// (with the error of its manifest line, if only that failed).
    /// `dropped_before` is asked for only once the file is durable.
    pub(crate) fn write(
        &mut self,
        info: FileInfo,
        parts: &[&[u8]],
        dropped_before: impl FnOnce(&WrittenFile<'_>) -> u64,
    ) -> Result<(WrittenFile<'_>, Option<WriteError>), WriteError> {
        let store = self.store;
        // Nothing is written into a directory another recorder has taken
        // (its lock files replaced): take them back, or stop writing.
        let owned = store.owned.load(std::sync::atomic::Ordering::SeqCst);
        if !store.is_ours() && (!owned || store.reestablish().is_err()) {
            return Err(WriteError::NotOurs {
                dir: store.dir.clone(),
            });
        }
        store.template.render(
            &store.camera,
            info.seq,
            info.captured_at,
            store.timezone(),
            info.format.extension(),
            &mut self.name,
        );
        self.path.as_mut_os_string().clear();
        self.path.push(&store.dir);
        self.path.push(&self.name);
        // Taken while the file is written (the steps borrow the writer),
        // and put back: their buffers are reused for the next file.
        let name = std::mem::take(&mut self.name);
        let path = std::mem::take(&mut self.path);
        let written = self.write_named(&name, &path, info, parts);
        self.name = name;
        self.path = path;
        written?;
        let file = WrittenFile {
            seq: info.seq,
            path: &self.path,
            relative: &self.name,
            len: parts.iter().map(|p| p.len() as u64).sum(),
        };
        let dropped = dropped_before(&file);
        let manifest_error = store.manifest().and_then(|manifest| {
            let entry = Line {
                seq: info.seq,
                path: &self.name,
                captured_at: Rfc3339(info.captured_at),
                camera: &store.camera,
                width: info.width,
                height: info.height,
                pixel_format: info.pixel_format,
                format: info.format.name(),
                bytes: file.len,
                dropped_before: dropped,
            };
            // The image is durable; only its manifest line can be missing.
            manifest
                .append(&entry, &mut self.line)
                .err()
                .map(|source| WriteError::Io {
                    op: "append to",
                    path: manifest.path().to_owned(),
                    source,
                })
        });
        Ok((file, manifest_error))
    }

    /// Writes the file `name` (at `final_path`) durably.
    fn write_named(
        &mut self,
        name: &str,
        final_path: &Path,
        info: FileInfo,
        parts: &[&[u8]],
    ) -> Result<(), WriteError> {
        let store = self.store;
        let (dir_part, file_name) = name.rsplit_once('/').unwrap_or(("", name));
        naming::temp_name(file_name, &mut self.temp);
        // A second try only when the directory moved away under the first.
        let mut tries = 0;
        loop {
            tries += 1;
            if self
                .current_dir
                .as_ref()
                .is_none_or(|held| held.relative != dir_part)
            {
                self.open_dir(dir_part)?;
            }
            match self.try_write(info.seq, file_name, final_path, parts) {
                Ok(()) => break,
                Err(Attempt::Retry) if tries < 3 => self.current_dir = None,
                Err(Attempt::Retry) => {
                    self.current_dir = None;
                    return Err(WriteError::Moving {
                        path: final_path.parent().unwrap_or(&store.dir).to_owned(),
                    });
                }
                Err(Attempt::Landed) => {
                    self.bring_back(dir_part, file_name, final_path)?;
                    break;
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// One try: temp file in the open directory → write → sync → check the
    /// directory is still in the output tree → mark → rename → sync the
    /// directory. The temp file never outlives a failed try.
    fn try_write(
        &self,
        seq: u64,
        file_name: &str,
        final_path: &Path,
        parts: &[&[u8]],
    ) -> Result<(), Attempt> {
        let store = self.store;
        let Some(held) = self.current_dir.as_ref() else {
            return Err(Attempt::Retry);
        };
        let temp = self.temp.as_str();
        let temp_error = |op| {
            move |source| WriteError::Io {
                op,
                path: final_path.with_file_name(temp),
                source,
            }
        };
        let mut file = match create_temp(&held.dir, temp, store.file_mode()) {
            Ok(file) => file,
            // Removed under us (by a person or a cleanup job): make it again
            // rather than fail every frame from now on.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Attempt::Retry),
            Err(e) => return Err(Attempt::Failed(temp_error("create")(e))),
        };
        let written = write_all_parts(&mut file, parts)
            .map_err(temp_error("write"))
            .and_then(|()| {
                if store.fsync() {
                    file.sync_data().map_err(temp_error("fsync"))
                } else {
                    Ok(())
                }
            });
        drop(file);
        let remove_temp = || {
            let _ = rustix::fs::unlinkat(&held.dir, temp, rustix::fs::AtFlags::empty());
        };
        if let Err(e) = written {
            remove_temp();
            return Err(Attempt::Failed(e));
        }
        // Moved out of the tree (or removed) since it was opened: the file
        // would land outside the output directory.
        if !held.still_here() {
            remove_temp();
            return Err(Attempt::Retry);
        }
        // The mark must cover this number before the file can be seen.
        let renamed = store
            .mark
            .cover(seq)
            .map_err(io_error("record the sequence number of", final_path))
            .and_then(|()| rename_no_replace(&held.dir, temp, file_name, final_path));
        if let Err(e) = renamed {
            remove_temp();
            return Err(Attempt::Failed(e));
        }
        if store.fsync() {
            held.dir
                .sync_all()
                .map_err(io_error("fsync the directory of", final_path))
                .map_err(Attempt::Failed)?;
        }
        // Moved away in the instant between the check and the rename.
        if !held.still_here() {
            return Err(Attempt::Landed);
        }
        Ok(())
    }

    /// The file `file_name` went into the held directory just as it was
    /// moved out of the tree: moves it back into the directory made again in
    /// its place (the same filesystem: a move within it is a rename).
    fn bring_back(
        &mut self,
        dir_part: &str,
        file_name: &str,
        final_path: &Path,
    ) -> Result<(), WriteError> {
        let moved = self.current_dir.take();
        self.open_dir(dir_part)?;
        let (Some(from), Some(to)) = (moved, self.current_dir.as_ref()) else {
            return Err(WriteError::Moving {
                path: final_path.to_owned(),
            });
        };
        rustix::fs::renameat_with(
            &from.dir,
            file_name,
            &to.dir,
            file_name,
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| io_error("move back into the output directory", final_path)(e.into()))?;
        if self.store.fsync() {
            to.dir
                .sync_all()
                .map_err(io_error("fsync the directory of", final_path))?;
        }
        Ok(())
    }
}

/// Writes every part, in order, with as few `writev` calls as it takes.
fn write_all_parts(file: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: [io::IoSlice<'_>; 4] = [io::IoSlice::new(&[]); 4];
    let mut count = 0;
    for part in parts.iter().filter(|p| !p.is_empty()).take(slices.len()) {
        slices[count] = io::IoSlice::new(part);
        count += 1;
    }
    let mut slices = &mut slices[..count];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates a new temp file in `dir`, replacing a stale one of the same name.
fn create_temp(dir: &File, name: &str, mode: u32) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let mode = Mode::from_raw_mode(mode);
    match rustix::fs::openat(dir, name, flags, mode) {
        Ok(fd) => Ok(File::from(fd)),
        Err(rustix::io::Errno::EXIST) => {
            rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty())?;
            Ok(File::from(rustix::fs::openat(dir, name, flags, mode)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Renames `from` to `to` in `dir`, failing if `to` exists.
fn rename_no_replace(
    dir: &File,
    from: &str,
    to: &str,
    final_path: &Path,
) -> Result<(), WriteError> {
    match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::EXIST) => Err(WriteError::Exists {
            path: final_path.to_owned(),
        }),
        // A filesystem without RENAME_NOREPLACE: link() also refuses to
        // replace; then drop the temp name.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            match rustix::fs::linkat(dir, from, dir, to, rustix::fs::AtFlags::empty()) {
                Ok(()) => {
                    let _ = rustix::fs::unlinkat(dir, from, rustix::fs::AtFlags::empty());
                    Ok(())
                }
                Err(rustix::io::Errno::EXIST) => Err(WriteError::Exists {
                    path: final_path.to_owned(),
                }),
                // No hard links either (FAT, some FUSE filesystems): look, then
                // rename. Only a foreign writer could race us here: our own
                // numbers are guarded by the lock.
                Err(rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP) => {
                    match rustix::fs::statat(dir, to, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                        Err(rustix::io::Errno::NOENT) => rustix::fs::renameat(dir, from, dir, to)
                            .map_err(|e| io_error("rename into", final_path)(e.into())),
                        Ok(_) => Err(WriteError::Exists {
                            path: final_path.to_owned(),
                        }),
                        // Cannot tell whether it exists: do not risk replacing it.
                        Err(e) => Err(io_error("check before renaming into", final_path)(e.into())),
                    }
                }
                Err(e) => Err(io_error("rename into", final_path)(e.into())),
            }
        }
        Err(e) => Err(io_error("rename into", final_path)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::TimeZone;
    use crate::store::naming::Template;
    use crate::store::Options;

    fn store(dir: &Path) -> Store {
        let options = Options {
            dir: dir.to_owned(),
            name: Template::parse("{time:%Y}/{seq}.{ext}").unwrap(),
            timezone: TimeZone::Utc,
            fsync: true,
            manifest: true,
            file_mode: 0o640,
            dir_mode: 0o750,
        };
        Store::open("c", &options, None).unwrap().0
    }

    fn info(seq: u64) -> FileInfo {
        FileInfo {
            seq,
            captured_at: SystemTime::UNIX_EPOCH,
            width: 1,
            height: 1,
            pixel_format: "gray",
            format: ImageFormat::Png,
        }
    }

    #[test]
    fn writes_whole_files_and_never_replaces_one() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let mut writer = Writer::new(&store);
        let (file, manifest_error) = writer.write(info(1), &[b"first"], |_| 0).unwrap();
        assert!(manifest_error.is_none());
        assert_eq!(file.relative, "1970/0000000001.png");
        let path = file.path.to_owned();
        assert_eq!(path, root.path().join("1970/0000000001.png"));
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let err = writer.write(info(1), &[b"second"], |_| 0).unwrap_err();
        assert!(matches!(err, WriteError::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let left = std::fs::read_dir(root.path().join("1970")).unwrap().count();
        assert_eq!(left, 1, "a temp file was left behind");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o007, 0, "readable by everyone: {mode:o}");
    }

    #[test]
    fn a_directory_removed_while_recording_is_made_again() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path());
        let mut writer = Writer::new(&store);
        writer.write(info(1), &[b"a"], |_| 0).unwrap();
        std::fs::remove_dir_all(root.path().join("1970")).unwrap();
        let (file, _) = writer.write(info(2), &[b"b"], |_| 0).unwrap();
        assert_eq!(
            std::fs::read(file.path).unwrap(),
            b"b",
            "the file went into a deleted directory"
        );
    }
}
