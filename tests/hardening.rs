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
