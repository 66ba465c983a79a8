//! Cameras on Linux: V4L2 devices found under /dev, enumerated, configured
//! and captured through libc's `ioctl` (`sys`), so LD_PRELOAD layers that
//! stand in for a driver (libcamerify for Raspberry Pi camera modules,
//! PipeWire's pw-v4l2, libv4l's shims) work. The v4l crate sends its ioctls
//! as raw system calls, which those layers never see; it is used here only
//! for its bindings of `videodev2.h`. nokhwa is left out as well: its
//! `frame_raw` hands back the whole mapped buffer rather than the bytes the
//! driver filled, its stream waits without a timeout, and it cannot open
//! GREY/Y16 cameras.
//!
//! Capture follows the V4L2 spec rather than one driver's habits: every
//! buffer REQBUFS grants is queued (a driver may grant fewer or more than
//! asked), each is re-queued as soon as its frame is copied out, a DQBUF
//! that finds nothing after a wake-up (EAGAIN) means "wait again", a buffer
//! flagged ERROR is dropped as corrupt, a frame is its `bytesused` (an MJPEG
//! frame cut at its end marker), and its time is the driver's monotonic
//! timestamp when it sets one, else the time of DQBUF. A camera that stops
//! sending frames without an error (a hung USB firmware, a PipeWire source
//! gone) is noticed after `source.stall_timeout` and reopened.
//!
//! Everything above the ioctls runs against the small [`Driver`] interface,
//! so tests drive it with a fake driver; the capture thread opens the camera
//! itself, so a device never moves between threads.

mod controls;
mod sys;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use controls::{ControlInfo, ControlKind, ControlSetting, ControlValue};

use super::camera::{self, CamFormat, CameraError, Delivered, Device, DeviceInfo, Mode, Opener};
use crate::frame::Frame;
use sys::SysDriver;

/// Buffers asked for; the driver may grant another number.
const BUFFERS: u32 = 4;
/// How long one wait for a frame lasts before the stop flag is looked at.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Sizes a driver offers for a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeRange {
    Discrete(u32, u32),
    Stepwise {
        min: (u32, u32),
        max: (u32, u32),
        step: (u32, u32),
    },
}

/// Frame intervals (seconds per frame, as numerator/denominator) a driver
/// offers for a format and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateRange {
    Discrete((u32, u32)),
    Stepwise {
        shortest: (u32, u32),
        longest: (u32, u32),
    },
}

/// The format a driver granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    pub fourcc: [u8; 4],
    pub width: u32,
    pub height: u32,
    /// Bytes per row (0 when the driver does not say).
    pub stride: u32,
}

/// A buffer taken back from the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dequeued {
    pub index: u32,
    pub bytesused: usize,
    /// The driver flagged it (V4L2_BUF_FLAG_ERROR).
    pub damaged: bool,
    /// CLOCK_MONOTONIC time of capture, when the driver sets it.
    pub timestamp: Option<Duration>,
}

