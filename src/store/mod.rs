//! The store: where snapshots go and how they get there safely.
//!
//! At start-up `Store::open` creates `output.dir`, takes a lock so two
//! recorders never number into the same files, sweeps temp files a crash left
//! behind, and finds the highest sequence number on disk (and in the
//! manifest) so numbering continues and never repeats. Each owned file the
//! start-up [`scan`] finds can be handed to a [`Visitor`] (the supervisor
//! passes one that fills retention's index). While recording, each encoder
//! thread has a `write::Writer` that renders names ([`naming`]) and writes
//! files durably; the `manifest` gets a line per file once it is durable.

pub(crate) mod beneath;
pub(crate) mod manifest;
mod mark;
pub mod naming;
pub(crate) mod write;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::SystemTime;

use crate::frame::TimeZone;
use beneath::BeneathError;
use manifest::Manifest;
use mark::SeqMark;
use naming::{NameMatcher, Template};

/// Where and how files are written (`[output]`).
#[derive(Clone, Debug)]
pub struct Options {
    pub dir: PathBuf,
    /// The file name template, relative to `dir`.
    pub name: Template,
    pub timezone: TimeZone,
    /// Sync each file and its directory before counting it written.
    pub fsync: bool,
    /// Append a line per written file to `manifest.jsonl`.
    pub manifest: bool,
    /// Permission bits of written files (before the umask).
    pub file_mode: u32,
    /// Permission bits of created directories (before the umask).
    pub dir_mode: u32,
}

