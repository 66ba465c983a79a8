//! Finding whole JPEG images in a byte stream by walking their markers.
//!
//! Used to split a stream of concatenated JPEGs (what `ffmpeg -f mjpeg` or a
//! USB camera sends) into frames, and to check that a frame is whole: it
//! starts with SOI, has a frame header (SOF) with its size, and ends with
//! EOI. Walking segments instead of searching for `FF D9` copes with embedded
//! thumbnails and progressive scans. [`split`] decides, without I/O, what the
//! front of a stream is (a frame, bytes to skip, or too little to tell); the
//! raw source acts on it. A torn frame is skipped up to the next start of
//! image, even when its broken lengths make the walk run on into the frames
//! after it, and a JPEG over the size limit is skipped without being held.

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
    /// Larger than `source.max_frame_bytes`: dropped before it is kept.
    #[error("the JPEG has {bytes} bytes or more, over the {max} of source.max_frame_bytes (raise it if the camera's frames are that large)")]
    TooLarge { bytes: usize, max: usize },
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

/// What to do with the bytes at the front of a stream of concatenated JPEGs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A whole JPEG: a frame.
    Frame(JpegExtent),
    /// Bytes that are not a whole JPEG, or one larger than the limit: skip
    /// them (`len` is never 0).
    Skip { len: usize, why: JpegError },
    /// More bytes are needed to tell.
    More,
}

/// Decides what the front of `data`, the unread part of an MJPEG stream,
/// is: a whole JPEG of at most `max` bytes, bytes to skip up to the next
/// start of image, or too little to tell. Pure; the raw source acts on it.
pub(crate) fn split(data: &[u8], max: usize) -> Step {
    match extent(data) {
        // A torn frame that ran on into a whole one: resynchronise on the
        // first start of image after it.
        Ok(Some(found)) if inner_frame_start(&data[..found.len]).is_some() => Step::Skip {
            len: resync(data, 1),
            why: JpegError::Truncated,
        },
        Ok(Some(found)) if found.len > max => Step::Skip {
            len: found.len,
            why: JpegError::TooLarge {
                bytes: found.len,
                max,
            },
        },
        Ok(Some(found)) => Step::Frame(found),
        // Too large to keep, whole or not: skip to the next start of image
        // (perhaps one inside it: what follows is then skipped as not a JPEG).
        Ok(None) if data.len() > max => Step::Skip {
            len: resync(data, 2),
            why: JpegError::TooLarge {
                bytes: data.len(),
                max,
            },
        },
        Ok(None) => Step::More,
        Err(why) => Step::Skip {
            len: resync(data, usize::from(why != JpegError::NoStart)),
            why,
        },
    }
}

/// [`split`] once the stream has ended, so nothing more will come: bytes
/// that would wait for more are a torn frame, skipped up to the next start
/// of image after them (a torn header's length can claim the frames that
/// follow). `None` once `data` is empty.
pub(crate) fn split_final(data: &[u8], max: usize) -> Option<Step> {
    if data.is_empty() {
        return None;
    }
    Some(match split(data, max) {
        Step::More => Step::Skip {
            len: memchr::memmem::find(&data[1..], &[0xFF, 0xD8, 0xFF])
                .map_or(data.len(), |i| i + 1),
            why: JpegError::Truncated,
        },
        step => step,
    })
}

/// The offset of the next start of image (`FF D8 FF`) at or after `from`;
/// without one, the end of `data` less a trailing piece of a start marker,
/// which the next read may complete.
fn resync(data: &[u8], from: usize) -> usize {
    let from = from.min(data.len());
    match memchr::memmem::find(&data[from..], &[0xFF, 0xD8, 0xFF]) {
        Some(i) => from + i,
        None => {
            let partial = if data.ends_with(&[0xFF, 0xD8]) {
                2
            } else {
                usize::from(data.ends_with(&[0xFF]))
            };
            (data.len() - partial).max(from)
        }
    }
}

