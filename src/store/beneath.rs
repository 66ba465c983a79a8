//! Opening directories beneath the output directory without trusting what
//! is in it: each component is opened with `O_NOFOLLOW | O_DIRECTORY` from
//! the one above it, so a symbolic link planted anywhere under `output.dir`
//! is refused, never followed, and nothing framerec writes, appends to or
//! deletes can be aimed outside the directory. The output directory itself
//! is the user's own setting and may be reached through links.
//!
//! A directory kept open between files can be moved away or removed while
//! recording; [`Held::still_here`] tells, with one `statx` of its path, so
//! writes and deletions never land in a directory that has left the tree.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// Why a directory beneath the output directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BeneathError {
    #[error("{path} is a symbolic link or not a directory: framerec never follows links under output.dir (remove it, or let framerec make the directory)")]
    NotADirectory { path: PathBuf },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl BeneathError {
    /// Whether the output directory itself is gone (removed or moved away).
    pub(crate) fn root_is_gone(&self) -> bool {
        matches!(self, BeneathError::Io { op: "open", source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A directory opened beneath the output directory, with where it was.
pub(crate) struct Held {
    /// Relative to the output directory, '/'-separated ("" for itself).
    pub(crate) relative: String,
    pub(crate) dir: File,
    /// The output directory's path, and its device and inode.
    root: (PathBuf, (u64, u64)),
    /// From this directory up to the output directory: "..", "../..", ...
    /// with the device and inode each named when it was opened.
    ancestors: Vec<(String, (u64, u64))>,
}

impl Held {
    /// Whether the directory is still where it was in the output tree: the
    /// output directory's path still names the same directory, and each
    /// level above this one is the one it was (".." never follows a link,
    /// so a directory moved away and replaced by a link is told apart).
    pub(crate) fn still_here(&self) -> bool {
        !self.root_replaced()
            && self.ancestors.iter().all(|(up, expected)| {
                rustix::fs::statat(&self.dir, up.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| (st.st_dev, st.st_ino) == *expected)
            })
    }

    /// Whether the output directory's path names another directory now (or
    /// none): it was removed, or moved away and perhaps made again.
    pub(crate) fn root_replaced(&self) -> bool {
        let root = rustix::fs::statat(rustix::fs::CWD, &self.root.0, AtFlags::empty());
        !root.is_ok_and(|st| (st.st_dev, st.st_ino) == self.root.1)
    }
}

/// How missing directories are made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Create {
    pub(crate) mode: u32,
    /// Sync each new directory into its parent.
    pub(crate) sync: bool,
}

/// Opens `relative` ('/'-separated) beneath `root`, component by component
/// without following links; with `create`, missing components are made.
pub(crate) fn open(
    root: &Path,
    relative: &str,
    create: Option<Create>,
) -> Result<Held, BeneathError> {
    let io_error = |op, path: &Path| {
        let path = path.to_owned();
        move |source: Errno| BeneathError::Io {
            op,
            path,
            source: source.into(),
        }
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir =
        File::from(rustix::fs::open(root, flags, Mode::empty()).map_err(io_error("open", root))?);
    let id_of = |dir: &File, path: &Path| {
        rustix::fs::fstat(dir)
            .map(|st| (st.st_dev, st.st_ino))
            .map_err(io_error("look at", path))
    };
    // Device and inode of each level, from the output directory down.
    let mut ids = vec![id_of(&dir, root)?];
    let mut path = root.to_owned();
    for component in relative.split('/').filter(|c| !c.is_empty()) {
        path.push(component);
        if let Some(create) = create {
            match rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(create.mode)) {
                Ok(()) => {
                    if create.sync {
                        dir.sync_all().map_err(|source| BeneathError::Io {
                            op: "fsync the directory above",
                            path: path.clone(),
                            source,
                        })?;
                    }
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(io_error("create the directory", &path)(e)),
            }
        }
        dir = File::from(open_child(&dir, component, &path)?);
        ids.push(id_of(&dir, &path)?);
    }
    let root_id = ids[0];
    // This directory's own id is not needed: its parents' are.
    ids.pop();
    let mut up = String::new();
    let ancestors = ids
        .iter()
        .rev()
        .map(|id| {
            if !up.is_empty() {
                up.push('/');
            }
            up.push_str("..");
            (up.clone(), *id)
        })
        .collect();
    Ok(Held {
        relative: relative.to_owned(),
        dir,
        root: (root.to_owned(), root_id),
        ancestors,
    })
}

/// Opens the directory `name` in `parent`, refusing a link.
fn open_child(parent: &File, name: &str, path: &Path) -> Result<rustix::fd::OwnedFd, BeneathError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::LOOP | Errno::NOTDIR) => Err(BeneathError::NotADirectory {
            path: path.to_owned(),
        }),
        Err(e) => Err(BeneathError::Io {
            op: "open the directory",
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

/// Removes the file `name` from the held directory, if it is still where
/// it was (a directory moved out of the tree keeps its files).
pub(crate) fn unlink(held: &Held, name: &str) -> io::Result<()> {
    if !held.still_here() {
        return Err(io::ErrorKind::NotFound.into());
    }
    Ok(rustix::fs::unlinkat(&held.dir, name, AtFlags::empty())?)
}

/// Removes the empty directory `name` in `parent`.
pub(crate) fn remove_dir(parent: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
}

/// Opens a file directly in the output directory (the manifest, a lock, the
/// sequence mark) as `options` say, without following a link planted under
/// its name and without waiting on a FIFO planted there: anything but a
/// regular file is refused.
pub(crate) fn open_file(
    dir: &Path,
    name: &str,
    options: &mut std::fs::OpenOptions,
) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let not_regular = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file (framerec keeps its own file there): remove it",
                path.display()
            ),
        )
    };
    let opened = options
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(&path);
    let file = match opened {
        Ok(file) => file,
        // A link, FIFO, socket or device under the name: say so.
        Err(e) => {
            let planted = std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file());
            return Err(if planted { not_regular() } else { e });
        }
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

impl AsFd for Held {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_and_makes_what_is_missing() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("cam0")).unwrap();
        let create = Some(Create {
            mode: 0o750,
            sync: false,
        });
        let err = open(root.path(), "cam0/2024", create).err().unwrap();
        assert!(matches!(err, BeneathError::NotADirectory { .. }), "{err}");
        assert!(
            !outside.path().join("2024").exists(),
            "made a directory through the link"
        );
        let held = open(root.path(), "cam1/2024", create).unwrap();
        assert!(root.path().join("cam1/2024").is_dir());
        assert!(held.still_here());
        std::fs::rename(root.path().join("cam1"), outside.path().join("moved")).unwrap();
        assert!(!held.still_here(), "a moved directory still looks in place");
        // Moved away and a link to it put in its place: still not here.
        std::os::unix::fs::symlink(outside.path().join("moved"), root.path().join("cam1")).unwrap();
        assert!(
            !held.still_here(),
            "a link to a moved directory looks in place"
        );
        // The output directory itself moved away and made again.
        let held = open(root.path(), "cam2", create).unwrap();
        let old = outside.path().join("old-root");
        std::fs::rename(root.path(), &old).unwrap();
        std::fs::create_dir(root.path()).unwrap();
        assert!(held.root_replaced());
        assert!(!held.still_here());
    }
}