/// Extensions framerec writes; files with any of them count for numbering.
pub const EXTENSIONS: [&str; 2] = ["jpg", "png"];

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("cannot create output directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another framerec is recording camera '{camera}' into {dir} (lock {lock} is held); stop it or use another output.dir or camera")]
    Locked {
        camera: String,
        dir: PathBuf,
        lock: PathBuf,
    },
    #[error("another framerec is recording into {dir} (lock {lock} is held) and one of the two has an output.name without {{camera}}, so their file names could collide; give each camera's template a {{camera}}, or use another output.dir")]
    DirLocked { dir: PathBuf, lock: PathBuf },
    #[error("the filesystem of {dir} takes names of at most {limit} bytes, and output.name makes names of up to {longest} (with the temp file's '.' and \".tmp\"): shorten output.name or the camera name")]
    NameTooLong {
        dir: PathBuf,
        longest: usize,
        limit: usize,
    },
    #[error("camera '{other}' is recording into {dir} with output.name = \"{theirs}\", this one with \"{ours}\": cameras sharing a directory must use one template, or their names could be taken for each other's; use the same output.name, or another output.dir")]
    OtherTemplate {
        dir: PathBuf,
        other: String,
        theirs: String,
        ours: String,
    },
    #[error("cannot take the lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot scan output directory {path}")]
    Scan {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sequence numbers in {dir} are exhausted (a file or manifest line has number {highest}); use a new output.dir or camera")]
    SeqExhausted { dir: PathBuf, highest: u64 },
    #[error(transparent)]
    Mark(#[from] mark::MarkError),
    #[error("cannot write the sequence mark in {dir}")]
    MarkWrite {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the manifest in {dir}")]
    Manifest {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Whether another recorder holds the output directory (or its names).
    pub(crate) fn is_taken(&self) -> bool {
        matches!(
            self,
            StoreError::Locked { .. }
                | StoreError::DirLocked { .. }
                | StoreError::OtherTemplate { .. }
        )
    }
}

/// What start-up found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Files of this camera already on disk.
    pub files: u64,
    /// The highest sequence number seen on disk or in the manifest.
    pub highest_seq: Option<u64>,
    /// Temp files from an earlier crash that were removed.
    pub swept: u64,
}

impl Found {
    /// The sequence number the next snapshot gets.
    pub fn next_seq(&self) -> u64 {
        self.highest_seq.map_or(1, |s| s.saturating_add(1))
    }
}

/// The output directory, opened for recording.
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) template: Template,
    pub(crate) camera: String,
    /// The `[output]` options a reload may change.
    live: LiveOptions,
    /// Opened at start, or at the reload that turns the manifest on.
    manifest: std::sync::OnceLock<Manifest>,
    /// Numbers used, kept apart from the images and the manifest.
    pub(crate) mark: SeqMark,
    /// The directory's lock and the camera's, held for the life of the
    /// store (released when the process ends), and taken again if the
    /// output directory has to be made anew.
    locks: std::sync::Mutex<[File; 2]>,
    /// Where those locks are: the directory's, the camera's.
    lock_paths: [PathBuf; 2],
    /// Held while the output directory is made anew.
    reestablishing: std::sync::Mutex<()>,
    /// The output directory and its locks are this recorder's; false while
    /// they could not be taken back (another recorder took them): then
    /// nothing is written.
    pub(crate) owned: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens `options.dir` for recording `camera`. See the module docs.
    /// With `visitor`, every owned file found is handed to it.
    pub(crate) fn open(
        camera: &str,
        options: &Options,
        visitor: Option<Visitor<'_>>,
    ) -> Result<(Store, Found), StoreError> {
        let out = options;
        // Absolute, so file paths compare with what the watcher reports
        // whatever the working directory.
        let dir = std::path::absolute(&out.dir).map_err(|source| StoreError::CreateDir {
            path: out.dir.clone(),
            source,
        })?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(out.dir_mode)
            .create(&dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        check_name_lengths(&dir, camera, &out.name)?;
        let [dir_lock, lock] = take_locks(&dir, camera, &out.name, out.file_mode)?;
        let has_camera = out.name.has_camera();
        let mark_name = if has_camera {
            format!(".framerec-{camera}.seq")
        } else {
            ".framerec.seq".to_owned()
        };
        let (mark, marked) = SeqMark::open(&dir, &mark_name, out.fsync, out.file_mode)?;
        let matcher = out.name.matcher(camera, &EXTENSIONS);
        let mut found = scan(&dir, out.name.depth(), &matcher, Sweep::TempFiles, visitor).map_err(
            |source| StoreError::Scan {
                path: dir.clone(),
                source,
            },
        )?;
        let manifest = std::sync::OnceLock::new();
        if out.manifest {
            let (opened, highest) = Manifest::open(&dir, camera, out.fsync, out.file_mode)
                .map_err(|source| StoreError::Manifest {
                    dir: dir.clone(),
                    source,
                })?;
            found.highest_seq = found.highest_seq.max(highest);
            let _ = manifest.set(opened);
        }
        found.highest_seq = found.highest_seq.max(Some(marked).filter(|&m| m > 0));
        if found.highest_seq == Some(u64::MAX) {
            return Err(StoreError::SeqExhausted {
                dir,
                highest: u64::MAX,
            });
        }
        let lock_paths = [dir.join(DIR_LOCK), dir.join(camera_lock_name(camera))];
        Ok((
            Store {
                lock_paths,
                dir,
                template: out.name.clone(),
                camera: camera.to_owned(),
                live: LiveOptions::new(out),
                manifest,
                mark,
                locks: std::sync::Mutex::new([dir_lock, lock]),
                reestablishing: std::sync::Mutex::new(()),
                owned: std::sync::atomic::AtomicBool::new(true),
            },
            found,
        ))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Applies a reload's `[output]` options: the time zone of names,
    /// `fsync`, `manifest` and the modes, from the next file on. `dir` and
    /// `name` cannot change while recording (the caller checks).
    pub(crate) fn apply(&self, out: &Options) -> Result<(), StoreError> {
        if out.manifest && self.manifest.get().is_none() {
            let (opened, _) = Manifest::open(&self.dir, &self.camera, out.fsync, out.file_mode)
                .map_err(|source| StoreError::Manifest {
                    dir: self.dir.clone(),
                    source,
                })?;
            let _ = self.manifest.set(opened);
        }
        self.live.set(out);
        if let Some(manifest) = self.manifest.get() {
            manifest.set_fsync(out.fsync);
        }
        self.mark.set_options(out.fsync, out.file_mode);
        Ok(())
    }

    pub(crate) fn fsync(&self) -> bool {
        self.live.fsync.load(Relaxed)
    }

    pub(crate) fn file_mode(&self) -> u32 {
        self.live.file_mode.load(Relaxed)
    }

    pub(crate) fn dir_mode(&self) -> u32 {
        self.live.dir_mode.load(Relaxed)
    }

    pub(crate) fn timezone(&self) -> TimeZone {
        if self.live.local_time.load(Relaxed) {
            TimeZone::Local
        } else {
            TimeZone::Utc
        }
    }

    /// The manifest, when lines are appended to it.
    pub(crate) fn manifest(&self) -> Option<&Manifest> {
        self.manifest
            .get()
            .filter(|_| self.live.manifest.load(Relaxed))
    }

    /// Whether the lock files this store holds are the ones in the output
    /// directory now (not files of a directory removed since).
    fn locks_in_place(&self) -> bool {
        self.locks_present().iter().all(|&present| present)
    }

    /// For the directory's lock and the camera's: whether the file this
    /// store holds locked is the one under that name now.
    fn locks_present(&self) -> [bool; 2] {
        let locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = [false; 2];
        for ((lock, path), present) in locks.iter().zip(&self.lock_paths).zip(&mut present) {
            let held = rustix::fs::fstat(lock);
            let there =
                rustix::fs::statat(rustix::fs::CWD, path, rustix::fs::AtFlags::SYMLINK_NOFOLLOW);
            *present = matches!((held, there), (Ok(a), Ok(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino));
        }
        present
    }

    /// Whether the output directory is this recorder's right now: nobody
    /// has taken it over, and its lock files are the ones it holds. Checked
    /// before each file and each deletion (four `statx` calls).
    pub(crate) fn is_ours(&self) -> bool {
        self.owned.load(std::sync::atomic::Ordering::SeqCst) && self.locks_in_place()
    }

    /// The output directory was removed or moved away while recording:
    /// makes it again, takes its locks, and starts a new manifest and
    /// sequence mark there, so recording goes on in the right place and no
    /// second recorder can start on it. Nothing happens if another encoder
    /// thread has done it already.
    pub(crate) fn reestablish(&self) -> Result<(), StoreError> {
        let _once = self
            .reestablishing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let result = self.take_back();
        self.owned
            .store(result.is_ok(), std::sync::atomic::Ordering::SeqCst);
        result
    }

    fn take_back(&self) -> Result<(), StoreError> {
        let dir_there = self.dir.is_dir();
        let present = if dir_there {
            self.locks_present()
        } else {
            [false; 2]
        };
        if present == [true; 2] {
            return Ok(());
        }
        if !dir_there {
            tracing::warn!(dir = %self.dir.display(), "the output directory was removed or moved away; making it again");
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.dir_mode())
                .create(&self.dir)
                .map_err(|source| StoreError::CreateDir {
                    path: self.dir.clone(),
                    source,
                })?;
        } else {
            tracing::warn!(dir = %self.dir.display(), "a lock file of the output directory was removed; taking it again");
        }
        // Only the locks that are gone: one still held through this
        // store's descriptor would block against itself.
        {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            if !present[0] {
                locks[0] = take_dir_lock(&self.dir, &self.template, self.file_mode())?;
            }
            if !present[1] {
                locks[1] =
                    take_camera_lock(&self.dir, &self.camera, &self.template, self.file_mode())?;
            }
        }
        if dir_there {
            return Ok(());
        }
        if let Some(manifest) = self.manifest.get() {
            manifest
                .reopen(&self.dir, &self.camera)
                .map_err(|source| StoreError::Manifest {
                    dir: self.dir.clone(),
                    source,
                })?;
        }
        self.mark
            .rewrite()
            .map_err(|source| StoreError::MarkWrite {
                dir: self.dir.clone(),
                source,
            })?;
        Ok(())
    }

    /// At shutdown: syncs the manifest and writes the exact sequence mark.
    pub(crate) fn finish(&self) -> io::Result<()> {
        // A recorder whose directory another has taken leaves the mark to it.
        let mark = if self.is_ours() {
            self.mark.finish()
        } else {
            Ok(())
        };
        match self.manifest.get() {
            Some(m) => m.sync(),
            None => Ok(()),
        }?;
        mark
    }
}

/// The `[output]` options a reload may change, read per file.
#[derive(Debug)]
struct LiveOptions {
    fsync: AtomicBool,
    manifest: AtomicBool,
    file_mode: AtomicU32,
    dir_mode: AtomicU32,
    local_time: AtomicBool,
}

impl LiveOptions {
    fn new(out: &Options) -> LiveOptions {
        let live = LiveOptions {
            fsync: AtomicBool::new(false),
            manifest: AtomicBool::new(false),
            file_mode: AtomicU32::new(0),
            dir_mode: AtomicU32::new(0),
            local_time: AtomicBool::new(false),
        };
        live.set(out);
        live
    }

    fn set(&self, out: &Options) {
        self.fsync.store(out.fsync, Relaxed);
        self.manifest.store(out.manifest, Relaxed);
        self.file_mode.store(out.file_mode, Relaxed);
        self.dir_mode.store(out.dir_mode, Relaxed);
        self.local_time
            .store(out.timezone == TimeZone::Local, Relaxed);
    }
}

/// An owned file found by [`scan`].
#[derive(Clone, Copy, Debug)]
pub struct Owned<'a> {
    pub seq: u64,
    /// Relative to the output directory, '/'-separated.
    pub relative: &'a str,
    pub bytes: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// Refuses names the filesystem under `dir` cannot hold (some allow fewer
/// than 255 bytes a name), rather than failing every write.
fn check_name_lengths(dir: &Path, camera: &str, template: &Template) -> Result<(), StoreError> {
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let limit = st.f_namemax as usize;
    // Long month and day names, the widest number.
    let sample = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_726_654_000, 999_999_999);
    let mut name = String::new();
    template.render(camera, u64::MAX, sample, TimeZone::Local, "jpg", &mut name);
    // The temp file's name is the longest: '.' + name + ".tmp".
    match name.split('/').map(|part| part.len() + 5).max() {
        Some(longest) if limit > 0 && longest > limit => Err(StoreError::NameTooLong {
            dir: dir.to_owned(),
            longest,
            limit,
        }),
        _ => Ok(()),
    }
}

/// Takes the output directory's lock and the camera's. What a recorder may
/// write is its camera's names, or with no `{camera}` in the template, any
/// name in the directory: the directory's lock is shared by recorders whose
/// names include their camera, and taken whole by one whose names do not.
fn take_locks(
    dir: &Path,
    camera: &str,
    template: &Template,
    mode: u32,
) -> Result<[File; 2], StoreError> {
    let dir_lock = take_dir_lock(dir, template, mode)?;
    let lock = take_camera_lock(dir, camera, template, mode)?;
    Ok([dir_lock, lock])
}

/// The name of a camera's lock file.
fn camera_lock_name(camera: &str) -> String {
    format!(".framerec-{camera}.lock")
}

/// The directory's lock: shared, or whole for a template without `{camera}`.
fn take_dir_lock(dir: &Path, template: &Template, mode: u32) -> Result<File, StoreError> {
    take_lock(&dir.join(DIR_LOCK), !template.has_camera(), mode).map_err(|e| match e {
        LockFailure::Held(lock) => StoreError::DirLocked {
            dir: dir.to_owned(),
            lock,
        },
        LockFailure::Io(path, source) => StoreError::Lock { path, source },
    })
}

/// The camera's lock, with the template declared in it. Recorders of other
/// cameras in this directory must write by the same template, or one's
/// names could be another's (camera "jpg" with "a-{seq}.{camera}" writes
/// camera "a"'s "{camera}-{seq}.{ext}" names).
fn take_camera_lock(
    dir: &Path,
    camera: &str,
    template: &Template,
    mode: u32,
) -> Result<File, StoreError> {
    let lock_path = dir.join(camera_lock_name(camera));
    let lock = take_lock(&lock_path, true, mode).map_err(|e| match e {
        LockFailure::Held(lock) => StoreError::Locked {
            camera: camera.to_owned(),
            dir: dir.to_owned(),
            lock,
        },
        LockFailure::Io(path, source) => StoreError::Lock { path, source },
    })?;
    let declared = lock
        .set_len(0)
        .and_then(|()| lock.write_all_at(template.as_str().as_bytes(), 0));
    declared.map_err(|source| StoreError::Lock {
        path: lock_path.clone(),
        source,
    })?;
    if let Some((other, theirs)) = other_templates(dir, camera)
        .into_iter()
        .find(|(_, theirs)| theirs != template.as_str())
    {
        return Err(StoreError::OtherTemplate {
            dir: dir.to_owned(),
            other,
            theirs,
            ours: template.as_str().to_owned(),
        });
    }
    Ok(lock)
}

/// The templates other running recorders in `dir` declared in their
/// camera locks: (camera, template), for the locks held now. A held lock
/// whose template cannot be read counts as a different one (what cannot be
/// checked is not trusted).
fn other_templates(dir: &Path, camera: &str) -> Vec<(String, String)> {
    use std::io::{Read as _, Seek as _};
    let unreadable = || "(a template that cannot be read)".to_owned();
    let mut found = Vec::new();
    let own = camera_lock_name(camera);
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(other) = name
            .strip_prefix(".framerec-")
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        if name == own || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let file = match beneath::open_file(dir, &name, File::options().read(true)) {
            Ok(file) => file,
            // Gone since the listing: nobody's.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // Not ours to read (another user's): it counts only if held.
            Err(_) => {
                if held_per_proc_locks(&dir.join(&name)) {
                    found.push((other.to_owned(), unreadable()));
                }
                continue;
            }
        };
        // Held (by a running recorder) when it cannot be taken.
        let held = match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(fs::TryLockError::WouldBlock) => true,
            Err(fs::TryLockError::Error(_)) => true,
        };
        if !held {
            continue;
        }
        // A recorder starting this instant writes its template just after
        // taking its lock: read again a few times before judging.
        let mut theirs = unreadable();
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let mut bytes = Vec::new();
            let read = (&file).seek(std::io::SeekFrom::Start(0)).and_then(|_| {
                (&file)
                    .take(naming::MAX_TEMPLATE_LEN as u64 + 1)
                    .read_to_end(&mut bytes)
            });
            match (read, String::from_utf8(bytes)) {
                (Ok(_), Ok(text)) if !text.is_empty() => {
                    let settled = text == theirs;
                    theirs = text;
                    if settled {
                        break;
                    }
                }
                _ => theirs = unreadable(),
            }
        }
        found.push((other.to_owned(), theirs));
    }
    found
}

