//! `manifest.jsonl`: one JSON line per file, appended once the file is
//! durable under its final name.
//!
//! Lines are appended whole on an `O_APPEND` file under the file's lock, so
//! lines from several encoders, or from the recorders of other cameras that
//! share the manifest, never interleave: a fragment a crash left is closed
//! off with a newline before the next line, and a line a full disk cut short
//! is truncated away again. With `fsync = true` the manifest is synced at
//! most once a second and at shutdown: a crash can lose its last lines (never
//! the files, which are synced one by one).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The manifest's file name in `output.dir`.
pub(crate) const MANIFEST_NAME: &str = "manifest.jsonl";

/// How often the manifest is synced while recording.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One manifest line (the contract's fields, in this order).
#[derive(Debug, Serialize)]
pub(crate) struct Line<'a> {
    pub seq: u64,
    /// Relative to `output.dir`, with '/' separators.
    pub path: &'a str,
    pub captured_at: Rfc3339,
    pub camera: &'a str,
    pub width: u32,
    pub height: u32,
    pub pixel_format: &'a str,
    pub format: &'a str,
    pub bytes: u64,
    pub dropped_before: u64,
}

/// A time written as RFC 3339 in UTC with nanoseconds, without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rfc3339(pub SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `2026-11-29T10:18:24.014144812Z`, written field by field (chrono's
/// `format` would allocate for each line).
impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use chrono::{Datelike, Timelike};
        let utc: DateTime<Utc> = self.0.into();
        let year = utc.year();
        if (0..=9999).contains(&year) {
            write!(f, "{year:04}")?;
        } else {
            write!(f, "{year:+05}")?;
        }
        write!(
            f,
            "-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            utc.month(),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second(),
            utc.nanosecond() % 1_000_000_000
        )
    }
}

struct State {
    file: File,
    last_sync: Instant,
    dirty: bool,
}

/// The open manifest, shared by the encoder threads.
pub(crate) struct Manifest {
    path: PathBuf,
    fsync: AtomicBool,
    mode: u32,
    state: Mutex<State>,
}

impl Manifest {
    /// Opens (or creates) the manifest for appending, closing off a torn
    /// last line. Returns it with the highest `seq` among its last lines.
    pub(crate) fn open(
        dir: &Path,
        camera: &str,
        fsync: bool,
        mode: u32,
    ) -> io::Result<(Manifest, Option<u64>)> {
        let path = dir.join(MANIFEST_NAME);
        let (file, highest) = open_file(dir, camera, mode)?;
        Ok((
            Manifest {
                path,
                fsync: AtomicBool::new(fsync),
                mode,
                state: Mutex::new(State {
                    file,
                    last_sync: Instant::now(),
                    dirty: false,
                }),
            },
            highest,
        ))
    }

    /// Opens the manifest again, in `dir` made anew (the output directory
    /// was removed while recording); later lines go there.
    pub(crate) fn reopen(&self, dir: &Path, camera: &str) -> io::Result<()> {
        let (file, _) = open_file(dir, camera, self.mode)?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.file = file;
        state.dirty = false;
        Ok(())
    }

    /// Whether lines are synced (a reload may change it).
    pub(crate) fn set_fsync(&self, fsync: bool) {
        self.fsync.store(fsync, Ordering::Relaxed);
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line; `buf` is the caller's reusable scratch buffer.
    pub(crate) fn append(&self, line: &Line<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        serde_json::to_writer(&mut *buf, line).map_err(io::Error::other)?;
        buf.push(b'\n');
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Other recorders (other cameras) may append to the same manifest:
        // each line goes in under the file's lock, after any fragment is
        // closed off, and a line cut short by a full disk is taken back out,
        // so no record is ever glued to another.
        state.file.lock()?;
        let appended = append_whole(&state.file, buf);
        let unlocked = state.file.unlock();
        appended?;
        unlocked?;
        state.dirty = true;
        if self.fsync.load(Ordering::Relaxed) && state.last_sync.elapsed() >= SYNC_EVERY {
            state.file.sync_data()?;
            state.last_sync = Instant::now();
            state.dirty = false;
        }
        Ok(())
    }

    /// Syncs what was appended (at shutdown).
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.dirty && self.fsync.load(Ordering::Relaxed) {
            state.file.sync_data()?;
            state.dirty = false;
        }
        Ok(())
    }
}

/// Opens (or creates) the manifest in `dir` for appending, never through a
/// link, and closes off a torn last line. Returns it with the highest `seq`
/// of `camera` among its last lines.
fn open_file(dir: &Path, camera: &str, mode: u32) -> io::Result<(File, Option<u64>)> {
    let mut file = super::beneath::open_file(
        dir,
        MANIFEST_NAME,
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(mode),
    )?;
    let (highest, torn) = read_tail(&mut file, camera)?;
    if torn {
        file.write_all(b"\n")?;
    }
    Ok((file, highest))
}

