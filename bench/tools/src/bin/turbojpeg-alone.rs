//! Encodes every frame of a raw RGB24 file as JPEG q90 4:2:0 on one thread
//! with one reused compressor and output buffer, the file read into memory
//! first, and prints one JSON line: frames, wall seconds of the encode loop
//! and its start and end (Unix seconds, to line up parallel copies), the
//! thread's CPU seconds, and the mean JPEG size.
//!
//! usage: turbojpeg-alone FILE WIDTH HEIGHT [START]
//!
//! With START (Unix seconds), the encoding waits until then, so that copies
//! started together encode at the same time, whatever their reads took.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 4 || args.len() == 5,
        "usage: turbojpeg-alone FILE WIDTH HEIGHT [START]"
    );
    let width: usize = args[2].parse().expect("WIDTH");
    let height: usize = args[3].parse().expect("HEIGHT");
    let data = std::fs::read(&args[1]).expect("read the frames");
    let frame_bytes = width * height * 3;
    let frames: Vec<&[u8]> = data.chunks_exact(frame_bytes).collect();
    assert!(!frames.is_empty(), "no whole frame in the file");

    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_quality(90).unwrap();
    compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
    let mut out = turbojpeg::OutputBuf::new_owned();
    let image = |pixels| turbojpeg::Image {
        pixels,
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor.compress(image(frames[0]), &mut out).unwrap(); // warm-up
    if let Some(start) = args.get(4) {
        let start: f64 = start.parse().expect("START");
        let wait = start - unix_now();
        if wait > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(wait));
        }
    }

    let mut total_bytes = 0usize;
    let cpu_start = thread_cpu_seconds();
    let unix_start = unix_now();
    let started = Instant::now();
    for frame in &frames {
        compressor.compress(image(frame), &mut out).unwrap();
        total_bytes += out.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let unix_end = unix_now();
    let cpu = thread_cpu_seconds() - cpu_start;
    println!(
        "{{\"frames\": {}, \"seconds\": {seconds:.6}, \"start\": {unix_start:.6}, \"end\": {unix_end:.6}, \"cpu_seconds\": {cpu:.6}, \"mean_bytes\": {}}}",
        frames.len(),
        total_bytes / frames.len()
    );
}