/// Whether a process holds a lock on the file at `path`, from
/// `/proc/locks` (for a file this process cannot open); when that cannot be
/// told, it is taken as held.
fn held_per_proc_locks(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false; // gone
    };
    let Ok(locks) = fs::read_to_string("/proc/locks") else {
        return true;
    };
    // Lines such as "1: FLOCK ADVISORY WRITE 1234 fd:01:5678 0 EOF": the
    // device as major:minor in hex, then the inode.
    let (major, minor) = (rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    locks
        .lines()
        .any(|line| line.split_whitespace().any(|field| field == wanted))
}

/// The lock every recorder in a directory takes: shared when its names
/// include its camera, whole when they do not.
const DIR_LOCK: &str = ".framerec.lock";

enum LockFailure {
    /// Another process holds it.
    Held(PathBuf),
    Io(PathBuf, io::Error),
}

/// Opens (creating) the lock file at `path` and locks it, `exclusive` or
/// shared, without waiting. A symlink there is refused, not followed.
fn take_lock(path: &Path, exclusive: bool, mode: u32) -> Result<File, LockFailure> {
    let (dir, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => (dir, name),
        _ => {
            return Err(LockFailure::Io(
                path.to_owned(),
                io::ErrorKind::InvalidInput.into(),
            ))
        }
    };
    let lock = beneath::open_file(
        dir,
        name,
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(mode),
    )
    .map_err(|e| LockFailure::Io(path.to_owned(), e))?;
    let locked = if exclusive {
        lock.try_lock()
    } else {
        lock.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(LockFailure::Held(path.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(LockFailure::Io(path.to_owned(), e)),
    }
}

/// Hears of each owned file a [`scan`] finds.
pub struct Visitor<'v> {
    /// Whether sizes and times are wanted (a stat per file: most of the
    /// cost of a cold scan). Without, they are 0.
    pub stat: bool,
    /// Called once per owned file, in no particular order.
    pub visit: &'v mut dyn FnMut(Owned<'_>),
}

