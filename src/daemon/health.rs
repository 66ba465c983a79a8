//! What systemd sees of a running recorder: `WATCHDOG=1` pings at half the
//! watchdog interval, sent only while the pipeline makes progress, and a
//! one-line `STATUS=` every few seconds. Silent without `NOTIFY_SOCKET`.
//!
//! Progress means: frames were captured within the stall timeout (before the
//! first frame, a camera that is not there yet is waited for, and pings go
//! on), and, while picked frames wait to be written, a file was written
//! within [`WRITE_BOUND`]. A stalled camera or a wedged encoder stops the
//! pings, so systemd restarts the service.

use std::time::{Duration, Instant};

use crate::stats::Stats;

/// How long picked frames may wait with no file written before the
/// encoders count as wedged (a PNG "best" of a large frame takes seconds;
/// nothing sane takes this long).
pub(crate) const WRITE_BOUND: Duration = Duration::from_secs(30);
/// How often the status line is sent.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// The watchdog and status state, driven by the supervisor's loop.
pub(crate) struct Health {
    /// Half the watchdog interval, when systemd asks for pings.
    ping_every: Option<Duration>,
    stall: Duration,
    last_ping: Instant,
    last_status: Instant,
    /// Counters at the last change, and when it was.
    captured: (u64, Instant),
    written: (u64, Instant),
    /// Captured at the last status line, for the rate.
    status_captured: (u64, Instant),
}

impl Health {
    /// For a source that counts as stalled after `stall` without a frame.
    pub(crate) fn new(stall: Duration) -> Health {
        let now = Instant::now();
        Health {
            ping_every: sd_notify::watchdog_enabled().map(|interval| interval / 2),
            stall,
            last_ping: now,
            last_status: now,
            captured: (0, now),
            written: (0, now),
            status_captured: (0, now),
        }
    }

    /// Whether the pipeline is making progress (see the module docs).
    fn progressing(&self, stats: &Stats, now: Instant) -> Result<(), &'static str> {
        let picked = stats.picked.load(std::sync::atomic::Ordering::Relaxed);
        let settled =
            stats.written.load(std::sync::atomic::Ordering::Relaxed) + stats.dropped_total();
        if self.captured.0 > 0 && now.duration_since(self.captured.1) > self.stall {
            return Err("the source sends no frames");
        }
        if picked > settled && now.duration_since(self.written.1) > WRITE_BOUND {
            return Err("frames wait and no file is written");
        }
        Ok(())
    }

    /// Called from the supervisor's loop (every 100 ms or so).
    pub(crate) fn tick(&mut self, stats: &Stats) {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Instant::now();
        let captured = stats.captured.load(Relaxed);
        if captured != self.captured.0 {
            self.captured = (captured, now);
        }
        let written = stats.written.load(Relaxed) + stats.dropped_total();
        if written != self.written.0 {
            self.written = (written, now);
        }
        let state = self.progressing(stats, now);
        if let Some(every) = self.ping_every {
            if state.is_ok() && now.duration_since(self.last_ping) >= every {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                self.last_ping = now;
            }
        }
        if now.duration_since(self.last_status) >= STATUS_EVERY {
            let line = self.status(stats, now, state);
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
            self.last_status = now;
        }
    }

    /// The one-line status.
    fn status(&mut self, stats: &Stats, now: Instant, state: Result<(), &str>) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let captured = stats.captured.load(Relaxed);
        let (before, since) = self.status_captured;
        let secs = now.duration_since(since).as_secs_f64().max(0.001);
        let fps = captured.saturating_sub(before) as f64 / secs;
        self.status_captured = (captured, now);
        let condition = match state {
            Err(problem) => problem,
            Ok(()) if captured == 0 => "waiting for the source",
            Ok(()) => "recording",
        };
        format!(
            "{condition}: {fps:.1} fps, {} files written ({:.1} MiB), {} frames dropped, {} deleted",
            stats.written.load(Relaxed),
            stats.bytes.load(Relaxed) as f64 / (1 << 20) as f64,
            stats.dropped_total(),
            stats.deleted_files.load(Relaxed),
        )
    }
}
