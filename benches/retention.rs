//! Retention at scale: a tree of 1,000,000 owned files in date directories
//! (a year of one frame every 31.5 s), scanned at start-up into the index.
//! Prints the scan time, the index's memory, and the cost of keeping the
//! quota per written file at 1,000,000 files and at 10,000.
//!
//! `cargo bench --bench retention` prints the figures (the tree is built
//! once, about a minute, and kept in the target directory). Under
//! `cargo test` it runs on 2,000 files only.

use std::path::Path;
use std::time::{Duration, Instant};

use framerec::retention::index::Index;
use framerec::retention::plan::{plan_deletions, Quota};
use framerec::store::naming::Template;
use framerec::store::{scan, Owned, Sweep, Visitor, EXTENSIONS};

const TEMPLATE: &str = "{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}";

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Builds `count` owned files (and a few foreign ones) under `root`, once.
fn build_tree(root: &Path, count: u64) {
    let marker = root.join(format!(".complete-{count}"));
    if marker.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(root);
    let started = Instant::now();
    let per_day = 2_740;
    let mut dir = root.to_owned();
    for seq in 1..=count {
        if (seq - 1) % per_day == 0 {
            let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()
                + chrono::Days::new((seq - 1) / per_day);
            dir = root.join("cam0").join(day.format("%Y-%m-%d").to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("notes.txt"), b"foreign").unwrap();
        }
        std::fs::File::create(dir.join(format!("cam0-{seq:010}.jpg"))).unwrap();
    }
    std::fs::write(&marker, b"").unwrap();
    println!(
        "  (built the tree of {count} files in {:.1}s)",
        started.elapsed().as_secs_f64()
    );
}

/// Time per kept-quota rotation (insert the new file, plan, take the oldest
/// off) on an index of `files` files.
fn rotation_cost(template: &Template, files: u64, rounds: u64) -> Duration {
    let mut index = Index::new(template, "cam0");
    for seq in 1..=files {
        index.insert(
            seq,
            &format!("cam0/2025-01-01/cam0-{seq:010}.jpg"),
            400_000,
            seq,
        );
    }
    let quota = Quota {
        max_files: Some(files),
        ..Quota::default()
    };
    let mut path = String::new();
    let started = Instant::now();
    for seq in files + 1..=files + rounds {
        path.clear();
        path.push_str("cam0/2025-01-02/cam0-");
        path.push_str(&format!("{seq:010}.jpg"));
        index.insert(seq, &path, 400_000, seq);
        let (count, _) = plan_deletions(index.oldest_first(), index.usage(), &quota, seq, None, 0);
        for _ in 0..count {
            std::hint::black_box(index.pop_oldest());
        }
    }
    started.elapsed() / rounds as u32
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let count = if bench { 1_000_000 } else { 2_000 };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("retention-bench-{count}"));
    let template = Template::parse(TEMPLATE).unwrap();
    let matcher = template.matcher("cam0", &EXTENSIONS);

    println!("framerec retention benchmark: {count} owned files in date directories");
    build_tree(&root, count);
    // Cold: as after a reboot (needs root to drop the page cache); then warm.
    let cold = bench && {
        let _ = std::process::Command::new("sync").status();
        std::fs::write("/proc/sys/vm/drop_caches", b"3").is_ok()
    };
    let mut index: Option<Index> = None;
    for run in if cold {
        &["cold cache", "warm cache"][..]
    } else {
        &["warm cache"][..]
    } {
        let first = index.is_none();
        drop(index.take());
        let before = rss_kib();
        let started = Instant::now();
        let mut fresh = Index::new(&template, "cam0");
        let mut visit = |owned: Owned<'_>| {
            fresh.insert_unsorted(owned.seq, owned.relative, owned.bytes, owned.mtime)
        };
        let found = scan(
            &root,
            template.depth(),
            &matcher,
            Sweep::Nothing,
            Some(Visitor {
                stat: true,
                visit: &mut visit,
            }),
        )
        .unwrap();
        fresh.finish_scan();
        let scan_time = started.elapsed();
        let rss = rss_kib().saturating_sub(before);
        assert_eq!(found.files, count);
        assert_eq!(fresh.usage().files, count);
        println!(
            "  start-up scan into the index, {run}: {:.2} s   (target: 5 s)",
            scan_time.as_secs_f64()
        );
        if first {
            // (The second run's RSS is muddied by the first one's freed memory.)
            println!(
                "  index memory: {:.1} MiB by its own count, {:.1} MiB of process RSS growth   (target: 64 MiB)",
                fresh.memory() as f64 / (1 << 20) as f64,
                rss as f64 / 1024.0
            );
        }
        index = Some(fresh);
    }
    drop(index);
    // A template that puts the time in the file name: names are stored.
    let timed =
        Template::parse("{camera}/{time:%Y-%m-%d}/{camera}-{time:%H%M%S}-{seq}.{ext}").unwrap();
    let mut index = Index::new(&timed, "cam0");
    let mut path = String::new();
    for seq in 1..=count {
        path.clear();
        path.push_str(&format!(
            "cam0/2025-01-01/cam0-{:06}-{seq:010}.jpg",
            seq % 240_000
        ));
        index.insert(seq, &path, 400_000, seq);
    }
    index.shrink();
    println!(
        "  index memory with the time in file names: {:.1} MiB for {count} files   (target: 64 MiB)",
        index.memory() as f64 / (1 << 20) as f64
    );
    drop(index);
    let (big, small) = if bench {
        (1_000_000, 10_000)
    } else {
        (2_000, 200)
    };
    let rounds = if bench { 200_000 } else { 1_000 };
    let at_big = rotation_cost(&template, big, rounds);
    let at_small = rotation_cost(&template, small, rounds);
    println!("  keeping the quota, per written file: {at_big:?} at {big} files, {at_small:?} at {small} files");
    if !bench {
        let _ = std::fs::remove_dir_all(&root);
    }
}
