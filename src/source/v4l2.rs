//! Cameras on Linux: V4L2 devices found under /dev, captured through nokhwa
//! (MJPEG, YUYV, NV12, RGB) or, for the mono formats nokhwa cannot ask for
//! (8-bit `GREY`, 16-bit `Y16`), through the v4l crate it builds on.
//!
//! Device lists and the formats, sizes and rates a camera offers come from
//! the v4l crate's enumeration ioctls, which need no streaming. Frames from
//! the v4l path carry the driver's buffer timestamp; nokhwa's do not, so
//! those are stamped when dequeued.
//!
//! Not `Send`: the nokhwa `Camera` must stay on the thread that opened it,
//! so the capture thread opens the camera source itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;

use super::camera::{CamFormat, CameraError, Device, DeviceInfo, Mode, Opener};
use crate::frame::Frame;

/// Finds V4L2 capture devices.
#[derive(Debug, Default)]
pub struct LinuxOpener;

/// The stable links in /dev/v4l/by-id and by-path, with what they point to.
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
            let Ok(caps) = device.query_caps() else {
                continue;
            };
            // Metadata nodes of UVC cameras are /dev/videoN too: skip them.
            if !caps
                .capabilities
                .contains(v4l::capability::Flags::VIDEO_CAPTURE)
            {
                continue;
            }
            let has_formats = device
                .enum_formats()
                .map(|f| !f.is_empty())
                .unwrap_or(false);
            if !has_formats {
                continue;
            }
            devices.push(DeviceInfo {
                index,
                stable_paths: links
                    .iter()
                    .filter(|(_, t)| *t == path)
                    .map(|(l, _)| l.clone())
                    .collect(),
                path,
                name: caps.card,
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
            index: info.index,
            device,
            stream: Stream::Stopped,
            mode: None,
        })
    }
}