/// Where a whole JPEG starts inside `jpeg` (one whole JPEG as [`extent`]
/// found it) and ends at its very end: `jpeg` is then the torn start of one
/// frame whose marker walk ran on into the next frame, and the next frame
/// starts at the offset returned. An embedded thumbnail ends inside its
/// segment, long before the image that holds it, so it never counts.
pub(crate) fn inner_frame_start(jpeg: &[u8]) -> Option<usize> {
    let mut from = 1;
    while let Some(offset) = memchr::memmem::find(&jpeg[from..], &[0xFF, 0xD8, 0xFF]) {
        let start = from + offset;
        if let Ok(Some(inner)) = extent(&jpeg[start..]) {
            if start + inner.len == jpeg.len() {
                return Some(start);
            }
        }
        from = start + 1;
    }
    None
}

/// Whether the JPEG's header holds an Adobe (APP14) segment: its CMYK
/// samples are then stored inverted (as Photoshop, ImageMagick and libjpeg
/// write them).
pub(crate) fn has_adobe_marker(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if matches!(marker, 0xD8 | 0xD9 | 0xDA | 0x01 | 0xD0..=0xD7) {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if marker == 0xEE && jpeg.get(i + 4..i + 9) == Some(&b"Adobe"[..]) {
            return true;
        }
        i += 2 + len;
    }
    false
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
    use proptest::prelude::*;

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

    /// Splits `stream` as the raw source does, reading it in pieces of the
    /// sizes `reads` gives in turn: the frames, and the skips' reasons.
    fn split_all(stream: &[u8], reads: &[usize], max: usize) -> (Vec<Vec<u8>>, Vec<JpegError>) {
        let (mut pending, mut fed, mut frames, mut skips) = (Vec::new(), 0, Vec::new(), Vec::new());
        let largest = reads.iter().max().map_or(0, |&n| n.min(stream.len()));
        let mut reads = reads.iter().cycle();
        loop {
            let step = if fed == stream.len() {
                split_final(&pending, max)
            } else {
                Some(split(&pending, max))
            };
            let Some(step) = step else {
                return (frames, skips);
            };
            match step {
                Step::Frame(found) => {
                    frames.push(pending[..found.len].to_vec());
                    pending.drain(..found.len);
                }
                Step::Skip { len, why } => {
                    assert!(
                        len > 0 && len <= pending.len(),
                        "skip {len} of {}",
                        pending.len()
                    );
                    pending.drain(..len);
                    skips.push(why);
                }
                Step::More => {
                    let n = (*reads.next().unwrap()).min(stream.len() - fed);
                    pending.extend_from_slice(&stream[fed..fed + n]);
                    fed += n;
                }
            }
            assert!(
                pending.len() <= max + largest,
                "the read buffer outgrew the limit"
            );
        }
    }

    #[test]
    fn a_torn_frame_never_swallows_the_next_one() {
        let a = sample(32, 16, false);
        let b = test_jpeg(32, 16, false, 9);
        // Cut `a` two bytes short of the end of a header segment: its length
        // then runs on exactly to `b`'s first marker, a walk that ends at
        // `b`'s end and looks whole.
        let dqt = a.windows(2).position(|w| w == [0xFF, 0xDB]).unwrap();
        let end = dqt + 2 + usize::from(u16::from_be_bytes([a[dqt + 2], a[dqt + 3]]));
        let stream = [&a[..end - 2], &b[..]].concat();
        assert!(matches!(extent(&stream), Ok(Some(found)) if found.len == stream.len()));
        let (frames, skips) = split_all(&stream, &[usize::MAX], 1 << 20);
        assert!(
            frames == [b],
            "frames of {:?} bytes",
            frames.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(skips, [JpegError::Truncated]);
    }

    #[test]
    fn a_frame_over_the_limit_is_skipped_whole_or_not() {
        let small = sample(16, 16, false);
        let big = test_jpeg(256, 256, false, 4);
        let max = small.len() * 2;
        let stream = [&small[..], &big, &small].concat();
        for reads in [usize::MAX, 97] {
            let (frames, skips) = split_all(&stream, &[reads], max);
            assert!(
                frames == [small.clone(), small.clone()],
                "reads of {reads}: {} frames",
                frames.len()
            );
            assert!(
                matches!(skips[0], JpegError::TooLarge { bytes, max: m } if bytes > max && m == max)
            );
        }
    }

    #[test]
    fn finds_the_adobe_marker() {
        let mut adobe = vec![0xFF, 0xD8, 0xFF, 0xEE, 0x00, 0x0E];
        adobe.extend_from_slice(b"Adobe\x00\x64\x00\x00\x00\x00\x02");
        adobe.extend_from_slice(&sample(8, 8, false)[2..]);
        assert!(has_adobe_marker(&adobe));
        assert!(!has_adobe_marker(&sample(8, 8, false)));
    }

    /// Whether `frames` are `wanted` in order, less some of those marked as
    /// allowed to be lost (the same JPEG can be wanted more than once).
    fn kept_in_order(frames: &[Vec<u8>], wanted: &[(Vec<u8>, bool)]) -> bool {
        match (frames.split_first(), wanted.split_first()) {
            (_, None) => frames.is_empty(),
            (None, Some(_)) => wanted.iter().all(|(_, may_be_lost)| *may_be_lost),
            (Some((frame, rest)), Some(((jpeg, may_be_lost), wanted_rest))) => {
                (frame == jpeg && kept_in_order(rest, wanted_rest))
                    || (*may_be_lost && kept_in_order(frames, wanted_rest))
            }
        }
    }

    /// The JPEGs the random streams are made of: two kinds, a few sizes.
    fn stream_jpegs() -> &'static [Vec<u8>] {
        static JPEGS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        JPEGS.get_or_init(|| {
            [
                (16, 16, false),
                (24, 8, true),
                (8, 8, false),
                (40, 24, true),
            ]
            .iter()
            .enumerate()
            .map(|(seed, &(w, h, progressive))| test_jpeg(w, h, progressive, seed * 31))
            .collect()
        })
    }

    /// A piece of an MJPEG stream.
    #[derive(Clone, Debug)]
    enum Piece {
        /// One of the test JPEGs, whole.
        Whole(usize),
        /// The first bytes of one (never all of it).
        Torn(usize, prop::sample::Index),
        /// Bytes that are no JPEG. They hold no end-of-image marker: a torn
        /// scan followed by one is a damaged frame that is whole by its
        /// markers, which no splitter can tell from a good one.
        Garbage(Vec<u8>),
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            3 => (0..4usize).prop_map(Piece::Whole),
            1 => (0..4usize, any::<prop::sample::Index>()).prop_map(|(i, at)| Piece::Torn(i, at)),
            1 => prop::collection::vec(any::<u8>().prop_map(|b| if b == 0xD9 { 0xD8 } else { b }), 1..64)
                .prop_map(Piece::Garbage),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whole JPEGs come out byte for byte and in order, whatever torn
        /// frames and garbage lie between them and however the stream is
        /// read; only one right after such bytes may be lost with them, and
        /// nothing else ever comes out.
        #[test]
        fn splitting_keeps_every_whole_jpeg_and_nothing_else(
            pieces in prop::collection::vec(piece(), 0..12),
            reads in prop::collection::vec(1..300usize, 1..8),
        ) {
            let jpegs = stream_jpegs();
            let mut stream = Vec::new();
            let mut wanted = Vec::new();
            let mut after_bad = false;
            for piece in &pieces {
                match piece {
                    Piece::Whole(i) => {
                        stream.extend_from_slice(&jpegs[*i]);
                        wanted.push((jpegs[*i].clone(), after_bad));
                        after_bad = false;
                    }
                    Piece::Torn(i, at) => {
                        let jpeg = &jpegs[*i];
                        stream.extend_from_slice(&jpeg[..at.index(jpeg.len())]);
                        after_bad = true;
                    }
                    Piece::Garbage(bytes) => {
                        stream.extend_from_slice(bytes);
                        after_bad = true;
                    }
                }
            }
            let (frames, _) = split_all(&stream, &reads, 1 << 20);
            prop_assert!(
                kept_in_order(&frames, &wanted),
                "{} frames came out of {} whole JPEGs: one was lost, or came out that is none of them",
                frames.len(),
                wanted.len()
            );
        }
    }
}