/// Seconds since the Unix epoch of a file time.
pub(crate) fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Threads that read directories at once during a scan: reading directories
/// and inodes waits on the disk, so more reads in flight than cores pays off
/// when the cache is cold (after a reboot).
const SCAN_THREADS: usize = 8;

/// What one directory at the files' level holds.
struct DirScan {
    /// The directory, relative, with a trailing '/' (empty for the root).
    prefix: String,
    /// Owned files: seq, name, bytes, mtime.
    files: Vec<(u64, String, u64, u64)>,
    swept: u64,
}

/// What [`scan`] does besides counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sweep {
    /// Remove owned temp files (`.NAME.tmp`) left by a crash: only at
    /// start-up, before any encoder writes.
    TempFiles,
    /// Leave them: encoders may be writing them right now.
    Nothing,
}

/// Walks `dir` down to `depth` levels: counts owned files and finds the
/// highest sequence number, sweeping as `sweep` says. With `visitor`, each
/// owned file is also handed to it.
pub fn scan(
    dir: &Path,
    depth: usize,
    matcher: &NameMatcher,
    sweep: Sweep,
    mut visitor: Option<Visitor<'_>>,
) -> io::Result<Found> {
    // The directories that hold files: those at the template's depth.
    let mut leaves: Vec<(PathBuf, String)> = Vec::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(dir.to_owned(), String::new(), 1)];
    while let Some((path, prefix, level)) = stack.pop() {
        if level >= depth {
            leaves.push((path, prefix));
            continue;
        }
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            // A directory removed while scanning is simply gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound && level > 1 => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if let Ok(name) = entry.file_name().into_string() {
                    stack.push((entry.path(), format!("{prefix}{name}/"), level + 1));
                }
            }
        }
    }

    let with_metadata = visitor.as_ref().is_some_and(|v| v.stat);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = crossbeam_channel::bounded::<io::Result<DirScan>>(SCAN_THREADS * 2);
    std::thread::scope(|scope| {
        for _ in 0..SCAN_THREADS.min(leaves.len()) {
            let tx = tx.clone();
            let (leaves, next) = (&leaves, &next);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, prefix)) = leaves.get(i) else {
                    break;
                };
                if tx
                    .send(scan_dir(dir, prefix, matcher, sweep, with_metadata))
                    .is_err()
                {
                    break;
                }
            });
        }
        drop(tx);
        let mut found = Found::default();
        let mut relative = String::new();
        for result in rx {
            let listing = result?;
            found.swept += listing.swept;
            for (seq, name, bytes, mtime) in &listing.files {
                found.files += 1;
                found.highest_seq = found.highest_seq.max(Some(*seq));
                if let Some(Visitor { visit, .. }) = visitor.as_mut() {
                    relative.clear();
                    relative.push_str(&listing.prefix);
                    relative.push_str(name);
                    visit(Owned {
                        seq: *seq,
                        relative: &relative,
                        bytes: *bytes,
                        mtime: *mtime,
                    });
                }
            }
        }
        Ok(found)
    })
}

