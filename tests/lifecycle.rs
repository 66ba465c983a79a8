//! The recorder over time: numbering across restarts, stopping by signal,
//! crashes at random moments, the lock, and the time limits.

use crate::common::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A small, fast synthetic camera writing every frame.
fn synthetic(env: &Env, fps: u32, extra: &str) {
    env.config(&format!(
        "camera = \"cam\"\n[source]\nkind = \"synthetic\"\nwidth = 96\nheight = 64\nfps = {fps}\n[snapshot]\nevery = \"frame\"\n{extra}\n"
    ));
}

fn seqs(env: &Env) -> Vec<u64> {
    let mut seqs: Vec<u64> = env.images().iter().map(|f| seq_of(f)).collect();
    seqs.sort();
    seqs
}

/// The number after `word` in the summary line.
fn summary_count(stderr: &str, word: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("captured "))
        .expect("a summary line");
    let after = line
        .split(word)
        .nth(1)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
    after
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn numbering_continues_across_restarts_and_nothing_is_overwritten() {
    let env = Env::new();
    synthetic(&env, 100, "format = \"png\"");
    env.record(&["--frames", "5"]);
    assert_eq!(seqs(&env), [1, 2, 3, 4, 5]);
    let first: Vec<(String, Vec<u8>)> = env
        .images()
        .into_iter()
        .map(|f| (f.clone(), std::fs::read(env.out().join(&f)).unwrap()))
        .collect();
    env.record(&["--frames", "4"]);
    assert_eq!(seqs(&env), (1..=9).collect::<Vec<_>>());
    for (name, bytes) in first {
        assert!(
            std::fs::read(env.out().join(&name)).unwrap() == bytes,
            "{name} was changed by the second run"
        );
    }
    let manifest = env.manifest();
    // Lines come in the order files became durable: sort, as a reader would.
    let mut manifest_seqs: Vec<u64> = manifest
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    manifest_seqs.sort();
    assert_eq!(manifest_seqs, (1..=9).collect::<Vec<_>>());
    for line in &manifest {
        let path = env.out().join(line["path"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            line["bytes"].as_u64().unwrap()
        );
    }
}

#[test]
fn numbers_are_not_reused_after_the_images_are_deleted() {
    let env = Env::new();
    synthetic(&env, 100, "");
    env.record(&["--frames", "3"]);
    for image in env.images() {
        std::fs::remove_file(env.out().join(image)).unwrap();
    }
    env.record(&["--frames", "2"]);
    // The manifest still remembers 1..3.
    assert_eq!(seqs(&env), [4, 5]);
}

#[test]
fn sigterm_drains_every_captured_frame_and_exits_0() {
    let env = Env::new();
    // PNG "best" on one thread is far slower than 30 fps capture: the ring fills.
    env.config(
        "[source]\nwidth = 640\nheight = 480\nfps = 30\n[ring]\nframes = 16\nwhen_full = \"drop-newest\"\n\
         [snapshot]\nevery = \"frame\"\nformat = \"png\"\ncompression = \"best\"\n[encoder]\nthreads = 1\n",
    );
    let mut child = env.spawn(false);
    std::thread::sleep(Duration::from_millis(1500));
    let before = env.images().len();
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(60));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let stderr = stderr(&output);
    let picked = summary_count(&stderr, "picked ");
    let wrote = summary_count(&stderr, "wrote ");
    let dropped = summary_count(&stderr, "dropped ");
    assert_eq!(
        wrote + dropped,
        picked,
        "frames lost in the drain:\n{stderr}"
    );
    assert_eq!(env.images().len() as u64, wrote);
    assert!(
        wrote as usize > before,
        "nothing was drained after the signal ({before} before, {wrote} after)"
    );
    let paths: Vec<PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
    decode(&paths);
}

#[test]
fn a_second_sigterm_exits_at_once_with_whole_files() {
    let env = Env::new();
    env.config(
        "[source]\nwidth = 640\nheight = 480\nfps = 60\n[ring]\nframes = 256\nwhen_full = \"drop-newest\"\n\
         [snapshot]\nevery = \"frame\"\nformat = \"png\"\ncompression = \"best\"\n[encoder]\nthreads = 1\n",
    );
    let mut child = env.spawn(false);
    std::thread::sleep(Duration::from_millis(2000));
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the second TERM did not exit at once"
    );
    let paths: Vec<PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
    decode(&paths);
}

