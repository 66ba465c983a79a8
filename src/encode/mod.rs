//! The encoder pool: worker threads that take frames from the ring, encode
//! them ([`jpeg`], [`png`], or [`passthrough`] for a camera's own JPEGs, with
//! the capture time stamped in by [`metadata`]), hand each encoded file to
//! the next step (the sink, wired by the supervisor) and give the buffers
//! back to the ring.
//!
//! A frame that fails to encode is counted, logged (rate-limited) and
//! dropped; the worker goes on. Workers exit when the ring is closed and
//! drained.

pub mod jpeg;
pub mod metadata;
pub mod passthrough;
pub mod png;

use std::time::{Duration, Instant};

use crate::frame::{Frame, ImageFormat, PixelFormat, TimeZone, MAX_SIDE};
use crate::live::Live;
use crate::ring::Consumer;
use crate::source::mjpeg::JpegError;
use crate::stats::{Chain, DropReason, Stats};

/// JPEG chroma subsampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsampling {
    S444,
    S422,
    S420,
    Gray,
}

impl Subsampling {
    /// Every choice with its config name.
    pub const ALL: [(&'static str, Subsampling); 4] = [
        ("444", Subsampling::S444),
        ("422", Subsampling::S422),
        ("420", Subsampling::S420),
        ("gray", Subsampling::Gray),
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Subsampling::S444 => "444",
            Subsampling::S422 => "422",
            Subsampling::S420 => "420",
            Subsampling::Gray => "gray",
        }
    }
}

/// PNG deflate effort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PngCompression {
    Fast,
    Default,
    Best,
}

impl PngCompression {
    pub const fn name(self) -> &'static str {
        match self {
            PngCompression::Fast => "fast",
            PngCompression::Default => "default",
            PngCompression::Best => "best",
        }
    }
}

/// What the encoders make of frames (`[snapshot]` less `every`, and
/// `[encoder]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub format: ImageFormat,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    pub subsampling: Subsampling,
    pub compression: PngCompression,
    /// Store an MJPEG source's JPEG bytes as they are (JPEG output only).
    pub passthrough: bool,
    /// The zone of the EXIF capture time (the output's time zone).
    pub timezone: TimeZone,
    /// Worker threads; at least 1.
    pub threads: usize,
}

