//! PNG through the png crate: gray8, gray16 (big-endian, as PNG stores it),
//! RGB and RGBA as they are; YUYV and NV12 converted to RGB as BT.601
//! limited range (what cameras send); MJPEG decoded with libjpeg-turbo.
//! The capture time goes into a `Creation Time` text chunk.

use png::{BitDepth, ColorType, Compression};

use super::metadata::{png_creation_time, SOFTWARE};
use super::PngCompression;
use super::{EncodeError, MjpegDecoder, Parts};
use crate::convert::{nv12_to_rgb, swap16, yuyv_to_rgb};
use crate::frame::{Frame, PixelFormat};

/// A PNG encoder, one per worker thread; its buffers are reused.
pub struct PngEncoder {
    compression: Compression,
    decoder: MjpegDecoder,
    scratch: Vec<u8>,
    file: Vec<u8>,
}

impl PngEncoder {
    pub fn new(compression: PngCompression) -> PngEncoder {
        PngEncoder {
            compression: match compression {
                PngCompression::Fast => Compression::Fast,
                PngCompression::Default => Compression::Balanced,
                PngCompression::Best => Compression::High,
            },
            decoder: MjpegDecoder::default(),
            scratch: Vec::new(),
            file: Vec::new(),
        }
    }

    /// Encodes `frame`; the returned bytes are the whole file.
    pub fn encode(&mut self, frame: &Frame) -> Result<Parts<'_>, EncodeError> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let (mut width, mut height) = (frame.width, frame.height);
        let (color, depth, pixels): (ColorType, BitDepth, &[u8]) = match frame.format {
            PixelFormat::Rgb => (ColorType::Rgb, BitDepth::Eight, frame.bytes()),
            PixelFormat::Rgba => (ColorType::Rgba, BitDepth::Eight, frame.bytes()),
            PixelFormat::Gray => (ColorType::Grayscale, BitDepth::Eight, frame.bytes()),
            PixelFormat::Gray16 => {
                swap16(frame.bytes(), &mut self.scratch);
                (ColorType::Grayscale, BitDepth::Sixteen, &self.scratch)
            }
            PixelFormat::Yuyv => {
                yuyv_to_rgb(frame.bytes(), w, h, &mut self.scratch);
                (ColorType::Rgb, BitDepth::Eight, &self.scratch)
            }
            PixelFormat::Nv12 => {
                nv12_to_rgb(frame.bytes(), w, h, &mut self.scratch);
                (ColorType::Rgb, BitDepth::Eight, &self.scratch)
            }
            PixelFormat::Mjpeg => {
                let shape = self
                    .decoder
                    .decode(frame.bytes(), false, &mut self.scratch)?;
                width = shape.width as u32;
                height = shape.height as u32;
                let color = if shape.gray {
                    ColorType::Grayscale
                } else {
                    ColorType::Rgb
                };
                (color, BitDepth::Eight, &self.scratch)
            }
        };
        self.file.clear();
        let mut encoder = png::Encoder::new(&mut self.file, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        encoder.set_compression(self.compression);
        encoder
            .add_text_chunk("Creation Time".into(), png_creation_time(frame.captured_at))
            .map_err(EncodeError::Png)?;
        encoder
            .add_text_chunk("Software".into(), SOFTWARE.into())
            .map_err(EncodeError::Png)?;
        let mut writer = encoder.write_header().map_err(EncodeError::Png)?;
        writer.write_image_data(pixels).map_err(EncodeError::Png)?;
        writer.finish().map_err(EncodeError::Png)?;
        Ok([&self.file, &[], &[]])
    }
}
