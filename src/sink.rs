//! The sink: the step after encoding, on the same worker thread. It writes
//! an encoded file durably through the [`store`](crate::store) (which also
//! appends its manifest line), asks [`retention`] for
//! room and tries once more when a write finds the disk full and a quota
//! lets files go, and tells retention of every file that became durable.
//!
//! Every failure here costs one frame: it is counted and logged
//! (rate-limited) and the worker goes on.

use crate::encode::Parts;
use crate::frame::{Frame, ImageFormat, WrittenFile};
use crate::retention;
use crate::stats::{Chain, DropReason, Stats};
use crate::store::write::{FileInfo, Writer};
use crate::store::Store;

/// One worker's sink.
pub struct Sink<'a> {
    writer: Writer<'a>,
    stats: &'a Stats,
    /// Present when a quota is kept.
    retention: Option<retention::Handle>,
}

impl<'a> Sink<'a> {
    pub fn new(store: &'a Store, stats: &'a Stats, retention: Option<retention::Handle>) -> Self {
        Sink {
            writer: Writer::new(store),
            stats,
            retention,
        }
    }

    /// Writes `parts` as the file of `frame`: write → room on a full disk
    /// → manifest → retention notice.
    pub fn deliver(&mut self, frame: &Frame, format: ImageFormat, parts: &Parts<'_>) {
        let stats = self.stats;
        let info = FileInfo::of(frame, format);
        let dropped_before = |f: &WrittenFile<'_>| stats.file_written(f.seq, f.path, f.len);
        let started = std::time::Instant::now();
        let mut result = self.writer.write(info, parts, dropped_before);
        if let (Err(e), Some(retention)) = (&result, &self.retention) {
            // A full disk with a quota to keep: make room, try once more.
            let len: usize = parts.iter().map(|p| p.len()).sum();
            if e.is_disk_full() && retention.make_room(len as u64 * 2 + (1 << 20)) {
                result = self.writer.write(info, parts, dropped_before);
            }
        }
        match result {
            Ok((file, manifest_error)) => {
                stats.write_time.observe(started.elapsed());
                if let Ok(age) = std::time::SystemTime::now().duration_since(frame.captured_at) {
                    stats.latency.observe(age);
                }
                let captured_ns = frame
                    .captured_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
                stats
                    .newest_capture_ns
                    .fetch_max(captured_ns, std::sync::atomic::Ordering::Relaxed);
                stats.note_newest(file.seq, file.path, captured_ns);
                if let Some(e) = manifest_error {
                    stats.manifest_failed(file.seq, &Chain(&e));
                }
                if let Some(retention) = &self.retention {
                    retention.written(&file);
                }
            }
            Err(e) => {
                let reason = if e.is_disk_full() {
                    DropReason::DiskFull
                } else {
                    DropReason::Write
                };
                stats.frame_dropped(reason, frame.seq, &Chain(&e));
            }
        }
    }
}
