//! The camera source: choosing the device, negotiating a mode, capturing,
//! and surviving a camera that is absent at start or unplugged while
//! recording.
//!
//! Everything that decides is pure and table-tested here ([`select_device`],
//! [`negotiate`]); the device itself sits behind the small [`Device`] and
//! [`Opener`] interfaces, so tests drive [`Camera`] with a fake that fails
//! and recovers. The Linux implementation (V4L2 ioctls through libc) is
//! in [`super::v4l2`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::mjpeg;
use super::Captured;
use crate::frame::{Frame, PixelFormat};

/// The first wait before trying a missing camera again; it doubles up to
/// [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two tries.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A pixel format as a camera offers it (a V4L2 FourCC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CamFormat {
    Mjpeg,
    Yuyv,
    Nv12,
    /// 8-bit mono (`GREY`).
    Grey,
    /// 16-bit mono, little-endian (`Y16 `).
    Y16,
    /// 24-bit RGB (`RGB3`).
    Rgb,
}

impl CamFormat {
    pub(crate) const ALL: [CamFormat; 6] = [
        CamFormat::Mjpeg,
        CamFormat::Yuyv,
        CamFormat::Nv12,
        CamFormat::Grey,
        CamFormat::Y16,
        CamFormat::Rgb,
    ];

    /// The V4L2 FourCC.
    pub(crate) const fn fourcc(self) -> [u8; 4] {
        match self {
            CamFormat::Mjpeg => *b"MJPG",
            CamFormat::Yuyv => *b"YUYV",
            CamFormat::Nv12 => *b"NV12",
            CamFormat::Grey => *b"GREY",
            CamFormat::Y16 => *b"Y16 ",
            CamFormat::Rgb => *b"RGB3",
        }
    }

    pub(crate) fn from_fourcc(code: [u8; 4]) -> Option<CamFormat> {
        CamFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// The pipeline's pixel format for frames in this format.
    pub(crate) const fn pixel_format(self) -> PixelFormat {
        match self {
            CamFormat::Mjpeg => PixelFormat::Mjpeg,
            CamFormat::Yuyv => PixelFormat::Yuyv,
            CamFormat::Nv12 => PixelFormat::Nv12,
            CamFormat::Grey => PixelFormat::Gray,
            CamFormat::Y16 => PixelFormat::Gray16,
            CamFormat::Rgb => PixelFormat::Rgb,
        }
    }

    /// The camera format that delivers `format` (none for RGBA).
    pub(crate) fn for_pixel_format(format: PixelFormat) -> Option<CamFormat> {
        CamFormat::ALL
            .into_iter()
            .find(|f| f.pixel_format() == format)
    }

    /// Preference when the asked-for format is not offered: compressed
    /// first (least USB bandwidth), then the YUV formats cameras do best.
    const fn rank(self) -> u8 {
        match self {
            CamFormat::Mjpeg => 0,
            CamFormat::Yuyv => 1,
            CamFormat::Nv12 => 2,
            CamFormat::Rgb => 3,
            CamFormat::Grey => 4,
            CamFormat::Y16 => 5,
        }
    }

    const fn is_mono(self) -> bool {
        matches!(self, CamFormat::Grey | CamFormat::Y16)
    }
}

impl fmt::Display for CamFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            std::str::from_utf8(&self.fourcc())
                .unwrap_or("????")
                .trim_end(),
        )
    }
}

/// A capture mode: size, rate and format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: CamFormat,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{} {} at {} fps",
            self.width, self.height, self.format, self.fps
        )
    }
}

/// A camera device on the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// N in /dev/videoN.
    pub index: u32,
    pub path: PathBuf,
    /// Links that name this device for good (/dev/v4l/by-id/..., by-path).
    pub stable_paths: Vec<PathBuf>,
    pub name: String,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}\"", self.path.display(), self.name)
    }
}

