//! What an adversarial review found, kept found: inputs that once hung,
//! aborted or glued records together, each tried through the binary as a
//! user would meet it.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn absurd_durations_are_refused_not_a_panic() {
    let env = Env::new();
    env.config("");
    let output = env.run(&["run", "--duration", "18446744073709551615s"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("100 years"), "{}", stderr(&output));
    for (key, section) in [("every", "snapshot"), ("max_age", "retention")] {
        let path = env.input(
            "long.toml",
            format!("[{section}]\n{key} = \"1000000years\"\n").as_bytes(),
        );
        let output = env.run(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
        assert!(stderr(&output).contains(&format!("{section}.{key}")));
    }
}

#[test]
fn a_config_that_never_ends_is_refused() {
    let env = Env::new();
    let started = Instant::now();
    let output = env.run(&["check", "--config", "/dev/zero"]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("larger than"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_fifo_without_a_writer_still_stops() {
    let env = Env::new();
    let fifo = env.path("frames.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    env.config(&format!(
        "[source]\nkind = \"raw\"\npath = \"{}\"\nwidth = 16\nheight = 16\n",
        fifo.display()
    ));
    // By --duration...
    let started = Instant::now();
    env.record(&["--duration", "1s"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    // ... and by TERM.
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_ring_larger_than_the_memory_limit_is_an_error_naming_ring_frames() {
    let env = Env::new();
    // 4 buffers of 16384x16384 RGB (3 GiB): check accepts it.
    let config = env.config(
        "[source]\nwidth = 16384\nheight = 16384\n[ring]\nframes = 1\n[encoder]\nthreads = 1\n",
    );
    assert_success(&env.run(&["check", "--config", config.to_str().unwrap()]));
    let script = format!(
        "ulimit -v 2000000 && exec {BIN} run --config {} --duration 2s",
        config.display()
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("ring.frames = 1"), "{text}");
    assert!(text.contains("MiB"), "{text}");
}

#[test]
fn per_second_directories_keep_the_quota_and_report_the_bytes_deleted() {
    let env = Env::new();
    env.config(
        "[source]\nwidth = 320\nheight = 240\nfps = 15\n[snapshot]\nevery = \"frame\"\n\
         [output]\ndir = \"{out}\"\nname = \"{time:%H%M%S}/{seq}.{ext}\"\n\
         [retention]\nmax_files = 10\n",
    );
    let output = env.record(&["--duration", "4s"]);
    let log = stderr(&output);
    assert!(
        !log.contains("watch descriptor"),
        "the watcher's bookkeeping reached the log:\n{log}"
    );
    let kept = env.images();
    assert!(kept.len() <= 10, "{} files kept", kept.len());
    // The bytes of every file written and no longer there.
    let deleted: u64 = env
        .manifest()
        .iter()
        .filter(|line| !env.out().join(line["path"].as_str().unwrap()).exists())
        .map(|line| line["bytes"].as_u64().unwrap())
        .sum();
    assert!(deleted > 0);
    let expected = format!("({:.1} MiB)", deleted as f64 / (1 << 20) as f64);
    let line = summary_line(&output);
    assert!(
        line.contains(&format!("old files {expected}")),
        "{line} (expected {expected})"
    );
}

/// A synthetic camera `camera` writing every frame into `out` with `name`.
fn camera_config(env: &Env, file: &str, camera: &str, name: &str, extra: &str) -> String {
    let text = format!(
        "camera = \"{camera}\"\n[source]\nwidth = 32\nheight = 16\nfps = 50\n\
         [snapshot]\nevery = \"frame\"\n[output]\ndir = \"{}\"\nname = \"{name}\"\n{extra}\n",
        env.out().display()
    );
    env.input(file, text.as_bytes())
        .to_str()
        .unwrap()
        .to_owned()
}

/// The numbers of `camera`'s manifest lines, sorted (lines come in the
/// order files became durable, as a reader would sort them).
fn seqs_in_manifest(env: &Env, camera: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = env
        .manifest()
        .iter()
        .filter(|line| line["camera"] == camera)
        .map(|line| line["seq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    seqs
}

#[test]
fn numbers_never_repeat_without_a_manifest_after_the_images_are_deleted() {
    let env = Env::new();
    let config = camera_config(&env, "a.toml", "cam0", "{seq}.{ext}", "manifest = false");
    assert_success(&env.run(&["run", "--config", &config, "--frames", "5"]));
    let first: Vec<u64> = env.images().iter().map(|n| seq_of(n)).collect();
    assert_eq!(first.len(), 5);
    for name in env.images() {
        std::fs::remove_file(env.out().join(name)).unwrap();
    }
    assert_success(&env.run(&["run", "--config", &config, "--frames", "3"]));
    let second: Vec<u64> = env.images().iter().map(|n| seq_of(n)).collect();
    let highest = *first.iter().max().unwrap();
    assert!(
        second.iter().all(|&seq| seq > highest),
        "numbers reused: {first:?} then {second:?}"
    );
    assert_eq!(
        second.iter().min(),
        Some(&(highest + 1)),
        "numbering jumped"
    );
}

#[test]
fn a_shared_manifest_full_of_another_camera_never_resets_numbering() {
    let env = Env::new();
    let name = "{camera}-{seq}.{ext}";
    let a = camera_config(&env, "a.toml", "a", name, "");
    assert_success(&env.run(&["run", "--config", &a, "--frames", "4"]));
    // Another camera appends far more than the tail that is read back.
    let b = camera_config(&env, "b.toml", "b", name, "");
    assert_success(&env.run(&["run", "--config", &b, "--frames", "400"]));
    for image in env.images().iter().filter(|n| n.starts_with("a-")) {
        std::fs::remove_file(env.out().join(image)).unwrap();
    }
    assert_success(&env.run(&["run", "--config", &a, "--frames", "2"]));
    assert_eq!(seqs_in_manifest(&env, "a"), [1, 2, 3, 4, 5, 6]);
}

/// Starts `first` (camera `camera`), runs `second` for one frame while it
/// records, then stops the first: both outcomes.
fn second_while_first_records(
    env: &Env,
    first: &str,
    camera: &str,
    second: &str,
) -> (std::process::ExitStatus, std::process::Output) {
    let mut child = Running::start(
        Command::new(BIN)
            .args(["run", "--config", first])
            .stderr(std::process::Stdio::null()),
    );
    env.wait_for_lock(camera);
    let output = env.run(&["run", "--config", second, "--frames", "1"]);
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    (child.wait().unwrap(), output)
}

#[test]
fn cameras_whose_names_could_collide_cannot_share_a_directory() {
    let env = Env::new();
    // No {camera} in the name: two cameras would write the same names.
    let a = camera_config(&env, "a.toml", "a", "{seq}.{ext}", "");
    let b = camera_config(&env, "b.toml", "b", "{camera}-{seq}.{ext}", "");
    let (_, second) = second_while_first_records(&env, &a, "a", &b);
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(stderr(&second).contains("{camera}"), "{}", stderr(&second));
    // Templates that cannot tell cameras apart are refused by check.
    for name in ["{seq}{camera}.{ext}", "{camera}-{time:%Z}-{seq}.{ext}"] {
        let config = camera_config(&env, "c.toml", "c", name, "");
        let output = env.run(&["check", "--config", &config]);
        assert_eq!(
            output.status.code(),
            Some(78),
            "{name}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("output.name"),
            "{}",
            stderr(&output)
        );
    }
}

#[test]
fn a_run_where_every_write_fails_exits_1() {
    let env = Env::new();
    env.config("[snapshot]\nevery = \"frame\"\n[source]\nwidth = 32\nheight = 16\n");
    // The camera's directory is taken by a file: every write fails.
    std::fs::create_dir_all(env.out()).unwrap();
    std::fs::write(env.out().join("cam0"), b"not a directory").unwrap();
    let output = env.run_config(&["--duration", "1s"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no file could be written"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read(env.out().join("cam0")).unwrap(),
        b"not a directory"
    );
}

/// A directory outside the output tree, watched for anything framerec
/// might put there.
fn outside(env: &Env) -> std::path::PathBuf {
    let dir = env.path("outside");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn links_planted_under_the_output_directory_are_refused_not_followed() {
    let env = Env::new();
    let target = outside(&env);
    let body = "[source]\nwidth = 32\nheight = 16\n[snapshot]\nevery = \"frame\"\n";
    env.config(body);
    let config = env.path("config.toml");
    let config = config.to_str().unwrap();
    let plant = |name: &str, to: &std::path::Path| {
        let _ = std::fs::remove_dir_all(env.out());
        std::fs::create_dir_all(env.out().join("cam0")).unwrap();
        std::os::unix::fs::symlink(to, env.out().join(name)).unwrap();
    };
    // The manifest and the lock: start-up refuses, creating nothing outside.
    for name in ["manifest.jsonl", ".framerec-cam0.lock", ".framerec.lock"] {
        plant(name, &target.join(name));
        let output = env.run(&["run", "--config", config, "--frames", "2"]);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        assert!(!target.join(name).exists(), "{name} was followed");
    }
    // A camera or date directory: no file lands outside.
    let day = chrono_day();
    for name in ["cam0", &format!("cam0/{day}")] {
        let _ = std::fs::remove_dir_all(env.out());
        std::fs::create_dir_all(env.out().join("cam0")).unwrap();
        let _ = std::fs::remove_dir(env.out().join(name));
        std::os::unix::fs::symlink(&target, env.out().join(name)).unwrap();
        let output = env.run(&["run", "--config", config, "--duration", "1s"]);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("symbolic link"),
            "{}",
            stderr(&output)
        );
        assert_eq!(
            files_under(&target),
            Vec::<String>::new(),
            "{name} was followed"
        );
    }
}

/// Today's date directory of the default template (UTC).
fn chrono_day() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_directory_moved_away_while_recording_receives_nothing_more() {
    let env = Env::new();
    let archive = outside(&env);
    env.config("[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n");
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    std::thread::sleep(Duration::from_millis(500));
    std::fs::rename(env.out().join("cam0"), archive.join("cam0")).unwrap();
    let moved_at = files_under(&archive).len();
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(child.wait().unwrap().success());
    // At most a file in flight at the moment of the move follows it.
    let archived = files_under(&archive).len();
    assert!(
        archived <= moved_at + 1,
        "{moved_at} then {archived} files in the moved directory"
    );
    let last = env.manifest().last().cloned().unwrap();
    assert!(
        env.out().join(last["path"].as_str().unwrap()).exists(),
        "the manifest names a file that is not in the output directory: {last}"
    );
}

#[test]
fn an_output_directory_removed_while_recording_is_made_again_with_its_lock() {
    let env = Env::new();
    env.config("[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n");
    let config = env.path("config.toml");
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    std::thread::sleep(Duration::from_millis(300));
    remove_tree(&env.out());
    std::thread::sleep(Duration::from_millis(800));
    // Recording went on into a new directory, and holds its lock.
    assert!(
        !env.images().is_empty(),
        "nothing written after the removal"
    );
    let second = env.run(&["run", "--config", config.to_str().unwrap(), "--frames", "1"]);
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(child.wait().unwrap().success());
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    // Numbering went on: the new manifest starts after the old files.
    let first_new = env.manifest()[0]["seq"].as_u64().unwrap();
    assert!(first_new > 1, "numbering restarted at {first_new}");
}

#[test]
fn a_file_that_cannot_be_deleted_is_counted_and_the_quota_still_holds() {
    let env = Env::new();
    let name = "{camera}-{seq}.{ext}";
    let config = camera_config(&env, "q.toml", "cam0", name, "[retention]\nmax_files = 3");
    std::fs::create_dir_all(env.out()).unwrap();
    for seq in 1..=4 {
        std::fs::write(env.out().join(format!("cam0-{seq:010}.jpg")), b"old").unwrap();
    }
    let stuck = env.out().join("cam0-0000000001.jpg");
    let immutable = |on: bool| {
        Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(&stuck)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !immutable(true) {
        eprintln!("skipped: chattr +i is not permitted here");
        return;
    }
    let output = env.run(&["run", "--config", &config, "--frames", "4"]);
    immutable(false);
    assert_success(&output);
    let line = summary_line(&output);
    assert!(line.contains("failed to delete"), "{line}");
    assert!(stuck.exists());
    // The stuck file counts toward the quota: the others make room.
    assert_eq!(env.images().len(), 3, "{:?}", env.images());
}

#[test]
fn a_filesystem_out_of_inodes_is_made_room_on_when_there_is_a_quota() {
    let env = Env::new();
    // Plenty of bytes, few inodes.
    let Some(_mount) = Tmpfs::mount(&env.out(), "16M,nr_inodes=48") else {
        return;
    };
    env.config(
        "[source]\nwidth = 32\nheight = 16\nfps = 40\n[snapshot]\nevery = \"frame\"\n\
         [output]\ndir = \"{out}\"\nname = \"{camera}-{seq}.{ext}\"\n\
         [retention]\nmax_files = 1000000\n",
    );
    let output = env.record(&["--duration", "3s"]);
    let line = summary_line(&output);
    assert!(line.contains("deleted"), "no inodes were freed: {line}");
    assert!(
        wrote(&line) > 80,
        "writing stopped when the inodes ran out: {line}"
    );
}

/// A small JPEG (the pattern differs with `seed`).
fn small_jpeg(seed: usize) -> Vec<u8> {
    let pixels = rgb_image(64, 48, seed);
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width: 64,
        pitch: 64 * 3,
        height: 48,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 90, turbojpeg::Subsamp::Sub2x2)
        .unwrap()
        .to_vec()
}

/// The peak resident memory of a running process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_mjpeg_frame_over_max_frame_bytes_is_dropped_and_memory_stays_bounded() {
    let env = Env::new();
    env.config(
        "[source]\nkind = \"raw\"\npath = \"-\"\npixel_format = \"mjpeg\"\nwidth = 64\nheight = 48\n\
         max_frame_bytes = \"256KiB\"\n[ring]\nwhen_full = \"block\"\n[snapshot]\nevery = \"frame\"\n",
    );
    // A whole JPEG of 48 MiB: a small one with 768 extra 64 KiB segments.
    let small = small_jpeg(1);
    let mut big = small[..2].to_vec();
    for _ in 0..768 {
        big.extend_from_slice(&[0xFF, 0xEF, 0xFF, 0xFF]);
        big.extend(std::iter::repeat_n(0x20, 0xFFFF - 2));
    }
    big.extend_from_slice(&small[2..]);
    let before: Vec<Vec<u8>> = (0..3).map(small_jpeg).collect();
    let after: Vec<Vec<u8>> = (3..6).map(small_jpeg).collect();
    let mut child = env.spawn(true);
    let mut stdin = child.stdin.take().unwrap();
    let stream = [before.concat(), big.clone(), after.concat()].concat();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&stream).unwrap();
        stdin
    });
    // Every small frame is written while the input stays open...
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.images().len() < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(env.images().len(), 6, "{:?}", env.files());
    // ... and the 48 MiB frame never made the recorder hold it.
    let peak = peak_kib(child.id());
    drop(writer.join().unwrap());
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    assert!(
        peak < 40 << 10,
        "peak memory {peak} KiB for a 256 KiB frame bound"
    );
    // The small JPEGs are numbered without a gap: the big one took no number.
    let lines = env.manifest();
    let mut seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    let text = stderr(&output);
    let summary = summary_line(&output);
    assert!(summary.contains("wrote 6 files"), "{summary}");
    assert!(summary.contains("dropped 1 (corrupt 1)"), "{summary}");
    assert!(
        summary.contains(&format!(
            "skipped 1 stretch of input that was not a whole frame ({} bytes)",
            big.len()
        )),
        "{summary}"
    );
    assert!(text.contains("source.max_frame_bytes"), "{text}");
}

#[test]
fn a_directory_moved_away_and_replaced_by_a_link_receives_nothing() {
    let env = Env::new();
    let archive = outside(&env);
    env.config(
        "[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n\
         [retention]\nmax_files = 5\n",
    );
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    std::thread::sleep(Duration::from_millis(400));
    std::fs::rename(env.out().join("cam0"), archive.join("cam0")).unwrap();
    std::os::unix::fs::symlink(archive.join("cam0"), env.out().join("cam0")).unwrap();
    let moved_at = files_under(&archive).len();
    std::thread::sleep(Duration::from_millis(1000));
    let later = files_under(&archive).len();
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    let _ = child.wait();
    // Neither written to nor deleted from through the link.
    assert!(
        later <= moved_at + 1,
        "{moved_at} then {later} files in the moved directory"
    );
    assert!(
        later + 1 >= moved_at,
        "files deleted in the moved directory"
    );
}

#[test]
fn retention_never_follows_a_link_planted_in_the_tree() {
    let env = Env::new();
    let elsewhere = outside(&env);
    // A huge file (sparse) that would be "ours" if the link were followed.
    let bait = std::fs::File::create(elsewhere.join("cam0-9999999999.jpg")).unwrap();
    bait.set_len(1 << 40).unwrap();
    env.config(
        "[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n\
         [retention]\nmax_bytes = \"10MiB\"\n",
    );
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    std::thread::sleep(Duration::from_millis(500));
    std::os::unix::fs::symlink(&elsewhere, env.out().join("cam0/2099-01-01")).unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(child.wait().unwrap().success());
    assert!(
        elsewhere.join("cam0-9999999999.jpg").exists(),
        "a file behind a link was deleted"
    );
    // Nothing of framerec's own was deleted for the bait's sake.
    let kept = env
        .images()
        .iter()
        .filter(|name| !name.contains("2099-01-01"))
        .count();
    let written = env.manifest().len();
    assert_eq!(
        kept, written,
        "{written} written, {kept} kept: the bait counted in the quota"
    );
}

#[test]
fn an_output_directory_removed_and_made_again_by_someone_is_taken_back() {
    let env = Env::new();
    env.config("[source]\nwidth = 32\nheight = 16\nfps = 5\n[snapshot]\nevery = \"3s\"\n");
    let config = env.path("config.toml");
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    remove_tree(&env.out());
    std::fs::create_dir(env.out()).unwrap();
    // Within a second the recorder holds the new directory's locks again,
    // though no file was due.
    std::thread::sleep(Duration::from_millis(1500));
    let second = env.run(&["run", "--config", config.to_str().unwrap(), "--frames", "1"]);
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(child.wait().unwrap().success());
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
}

#[test]
fn max_age_goes_by_each_files_own_time() {
    let env = Env::new();
    let name = "{camera}-{seq}.{ext}";
    let config = camera_config(
        &env,
        "a.toml",
        "cam0",
        name,
        "[retention]\nmax_age = \"30d\"",
    );
    std::fs::create_dir_all(env.out()).unwrap();
    let touch = |seq: u64, when: &str| {
        let path = env.out().join(format!("cam0-{seq:010}.jpg"));
        std::fs::write(&path, b"old").unwrap();
        let status = Command::new("touch")
            .args(["-d", when])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    };
    for seq in 1..=10 {
        touch(seq, "-1 hour");
    }
    // Written while the clock was unset, after the fresh ones...
    touch(11, "2001-01-01");
    // ... and one from the future between two expired ones.
    touch(12, "-60 days");
    touch(13, "+1 year");
    touch(14, "-60 days");
    assert_success(&env.run(&["run", "--config", &config, "--frames", "2"]));
    let kept: Vec<u64> = env.images().iter().map(|n| seq_of(n)).collect();
    for seq in (1..=10).chain([13]) {
        assert!(kept.contains(&seq), "cam0-{seq} went: {kept:?}");
    }
    for seq in [11, 12, 14] {
        assert!(
            !kept.contains(&seq),
            "cam0-{seq} is past max_age and stayed: {kept:?}"
        );
    }
}

#[test]
fn fifos_planted_for_framerecs_own_files_are_refused_not_waited_on() {
    let env = Env::new();
    env.config("[source]\nwidth = 32\nheight = 16\n[snapshot]\nevery = \"frame\"\n");
    for name in [
        ".framerec.lock",
        ".framerec-cam0.lock",
        ".framerec-cam0.seq",
        "manifest.jsonl",
    ] {
        let _ = std::fs::remove_dir_all(env.out());
        std::fs::create_dir_all(env.out()).unwrap();
        let made = Command::new("mkfifo")
            .arg(env.out().join(name))
            .status()
            .unwrap();
        assert!(made.success());
        let started = Instant::now();
        let output = env.run_config(&["--duration", "1s"]);
        assert_eq!(output.status.code(), Some(1), "{name}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("regular file"),
            "{name}: {}",
            stderr(&output)
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{name}: hung");
    }
    // One planted where the mark is rewritten, while recording.
    let _ = std::fs::remove_dir_all(env.out());
    let mut child = env.spawn(false);
    env.wait_for_lock("cam0");
    let _ = Command::new("mkfifo")
        .arg(env.out().join(".framerec-cam0.seq.new"))
        .status();
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(child.wait().unwrap().success());
}

#[test]
fn cameras_in_one_directory_must_share_a_template() {
    let env = Env::new();
    let a = camera_config(&env, "a.toml", "a", "{camera}-{seq}.{ext}", "");
    // Camera "jpg" with this template writes exactly camera "a"'s names.
    let b = camera_config(&env, "b.toml", "jpg", "a-{seq}.{camera}", "");
    let (first, second) = second_while_first_records(&env, &a, "a", &b);
    assert!(first.success());
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("one template"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn a_recorder_whose_locks_were_taken_by_another_stops() {
    let env = Env::new();
    env.config("[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n");
    let config = env.path("config.toml");
    let mut first = env.spawn(false);
    env.wait_for_lock("cam0");
    std::fs::remove_file(env.out().join(".framerec-cam0.lock")).unwrap();
    std::fs::remove_file(env.out().join(".framerec.lock")).unwrap();
    let mut second = Running::start(
        env.command(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--duration",
            "3s",
        ])
        .stderr(std::process::Stdio::piped()),
    );
    wait_with_timeout(&mut second, Duration::from_secs(30));
    let second_code = second.wait().unwrap().code();
    // The first may have taken its locks back (at its next frame) before the
    // second started: then the second stops, and the first goes on until
    // told to stop.
    if second_code == Some(1) {
        std::thread::sleep(Duration::from_millis(300));
        if first.try_wait().unwrap().is_none() {
            signal(&first, "TERM");
        }
    }
    wait_with_timeout(&mut first, Duration::from_secs(30));
    let first_code = first.wait().unwrap().code();
    // One of the two goes on; the other stops with an error: never both.
    assert!(
        matches!(
            (first_code, second_code),
            (Some(1), Some(0)) | (Some(0), Some(1))
        ),
        "{first_code:?} {second_code:?}"
    );
    let seqs: Vec<u64> = env
        .manifest()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seqs.len(), "a number was written twice");
}

#[test]
fn a_file_filled_after_it_appeared_counts_at_its_full_size() {
    let env = Env::new();
    let config = camera_config(
        &env,
        "q.toml",
        "cam0",
        "{camera}-{seq}.{ext}",
        "[retention]\nmax_bytes = \"2MB\"",
    );
    let mut child = Running::start(
        Command::new(BIN)
            .args(["run", "--config", &config, "--duration", "6s"])
            .stderr(std::process::Stdio::null()),
    );
    env.wait_for_lock("cam0");
    // An owned name, made empty and filled a moment later (a copy tool).
    let late = env.out().join("cam0-0000000001.jpg");
    let mut file = std::fs::File::create(&late).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    file.write_all(&vec![7u8; 3 << 20]).unwrap();
    drop(file);
    wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(child.wait().unwrap().success());
    assert!(!late.exists(), "a 3 MB file kept under a 2 MB quota");
}

#[test]
fn something_in_the_way_of_the_sequence_mark_is_refused_at_start() {
    let env = Env::new();
    env.config("[source]\nwidth = 32\nheight = 16\n");
    std::fs::create_dir_all(env.out().join(".framerec-cam0.seq.new")).unwrap();
    let config = env.path("config.toml");
    let output = env.run(&["run", "--config", config.to_str().unwrap(), "--frames", "3"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("in the way"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_lone_recorder_takes_back_a_removed_lock_file_and_goes_on() {
    for lock in [".framerec.lock", ".framerec-cam0.lock"] {
        let env = Env::new();
        env.config("[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"frame\"\n");
        let mut child = env.spawn(false);
        env.wait_for_lock("cam0");
        std::fs::remove_file(env.out().join(lock)).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(env.out().join(lock).exists(), "{lock} not taken back");
        let before = env.manifest().len();
        std::thread::sleep(Duration::from_millis(500));
        assert!(env.manifest().len() > before, "{lock}: recording stopped");
        signal(&child, "TERM");
        wait_with_timeout(&mut child, Duration::from_secs(30));
        assert!(child.wait().unwrap().success(), "{lock}: it stopped itself");
    }
}

#[test]
fn the_recorder_that_lost_its_directory_leaves_the_winners_files_and_mark_alone() {
    let env = Env::new();
    let body = |quota: &str| {
        format!(
            "[source]\nwidth = 32\nheight = 16\nfps = 20\n[snapshot]\nevery = \"2s\"\n\
             [output]\ndir = \"{}\"\nname = \"{{camera}}-{{seq}}.{{ext}}\"\nmanifest = false\n{quota}",
            env.out().display()
        )
    };
    let loser_config = env.input(
        "loser.toml",
        body("[retention]\nmax_files = 1\n").as_bytes(),
    );
    let winner_config = env.input("winner.toml", body("").replace("2s", "frame").as_bytes());
    let mut loser = Running::start(
        env.command(&["run", "--config", loser_config.to_str().unwrap()])
            .stderr(std::process::Stdio::null()),
    );
    env.wait_for_lock("cam0");
    std::thread::sleep(Duration::from_millis(2500));
    // Someone removes the locks, and a second recorder starts at once.
    std::fs::remove_file(env.out().join(".framerec-cam0.lock")).unwrap();
    std::fs::remove_file(env.out().join(".framerec.lock")).unwrap();
    let winner = env.run(&[
        "run",
        "--config",
        winner_config.to_str().unwrap(),
        "--duration",
        "3s",
    ]);
    wait_with_timeout(&mut loser, Duration::from_secs(30));
    let loser_code = loser.wait().unwrap().code();
    if winner.status.code() != Some(0) {
        // The first took its locks back before the second started: then
        // the second is refused, which is as good.
        assert_eq!(winner.status.code(), Some(1), "{}", stderr(&winner));
        return;
    }
    assert_eq!(loser_code, Some(1), "both recorded");
    let seqs: Vec<u64> = env.images().iter().map(|n| seq_of(n)).collect();
    let winners: Vec<u64> = seqs.iter().copied().filter(|&s| s > 1000).collect();
    assert!(
        winners.len() >= 20,
        "the loser deleted the winner's files: {seqs:?}"
    );
    let mark: u64 = std::fs::read_to_string(env.out().join(".framerec-cam0.seq"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        mark >= *winners.iter().max().unwrap(),
        "the mark ({mark}) went below the winner's numbers"
    );
}

#[test]
fn a_stale_lock_of_another_user_that_nobody_holds_is_no_conflict() {
    let env = Env::new();
    let out = env.out();
    std::fs::create_dir_all(&out).unwrap();
    let owned = Command::new("chown").args(["nobody"]).arg(&out).status();
    let dir_ok = Command::new("chmod")
        .args(["755"])
        .arg(env.dir.path())
        .status();
    if !owned.is_ok_and(|s| s.success()) || !dir_ok.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot hand a directory to user nobody here");
        return;
    }
    // Left by a root run of another camera; unreadable for nobody.
    let stale = out.join(".framerec-cam1.lock");
    std::fs::write(&stale, b"{camera}/{seq}.{ext}").unwrap();
    std::fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = env.config("[source]\nwidth = 32\nheight = 16\n[snapshot]\nevery = \"frame\"\n");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let output = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            BIN,
            "run",
            "--config",
        ])
        .arg(&config)
        .args(["--frames", "3"])
        .current_dir(env.dir.path())
        .output();
    let Ok(output) = output else {
        eprintln!("skipped: setpriv is missing");
        return;
    };
    assert_success(&output);
}

#[test]
fn a_raw_input_file_truncated_while_recording_stores_no_wrong_frame() {
    // Raw files are mapped, not read: a file cut short underneath must
    // neither kill the recorder (SIGBUS) nor store zeros as a frame.
    const W: usize = 256;
    const H: usize = 192;
    const FRAMES: usize = 400;
    let env = Env::new();
    let frames: Vec<Vec<u8>> = (0..32).map(|k| rgb_image(W, H, k)).collect();
    let input = env.path("in.rgb");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        for k in 0..FRAMES {
            file.write_all(&frames[k % frames.len()]).unwrap();
        }
    }
    env.config(&format!(
        "[source]\nkind = \"raw\"\npath = \"{}\"\nwidth = {W}\nheight = {H}\npixel_format = \"rgb\"\n\
         [ring]\nwhen_full = \"block\"\n\
         [snapshot]\nevery = \"frame\"\nformat = \"png\"\ncompression = \"best\"\n",
        input.display()
    ));
    let mut child = env.spawn(false);
    let started = Instant::now();
    while env.images().len() < 20 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Capture is at most a ring and the encoders ahead of the files.
    let kept = 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap()
        // Inside the last frame kept, and inside a page: no fault tells.
        .set_len((kept * W * H * 3 - 3000) as u64)
        .unwrap();
    wait_with_timeout(&mut child, Duration::from_secs(60));
    let output = child.wait_with_output().unwrap();
    assert_success(&output);
    let images = env.images();
    assert!(
        images.len() < FRAMES,
        "the whole file was read before it was cut: make the test slower"
    );
    let paths: Vec<std::path::PathBuf> = images.iter().map(|f| env.out().join(f)).collect();
    for (name, image) in images.iter().zip(decode(&paths)) {
        let k = (seq_of(name) - 1) as usize;
        assert!(k < kept - 1, "{name}: a frame from past the cut was stored");
        assert!(
            image.pixels == frames[k % frames.len()],
            "{name} is not frame {k} of the input"
        );
    }
    assert!(stderr(&output).contains("shrank"), "{}", stderr(&output));
}
