//! Retention on the real filesystem: every quota alone and together, the
//! newest files survive, foreign files are never touched, quotas hold across
//! restarts, changes made by others are seen, and a full disk is handled.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// A fast synthetic camera (every frame, small JPEGs) with `retention`.
fn camera(env: &Env, fps: u32, every: &str, retention: &str) {
    env.config(&format!(
        "[source]\nwidth = 64\nheight = 48\nfps = {fps}\n[snapshot]\nevery = \"{every}\"\n[retention]\n{retention}\n"
    ));
}

/// framerec's own files for camera cam0 (the default template's names).
fn owned(env: &Env) -> Vec<String> {
    env.images()
        .into_iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap();
            f.starts_with("cam0/")
                && name.len() == "cam0-0000000001.jpg".len()
                && name.starts_with("cam0-")
                && name[5..15].bytes().all(|b| b.is_ascii_digit())
        })
        .collect()
}

fn seqs(env: &Env) -> Vec<u64> {
    let mut seqs: Vec<u64> = owned(env).iter().map(|f| seq_of(f)).collect();
    seqs.sort();
    seqs
}

fn total_bytes(env: &Env) -> u64 {
    owned(env)
        .iter()
        .map(|f| std::fs::metadata(env.out().join(f)).unwrap().len())
        .sum()
}

/// Puts foreign files where retention could be tempted to delete them.
fn plant_foreign_files(env: &Env) -> Vec<PathBuf> {
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let day = env.out().join("cam0").join(&today);
    std::fs::create_dir_all(&day).unwrap();
    std::fs::create_dir_all(env.out().join("cam1").join(&today)).unwrap();
    let foreign = vec![
        day.join("notes.txt"),
        day.join("cam0-0000000001.jpg.bak"),
        day.join("cam0-1.jpg"),
        env.out()
            .join("cam1")
            .join(&today)
            .join("cam1-0000000001.jpg"),
        env.out().join("README"),
    ];
    for path in &foreign {
        std::fs::write(path, b"not framerec's").unwrap();
    }
    foreign
}

fn assert_untouched(foreign: &[PathBuf]) {
    for path in foreign {
        assert_eq!(
            std::fs::read(path).ok().as_deref(),
            Some(&b"not framerec's"[..]),
            "{} was touched",
            path.display()
        );
    }
}

#[test]
fn max_files_keeps_exactly_the_newest() {
    let env = Env::new();
    let foreign = plant_foreign_files(&env);
    camera(&env, 100, "frame", "max_files = 5");
    env.record(&["--frames", "30"]);
    assert_eq!(seqs(&env), (26..=30).collect::<Vec<_>>());
    assert_untouched(&foreign);
}

#[test]
fn max_bytes_holds_and_keeps_the_newest() {
    let env = Env::new();
    camera(&env, 100, "frame", "max_bytes = \"20KiB\"");
    env.record(&["--frames", "40"]);
    let total = total_bytes(&env);
    assert!(total <= 20 * 1024, "{total} bytes on disk");
    let kept = seqs(&env);
    assert!(kept.len() >= 2, "{kept:?}");
    let newest = *kept.last().unwrap();
    assert_eq!(newest, 40);
    assert_eq!(
        kept,
        ((newest - kept.len() as u64 + 1)..=newest).collect::<Vec<_>>(),
        "survivors are not the newest run"
    );
}

#[test]
fn max_age_deletes_what_is_older() {
    let env = Env::new();
    // Files from an earlier run, dated by their modification time (the
    // clock retention reads): two days, two hours and a minute old.
    let dir = env.out().join("cam0/2020-01-01");
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now();
    for (seq, age) in [(1u64, 2 * 86_400), (2, 7_200), (3, 60)] {
        let path = dir.join(format!("cam0-{seq:010}.jpg"));
        std::fs::write(&path, b"old frame").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(now - Duration::from_secs(age)).unwrap();
    }
    camera(&env, 50, "frame", "max_age = \"1h\"");
    env.record(&["--frames", "3"]);
    assert_eq!(seqs(&env), [3, 4, 5, 6]);
}

#[test]
fn all_limits_hold_together_and_across_restarts() {
    let env = Env::new();
    let foreign = plant_foreign_files(&env);
    camera(
        &env,
        100,
        "frame",
        "max_files = 8\nmax_bytes = \"1MiB\"\nmax_age = \"30d\"\nmin_free = \"1%\"",
    );
    env.record(&["--frames", "20"]);
    assert_eq!(seqs(&env), (13..=20).collect::<Vec<_>>());
    env.record(&["--frames", "5"]);
    assert_eq!(seqs(&env), (18..=25).collect::<Vec<_>>());
    // A tighter quota applies at start-up to the files already there.
    camera(&env, 100, "frame", "max_files = 3");
    env.record(&["--frames", "1"]);
    assert_eq!(seqs(&env), [24, 25, 26]);
    assert_untouched(&foreign);
    // Directories emptied by deletions are removed; others stay.
    assert!(env.out().join("cam1").exists());
}

