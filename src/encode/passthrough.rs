//! MJPEG passthrough: the camera's JPEG is stored with no decode and no
//! re-encode, after checking each frame is whole (SOI, a frame header, EOI);
//! a torn frame is refused as corrupt. Only the EXIF segment with the capture
//! time is spliced in after SOI (and JFIF's APP0), so every JPEG framerec
//! writes carries its capture time; the camera's segments, tables and scans
//! follow byte for byte.

use super::metadata::Exif;
use super::{EncodeError, Parts};
use crate::frame::{Frame, TimeZone};
use crate::source::mjpeg;

/// Checks `frame` is one whole JPEG and returns its bytes with `exif`'s
/// capture-time segment spliced in.
pub fn encode<'a>(
    frame: &'a Frame,
    exif: &'a mut Exif,
    timezone: TimeZone,
) -> Result<Parts<'a>, EncodeError> {
    let whole = mjpeg::check_whole(frame.bytes()).map_err(EncodeError::Corrupt)?;
    let shape = (frame.captured_at, whole.width, whole.height);
    Ok(exif.stamp(&frame.bytes()[..whole.len], shape, timezone))
}
