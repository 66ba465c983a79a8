//! The data that moves between stages: [`Frame`] (source → ring → encoder),
//! the encoded file's parts (`encode::Parts`, encoder → store on the same
//! thread) and `WrittenFile` (store → retention).
//!
//! A `Frame` owns a buffer that is allocated once by the ring and reused for
//! the whole run: sources fill it in place (or point it at the frame's bytes
//! in a mapped input file, [`mapped`]), encoders read it and hand it back.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

pub mod mapped;

/// Largest accepted frame side, in pixels (a config limit, and a bound on
/// what a JPEG header may claim before anything is allocated for it).
pub const MAX_SIDE: u32 = 16_384;

/// How the bytes of a [`Frame`] are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// 8-bit R, G, B per pixel.
    Rgb,
    /// 8-bit R, G, B, A per pixel.
    Rgba,
    /// 8-bit luma.
    Gray,
    /// 16-bit luma, little-endian (as V4L2 `Y16` delivers it), full 0..=65535 range.
    Gray16,
    /// Packed 4:2:2 Y0 U Y1 V, BT.601 limited range.
    Yuyv,
    /// A Y plane followed by an interleaved U/V plane at half resolution (4:2:0),
    /// BT.601 limited range.
    Nv12,
    /// A whole JPEG image per frame, as a USB camera sends it.
    Mjpeg,
}

impl PixelFormat {
    /// Every format, in the order the config reference lists them.
    pub(crate) const ALL: [PixelFormat; 7] = [
        PixelFormat::Rgb,
        PixelFormat::Rgba,
        PixelFormat::Gray,
        PixelFormat::Gray16,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Mjpeg,
    ];

    /// The name used in config files and the manifest.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb => "rgb",
            PixelFormat::Rgba => "rgba",
            PixelFormat::Gray => "gray",
            PixelFormat::Gray16 => "gray16",
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }

    /// Parses a config name (`"rgb"`, `"nv12"`, ...).
    pub(crate) fn from_name(name: &str) -> Option<PixelFormat> {
        PixelFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The size in bytes of one `width`×`height` frame, or `None` for MJPEG,
    /// whose frames vary in size.
    pub(crate) const fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let pixels = width as usize * height as usize;
        match self {
            PixelFormat::Rgb => Some(pixels * 3),
            PixelFormat::Rgba => Some(pixels * 4),
            PixelFormat::Gray => Some(pixels),
            PixelFormat::Gray16 | PixelFormat::Yuyv => Some(pixels * 2),
            PixelFormat::Nv12 => Some(pixels + pixels / 2),
            PixelFormat::Mjpeg => None,
        }
    }

    /// The buffer size to preallocate for `width`×`height` frames. MJPEG
    /// frames vary; a quarter of RGB covers typical camera JPEGs and the
    /// buffer grows if a frame is bigger (up to the source's
    /// `max_frame_bytes`, past which frames are dropped).
    pub(crate) const fn buffer_capacity(self, width: u32, height: u32) -> usize {
        match self.frame_len(width, height) {
            Some(len) => len,
            None => width as usize * height as usize * 3 / 4,
        }
    }

    /// Whether frames in this format must have an even width (and, for NV12,
    /// an even height) because chroma is shared between pixels.
    pub(crate) const fn needs_even_width(self) -> bool {
        matches!(self, PixelFormat::Yuyv | PixelFormat::Nv12)
    }

    /// Whether frames in this format must have an even height.
    pub(crate) const fn needs_even_height(self) -> bool {
        matches!(self, PixelFormat::Nv12)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The file format of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

impl ImageFormat {
    /// The name used in config files and the manifest.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
        }
    }

    /// The file extension (`{ext}` in the name template).
    pub(crate) const fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The time zone capture times are shown in: `{time:...}` in file names and
/// the EXIF offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeZone {
    Utc,
    Local,
}

impl TimeZone {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            TimeZone::Utc => "utc",
            TimeZone::Local => "local",
        }
    }
}

/// One captured frame in a reusable buffer.
///
/// `seq` is the snapshot sequence number, given by the capture thread when the
/// schedule picks the frame; it becomes `{seq}` in the file name.
#[derive(Clone, Debug)]
pub struct Frame {
    pub seq: u64,
    /// Wall-clock time the frame was captured.
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// The frame's bytes, when they were put in its buffer. The capacity is
    /// kept between frames; `len()` is the frame's size (it varies for
    /// MJPEG).
    pub data: Vec<u8>,
    /// The frame's bytes where they already were (a mapped input file),
    /// used instead of `data` when set. See [`Frame::bytes`].
    pub view: Option<mapped::View>,
}

impl Frame {
    /// The frame's bytes: its view's when it has one, else its buffer's.
    pub fn bytes(&self) -> &[u8] {
        match &self.view {
            Some(view) => view.bytes(),
            None => &self.data,
        }
    }

    /// Whether the frame's bytes cannot be trusted: its mapped input file
    /// shrank while they were read.
    pub fn damaged(&self) -> bool {
        self.view.as_ref().is_some_and(mapped::View::damaged)
    }
}

impl Frame {
    /// A frame whose buffer can hold `capacity` bytes without reallocating.
    pub fn with_capacity(capacity: usize) -> Frame {
        Frame {
            seq: 0,
            captured_at: SystemTime::UNIX_EPOCH,
            width: 0,
            height: 0,
            format: PixelFormat::Rgb,
            data: Vec::with_capacity(capacity),
            view: None,
        }
    }
}

impl Frame {
    /// Like [`Frame::with_capacity`], but a failed allocation is an error
    /// instead of an abort.
    pub fn try_with_capacity(capacity: usize) -> Result<Frame, std::collections::TryReserveError> {
        let mut frame = Frame::with_capacity(0);
        frame.data.try_reserve_exact(capacity)?;
        Ok(frame)
    }
}

/// A file that is durable under its final name (its path stays with the
/// writer, whose buffer is reused for the next file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WrittenFile<'a> {
    pub seq: u64,
    pub path: &'a Path,
    /// Relative to the output directory.
    pub relative: &'a str,
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(PixelFormat::from_name("bgr"), None);
    }

    #[test]
    fn frame_sizes() {
        assert_eq!(PixelFormat::Rgb.frame_len(4, 2), Some(24));
        assert_eq!(PixelFormat::Rgba.frame_len(4, 2), Some(32));
        assert_eq!(PixelFormat::Gray.frame_len(4, 2), Some(8));
        assert_eq!(PixelFormat::Gray16.frame_len(4, 2), Some(16));
        assert_eq!(PixelFormat::Yuyv.frame_len(4, 2), Some(16));
        assert_eq!(PixelFormat::Nv12.frame_len(4, 2), Some(12));
        assert_eq!(PixelFormat::Mjpeg.frame_len(4, 2), None);
    }
}
