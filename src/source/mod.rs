//! Sources fill frame buffers on the capture thread: V4L2 cameras
//! (`camera`, [`v4l2`]), the synthetic test pattern, and raw frames or
//! concatenated JPEGs (`mjpeg`) from a file or stdin.
//!
//! A source writes straight into the buffer it is given and stamps the frame
//! with its capture time; it never allocates per frame once the buffer has
//! grown to the frame size.

pub(crate) mod camera;
pub(crate) mod mjpeg;
mod raw;
mod synthetic;

pub use synthetic::Synthetic;
pub mod v4l2;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::frame::{Frame, ImageFormat, PixelFormat};

use raw::Raw;

/// Which source to open (`source.kind` and what goes with it).
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A V4L2 camera: `device` is a path, an index or part of its name.
    Camera { device: String, strict: bool },
    /// A moving test pattern made in memory.
    Synthetic,
    /// Back-to-back raw frames (or concatenated JPEGs) from a file or stdin.
    Raw { path: PathBuf },
}

impl Kind {
    /// The `kind` value.
    pub(crate) const fn name(&self) -> &'static str {
        match self {
            Kind::Camera { .. } => "camera",
            Kind::Synthetic => "synthetic",
            Kind::Raw { .. } => "raw",
        }
    }
}

/// What to capture (`[source]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub kind: Kind,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub pixel_format: PixelFormat,
    /// The largest MJPEG frame kept (`source.max_frame_bytes`): a bigger one
    /// is dropped as corrupt before it is copied into a ring buffer, so the
    /// buffers never grow past this.
    pub max_frame_bytes: usize,
    /// Cameras: no frame for this long means stalled (`source.stall_timeout`;
    /// `None`: the larger of 5 s and ten frame intervals).
    pub stall_timeout: Option<Duration>,
    /// Cameras: `[source.controls]`, set after every (re)connection.
    pub controls: Vec<v4l2::ControlSetting>,
}

/// The shortest default stall timeout.
const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Options {
    /// The stall timeout in force: as set, or the larger of 5 s and ten
    /// frame intervals.
    pub(crate) fn stall_timeout(&self) -> Duration {
        self.stall_timeout.unwrap_or_else(|| {
            let ten_frames = Duration::from_secs_f64(10.0 / self.fps.max(0.001));
            ten_frames.max(MIN_STALL_TIMEOUT)
        })
    }
}

/// Slack over the RGB size of a frame in the default
/// [`Options::max_frame_bytes`]: room for JPEG headers, EXIF and an
/// embedded thumbnail.
const FRAME_SLACK: usize = 256 << 10;
/// The smallest default [`Options::max_frame_bytes`], for tiny frame sizes.
const MIN_DEFAULT_FRAME_BYTES: usize = 512 << 10;

/// The default `max_frame_bytes` for `width`×`height` frames: the size of
/// the frame as RGB (more than any sane JPEG of it) plus header slack, at
/// least 512 KiB.
pub(crate) const fn default_max_frame_bytes(width: u32, height: u32) -> usize {
    let rgb = width as usize * height as usize * 3 + FRAME_SLACK;
    if rgb > MIN_DEFAULT_FRAME_BYTES {
        rgb
    } else {
        MIN_DEFAULT_FRAME_BYTES
    }
}

impl Options {
    /// The size of each of the ring's frame buffers when allocated.
    pub(crate) fn buffer_capacity(&self) -> usize {
        let capacity = self.pixel_format.buffer_capacity(self.width, self.height);
        match self.pixel_format {
            PixelFormat::Mjpeg => capacity.min(self.max_frame_bytes),
            _ => capacity,
        }
    }
}

