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

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turbojpeg-alone: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if !(args.len() == 4 || args.len() == 5) {
        return Err("usage: turbojpeg-alone FILE WIDTH HEIGHT [START]".into());
    }
    let number = |i: usize, what: &str| -> Result<usize, String> {
        args[i]
            .parse()
            .map_err(|_| format!("{what} must be a whole number, not {:?}", args[i]))
    };
    let (width, height) = (number(2, "WIDTH")?, number(3, "HEIGHT")?);
    let data = std::fs::read(&args[1]).map_err(|e| format!("cannot read {}: {e}", args[1]))?;
    let frame_bytes = width * height * 3;
    if frame_bytes == 0 {
        return Err("WIDTH and HEIGHT must not be 0".into());
    }
    let frames: Vec<&[u8]> = data.chunks_exact(frame_bytes).collect();
    if frames.is_empty() {
        return Err(format!(
            "no whole {width}x{height} RGB frame in {}",
            args[1]
        ));
    }
    let jpeg = |e: turbojpeg::Error| format!("libjpeg-turbo: {e}");
    let mut compressor = turbojpeg::Compressor::new().map_err(jpeg)?;
    compressor.set_quality(90).map_err(jpeg)?;
    compressor
        .set_subsamp(turbojpeg::Subsamp::Sub2x2)
        .map_err(jpeg)?;
    let mut out = turbojpeg::OutputBuf::new_owned();
    let image = |pixels| turbojpeg::Image {
        pixels,
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor
        .compress(image(frames[0]), &mut out)
        .map_err(jpeg)?; // warm-up
    if let Some(start) = args.get(4) {
        let start: f64 = start
            .parse()
            .map_err(|_| format!("START must be Unix seconds, not {start:?}"))?;
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
        compressor.compress(image(frame), &mut out).map_err(jpeg)?;
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
    Ok(())
}
