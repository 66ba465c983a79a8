//! Retention: keeps the output inside its quota by deleting framerec's own
//! oldest files, for months, on the real filesystem.
//!
//! - [`index`]: the compact index of owned files (seq, size, time, place).
//! - [`plan`]: the pure planner that says how many of the oldest must go.
//! - this module: the retention thread. It starts from the start-up scan,
//!   learns of each written file from the encoders, of files people or sync
//!   tools delete, move or add from an inotify watcher, and rescans now and
//!   then as a safety net. It enforces the quota after every file and once a
//!   second (for `max_age` and `min_free`), and frees room on request when a
//!   write found the disk full.
//!
//! The thread runs even without a quota (then it only waits), so that a
//! reload can set one: the index is then built by a scan, and the watcher
//! started.
//!
//! Only names the template could have produced for this camera are ever
//! deleted; notes, other cameras' files and anything else are left alone.
//! Directories emptied by deletions are removed.

pub mod index;
pub mod plan;

use std::collections::HashSet;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, tick, Receiver, Sender};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::frame::WrittenFile;

/// The longest relative name a [`Notice`] carries; a longer one is found by
/// the watcher instead.
const NOTICE_NAME: usize = 240;

/// A written file, as the encoders tell retention of it: no heap memory,
/// so the per-frame path allocates nothing.
#[derive(Debug)]
pub(crate) struct Notice {
    seq: u64,
    len: u64,
    name: [u8; NOTICE_NAME],
    name_len: u8,
}

impl Notice {
    fn of(file: &WrittenFile<'_>) -> Option<Notice> {
        let bytes = file.relative.as_bytes();
        let mut name = [0; NOTICE_NAME];
        name.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Notice {
            seq: file.seq,
            len: file.len,
            name,
            name_len: bytes.len() as u8,
        })
    }

    fn relative(&self) -> &str {
        std::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or("")
    }
}
use crate::stats::{Chain, RateLimit, Stats};
use crate::store::beneath::{self, BeneathError, Held};
use crate::store::naming::NameMatcher;
use crate::store::{self, epoch_secs};
use index::Index;
use plan::{plan_deletions, Reason, Space};
pub use plan::{MinFree, Quota};

/// How often quotas that change with time (`max_age`, `min_free`) are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long to wait after a directory is removed or moved from outside
/// before rescanning (several such events usually come together).
const RESCAN_DELAY: Duration = Duration::from_secs(2);

/// What the encoders tell the retention thread.
#[derive(Debug)]
pub(crate) enum Request {
    /// A file is durable.
    Written(Notice),
    /// A write found the disk full: free at least this many bytes, then answer.
    MakeRoom { bytes: u64, reply: Sender<bool> },
    /// A reload changed the quota.
    Quota(Quota),
}

/// The encoders' handle on the retention thread.
#[derive(Clone)]
pub(crate) struct Handle {
    tx: Sender<Request>,
}

impl Handle {
    /// Tells retention about a written file (never blocks: if the queue is
    /// full, the next rescan finds the file).
    pub(crate) fn written(&self, file: &WrittenFile<'_>) {
        if let Some(notice) = Notice::of(file) {
            let _ = self.tx.try_send(Request::Written(notice));
        }
    }

    /// Gives retention a reload's quota (applied at once; the index is
    /// built first if the quota needs facts it did not keep).
    pub(crate) fn set_quota(&self, quota: Quota) -> bool {
        self.tx
            .send_timeout(Request::Quota(quota), Duration::from_secs(5))
            .is_ok()
    }

    /// Asks for `bytes` of room and waits (up to a few seconds) for the
    /// answer: true if anything was deleted.
    pub(crate) fn make_room(&self, bytes: u64) -> bool {
        let (reply, answer) = bounded(1);
        if self
            .tx
            .send_timeout(Request::MakeRoom { bytes, reply }, Duration::from_secs(5))
            .is_err()
        {
            return false;
        }
        answer
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or(false)
    }
}