/// Why a camera could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("no camera matches \"{spec}\"; {}", list(.available))]
    NotFound {
        spec: String,
        available: Vec<DeviceInfo>,
    },
    #[error("\"{spec}\" matches more than one camera: {}; use a path or an index", names(.matches))]
    Ambiguous {
        spec: String,
        matches: Vec<DeviceInfo>,
    },
    #[error("{device} does not offer {wanted} (strict = true); it offers: {}", modes(.offered))]
    NotOffered {
        device: String,
        wanted: Mode,
        offered: Vec<Mode>,
    },
    #[error("{device} offers no mode that snapshot.format can store")]
    NoUsableMode { device: String },
    #[error("cannot open {device}")]
    Open {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{device}: {message}")]
    Device { device: String, message: String },
    #[error("{device} cannot be used: {message}")]
    Unsupported { device: String, message: String },
    #[error("lost {device}")]
    Lost {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no frame from {device} for {:.1} s (source.stall_timeout): it is stalled", silent.as_secs_f64())]
    Stalled { device: String, silent: Duration },
    #[error("{device}: [source.controls]: {problems}")]
    Controls { device: String, problems: String },
}

impl CameraError {
    /// Whether trying again later may help (a camera not yet plugged in,
    /// or busy), as opposed to a config that can never work.
    pub(crate) fn is_retryable(&self) -> bool {
        !matches!(
            self,
            CameraError::Ambiguous { .. }
                | CameraError::NotOffered { .. }
                | CameraError::NoUsableMode { .. }
                | CameraError::Controls { .. }
        )
    }
}

fn list(devices: &[DeviceInfo]) -> String {
    if devices.is_empty() {
        "no cameras are connected (see `framerec devices`)".into()
    } else {
        format!("cameras: {}", names(devices))
    }
}

fn names(devices: &[DeviceInfo]) -> String {
    devices
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn modes(offered: &[Mode]) -> String {
    offered
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the device `spec` names: a path (`/dev/video0`, or a stable link
/// such as `/dev/v4l/by-id/...`), an index (`0`), or a piece of the
/// camera's name (case does not matter).
pub(crate) fn select_device<'a>(
    spec: &str,
    devices: &'a [DeviceInfo],
) -> Result<&'a DeviceInfo, CameraError> {
    let not_found = || CameraError::NotFound {
        spec: spec.to_owned(),
        available: devices.to_vec(),
    };
    let spec_trim = spec.trim();
    if let Ok(index) = spec_trim.parse::<u32>() {
        return devices
            .iter()
            .find(|d| d.index == index)
            .ok_or_else(not_found);
    }
    if spec_trim.starts_with('/') {
        let wanted = Path::new(spec_trim);
        let resolved = std::fs::canonicalize(wanted).unwrap_or_else(|_| wanted.to_owned());
        return devices
            .iter()
            .find(|d| {
                d.path == resolved || d.path == wanted || d.stable_paths.iter().any(|p| p == wanted)
            })
            .ok_or_else(not_found);
    }
    let needle = spec_trim.to_lowercase();
    let matches: Vec<&DeviceInfo> = devices
        .iter()
        .filter(|d| d.name.to_lowercase().contains(&needle))
        .collect();
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(CameraError::Ambiguous {
            spec: spec.to_owned(),
            matches: many.iter().map(|d| (*d).clone()).collect(),
        }),
    }
}

/// Picks the mode to ask for: the one asked for if offered; otherwise (not
/// `strict`) the closest: nearest size first, then the asked-for format or
/// the best other one, then the nearest rate not below the one asked for.
/// Only modes `usable` accepts (those the output format can hold) count.
pub(crate) fn negotiate(
    device: &str,
    wanted: Mode,
    offered: &[Mode],
    strict: bool,
    usable: impl Fn(CamFormat) -> bool,
) -> Result<Mode, CameraError> {
    // Rate 0: the camera does not list its rates for that size (any).
    let same =
        |m: &Mode| (m.width, m.height, m.format) == (wanted.width, wanted.height, wanted.format);
    if offered
        .iter()
        .any(|m| same(m) && (m.fps == wanted.fps || m.fps == 0))
        && usable(wanted.format)
    {
        return Ok(wanted);
    }
    if strict {
        return Err(CameraError::NotOffered {
            device: device.to_owned(),
            wanted,
            offered: offered.to_vec(),
        });
    }
    let wanted_area = f64::from(wanted.width) * f64::from(wanted.height);
    let wanted_aspect = f64::from(wanted.width) / f64::from(wanted.height.max(1));
    let score = |m: &Mode| {
        let area = f64::from(m.width) * f64::from(m.height);
        let aspect = f64::from(m.width) / f64::from(m.height.max(1));
        // Size: how far the area is, in doublings, plus a little for the shape.
        let size = ((area / wanted_area).log2().abs() * 100.0
            + (aspect - wanted_aspect).abs() * 10.0)
            .round() as u64;
        // Never turn colour into mono or back unless nothing else exists.
        let kind = u64::from(m.format.is_mono() != wanted.format.is_mono());
        let format = if m.format == wanted.format {
            0
        } else {
            1 + u64::from(m.format.rank())
        };
        let rate = if m.fps == 0 {
            500
        } else if m.fps >= wanted.fps {
            u64::from(m.fps - wanted.fps)
        } else {
            1_000 + u64::from(wanted.fps - m.fps)
        };
        (kind, size, format, rate)
    };
    offered
        .iter()
        .filter(|m| usable(m.format))
        .min_by_key(|m| score(m))
        .map(|m| Mode {
            fps: if m.fps == 0 { wanted.fps } else { m.fps },
            ..*m
        })
        .ok_or_else(|| CameraError::NoUsableMode {
            device: device.to_owned(),
        })
}

/// An open camera.
pub trait Device {
    /// The modes it offers.
    fn modes(&mut self) -> Result<Vec<Mode>, CameraError>;
    /// Starts streaming in `mode`; returns the mode actually granted.
    fn start(&mut self, mode: Mode) -> Result<Mode, CameraError>;
    /// Waits for the next frame and copies it into `frame` (data, size,
    /// format and capture time) with [`deliver`], which refuses an MJPEG
    /// frame over `max_frame_bytes` before copying it.
    fn capture(
        &mut self,
        frame: &mut Frame,
        max_frame_bytes: usize,
        stop: &AtomicBool,
    ) -> Result<Delivered, CameraError>;
}

/// What [`Device::capture`] put into the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// A frame (perhaps torn: the camera source checks it).
    Frame,
    /// An MJPEG frame of `bytes`, over the limit: not copied, the frame's
    /// data is left empty.
    TooLarge { bytes: usize },
    /// A stop came first.
    Stopped,
}

