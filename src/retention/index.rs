//! The index of the files framerec owns: sequence number, size, time and
//! where the file is, in 32 bytes a file, sorted by sequence number.
//!
//! Directories are stored once and referred to by number. File names are
//! not stored at all when the template can render them from the sequence
//! number alone (the default: `{camera}-{seq}.{ext}` under date
//! directories); otherwise they go into one shared byte arena. A million
//! files take about 32 MiB with the default template.
//!
//! Files removed behind framerec's back are marked dead in place (found by
//! binary search) and dropped when they reach the front, so every operation
//! is O(log n) or amortised O(1): the cost of keeping a quota does not grow
//! with the number of files.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use super::plan::{FileFacts, Usage};
use crate::store::naming::Template;
use crate::store::EXTENSIONS;

/// Marks a name that is rendered, not stored.
const DERIVED: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    bytes: u64,
    /// Seconds since the Unix epoch (u32 lasts until 2106).
    mtime: u32,
    dir: u32,
    /// Offset of the name in the arena, or [`DERIVED`].
    name: u32,
    name_len: u8,
    /// Index into [`EXTENSIONS`].
    ext: u8,
    live: bool,
}

#[derive(Debug)]
struct Dir {
    path: Box<str>,
    live: u32,
}

/// A file in modification-time order: mtime, seq, directory, extension.
type Aged = (u32, u64, u32, u8);

/// A file taken off the front of the index, to be deleted.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    pub seq: u64,
    pub bytes: u64,
    /// Seconds since the Unix epoch (as ordered by the index).
    pub mtime: u64,
    /// Relative to the output directory, '/'-separated.
    pub path: String,
    /// The file's directory (relative), when no owned file is left in it.
    pub emptied_dir: Option<String>,
}

/// The index. See the module docs.
pub struct Index {
    entries: VecDeque<Entry>,
    dirs: Vec<Dir>,
    dir_ids: HashMap<Box<str>, u32>,
    arena: Vec<u8>,
    arena_dead: usize,
    files: u64,
    bytes: u64,
    template: Template,
    camera: String,
    derivable: bool,
    scratch: String,
    /// With `max_age`: every file by modification time, oldest on top, so
    /// an expired file is found wherever it is in seq order. Entries of
    /// files gone since are skipped when they come up.
    ages: Option<BinaryHeap<Reverse<Aged>>>,
}

impl Index {
    pub fn new(template: &Template, camera: &str) -> Index {
        Index {
            entries: VecDeque::new(),
            dirs: Vec::new(),
            dir_ids: HashMap::new(),
            arena: Vec::new(),
            arena_dead: 0,
            files: 0,
            bytes: 0,
            template: template.clone(),
            camera: camera.to_owned(),
            derivable: template.file_name_is_derivable(),
            scratch: String::new(),
            ages: None,
        }
    }

    /// Keeps files in modification-time order too (for `max_age`); call
    /// before adding files.
    pub(crate) fn track_ages(&mut self) {
        self.ages.get_or_insert_with(BinaryHeap::new);
    }

    /// A new, empty index for the same template and camera.
    pub(crate) fn empty_like(&self) -> Index {
        let mut index = Index::new(&self.template, &self.camera);
        if self.ages.is_some() {
            index.track_ages();
        }
        index
    }

    /// Live files and their bytes.
    pub fn usage(&self) -> Usage {
        Usage {
            files: self.files,
            bytes: self.bytes,
        }
    }