/// Reads one directory at the files' level.
fn scan_dir(
    root: &Path,
    prefix: &str,
    matcher: &NameMatcher,
    sweep: Sweep,
    with_metadata: bool,
) -> io::Result<DirScan> {
    let mut listing = DirScan {
        prefix: prefix.to_owned(),
        files: Vec::new(),
        swept: 0,
    };
    // Reached and read without following links: a directory swapped for a
    // link since the walk above saw it is refused, not read.
    let held = match beneath::open(root, prefix.trim_end_matches('/'), None) {
        Ok(held) => held,
        Err(BeneathError::Io { source, .. })
            if source.kind() == io::ErrorKind::NotFound && !prefix.is_empty() =>
        {
            return Ok(listing)
        }
        Err(BeneathError::Io { source, .. }) => return Err(source),
        Err(refused) => {
            tracing::warn!(error = %crate::stats::Chain(&refused), "not scanning there");
            return Ok(listing);
        }
    };
    let mut relative = String::new();
    for entry in rustix::fs::Dir::read_from(&held.dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue; // not UTF-8: not a name framerec writes
        };
        let kind = entry.file_type();
        if !matches!(
            kind,
            rustix::fs::FileType::RegularFile | rustix::fs::FileType::Unknown
        ) {
            continue;
        }
        let temp_of = naming::final_name_of_temp(name);
        relative.clear();
        relative.push_str(prefix);
        relative.push_str(temp_of.unwrap_or(name));
        let Some(seq) = matcher.seq(&relative) else {
            continue;
        };
        if temp_of.is_some() {
            if sweep == Sweep::Nothing {
                continue;
            }
            match beneath::unlink(&held, name) {
                Ok(()) => listing.swept += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let needs_stat = with_metadata || kind == rustix::fs::FileType::Unknown;
        let (bytes, mtime) = if needs_stat {
            match rustix::fs::statat(&held.dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st)
                    if rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::RegularFile =>
                {
                    (st.st_size as u64, u64::try_from(st.st_mtime).unwrap_or(0))
                }
                Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            }
        } else {
            (0, 0)
        };
        let (bytes, mtime) = if with_metadata {
            (bytes, mtime)
        } else {
            (0, 0)
        };
        listing.files.push((seq, name.to_owned(), bytes, mtime));
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_the_highest_owned_seq_and_sweeps_temp_files() {
        let root = tempfile::tempdir().unwrap();
        let template = Template::parse("{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}").unwrap();
        let matcher = template.matcher("cam0", &EXTENSIONS);
        let day = root.path().join("cam0/2024-03-05");
        fs::create_dir_all(&day).unwrap();
        fs::create_dir_all(root.path().join("cam1/2024-03-05")).unwrap();
        for name in [
            "cam0-0000000007.jpg",
            "cam0-0000000012.png",
            "notes.txt",
            "cam0-0000000099.jpg.bak",
        ] {
            fs::write(day.join(name), b"x").unwrap();
        }
        fs::write(
            root.path().join("cam1/2024-03-05/cam1-0000000500.jpg"),
            b"x",
        )
        .unwrap();
        fs::write(day.join(".cam0-0000000013.jpg.tmp"), b"partial").unwrap();
        fs::write(day.join(".other.tmp"), b"not ours").unwrap();
        let found = scan(
            root.path(),
            template.depth(),
            &matcher,
            Sweep::TempFiles,
            None,
        )
        .unwrap();
        assert_eq!(
            found,
            Found {
                files: 2,
                highest_seq: Some(12),
                swept: 1
            }
        );
        assert_eq!(found.next_seq(), 13);
        assert!(!day.join(".cam0-0000000013.jpg.tmp").exists());
        assert!(day.join(".other.tmp").exists());
        assert!(day.join("notes.txt").exists());
    }
}