enum Stream {
    Stopped,
    Nokhwa(Box<nokhwa::Camera>),
    Mono(v4l::io::mmap::Stream<'static>),
}

/// An open V4L2 camera.
pub struct LinuxDevice {
    name: String,
    index: u32,
    /// For enumeration and the mono path.
    device: v4l::Device,
    stream: Stream,
    mode: Option<Mode>,
}

fn nokhwa_format(format: CamFormat) -> Option<FrameFormat> {
    match format {
        CamFormat::Mjpeg => Some(FrameFormat::MJPEG),
        CamFormat::Yuyv => Some(FrameFormat::YUYV),
        CamFormat::Nv12 => Some(FrameFormat::NV12),
        CamFormat::Rgb => Some(FrameFormat::RAWRGB),
        CamFormat::Grey | CamFormat::Y16 => None,
    }
}

fn cam_format(format: FrameFormat) -> Option<CamFormat> {
    match format {
        FrameFormat::MJPEG => Some(CamFormat::Mjpeg),
        FrameFormat::YUYV => Some(CamFormat::Yuyv),
        FrameFormat::NV12 => Some(CamFormat::Nv12),
        FrameFormat::RAWRGB => Some(CamFormat::Rgb),
        _ => None,
    }
}

/// Frame rates from a V4L2 frame interval (seconds per frame).
fn rates(interval: &v4l::frameinterval::FrameIntervalEnum) -> Vec<u32> {
    let fps = |f: &v4l::Fraction| {
        (f.numerator > 0)
            .then(|| (f64::from(f.denominator) / f64::from(f.numerator)).round() as u32)
    };
    match interval {
        v4l::frameinterval::FrameIntervalEnum::Discrete(f) => fps(f).into_iter().collect(),
        v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => {
            [fps(&s.min), fps(&s.max)].into_iter().flatten().collect()
        }
    }
}

/// Every mode `device` offers, from the enumeration ioctls.
pub fn enumerate(device: &v4l::Device) -> std::io::Result<Vec<Mode>> {
    let mut modes = Vec::new();
    for description in device.enum_formats()? {
        let Some(format) = CamFormat::from_fourcc(description.fourcc.repr) else {
            continue;
        };
        for size in device.enum_framesizes(description.fourcc)? {
            let sizes: Vec<(u32, u32)> = match size.size {
                v4l::framesize::FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
                v4l::framesize::FrameSizeEnum::Stepwise(s) => {
                    vec![(s.min_width, s.min_height), (s.max_width, s.max_height)]
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
                for rate in fps {
                    modes.push(Mode {
                        width,
                        height,
                        fps: rate,
                        format,
                    });
                }
            }
        }
    }
    Ok(modes)
}

impl LinuxDevice {
    fn error(&self, message: impl std::fmt::Display) -> CameraError {
        CameraError::Device {
            device: self.name.clone(),
            message: message.to_string(),
        }
    }
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

impl Device for LinuxDevice {
    fn modes(&mut self) -> Result<Vec<Mode>, CameraError> {
        enumerate(&self.device).map_err(|e| self.error(format!("cannot list its formats: {e}")))
    }

    fn start(&mut self, mode: Mode) -> Result<Mode, CameraError> {
        self.stream = Stream::Stopped;
        let granted = match nokhwa_format(mode.format) {
            Some(format) => {
                let wanted = CameraFormat::new_from(mode.width, mode.height, format, mode.fps);
                let formats = [format];
                let request =
                    RequestedFormat::with_formats(RequestedFormatType::Exact(wanted), &formats);
                let mut camera = nokhwa::Camera::new(CameraIndex::Index(self.index), request)
                    .map_err(|e| self.error(format!("nokhwa cannot open it: {e}")))?;
                camera
                    .open_stream()
                    .map_err(|e| self.error(format!("cannot start streaming: {e}")))?;
                let got = camera.camera_format();
                let granted = Mode {
                    width: got.width(),
                    height: got.height(),
                    fps: got.frame_rate(),
                    format: cam_format(got.format()).unwrap_or(mode.format),
                };
                self.stream = Stream::Nokhwa(Box::new(camera));
                granted
            }
            None => {
                let fourcc = v4l::FourCC::new(&mode.format.fourcc());
                let format = self
                    .device
                    .set_format(&v4l::Format::new(mode.width, mode.height, fourcc))
                    .map_err(|e| self.error(format!("cannot set {}: {e}", mode.format)))?;
                let params = self
                    .device
                    .set_params(&v4l::video::capture::Parameters::with_fps(mode.fps))
                    .map_err(|e| self.error(format!("cannot set {} fps: {e}", mode.fps)))?;
                let mut stream = v4l::io::mmap::Stream::with_buffers(
                    &self.device,
                    v4l::buffer::Type::VideoCapture,
                    4,
                )
                .map_err(|e| self.error(format!("cannot start streaming: {e}")))?;
                // Wake up now and then, so a stop is seen even if frames stop.
                stream.set_timeout(Duration::from_secs(2));
                self.stream = Stream::Mono(stream);
                let interval = params.interval;
                Mode {
                    width: format.width,
                    height: format.height,
                    fps: interval
                        .denominator
                        .checked_div(interval.numerator)
                        .unwrap_or(mode.fps),
                    format: CamFormat::from_fourcc(format.fourcc.repr).unwrap_or(mode.format),
                }
            }
        };
        self.mode = Some(granted);
        Ok(granted)
    }

    fn capture(&mut self, frame: &mut Frame) -> Result<(), CameraError> {
        let Some(mode) = self.mode else {
            return Err(self.error("not streaming"));
        };
        let lost = |name: &str, message: String| CameraError::Lost {
            device: name.to_owned(),
            source: std::io::Error::other(message),
        };
        match &mut self.stream {
            Stream::Stopped => return Err(self.error("not streaming")),
            Stream::Nokhwa(camera) => {
                let data = camera
                    .frame_raw()
                    .map_err(|e| lost(&self.name, e.to_string()))?;
                frame.captured_at = SystemTime::now();
                frame.data.clear();
                frame.data.extend_from_slice(&data);
            }
            Stream::Mono(stream) => {
                let (data, meta) = stream.next().map_err(|e| CameraError::Lost {
                    device: self.name.clone(),
                    source: e,
                })?;
                frame.captured_at = wall_time_of(&meta.timestamp);
                let used = (meta.bytesused as usize).min(data.len());
                frame.data.clear();
                frame.data.extend_from_slice(&data[..used]);
            }
        }
        frame.width = mode.width;
        frame.height = mode.height;
        frame.format = mode.format.pixel_format();
        Ok(())
    }
}

/// `framerec devices`: every camera with its paths and modes.
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
                    let fps: Vec<String> = fps.iter().map(u32::to_string).collect();
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