    /// The live files, oldest (lowest seq) first.
    pub fn oldest_first(&self) -> impl Iterator<Item = FileFacts> + '_ {
        self.entries.iter().filter(|e| e.live).map(|e| FileFacts {
            bytes: e.bytes,
            mtime: u64::from(e.mtime),
        })
    }

    /// Approximate memory held, in bytes.
    pub fn memory(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.arena.capacity()
            + self
                .dirs
                .iter()
                .map(|d| d.path.len() * 2 + 48)
                .sum::<usize>()
    }

    /// Frees the slack left by growing (after a scan).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
        self.arena.shrink_to_fit();
    }

    fn position(&self, seq: u64) -> Result<usize, usize> {
        // Mostly appends: look at the back first.
        match self.entries.back() {
            Some(last) if last.seq < seq => Err(self.entries.len()),
            _ => self.entries.binary_search_by_key(&seq, |e| e.seq),
        }
    }

    /// Records an owned file at `path` (relative, '/'-separated). A file
    /// already known under that seq is updated.
    pub fn insert(&mut self, seq: u64, path: &str, bytes: u64, mtime: u64) {
        self.add(seq, path, bytes, mtime, true);
    }

    /// Records a file found by a scan, in any order: call
    /// [`Index::finish_scan`] once all are in.
    pub fn insert_unsorted(&mut self, seq: u64, path: &str, bytes: u64, mtime: u64) {
        self.add(seq, path, bytes, mtime, false);
    }

    /// Sorts what [`Index::insert_unsorted`] added and frees the slack.
    pub fn finish_scan(&mut self) {
        self.entries
            .make_contiguous()
            .sort_unstable_by_key(|e| e.seq);
        // Two files with one number (a .jpg and a .png after a format
        // change): keep both; they are deleted one after the other.
        self.shrink();
    }

    /// The index of the entry for `seq` at `path` (live or not).
    fn find(&self, seq: u64, path: &str) -> Option<usize> {
        let i = self.position(seq).ok()?;
        let same = |j: usize| self.entries.get(j).is_some_and(|e| e.seq == seq);
        let mut first = i;
        while first > 0 && same(first - 1) {
            first -= 1;
        }
        (first..)
            .take_while(|&j| same(j))
            .find(|&j| self.path_of(&self.entries[j]) == path)
    }

    fn add(&mut self, seq: u64, path: &str, bytes: u64, mtime: u64, sorted: bool) {
        let mtime = mtime.min(u64::from(u32::MAX)) as u32;
        if sorted {
            if let Some(i) = self.find(seq, path) {
                // Known: update it in place, keeping its stored name.
                let old = self.entries[i];
                if old.live {
                    self.unaccount(&old);
                } else if old.name != DERIVED {
                    self.arena_dead = self.arena_dead.saturating_sub(usize::from(old.name_len));
                }
                let entry = &mut self.entries[i];
                entry.bytes = bytes;
                entry.mtime = mtime;
                entry.live = true;
                let entry = *entry;
                self.account(&entry);
                self.track_age(&entry);
                return;
            }
        }
        let (dir_part, name) = path.rsplit_once('/').unwrap_or(("", path));
        let ext = EXTENSIONS
            .iter()
            .position(|e| name.rsplit('.').next() == Some(e))
            .unwrap_or(0) as u8;
        let mut derived = self.derivable;
        if derived {
            self.template.render_file_name(
                &self.camera,
                seq,
                EXTENSIONS[ext as usize],
                &mut self.scratch,
            );
            derived = self.scratch == name;
        }
        if !derived && name.len() > usize::from(u8::MAX) {
            // A name too long to store cannot be deleted by name: leave it out.
            return;
        }
        let dir = self.intern(dir_part);
        let (name_at, name_len) = if derived {
            (DERIVED, 0)
        } else {
            let at = self.arena.len() as u32;
            self.arena.extend_from_slice(name.as_bytes());
            (at, name.len() as u8)
        };
        let entry = Entry {
            seq,
            bytes,
            mtime,
            dir,
            name: name_at,
            name_len,
            ext,
            live: true,
        };
        if sorted {
            // After any entries with the same number.
            let at = match self.entries.back() {
                Some(last) if last.seq <= seq => self.entries.len(),
                _ => self.entries.partition_point(|e| e.seq <= seq),
            };
            self.entries.insert(at, entry);
        } else {
            self.entries.push_back(entry);
        }
        self.account(&entry);
        self.track_age(&entry);
    }

    fn track_age(&mut self, entry: &Entry) {
        if let Some(ages) = &mut self.ages {
            ages.push(Reverse((entry.mtime, entry.seq, entry.dir, entry.ext)));
        }
    }

    /// Takes off the index a file modified before `cutoff` (seconds since
    /// the epoch), the oldest first, wherever it is in seq order; never the
    /// newest file. Needs [`Index::track_ages`].
    pub(crate) fn pop_expired(&mut self, cutoff: u64) -> Option<Removed> {
        let newest = self.entries.iter().rev().find(|e| e.live).map(|e| e.seq);
        // The newest file's place in the heap, while it is looked past.
        let mut kept_back = None;
        let removed = loop {
            let Some(&Reverse(top)) = self.ages.as_ref().and_then(|ages| ages.peek()) else {
                break None;
            };
            let (mtime, seq, dir, ext) = top;
            if u64::from(mtime) >= cutoff {
                break None;
            }
            self.ages.as_mut().and_then(|ages| ages.pop());
            let found = self.position(seq).ok().and_then(|i| {
                let same = |j: usize| self.entries.get(j).is_some_and(|e| e.seq == seq);
                let mut first = i;
                while first > 0 && same(first - 1) {
                    first -= 1;
                }
                (first..).take_while(|&j| same(j)).find(|&j| {
                    let e = &self.entries[j];
                    e.live && e.dir == dir && e.ext == ext && e.mtime == mtime
                })
            });
            // Gone or changed since: a stale heap entry.
            let Some(i) = found else { continue };
            if Some(seq) == newest {
                kept_back = Some(top);
                continue;
            }
            let entry = self.entries[i];
            let path = self.path_of(&entry);
            self.entries[i].live = false;
            self.unaccount(&entry);
            self.forget_name(&entry);
            let dir = &self.dirs[entry.dir as usize];
            let emptied_dir = (dir.live == 0 && !dir.path.is_empty()).then(|| dir.path.to_string());
            while self.entries.front().is_some_and(|e| !e.live) {
                self.entries.pop_front();
            }
            self.compact();
            break Some(Removed {
                seq: entry.seq,
                bytes: entry.bytes,
                mtime: u64::from(entry.mtime),
                path,
                emptied_dir,
            });
        };
        if let (Some(top), Some(ages)) = (kept_back, self.ages.as_mut()) {
            ages.push(Reverse(top));
        }
        removed
    }

    fn account(&mut self, entry: &Entry) {
        self.files += 1;
        self.bytes += entry.bytes;
        self.dirs[entry.dir as usize].live += 1;
    }

    fn intern(&mut self, dir: &str) -> u32 {
        if let Some(&id) = self.dir_ids.get(dir) {
            return id;
        }
        let id = self.dirs.len() as u32;
        self.dirs.push(Dir {
            path: dir.into(),
            live: 0,
        });
        self.dir_ids.insert(dir.into(), id);
        id
    }

    fn unaccount(&mut self, entry: &Entry) {
        self.files -= 1;
        self.bytes -= entry.bytes;
        let dir = &mut self.dirs[entry.dir as usize];
        dir.live = dir.live.saturating_sub(1);
    }

    fn forget_name(&mut self, entry: &Entry) {
        if entry.name != DERIVED {
            self.arena_dead += usize::from(entry.name_len);
        }
    }

    /// Whether the live file `seq` at `path` is in the index.
    pub(crate) fn contains(&self, seq: u64, path: &str) -> bool {
        self.find(seq, path).is_some_and(|i| self.entries[i].live)
    }

    /// Marks the file `seq` at `path` as gone (deleted or moved away by
    /// someone else). Returns whether it was known.
    pub(crate) fn remove(&mut self, seq: u64, path: &str) -> bool {
        let Some(i) = self.find(seq, path) else {
            return false;
        };
        let entry = self.entries[i];
        if !entry.live {
            return false;
        }
        self.entries[i].live = false;
        self.unaccount(&entry);
        self.forget_name(&entry);
        // Dead entries at the front would be skipped again by every check.
        while self.entries.front().is_some_and(|e| !e.live) {
            self.entries.pop_front();
        }
        self.compact();
        true
    }

    /// The relative path of an entry.
    fn path_of(&self, entry: &Entry) -> String {
        let dir = &self.dirs[entry.dir as usize].path;
        let mut path = String::with_capacity(dir.len() + 32);
        if !dir.is_empty() {
            path.push_str(dir);
            path.push('/');
        }
        if entry.name == DERIVED {
            let mut name = String::new();
            self.template.render_file_name(
                &self.camera,
                entry.seq,
                EXTENSIONS[entry.ext as usize],
                &mut name,
            );
            path.push_str(&name);
        } else {
            let start = entry.name as usize;
            let name = &self.arena[start..start + usize::from(entry.name_len)];
            path.push_str(&String::from_utf8_lossy(name));
        }
        path
    }

    /// Takes the oldest live file off the index.
    pub fn pop_oldest(&mut self) -> Option<Removed> {
        while let Some(entry) = self.entries.pop_front() {
            if !entry.live {
                continue;
            }
            let path = self.path_of(&entry);
            self.unaccount(&entry);
            self.forget_name(&entry);
            let dir = &self.dirs[entry.dir as usize];
            let emptied_dir = (dir.live == 0 && !dir.path.is_empty()).then(|| dir.path.to_string());
            self.compact();
            return Some(Removed {
                seq: entry.seq,
                bytes: entry.bytes,
                mtime: u64::from(entry.mtime),
                path,
                emptied_dir,
            });
        }
        None
    }

    /// Rewrites the arena once more than half of it is dead names.
    fn compact(&mut self) {
        if self.arena_dead < 4096 || self.arena_dead * 2 < self.arena.len() {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len().saturating_sub(self.arena_dead));
        for entry in self.entries.iter_mut() {
            if entry.name != DERIVED && entry.live {
                let start = entry.name as usize;
                let new_at = arena.len() as u32;
                arena.extend_from_slice(&self.arena[start..start + usize::from(entry.name_len)]);
                entry.name = new_at;
            } else if entry.name != DERIVED {
                entry.name_len = 0;
                entry.name = arena.len() as u32;
            }
        }
        self.arena = arena;
        self.arena_dead = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(template: &str) -> Index {
        Index::new(&Template::parse(template).unwrap(), "cam0")
    }

    #[test]
    fn files_past_max_age_are_found_by_their_own_time_wherever_they_are() {
        let mut idx = index("{seq}.{ext}");
        idx.track_ages();
        let (now, day) = (1_800_000_000u64, 86_400u64);
        // Written while the clock was a year ahead...
        idx.insert(1, "0000000001.jpg", 10, now + 365 * day);
        // ... then 22 files written after the clock was put right, 3 days ago.
        for seq in 2..=23 {
            idx.insert(seq, &format!("{seq:010}.jpg"), 10, now - 3 * day + seq);
        }
        // One more restored by hand with a fresh time, in the middle.
        idx.insert(12, "0000000012.png", 10, now + 10 * day);
        let cutoff = now - day;
        let mut expired = Vec::new();
        while let Some(removed) = idx.pop_expired(cutoff) {
            expired.push(removed.path);
        }
        // Every file older than a day but the newest (always kept).
        let expected: Vec<String> = (2..=22).map(|seq| format!("{seq:010}.jpg")).collect();
        assert_eq!(expired, expected);
        assert_eq!(idx.usage().files, 3);
    }

    #[test]
    fn one_file_with_an_old_time_does_not_drag_the_others_along() {
        let mut idx = index("{seq}.{ext}");
        idx.track_ages();
        let now = 1_800_000_000u64;
        for seq in 1..=10 {
            idx.insert(seq, &format!("{seq:010}.jpg"), 10, now - 60);
        }
        // Written with the clock unset (2001), after the ten fresh ones.
        idx.insert(11, "0000000011.jpg", 10, 978_307_200);
        idx.insert(12, "0000000012.jpg", 10, now);
        let mut expired = Vec::new();
        while let Some(removed) = idx.pop_expired(now - 30 * 86_400) {
            expired.push(removed.seq);
        }
        assert_eq!(expired, [11], "fresh files went with the old one");
    }

    #[test]
    fn entries_are_small() {
        assert!(std::mem::size_of::<Entry>() <= 32);
    }

    #[test]
    fn pops_oldest_first_and_reports_emptied_dirs() {
        let mut idx = index("{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}");
        idx.insert(3, "cam0/2024-03-06/cam0-0000000003.jpg", 30, 3);
        idx.insert(1, "cam0/2024-03-05/cam0-0000000001.jpg", 10, 1);
        idx.insert(2, "cam0/2024-03-05/cam0-0000000002.png", 20, 2);
        assert_eq!(
            idx.usage(),
            Usage {
                files: 3,
                bytes: 60
            }
        );
        let first = idx.pop_oldest().unwrap();
        assert_eq!(
            (first.seq, first.path.as_str(), first.emptied_dir),
            (1, "cam0/2024-03-05/cam0-0000000001.jpg", None)
        );
        let second = idx.pop_oldest().unwrap();
        assert_eq!(second.path, "cam0/2024-03-05/cam0-0000000002.png");
        assert_eq!(second.emptied_dir.as_deref(), Some("cam0/2024-03-05"));
        assert_eq!(
            idx.usage(),
            Usage {
                files: 1,
                bytes: 30
            }
        );
        assert!(idx.memory() > 0);
    }

    #[test]
    fn names_with_times_are_stored() {
        let mut idx = index("{time:%H%M%S}-{seq:4}.{ext}");
        idx.insert(1, "235959-0001.jpg", 5, 0);
        idx.insert(2, "000000-0002.jpg", 5, 0);
        assert_eq!(idx.pop_oldest().unwrap().path, "235959-0001.jpg");
        assert_eq!(idx.pop_oldest().unwrap().path, "000000-0002.jpg");
        assert!(idx.pop_oldest().is_none());
    }

    #[test]
    fn removals_from_outside_are_skipped_at_the_front() {
        let mut idx = index("{seq}.{ext}");
        for seq in 1..=5 {
            idx.insert(seq, &format!("{seq:010}.jpg"), 100, seq);
        }
        assert!(idx.remove(2, "0000000002.jpg"));
        assert!(!idx.remove(2, "0000000002.jpg"), "removed twice");
        assert!(
            !idx.remove(3, "0000000003.png"),
            "another file under the same seq"
        );
        assert!(!idx.remove(9, "0000000009.jpg"));
        assert_eq!(
            idx.usage(),
            Usage {
                files: 4,
                bytes: 400
            }
        );
        let order: Vec<u64> = std::iter::from_fn(|| idx.pop_oldest().map(|r| r.seq)).collect();
        assert_eq!(order, [1, 3, 4, 5]);
        assert_eq!(idx.usage(), Usage { files: 0, bytes: 0 });
    }

    #[test]
    fn inserting_a_known_seq_updates_it() {
        let mut idx = index("{seq}.{ext}");
        idx.insert(1, "0000000001.jpg", 100, 1);
        idx.insert(1, "0000000001.jpg", 150, 1);
        assert_eq!(
            idx.usage(),
            Usage {
                files: 1,
                bytes: 150
            }
        );
    }

    #[test]
    fn one_number_as_jpg_and_png_is_two_files() {
        let mut idx = index("{seq}.{ext}");
        idx.insert(1, "0000000001.jpg", 10, 1);
        idx.insert(1, "0000000001.png", 20, 1);
        idx.insert(2, "0000000002.jpg", 30, 2);
        assert_eq!(
            idx.usage(),
            Usage {
                files: 3,
                bytes: 60
            }
        );
        assert!(idx.contains(1, "0000000001.png"));
        assert!(idx.remove(1, "0000000001.png"));
        assert!(idx.remove(1, "0000000001.jpg"));
        assert_eq!(
            idx.usage(),
            Usage {
                files: 1,
                bytes: 30
            }
        );
        assert_eq!(idx.pop_oldest().unwrap().seq, 2);
    }

    #[test]
    fn renames_back_and_forth_keep_the_arena_accounting_right() {
        let mut idx = index("{time:%H%M%S}-{seq}.{ext}");
        for seq in 0..200u64 {
            idx.insert(seq, &format!("120000-{seq:010}.jpg"), 1, seq);
        }
        for _ in 0..2 {
            for seq in 0..200u64 {
                let path = format!("120000-{seq:010}.jpg");
                assert!(idx.remove(seq, &path));
                idx.insert(seq, &path, 1, seq);
            }
        }
        assert!(idx.arena_dead <= idx.arena.len());
        let popped = std::iter::from_fn(|| idx.pop_oldest()).count();
        assert_eq!(popped, 200);
    }

    #[test]
    fn a_young_low_number_never_shields_older_files_from_max_age() {
        let mut idx = index("{seq}.{ext}");
        idx.track_ages();
        idx.insert_unsorted(2, "0000000002.jpg", 1, 100);
        idx.insert_unsorted(1, "0000000001.jpg", 1, 999);
        idx.insert_unsorted(3, "0000000003.jpg", 1, 300);
        idx.insert_unsorted(4, "0000000004.jpg", 1, 5_000);
        idx.finish_scan();
        // 1 is in front (by number) and young; 2 and 3 are past the cutoff.
        let mut expired = Vec::new();
        while let Some(removed) = idx.pop_expired(500) {
            expired.push(removed.seq);
        }
        assert_eq!(expired, [2, 3]);
        assert_eq!(idx.oldest_first().next().unwrap().mtime, 999);
    }

    #[test]
    fn the_arena_is_compacted() {
        let mut idx = index("{time:%s}-{seq}.{ext}");
        for seq in 0..10_000u64 {
            idx.insert(
                seq,
                &format!("{}-{seq:010}.jpg", 1_700_000_000 + seq),
                1,
                seq,
            );
            if seq >= 100 {
                idx.pop_oldest().unwrap();
            }
        }
        // 100 live names of 25 bytes; without compaction it would hold 250,000.
        assert!(
            idx.arena.len() <= 2 * 100 * 25 + 4096 + 100,
            "arena never shrinks: {}",
            idx.arena.len()
        );
        let rest: Vec<String> = std::iter::from_fn(|| idx.pop_oldest().map(|r| r.path)).collect();
        assert_eq!(rest.len(), 100);
        assert_eq!(rest[0], format!("{}-{:010}.jpg", 1_700_009_900u64, 9_900));
    }
}
