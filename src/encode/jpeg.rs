//! JPEG through libjpeg-turbo. RGB and gray frames go in as they are;
//! YUYV and NV12 go in as full-range Y/U/V planes (range-expanded with lookup
//! tables, no RGB detour); MJPEG frames that must be re-encoded are decoded
//! first. The capture time goes into an EXIF segment.

use turbojpeg::{Compressor, Image, OutputBuf, PixelFormat as TjFormat, Subsamp, YuvPlanesImage};

use super::metadata::Exif;
use super::Subsampling;
use super::{EncodeError, MjpegDecoder, Parts};
use crate::convert::{expand_luma_of, nv12_to_planes, yuyv_to_planes, Planes};
use crate::frame::TimeZone;
use crate::frame::{Frame, PixelFormat};

/// A JPEG encoder, one per worker thread; all its buffers are reused.
pub struct JpegEncoder {
    compressor: Compressor,
    decoder: MjpegDecoder,
    subsampling: Subsampling,
    jpeg: OutputBuf<'static>,
    planes: Planes,
    scratch: Vec<u8>,
    exif: Exif,
    timezone: TimeZone,
}

fn subsamp(s: Subsampling) -> Subsamp {
    match s {
        Subsampling::S444 => Subsamp::None,
        Subsampling::S422 => Subsamp::Sub2x1,
        Subsampling::S420 => Subsamp::Sub2x2,
        Subsampling::Gray => Subsamp::Gray,
    }
}

impl JpegEncoder {
    pub fn new(
        quality: u8,
        subsampling: Subsampling,
        timezone: TimeZone,
    ) -> Result<JpegEncoder, EncodeError> {
        let mut compressor = Compressor::new().map_err(EncodeError::Jpeg)?;
        compressor
            .set_quality(i32::from(quality))
            .map_err(EncodeError::Jpeg)?;
        Ok(JpegEncoder {
            compressor,
            decoder: MjpegDecoder::default(),
            subsampling,
            jpeg: OutputBuf::new_owned(),
            planes: Planes::default(),
            scratch: Vec::new(),
            exif: Exif::default(),
            timezone,
        })
    }

