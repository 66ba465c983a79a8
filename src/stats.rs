//! Counters for the run and one helper per logged event, so every drop is
//! both counted and logged (rate-limited: per-frame problems never flood the
//! log).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Why a frame was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The ring was full.
    Overflow,
    /// The encoder failed on the frame.
    Encode,
    /// The frame was not a whole image (torn MJPEG).
    Corrupt,
    /// Writing the file failed.
    Write,
    /// The disk (or quota) was full.
    DiskFull,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Overflow,
        DropReason::Encode,
        DropReason::Corrupt,
        DropReason::Write,
        DropReason::DiskFull,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Overflow => "overflow",
            DropReason::Encode => "encode",
            DropReason::Corrupt => "corrupt",
            DropReason::Write => "write",
            DropReason::DiskFull => "disk_full",
        }
    }
}

/// Shows an error with its causes: `cannot write X: No space left on device`.
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Lets one log line through per interval and counts the rest.
#[derive(Debug, Default)]
pub struct RateLimit {
    /// Milliseconds since the run started at the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// The interval between two log lines of the same event.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

impl RateLimit {
    /// `Some(lines suppressed since the last one)` when a line may be logged now.
    pub fn allow(&self, now_ms: u64) -> Option<u64> {
        let last = self.last.load(Relaxed);
        let due = last == 0 || now_ms + 1 >= last + LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now_ms + 1, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Upper bounds of the duration histograms' buckets, in seconds.
pub const BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// A duration histogram of atomic counters (one relaxed add per
/// observation, no lock): the encode and write times.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket of [`BUCKETS`], then one for larger values.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// The sum in seconds, the count, and the count in each bucket (not
    /// cumulative), the last one's bound infinite.
    pub fn snapshot(&self) -> (f64, u64, [(f64, u64); BUCKETS.len() + 1]) {
        let mut buckets = [(f64::INFINITY, 0); BUCKETS.len() + 1];
        for (i, bucket) in buckets.iter_mut().enumerate() {
            bucket.0 = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            bucket.1 = self.counts[i].load(Relaxed);
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// The run's counters, shared by every thread.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub captured: AtomicU64,
    pub picked: AtomicU64,
    pub written: AtomicU64,
    pub bytes: AtomicU64,
    pub missed_ticks: AtomicU64,
    /// Stretches of source input skipped as not whole frames.
    pub skipped_input: AtomicU64,
    /// Their bytes.
    pub skipped_bytes: AtomicU64,
    /// Times a camera was lost or stalled and reopened.
    pub reconnects: AtomicU64,
    /// Times a camera sent no frame for the stall timeout.
    pub stalls: AtomicU64,
    dropped: [AtomicU64; 5],
    /// Drops since the last written file (the manifest's `dropped_before`).
    dropped_since_write: AtomicU64,
    limits: [RateLimit; 5],
    pub manifest_failures: AtomicU64,
    manifest_limit: RateLimit,
    /// Files retention deleted to keep the quota, and their bytes.
    pub deleted_files: AtomicU64,
    pub deleted_bytes: AtomicU64,
    /// Deletions that failed (the file stays and counts toward the quota).
    pub delete_failed: AtomicU64,
    /// How long encoding took, per file.
    pub encode_time: Histogram,
    /// How long the durable write took, per file (the manifest line included).
    pub write_time: Histogram,
    /// From the frame's capture time to its file being durable, per file.
    pub latency: Histogram,
    /// The capture time of the newest file written, in nanoseconds since
    /// the Unix epoch (0: none yet).
    pub newest_capture_ns: AtomicU64,
    /// Bytes of framerec's files in the output directory (kept by retention
    /// when a quota is kept).
    pub disk_used: AtomicU64,
    /// The newest file written: its number, path and capture time (ns).
    newest: std::sync::Mutex<(u64, String, u64)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            captured: AtomicU64::new(0),
            picked: AtomicU64::new(0),
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            missed_ticks: AtomicU64::new(0),
            skipped_input: AtomicU64::new(0),
            skipped_bytes: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            dropped: Default::default(),
            dropped_since_write: AtomicU64::new(0),
            limits: Default::default(),
            manifest_failures: AtomicU64::new(0),
            manifest_limit: RateLimit::default(),
            deleted_files: AtomicU64::new(0),
            deleted_bytes: AtomicU64::new(0),
            delete_failed: AtomicU64::new(0),
            encode_time: Histogram::default(),
            write_time: Histogram::default(),
            latency: Histogram::default(),
            newest_capture_ns: AtomicU64::new(0),
            disk_used: AtomicU64::new(0),
            newest: std::sync::Mutex::new((0, String::new(), 0)),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Counts and logs (rate-limited) a lost frame.
    pub fn frame_dropped(&self, reason: DropReason, seq: u64, error: &dyn fmt::Display) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
        self.dropped_since_write.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.limits[reason as usize].allow(self.now_ms()) {
            tracing::warn!(
                seq,
                reason = reason.name(),
                error = %error,
                similar_suppressed = suppressed,
                "frame dropped"
            );
        }
    }

    /// Counts a durable file; returns the frames dropped since the previous one.
    pub fn file_written(&self, seq: u64, path: &std::path::Path, len: u64) -> u64 {
        self.written.fetch_add(1, Relaxed);
        self.bytes.fetch_add(len, Relaxed);
        tracing::trace!(seq, path = %path.display(), bytes = len, "file written");
        self.dropped_since_write.swap(0, Relaxed)
    }

    /// Notes the newest file for `/status` (never waits: if a reader holds
    /// it, this file is skipped; the path's buffer is reused).
    pub fn note_newest(&self, seq: u64, path: &std::path::Path, captured_ns: u64) {
        if let Ok(mut newest) = self.newest.try_lock() {
            if seq > newest.0 {
                newest.0 = seq;
                newest.1.clear();
                newest.1.push_str(&path.to_string_lossy());
                newest.2 = captured_ns;
            }
        }
    }

    /// The newest file: number, path and capture time (RFC 3339, UTC).
    pub fn newest_file(&self) -> Option<(u64, String, String)> {
        let newest = self.newest.lock().unwrap_or_else(|e| e.into_inner());
        let time = chrono::DateTime::from_timestamp_nanos(newest.2 as i64)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        (newest.0 > 0).then(|| (newest.0, newest.1.clone(), time))
    }

    /// Counts and logs (rate-limited) a manifest line that could not be
    /// appended for a file that is on disk.
    pub fn manifest_failed(&self, seq: u64, error: &dyn fmt::Display) {
        self.manifest_failures.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.manifest_limit.allow(self.now_ms()) {
            tracing::warn!(seq, error = %error, similar_suppressed = suppressed, "manifest line lost; the file itself is on disk");
        }
    }

    /// Frames dropped for `reason` so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    /// All frames dropped so far.
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|&r| self.dropped(r)).sum()
    }

