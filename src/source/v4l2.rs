//! Cameras on Linux: V4L2 devices found under /dev, enumerated and captured
//! through the v4l crate (the V4L2 layer nokhwa itself is built on).
//!
//! nokhwa 0.10's own capture path is not used: its `frame_raw` hands back
//! the whole mapped buffer rather than the bytes the driver filled (an MJPEG
//! frame followed by stale bytes fails every wholeness check), its stream
//! waits for a frame without a timeout (a stalled camera would block a stop),
//! and opening fails when the camera's current mode is one it cannot map
//! (GREY, Y16, 29.97 fps). Here each frame is cut to `bytesused` (an MJPEG
//! frame over `source.max_frame_bytes` is refused before it is copied), carries the
//! driver's buffer timestamp, and the wait polls in short slices so a stop
//! always gets through.
//!
//! The capture thread opens the camera itself, so a device is never moved
//! between threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::Capture;

use super::camera::{deliver, CamFormat, CameraError, Delivered, Device, DeviceInfo, Mode, Opener};
use crate::frame::Frame;

/// Buffers the driver fills in turn.
const BUFFERS: usize = 4;
/// How long one wait for a frame lasts before the stop flag is looked at.
const POLL_SLICE_MS: i32 = 100;
const POLLIN: i16 = 0x001;

/// Finds V4L2 capture devices.
#[derive(Debug, Default)]
pub struct LinuxOpener;

impl Opener for LinuxOpener {
    type Device = LinuxDevice;

    fn list(&mut self) -> Vec<DeviceInfo> {
        let links = stable_links();
        let mut devices = Vec::new();
        for entry in std::fs::read_dir("/dev").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(index) = name
                .to_str()
                .and_then(|n| n.strip_prefix("video"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let Ok(device) = v4l::Device::with_path(&path) else {
                continue;
            };
            // Metadata nodes of UVC cameras, encoders and ISP nodes are
            // /dev/videoN too: only nodes with a capture format we read count.
            let usable = device
                .enum_formats()
                .map(|formats| {
                    formats
                        .iter()
                        .any(|f| CamFormat::from_fourcc(f.fourcc.repr).is_some())
                })
                .unwrap_or(false);
            if !usable {
                continue;
            }
            // The sysfs name: v4l's query_caps panics on a card name cut in
            // the middle of a UTF-8 character.
            let name = std::fs::read_to_string(format!("/sys/class/video4linux/video{index}/name"))
                .map(|n| n.trim().to_owned())
                .unwrap_or_else(|_| format!("video{index}"));
            devices.push(DeviceInfo {
                index,
                stable_paths: links
                    .iter()
                    .filter(|(_, t)| *t == path)
                    .map(|(l, _)| l.clone())
                    .collect(),
                path,
                name,
            });
        }
        devices.sort_by_key(|d| d.index);
        devices
    }

    fn open(&mut self, info: &DeviceInfo) -> Result<LinuxDevice, CameraError> {
        let device = v4l::Device::with_path(&info.path).map_err(|source| CameraError::Open {
            device: info.to_string(),
            source,
        })?;
        Ok(LinuxDevice {
            name: info.to_string(),
            device,
            stream: None,
            mode: None,
            primed: false,
        })
    }
}

/// An open V4L2 camera.
pub struct LinuxDevice {
    name: String,
    device: v4l::Device,
    stream: Option<v4l::io::mmap::Stream<'static>>,
    mode: Option<Mode>,
    /// The stream's first frame has been taken.
    primed: bool,
}

/// Stops and frees a stream. The v4l crate panics in `Drop` when stopping
/// fails for any reason but an unplugged device; a camera that misbehaves
/// must not take the recorder down with it.
fn close(stream: v4l::io::mmap::Stream<'static>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)));
}

/// Bytes per row of a packed format, or `None` for MJPEG.
fn row_bytes(format: CamFormat, width: u32) -> Option<u32> {
    match format {
        CamFormat::Mjpeg => None,
        CamFormat::Grey | CamFormat::Nv12 => Some(width),
        CamFormat::Yuyv | CamFormat::Y16 => Some(width * 2),
        CamFormat::Rgb => Some(width * 3),
    }
}

impl LinuxDevice {
    fn error(&self, message: impl std::fmt::Display) -> CameraError {
        CameraError::Device {
            device: self.name.clone(),
            message: message.to_string(),
        }
    }

    fn lost(&self, source: std::io::Error) -> CameraError {
        CameraError::Lost {
            device: self.name.clone(),
            source,
        }
    }

