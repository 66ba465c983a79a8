//! The capture time, written into the image itself so it survives renames
//! and copies: an EXIF APP1 segment in JPEGs (DateTimeOriginal with
//! SubSecTimeOriginal and OffsetTimeOriginal, as cameras write it) and a
//! `Creation Time` text chunk in PNGs.
//!
//! The EXIF block is a minimal big-endian TIFF structure built into a reused
//! buffer; no allocation per frame.

use std::fmt::Write as _;
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Local, Offset, Timelike, Utc};

use super::naming::TimeZone;

/// The `Software` tag.
pub const SOFTWARE: &str = concat!("framerec ", env!("CARGO_PKG_VERSION"));

/// The capture time in the parts EXIF wants.
struct ExifTime {
    /// "YYYY:MM:DD HH:MM:SS"
    datetime: String,
    /// "+HH:MM"
    offset: String,
    /// Nine digits of nanoseconds.
    subsec: String,
}

fn exif_time(captured_at: SystemTime, tz: TimeZone, out: &mut ExifTime) {
    let utc: DateTime<Utc> = captured_at.into();
    let (naive, offset_secs) = match tz {
        TimeZone::Utc => (utc.naive_utc(), 0),
        TimeZone::Local => {
            let local = utc.with_timezone(&Local);
            (local.naive_local(), local.offset().fix().local_minus_utc())
        }
    };
    out.datetime.clear();
    let _ = write!(
        out.datetime,
        "{:04}:{:02}:{:02} {:02}:{:02}:{:02}",
        naive.year(),
        naive.month(),
        naive.day(),
        naive.hour(),
        naive.minute(),
        naive.second()
    );
    out.offset.clear();
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let abs = offset_secs.unsigned_abs();
    let _ = write!(out.offset, "{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60);
    out.subsec.clear();
    let _ = write!(out.subsec, "{:09}", naive.nanosecond() % 1_000_000_000);
}

/// Builds EXIF segments and stamps them into JPEGs.
#[derive(Default)]
pub struct Exif {
    segment: Vec<u8>,
    time: Option<ExifTime>,
}

enum Value<'a> {
    Ascii(&'a str),
    Long(u32),
}

const ASCII: u16 = 2;
const LONG: u16 = 4;

impl Exif {
    /// The APP1 segment (marker included) for a frame captured at `captured_at`.
    pub fn segment(&mut self, captured_at: SystemTime, tz: TimeZone) -> &[u8] {
        let time = self.time.get_or_insert_with(|| ExifTime {
            datetime: String::with_capacity(20),
            offset: String::with_capacity(7),
            subsec: String::with_capacity(10),
        });
        exif_time(captured_at, tz, time);
        // Layout (offsets from the TIFF header): header 8, IFD0 (3 entries),
        // Exif IFD (3 entries), then the strings.
        const IFD_LEN: u32 = 2 + 3 * 12 + 4;
        let exif_ifd = 8 + IFD_LEN;
        let ifd0 = [
            (0x0131, Value::Ascii(SOFTWARE)),
            (0x0132, Value::Ascii(&time.datetime)),
            (0x8769, Value::Long(exif_ifd)),
        ];
        let ifd1 = [
            (0x9003, Value::Ascii(&time.datetime)),
            (0x9010, Value::Ascii(&time.offset)),
            (0x9291, Value::Ascii(&time.subsec)),
        ];
        let out = &mut self.segment;
        out.clear();
        out.extend_from_slice(&[0xFF, 0xE1, 0, 0]);
        out.extend_from_slice(b"Exif\0\0");
        let tiff = out.len();
        out.extend_from_slice(b"MM\0\x2A\0\0\0\x08");
        let mut data_at = 8 + 2 * IFD_LEN;
        let mut data: [(u32, &str); 6] = [(0, ""); 6];
        let mut strings = 0;
        for (next, entries) in [(0u32, &ifd0), (0, &ifd1)] {
            out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
            for (tag, value) in entries.iter() {
                out.extend_from_slice(&u16::to_be_bytes(*tag));
                match value {
                    Value::Ascii(s) => {
                        let count = s.len() as u32 + 1;
                        out.extend_from_slice(&ASCII.to_be_bytes());
                        out.extend_from_slice(&count.to_be_bytes());
                        if count <= 4 {
                            let mut inline = [0u8; 4];
                            inline[..s.len()].copy_from_slice(s.as_bytes());
                            out.extend_from_slice(&inline);
                        } else {
                            out.extend_from_slice(&data_at.to_be_bytes());
                            data[strings] = (data_at, s);
                            strings += 1;
                            data_at += count + (count & 1);
                        }
                    }
                    Value::Long(v) => {
                        out.extend_from_slice(&LONG.to_be_bytes());
                        out.extend_from_slice(&1u32.to_be_bytes());
                        out.extend_from_slice(&v.to_be_bytes());
                    }
                }
            }
            out.extend_from_slice(&next.to_be_bytes());
        }
        for &(at, s) in &data[..strings] {
            debug_assert_eq!(out.len() - tiff, at as usize);
            out.extend_from_slice(s.as_bytes());
            out.push(0);
            if (s.len() + 1) % 2 == 1 {
                out.push(0);
            }
        }
        let len = (out.len() - 2) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        &self.segment
    }

    /// Copies `jpeg` into `out` with the EXIF segment after SOI and the JFIF
    /// APP0 segment (where readers look for it).
    pub fn stamp(&mut self, jpeg: &[u8], captured_at: SystemTime, tz: TimeZone, out: &mut Vec<u8>) {
        let mut at = 2.min(jpeg.len());
        if jpeg.len() >= 6 && jpeg[2..4] == [0xFF, 0xE0] {
            at = (4 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]))).min(jpeg.len());
        }
        let segment = self.segment(captured_at, tz);
        out.clear();
        out.reserve(jpeg.len() + segment.len());
        out.extend_from_slice(&jpeg[..at]);
        out.extend_from_slice(segment);
        out.extend_from_slice(&jpeg[at..]);
    }
}

/// The PNG `Creation Time` text: RFC 3339 with nanoseconds, in UTC.
pub fn png_creation_time(captured_at: SystemTime) -> String {
    let utc: DateTime<Utc> = captured_at.into();
    utc.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exif_segment_is_well_formed() {
        let mut exif = Exif::default();
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_709_618_828, 123_456_789);
        let seg = exif.segment(t, TimeZone::Utc).to_vec();
        assert_eq!(&seg[..2], &[0xFF, 0xE1]);
        assert_eq!(
            usize::from(u16::from_be_bytes([seg[2], seg[3]])),
            seg.len() - 2
        );
        assert_eq!(&seg[4..10], b"Exif\0\0");
        let text = String::from_utf8_lossy(&seg);
        assert!(text.contains("2024:03:05 06:07:08"), "{text:?}");
        assert!(text.contains("123456789"));
        assert!(text.contains("+00:00"));
    }

    #[test]
    fn stamp_goes_after_jfif() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xD9];
        let mut exif = Exif::default();
        let mut out = Vec::new();
        exif.stamp(&jpeg, SystemTime::UNIX_EPOCH, TimeZone::Utc, &mut out);
        assert_eq!(&out[..8], &jpeg[..8]);
        assert_eq!(&out[8..10], &[0xFF, 0xE1]);
        assert_eq!(&out[out.len() - 2..], &[0xFF, 0xD9]);
    }
}
