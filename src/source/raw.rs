//! The raw source: back-to-back raw frames of one size and pixel format from
//! a file or stdin (`path = "-"`), or, with `pixel_format = "mjpeg"`, a stream
//! of concatenated JPEGs (what `ffmpeg -f mjpeg -` writes).
//!
//! Frames are read as fast as the pipeline takes them: from a regular file
//! of fixed-size frames, as views of the file mapped into memory (no copy;
//! see `frame::mapped`), otherwise straight into the ring's buffers. The end of input ends the run (after the pipeline drains). A
//! partial frame at the end, or bytes between JPEGs that are not a JPEG, are
//! counted and skipped, never stored. A JPEG larger than `max_frame_bytes`
//! is skipped as well (the reader resynchronises on the next start of
//! image) and reported as corrupt, so neither the read buffer nor a ring
//! buffer ever grows past that bound.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::frame::mapped::MappedFile;
use crate::frame::{Frame, PixelFormat};

use super::mjpeg::{self, JpegError, Step};
use super::{Captured, SourceError};

/// The pipe buffer asked for when stdin is a pipe (Linux's default limit
/// for unprivileged processes).
const PIPE_SIZE: usize = 1 << 20;
/// How much is read at once from an MJPEG stream.
const CHUNK: usize = 1 << 20;

/// Where raw bytes come from.
enum Input {
    File(File),
    Stdin(io::Stdin),
}

impl Input {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Input::File(f) => f.as_fd(),
            Input::Stdin(s) => s.as_fd(),
        }
    }
}

impl Input {
    /// Reads straight from the file descriptor: std's stdin buffer would hide
    /// bytes from `poll` and add a copy.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(rustix::io::read(self.fd(), buf)?)
    }

    /// Reads into the spare capacity of `buf` (no zero-filling first).
    fn read_into_spare(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        Ok(rustix::io::read(
            self.fd(),
            rustix::buffer::spare_capacity(buf),
        )?)
    }
}

/// The raw source. See the module docs.
pub struct Raw {
    input: Input,
    /// A pipe, socket or terminal: reads can block, so wait with a timeout
    /// that lets a stop through.
    can_block: bool,
    path: PathBuf,
    width: u32,
    height: u32,
    format: PixelFormat,
    /// For MJPEG: the largest JPEG kept; a larger one is skipped.
    max_jpeg: usize,
    /// For MJPEG: bytes read but not yet returned, `pending[start..]`.
    pending: Vec<u8>,
    start: usize,
    eof: bool,
    /// Bytes skipped because they were not part of a whole frame.
    skipped_bytes: u64,
    /// Stretches of such bytes (torn JPEGs, a partial last frame): skips
    /// with no whole frame between them count as one.
    skipped: u64,
    /// The last thing read was skipped: more skipping continues its stretch.
    skipping: bool,
    /// A regular file of fixed-size frames, mapped: frames are handed on
    /// where they are, not copied. Dropped (and the file read from
    /// `offset` on) past what was mapped, or when the file shrinks.
    mapped: Option<Arc<MappedFile>>,
    /// Where the next mapped frame starts.
    offset: usize,
}

