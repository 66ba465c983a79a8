//! The synthetic camera: a deterministic, moving test pattern in any pixel
//! format, paced in real time.
//!
//! The pattern is a colour gradient with a checker texture (built once per
//! run, in the target format), a white bar sweeping left to right every three
//! seconds, a red square falling every two seconds, and the frame number drawn
//! in the top-left corner. `gray16` uses the whole 16-bit range (a horizontal
//! ramp from 0 to 65535 whose low byte varies), so a lost low byte shows.
//! `mjpeg` produces real JPEG frames, as a USB camera does.
//!
//! Each frame costs a copy of the background and a few filled rectangles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::convert::{rgb_to, rgb_to_gray, rgb_to_yuv, sized};
use crate::frame::{Frame, PixelFormat};

use super::{Captured, SourceError};

/// 5×7 bitmaps of the digits 0–9, one byte a row, the low 5 bits used.
const DIGITS: [[u8; 7]; 10] = [
    [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
    [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
    [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
    [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
    [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
    [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
    [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
    [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
    [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
    [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
];

const WHITE: (u8, u8, u8) = (255, 255, 255);
const BLACK: (u8, u8, u8) = (0, 0, 0);
const RED: (u8, u8, u8) = (220, 40, 40);

/// A rectangle, in pixels, `x0..x1` × `y0..y1`.
#[derive(Clone, Copy, Debug)]
struct Rect {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// The synthetic source. See the module docs.
pub struct Synthetic {
    width: usize,
    height: usize,
    format: PixelFormat,
    period: Duration,
    fps: f64,
    next_due: Option<Instant>,
    /// Frames made so far; drawn into the image.
    index: u64,
    /// The static part of the pattern, in `format` (RGB for mjpeg).
    background: Vec<u8>,
    /// For mjpeg: the RGB canvas and the compressor.
    canvas: Vec<u8>,
    jpeg: Option<turbojpeg::Compressor>,
    jpeg_out: Vec<u8>,
}

impl Synthetic {
    pub fn new(
        width: u32,
        height: u32,
        fps: f64,
        format: PixelFormat,
    ) -> Result<Synthetic, SourceError> {
        let (w, h) = (width as usize, height as usize);
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let checker = if ((x / 16) + (y / 16)) % 2 == 0 {
                    0
                } else {
                    48
                };
                let i = (y * w + x) * 3;
                rgb[i] = (x * 255 / w.max(2).saturating_sub(1)).min(255) as u8;
                rgb[i + 1] = (y * 255 / h.max(2).saturating_sub(1)).min(255) as u8;
                rgb[i + 2] = (((x + y) * 207 / (w + h)) + checker).min(255) as u8;
            }
        }
        let mut background = Vec::new();
        let mut jpeg = None;
        match format {
            PixelFormat::Gray16 => {
                let out = sized(&mut background, w * h * 2);
                for y in 0..h {
                    for x in 0..w {
                        let ramp = (x * 65_535 / w.max(2).saturating_sub(1)).min(65_535) as u16;
                        let v = ramp ^ (y as u16 & 0xFF);
                        out[(y * w + x) * 2..][..2].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            PixelFormat::Mjpeg => {
                background = rgb;
                let mut compressor = turbojpeg::Compressor::new().map_err(SourceError::Jpeg)?;
                compressor.set_quality(85).map_err(SourceError::Jpeg)?;
                compressor
                    .set_subsamp(turbojpeg::Subsamp::Sub2x1)
                    .map_err(SourceError::Jpeg)?;
                jpeg = Some(compressor);
            }
            other => rgb_to(other, &rgb, w, h, &mut background),
        }
        let period = Duration::try_from_secs_f64(1.0 / fps).unwrap_or(Duration::from_secs(1));
        Ok(Synthetic {
            width: w,
            height: h,
            format,
            period,
            fps,
            next_due: None,
            index: 0,
            background,
            canvas: Vec::new(),
            jpeg,
            jpeg_out: Vec::new(),
        })
    }

    /// Waits for the next frame's time, then draws it into `frame`.
    pub(crate) fn next_frame(
        &mut self,
        frame: &mut Frame,
        stop: &AtomicBool,
    ) -> Result<Captured, SourceError> {
        let due = *self.next_due.get_or_insert_with(Instant::now);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(Captured::End);
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
        let captured_at = SystemTime::now();
        let now = Instant::now();
        // Keep to the grid of frame times; after a stall, skip rather than burst.
        let mut next = due + self.period;
        if next + self.period < now {
            next = now;
        }
        self.next_due = Some(next);
        self.render(frame);
        frame.captured_at = captured_at;
        self.index += 1;
        Ok(Captured::Frame)
    }

    /// Draws frame number `self.index` into `frame` (no pacing).
    pub fn render(&mut self, frame: &mut Frame) {
        let (w, h) = (self.width, self.height);
        frame.width = w as u32;
        frame.height = h as u32;
        frame.format = self.format;
        let target = if self.format == PixelFormat::Mjpeg {
            &mut self.canvas
        } else {
            &mut frame.data
        };
        target.clear();
        target.extend_from_slice(&self.background);
        let draw_format = if self.format == PixelFormat::Mjpeg {
            PixelFormat::Rgb
        } else {
            self.format
        };
        let frames_per_sweep = (self.fps * 3.0).max(1.0) as u64;
        let bar_w = (w / 40).max(2);
        let bar_x =
            ((self.index % frames_per_sweep) as usize * w / frames_per_sweep as usize).min(w - 1);
        fill(
            target,
            draw_format,
            w,
            h,
            Rect {
                x0: bar_x,
                y0: 0,
                x1: bar_x + bar_w,
                y1: h,
            },
            WHITE,
        );
        let frames_per_fall = (self.fps * 2.0).max(1.0) as u64;
        let side = (h / 10).max(2);
        let sq_y = (self.index % frames_per_fall) as usize * h / frames_per_fall as usize;
        let sq_x = w * 3 / 4;
        fill(
            target,
            draw_format,
            w,
            h,
            Rect {
                x0: sq_x,
                y0: sq_y,
                x1: sq_x + side,
                y1: sq_y + side,
            },
            RED,
        );
        draw_number(target, draw_format, w, h, self.index);
        if let Some(compressor) = &mut self.jpeg {
            let image = turbojpeg::Image {
                pixels: self.canvas.as_slice(),
                width: w,
                pitch: w * 3,
                height: h,
                format: turbojpeg::PixelFormat::RGB,
            };
            // Compress into a buffer sized once for the worst case, then copy the
            // JPEG's own bytes. Compressing a valid RGB image does not fail; if
            // it ever did, the empty frame would be dropped as corrupt.
            if self.jpeg_out.is_empty() {
                let room = compressor.buf_len(w, h).unwrap_or(w * h * 4 + 2048);
                self.jpeg_out.resize(room, 0);
            }
            let len = compressor
                .compress_to_slice(image, &mut self.jpeg_out)
                .unwrap_or(0);
            frame.data.clear();
            frame.data.extend_from_slice(&self.jpeg_out[..len]);
        }
    }
}

/// Draws `number` in a white box at the top-left corner.
fn draw_number(buf: &mut [u8], format: PixelFormat, w: usize, h: usize, number: u64) {
    let scale = (h / 120).max(1);
    let mut text = [0u8; 20];
    let mut at = text.len();
    let mut n = number;
    loop {
        at -= 1;
        text[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = &text[at..];
    let margin = 2 * scale;
    let box_w = digits.len() * 6 * scale + 2 * margin;
    let box_h = 7 * scale + 2 * margin;
    fill(
        buf,
        format,
        w,
        h,
        Rect {
            x0: 0,
            y0: 0,
            x1: box_w,
            y1: box_h,
        },
        WHITE,
    );
    for (k, &digit) in digits.iter().enumerate() {
        let glyph = &DIGITS[(digit - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let x0 = margin + (k * 6 + col) * scale;
                    let y0 = margin + row * scale;
                    fill(
                        buf,
                        format,
                        w,
                        h,
                        Rect {
                            x0,
                            y0,
                            x1: x0 + scale,
                            y1: y0 + scale,
                        },
                        BLACK,
                    );
                }
            }
        }
    }
}

/// Fills a rectangle (clipped to the image) with one colour in any raw format.
fn fill(
    buf: &mut [u8],
    format: PixelFormat,
    w: usize,
    h: usize,
    rect: Rect,
    (r, g, b): (u8, u8, u8),
) {
    let (x0, x1) = (rect.x0.min(w), rect.x1.min(w));
    let (y0, y1) = (rect.y0.min(h), rect.y1.min(h));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let gray = rgb_to_gray(r, g, b);
    let (yy, u, v) = rgb_to_yuv(r, g, b);
    for y in y0..y1 {
        match format {
            PixelFormat::Rgb | PixelFormat::Mjpeg => {
                for px in buf[(y * w + x0) * 3..(y * w + x1) * 3].chunks_exact_mut(3) {
                    px.copy_from_slice(&[r, g, b]);
                }
            }
            PixelFormat::Rgba => {
                for px in buf[(y * w + x0) * 4..(y * w + x1) * 4].chunks_exact_mut(4) {
                    px.copy_from_slice(&[r, g, b, 255]);
                }
            }
            PixelFormat::Gray => buf[y * w + x0..y * w + x1].fill(gray),
            PixelFormat::Gray16 => {
                let v16 = (u16::from(gray) * 257).to_le_bytes();
                for px in buf[(y * w + x0) * 2..(y * w + x1) * 2].chunks_exact_mut(2) {
                    px.copy_from_slice(&v16);
                }
            }
            PixelFormat::Yuyv => {
                let row = &mut buf[y * w * 2..(y + 1) * w * 2];
                for x in x0..x1 {
                    row[x * 2] = yy;
                    let pair = (x / 2) * 4;
                    row[pair + 1] = u;
                    row[pair + 3] = v;
                }
            }
            PixelFormat::Nv12 => {
                buf[y * w + x0..y * w + x1].fill(yy);
                let chroma = w * h + (y / 2) * w;
                for x in (x0 & !1..x1).step_by(2) {
                    buf[chroma + x] = u;
                    buf[chroma + x + 1] = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_count() {
        for format in PixelFormat::ALL {
            let mut source = Synthetic::new(64, 48, 30.0, format).unwrap();
            let mut a = Frame::with_capacity(0);
            let mut b = Frame::with_capacity(0);
            source.render(&mut a);
            source.index = 7;
            source.render(&mut b);
            if let Some(len) = format.frame_len(64, 48) {
                assert_eq!(a.data.len(), len, "{format}");
            } else {
                assert!(crate::source::mjpeg::check_whole(&a.data).is_ok());
            }
            assert_ne!(a.data, b.data, "{format}: the pattern does not move");
            assert_eq!((b.width, b.height, b.format), (64, 48, format));
        }
    }

    #[test]
    fn gray16_uses_the_whole_range() {
        let mut source = Synthetic::new(256, 8, 30.0, PixelFormat::Gray16).unwrap();
        let mut frame = Frame::with_capacity(0);
        source.render(&mut frame);
        let samples: Vec<u16> = frame
            .data
            .chunks_exact(2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .collect();
        // The last row: ramp to 65535 (xor 7), and low bytes that are not all equal.
        let last_row = &samples[7 * 256..];
        assert!(last_row.iter().any(|&s| s >= 65_000));
        let low: std::collections::HashSet<u8> = samples.iter().map(|s| (s & 0xFF) as u8).collect();
        assert!(low.len() > 100, "the low byte barely varies");
    }

    #[test]
    fn paces_in_real_time_and_stops() {
        let mut source = Synthetic::new(16, 16, 1000.0, PixelFormat::Gray).unwrap();
        let stop = AtomicBool::new(false);
        let mut frame = Frame::with_capacity(0);
        assert_eq!(
            source.next_frame(&mut frame, &stop).unwrap(),
            Captured::Frame
        );
        let first = frame.captured_at;
        assert_eq!(
            source.next_frame(&mut frame, &stop).unwrap(),
            Captured::Frame
        );
        assert!(frame.captured_at > first);
        stop.store(true, Ordering::Relaxed);
        assert_eq!(source.next_frame(&mut frame, &stop).unwrap(), Captured::End);
    }
}