/// Copies a frame the driver filled (`data`, cut to the bytes it used) into
/// `frame` as `mode` describes it: an MJPEG frame is cut to its JPEG (some
/// cameras pad after it) and refused, uncopied, when it is larger than
/// `max_frame_bytes`; a frame the driver marked `damaged` is left empty (the
/// camera source drops it as corrupt). The buffer never grows past the limit.
pub(crate) fn deliver(
    frame: &mut Frame,
    data: &[u8],
    damaged: bool,
    mode: Mode,
    max_frame_bytes: usize,
) -> Delivered {
    let mut used = data.len();
    if mode.format == CamFormat::Mjpeg {
        if let Ok(Some(found)) = mjpeg::extent(data) {
            used = found.len;
        }
    }
    frame.data.clear();
    frame.width = mode.width;
    frame.height = mode.height;
    frame.format = mode.format.pixel_format();
    if mode.format == CamFormat::Mjpeg && used > max_frame_bytes {
        return Delivered::TooLarge { bytes: used };
    }
    if !damaged {
        frame.data.extend_from_slice(&data[..used]);
    }
    Delivered::Frame
}

/// Finds and opens cameras.
pub trait Opener {
    type Device: Device;
    fn list(&mut self) -> Vec<DeviceInfo>;
    fn open(&mut self, info: &DeviceInfo) -> Result<Self::Device, CameraError>;
}

/// What the camera source was asked for.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// The `device` setting.
    pub spec: String,
    pub wanted: Mode,
    pub strict: bool,
    /// Whether the output can store frames in this format.
    pub usable: fn(CamFormat) -> bool,
    /// The largest MJPEG frame kept; larger ones are dropped as corrupt.
    pub max_frame_bytes: usize,
}