    /// Waits until a frame is ready; false if a stop came first.
    fn wait_ready(
        &self,
        stream: &v4l::io::mmap::Stream<'static>,
        stop: &AtomicBool,
    ) -> Result<bool, CameraError> {
        let handle = stream.handle();
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            match handle.poll(POLLIN, POLL_SLICE_MS) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.lost(e)),
            }
        }
    }

    fn capture_from(
        &mut self,
        stream: &mut v4l::io::mmap::Stream<'static>,
        mode: Mode,
        frame: &mut Frame,
        max_frame_bytes: usize,
        stop: &AtomicBool,
    ) -> Result<Delivered, CameraError> {
        if !self.primed {
            // Take the first frame by hand (and drop it): from then on every
            // `next` re-queues only the buffer it handed back, so a wait can
            // be cut short for a stop without upsetting the queue.
            if !self.wait_ready(stream, stop)? {
                return Ok(Delivered::Stopped);
            }
            CaptureStream::dequeue(stream).map_err(|e| self.lost(e))?;
            self.primed = true;
        }
        if !self.wait_ready(stream, stop)? {
            return Ok(Delivered::Stopped);
        }
        let (data, meta) = CaptureStream::next(stream).map_err(|e| self.lost(e))?;
        frame.captured_at = wall_time_of(&meta.timestamp);
        let used = (meta.bytesused as usize).min(data.len());
        let damaged = meta.flags.contains(v4l::buffer::Flags::ERROR);
        Ok(deliver(
            frame,
            &data[..used],
            damaged,
            mode,
            max_frame_bytes,
        ))
    }
}

impl Device for LinuxDevice {
    fn modes(&mut self) -> Result<Vec<Mode>, CameraError> {
        enumerate(&self.device).map_err(|e| self.error(format!("cannot list its formats: {e}")))
    }

    fn start(&mut self, mode: Mode) -> Result<Mode, CameraError> {
        if let Some(old) = self.stream.take() {
            close(old);
        }
        self.primed = false;
        let fourcc = v4l::FourCC::new(&mode.format.fourcc());
        let format = self
            .device
            .set_format(&v4l::Format::new(mode.width, mode.height, fourcc))
            .map_err(|e| self.error(format!("cannot set {}: {e}", mode.format)))?;
        let granted_format =
            CamFormat::from_fourcc(format.fourcc.repr).ok_or_else(|| CameraError::Unsupported {
                device: self.name.clone(),
                message: format!(
                    "it switched to a format framerec cannot read ({})",
                    format.fourcc
                ),
            })?;
        if let Some(row) = row_bytes(granted_format, format.width) {
            if format.stride != 0 && format.stride != row {
                return Err(CameraError::Unsupported {
                    device: self.name.clone(),
                    message: format!("rows of {row} bytes padded to {}", format.stride),
                });
            }
        }
        let params = self
            .device
            .set_params(&v4l::video::capture::Parameters::with_fps(mode.fps.max(1)))
            .map_err(|e| self.error(format!("cannot set {} fps: {e}", mode.fps)))?;
        let mut stream = v4l::io::mmap::Stream::with_buffers(
            &self.device,
            v4l::buffer::Type::VideoCapture,
            BUFFERS as u32,
        )
        .map_err(|e| self.error(format!("cannot map buffers: {e}")))?;
        for index in 0..BUFFERS {
            CaptureStream::queue(&mut stream, index)
                .map_err(|e| self.error(format!("cannot queue buffers: {e}")))?;
        }
        stream
            .start()
            .map_err(|e| self.error(format!("cannot start streaming: {e}")))?;
        let interval = params.interval;
        let fps = if interval.numerator > 0 {
            (f64::from(interval.denominator) / f64::from(interval.numerator)).round() as u32
        } else {
            mode.fps
        };
        let granted = Mode {
            width: format.width,
            height: format.height,
            fps,
            format: granted_format,
        };
        self.mode = Some(granted);
        self.stream = Some(stream);
        Ok(granted)
    }

    fn capture(
        &mut self,
        frame: &mut Frame,
        max_frame_bytes: usize,
        stop: &AtomicBool,
    ) -> Result<Delivered, CameraError> {
        let (Some(mode), Some(mut stream)) = (self.mode, self.stream.take()) else {
            return Err(self.error("not streaming"));
        };
        let result = self.capture_from(&mut stream, mode, frame, max_frame_bytes, stop);
        if result.is_ok() {
            self.stream = Some(stream);
        } else {
            close(stream);
        }
        result
    }
}

fn stable_links() -> Vec<(PathBuf, PathBuf)> {
    let mut links = Vec::new();
    for dir in ["/dev/v4l/by-id", "/dev/v4l/by-path"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(target) = std::fs::canonicalize(entry.path()) {
                links.push((entry.path(), target));
            }
        }
    }
    links.sort();
    links
}
/// Common frame rates, offered from within a stepwise range.
const COMMON_RATES: [u32; 12] = [1, 5, 10, 15, 20, 24, 25, 30, 50, 60, 90, 120];
/// Common sizes, offered from within a stepwise range.
const COMMON_SIZES: [(u32, u32); 10] = [
    (320, 240),
    (640, 480),
    (800, 600),
    (1280, 720),
    (1280, 800),
    (1280, 1024),
    (1600, 1200),
    (1920, 1080),
    (2592, 1944),
    (3840, 2160),
];

