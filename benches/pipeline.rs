//! Pipeline benchmark: 1080p RGB frames through the whole recorder from the
//! raw source (stdin), as JPEG q90 with fsync off and on and as PNG fast,
//! with peak memory; and the same frames through libjpeg-turbo alone on one
//! thread, the encoder's own limit.
//!
//! `cargo bench` prints the figures. Under `cargo test` (no `--bench`
//! argument) it runs a few small frames only, to check it still works.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use framerec::frame::{Frame, PixelFormat};
use framerec::source::Synthetic;

struct Run {
    frames_per_sec: f64,
    peak_rss_mib: f64,
    written: usize,
}

/// Peak resident memory of a running process, from /proc.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jpg" || e == "png") {
                n += 1;
            }
        }
    }
    n
}

fn pipeline(
    work: &Path,
    frame: &[u8],
    width: u32,
    height: u32,
    count: usize,
    snapshot: &str,
    fsync: bool,
) -> Run {
    let out = work.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let config = work.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"raw\"\npath = \"-\"\nwidth = {width}\nheight = {height}\npixel_format = \"rgb\"\n\
             [ring]\nwhen_full = \"block\"\n[snapshot]\nevery = \"frame\"\n{snapshot}\n\
             [output]\ndir = \"{}\"\nfsync = {fsync}\n",
            out.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_framerec"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .spawn()
        .expect("framerec starts");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::scope(|scope| {
        let feeder = scope.spawn(move || {
            for _ in 0..count {
                if stdin.write_all(frame).is_err() {
                    break;
                }
            }
        });
        let mut peak = 0;
        while child.try_wait().unwrap().is_none() {
            peak = peak.max(peak_rss_kib(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(20));
        }
        feeder.join().unwrap();
        peak
    });
    let elapsed = started.elapsed();
    let status = child.wait().unwrap();
    assert!(status.success(), "framerec failed");
    let written = count_files(&out);
    assert_eq!(written, count, "not every frame was written");
    Run {
        frames_per_sec: count as f64 / elapsed.as_secs_f64(),
        peak_rss_mib: feeder as f64 / 1024.0,
        written,
    }
}

fn turbojpeg_alone(frame: &[u8], width: usize, height: usize, count: usize) -> f64 {
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_quality(90).unwrap();
    compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
    let mut out = turbojpeg::OutputBuf::new_owned();
    let image = turbojpeg::Image {
        pixels: frame,
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor.compress(image, &mut out).unwrap(); // warm-up
    let started = Instant::now();
    for _ in 0..count {
        compressor.compress(image, &mut out).unwrap();
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (width, height, count) = if bench {
        (1920u32, 1080u32, 300usize)
    } else {
        (64, 48, 4)
    };
    let mut source = Synthetic::new(width, height, 30.0, PixelFormat::Rgb).unwrap();
    let mut frame = Frame::with_capacity(0);
    source.render(&mut frame);
    // Sensor-like noise (±6), so the encoders see camera-like detail rather
    // than flat synthetic areas that compress unrealistically fast.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in frame.data.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = byte.saturating_add((state % 13) as u8).saturating_sub(6);
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipeline-bench");
    std::fs::create_dir_all(&work).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("framerec pipeline benchmark: {width}x{height} RGB, {count} frames a run, raw source on stdin, {threads} encoder threads");
    let runs = [
        (
            "JPEG q90 4:2:0, fsync off",
            "format = \"jpeg\"\nquality = 90\nsubsampling = \"420\"",
            false,
        ),
        (
            "JPEG q90 4:2:0, fsync on ",
            "format = \"jpeg\"\nquality = 90\nsubsampling = \"420\"",
            true,
        ),
        (
            "PNG fast,       fsync off",
            "format = \"png\"\ncompression = \"fast\"",
            false,
        ),
    ];
    let mut jpeg_fps = 0.0;
    for (name, snapshot, fsync) in runs {
        let run = pipeline(&work, &frame.data, width, height, count, snapshot, fsync);
        if name.starts_with("JPEG") && !fsync {
            jpeg_fps = run.frames_per_sec;
        }
        println!(
            "  {name}: {:7.1} frames/s   peak RSS {:6.1} MiB   ({} files)",
            run.frames_per_sec, run.peak_rss_mib, run.written
        );
    }
    let alone = turbojpeg_alone(&frame.data, width as usize, height as usize, count);
    println!("  turbojpeg alone, 1 thread : {alone:7.1} frames/s");
    println!(
        "  pipeline (JPEG, fsync off) / turbojpeg on 1 thread: {:.2}x with {threads} encoder threads",
        jpeg_fps / alone
    );
    let _ = std::fs::remove_dir_all(&work);
}
