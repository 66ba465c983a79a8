//! What systemd and `/healthz` see of a running recorder: `WATCHDOG=1`
//! pings at half the watchdog interval, sent only while the pipeline makes
//! progress, a one-line `STATUS=` every few seconds (both silent without
//! `NOTIFY_SOCKET`), and the [`Condition`] the HTTP endpoints report.
//!
//! Progress means: frames were captured within the stall timeout (before the
//! first frame, a camera that is not there yet is waited for, and pings go
//! on), and, while picked frames wait to be written, a file was written
//! within `output.write_timeout` (30 s by default). A stalled camera or a wedged encoder stops the
//! pings, so systemd restarts the service. `/healthz` also turns 503 when
//! the disk was full within the last [`DISK_FULL_BOUND`], or when writes
//! fail and no file was written within the write timeout; those are not a
//! reason for a restart (a restart frees no disk), so pings go on.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::Condition;
use crate::stats::{DropReason, Stats};

/// How long a frame lost to a full disk keeps `/healthz` at 503.
pub(crate) const DISK_FULL_BOUND: Duration = Duration::from_secs(60);
/// How often the status line is sent.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// A counter and when it last changed.
#[derive(Clone, Copy, Debug)]
struct Seen {
    value: u64,
    at: Instant,
}

impl Seen {
    fn new(now: Instant) -> Seen {
        Seen { value: 0, at: now }
    }

    fn update(&mut self, value: u64, now: Instant) {
        if value != self.value {
            *self = Seen { value, at: now };
        }
    }

    fn within(&self, bound: Duration, now: Instant) -> bool {
        self.value > 0 && now.duration_since(self.at) <= bound
    }
}

/// The watchdog and status state, driven by the supervisor's loop.
pub(crate) struct Health<'a> {
    /// Half the watchdog interval, when systemd asks for pings.
    ping_every: Option<Duration>,
    /// The source's stall timeout (a reload may change it).
    pub(crate) stall: Duration,
    /// `output.write_timeout` (a reload may change it).
    pub(crate) write_bound: Duration,
    last_ping: Instant,
    last_status: Instant,
    captured: Seen,
    /// Frames the writers are done with: written, or dropped by them (a
    /// frame the ring let go when full is no sign of a writer at work).
    settled: Seen,
    written: Seen,
    write_failures: Seen,
    disk_full: Seen,
    /// Captured at the last status line, for the rate.
    status_captured: (u64, Instant),
    /// Shared with the HTTP endpoints, when they are on.
    condition: Option<&'a Mutex<Condition>>,
    started: Instant,
    /// The output directory, for the free space in the status line.
    dir: &'a std::path::Path,
}

impl<'a> Health<'a> {
    /// For a source that counts as stalled after `stall` without a frame.
    pub(crate) fn new(
        stall: Duration,
        write_bound: Duration,
        condition: Option<&'a Mutex<Condition>>,
        dir: &'a std::path::Path,
    ) -> Health<'a> {
        let now = Instant::now();
        Health {
            ping_every: sd_notify::watchdog_enabled().map(|interval| interval / 2),
            stall,
            write_bound,
            last_ping: now,
            last_status: now,
            captured: Seen::new(now),
            settled: Seen::new(now),
            written: Seen::new(now),
            write_failures: Seen::new(now),
            disk_full: Seen::new(now),
            status_captured: (0, now),
            condition,
            dir,
            started: now,
        }
    }

    /// Whether the pipeline is making progress (see the module docs): the
    /// problem that should stop the watchdog, if any.
    fn progressing(&self, stats: &Stats, now: Instant) -> Result<(), &'static str> {
        let picked = stats.picked.load(Relaxed);
        let settled = stats.written.load(Relaxed) + stats.dropped_total();
        if self.captured.value > 0 && now.duration_since(self.captured.at) > self.stall {
            return Err("the source sends no frames");
        }
        if picked > settled && now.duration_since(self.settled.at) > self.write_bound {
            return Err("frames wait and no file is written");
        }
        Ok(())
    }

    /// Problems that `/healthz` reports but the watchdog does not act on (a
    /// restart would not help): no frame yet long after the start (a camera
    /// that is not there: waited for, but worth an alert), the disk.
    fn reported(&self, now: Instant) -> Result<(), &'static str> {
        if self.captured.value == 0 && now.duration_since(self.started) > self.stall {
            return Err("no frame from the source yet");
        }
        if self.disk_full.within(DISK_FULL_BOUND, now) {
            return Err("the disk is full: frames are lost");
        }
        let writing = self.written.within(self.write_bound, now);
        if self.write_failures.within(self.write_bound, now) && !writing {
            return Err("files cannot be written");
        }
        Ok(())
    }

    /// Called from the supervisor's loop (every 100 ms or so).
    pub(crate) fn tick(&mut self, stats: &Stats) {
        let now = Instant::now();
        self.captured.update(stats.captured.load(Relaxed), now);
        let written = stats.written.load(Relaxed);
        let by_writers = stats.dropped_total() - stats.dropped(DropReason::Overflow);
        self.settled.update(written + by_writers, now);
        self.written.update(written, now);
        self.write_failures
            .update(stats.dropped(DropReason::Write), now);
        self.disk_full
            .update(stats.dropped(DropReason::DiskFull), now);
        let state = self.progressing(stats, now);
        if let Some(every) = self.ping_every {
            if state.is_ok() && now.duration_since(self.last_ping) >= every {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                self.last_ping = now;
            }
        }
        let state = state.and_then(|()| self.reported(now));
        if let Some(condition) = self.condition {
            let mut c = condition.lock().unwrap_or_else(|e| e.into_inner());
            c.problem = state.err().map(str::to_owned);
            c.state.clear();
            c.state.push_str(self.condition_word(state));
            c.camera_up = self.captured.within(self.stall, now);
        }
        if now.duration_since(self.last_status) >= STATUS_EVERY {
            let line = self.status(stats, now, state);
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            self.last_status = now;
        }
    }

    fn condition_word(&self, state: Result<(), &'static str>) -> &'static str {
        match state {
            Err("no frame from the source yet") => "waiting for the source",
            Err(problem) => problem,
            Ok(()) if self.captured.value == 0 => "waiting for the source",
            Ok(()) => "recording",
        }
    }

    /// The one-line status.
    fn status(&mut self, stats: &Stats, now: Instant, state: Result<(), &'static str>) -> String {
        let captured = stats.captured.load(Relaxed);
        let (before, since) = self.status_captured;
        let secs = now.duration_since(since).as_secs_f64().max(0.001);
        let fps = captured.saturating_sub(before) as f64 / secs;
        self.status_captured = (captured, now);
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        let mut line = format!(
            "{}: {fps:.1} fps, {} files written ({:.1} MiB), {} frames dropped, {} deleted",
            self.condition_word(state),
            stats.written.load(Relaxed),
            mib(stats.bytes.load(Relaxed)),
            stats.dropped_total(),
            stats.deleted_files.load(Relaxed),
        );
        let used = stats.disk_used.load(Relaxed);
        if used > 0 {
            line.push_str(&format!(", {:.1} MiB kept", mib(used)));
        }
        if let Some(space) = crate::retention::space_of(self.dir) {
            line.push_str(&format!(", {:.1} GiB free", mib(space.available) / 1024.0));
        }
        line
    }
}