#[test]
fn sigkill_at_random_moments_never_leaves_a_partial_file() {
    let env = Env::new();
    synthetic(&env, 300, "format = \"png\"\n[ring]\nframes = 8");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill timing seed: {seed}");
    let mut state = seed | 1;
    let mut temp_files_seen = 0;
    for _ in 0..8 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(150 + state % 400);
        let mut child = env.spawn(false);
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        temp_files_seen += env.files().iter().filter(|f| f.ends_with(".tmp")).count();
        // Every file under a final name is whole.
        let paths: Vec<PathBuf> = env.images().iter().map(|f| env.out().join(f)).collect();
        for (path, result) in paths.iter().zip(try_decode(&paths)) {
            assert!(
                result.is_ok(),
                "{} is partial after SIGKILL: {:?}",
                path.display(),
                result.err()
            );
        }
    }
    eprintln!("temp files left by kills: {temp_files_seen}");
    let before: HashSet<u64> = seqs(&env).into_iter().collect();
    let output = env.record(&["--frames", "2"]);
    assert!(
        env.files().iter().all(|f| !f.ends_with(".tmp")),
        "temp files were not swept: {:?}",
        env.files()
    );
    let after = seqs(&env);
    assert_eq!(after.len(), before.len() + 2, "{}", stderr(&output));
    let highest_before = before.iter().max().copied().unwrap_or(0);
    assert!(after
        .iter()
        .filter(|s| !before.contains(s))
        .all(|s| *s > highest_before));
}

#[test]
fn start_up_sweeps_only_its_own_temp_files() {
    let env = Env::new();
    synthetic(
        &env,
        100,
        "[output]\ndir = \"{out}\"\nname = \"{camera}-{seq}.{ext}\"",
    );
    std::fs::create_dir_all(env.out()).unwrap();
    std::fs::write(env.out().join(".cam-0000000007.jpg.tmp"), b"half a file").unwrap();
    std::fs::write(env.out().join(".notes.txt.tmp"), b"someone else's").unwrap();
    std::fs::write(env.out().join("cam-0000000006.jpg"), b"an older file").unwrap();
    env.record(&["--frames", "1"]);
    let files = env.files();
    assert!(
        !files.contains(&".cam-0000000007.jpg.tmp".to_owned()),
        "{files:?}"
    );
    assert!(files.contains(&".notes.txt.tmp".to_owned()), "{files:?}");
    assert!(
        files.contains(&"cam-0000000007.jpg".to_owned()),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read(env.out().join("cam-0000000006.jpg")).unwrap(),
        b"an older file"
    );
}

#[test]
fn a_second_recorder_on_the_same_files_is_refused() {
    let env = Env::new();
    synthetic(&env, 10, "");
    let config = env.path("config.toml");
    let mut first = env.spawn(false);
    env.wait_for_lock("cam");
    let second = env.run(&["run", "--config", config.to_str().unwrap(), "--frames", "1"]);
    signal(&first, "TERM");
    wait_with_timeout(&mut first, Duration::from_secs(30));
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another framerec is recording"),
        "{}",
        stderr(&second)
    );
    assert!(first.wait().unwrap().success());
}