/// The camera source: connects, captures, and reconnects after a loss,
/// waiting longer each time (up to [`MAX_BACKOFF`]).
pub struct Camera<O: Opener> {
    opener: O,
    request: Request,
    device: Option<(O::Device, String)>,
    backoff: Duration,
    next_try: Instant,
    /// Torn or corrupt MJPEG frames skipped.
    corrupt: u64,
    /// Frames captured since the last (re)connection.
    streak: u64,
    /// Times the camera was lost (or stalled) and reopened.
    reconnects: u64,
    /// Stalls seen (no frame for the stall timeout).
    stalls: u64,
}

impl<O: Opener> Camera<O> {
    pub(crate) fn new(opener: O, request: Request) -> Camera<O> {
        Camera {
            opener,
            request,
            device: None,
            backoff: FIRST_BACKOFF,
            next_try: Instant::now(),
            corrupt: 0,
            streak: 0,
            reconnects: 0,
            stalls: 0,
        }
    }

    /// Stalls seen so far.
    pub(crate) fn stalls(&self) -> u64 {
        self.stalls
    }

    /// Times the camera was lost (or stalled) while streaming.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Finds, opens and starts the camera.
    fn connect(&mut self) -> Result<(O::Device, String), CameraError> {
        let devices = self.opener.list();
        let info = select_device(&self.request.spec, &devices)?.clone();
        let name = info.to_string();
        let mut device = self.opener.open(&info)?;
        let offered = device.modes()?;
        let mode = negotiate(
            &name,
            self.request.wanted,
            &offered,
            self.request.strict,
            self.request.usable,
        )?;
        let granted = device.start(mode)?;
        if granted == self.request.wanted {
            tracing::info!(camera = %name, mode = %granted, "camera streaming");
        } else {
            tracing::warn!(camera = %name, asked = %self.request.wanted, granted = %granted, "camera streaming in another mode than asked");
        }
        Ok((device, name))
    }

