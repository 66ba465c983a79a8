//! MJPEG passthrough: the camera's JPEG bytes are stored as they are, with
//! no decode and no re-encode, after checking each frame is whole (SOI, a
//! frame header, EOI). A torn frame is refused as corrupt.

use super::{EncodeError, Parts};
use crate::frame::Frame;
use crate::source::mjpeg;

/// Checks `frame` is one whole JPEG and returns its bytes unchanged.
pub fn encode(frame: &Frame) -> Result<Parts<'_>, EncodeError> {
    mjpeg::check_whole(&frame.data).map_err(EncodeError::Corrupt)?;
    Ok([&frame.data, &[], &[]])
}
