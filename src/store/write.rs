//! The durable write: hidden temp file in the final directory → `fsync` →
//! rename without replacing → directory `fsync`.
//!
//! A reader never sees a partial file under a final name, an existing file is
//! never replaced (`RENAME_NOREPLACE`), and a failed write removes its temp
//! file. With `fsync = false` the two syncs are skipped: faster, but a power
//! cut can lose the newest files. Each encoder thread owns a [`Writer`],
//! which keeps its name buffers and the open directory between frames, so a
//! file costs the syscalls above and nothing more.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags, RenameFlags};

use super::manifest::{Line, Rfc3339};
use super::{naming, Store};
use crate::frame::{Frame, ImageFormat, WrittenFile};

/// Why a file could not be written. The frame is lost; nothing on disk is
/// damaged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
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
}

impl WriteError {
    /// Whether the disk or the user's quota is full (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            WriteError::Io { source, .. } => matches!(
                rustix::io::Errno::from_io_error(source),
                Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
            ),
            WriteError::Exists { .. } => false,
        }
    }
}

/// An encoder thread's writer: reusable buffers and the current directory.
pub struct Writer<'s> {
    store: &'s Store,
    name: String,
    temp: String,
    line: Vec<u8>,
    /// The directory (relative, '/'-separated) last written into, open.
    current_dir: Option<(String, File)>,
}

/// What the manifest needs to know about the frame behind a file.
#[derive(Clone, Copy, Debug)]
pub struct FileInfo {
    pub seq: u64,
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub pixel_format: &'static str,
    pub format: ImageFormat,
    pub dropped_before: u64,
}

impl FileInfo {
    pub fn of(frame: &Frame, format: ImageFormat) -> FileInfo {
        FileInfo {
            seq: frame.seq,
            captured_at: frame.captured_at,
            width: frame.width,
            height: frame.height,
            pixel_format: frame.format.name(),
            format,
            dropped_before: 0,
        }
    }
}

fn io_error(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.into();
    move |source| WriteError::Io { op, path, source }
}

impl<'s> Writer<'s> {
    pub fn new(store: &'s Store) -> Writer<'s> {
        Writer {
            store,
            name: String::new(),
            temp: String::new(),
            line: Vec::new(),
            current_dir: None,
        }
    }

    /// Writes `bytes` as the file for `info.seq`, durably, and returns it
    /// (with the error of its manifest line, if only that failed).
    /// `dropped_before` is asked for only once the file is durable.
    pub fn write(
        &mut self,
        info: FileInfo,
        bytes: &[u8],
        dropped_before: impl FnOnce(&WrittenFile) -> u64,
    ) -> Result<(WrittenFile, Option<WriteError>), WriteError> {
        let store = self.store;
        store.template.render(
            &store.camera,
            info.seq,
            info.captured_at,
            store.timezone,
            info.format.extension(),
            &mut self.name,
        );
        let (dir_part, file_name) = match self.name.rsplit_once('/') {
            Some((d, f)) => (d, f),
            None => ("", self.name.as_str()),
        };
        let final_path = store.dir.join(&self.name);
        let dir_file = match &self.current_dir {
            Some((current, file)) if current == dir_part => file,
            _ => {
                let file = open_dir(store, dir_part)?;
                &self.current_dir.insert((dir_part.to_owned(), file)).1
            }
        };
        naming::temp_name(file_name, &mut self.temp);
        let temp_path = || final_path.with_file_name(&self.temp);

        let mut file = create_temp(dir_file, &self.temp, store.file_mode)
            .map_err(io_error("create", temp_path()))?;
        let written = file
            .write_all(bytes)
            .map_err(io_error("write", temp_path()))
            .and_then(|()| {
                if store.fsync {
                    file.sync_data().map_err(io_error("fsync", temp_path()))
                } else {
                    Ok(())
                }
            });
        drop(file);
        let renamed =
            written.and_then(|()| rename_no_replace(dir_file, &self.temp, file_name, &final_path));
        if let Err(e) = renamed {
            let _ =
                rustix::fs::unlinkat(dir_file, self.temp.as_str(), rustix::fs::AtFlags::empty());
            return Err(e);
        }
        if store.fsync {
            dir_file
                .sync_all()
                .map_err(io_error("fsync the directory of", final_path.clone()))?;
        }
        let file = WrittenFile {
            seq: info.seq,
            path: final_path,
            len: bytes.len() as u64,
        };
        let dropped = dropped_before(&file);
        if let Some(manifest) = &store.manifest {
            let line = Line {
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
            if let Err(source) = manifest.append(&line, &mut self.line) {
                // The image is durable; only its manifest line is missing.
                let error = WriteError::Io {
                    op: "append to",
                    path: manifest.path().to_owned(),
                    source,
                };
                return Ok((file, Some(error)));
            }
        }
        Ok((file, None))
    }
}

/// Opens (creating as needed) a directory below the output directory. New
/// directories are synced into their parents when `fsync` is on.
fn open_dir(store: &Store, relative: &str) -> Result<File, WriteError> {
    let mut path = store.dir.clone();
    for component in relative.split('/').filter(|c| !c.is_empty()) {
        let parent = path.clone();
        path.push(component);
        match fs::DirBuilder::new().mode(store.dir_mode).create(&path) {
            Ok(()) => {
                if store.fsync {
                    sync_dir(&parent).map_err(io_error("fsync the directory", parent))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create the directory", path)(e)),
        }
    }
    let fd = rustix::fs::open(
        &path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error("open the directory", path.clone())(e.into()))?;
    Ok(File::from(fd))
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
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
                Err(e) => Err(io_error("rename into", final_path)(e.into())),
            }
        }
        Err(e) => Err(io_error("rename into", final_path)(e.into())),
    }
}
