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

use crate::frame::TimeZone;

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
    /// A JPEG with EXIF blocks of its own, rebuilt without them (rare:
    /// cameras' MJPEG frames seldom carry EXIF).
    rebuilt: Vec<u8>,
}

enum Value<'a> {
    Ascii(&'a str),
    Short(u16),
    Long(u32),
    Rational(u32, u32),
    Undefined([u8; 4]),
}

impl Value<'_> {
    /// TIFF type code, count, and the bytes the value takes.
    fn shape(&self) -> (u16, u32, u32) {
        match self {
            Value::Ascii(s) => (2, s.len() as u32 + 1, s.len() as u32 + 1),
            Value::Short(_) => (3, 1, 2),
            Value::Long(_) => (4, 1, 4),
            Value::Rational(..) => (5, 1, 8),
            Value::Undefined(_) => (7, 4, 4),
        }
    }

    fn write_data(&self, out: &mut Vec<u8>) {
        match self {
            Value::Ascii(s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
            Value::Short(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Long(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Rational(n, d) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&d.to_be_bytes());
            }
            Value::Undefined(b) => out.extend_from_slice(b),
        }
    }
}

/// Writes one IFD at `at` (offset from the TIFF header) with its out-of-line
/// values right after it; returns the offset just past them.
fn write_ifd(out: &mut Vec<u8>, tiff: usize, entries: &[(u16, Value<'_>)]) -> u32 {
    let at = (out.len() - tiff) as u32;
    let mut data_at = at + 2 + 12 * entries.len() as u32 + 4;
    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for (tag, value) in entries {
        let (kind, count, len) = value.shape();
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        if len <= 4 {
            let start = out.len();
            value.write_data(out);
            out.resize(start + 4, 0);
        } else {
            out.extend_from_slice(&data_at.to_be_bytes());
            data_at += len + (len & 1);
        }
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    for (_, value) in entries {
        if value.shape().2 > 4 {
            value.write_data(out);
            if out.len() % 2 == 1 {
                out.push(0);
            }
        }
    }
    debug_assert_eq!((out.len() - tiff) as u32, data_at);
    data_at
}

impl Exif {
    /// The APP1 segment (marker included) for a `width`×`height` frame
    /// captured at `captured_at`.
    pub fn segment(
        &mut self,
        captured_at: SystemTime,
        tz: TimeZone,
        width: u32,
        height: u32,
    ) -> &[u8] {
        let time = self.time.get_or_insert_with(|| ExifTime {
            datetime: String::with_capacity(20),
            offset: String::with_capacity(7),
            subsec: String::with_capacity(10),
        });
        exif_time(captured_at, tz, time);
        let out = &mut self.segment;
        out.clear();
        out.extend_from_slice(&[0xFF, 0xE1, 0, 0]);
        out.extend_from_slice(b"Exif\0\0");
        let tiff = out.len();
        out.extend_from_slice(b"MM\0\x2A\0\0\0\x08");
        // IFD0 is written with a placeholder for the Exif IFD's offset, which
        // is where IFD0's data ends.
        let ifd0 = [
            (0x011A, Value::Rational(72, 1)),
            (0x011B, Value::Rational(72, 1)),
            (0x0128, Value::Short(2)),
            (0x0131, Value::Ascii(SOFTWARE)),
            (0x0132, Value::Ascii(&time.datetime)),
            (0x0213, Value::Short(1)),
            (0x8769, Value::Long(0)),
        ];
        let pointer_at = tiff + 8 + 2 + 12 * 6 + 8;
        let exif_at = write_ifd(out, tiff, &ifd0);
        out[pointer_at..pointer_at + 4].copy_from_slice(&exif_at.to_be_bytes());
        let exif = [
            (0x9000, Value::Undefined(*b"0232")),
            (0x9003, Value::Ascii(&time.datetime)),
            (0x9010, Value::Ascii(&time.offset)),
            (0x9011, Value::Ascii(&time.offset)),
            (0x9101, Value::Undefined([1, 2, 3, 0])),
            (0x9291, Value::Ascii(&time.subsec)),
            (0xA000, Value::Undefined(*b"0100")),
            (0xA001, Value::Short(1)),
            (0xA002, Value::Long(width)),
            (0xA003, Value::Long(height)),
        ];
        write_ifd(out, tiff, &exif);
        let len = (out.len() - 2) as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        &self.segment
    }

    /// The file as three parts to write one after the other: `jpeg` with
    /// the EXIF segment after SOI and the JFIF APP0 segment (where readers
    /// look for it). Nothing is copied, unless the JPEG has EXIF blocks of
    /// its own (a camera's, whose clock may be wrong): those are left out,
    /// so readers see one capture time, framerec's.
    pub fn stamp<'a>(
        &'a mut self,
        jpeg: &'a [u8],
        frame: (SystemTime, u32, u32),
        tz: TimeZone,
    ) -> [&'a [u8]; 3] {
        let (captured_at, width, height) = frame;
        let layout = Layout::of(jpeg);
        self.segment(captured_at, tz, width, height);
        let at = layout.insert_at;
        if layout.exif_count == 0 {
            return [&jpeg[..at], &self.segment, &jpeg[at..]];
        }
        let rebuilt = &mut self.rebuilt;
        rebuilt.clear();
        rebuilt.extend_from_slice(&jpeg[..at]);
        rebuilt.extend_from_slice(&self.segment);
        let mut from = at;
        for &(start, end) in &layout.exif[..layout.exif_count] {
            rebuilt.extend_from_slice(&jpeg[from..start.max(from)]);
            from = end.max(from);
        }
        rebuilt.extend_from_slice(&jpeg[from..]);
        [&self.rebuilt, &[], &[]]
    }
}

/// Where things are in a JPEG's headers.
struct Layout {
    /// After SOI, and after JFIF's APP0 if it comes first.
    insert_at: usize,
    /// The EXIF APP1 segments before the image data (at most 8 are left out).
    exif: [(usize, usize); 8],
    exif_count: usize,
}

impl Layout {
    fn of(jpeg: &[u8]) -> Layout {
        let mut layout = Layout {
            insert_at: 2.min(jpeg.len()),
            exif: [(0, 0); 8],
            exif_count: 0,
        };
        let mut at = 2;
        let mut first = true;
        while at + 1 < jpeg.len() && jpeg[at] == 0xFF {
            // Fill bytes may stand before a marker.
            let mut marker_at = at + 1;
            while jpeg.get(marker_at) == Some(&0xFF) {
                marker_at += 1;
            }
            let Some(&marker) = jpeg.get(marker_at) else {
                break;
            };
            // The image data (or the end) follows: no more headers.
            if marker == 0xDA || marker == 0xD9 {
                break;
            }
            // Markers without a length (TEM, RSTn).
            if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
                at = marker_at + 1;
                continue;
            }
            let Some(len) = jpeg.get(marker_at + 1..marker_at + 3) else {
                break;
            };
            let end =
                (marker_at + 1 + usize::from(u16::from_be_bytes([len[0], len[1]]))).min(jpeg.len());
            if first && marker == 0xE0 {
                layout.insert_at = end;
            }
            let payload = jpeg.get(marker_at + 3..end).unwrap_or_default();
            if marker == 0xE1 && payload.starts_with(b"Exif\0") && layout.exif_count < 8 {
                layout.exif[layout.exif_count] = (at, end);
                layout.exif_count += 1;
            }
            first = false;
            at = end;
        }
        layout
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
        let seg = exif.segment(t, TimeZone::Utc, 64, 48).to_vec();
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
        let out = exif
            .stamp(&jpeg, (SystemTime::UNIX_EPOCH, 4, 2), TimeZone::Utc)
            .concat();
        assert_eq!(&out[..8], &jpeg[..8]);
        assert_eq!(&out[8..10], &[0xFF, 0xE1]);
        assert_eq!(&out[out.len() - 2..], &[0xFF, 0xD9]);
    }

    #[test]
    fn a_cameras_own_exif_blocks_are_left_out_wherever_they_are() {
        let camera_exif = |tag: u8| {
            vec![
                0xFF, 0xE1, 0x00, 0x0A, b'E', b'x', b'i', b'f', 0, tag, b'o', b'l',
            ]
        };
        let app0 = [0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB];
        let dqt = [0xFF, 0xDB, 0x00, 0x03, 0x01];
        let scan = [
            0xFF, 0xDA, 0x00, 0x02, b'E', b'x', b'i', b'f', 0, 0, 0xFF, 0xD9,
        ];
        let cases: Vec<Vec<u8>> = vec![
            // Right after APP0.
            [&[0xFF, 0xD8][..], &app0, &camera_exif(0), &dqt, &scan].concat(),
            // Two of them, one after the tables, one behind fill bytes.
            [
                &[0xFF, 0xD8][..],
                &app0,
                &camera_exif(0),
                &dqt,
                &[0xFF],
                &camera_exif(0xFF),
                &scan,
            ]
            .concat(),
        ];
        for jpeg in cases {
            let mut exif = Exif::default();
            let out = exif
                .stamp(&jpeg, (SystemTime::UNIX_EPOCH, 4, 2), TimeZone::Utc)
                .concat();
            let headers = &out[..out.len() - scan.len()];
            let count = headers.windows(5).filter(|w| *w == b"Exif\0").count();
            assert_eq!(count, 1, "not exactly framerec's EXIF block: {out:?}");
            assert!(
                !out.windows(2).any(|w| w == b"ol"),
                "a camera EXIF block stayed"
            );
            assert_eq!(&out[..8], &jpeg[..8], "SOI and APP0 first");
            assert_eq!(&out[8..10], &[0xFF, 0xE1], "framerec's block after APP0");
            assert!(out.ends_with(&scan), "the image data changed");
            assert!(out.windows(dqt.len()).any(|w| w == dqt), "the tables went");
        }
    }
}