/// The entries of a directory: name, and whether it is a directory (links
/// are neither followed nor listed as directories).
fn list(held: &Held) -> Vec<(String, bool)> {
    let Ok(dir) = rustix::fs::Dir::read_from(&held.dir) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str().ok()?;
            if name == "." || name == ".." {
                return None;
            }
            match entry.file_type() {
                rustix::fs::FileType::Directory => Some((name.to_owned(), true)),
                rustix::fs::FileType::RegularFile | rustix::fs::FileType::Unknown => {
                    Some((name.to_owned(), false))
                }
                _ => None,
            }
        })
        .collect()
}

/// Space on the filesystem holding `dir`.
pub(crate) fn space_of(dir: &Path) -> Option<Space> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(Space {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        total: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// Logs the quotas that the filesystem makes impossible or meaningless.
/// `ours` is the bytes of framerec's files already there.
pub(crate) fn warn_about_quota(quota: &Quota, dir: &Path, ours: u64) {
    let Some(space) = space_of(dir) else { return };
    if let Some(max_bytes) = quota.max_bytes {
        if max_bytes > space.total {
            tracing::warn!(
                max_bytes,
                filesystem_bytes = space.total,
                dir = %dir.display(),
                "retention.max_bytes is larger than the whole filesystem: the disk will fill first (add min_free)"
            );
        }
    }
    if let Some(min_free) = quota.min_free {
        let floor = min_free.bytes(space.total);
        if floor < space.total && floor > space.available + ours {
            tracing::warn!(
                min_free = floor,
                available_bytes = space.available,
                framerec_bytes = ours,
                dir = %dir.display(),
                "retention.min_free cannot be met even by deleting all of framerec's files: other data fills the disk"
            );
        }
        if floor >= space.total {
            tracing::warn!(
                min_free = min_free.bytes(space.total),
                filesystem_bytes = space.total,
                dir = %dir.display(),
                "retention.min_free is as large as the filesystem: every file but the newest will be deleted"
            );
        }
    }
}

/// The retention thread's state.
pub(crate) struct Retention<'a> {
    /// Whose directory it is (retention stops when another recorder has it).
    store: &'a store::Store,
    root: PathBuf,
    /// A path buffer, reused.
    scratch: PathBuf,
    quota: Quota,
    index: Index,
    matcher: NameMatcher,
    depth: usize,
    stats: &'a Stats,
    /// Directories this thread removed, so their events are not news.
    removed_dirs: HashSet<PathBuf>,
    /// The directory files were last deleted from, open.
    held: Option<Held>,
    rescan_at: Option<Instant>,
    /// New directories to look in once more (files put in them before the
    /// watcher watched them, after the first look, are seen then).
    look_again: Vec<(Instant, String)>,
    error_limit: RateLimit,
    started: Instant,
    /// Rescan every so often even when nothing looks wrong.
    rescan_every: Duration,
}

impl<'a> Retention<'a> {
    pub(crate) fn new(
        store: &'a store::Store,
        quota: Quota,
        index: Index,
        matcher: NameMatcher,
        depth: usize,
        stats: &'a Stats,
    ) -> Retention<'a> {
        Retention {
            store,
            root: store.dir().to_owned(),
            scratch: PathBuf::new(),
            quota,
            index,
            matcher,
            depth,
            stats,
            removed_dirs: HashSet::new(),
            held: None,
            rescan_at: None,
            look_again: Vec::new(),
            error_limit: RateLimit::default(),
            started: Instant::now(),
            rescan_every: Duration::from_secs(600),
        }
    }

    /// The channel the encoders send on, and the receiving end for `run`.
    pub(crate) fn channel() -> (Handle, Receiver<Request>) {
        let (tx, rx) = bounded(1024);
        (Handle { tx }, rx)
    }

    fn log_error(&self, what: &str, error: &dyn std::error::Error) {
        if let Some(suppressed) = self
            .error_limit
            .allow(self.started.elapsed().as_millis() as u64)
        {
            tracing::warn!(error = %Chain(error), similar_suppressed = suppressed, "retention: {what}");
        }
    }

    /// Starts watching the output directory (None if it cannot).
    fn watch(
        &mut self,
        event_tx: &Sender<notify::Result<notify::Event>>,
    ) -> Option<notify::RecommendedWatcher> {
        let event_tx = event_tx.clone();
        let watcher = notify::recommended_watcher(event_tx).and_then(|mut w| {
            w.watch(&self.root, RecursiveMode::Recursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    error = %Chain(&e),
                    dir = %self.root.display(),
                    "cannot watch the output directory; changes made by others are seen at the next rescan"
                );
                self.rescan_every = Duration::from_secs(60);
                None
            }
        }
    }

    /// A reload's quota. The index is rebuilt from the disk when the old
    /// quota kept none (or lacked the sizes and times the new one needs).
    fn set_quota(&mut self, quota: Quota) {
        let had = self.quota;
        self.quota = quota;
        if quota.is_empty() {
            // Nothing is deleted any more; a quota set again rescans.
            self.index = self.index.empty_like();
            return;
        }
        let needs_ages = quota.max_age.is_some() && had.max_age.is_none();
        if needs_ages {
            self.index.track_ages();
        }
        if had.is_empty() || needs_ages || (quota.needs_file_facts() && !had.needs_file_facts()) {
            self.rescan();
            let usage = self.index.usage();
            tracing::info!(
                files = usage.files,
                mib = usage.bytes >> 20,
                "retention: indexed the files on disk for the new quota"
            );
            warn_about_quota(&quota, &self.root, usage.bytes);
        }
    }

    /// Runs until every [`Handle`] is dropped (the encoders are done).
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        let (event_tx, events) = bounded::<notify::Result<notify::Event>>(4096);
        let mut watcher = None;
        if !self.quota.is_empty() {
            watcher = self.watch(&event_tx);
        }
        let checks = tick(CHECK_EVERY);
        let mut last_rescan = Instant::now();
        self.enforce(0);
        loop {
            select! {
                recv(requests) -> request => match request {
                    Ok(Request::Quota(quota)) => {
                        self.set_quota(quota);
                        if watcher.is_none() && !quota.is_empty() {
                            watcher = self.watch(&event_tx);
                            last_rescan = Instant::now();
                        }
                        self.enforce(0);
                    }
                    Ok(Request::Written(_)) if self.quota.is_empty() => {}
                    Ok(Request::Written(file)) => {
                        // Someone may have moved it away already (and the
                        // watcher told us first): no ghost entries.
                        let relative = file.relative();
                        self.scratch.as_mut_os_string().clear();
                        self.scratch.push(&self.root);
                        self.scratch.push(relative);
                        let exists = rustix::fs::statat(
                            rustix::fs::CWD,
                            &self.scratch,
                            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .is_ok();
                        if exists && self.matcher.seq(relative) == Some(file.seq) {
                            let now = epoch_secs(SystemTime::now());
                            self.index.insert(file.seq, relative, file.len, now);
                        }
                        self.enforce(0);
                    }
                    Ok(Request::MakeRoom { reply, .. }) if self.quota.is_empty() => {
                        // Without a quota nothing of the user's is deleted.
                        let _ = reply.send(false);
                    }
                    Ok(Request::MakeRoom { bytes, reply }) => {
                        let mut deleted = self.enforce(bytes);
                        if deleted == 0 {
                            deleted = self.free_inodes();
                        }
                        let _ = reply.send(deleted > 0);
                    }
                    Err(_) => break,
                },
                recv(events) -> event => {
                    if let Ok(event) = event {
                        self.apply(event);
                    }
                }
                recv(checks) -> _ => {
                    if self.quota.is_empty() {
                        continue;
                    }
                    let now = Instant::now();
                    while let Some(i) = self.look_again.iter().position(|(at, _)| *at <= now) {
                        let (_, relative) = self.look_again.swap_remove(i);
                        self.record_tree(&relative, relative.split('/').count());
                    }
                    let due = self.rescan_at.is_some_and(|at| Instant::now() >= at)
                        || last_rescan.elapsed() >= self.rescan_every;
                    if due {
                        self.rescan();
                        last_rescan = Instant::now();
                    }
                    self.enforce(0);
                }
            }
        }
        self.enforce(0);
    }

    /// Adds an owned file that appeared (moved in, restored, or our own
    /// file seen by the watcher) to the index, unless it is known already.
    fn record(&mut self, path: &Path) {
        if let Some(relative) = self.relative(path) {
            self.look_at(relative, false);
        }
    }

    /// Records the owned file at `relative` (to the output directory),
    /// looked at without following links; a known one only when `again`
    /// (its size or time changed).
    fn look_at(&mut self, relative: &str, again: bool) {
        let Some(seq) = self.matcher.seq(relative) else {
            return;
        };
        if !again && self.index.contains(seq, relative) {
            return;
        }
        let (dir, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        let Ok(held) = self.held_dir(dir) else {
            return;
        };
        let Ok(st) = rustix::fs::statat(&held.dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        else {
            return;
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return;
        }
        let mtime = u64::try_from(st.st_mtime).unwrap_or(0);
        self.index.insert(seq, relative, st.st_size as u64, mtime);
    }

    /// Records the owned files in the directory `relative`, `level` levels
    /// below the output directory, and below it down to the files' level,
    /// reached and listed without following links.
    fn record_tree(&mut self, relative: &str, level: usize) {
        let names = match beneath::open(&self.root, relative, None) {
            Ok(held) => list(&held),
            // Gone already, unreadable, or a link: the next rescan decides.
            Err(_) => return,
        };
        for (name, is_dir) in names {
            let path = format!("{relative}/{name}");
            if is_dir && level + 1 < self.depth {
                self.record_tree(&path, level + 1);
            } else if !is_dir {
                self.look_at(&path, false);
            }
        }
    }

    /// The directory `dir` (relative), opened without following links, kept
    /// open for the next look while it stays in place.
    fn held_dir(&mut self, dir: &str) -> std::io::Result<&Held> {
        let fresh = self
            .held
            .as_ref()
            .is_some_and(|held| held.relative == dir && held.still_here());
        if !fresh {
            self.held = None;
            let held = beneath::open(&self.root, dir, None).map_err(|e| match e {
                BeneathError::Io { source, .. } => source,
                refused => std::io::Error::new(std::io::ErrorKind::InvalidInput, refused),
            })?;
            self.held = Some(held);
        }
        self.held
            .as_ref()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    /// Whether `relative` names something above the files' level, where the
    /// template has directories (the manifest, lock and hidden names aside).
    fn is_directory_level(&self, relative: &str) -> bool {
        let name = relative.rsplit('/').next().unwrap_or_default();
        let noise = name.starts_with('.') || name == store::manifest::MANIFEST_NAME;
        !noise && relative.split('/').count() < self.depth
    }

    fn relative<'p>(&self, path: &'p Path) -> Option<&'p str> {
        path.strip_prefix(&self.root).ok()?.to_str()
    }

    /// Applies a change seen by the watcher.
    fn apply(&mut self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                self.log_error("the watcher failed; rescanning", &e);
                self.rescan_at = Some(Instant::now());
                return;
            }
        };
        if event.need_rescan() {
            self.rescan_at = Some(Instant::now());
            return;
        }
        use notify::event::{AccessKind, AccessMode};
        use notify::event::{ModifyKind, RenameMode};
        if matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Metadata(_))
        ) {
            // Written to or touched by someone after it appeared: its size
            // and time are news for the quota.
            for path in &event.paths {
                if let Some(relative) = self.relative(path) {
                    self.look_at(relative, true);
                }
            }
            return;
        }
        let (gone, arrived): (&[PathBuf], &[PathBuf]) = match event.kind {
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                (&event.paths, &[])
            }
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                (&[], &event.paths)
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if event.paths.len() == 2 => {
                (&event.paths[..1], &event.paths[1..])
            }
            _ => (&[], &[]),
        };
        for path in gone {
            let Some(relative) = self.relative(path) else {
                continue;
            };
            match self.matcher.seq(relative) {
                Some(seq) => {
                    self.index.remove(seq, relative);
                }
                None => {
                    let ours = self.removed_dirs.remove(path.as_path());
                    if !ours && self.is_directory_level(relative) {
                        // Perhaps a directory of ours went away or was moved:
                        // look again soon. (Files of others are no news.)
                        self.rescan_at.get_or_insert(Instant::now() + RESCAN_DELAY);
                    }
                }
            }
        }
        for path in arrived {
            let Some(relative) = self.relative(path) else {
                continue;
            };
            let name = relative.rsplit('/').next().unwrap_or_default();
            if name.starts_with('.') {
                continue; // our temp files and lock
            }
            if self.matcher.seq(relative).is_some() {
                self.record(path);
            } else if self.is_directory_level(relative)
                && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
            {
                // A directory made (by us: one per day, hour or second, as
                // the template says) or moved in: it may hold owned files
                // already. Look in it alone, not the whole tree; and once
                // more in a second, for files put in it before the watcher
                // watched it but after this look.
                self.record_tree(relative, relative.split('/').count());
                if self.look_again.len() < 64 {
                    self.look_again
                        .push((Instant::now() + CHECK_EVERY, relative.to_owned()));
                }
            }
        }
    }

    /// Rebuilds the index from the disk.
    fn rescan(&mut self) {
        self.rescan_at = None;
        let mut index = self.index.empty_like();
        let mut visit = |owned: store::Owned<'_>| {
            index.insert_unsorted(owned.seq, owned.relative, owned.bytes, owned.mtime)
        };
        let result = store::scan(
            &self.root,
            self.depth,
            &self.matcher,
            store::Sweep::Nothing,
            Some(store::Visitor {
                stat: self.quota.needs_file_facts(),
                visit: &mut visit,
            }),
        );
        match result {
            Ok(_) => {
                index.finish_scan();
                self.index = index;
            }
            Err(e) => self.log_error("cannot rescan the output directory", &e),
        }
    }

    /// Deletes the oldest files until every limit holds (and `extra` more
    /// bytes are free). Returns the files deleted.
    fn enforce(&mut self, extra: u64) -> u64 {
        if self.quota.is_empty() {
            return 0;
        }
        let deleted = self.enforce_quota(extra);
        self.stats
            .disk_used
            .store(self.index.usage().bytes, Ordering::Relaxed);
        deleted
    }

    fn enforce_quota(&mut self, extra: u64) -> u64 {
        let needs_space = self.quota.min_free.is_some() || extra > 0;
        let space = if needs_space {
            space_of(&self.root)
        } else {
            None
        };
        let now = epoch_secs(SystemTime::now());
        let (count, reason) = plan_deletions(
            self.index.oldest_first(),
            self.index.usage(),
            &self.quota,
            now,
            space,
            extra,
        );
        let mut deleted = self.delete(
            count as u64,
            reason.unwrap_or(Reason::DiskFull),
            Index::pop_oldest,
        );
        // Files past max_age by their own time, wherever they are in seq
        // order (a file written while the clock was wrong neither shields
        // the others nor drags them along).
        if let Some(max_age) = self.quota.max_age {
            let cutoff = now.saturating_sub(max_age.as_secs());
            deleted += self.delete(u64::MAX, Reason::MaxAge, |index| index.pop_expired(cutoff));
        }
        deleted
    }

    /// Deletes up to `count` files, each taken off the index by `next`;
    /// returns how many went. A file that cannot be deleted stays in the
    /// index (it still takes room) and is tried again next time; the
    /// failure is logged.
    fn delete(
        &mut self,
        count: u64,
        reason: Reason,
        mut next: impl FnMut(&mut Index) -> Option<index::Removed>,
    ) -> u64 {
        // Nothing is deleted in a directory another recorder has taken.
        if count == 0 || !self.store.is_ours() {
            return 0;
        }
        /// Failures after which this round gives up (a read-only
        /// filesystem fails every file alike).
        const MAX_FAILURES: usize = 8;
        let sizes_known = self.quota.needs_file_facts();
        let mut deleted = 0;
        // Files gone one way or another; those that could not be deleted
        // stay and do not count, so the next ones go in their place.
        let mut gone = 0;
        let mut failed = Vec::new();
        while gone < count {
            let Some(removed) = next(&mut self.index) else {
                break;
            };
            gone += 1;
            let path = self.root.join(&removed.path);
            match self.unlink(&removed.path, sizes_known.then_some(removed.bytes)) {
                Ok(bytes) => {
                    deleted += 1;
                    self.stats.deleted_files.fetch_add(1, Ordering::Relaxed);
                    self.stats.deleted_bytes.fetch_add(bytes, Ordering::Relaxed);
                    tracing::debug!(seq = removed.seq, path = %path.display(), reason = reason.name(), "file deleted");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Behind a link someone planted: not framerec's to delete.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    self.log_error("a file is out of reach and left alone", &e);
                    continue;
                }
                Err(e) => {
                    gone -= 1;
                    self.stats.delete_failed.fetch_add(1, Ordering::Relaxed);
                    self.log_error(
                        &format!(
                            "cannot delete {}; it stays and counts toward the quota, and is tried again",
                            path.display()
                        ),
                        &e,
                    );
                    failed.push(removed);
                    if failed.len() >= MAX_FAILURES {
                        break;
                    }
                    continue;
                }
            }
            if let Some(dir) = removed.emptied_dir {
                self.remove_empty_dirs(&dir);
            }
        }
        for file in failed {
            self.index
                .insert(file.seq, &file.path, file.bytes, file.mtime);
        }
        deleted
    }

    /// Deletes the owned file at `relative`, reached without following
    /// links and only while its directory is still in the output tree.
    /// Returns its size: `known`, or read before deleting (sizes are not
    /// tracked for max_files alone, and the summary says what was freed).
    fn unlink(&mut self, relative: &str, known: Option<u64>) -> std::io::Result<u64> {
        let (dir, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        let held = self.held_dir(dir)?;
        let bytes = match known {
            Some(bytes) => bytes,
            None => rustix::fs::statat(&held.dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .map_or(0, |st| st.st_size as u64),
        };
        beneath::unlink(held, name)?;
        Ok(bytes)
    }

    /// A write found the disk full with bytes to spare: the filesystem is
    /// out of inodes, which deleting by size never helps. Deletes the
    /// oldest few files to free some. Returns how many went.
    fn free_inodes(&mut self) -> u64 {
        const FILES: u64 = 16;
        let out_of_inodes = rustix::fs::statvfs(&self.root).is_ok_and(|st| st.f_favail == 0);
        if !out_of_inodes {
            return 0;
        }
        let keep_newest = self.index.usage().files.saturating_sub(1);
        self.delete(FILES.min(keep_newest), Reason::DiskFull, Index::pop_oldest)
    }

    /// Removes `relative` and its parents while they are empty (never the
    /// output directory itself, never a directory with anything in it).
    fn remove_empty_dirs(&mut self, relative: &str) {
        self.held = None;
        let mut relative = relative;
        while let Some(name) = relative.rsplit('/').next().filter(|n| !n.is_empty()) {
            let parent = relative.rsplit_once('/').map_or("", |(p, _)| p);
            let removed = beneath::open(&self.root, parent, None)
                .ok()
                .filter(Held::still_here)
                .is_some_and(|held| beneath::remove_dir(held.dir.as_fd(), name).is_ok());
            if !removed {
                break;
            }
            self.removed_dirs.insert(self.root.join(relative));
            relative = parent;
        }
        // Keep the set small: events for old removals have long arrived.
        if self.removed_dirs.len() > 1024 {
            self.removed_dirs.clear();
        }
    }
}