impl Raw {
    pub(crate) fn open(
        path: &Path,
        width: u32,
        height: u32,
        format: PixelFormat,
        max_jpeg: usize,
    ) -> Result<Raw, SourceError> {
        let input = if path == Path::new("-") {
            let stdin = io::stdin();
            // A bigger pipe means a frame arrives in a few reads, not a hundred
            // 64 KiB ones. Not a pipe, or not allowed: carry on as it is.
            let _ = rustix::pipe::fcntl_setpipe_size(&stdin, PIPE_SIZE);
            Input::Stdin(stdin)
        } else {
            Input::File(
                open_without_waiting(path).map_err(|source| SourceError::Open {
                    path: path.to_owned(),
                    source,
                })?,
            )
        };
        let can_block = rustix::fs::fstat(input.fd()).map_or(true, |st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        });
        let mapped = match &input {
            Input::File(file) if !can_block && format.frame_len(width, height).is_some() => {
                MappedFile::map(file)
            }
            _ => None,
        };
        Ok(Raw {
            input,
            can_block,
            path: path.to_owned(),
            width,
            height,
            format,
            max_jpeg,
            pending: Vec::new(),
            start: 0,
            eof: false,
            skipped_bytes: 0,
            skipped: 0,
            skipping: false,
            mapped,
            offset: 0,
        })
    }

    /// Stretches of input skipped as not a whole frame, and their bytes.
    pub(crate) fn skipped(&self) -> (u64, u64) {
        (self.skipped, self.skipped_bytes)
    }

    /// Reads the next frame into `frame`. A stop ends a wait for input.
    pub(crate) fn next_frame(
        &mut self,
        frame: &mut Frame,
        stop: &AtomicBool,
    ) -> Result<Captured, SourceError> {
        // The last frame this buffer held may have been a view.
        frame.view = None;
        let captured = match self.format.frame_len(self.width, self.height) {
            Some(len) => self.read_fixed(frame, len, stop)?,
            None => self.read_jpeg(frame, stop)?,
        };
        if captured == Captured::Frame {
            self.skipping = false;
            frame.captured_at = SystemTime::now();
            frame.format = self.format;
        }
        Ok(captured)
    }

    fn read_error(&self, source: io::Error) -> SourceError {
        SourceError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// Waits until input can be read; false if a stop came first.
    fn wait_readable(&self, stop: &AtomicBool) -> bool {
        if !self.can_block {
            return !stop.load(Ordering::Relaxed);
        }
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        loop {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let fd = self.input.fd();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                // Readable, at end, or an error the read itself will report.
                _ => return true,
            }
        }
    }

    fn read_fixed(
        &mut self,
        frame: &mut Frame,
        len: usize,
        stop: &AtomicBool,
    ) -> Result<Captured, SourceError> {
        if let Some(map) = &self.mapped {
            if stop.load(Ordering::Relaxed) {
                return Ok(Captured::End);
            }
            if let Some(view) = map.view(self.offset, len) {
                self.offset += len;
                frame.data.clear();
                frame.view = Some(view);
                frame.width = self.width;
                frame.height = self.height;
                return Ok(Captured::Frame);
            }
            if map.faults() > 0 {
                tracing::warn!(
                    path = %self.path.display(),
                    "the input file shrank, or part of it could not be read, while it was mapped (truncated by another program?); frames read from it meanwhile are dropped, and it is read from here on"
                );
            }
            // Past what was mapped, or the file shrank: read what is
            // there from here on (a partial frame, more frames written
            // since, or the end).
            self.mapped = None;
            let at = rustix::fs::SeekFrom::Start(self.offset as u64);
            rustix::fs::seek(self.input.fd(), at).map_err(|e| self.read_error(e.into()))?;
        }
        frame.data.resize(len, 0);
        let mut filled = 0;
        while filled < len {
            if !self.wait_readable(stop) {
                if filled > 0 {
                    self.skipped += 1;
                    self.skipped_bytes += filled as u64;
                }
                return Ok(Captured::End);
            }
            match self.input.read(&mut frame.data[filled..len]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            }
        }
        if filled == 0 {
            return Ok(Captured::End);
        }
        if filled < len {
            self.skipped += 1;
            self.skipped_bytes += filled as u64;
            tracing::warn!(
                path = %self.path.display(),
                bytes = filled,
                frame_bytes = len,
                "the input ends inside a frame; the partial frame is skipped (check width, height and pixel_format)"
            );
            return Ok(Captured::End);
        }
        frame.width = self.width;
        frame.height = self.height;
        Ok(Captured::Frame)
    }

    /// Reads more input into `pending`; false at end of input or on a stop.
    fn fill(&mut self, stop: &AtomicBool) -> Result<bool, SourceError> {
        if self.eof || !self.wait_readable(stop) {
            return Ok(false);
        }
        if self.start > 0 && self.start >= self.pending.len() / 2 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        self.pending.reserve(CHUNK);
        loop {
            match self.input.read_into_spare(&mut self.pending) {
                Ok(n) => {
                    if n == 0 {
                        self.eof = true;
                    }
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    fn skip(&mut self, bytes: usize, why: JpegError) {
        if !self.skipping {
            self.skipped += 1;
            self.skipping = true;
        }
        self.skipped_bytes += bytes as u64;
        tracing::debug!(bytes, error = %why, "skipping bytes that are not a whole JPEG");
        self.start += bytes;
    }

    fn read_jpeg(&mut self, frame: &mut Frame, stop: &AtomicBool) -> Result<Captured, SourceError> {
        loop {
            let data = &self.pending[self.start..];
            let step = if self.eof {
                let Some(step) = mjpeg::split_final(data, self.max_jpeg) else {
                    return Ok(Captured::End);
                };
                if matches!(step, Step::Skip { len, .. } if len == data.len())
                    && data.starts_with(&[0xFF, 0xD8])
                {
                    tracing::warn!(
                        path = %self.path.display(),
                        bytes = data.len(),
                        "the input ends inside a JPEG; the torn frame is skipped"
                    );
                }
                step
            } else {
                mjpeg::split(data, self.max_jpeg)
            };
            match step {
                Step::Frame(found) => {
                    frame.data.clear();
                    frame.data.extend_from_slice(&data[..found.len]);
                    frame.width = found.width;
                    frame.height = found.height;
                    self.start += found.len;
                    return Ok(Captured::Frame);
                }
                Step::Skip { len, why } => {
                    self.skip(len, why);
                    if let JpegError::TooLarge { .. } = why {
                        return Ok(Captured::Corrupt(why));
                    }
                }
                Step::More => {
                    if !self.fill(stop)? && !self.eof {
                        // Stopped: what is left is not a frame.
                        let rest = self.pending.len() - self.start;
                        if rest > 0 {
                            self.skip(rest, JpegError::Truncated);
                        }
                        return Ok(Captured::End);
                    }
                }
            }
        }
    }
}

/// Opens `path` for reading without waiting in `open` itself: a FIFO with
/// no writer yet would block there, deaf to a stop. The reads that follow
/// wait in `poll`, which a stop gets through (and which waits for a FIFO's
/// first writer).
fn open_without_waiting(path: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMIT: usize = 1 << 20;

    fn jpeg(width: usize, height: usize, seed: usize) -> Vec<u8> {
        super::mjpeg::test_jpeg(width, height, false, seed)
    }

    fn read_all(raw: &mut Raw) -> Vec<Frame> {
        read_all_counting(raw).0
    }

    /// The frames read, and the reasons of the frames dropped as corrupt.
    fn read_all_counting(raw: &mut Raw) -> (Vec<Frame>, Vec<JpegError>) {
        let (mut frames, mut corrupt) = (Vec::new(), Vec::new());
        loop {
            let mut frame = Frame::with_capacity(0);
            match raw.next_frame(&mut frame, &AtomicBool::new(false)).unwrap() {
                Captured::Frame => frames.push(frame),
                Captured::Corrupt(why) => corrupt.push(why),
                Captured::End => return (frames, corrupt),
            }
        }
    }

    #[test]
    fn reads_fixed_frames_and_skips_a_partial_tail() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..(4 * 2 * 3 * 2 + 5)).map(|i| i as u8).collect();
        file.write_all(&data).unwrap();
        let mut raw = Raw::open(file.path(), 4, 2, PixelFormat::Rgb, LIMIT).unwrap();
        let frames = read_all(&mut raw);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].bytes(), &data[24..48]);
        assert_eq!(raw.skipped(), (1, 5));
    }

    /// `count` RGB frames of `width`×`height`, each byte naming its frame.
    fn rgb_frames(width: u32, height: u32, from: u8, count: u8) -> Vec<u8> {
        let len = (width * height * 3) as usize;
        (from..from + count).flat_map(|k| vec![k; len]).collect()
    }

    /// A file of `count` RGB frames (from 1), opened as a raw source.
    fn rgb_file(width: u32, height: u32, count: u8) -> (tempfile::NamedTempFile, Raw) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&rgb_frames(width, height, 1, count))
            .unwrap();
        file.flush().unwrap();
        let raw = Raw::open(file.path(), width, height, PixelFormat::Rgb, LIMIT).unwrap();
        (file, raw)
    }

    #[test]
    fn a_regular_file_is_mapped_and_frames_written_after_are_read_too() {
        let (mut file, mut raw) = rgb_file(64, 32, 2);
        assert!(
            raw.mapped.is_some(),
            "a regular file of raw frames is mapped"
        );
        let mut first = Frame::with_capacity(0);
        raw.next_frame(&mut first, &AtomicBool::new(false)).unwrap();
        assert!(
            first.view.is_some(),
            "the frame is where it was, not copied"
        );
        // More frames arrive after the file was mapped.
        file.write_all(&rgb_frames(64, 32, 3, 2)).unwrap();
        file.flush().unwrap();
        let rest = read_all(&mut raw);
        let firsts: Vec<u8> = std::iter::once(&first)
            .chain(&rest)
            .map(|f| {
                assert_eq!(f.bytes().len(), 64 * 32 * 3);
                assert!(f.bytes().iter().all(|&b| b == f.bytes()[0]), "a torn frame");
                f.bytes()[0]
            })
            .collect();
        assert_eq!(firsts, [1, 2, 3, 4]);
        assert_eq!(raw.skipped(), (0, 0));
    }

    #[test]
    fn a_mapped_file_that_shrinks_gives_no_frame_of_zeros() {
        let (file, mut raw) = rgb_file(256, 64, 6);
        let stop = AtomicBool::new(false);
        let mut first = Frame::with_capacity(0);
        raw.next_frame(&mut first, &stop).unwrap();
        let mut second = Frame::with_capacity(0);
        raw.next_frame(&mut second, &stop).unwrap();
        // Another program cuts the file to one frame.
        file.as_file().set_len(256 * 64 * 3).unwrap();
        assert_eq!(first.bytes()[0], 1);
        // The second frame's pages are gone: read as zeros (not a SIGBUS),
        // and the frame says it cannot be trusted.
        assert!(second.bytes().iter().all(|&b| b == 0));
        assert!(second.damaged());
        // Nothing more comes from the file, and capture goes on to the end.
        let mut next = Frame::with_capacity(0);
        assert_eq!(raw.next_frame(&mut next, &stop).unwrap(), Captured::End);
    }

    #[test]
    fn splits_concatenated_jpegs_and_skips_torn_ones() {
        let (a, b, c) = (jpeg(32, 16, 10), jpeg(32, 16, 200), jpeg(16, 16, 90));
        let torn = &b[..b.len() / 2];
        let stream = [&a[..], torn, b"garbage", &c[..], &b[..]].concat();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&stream).unwrap();
        let mut raw = Raw::open(file.path(), 0, 0, PixelFormat::Mjpeg, LIMIT).unwrap();
        let frames = read_all(&mut raw);
        let got: Vec<&[u8]> = frames.iter().map(|f| f.data.as_slice()).collect();
        assert_eq!(got, [&a[..], &c[..], &b[..]]);
        assert_eq!((frames[1].width, frames[1].height), (16, 16));
        assert!(raw.skipped().0 >= 1);
    }

    #[test]
    fn one_long_stretch_of_garbage_counts_once() {
        let (a, b) = (jpeg(32, 16, 10), jpeg(32, 16, 200));
        // Several read chunks of bytes that hold no JPEG at all.
        let garbage = vec![0x55u8; 5 * CHUNK + 7];
        let stream = [&a[..], &garbage, &b[..], b"tail"].concat();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&stream).unwrap();
        let mut raw = Raw::open(file.path(), 0, 0, PixelFormat::Mjpeg, LIMIT).unwrap();
        assert_eq!(read_all(&mut raw).len(), 2);
        assert_eq!(raw.skipped(), (2, garbage.len() as u64 + 4));
    }

    #[test]
    fn a_jpeg_over_the_limit_is_dropped_as_corrupt_and_skipped() {
        let (a, b) = (jpeg(32, 16, 10), jpeg(16, 16, 90));
        // Far over the limit: several reads' worth.
        let big = jpeg(2048, 1536, 7);
        let limit = 64 << 10;
        assert!(big.len() > 2 * CHUNK && a.len() < limit);
        let stream = [&a[..], &big, &b, &big[..big.len() / 2], &a].concat();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&stream).unwrap();
        let mut raw = Raw::open(file.path(), 0, 0, PixelFormat::Mjpeg, limit).unwrap();
        let (frames, corrupt) = read_all_counting(&mut raw);
        let got: Vec<&[u8]> = frames.iter().map(|f| f.data.as_slice()).collect();
        assert_eq!(got, [&a[..], &b[..], &a[..]]);
        assert_eq!(corrupt.len(), 2, "{corrupt:?}");
        for why in corrupt {
            assert!(
                matches!(why, JpegError::TooLarge { bytes, max } if bytes > limit && max == limit)
            );
            assert!(why.to_string().contains("source.max_frame_bytes"), "{why}");
        }
        // Both big JPEGs were skipped input, and nothing was read far past
        // the limit to find that out.
        let (stretches, bytes) = raw.skipped();
        assert_eq!(stretches, 2);
        assert_eq!(bytes, (big.len() + big.len() / 2) as u64);
        assert!(
            raw.pending.capacity() <= 2 * (limit + CHUNK),
            "{}",
            raw.pending.capacity()
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Raw::open(
            Path::new("/nonexistent/frames.rgb"),
            4,
            4,
            PixelFormat::Rgb,
            LIMIT,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/frames.rgb"), "{err}");
    }
}