/// A V4L2 device at the level of its ioctls (see `sys::SysDriver`).
pub trait Driver {
    fn formats(&mut self) -> io::Result<Vec<[u8; 4]>>;
    fn sizes(&mut self, fourcc: [u8; 4]) -> io::Result<Vec<SizeRange>>;
    fn rates(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Vec<RateRange>>;
    /// VIDIOC_S_FMT (any buffers are freed first).
    fn set_format(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Granted>;
    /// VIDIOC_S_PARM: the interval granted, if the driver says.
    fn set_rate(&mut self, fps: u32) -> io::Result<Option<(u32, u32)>>;
    /// VIDIOC_REQBUFS and the mappings: how many buffers were granted.
    fn request_buffers(&mut self, count: u32) -> io::Result<u32>;
    fn queue(&mut self, index: u32) -> io::Result<()>;
    fn stream_on(&mut self) -> io::Result<()>;
    /// Waits up to `timeout` for a frame: true when one may be ready.
    fn wait(&mut self, timeout: Duration) -> io::Result<bool>;
    /// VIDIOC_DQBUF: `None` when no buffer is ready after all (EAGAIN).
    fn dequeue(&mut self) -> io::Result<Option<Dequeued>>;
    /// The mapped bytes of buffer `index`.
    fn data(&self, index: u32) -> &[u8];
    fn controls(&mut self) -> io::Result<Vec<ControlInfo>>;
    fn set_control(&mut self, id: u32, value: i64) -> io::Result<()>;
}

/// Finds V4L2 capture devices and opens them with what the config asks.
#[derive(Debug)]
pub struct LinuxOpener {
    /// No frame for this long: the camera is stalled and reopened.
    pub stall_timeout: Duration,
    /// `[source.controls]`, applied after every (re)connection.
    pub controls: Vec<ControlSetting>,
    /// Until a camera first streams, a control it lacks is an error; after
    /// a replug, a warning.
    connected_before: bool,
}

impl LinuxOpener {
    pub fn new(stall_timeout: Duration, controls: Vec<ControlSetting>) -> LinuxOpener {
        LinuxOpener {
            stall_timeout,
            controls,
            connected_before: false,
        }
    }
}

/// The capture devices under /dev, with their names and stable links.
fn list_devices() -> Vec<DeviceInfo> {
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
        let Ok(mut driver) = SysDriver::open(&path) else {
            continue;
        };
        // Metadata nodes of UVC cameras, encoders and ISP nodes are
        // /dev/videoN too: only nodes with a capture format we read count.
        let usable = driver
            .formats()
            .is_ok_and(|formats| formats.iter().any(|f| CamFormat::from_fourcc(*f).is_some()));
        if !usable {
            continue;
        }
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

impl Opener for LinuxOpener {
    type Device = LinuxDevice<SysDriver>;

    fn list(&mut self) -> Vec<DeviceInfo> {
        list_devices()
    }

    fn open(&mut self, info: &DeviceInfo) -> Result<LinuxDevice<SysDriver>, CameraError> {
        let driver = SysDriver::open(&info.path).map_err(|source| CameraError::Open {
            device: info.to_string(),
            source,
        })?;
        let strict = !self.connected_before;
        // From the first open on, a replugged camera lacking a control is
        // only warned about.
        self.connected_before = true;
        Ok(LinuxDevice::new(
            driver,
            info.to_string(),
            self.stall_timeout,
            self.controls.clone(),
            strict,
        ))
    }
}

/// An open V4L2 camera.
pub struct LinuxDevice<D> {
    name: String,
    driver: D,
    mode: Option<Mode>,
    stall_timeout: Duration,
    controls: Vec<ControlSetting>,
    /// A control the camera lacks (or a value out of its range) is an
    /// error rather than a warning.
    strict_controls: bool,
    /// When the last frame (or the start of streaming) was.
    last_frame: Instant,
    /// Whether the log has said where frame times come from.
    told_timestamps: bool,
    /// Buffers the driver granted.
    buffers: u32,
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

/// Frames per second of an interval (seconds per frame), rounded.
fn fps_of((numerator, denominator): (u32, u32)) -> Option<u32> {
    (numerator > 0).then(|| (f64::from(denominator) / f64::from(numerator)).round() as u32)
}

impl<D: Driver> LinuxDevice<D> {
    pub(crate) fn new(
        driver: D,
        name: String,
        stall_timeout: Duration,
        controls: Vec<ControlSetting>,
        strict_controls: bool,
    ) -> LinuxDevice<D> {
        LinuxDevice {
            name,
            driver,
            mode: None,
            stall_timeout,
            controls,
            strict_controls,
            last_frame: Instant::now(),
            told_timestamps: false,
            buffers: 0,
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> CameraError {
        CameraError::Device {
            device: self.name.clone(),
            message: message.to_string(),
        }
    }

    fn lost(&self, source: io::Error) -> CameraError {
        CameraError::Lost {
            device: self.name.clone(),
            source,
        }
    }

    /// Sets `[source.controls]`: problems are an error on the first
    /// connection, warnings after a replug.
    fn apply_controls(&mut self) -> Result<(), CameraError> {
        if self.controls.is_empty() {
            return Ok(());
        }
        let offered = self
            .driver
            .controls()
            .map_err(|e| self.error(format!("cannot list its controls: {e}")))?;
        let (set, problems) = controls::plan(&self.controls, &offered);
        if !problems.is_empty() {
            if self.strict_controls {
                return Err(CameraError::Controls {
                    device: self.name.clone(),
                    problems: problems.join("; "),
                });
            }
            for problem in &problems {
                tracing::warn!(camera = %self.name, "{problem}; the control is left as it is");
            }
        }
        for (id, value, key) in set {
            self.driver
                .set_control(id, value)
                .map_err(|e| self.error(format!("cannot set {key} to {value}: {e}")))?;
        }
        Ok(())
    }

    /// Queues every granted buffer and starts streaming.
    fn stream_all(&mut self) -> Result<(), CameraError> {
        for index in 0..self.buffers {
            self.driver
                .queue(index)
                .map_err(|e| self.error(format!("cannot queue buffer {index}: {e}")))?;
        }
        self.driver
            .stream_on()
            .map_err(|e| self.error(format!("cannot start streaming: {e}")))?;
        self.last_frame = Instant::now();
        Ok(())
    }

    /// Waits for a frame and copies it into `frame`, re-queueing its buffer.
    fn capture_frame(
        &mut self,
        mode: Mode,
        frame: &mut Frame,
        max_frame_bytes: usize,
        stop: &AtomicBool,
    ) -> Result<Delivered, CameraError> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Delivered::Stopped);
            }
            let silent = self.last_frame.elapsed();
            if silent >= self.stall_timeout {
                return Err(CameraError::Stalled {
                    device: self.name.clone(),
                    silent,
                });
            }
            let slice = POLL_SLICE.min(self.stall_timeout - silent);
            if !self.driver.wait(slice).map_err(|e| self.lost(e))? {
                continue;
            }
            // Woken without a buffer (EAGAIN): wait again.
            let Some(buffer) = self.driver.dequeue().map_err(|e| self.lost(e))? else {
                continue;
            };
            let dequeued_at = SystemTime::now();
            self.last_frame = Instant::now();
            let data = self.driver.data(buffer.index);
            let used = buffer.bytesused.min(data.len());
            let delivered =
                camera::deliver(frame, &data[..used], buffer.damaged, mode, max_frame_bytes);
            frame.captured_at = match buffer.timestamp {
                Some(taken) => wall_time_of(taken).unwrap_or(dequeued_at),
                None => dequeued_at,
            };
            if !self.told_timestamps {
                self.told_timestamps = true;
                let source = if buffer.timestamp.is_some() {
                    "the driver's monotonic buffer timestamps"
                } else {
                    "the time each frame is dequeued (the driver sets no timestamp)"
                };
                tracing::info!(camera = %self.name, "capture times come from {source}");
            }
            // Back to the driver at once: the frame is copied out.
            self.driver.queue(buffer.index).map_err(|e| self.lost(e))?;
            return Ok(delivered);
        }
    }
}

impl<D: Driver> Device for LinuxDevice<D> {
    fn modes(&mut self) -> Result<Vec<Mode>, CameraError> {
        enumerate(&mut self.driver).map_err(|e| self.error(format!("cannot list its formats: {e}")))
    }

    fn start(&mut self, mode: Mode) -> Result<Mode, CameraError> {
        self.mode = None;
        let format = self
            .driver
            .set_format(mode.format.fourcc(), mode.width, mode.height)
            .map_err(|e| self.error(format!("cannot set {}: {e}", mode.format)))?;
        let granted_format =
            CamFormat::from_fourcc(format.fourcc).ok_or_else(|| CameraError::Unsupported {
                device: self.name.clone(),
                message: format!(
                    "it switched to a format framerec cannot read ({})",
                    String::from_utf8_lossy(&format.fourcc)
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
        let interval = self
            .driver
            .set_rate(mode.fps.max(1))
            .map_err(|e| self.error(format!("cannot set {} fps: {e}", mode.fps)))?;
        self.apply_controls()?;
        let granted_buffers = self
            .driver
            .request_buffers(BUFFERS)
            .map_err(|e| self.error(format!("cannot map buffers: {e}")))?;
        if granted_buffers == 0 {
            return Err(self.error("the driver granted no buffers"));
        }
        self.buffers = granted_buffers;
        self.stream_all()?;
        let granted = Mode {
            width: format.width,
            height: format.height,
            fps: interval.and_then(fps_of).unwrap_or(mode.fps),
            format: granted_format,
        };
        tracing::debug!(camera = %self.name, buffers = granted_buffers, "buffers queued");
        self.mode = Some(granted);
        Ok(granted)
    }

    fn capture(
        &mut self,
        frame: &mut Frame,
        max_frame_bytes: usize,
        stop: &AtomicBool,
    ) -> Result<Delivered, CameraError> {
        let Some(mode) = self.mode else {
            return Err(self.error("not streaming"));
        };
        let result = self.capture_frame(mode, frame, max_frame_bytes, stop);
        if result.is_err() {
            self.mode = None;
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

/// Frame rates from a V4L2 frame interval range, rounded the same way as
/// the granted rate.
fn rates(range: &RateRange) -> Vec<u32> {
    match *range {
        RateRange::Discrete(interval) => fps_of(interval).into_iter().collect(),
        RateRange::Stepwise { shortest, longest } => {
            // The longest interval is the lowest rate.
            let (low, high) = (fps_of(longest).unwrap_or(1), fps_of(shortest).unwrap_or(1));
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

/// Every mode a device offers, from the enumeration ioctls. A size whose
/// rates cannot be listed is offered at rate 0 ("any").
pub(crate) fn enumerate(driver: &mut impl Driver) -> io::Result<Vec<Mode>> {
    let mut modes = Vec::new();
    for fourcc in driver.formats()? {
        let Some(format) = CamFormat::from_fourcc(fourcc) else {
            continue;
        };
        for size in driver.sizes(fourcc)? {
            let sizes: Vec<(u32, u32)> = match size {
                SizeRange::Discrete(width, height) => vec![(width, height)],
                SizeRange::Stepwise { min, max, step } => {
                    let fits = |&(w, h): &(u32, u32)| {
                        (min.0..=max.0).contains(&w)
                            && (min.1..=max.1).contains(&h)
                            && (w - min.0) % step.0.max(1) == 0
                            && (h - min.1) % step.1.max(1) == 0
                    };
                    let mut all: Vec<(u32, u32)> =
                        COMMON_SIZES.iter().copied().filter(fits).collect();
                    all.extend([min, max]);
                    all
                }
            };
            for (width, height) in sizes {
                let intervals = driver.rates(fourcc, width, height).unwrap_or_default();
                let mut fps: Vec<u32> = intervals
                    .iter()
                    .flat_map(rates)
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

/// Wall-clock time of a CLOCK_MONOTONIC capture time, or `None` when it is
/// not a time from the last minute (a driver's odd clock: not trusted).
fn wall_time_of(taken: Duration) -> Option<SystemTime> {
    let now_wall = SystemTime::now();
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now = Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32);
    match now.checked_sub(taken) {
        Some(age) if taken > Duration::ZERO && age < Duration::from_secs(60) => {
            now_wall.checked_sub(age)
        }
        _ => None,
    }
}

/// `framerec devices`: each camera with its formats, sizes, rates and
/// controls.
pub fn describe_devices() -> String {
    let devices = list_devices();
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
        let mut driver = match SysDriver::open(Path::new(&info.path)) {
            Ok(driver) => driver,
            Err(e) => {
                out.push_str(&format!("  cannot open it: {e}\n"));
                continue;
            }
        };
        match enumerate(&mut driver) {
            Ok(modes) => describe_modes(&modes, &mut out),
            Err(e) => out.push_str(&format!("  cannot list its formats: {e}\n")),
        }
        match driver.controls() {
            Ok(controls) if controls.is_empty() => out.push_str("  controls: none\n"),
            Ok(controls) => {
                out.push_str("  controls ([source.controls] name = value):\n");
                for control in controls {
                    let now = control
                        .current
                        .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
                    out.push_str(&format!(
                        "    {:<32} {}; default {}, now {}\n",
                        control.key(),
                        control.range(),
                        control.default,
                        now
                    ));
                }
            }
            Err(e) => out.push_str(&format!("  cannot list its controls: {e}\n")),
        }
    }
    out
}

/// One line per format and size, with its rates.
fn describe_modes(modes: &[Mode], out: &mut String) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// What the fake driver does at the next wait and dequeue.
    #[derive(Clone, Debug)]
    enum Step {
        /// A frame is ready: these bytes, damaged or not, with this time.
        Frame(Vec<u8>, bool, Option<Duration>),
        /// Woken, but DQBUF finds nothing (EAGAIN).
        Again,
        /// Nothing happens for the whole wait.
        Silent,
    }

    /// A driver that follows a script and checks the buffer protocol: a
    /// buffer is queued only when the driver does not hold it, and only
    /// buffers it granted.
    struct FakeDriver {
        grants: u32,
        buffers: Vec<Vec<u8>>,
        queued: VecDeque<u32>,
        script: VecDeque<Step>,
        controls: Vec<ControlInfo>,
        set: Vec<(u32, i64)>,
        streaming: bool,
    }

    impl FakeDriver {
        fn new(grants: u32, script: Vec<Step>) -> FakeDriver {
            FakeDriver {
                grants,
                buffers: Vec::new(),
                queued: VecDeque::new(),
                script: script.into(),
                controls: Vec::new(),
                set: Vec::new(),
                streaming: false,
            }
        }
    }

    impl Driver for FakeDriver {
        fn formats(&mut self) -> io::Result<Vec<[u8; 4]>> {
            Ok(vec![*b"YUYV"])
        }
        fn sizes(&mut self, _: [u8; 4]) -> io::Result<Vec<SizeRange>> {
            Ok(vec![SizeRange::Discrete(4, 2)])
        }
        fn rates(&mut self, _: [u8; 4], _: u32, _: u32) -> io::Result<Vec<RateRange>> {
            Ok(vec![RateRange::Discrete((1, 30))])
        }
        fn set_format(&mut self, fourcc: [u8; 4], width: u32, height: u32) -> io::Result<Granted> {
            Ok(Granted {
                fourcc,
                width,
                height,
                stride: width * 2,
            })
        }
        fn set_rate(&mut self, fps: u32) -> io::Result<Option<(u32, u32)>> {
            Ok(Some((1, fps)))
        }
        fn request_buffers(&mut self, _asked: u32) -> io::Result<u32> {
            self.buffers = vec![vec![0; 64]; self.grants as usize];
            Ok(self.grants)
        }
        fn queue(&mut self, index: u32) -> io::Result<()> {
            assert!(
                index < self.grants,
                "queued buffer {index} of {}",
                self.grants
            );
            assert!(!self.queued.contains(&index), "buffer {index} queued twice");
            self.queued.push_back(index);
            Ok(())
        }
        fn stream_on(&mut self) -> io::Result<()> {
            self.streaming = true;
            Ok(())
        }
        fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
            match self.script.front() {
                Some(Step::Silent) | None => {
                    if matches!(self.script.front(), Some(Step::Silent)) && self.script.len() > 1 {
                        self.script.pop_front();
                    }
                    std::thread::sleep(timeout.min(Duration::from_millis(5)));
                    Ok(false)
                }
                _ => Ok(true),
            }
        }
        fn dequeue(&mut self) -> io::Result<Option<Dequeued>> {
            match self.script.pop_front() {
                Some(Step::Frame(data, damaged, timestamp)) => {
                    let index = self
                        .queued
                        .pop_front()
                        .expect("a frame with no buffer queued");
                    let buffer = &mut self.buffers[index as usize];
                    buffer[..data.len()].copy_from_slice(&data);
                    Ok(Some(Dequeued {
                        index,
                        bytesused: data.len(),
                        damaged,
                        timestamp,
                    }))
                }
                _ => Ok(None),
            }
        }
        fn data(&self, index: u32) -> &[u8] {
            &self.buffers[index as usize]
        }
        fn controls(&mut self) -> io::Result<Vec<ControlInfo>> {
            Ok(self.controls.clone())
        }
        fn set_control(&mut self, id: u32, value: i64) -> io::Result<()> {
            self.set.push((id, value));
            Ok(())
        }
    }

    const MODE: Mode = Mode {
        width: 4,
        height: 2,
        fps: 30,
        format: CamFormat::Yuyv,
    };

    fn frame_bytes(k: u8) -> Vec<u8> {
        vec![k; 16]
    }

    fn device(driver: FakeDriver) -> LinuxDevice<FakeDriver> {
        LinuxDevice::new(
            driver,
            "fake".into(),
            Duration::from_secs(5),
            Vec::new(),
            true,
        )
    }

    fn capture(device: &mut LinuxDevice<FakeDriver>) -> Result<(Delivered, Frame), CameraError> {
        let mut frame = Frame::with_capacity(64);
        let delivered = device.capture(&mut frame, 1 << 20, &AtomicBool::new(false))?;
        Ok((delivered, frame))
    }

    #[test]
    fn queues_every_buffer_granted_and_each_again_after_its_frame() {
        for grants in [1, 2, 4, 32] {
            let script = (0..40)
                .map(|k| Step::Frame(frame_bytes(k), false, None))
                .collect();
            let mut device = device(FakeDriver::new(grants, script));
            device.start(MODE).unwrap();
            assert_eq!(
                device.driver.queued.len(),
                grants as usize,
                "{grants} granted"
            );
            for k in 0..40 {
                let (delivered, frame) = capture(&mut device).unwrap();
                assert_eq!(delivered, Delivered::Frame);
                assert_eq!(frame.data, frame_bytes(k));
                assert_eq!(
                    device.driver.queued.len(),
                    grants as usize,
                    "buffer not re-queued"
                );
            }
        }
    }

    #[test]
    fn no_buffer_granted_is_an_error() {
        let mut device = device(FakeDriver::new(0, Vec::new()));
        let err = device.start(MODE).unwrap_err();
        assert!(err.to_string().contains("no buffers"), "{err}");
    }

    #[test]
    fn eagain_after_a_wake_up_means_wait_again() {
        let script = vec![
            Step::Again,
            Step::Silent,
            Step::Again,
            Step::Frame(frame_bytes(7), false, None),
        ];
        let mut device = device(FakeDriver::new(4, script));
        device.start(MODE).unwrap();
        let (delivered, frame) = capture(&mut device).unwrap();
        assert_eq!(delivered, Delivered::Frame);
        assert_eq!(frame.data, frame_bytes(7));
    }

    #[test]
    fn a_buffer_flagged_error_comes_out_empty_and_goes_back() {
        let script = vec![
            Step::Frame(frame_bytes(1), true, None),
            Step::Frame(frame_bytes(2), false, None),
        ];
        let mut device = device(FakeDriver::new(2, script));
        device.start(MODE).unwrap();
        let (_, damaged) = capture(&mut device).unwrap();
        assert!(damaged.data.is_empty(), "a damaged frame was kept");
        assert_eq!(device.driver.queued.len(), 2);
        let (_, good) = capture(&mut device).unwrap();
        assert_eq!(good.data, frame_bytes(2));
    }

    #[test]
    fn a_silent_camera_is_reported_stalled_after_the_timeout() {
        let mut device = LinuxDevice::new(
            FakeDriver::new(4, vec![Step::Silent]),
            "fake".into(),
            Duration::from_millis(80),
            Vec::new(),
            true,
        );
        device.start(MODE).unwrap();
        let started = Instant::now();
        let err = capture(&mut device).unwrap_err();
        assert!(matches!(err, CameraError::Stalled { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(80));
        assert!(err.to_string().contains("fake"), "{err}");
    }

    #[test]
    fn capture_times_come_from_the_driver_when_it_sets_them() {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        let taken = now - Duration::from_millis(500);
        let script = vec![
            Step::Frame(frame_bytes(1), false, Some(taken)),
            Step::Frame(frame_bytes(2), false, None),
        ];
        let mut device = device(FakeDriver::new(2, script));
        device.start(MODE).unwrap();
        let (_, stamped) = capture(&mut device).unwrap();
        let age = SystemTime::now()
            .duration_since(stamped.captured_at)
            .unwrap();
        assert!(age >= Duration::from_millis(450), "{age:?}");
        let (_, unstamped) = capture(&mut device).unwrap();
        let age = SystemTime::now()
            .duration_since(unstamped.captured_at)
            .unwrap();
        assert!(age < Duration::from_millis(400), "{age:?}");
    }

    #[test]
    fn controls_are_set_after_the_format_and_problems_depend_on_the_connection() {
        let exposure = ControlInfo {
            id: 9,
            name: "Exposure (Absolute)".into(),
            kind: ControlKind::Integer,
            min: 1,
            max: 500,
            step: 1,
            default: 100,
            current: Some(100),
        };
        let wanted = vec![
            ControlSetting {
                name: "exposure_absolute".into(),
                value: ControlValue::Number(250),
            },
            ControlSetting {
                name: "focus_auto".into(),
                value: ControlValue::Number(0),
            },
        ];
        let make = |strict| {
            let mut driver = FakeDriver::new(2, Vec::new());
            driver.controls = vec![exposure.clone()];
            LinuxDevice::new(
                driver,
                "fake".into(),
                Duration::from_secs(5),
                wanted.clone(),
                strict,
            )
        };
        // First connection: a control the camera lacks is an error.
        let mut first = make(true);
        let err = first.start(MODE).unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("focus_auto"), "{err}");
        assert!(err.to_string().contains("exposure_absolute"), "{err}");
        // After a replug: a warning, and the rest is still set.
        let mut later = make(false);
        later.start(MODE).unwrap();
        assert_eq!(later.driver.set, [(9, 250)]);
    }

    #[test]
    fn enumerates_modes_from_the_driver() {
        let mut driver = FakeDriver::new(2, Vec::new());
        assert_eq!(enumerate(&mut driver).unwrap(), [MODE]);
    }
}