    /// A snapshot of the counters for the exit summary.
    pub fn summary(&self) -> Summary {
        Summary {
            captured: self.captured.load(Relaxed),
            picked: self.picked.load(Relaxed),
            written: self.written.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            dropped: DropReason::ALL.map(|r| (r, self.dropped(r))),
            missed_ticks: self.missed_ticks.load(Relaxed),
            skipped_input: self.skipped_input.load(Relaxed),
            skipped_bytes: self.skipped_bytes.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            stalls: self.stalls.load(Relaxed),
            deleted_files: self.deleted_files.load(Relaxed),
            deleted_bytes: self.deleted_bytes.load(Relaxed),
            delete_failed: self.delete_failed.load(Relaxed),
            elapsed: self.started.elapsed(),
        }
    }
}

/// The counters at the end of a run.
#[derive(Clone, Debug)]
pub struct Summary {
    pub captured: u64,
    /// Frames the schedule picked to become files.
    pub picked: u64,
    pub written: u64,
    pub bytes: u64,
    pub dropped: [(DropReason, u64); 5],
    pub missed_ticks: u64,
    pub skipped_input: u64,
    pub skipped_bytes: u64,
    pub reconnects: u64,
    pub stalls: u64,
    pub deleted_files: u64,
    pub deleted_bytes: u64,
    pub delete_failed: u64,
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let total: u64 = self.dropped.iter().map(|(_, n)| n).sum();
        write!(
            f,
            "captured {} frames, picked {}, wrote {} files ({:.1} MiB), dropped {}",
            self.captured,
            self.picked,
            self.written,
            self.bytes as f64 / (1 << 20) as f64,
            total
        )?;
        let reasons: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        write!(f, ", missed ticks {}", self.missed_ticks)?;
        if self.skipped_input > 0 {
            let n = self.skipped_input;
            write!(
                f,
                ", skipped {n} stretch{} of input that {} not a whole frame ({} bytes)",
                if n == 1 { "" } else { "es" },
                if n == 1 { "was" } else { "were" },
                self.skipped_bytes
            )?;
        }
        if self.stalls > 0 {
            write!(f, ", stalls {}", self.stalls)?;
        }
        if self.reconnects > 0 {
            write!(f, ", reconnects {}", self.reconnects)?;
        }
        if self.deleted_files > 0 {
            write!(
                f,
                ", deleted {} old files ({:.1} MiB)",
                self.deleted_files,
                self.deleted_bytes as f64 / (1 << 20) as f64
            )?;
        }
        if self.delete_failed > 0 {
            write!(
                f,
                ", failed to delete {} times (such files stay, counted in the quota)",
                self.delete_failed
            )?;
        }
        write!(
            f,
            " in {secs:.1}s ({:.1} files/s)",
            if secs > 0.0 {
                self.written as f64 / secs
            } else {
                0.0
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_line_through_per_interval() {
        let limit = RateLimit::default();
        assert_eq!(limit.allow(0), Some(0));
        assert_eq!(limit.allow(5), None);
        assert_eq!(limit.allow(9_000), None);
        assert_eq!(limit.allow(10_001), Some(2));
        assert_eq!(limit.allow(10_002), None);
    }

    #[test]
    fn the_histogram_counts_each_value_once_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(6));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0063).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1));
        let at = |bound: f64| buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!(
            (at(0.005), at(0.0075), at(10.0), at(f64::INFINITY)),
            (0, 1, 0, 1)
        );
    }

    #[test]
    fn dropped_before_counts_drops_since_the_last_file() {
        let stats = Stats::new();
        stats.frame_dropped(DropReason::Overflow, 1, &"full");
        stats.frame_dropped(DropReason::DiskFull, 2, &"ENOSPC");
        assert_eq!(stats.file_written(3, "a".as_ref(), 10), 2);
        assert_eq!(stats.file_written(4, "b".as_ref(), 10), 0);
        let summary = stats.summary();
        assert_eq!((summary.written, summary.bytes), (2, 20));
        let text = summary.to_string();
        assert!(
            text.contains("dropped 2 (overflow 1, disk_full 1)"),
            "{text}"
        );
    }
}