/// The most one ring buffer can grow to while recording `width`×`height`
/// frames of `pixel_format` (from a camera when `camera`): MJPEG frames
/// (asked for, or a camera's fallback) up to `max_frame_bytes`, other
/// frames their own size.
pub(crate) fn grown_buffer_bytes(
    camera: bool,
    pixel_format: PixelFormat,
    width: u32,
    height: u32,
    max_frame_bytes: usize,
) -> usize {
    let capacity = pixel_format.buffer_capacity(width, height);
    if pixel_format == PixelFormat::Mjpeg || camera {
        capacity.max(max_frame_bytes)
    } else {
        capacity
    }
}

/// What a source did with the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Captured {
    /// The buffer holds a new frame.
    Frame,
    /// The source has ended (end of input, or a stop was asked for).
    End,
    /// The source sent a frame that is not a whole image (a torn MJPEG
    /// frame from a flaky USB camera); the buffer holds nothing to keep.
    Corrupt(mjpeg::JpegError),
}

/// Why a source could not open or go on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open raw input {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read raw input {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the JPEG encoder of the synthetic source")]
    Jpeg(#[source] turbojpeg::Error),
    #[error("camera")]
    Camera(#[from] camera::CameraError),
}

/// A frame source.
pub enum Source {
    Synthetic(Box<Synthetic>),
    Raw(Box<Raw>),
    Camera(Box<camera::Camera<v4l2::LinuxOpener>>),
}

impl Source {
    /// Opens the source `s` describes, for snapshots stored as `output`
    /// (which decides the camera formats that can be used). A camera is
    /// looked for on the first frame (and waited for if absent), on the
    /// thread that calls [`Source::next_frame`].
    pub fn open(s: &Options, output: ImageFormat) -> Result<Source, SourceError> {
        Ok(match &s.kind {
            Kind::Camera { device, strict } => {
                let format = camera::CamFormat::for_pixel_format(s.pixel_format)
                    .unwrap_or(camera::CamFormat::Mjpeg);
                let usable: fn(camera::CamFormat) -> bool = match output {
                    ImageFormat::Jpeg => |f| f != camera::CamFormat::Y16,
                    ImageFormat::Png => |_| true,
                };
                let request = camera::Request {
                    spec: device.clone(),
                    wanted: camera::Mode {
                        width: s.width,
                        height: s.height,
                        fps: s.fps.round().max(1.0) as u32,
                        format,
                    },
                    strict: *strict,
                    usable,
                    max_frame_bytes: s.max_frame_bytes,
                };
                let opener = v4l2::LinuxOpener::new(s.stall_timeout(), s.controls.clone());
                Source::Camera(Box::new(camera::Camera::new(opener, request)))
            }
            Kind::Synthetic => Source::Synthetic(Box::new(Synthetic::new(
                s.width,
                s.height,
                s.fps,
                s.pixel_format,
            )?)),
            Kind::Raw { path } => Source::Raw(Box::new(Raw::open(
                path,
                s.width,
                s.height,
                s.pixel_format,
                s.max_frame_bytes,
            )?)),
        })
    }

    /// Captures the next frame into `frame`; `stop` ends a wait early.
    pub fn next_frame(
        &mut self,
        frame: &mut Frame,
        stop: &AtomicBool,
    ) -> Result<Captured, SourceError> {
        match self {
            Source::Synthetic(s) => s.next_frame(frame, stop),
            Source::Raw(r) => r.next_frame(frame, stop),
            Source::Camera(c) => Ok(c.next_frame(frame, stop)?),
        }
    }

    /// Times a camera was lost or stalled and reopened, and stalls seen.
    pub(crate) fn reconnects(&self) -> (u64, u64) {
        match self {
            Source::Camera(c) => (c.reconnects(), c.stalls()),
            Source::Synthetic(_) | Source::Raw(_) => (0, 0),
        }
    }

    /// Stretches of input that were not whole frames and were skipped, and
    /// their bytes.
    pub(crate) fn skipped(&self) -> (u64, u64) {
        match self {
            Source::Synthetic(_) | Source::Camera(_) => (0, 0),
            Source::Raw(r) => r.skipped(),
        }
    }
}