    /// Stores a camera's own JPEG as it is, with the capture time spliced in
    /// (see [`super::passthrough`]).
    pub(crate) fn pass_through<'a>(
        &'a mut self,
        frame: &'a Frame,
    ) -> Result<Parts<'a>, EncodeError> {
        super::passthrough::encode(frame, &mut self.exif, self.timezone)
    }

    /// Encodes `frame`; the returned bytes are the whole file.
    pub fn encode(&mut self, frame: &Frame) -> Result<Parts<'_>, EncodeError> {
        let (w, h) = (frame.width as usize, frame.height as usize);
        let gray = self.subsampling == Subsampling::Gray;
        // The stored image's size (an MJPEG frame's own header may differ).
        let (mut width, mut height) = (frame.width, frame.height);
        let c = &mut self.compressor;
        match frame.format {
            PixelFormat::Rgb | PixelFormat::Rgba | PixelFormat::Gray => {
                let (format, sub) = match frame.format {
                    PixelFormat::Rgb => (TjFormat::RGB, subsamp(self.subsampling)),
                    PixelFormat::Rgba => (TjFormat::RGBA, subsamp(self.subsampling)),
                    _ => (TjFormat::GRAY, Subsamp::Gray),
                };
                c.set_subsamp(sub).map_err(EncodeError::Jpeg)?;
                let image = Image {
                    pixels: frame.bytes(),
                    width: w,
                    pitch: w * format.size(),
                    height: h,
                    format,
                };
                c.compress(image, &mut self.jpeg)
                    .map_err(EncodeError::Jpeg)?;
            }
            PixelFormat::Yuyv | PixelFormat::Nv12 if gray => {
                expand_luma_of(
                    frame.bytes(),
                    frame.format == PixelFormat::Yuyv,
                    w * h,
                    &mut self.scratch,
                );
                c.set_subsamp(Subsamp::Gray).map_err(EncodeError::Jpeg)?;
                let image = Image {
                    pixels: self.scratch.as_slice(),
                    width: w,
                    pitch: w,
                    height: h,
                    format: TjFormat::GRAY,
                };
                c.compress(image, &mut self.jpeg)
                    .map_err(EncodeError::Jpeg)?;
            }
            PixelFormat::Yuyv | PixelFormat::Nv12 => {
                // Chroma is never invented: 4:4:4 from a 4:2:2 camera stays 4:2:2.
                let sub =
                    if frame.format == PixelFormat::Nv12 || self.subsampling == Subsampling::S420 {
                        Subsamp::Sub2x2
                    } else {
                        Subsamp::Sub2x1
                    };
                if frame.format == PixelFormat::Yuyv {
                    yuyv_to_planes(
                        frame.bytes(),
                        w,
                        h,
                        sub == Subsamp::Sub2x2,
                        &mut self.planes,
                    );
                } else {
                    nv12_to_planes(frame.bytes(), w, h, &mut self.planes);
                }
                let image = YuvPlanesImage {
                    y_plane: self.planes.y.as_slice(),
                    u_plane: self.planes.u.as_slice(),
                    v_plane: self.planes.v.as_slice(),
                    width: w,
                    height: h,
                    y_stride: w,
                    u_stride: w / 2,
                    v_stride: w / 2,
                    subsamp: sub,
                };
                c.compress_yuv_planes(&image, &mut self.jpeg)
                    .map_err(EncodeError::Jpeg)?;
            }
            PixelFormat::Mjpeg => {
                let shape = self
                    .decoder
                    .decode(frame.bytes(), gray, &mut self.scratch)?;
                (width, height) = (shape.width as u32, shape.height as u32);
                let (format, sub) = if shape.gray {
                    (TjFormat::GRAY, Subsamp::Gray)
                } else {
                    (TjFormat::RGB, subsamp(self.subsampling))
                };
                c.set_subsamp(sub).map_err(EncodeError::Jpeg)?;
                let image = Image {
                    pixels: self.scratch.as_slice(),
                    width: shape.width,
                    pitch: shape.width * format.size(),
                    height: shape.height,
                    format,
                };
                c.compress(image, &mut self.jpeg)
                    .map_err(EncodeError::Jpeg)?;
            }
            PixelFormat::Gray16 => return Err(EncodeError::Unsupported(frame.format, "jpeg")),
        }
        Ok(self.exif.stamp(
            &self.jpeg,
            (frame.captured_at, width, height),
            self.timezone,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::rgb_to;
    use std::time::SystemTime;

    fn frame(format: PixelFormat, width: u32, height: u32) -> Frame {
        let rgb: Vec<u8> = (0..width * height * 3)
            .map(|i| (i * 13 % 256) as u8)
            .collect();
        let mut data = Vec::new();
        rgb_to(format, &rgb, width as usize, height as usize, &mut data);
        Frame {
            seq: 1,
            captured_at: SystemTime::UNIX_EPOCH,
            width,
            height,
            format,
            data,
            view: None,
        }
    }

    #[test]
    fn odd_sizes_encode_in_every_subsampling() {
        for subsampling in [
            Subsampling::S444,
            Subsampling::S422,
            Subsampling::S420,
            Subsampling::Gray,
        ] {
            let mut encoder = JpegEncoder::new(80, subsampling, TimeZone::Utc).unwrap();
            for (format, w, h) in [
                (PixelFormat::Yuyv, 4, 3),
                (PixelFormat::Yuyv, 2, 1),
                (PixelFormat::Nv12, 6, 2),
                (PixelFormat::Rgb, 5, 3),
                (PixelFormat::Gray, 3, 1),
            ] {
                let jpeg = encoder.encode(&frame(format, w, h)).unwrap().concat();
                let header = turbojpeg::read_header(&jpeg).unwrap();
                assert_eq!(
                    (header.width, header.height),
                    (w as usize, h as usize),
                    "{format} {subsampling:?}"
                );
            }
        }
    }
}