    /// Captures the next whole frame into `frame`. A missing or lost camera
    /// is waited for (a stop ends the wait); a corrupt MJPEG frame, or one
    /// over `max_frame_bytes`, is reported as [`Captured::Corrupt`].
    pub(crate) fn next_frame(
        &mut self,
        frame: &mut Frame,
        stop: &AtomicBool,
    ) -> Result<Captured, CameraError> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Captured::End);
            }
            let Some((device, name)) = &mut self.device else {
                let now = Instant::now();
                if now < self.next_try {
                    std::thread::sleep((self.next_try - now).min(Duration::from_millis(100)));
                    continue;
                }
                match self.connect() {
                    Ok(connected) => {
                        self.device = Some(connected);
                        self.streak = 0;
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(
                            device = %self.request.spec,
                            error = %crate::stats::Chain(&e),
                            retry_in_s = self.backoff.as_secs_f64(),
                            "camera not available; waiting for it"
                        );
                        self.next_try = Instant::now() + self.backoff;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            let max = self.request.max_frame_bytes;
            match device.capture(frame, max, stop) {
                Ok(Delivered::Stopped) => return Ok(Captured::End),
                Ok(Delivered::TooLarge { bytes }) => {
                    self.corrupt += 1;
                    return Ok(Captured::Corrupt(mjpeg::JpegError::TooLarge { bytes, max }));
                }
                Ok(Delivered::Frame) => {
                    self.streak += 1;
                    if self.streak == 10 {
                        // Streaming steadily again: the next loss starts over.
                        self.backoff = FIRST_BACKOFF;
                    }
                    // A torn JPEG, a short raw frame, or one the driver marked
                    // damaged (left empty) is not a picture.
                    let whole = match frame.format.frame_len(frame.width, frame.height) {
                        Some(len) if frame.data.len() != len => Err(mjpeg::JpegError::Truncated),
                        Some(_) => Ok(()),
                        None => mjpeg::check_whole(&frame.data).map(drop),
                    };
                    if let Err(e) = whole {
                        self.corrupt += 1;
                        return Ok(Captured::Corrupt(e));
                    }
                    return Ok(Captured::Frame);
                }
                Err(CameraError::Stalled { silent, .. }) => {
                    tracing::warn!(
                        camera = %name,
                        silent_s = silent.as_secs_f64(),
                        "camera stalled: no frame for {:.1} s (source.stall_timeout); reopening it",
                        silent.as_secs_f64()
                    );
                    self.stalls += 1;
                    self.reconnects += 1;
                    self.device = None;
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::warn!(camera = %name, error = %crate::stats::Chain(&e), "camera lost; reconnecting");
                    self.reconnects += 1;
                    self.device = None;
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::time::SystemTime;

    fn dev(index: u32, name: &str) -> DeviceInfo {
        DeviceInfo {
            index,
            path: PathBuf::from(format!("/dev/video{index}")),
            stable_paths: vec![PathBuf::from(format!(
                "/dev/v4l/by-id/usb-{}-video-index0",
                name.replace(' ', "_")
            ))],
            name: name.to_owned(),
        }
    }

    fn mode(width: u32, height: u32, fps: u32, format: CamFormat) -> Mode {
        Mode {
            width,
            height,
            fps,
            format,
        }
    }

    #[test]
    fn selects_by_index_path_stable_link_or_name() {
        let devices = [
            dev(0, "HD Pro Webcam C920"),
            dev(2, "Arducam OV9281 USB Camera"),
        ];
        assert_eq!(select_device("2", &devices).unwrap().index, 2);
        assert_eq!(select_device("/dev/video0", &devices).unwrap().index, 0);
        assert_eq!(
            select_device(
                "/dev/v4l/by-id/usb-Arducam_OV9281_USB_Camera-video-index0",
                &devices
            )
            .unwrap()
            .index,
            2
        );
        assert_eq!(select_device("c920", &devices).unwrap().index, 0);
        assert_eq!(select_device("ov9281", &devices).unwrap().index, 2);
        assert_eq!(select_device("camera", &devices).unwrap().index, 2);
        let err = select_device("logitech brio", &devices).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/dev/video0") && text.contains("Arducam"),
            "{text}"
        );
        assert!(err.is_retryable());
        let err = select_device("3", &[]).unwrap_err();
        assert!(
            err.to_string().contains("no cameras are connected"),
            "{err}"
        );
        let both = [dev(0, "USB Camera"), dev(1, "USB Camera")];
        let err = select_device("usb", &both).unwrap_err();
        assert!(matches!(err, CameraError::Ambiguous { .. }));
        assert!(!err.is_retryable());
    }

    /// What a typical UVC webcam advertises.
    fn webcam() -> Vec<Mode> {
        let mut modes = Vec::new();
        for (w, h) in [(640, 480), (1280, 720), (1920, 1080)] {
            modes.push(mode(w, h, 30, CamFormat::Mjpeg));
            modes.push(mode(w, h, 15, CamFormat::Mjpeg));
        }
        modes.push(mode(640, 480, 30, CamFormat::Yuyv));
        modes.push(mode(1280, 720, 10, CamFormat::Yuyv));
        modes.push(mode(1920, 1080, 5, CamFormat::Yuyv));
        modes
    }

    fn all(_: CamFormat) -> bool {
        true
    }

    #[test]
    fn negotiation_table() {
        let cases = [
            // Offered exactly.
            (
                mode(1280, 720, 30, CamFormat::Mjpeg),
                mode(1280, 720, 30, CamFormat::Mjpeg),
            ),
            // YUYV at 720p only goes to 10 fps: the size and format win over the rate.
            (
                mode(1280, 720, 30, CamFormat::Yuyv),
                mode(1280, 720, 10, CamFormat::Yuyv),
            ),
            // A rate the camera lacks: the nearest above it.
            (
                mode(1920, 1080, 20, CamFormat::Mjpeg),
                mode(1920, 1080, 30, CamFormat::Mjpeg),
            ),
            // A size the camera lacks: the nearest size.
            (
                mode(1600, 900, 30, CamFormat::Mjpeg),
                mode(1920, 1080, 30, CamFormat::Mjpeg),
            ),
            (
                mode(800, 600, 30, CamFormat::Mjpeg),
                mode(640, 480, 30, CamFormat::Mjpeg),
            ),
            // NV12 is not offered: the best other colour format at that size.
            (
                mode(640, 480, 30, CamFormat::Nv12),
                mode(640, 480, 30, CamFormat::Mjpeg),
            ),
            // Mono asked of a colour camera: colour is all there is.
            (
                mode(640, 480, 30, CamFormat::Grey),
                mode(640, 480, 30, CamFormat::Mjpeg),
            ),
        ];
        for (wanted, expected) in cases {
            assert_eq!(
                negotiate("cam", wanted, &webcam(), false, all).unwrap(),
                expected,
                "asked {wanted}"
            );
        }
        let mono = [
            mode(1280, 800, 60, CamFormat::Grey),
            mode(1280, 800, 60, CamFormat::Y16),
            mode(1280, 800, 30, CamFormat::Mjpeg),
        ];
        assert_eq!(
            negotiate(
                "cam",
                mode(1280, 800, 60, CamFormat::Y16),
                &mono,
                false,
                all
            )
            .unwrap()
            .format,
            CamFormat::Y16
        );
        // Rates not listed for a size (0): what was asked is taken.
        let unlisted = [mode(1280, 720, 0, CamFormat::Yuyv)];
        assert_eq!(
            negotiate(
                "cam",
                mode(1280, 720, 25, CamFormat::Yuyv),
                &unlisted,
                true,
                all
            )
            .unwrap()
            .fps,
            25
        );
        assert_eq!(
            negotiate(
                "cam",
                mode(1280, 720, 25, CamFormat::Mjpeg),
                &unlisted,
                false,
                all
            )
            .unwrap()
            .fps,
            25
        );
        // Mono asked: mono at another size beats colour at the right size.
        let mixed = [
            mode(1280, 720, 60, CamFormat::Grey),
            mode(1280, 800, 60, CamFormat::Mjpeg),
        ];
        assert_eq!(
            negotiate(
                "cam",
                mode(1280, 800, 60, CamFormat::Grey),
                &mixed,
                false,
                all
            )
            .unwrap(),
            mixed[0]
        );
        // The output cannot hold 16-bit (JPEG): GREY is the closest usable.
        let no_y16 = |f: CamFormat| f != CamFormat::Y16;
        assert_eq!(
            negotiate(
                "cam",
                mode(1280, 800, 60, CamFormat::Y16),
                &mono,
                false,
                no_y16
            )
            .unwrap()
            .format,
            CamFormat::Grey
        );
    }

    #[test]
    fn strict_refuses_anything_else() {
        let err = negotiate(
            "cam",
            mode(1280, 720, 60, CamFormat::Mjpeg),
            &webcam(),
            true,
            all,
        )
        .unwrap_err();
        assert!(matches!(err, CameraError::NotOffered { .. }));
        assert!(err.to_string().contains("1280x720 MJPG at 30 fps"), "{err}");
        assert!(negotiate(
            "cam",
            mode(1280, 720, 30, CamFormat::Mjpeg),
            &webcam(),
            true,
            all
        )
        .is_ok());
        assert!(negotiate("cam", mode(1, 1, 1, CamFormat::Rgb), &[], false, all).is_err());
    }

    #[test]
    fn fourcc_names_round_trip() {
        for f in CamFormat::ALL {
            assert_eq!(CamFormat::from_fourcc(f.fourcc()), Some(f));
            assert_eq!(CamFormat::for_pixel_format(f.pixel_format()), Some(f));
        }
        assert_eq!(CamFormat::Y16.to_string(), "Y16");
    }

    /// A scripted camera: each connection serves frames until its script
    /// runs out, then fails as an unplugged camera does.
    #[derive(Default)]
    struct FakeOpener {
        /// Per connection attempt: None = absent, Some(frames) = present.
        script: VecDeque<Option<Vec<Vec<u8>>>>,
        attempts: usize,
        modes: Vec<Mode>,
        /// A camera out of frames stalls (silent) instead of unplugging.
        stall: bool,
    }

    struct FakeDevice {
        frames: VecDeque<Vec<u8>>,
        mode: Option<Mode>,
        modes: Vec<Mode>,
        stall: bool,
    }

    impl Device for FakeDevice {
        fn modes(&mut self) -> Result<Vec<Mode>, CameraError> {
            Ok(self.modes.clone())
        }
        fn start(&mut self, mode: Mode) -> Result<Mode, CameraError> {
            self.mode = Some(mode);
            Ok(mode)
        }
        fn capture(
            &mut self,
            frame: &mut Frame,
            max_frame_bytes: usize,
            _stop: &AtomicBool,
        ) -> Result<Delivered, CameraError> {
            let mode = self.mode.expect("started");
            let stall = self.stall;
            let data = self.frames.pop_front().ok_or_else(|| {
                if stall {
                    CameraError::Stalled {
                        device: "fake".into(),
                        silent: Duration::from_secs(5),
                    }
                } else {
                    CameraError::Lost {
                        device: "fake".into(),
                        source: std::io::Error::from_raw_os_error(19), // ENODEV
                    }
                }
            })?;
            frame.captured_at = SystemTime::now();
            Ok(deliver(frame, &data, false, mode, max_frame_bytes))
        }
    }

    impl Opener for FakeOpener {
        type Device = FakeDevice;
        fn list(&mut self) -> Vec<DeviceInfo> {
            self.attempts += 1;
            match self.script.front() {
                Some(Some(_)) => vec![dev(0, "Fake Cam")],
                Some(None) => {
                    self.script.pop_front();
                    vec![]
                }
                None => vec![],
            }
        }
        fn open(&mut self, _: &DeviceInfo) -> Result<FakeDevice, CameraError> {
            let frames = self.script.pop_front().flatten().unwrap_or_default();
            Ok(FakeDevice {
                frames: frames.into(),
                mode: None,
                modes: self.modes.clone(),
                stall: self.stall,
            })
        }
    }

    fn request(format: CamFormat) -> Request {
        Request {
            spec: "fake".into(),
            wanted: mode(4, 2, 30, format),
            strict: false,
            usable: all,
            max_frame_bytes: 1 << 20,
        }
    }

    #[test]
    fn waits_for_a_camera_then_survives_an_unplug() {
        let gray = |v: u8| vec![v; 8];
        let opener = FakeOpener {
            // Absent twice, then two frames, unplugged, absent, then one more frame.
            script: [
                None,
                None,
                Some(vec![gray(1), gray(2)]),
                None,
                Some(vec![gray(3)]),
            ]
            .into(),
            attempts: 0,
            stall: false,
            modes: vec![mode(4, 2, 30, CamFormat::Grey)],
        };
        let mut camera = Camera::new(opener, request(CamFormat::Grey));
        camera.backoff = Duration::from_millis(1);
        let stop = AtomicBool::new(false);
        let mut frame = Frame::with_capacity(0);
        assert_eq!(first_bytes(&mut camera, &mut frame, &stop, 3), [1, 2, 3]);
        assert!(camera.opener.attempts >= 4, "{}", camera.opener.attempts);
        // The camera is gone for good: a stop still ends the wait.
        let started = Instant::now();
        let stopper = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                stop.store(true, Ordering::Relaxed);
            });
            camera.next_frame(&mut frame, &stop).unwrap()
        });
        assert_eq!(stopper, Captured::End);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_stalled_camera_is_reopened_and_counted() {
        let gray = |v: u8| vec![v; 8];
        let opener = FakeOpener {
            // Two frames, then silence; reopened, one more frame.
            script: [Some(vec![gray(1), gray(2)]), Some(vec![gray(3)])].into(),
            attempts: 0,
            modes: vec![mode(4, 2, 30, CamFormat::Grey)],
            stall: true,
        };
        let mut camera = Camera::new(opener, request(CamFormat::Grey));
        camera.backoff = Duration::from_millis(1);
        let stop = AtomicBool::new(false);
        let mut frame = Frame::with_capacity(0);
        assert_eq!(first_bytes(&mut camera, &mut frame, &stop, 3), [1, 2, 3]);
        assert_eq!((camera.stalls(), camera.reconnects()), (1, 1));
    }

    /// The first byte of each of the next `n` frames, each a gray frame.
    fn first_bytes(
        camera: &mut Camera<FakeOpener>,
        frame: &mut Frame,
        stop: &AtomicBool,
        n: usize,
    ) -> Vec<u8> {
        (0..n)
            .map(|_| {
                assert_eq!(camera.next_frame(frame, stop).unwrap(), Captured::Frame);
                assert_eq!(frame.format, PixelFormat::Gray);
                frame.data[0]
            })
            .collect()
    }

    #[test]
    fn the_wait_grows_up_to_the_cap() {
        let opener = FakeOpener::default();
        let mut camera = Camera::new(opener, request(CamFormat::Mjpeg));
        camera.backoff = Duration::from_secs(20);
        camera.next_try = Instant::now();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
            });
            assert_eq!(
                camera
                    .next_frame(&mut Frame::with_capacity(0), &stop)
                    .unwrap(),
                Captured::End
            );
        });
        assert_eq!(camera.backoff, MAX_BACKOFF);
    }

    #[test]
    fn torn_mjpeg_frames_are_reported_corrupt() {
        let whole = mjpeg::test_jpeg(16, 8, false, 3);
        let torn = whole[..whole.len() / 2].to_vec();
        let opener = FakeOpener {
            script: [Some(vec![whole.clone(), torn, whole.clone()])].into(),
            attempts: 0,
            stall: false,
            modes: vec![mode(16, 8, 30, CamFormat::Mjpeg)],
        };
        let mut camera = Camera::new(opener, request(CamFormat::Mjpeg));
        let stop = AtomicBool::new(false);
        let mut frame = Frame::with_capacity(0);
        assert_eq!(
            camera.next_frame(&mut frame, &stop).unwrap(),
            Captured::Frame
        );
        assert!(matches!(
            camera.next_frame(&mut frame, &stop).unwrap(),
            Captured::Corrupt(_)
        ));
        assert_eq!(
            camera.next_frame(&mut frame, &stop).unwrap(),
            Captured::Frame
        );
        assert_eq!(frame.data, whole);
        assert_eq!(camera.corrupt, 1);
    }

    #[test]
    fn an_mjpeg_frame_over_the_limit_is_dropped_before_it_is_copied() {
        let small = mjpeg::test_jpeg(16, 8, false, 3);
        let big = mjpeg::test_jpeg(512, 512, false, 5);
        // A camera that pads its frames: the padding does not count.
        let padded = [&small[..], &[0u8; 4096]].concat();
        let opener = FakeOpener {
            script: [Some(vec![small.clone(), big.clone(), padded])].into(),
            attempts: 0,
            stall: false,
            modes: vec![mode(16, 8, 30, CamFormat::Mjpeg)],
        };
        let max = small.len() + 1024;
        assert!(big.len() > max);
        let mut camera = Camera::new(
            opener,
            Request {
                max_frame_bytes: max,
                ..request(CamFormat::Mjpeg)
            },
        );
        let stop = AtomicBool::new(false);
        let mut frame = Frame::with_capacity(0);
        assert_eq!(
            camera.next_frame(&mut frame, &stop).unwrap(),
            Captured::Frame
        );
        let capacity = frame.data.capacity();
        assert_eq!(
            camera.next_frame(&mut frame, &stop).unwrap(),
            Captured::Corrupt(mjpeg::JpegError::TooLarge {
                bytes: big.len(),
                max
            })
        );
        assert!(frame.data.is_empty());
        assert_eq!(
            frame.data.capacity(),
            capacity,
            "the buffer grew for a frame it dropped"
        );
        assert_eq!(
            camera.next_frame(&mut frame, &stop).unwrap(),
            Captured::Frame
        );
        assert_eq!(frame.data, small);
        assert_eq!(camera.corrupt, 1);
    }

    #[test]
    fn an_ambiguous_device_is_a_config_error_not_a_wait() {
        struct Two;
        impl Opener for Two {
            type Device = FakeDevice;
            fn list(&mut self) -> Vec<DeviceInfo> {
                vec![dev(0, "USB Camera"), dev(1, "USB Camera")]
            }
            fn open(&mut self, _: &DeviceInfo) -> Result<FakeDevice, CameraError> {
                unreachable!()
            }
        }
        let mut camera = Camera::new(
            Two,
            Request {
                spec: "usb".into(),
                ..request(CamFormat::Mjpeg)
            },
        );
        let err = camera
            .next_frame(&mut Frame::with_capacity(0), &AtomicBool::new(false))
            .unwrap_err();
        assert!(matches!(err, CameraError::Ambiguous { .. }));
    }
}