#[test]
fn duration_and_frames_limits_stop_the_run() {
    let env = Env::new();
    synthetic(&env, 30, "");
    let started = Instant::now();
    env.record(&["--duration", "1s"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "--duration 1s took {took:?}"
    );
    assert!(!env.images().is_empty());
    let before = env.images().len();
    env.record(&["--frames", "7"]);
    assert_eq!(env.images().len(), before + 7);
}

#[test]
fn one_snapshot_a_second_lands_on_the_second() {
    let env = Env::new();
    env.config("[source]\nwidth = 64\nheight = 48\nfps = 50\n[snapshot]\nevery = \"1s\"\n");
    env.record(&["--frames", "3"]);
    for line in env.manifest() {
        let t = line["captured_at"].as_str().unwrap();
        let nanos: u64 = t[20..29].parse().unwrap();
        // 50 fps: the nearest frame is within 10 ms of the tick (+ scheduling noise).
        let off = nanos.min(1_000_000_000 - nanos);
        assert!(
            off < 60_000_000,
            "{t} is {} ms off the second",
            off / 1_000_000
        );
    }
}

#[test]
fn the_demo_config_needs_no_file() {
    let env = Env::new();
    let output = env.run(&["run", "--frames", "1"]);
    assert_success(&output);
    let images = files_under(&env.path("frames"));
    assert_eq!(
        images.iter().filter(|f| f.ends_with(".jpg")).count(),
        1,
        "{images:?}"
    );
    let jpg = images.iter().find(|f| f.ends_with(".jpg")).unwrap();
    assert!(
        jpg.starts_with("cam0/") && jpg.contains("/cam0-0000000001.jpg"),
        "{jpg}"
    );
    let decoded = decode(&[env.path("frames").join(jpg)]).remove(0);
    assert_eq!((decoded.width, decoded.height), (1280, 720));
}

#[test]
fn usr1_takes_a_snapshot_now_and_hup_does_not_stop_the_recorder() {
    let env = Env::new();
    env.config("[source]\nwidth = 64\nheight = 48\nfps = 30\n[snapshot]\nevery = \"1h\"\n");
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    signal(&child, "HUP");
    for expected in 1..=2 {
        signal(&child, "USR1");
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.images().len() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(env.images().len(), expected, "USR1 did not take a snapshot");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "HUP stopped the recorder"
    );
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    // The file is unchanged: the reload applies nothing and says so.
    assert!(stderr(&output).contains("config reloaded: nothing changed"));
}

#[test]
fn sigterm_stops_a_recorder_waiting_on_a_silent_pipe() {
    let env = Env::new();
    env.config("[source]\nkind = \"raw\"\npath = \"-\"\nwidth = 8\nheight = 8\n[snapshot]\nevery = \"frame\"\n");
    let mut child = env.spawn(true);
    // Half a frame, then silence with the pipe still open.
    {
        use std::io::Write;
        child.stdin.as_mut().unwrap().write_all(&[7u8; 96]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let started = Instant::now();
    wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "TERM took {:?}",
        started.elapsed()
    );
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    assert!(env.images().is_empty());
}

#[test]
fn small_frames_on_an_idle_pipe_are_not_held_back() {
    let env = Env::new();
    env.config("[source]\nkind = \"raw\"\npath = \"-\"\nwidth = 16\nheight = 16\npixel_format = \"gray\"\n[snapshot]\nevery = \"frame\"\nformat = \"png\"\n");
    let mut child = env.spawn(true);
    {
        use std::io::Write;
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(&[9u8; 16 * 16 * 10])
            .unwrap();
    }
    // The writer goes quiet with the pipe still open: all ten must be on disk.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.images().len() < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(env.images().len(), 10, "frames stuck in a buffer");
    drop(child.stdin.take());
    wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_success(&child.wait_with_output().unwrap());
}

/// Every frame buffer comes back to the ring whatever the schedule does
/// with it: with a frame held back at each tick (an interval schedule) and
/// snapshots asked for between ticks, capture keeps the source's rate for
/// as long as it runs (it once ran dry after 20 picks and fell to a few
/// frames a second, missing ticks).
#[test]
fn interval_schedules_and_snapshots_never_run_capture_dry() {
    let env = Env::new();
    env.config("[source]\nwidth = 64\nheight = 48\nfps = 30\n[snapshot]\nevery = \"100ms\"\n");
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    // 40 snapshots asked for between the ticks, then more ticks.
    for _ in 0..40 {
        signal(&child, "USR1");
        std::thread::sleep(Duration::from_millis(35));
    }
    std::thread::sleep(Duration::from_secs(3));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let log = stderr(&output);
    let captured = summary_count(&log, "captured ");
    let picked = summary_count(&log, "picked ");
    let missed = summary_count(&log, "missed ticks ");
    // About 4.4 s at 30 fps (130 frames) and 44 ticks plus the snapshots:
    // a ring run dry captured a third of that and missed most ticks.
    assert!(captured >= 90, "{log}");
    assert!(picked >= 60, "{log}");
    assert!(missed <= 4, "{log}");
}