/// Writes one whole line (see [`append_whole`] for a line cut short).
fn write_line(file: &File, line: &[u8]) -> io::Result<()> {
    write_counted(file, line).map_err(|(e, _)| e)
}

/// Writes all of `line`; on failure, the error and how much was written.
fn write_counted(file: &File, line: &[u8]) -> Result<(), (io::Error, usize)> {
    let mut written = 0;
    while written < line.len() {
        match rustix::io::write(file, &line[written..]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), written)),
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err((e.into(), written)),
        }
    }
    Ok(())
}

/// Appends `line` whole or not at all (with the file locked by the caller):
/// a fragment left by a crash is closed off first, and a line cut short
/// (a full disk) is truncated away again.
fn append_whole(file: &File, line: &[u8]) -> io::Result<()> {
    if !ends_with_newline(file)? {
        write_line(file, b"\n")?;
    }
    match write_counted(file, line) {
        Ok(()) => Ok(()),
        Err((error, 0)) => Err(error),
        Err((error, written)) => {
            let len = file.metadata()?.len();
            // Locked: nobody appended after the fragment.
            file.set_len(len.saturating_sub(written as u64))?;
            Err(error)
        }
    }
}

/// Whether the file is empty or ends with a newline.
fn ends_with_newline(file: &File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    let n = rustix::io::pread(file, &mut last, len - 1)?;
    Ok(n == 1 && last[0] == b'\n')
}

/// How much of the manifest is read at a time, from the end.
const TAIL_CHUNK: u64 = 64 << 10;