impl Options {
    /// Whether frames of `input` are stored as the source's own JPEG bytes.
    pub fn passes_through(&self, input: PixelFormat) -> bool {
        self.passthrough && self.format == ImageFormat::Jpeg && input == PixelFormat::Mjpeg
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("JPEG encoding failed")]
    Jpeg(#[source] turbojpeg::Error),
    #[error("the frame's JPEG cannot be decoded")]
    Decode(#[source] turbojpeg::Error),
    #[error("PNG encoding failed")]
    Png(#[source] ::png::EncodingError),
    #[error("the frame is not a whole JPEG")]
    Corrupt(#[source] JpegError),
    #[error("the frame's JPEG header claims {width}x{height}, too large to decode")]
    TooLarge { width: usize, height: usize },
    #[error("{0} frames cannot be stored as {1}")]
    Unsupported(PixelFormat, &'static str),
    #[error(
        "the input file shrank, or could not be read, while the frame was read from it (truncated by another program?)"
    )]
    InputShrank,
    #[error("the frame has {got} bytes where {width}x{height} {format} needs {expected}")]
    Size {
        format: PixelFormat,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
}

impl EncodeError {
    /// The drop reason this error counts under.
    pub fn reason(&self) -> DropReason {
        match self {
            EncodeError::Corrupt(_)
            | EncodeError::Decode(_)
            | EncodeError::Size { .. }
            | EncodeError::InputShrank
            | EncodeError::TooLarge { .. } => DropReason::Corrupt,
            _ => DropReason::Encode,
        }
    }
}

/// Decodes MJPEG frames (with libjpeg-turbo) for the encoders that must
/// re-encode them; made on first use, then reused.
#[derive(Default)]
pub struct MjpegDecoder {
    decompressor: Option<turbojpeg::Decompressor>,
}

/// The shape of a decoded MJPEG frame.
#[derive(Clone, Copy, Debug)]
pub struct DecodedShape {
    pub width: usize,
    pub height: usize,
    /// One byte a pixel (gray) rather than three (RGB).
    pub gray: bool,
}

impl MjpegDecoder {
    /// Decodes `jpeg` into `out`: gray if the JPEG is gray or `force_gray`,
    /// RGB otherwise. A CMYK (or YCCK) JPEG, as Adobe tools write them, is
    /// decoded to CMYK and converted to RGB (with `force_gray`, the encoder
    /// makes gray of that RGB).
    pub fn decode(
        &mut self,
        jpeg: &[u8],
        force_gray: bool,
        out: &mut Vec<u8>,
    ) -> Result<DecodedShape, EncodeError> {
        let d = match &mut self.decompressor {
            Some(d) => d,
            None => self
                .decompressor
                .insert(turbojpeg::Decompressor::new().map_err(EncodeError::Jpeg)?),
        };
        let header = d.read_header(jpeg).map_err(EncodeError::Decode)?;
        let cmyk = matches!(
            header.colorspace,
            turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
        );
        let gray = !cmyk && (force_gray || header.subsamp == turbojpeg::Subsamp::Gray);
        let format = if cmyk {
            turbojpeg::PixelFormat::CMYK
        } else if gray {
            turbojpeg::PixelFormat::GRAY
        } else {
            turbojpeg::PixelFormat::RGB
        };
        // A torn header can claim any size: never allocate for an absurd one.
        let side = MAX_SIDE as usize;
        if header.width > side
            || header.height > side
            || header.width * header.height * format.size() > MAX_DECODED
        {
            return Err(EncodeError::TooLarge {
                width: header.width,
                height: header.height,
            });
        }
        let pitch = header.width * format.size();
        let image = turbojpeg::Image {
            pixels: crate::convert::sized(out, pitch * header.height),
            width: header.width,
            pitch,
            height: header.height,
            format,
        };
        d.decompress(jpeg, image).map_err(EncodeError::Decode)?;
        if cmyk {
            let inverted = crate::source::mjpeg::has_adobe_marker(jpeg);
            crate::convert::cmyk_to_rgb_in_place(out, inverted);
        }
        Ok(DecodedShape {
            width: header.width,
            height: header.height,
            gray,
        })
    }
}

/// An encoded file as parts written one after the other (a JPEG and the
/// EXIF segment spliced into it, without copying them together).
pub type Parts<'a> = [&'a [u8]; 3];

/// The largest decoded MJPEG frame accepted, in bytes (about 9600×9600 RGB).
pub const MAX_DECODED: usize = 256 << 20;

/// One worker's encoder.
pub enum Encoder {
    Jpeg(Box<jpeg::JpegEncoder>),
    Png(Box<png::PngEncoder>),
    /// MJPEG frames stored as they are; any other frame (a camera that
    /// granted YUYV instead) goes through the JPEG encoder.
    Passthrough(Box<jpeg::JpegEncoder>),
}

impl Encoder {
    /// The encoder `options` ask for, for frames of `input`.
    pub fn new(options: &Options, input: PixelFormat) -> Result<Encoder, EncodeError> {
        let jpeg = || {
            jpeg::JpegEncoder::new(options.quality, options.subsampling, options.timezone)
                .map(Box::new)
        };
        Ok(if options.passes_through(input) {
            Encoder::Passthrough(jpeg()?)
        } else {
            match options.format {
                ImageFormat::Jpeg => Encoder::Jpeg(jpeg()?),
                ImageFormat::Png => {
                    Encoder::Png(Box::new(png::PngEncoder::new(options.compression)))
                }
            }
        })
    }

    /// The file format this encoder writes.
    pub fn format(&self) -> ImageFormat {
        match self {
            Encoder::Png(_) => ImageFormat::Png,
            Encoder::Jpeg(_) | Encoder::Passthrough(_) => ImageFormat::Jpeg,
        }
    }

    /// Encodes `frame` into the bytes of its file.
    pub fn encode<'a>(&'a mut self, frame: &'a Frame) -> Result<Parts<'a>, EncodeError> {
        if let Some(expected) = frame.format.frame_len(frame.width, frame.height) {
            if frame.bytes().len() != expected {
                return Err(EncodeError::Size {
                    format: frame.format,
                    width: frame.width,
                    height: frame.height,
                    expected,
                    got: frame.bytes().len(),
                });
            }
        }
        match self {
            Encoder::Jpeg(e) => e.encode(frame),
            Encoder::Png(e) => e.encode(frame),
            // A camera that granted a raw format instead: encoded.
            Encoder::Passthrough(e) => {
                if frame.format == PixelFormat::Mjpeg {
                    e.pass_through(frame)
                } else {
                    e.encode(frame)
                }
            }
        }
    }
}

/// What a worker encodes with: the options and the source's pixel format,
/// both of which a reload may change.
#[derive(Clone, Debug)]
pub struct Setup {
    pub options: Options,
    pub input: PixelFormat,
}

/// A worker thread's loop: pop, encode, hand the file to `deliver`,
/// release, until the ring is closed and empty. `deliver` gets the frame,
/// the file's format and its parts; it does the writing. A new [`Setup`]
/// (a reload) applies from the next frame popped.
pub fn run_worker(
    consumer: Consumer,
    setup: &Live<Setup>,
    stats: &Stats,
    mut deliver: impl FnMut(&Frame, ImageFormat, &Parts<'_>),
) -> Result<(), EncodeError> {
    // Made here: libjpeg-turbo's buffers belong to one thread.
    let (first, mut seen) = setup.get();
    let mut encoder = Encoder::new(&first.options, first.input)?;
    loop {
        let frame = match consumer.pop(Duration::from_millis(250)) {
            Ok(frame) => frame,
            Err(true) => break,
            Err(false) => continue,
        };
        if let Some(new) = setup.changed(&mut seen) {
            match Encoder::new(&new.options, new.input) {
                Ok(made) => encoder = made,
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "cannot set up the encoder with the new settings; the old ones stay")
                }
            }
        }
        let started = Instant::now();
        let format = encoder.format();
        match encoder.encode(&frame) {
            // Read from a mapped file that shrank meanwhile: the bytes may
            // be zeros standing in for what is gone.
            Ok(_) if frame.damaged() => {
                let e = EncodeError::InputShrank;
                stats.frame_dropped(e.reason(), frame.seq, &Chain(&e));
            }
            Ok(parts) => {
                stats.encode_time.observe(started.elapsed());
                deliver(&frame, format, &parts)
            }
            Err(e) => stats.frame_dropped(e.reason(), frame.seq, &Chain(&e)),
        }
        consumer.release(frame);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_encodes_frames_that_are_not_jpeg() {
        let options = Options {
            format: ImageFormat::Jpeg,
            quality: 90,
            subsampling: Subsampling::S420,
            compression: PngCompression::Fast,
            passthrough: true,
            timezone: TimeZone::Utc,
            threads: 1,
        };
        let mut encoder = Encoder::new(&options, PixelFormat::Mjpeg).unwrap();
        let jpeg = crate::source::mjpeg::test_jpeg(16, 8, false, 2);
        let mut frame = Frame::with_capacity(0);
        frame.format = PixelFormat::Mjpeg;
        frame.data = jpeg.clone();
        let parts = encoder.encode(&frame).unwrap();
        assert_eq!(
            [parts[0], parts[2]].concat(),
            jpeg,
            "MJPEG is stored as it is, but for the EXIF segment"
        );
        assert_eq!(&parts[1][..2], [0xFF, 0xE1], "no EXIF segment spliced in");
        // The camera granted YUYV instead: encoded, not refused.
        frame.format = PixelFormat::Yuyv;
        (frame.width, frame.height) = (4, 2);
        frame.data = vec![128; 16];
        let out = encoder.encode(&frame).unwrap().concat();
        assert!(crate::source::mjpeg::check_whole(&out).is_ok());
    }

    #[test]
    fn a_jpeg_claiming_a_huge_size_is_refused_without_allocating() {
        let mut jpeg = crate::source::mjpeg::test_jpeg(16, 16, false, 1);
        // Patch the SOF0 size to 60000×60000.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let mut out = Vec::new();
        let err = MjpegDecoder::default()
            .decode(&jpeg, false, &mut out)
            .unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { .. }), "{err}");
        assert_eq!(err.reason(), DropReason::Corrupt);
        assert!(out.capacity() < 1 << 20);
    }
}