#[test]
fn emptied_directories_are_removed() {
    let env = Env::new();
    let old = env.out().join("cam0/2020-01-01");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("cam0-0000000001.jpg"), b"x").unwrap();
    camera(&env, 50, "frame", "max_files = 2");
    env.record(&["--frames", "2"]);
    assert!(!old.exists(), "the emptied directory is still there");
    assert_eq!(seqs(&env), [2, 3]);
}

#[test]
fn files_deleted_by_someone_else_are_seen() {
    let env = Env::new();
    camera(&env, 50, "100ms", "max_files = 20");
    deleted_files_are_seen(&env);
}

#[test]
fn files_deleted_by_someone_else_are_seen_with_a_relative_output_dir() {
    let env = Env::new();
    // The recorder runs in the sandbox: "out" is relative to it.
    env.config(
        "[source]\nwidth = 64\nheight = 48\nfps = 50\n[snapshot]\nevery = \"100ms\"\n\
         [output]\ndir = \"out\"\n[retention]\nmax_files = 20\n",
    );
    deleted_files_are_seen(&env);
}

fn deleted_files_are_seen(env: &Env) {
    let mut child = env.spawn(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while owned(env).len() < 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Someone deletes the ten newest files but one.
    let mut names = owned(env);
    names.sort_by_key(|n| seq_of(n));
    let oldest = seq_of(&names[0]);
    let highest = seq_of(names.last().unwrap());
    for name in &names[names.len() - 11..names.len() - 1] {
        std::fs::remove_file(env.out().join(name)).unwrap();
    }
    // Nine more files fit under the quota: if retention saw the deletions,
    // it deletes nothing meanwhile; if not, it deletes the oldest nine.
    let deadline = Instant::now() + Duration::from_secs(15);
    while seqs(env).last().is_none_or(|&s| s < highest + 9) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors = seqs(env);
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_success(&child.wait_with_output().unwrap());
    assert!(survivors.len() >= 18, "{survivors:?}");
    assert_eq!(
        survivors[0], oldest,
        "retention deleted files it had no need to: {survivors:?}"
    );
    assert!(owned(env).len() <= 20);
}

#[test]
fn files_added_by_someone_else_count_toward_the_quota() {
    let env = Env::new();
    camera(&env, 50, "100ms", "max_files = 10");
    let mut child = env.spawn(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while owned(&env).len() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Someone restores five files of ours from a backup, into a new directory.
    let restored = env.out().join("cam0/2001-01-01");
    std::fs::create_dir_all(&restored).unwrap();
    for seq in 1_000_001..=1_000_005u64 {
        std::fs::write(restored.join(format!("cam0-{seq:010}.jpg")), b"restored").unwrap();
    }
    // Seen by the watcher, or by the rescan a new directory triggers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut count = owned(&env).len();
    while count > 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        count = owned(&env).len();
    }
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_success(&child.wait_with_output().unwrap());
    assert!(
        count <= 10,
        "{count} files: the restored ones were not counted"
    );
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn min_free_keeps_space_on_a_small_disk() {
    let env = Env::new();
    let Some(_mount) = Tmpfs::mount(&env.out(), "4M") else {
        return;
    };
    env.config(
        "[source]\nwidth = 320\nheight = 240\nfps = 40\n[snapshot]\nevery = \"frame\"\nformat = \"png\"\n\
         [retention]\nmin_free = \"1MiB\"\n",
    );
    let output = env.record(&["--duration", "3s"]);
    let line = summary_line(&output);
    assert!(line.contains("deleted"), "nothing deleted: {line}");
    assert!(!line.contains("disk_full"), "the disk filled up: {line}");
    // The floor holds, give or take the last file or two written.
    let free = free_bytes(&env.out());
    assert!(free >= 900 << 10, "only {free} bytes free");
    let paths: Vec<PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
    decode(&paths);
}

#[test]
fn a_full_disk_is_made_room_on_when_there_is_a_quota() {
    let env = Env::new();
    let Some(_mount) = Tmpfs::mount(&env.out(), "2M") else {
        return;
    };
    // A quota that never binds by itself: only ENOSPC makes retention act.
    env.config(
        "[source]\nwidth = 320\nheight = 240\nfps = 40\n[snapshot]\nevery = \"frame\"\nformat = \"png\"\n\
         [retention]\nmax_files = 1000000\n",
    );
    let output = env.record(&["--duration", "3s"]);
    let line = summary_line(&output);
    assert!(line.contains("deleted"), "no room was made: {line}");
    assert!(wrote(&line) > 60, "{line}");
    assert!(env.files().iter().all(|f| !f.ends_with(".tmp")));
    let paths: Vec<PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
    decode(&paths);
    // The newest frames are the ones kept.
    let newest = env
        .manifest()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(*seqs(&env).last().unwrap(), newest, "{line}");
}

#[test]
fn a_quota_the_disk_cannot_hold_is_warned_about() {
    let env = Env::new();
    camera(&env, 50, "frame", "max_bytes = \"1000PB\"");
    let output = env.record(&["--frames", "1"]);
    assert!(
        stderr(&output).contains("larger than the whole filesystem"),
        "{}",
        stderr(&output)
    );
}
