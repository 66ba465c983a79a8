//! Finding whole JPEG images in a byte stream by walking their markers.
//!
//! Used to split a stream of concatenated JPEGs (what `ffmpeg -f mjpeg` or a
//! USB camera sends) into frames, and to check that a frame is whole: it
//! starts with SOI, has a frame header (SOF) with its size, and ends with
//! EOI. Walking segments instead of searching for `FF D9` copes with embedded
//! thumbnails and progressive scans.

/// What is wrong with bytes that should be a JPEG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("does not start with a JPEG start-of-image marker")]
    NoStart,
    #[error("a marker is broken at byte {0}")]
    BadMarker(usize),
    #[error("the image has no frame header (SOF) before its scan")]
    NoHeader,
    #[error("the image ends before its end-of-image marker")]
    Truncated,
}

/// A whole JPEG found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JpegExtent {
    /// Bytes from SOI through EOI.
    pub len: usize,
    pub width: u32,
    pub height: u32,
}

/// Looks for one whole JPEG at the start of `data`: `Ok(None)` when more
/// bytes are needed to tell.
pub(crate) fn extent(data: &[u8]) -> Result<Option<JpegExtent>, JpegError> {
    if data.len() < 2 {
        return Ok(None);
    }
    if data[..2] != [0xFF, 0xD8] {
        return Err(JpegError::NoStart);
    }
    let mut size: Option<(u32, u32)> = None;
    let mut i = 2;
    loop {
        if i + 2 > data.len() {
            return Ok(None);
        }
        if data[i] != 0xFF {
            return Err(JpegError::BadMarker(i));
        }
        let marker = data[i + 1];
        if marker == 0xFF {
            i += 1; // fill byte
            continue;
        }
        i += 2;
        match marker {
            0xD9 => {
                let (width, height) = size.ok_or(JpegError::NoHeader)?;
                return Ok(Some(JpegExtent {
                    len: i,
                    width,
                    height,
                }));
            }
            0x01 | 0xD0..=0xD7 => continue,
            0xD8 | 0x00 => return Err(JpegError::BadMarker(i - 2)),
            _ => {}
        }
        if i + 2 > data.len() {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
        if len < 2 {
            return Err(JpegError::BadMarker(i));
        }
        if i + len > data.len() {
            return Ok(None);
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the size.
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) && len >= 7 {
            let height = u32::from(u16::from_be_bytes([data[i + 3], data[i + 4]]));
            let width = u32::from(u16::from_be_bytes([data[i + 5], data[i + 6]]));
            if width == 0 || height == 0 {
                return Err(JpegError::NoHeader);
            }
            size = Some((width, height));
        }
        i += len;
        if marker == 0xDA {
            if size.is_none() {
                return Err(JpegError::NoHeader);
            }
            // Entropy-coded data: runs to the next marker that is not a
            // stuffed zero or a restart marker.
            loop {
                let Some(offset) = memchr::memchr(0xFF, &data[i..]) else {
                    return Ok(None);
                };
                let j = i + offset;
                if j + 1 >= data.len() {
                    return Ok(None);
                }
                match data[j + 1] {
                    0x00 | 0xD0..=0xD7 => i = j + 2,
                    0xFF => i = j + 1,
                    _ => {
                        i = j;
                        break;
                    }
                }
            }
        }
    }
}

/// Checks that `data` is exactly one whole JPEG.
pub(crate) fn check_whole(data: &[u8]) -> Result<JpegExtent, JpegError> {
    match extent(data)? {
        Some(found) if found.len == data.len() => Ok(found),
        Some(found) => Err(JpegError::BadMarker(found.len)),
        None => Err(JpegError::Truncated),
    }
}

/// A small JPEG for tests: a pattern that differs with `seed`.
#[cfg(test)]
pub(crate) fn test_jpeg(width: usize, height: usize, progressive: bool, seed: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..width * height * 3)
        .map(|i| ((i + seed) * 7 % 251) as u8)
        .collect();
    let image = turbojpeg::Image {
        pixels: pixels.as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    let mut compressor = turbojpeg::Compressor::new().expect("a compressor");
    compressor.set_quality(80).expect("quality");
    compressor
        .set_progressive(progressive)
        .expect("progressive");
    compressor.compress_to_vec(image).expect("a test JPEG")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(width: usize, height: usize, progressive: bool) -> Vec<u8> {
        test_jpeg(width, height, progressive, 0)
    }

    #[test]
    fn finds_whole_images_of_both_kinds() {
        for progressive in [false, true] {
            let jpeg = sample(64, 48, progressive);
            let found = extent(&jpeg).unwrap().unwrap();
            assert_eq!((found.len, found.width, found.height), (jpeg.len(), 64, 48));
            assert_eq!(check_whole(&jpeg), Ok(found));
        }
    }

    #[test]
    fn splits_a_stream_and_waits_for_more() {
        let a = sample(32, 16, false);
        let b = sample(16, 32, true);
        let stream = [a.clone(), b.clone()].concat();
        let first = extent(&stream).unwrap().unwrap();
        assert_eq!(first.len, a.len());
        let second = extent(&stream[first.len..]).unwrap().unwrap();
        assert_eq!((second.len, second.width), (b.len(), 16));
        for cut in [1, 2, 10, a.len() / 2, a.len() - 1] {
            assert_eq!(extent(&a[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_torn_and_foreign_data() {
        let jpeg = sample(32, 32, false);
        assert_eq!(extent(b"not a jpeg"), Err(JpegError::NoStart));
        assert_eq!(
            check_whole(&jpeg[..jpeg.len() - 2]),
            Err(JpegError::Truncated)
        );
        // A frame whose header was overwritten by garbage.
        let mut broken = jpeg.clone();
        broken[2] = 0x12;
        assert!(matches!(extent(&broken), Err(JpegError::BadMarker(2))));
        // SOI then straight to a scan: no size.
        assert_eq!(
            extent(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2, 0xFF, 0xD9]),
            Err(JpegError::NoHeader)
        );
    }
}