/// Frame rates from a V4L2 frame interval (seconds per frame), rounded the
/// same way as the granted rate.
fn rates(interval: &v4l::frameinterval::FrameIntervalEnum) -> Vec<u32> {
    let fps = |f: &v4l::Fraction| {
        (f.numerator > 0)
            .then(|| (f64::from(f.denominator) / f64::from(f.numerator)).round() as u32)
    };
    match interval {
        v4l::frameinterval::FrameIntervalEnum::Discrete(f) => fps(f).into_iter().collect(),
        v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => {
            // The longest interval is the lowest rate.
            let (low, high) = (fps(&s.max).unwrap_or(1), fps(&s.min).unwrap_or(1));
            let mut all: Vec<u32> = COMMON_RATES
                .iter()
                .copied()
                .filter(|r| (low..=high).contains(r))
                .collect();
            all.extend([low, high]);
            all
        }
    }
}

/// Every mode `device` offers, from the enumeration ioctls. A size whose
/// rates cannot be listed is offered at rate 0 ("any").
pub(crate) fn enumerate(device: &v4l::Device) -> std::io::Result<Vec<Mode>> {
    let mut modes = Vec::new();
    for description in device.enum_formats()? {
        let Some(format) = CamFormat::from_fourcc(description.fourcc.repr) else {
            continue;
        };
        for size in device.enum_framesizes(description.fourcc)? {
            let sizes: Vec<(u32, u32)> = match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                v4l::framesize::FrameSizeEnum::Stepwise(s) => {
                    let fits = |&(w, h): &(u32, u32)| {
                        (s.min_width..=s.max_width).contains(&w)
                            && (s.min_height..=s.max_height).contains(&h)
                            && (w - s.min_width) % s.step_width.max(1) == 0
                            && (h - s.min_height) % s.step_height.max(1) == 0
                    };
                    let mut all: Vec<(u32, u32)> =
                        COMMON_SIZES.iter().copied().filter(fits).collect();
                    all.extend([(s.min_width, s.min_height), (s.max_width, s.max_height)]);
                    all
                }
            };
            for (width, height) in sizes {
                let intervals = device
                    .enum_frameintervals(description.fourcc, width, height)
                    .unwrap_or_default();
                let mut fps: Vec<u32> = intervals
                    .iter()
                    .flat_map(|i| rates(&i.interval))
                    .filter(|&r| r > 0)
                    .collect();
                fps.sort_unstable();
                fps.dedup();
                if fps.is_empty() {
                    fps.push(0);
                }
                for rate in fps {
                    let mode = Mode {
                        width,
                        height,
                        fps: rate,
                        format,
                    };
                    if !modes.contains(&mode) {
                        modes.push(mode);
                    }
                }
            }
        }
    }
    Ok(modes)
}

/// Wall-clock time of a V4L2 buffer timestamp (taken on CLOCK_MONOTONIC).
fn wall_time_of(timestamp: &v4l::timestamp::Timestamp) -> SystemTime {
    let now_wall = SystemTime::now();
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32);
    let taken = Duration::new(
        timestamp.sec.max(0) as u64,
        (timestamp.usec.max(0) as u32).saturating_mul(1000),
    );
    match now.checked_sub(taken) {
        // A timestamp from the last minute: trust it.
        Some(age) if taken > Duration::ZERO && age < Duration::from_secs(60) => now_wall - age,
        _ => now_wall,
    }
}

pub fn describe_devices() -> String {
    let mut opener = LinuxOpener;
    let devices = opener.list();
    if devices.is_empty() {
        return "no cameras found (no V4L2 capture device under /dev)\n".into();
    }
    let mut out = String::new();
    for info in devices {
        out.push_str(&format!(
            "{}  \"{}\"  (index {})\n",
            info.path.display(),
            info.name,
            info.index
        ));
        for link in &info.stable_paths {
            out.push_str(&format!("  stable path: {}\n", link.display()));
        }
        match v4l::Device::with_path(Path::new(&info.path)).and_then(|d| enumerate(&d)) {
            Ok(modes) => {
                // One line per format and size, with its rates.
                let mut lines: Vec<(CamFormat, u32, u32, Vec<u32>)> = Vec::new();
                for m in modes {
                    match lines
                        .iter_mut()
                        .find(|(f, w, h, _)| (*f, *w, *h) == (m.format, m.width, m.height))
                    {
                        Some(line) => line.3.push(m.fps),
                        None => lines.push((m.format, m.width, m.height, vec![m.fps])),
                    }
                }
                for (format, width, height, fps) in lines {
                    let fps: Vec<String> = fps
                        .iter()
                        .map(|r| {
                            if *r == 0 {
                                "any".to_owned()
                            } else {
                                r.to_string()
                            }
                        })
                        .collect();
                    out.push_str(&format!(
                        "  {:<5} {:>5}x{:<5} {} fps   (pixel_format = \"{}\")\n",
                        format.to_string(),
                        width,
                        height,
                        fps.join(", "),
                        format.pixel_format()
                    ));
                }
            }
            Err(e) => out.push_str(&format!("  cannot list its formats: {e}\n")),
        }
    }
    out
}
