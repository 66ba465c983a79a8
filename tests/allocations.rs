//! The per-frame path allocates nothing in steady state, shown with a
//! counting allocator. A test binary of its own: the count is of the whole
//! process, so nothing else may run in it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use framerec::config::Settings;
use framerec::daemon::{self, Limits};

struct Counting;

/// Allocations (and reallocations) so far, in every thread.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The synthetic source: 64x48 gray at 400 fps.
const SYNTHETIC: &str = "width = 64\nheight = 48\nfps = 400\npixel_format = \"gray\"\n";

/// Allocations of a whole in-process run of `frames` JPEG files from
/// `source` (a `[source]` body; fsync off) into a new directory under `root`.
fn allocations_of_a_run(root: &std::path::Path, source: &str, frames: u64, quota: bool) -> u64 {
    let dir = root.join(format!("run-{}-{frames}-{quota}", source.len()));
    let retention = if quota {
        format!("[retention]\nmax_files = {}\n", frames / 2)
    } else {
        String::new()
    };
    let text = format!(
        "camera = \"lab\"\n[source]\n{source}\
         [snapshot]\nevery = \"frame\"\n[output]\ndir = \"{}\"\nname = \"{{camera}}-{{seq:6}}.{{ext}}\"\nfsync = false\n\
         [encoder]\nthreads = 2\n{retention}",
        dir.display()
    );
    let settings = Settings::from_toml(&text, std::path::Path::new("test.toml")).unwrap();
    let (_control_tx, control_rx) = crossbeam_channel::bounded(4);
    let limits = Limits {
        frames: Some(frames),
        duration: None,
    };
    let before = ALLOCATIONS.load(Relaxed);
    let summary = daemon::run(&settings, None, &control_rx, limits).unwrap();
    let after = ALLOCATIONS.load(Relaxed);
    assert_eq!(summary.written, frames, "{summary}");
    after - before
}

/// A run of 600 files allocates no more than one of 100: what both do once
/// (start-up, shutdown) cancels out; what remains is per frame, plus the
/// supervisor's once-a-second work for the longer run.
///
/// With a quota, retention still allocates for each file: notify makes paths
/// for every inotify event of the file (about ten), and the index hands out
/// owned paths. That is bounded here so it cannot grow unseen.
#[test]
fn the_per_frame_path_allocates_nothing_in_steady_state() {
    let root = tempfile::tempdir().unwrap();
    // A raw RGB file: its frames are views into the mapped file.
    let raw = root.path().join("frames.rgb");
    let frame: Vec<u8> = (0..64 * 48 * 3).map(|i| (i % 251) as u8).collect();
    std::fs::write(&raw, frame.repeat(600)).unwrap();
    let raw_source = format!(
        "kind = \"raw\"\npath = \"{}\"\nwidth = 64\nheight = 48\npixel_format = \"rgb\"\n\
         [ring]\nwhen_full = \"block\"\n",
        raw.display()
    );
    // Warm up what is made once per process (thread-locals, libjpeg-turbo).
    allocations_of_a_run(root.path(), SYNTHETIC, 20, false);
    let per_file = |source: &str, quota| {
        let short = allocations_of_a_run(root.path(), source, 100, quota);
        let long = allocations_of_a_run(root.path(), source, 600, quota);
        let per_file = long.saturating_sub(short) as f64 / 500.0;
        eprintln!(
            "quota {quota}: {per_file:.2} allocations per file ({short} for 100 files, {long} for 600)"
        );
        per_file
    };
    let without_quota = per_file(SYNTHETIC, false);
    assert!(
        without_quota < 0.05,
        "{without_quota:.2} allocations per file"
    );
    let mapped = per_file(&raw_source, false);
    assert!(
        mapped < 0.05,
        "{mapped:.2} allocations per file read from a mapped file"
    );
    let with_quota = per_file(SYNTHETIC, true);
    assert!(with_quota < 64.0, "{with_quota:.2} allocations per file");
}