/// Reads the manifest from the end until it has seen lines of `camera` (and
/// one more stretch, for neighbours written out of order): the highest
/// `seq` among them, and whether the file ends without a newline (a line
/// torn by a crash). Other cameras may share the manifest, and write far
/// more than this camera: their lines are read past, however many.
fn read_tail(file: &mut File, camera: &str) -> io::Result<(Option<u64>, bool)> {
    #[derive(serde::Deserialize)]
    struct SeqOnly {
        seq: u64,
        camera: Option<String>,
    }
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((None, false));
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    let torn = last[0] != b'\n';
    let mut highest = None;
    let mut more_after_found = 1;
    let mut end = len;
    let mut chunk = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        chunk.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        // A line cut by the chunk's start is read whole with the next.
        let whole_from = match (start, memchr::memchr(b'\n', &chunk)) {
            (0, _) => 0,
            (_, Some(i)) => i + 1,
            (_, None) => chunk.len(), // a line longer than a chunk: not ours
        };
        let ours = chunk[whole_from..]
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<SeqOnly>(line).ok())
            .filter(|l| l.camera.as_deref().is_none_or(|c| c == camera))
            .map(|l| l.seq)
            .max();
        if highest.is_some() {
            more_after_found -= 1;
        }
        highest = highest.max(ours);
        if highest.is_some() && more_after_found == 0 {
            break;
        }
        if start == 0 {
            break;
        }
        end = if whole_from == chunk.len() {
            start
        } else {
            start + whole_from as u64
        };
    }
    Ok((highest, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, path: &str) -> Line<'_> {
        Line {
            seq,
            path,
            captured_at: Rfc3339(
                SystemTime::UNIX_EPOCH + Duration::new(1_709_618_828, 123_456_789),
            ),
            camera: "cam0",
            width: 4,
            height: 2,
            pixel_format: "rgb",
            format: "png",
            bytes: 99,
            dropped_before: 1,
        }
    }

    #[test]
    fn capture_times_read_as_chrono_writes_them() {
        for (secs, nanos) in [
            (0, 0),
            (1_709_618_828, 123_456_789),
            (1_709_618_828, 5),
            (4_102_444_799, 999_999_999),
            (253_402_300_799, 1),
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            let utc: DateTime<Utc> = t.into();
            let chrono = utc.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
            assert_eq!(Rfc3339(t).to_string(), chrono);
        }
    }

    #[test]
    fn writes_the_contract_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, highest) = Manifest::open(dir.path(), "cam0", true, 0o640).unwrap();
        assert_eq!(highest, None);
        let mut buf = Vec::new();
        manifest
            .append(&line(7, "cam0/a \"b\".png"), &mut buf)
            .unwrap();
        manifest.sync().unwrap();
        let text = std::fs::read_to_string(manifest.path()).unwrap();
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["seq"], 7);
        assert_eq!(value["path"], "cam0/a \"b\".png");
        assert_eq!(value["captured_at"], "2024-03-05T06:07:08.123456789Z");
        assert_eq!(value["dropped_before"], 1);
        for key in [
            "camera",
            "width",
            "height",
            "pixel_format",
            "format",
            "bytes",
        ] {
            assert!(value.get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn closes_a_torn_line_and_finds_the_highest_seq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_NAME);
        std::fs::write(
            &path,
            "{\"seq\":41}\n{\"seq\":40,\"camera\":\"cam0\"}\n{\"seq\":900,\"camera\":\"cam1\"}\n{\"seq\":42,\"pa",
        )
        .unwrap();
        let (manifest, highest) = Manifest::open(dir.path(), "cam0", false, 0o640).unwrap();
        assert_eq!(
            highest,
            Some(41),
            "another camera's numbers or a torn line counted"
        );
        manifest.append(&line(43, "x"), &mut Vec::new()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("{\"seq\":43"), "{text}");
    }

    #[test]
    fn finds_its_numbers_behind_any_amount_of_another_cameras_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MANIFEST_NAME);
        let mut text = String::new();
        for seq in 1..=50 {
            text.push_str(&format!("{{\"seq\":{seq},\"camera\":\"cam0\"}}\n"));
        }
        for seq in 1..=20_000 {
            text.push_str(&format!(
                "{{\"seq\":{seq},\"camera\":\"cam1\",\"path\":\"long enough to fill\"}}\n"
            ));
        }
        std::fs::write(&path, &text).unwrap();
        assert!(text.len() as u64 > 10 * TAIL_CHUNK);
        let (_, highest) = Manifest::open(dir.path(), "cam0", false, 0o640).unwrap();
        assert_eq!(highest, Some(50));
        let (_, highest) = Manifest::open(dir.path(), "cam2", false, 0o640).unwrap();
        assert_eq!(highest, None);
    }

    #[test]
    fn a_line_torn_by_a_full_disk_is_closed_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, _) = Manifest::open(dir.path(), "cam0", false, 0o640).unwrap();
        let mut buf = Vec::new();
        manifest.append(&line(1, "a"), &mut buf).unwrap();
        // What another camera's recorder, sharing the manifest, leaves when
        // it dies in the middle of a line.
        let (other, _) = Manifest::open(dir.path(), "cam1", false, 0o640).unwrap();
        write_line(&other.state.lock().unwrap().file, b"{\"seq\":2,\"pa").unwrap();
        manifest.append(&line(3, "c"), &mut buf).unwrap();
        manifest.append(&line(4, "d"), &mut buf).unwrap();
        let text = std::fs::read_to_string(manifest.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[1], "{\"seq\":2,\"pa");
        for whole in [lines[0], lines[2], lines[3]] {
            serde_json::from_str::<serde_json::Value>(whole).expect(whole);
        }
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// A manifest cut anywhere (a crash mid-write, a full disk) and
            /// opened again: the highest whole line's seq is found, the torn
            /// line is closed off, and every line after it is whole.
            #[test]
            fn reopening_after_any_truncation_keeps_every_whole_line(
                written in 1..40u64,
                cut in any::<prop::sample::Index>(),
                more in 0..5u64,
            ) {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(MANIFEST_NAME);
                let mut buf = Vec::new();
                {
                    let (manifest, _) = Manifest::open(dir.path(), "cam0", false, 0o640).unwrap();
                    for seq in 1..=written {
                        manifest.append(&line(seq, &format!("cam0/{seq}.png")), &mut buf).unwrap();
                    }
                }
                let full = std::fs::read(&path).unwrap();
                let at = cut.index(full.len() + 1);
                std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(at as u64).unwrap();
                // What survives the cut: each line that is whole (its closing
                // brace, if not its newline, is there).
                let kept = &full[..at];
                let whole: Vec<u64> = kept
                    .split(|&b| b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                    .map(|v| v["seq"].as_u64().unwrap())
                    .collect();
                let (manifest, highest) = Manifest::open(dir.path(), "cam0", false, 0o640).unwrap();
                prop_assert_eq!(highest, whole.iter().copied().max());
                let next = highest.unwrap_or(0) + 1;
                for seq in next..next + more {
                    manifest.append(&line(seq, "x"), &mut buf).unwrap();
                }
                drop(manifest);
                let text = std::fs::read_to_string(&path).unwrap();
                prop_assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
                let lines: Vec<&str> = text.lines().collect();
                let broken: Vec<&&str> = lines
                    .iter()
                    .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
                    .collect();
                prop_assert!(broken.len() <= 1, "more than the torn line is broken: {broken:?}");
                if let Some(torn) = broken.first() {
                    // Only the piece the cut left, on a line of its own.
                    prop_assert!(kept.ends_with(torn.as_bytes()), "{torn:?}");
                }
                let seqs: Vec<u64> = lines
                    .iter()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .map(|v| v["seq"].as_u64().unwrap())
                    .collect();
                let expected: Vec<u64> = whole.iter().copied().chain(next..next + more).collect();
                prop_assert_eq!(&seqs, &expected);
                // And the highest seq is found again on the next start.
                let (_, highest) = Manifest::open(dir.path(), "cam0", false, 0o640).unwrap();
                prop_assert_eq!(highest, expected.last().copied());
            }
        }
    }
}
