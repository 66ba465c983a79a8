//! The capture thread: source → schedule → numbering → ring.
//!
//! It fills the buffer it holds from the source, asks the schedule whether
//! the frame (or the one held back before it) becomes a snapshot, gives each
//! picked frame the next sequence number and pushes it into the ring, taking
//! a free buffer back. It never waits on the disk (unless the ring's policy
//! is `block`, for files), and with `--frames N` it stops picking once N
//! files are written or on their way. Returning drops the producer, which
//! closes the ring: the encoders drain it and exit.
//!
//! A reload may give it a new schedule (applied from the next frame) or new
//! source options: then the source is closed and the new one opened on this
//! thread, while the ring, the encoders and the numbering go on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crossbeam_channel::Sender;

use crate::frame::{Frame, ImageFormat};
use crate::live::Live;
use crate::ring::{Producer, Pushed};
use crate::schedule::{Every, Schedule};
use crate::source::{self, Captured, Source, SourceError};
use crate::stats::{DropReason, Stats};

/// Flags the supervisor and the recording threads share.
#[derive(Debug, Default)]
pub struct Flags {
    /// Capture must stop (then the pipeline drains). Set it with
    /// [`Flags::request_stop`], which also ends a wait for the source.
    pub stop: AtomicBool,
    /// Ends a wait for the source early: a stop, or new source options.
    pub wake: AtomicBool,
    /// A thread panicked or the source failed: the run ends with an error.
    pub failed: AtomicBool,
    /// Keep the next frame (USR1).
    pub snapshot: AtomicBool,
    /// The source is open (a camera may still be looked for).
    pub opened: AtomicBool,
}

impl Flags {
    /// Asks capture to stop, interrupting a wait for the source.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.store(true, Ordering::SeqCst);
    }
}

/// Who waits to learn the number of a snapshot asked for (`POST /snapshot`).
#[derive(Debug, Default)]
pub struct Snapshots {
    waiters: Mutex<Vec<Sender<u64>>>,
}

impl Snapshots {
    /// Asks for a snapshot of the next frame; `reply` gets its number.
    pub fn request(&self, flags: &Flags, reply: Sender<u64>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.push(reply);
        // Under the lock: capture takes the flag and the waiters together.
        flags.snapshot.store(true, Ordering::SeqCst);
    }

    /// A snapshot was asked for (USR1 or `POST /snapshot`): clears the
    /// request and returns who waits for its number (capture thread).
    fn take(&self, flags: &Flags) -> Option<Vec<Sender<u64>>> {
        if !flags.snapshot.load(Ordering::Relaxed) {
            return None;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        flags.snapshot.store(false, Ordering::SeqCst);
        Some(std::mem::take(&mut *waiters))
    }
}

/// The newest frame, for `GET /snapshot.jpg`: the capture thread copies a
/// frame in now and then (every [`Preview::IDLE`], or [`Preview::WATCHED`]
/// while someone looks), never waiting: if a reader holds it, the copy is
/// skipped. One copy at those rates is all it costs.
#[derive(Debug)]
pub struct Preview {
    pub frame: Mutex<Option<Frame>>,
    /// Capture time of the last copy, ns since the epoch.
    copied_ns: AtomicU64,
    /// Someone asked for the preview until then (ns since the epoch).
    watched_until_ns: AtomicU64,
}

impl Default for Preview {
    fn default() -> Self {
        Preview {
            frame: Mutex::new(None),
            copied_ns: AtomicU64::new(0),
            watched_until_ns: AtomicU64::new(0),
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

impl Preview {
    /// The copy interval when nobody looks.
    pub const IDLE: Duration = Duration::from_secs(2);
    /// The copy interval while someone looks.
    pub const WATCHED: Duration = Duration::from_millis(100);

    /// Someone looks: copy more often for the next 10 s.
    pub fn watched(&self) {
        let until = epoch_ns(SystemTime::now()) + 10_000_000_000;
        self.watched_until_ns.fetch_max(until, Ordering::Relaxed);
    }

    /// Copies `frame` in if it is time to (capture thread).
    fn offer(&self, frame: &Frame) {
        let at = epoch_ns(frame.captured_at);
        let last = self.copied_ns.load(Ordering::Relaxed);
        let every = if at < self.watched_until_ns.load(Ordering::Relaxed) {
            Self::WATCHED
        } else {
            Self::IDLE
        };
        if at >= last && at - last < every.as_nanos() as u64 {
            return;
        }
        // Read from a mapped file that shrank: not shown, the last good
        // frame stays.
        if frame.damaged() {
            return;
        }
        let Ok(mut slot) = self.frame.try_lock() else {
            return;
        };
        let copy = slot.get_or_insert_with(|| Frame::with_capacity(frame.bytes().len()));
        copy.seq = frame.seq;
        copy.captured_at = frame.captured_at;
        (copy.width, copy.height, copy.format) = (frame.width, frame.height, frame.format);
        copy.data.clear();
        copy.data.extend_from_slice(frame.bytes());
        // It shrank during the copy (rare): nothing rather than that.
        if frame.damaged() {
            *slot = None;
            return;
        }
        self.copied_ns.store(at, Ordering::Relaxed);
    }
}

/// Opens a source from its options, for files of the given format.
pub type Opener<'a> =
    &'a (dyn Fn(&source::Options, ImageFormat) -> Result<Source, SourceError> + Sync);

/// What a reload may change for the capture thread.
#[derive(Clone, Copy)]
pub struct Reloadable<'a> {
    /// The source's options and the output format (which decides the
    /// camera formats usable).
    pub source: &'a Live<(source::Options, ImageFormat)>,
    pub every: &'a Live<Every>,
    /// Opens a source; called on this thread.
    pub open: Opener<'a>,
}

/// The capture thread's state.
pub struct Capture<'a> {
    pub reloadable: Reloadable<'a>,
    pub producer: Producer,
    /// With `[http]`: the newest frame kept for `/snapshot.jpg`.
    pub preview: Option<&'a Preview>,
    /// Waiting for the numbers of snapshots asked for.
    pub snapshots: &'a Snapshots,
    pub stats: &'a Stats,
    pub flags: &'a Flags,
    /// The number the next picked frame gets.
    pub next_seq: u64,
    /// `--frames N`: stop once N files are written.
    pub frames_limit: Option<u64>,
}

/// A source's counters: skipped stretches and bytes, reconnects and stalls.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    skipped: (u64, u64),
    reconnects: (u64, u64),
}

impl Counts {
    fn add(&mut self, source: &Source) {
        let (stretches, bytes) = source.skipped();
        let (reconnects, stalls) = source.reconnects();
        self.skipped.0 += stretches;
        self.skipped.1 += bytes;
        self.reconnects.0 += reconnects;
        self.reconnects.1 += stalls;
    }
}

impl Capture<'_> {
    /// Opens the source, then captures until stopped or the source ends;
    /// returning closes the ring.
    pub fn run(mut self) -> Result<(), SourceError> {
        let reloadable = self.reloadable;
        let ((options, format), mut source_seen) = reloadable.source.get();
        let (every, mut every_seen) = reloadable.every.get();
        let mut schedule = Schedule::new(every);
        let mut source = (reloadable.open)(&options, format)?;
        self.flags.opened.store(true, Ordering::SeqCst);
        // Counters of the sources closed by reloads.
        let mut closed = Counts::default();
        let mut current = self.producer.take_buffer();
        let mut held: Option<Frame> = None;
        let result = loop {
            if self.flags.stop.load(Ordering::Relaxed) || !self.wait_for_budget() {
                break Ok(());
            }
            self.flags.wake.store(false, Ordering::SeqCst);
            if let Some(every) = reloadable.every.changed(&mut every_seen) {
                schedule = Schedule::new(every);
                // A frame held back for the old schedule is let go.
                if let Some(frame) = held.take() {
                    self.producer.recycle(frame);
                }
            }
            if let Some((options, format)) = reloadable.source.changed(&mut source_seen) {
                match (reloadable.open)(&options, format) {
                    Ok(new) => {
                        closed.add(&source);
                        // The old one is closed first (a camera's device may
                        // be the same); the new camera is opened on its
                        // first frame.
                        drop(std::mem::replace(&mut source, new));
                        tracing::info!(
                            source = options.kind.name(),
                            "the source was restarted with the new settings"
                        );
                    }
                    Err(e) => tracing::error!(
                        error = %crate::stats::Chain(&e),
                        "cannot open the source with the new settings; the old one goes on"
                    ),
                }
            }
            let got = source.next_frame(&mut current, &self.flags.wake);
            self.publish(&source, &closed);
            // A wait cut short for new source options is no end.
            let restarting = || {
                self.flags.wake.load(Ordering::SeqCst) && !self.flags.stop.load(Ordering::SeqCst)
            };
            match got {
                Ok(Captured::Frame) => {}
                Ok(Captured::End) if restarting() => continue,
                Ok(Captured::End) => break Ok(()),
                Ok(Captured::Corrupt(e)) => {
                    self.stats.captured.fetch_add(1, Ordering::Relaxed);
                    self.stats.frame_dropped(DropReason::Corrupt, 0, &e);
                    continue;
                }
                Err(e) if restarting() => {
                    tracing::debug!(error = %crate::stats::Chain(&e), "the source failed as it was restarted");
                    continue;
                }
                Err(e) => {
                    self.flags.failed.store(true, Ordering::SeqCst);
                    break Err(e);
                }
            }
            self.stats.captured.fetch_add(1, Ordering::Relaxed);
            if let Some(preview) = self.preview {
                preview.offer(&current);
            }
            let asked = self.snapshots.take(self.flags);
            if asked.is_some() {
                schedule.request();
            }
            let pick = schedule.offer(current.captured_at, held.as_ref().map(|h| h.captured_at));
            if pick.missed > 0 {
                self.stats
                    .missed_ticks
                    .fetch_add(pick.missed, Ordering::Relaxed);
            }
            if pick.held {
                if let Some(frame) = held.take() {
                    let back = self.push(frame);
                    self.producer.recycle(back);
                }
            }
            if pick.current {
                let before = self.next_seq;
                current = self.push(current);
                // A frame still held back was not picked: its buffer goes
                // back to the ring (every buffer must, or capture runs dry).
                if let Some(frame) = held.take() {
                    self.producer.recycle(frame);
                }
                if let Some(waiters) = asked.filter(|_| self.next_seq != before) {
                    for waiter in waiters {
                        let _ = waiter.try_send(before);
                    }
                }
            } else if schedule.holds_frames() {
                // The current frame waits for the next one; the frame it
                // replaces (never picked) becomes the next buffer.
                let replaced = held.replace(current);
                current = replaced.unwrap_or_else(|| self.producer.take_buffer());
            }
        };
        self.publish(&source, &closed);
        result
    }

    /// Copies the source's own counters (plus those of sources closed by
    /// reloads) into the run's.
    fn publish(&self, source: &Source, closed: &Counts) {
        let mut now = *closed;
        now.add(source);
        let stats = self.stats;
        stats.skipped_input.store(now.skipped.0, Ordering::Relaxed);
        stats.skipped_bytes.store(now.skipped.1, Ordering::Relaxed);
        stats.reconnects.store(now.reconnects.0, Ordering::Relaxed);
        stats.stalls.store(now.reconnects.1, Ordering::Relaxed);
    }

    /// With `--frames N`: waits while N files are written or on their way;
    /// false once N are written (the run is done).
    fn wait_for_budget(&self) -> bool {
        let Some(limit) = self.frames_limit else {
            return true;
        };
        loop {
            if self.stats.written.load(Ordering::Relaxed) >= limit {
                return false;
            }
            let alive = self
                .stats
                .picked
                .load(Ordering::Relaxed)
                .saturating_sub(self.stats.dropped_total());
            if alive < limit {
                return true;
            }
            if self.flags.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Numbers `frame` and queues it; returns an empty buffer to reuse.
    fn push(&mut self, mut frame: Frame) -> Frame {
        if let Some(limit) = self.frames_limit {
            if self
                .stats
                .picked
                .load(Ordering::Relaxed)
                .saturating_sub(self.stats.dropped_total())
                >= limit
            {
                return frame;
            }
        }
        let Some(after) = self.next_seq.checked_add(1) else {
            tracing::error!("sequence numbers are exhausted; stopping");
            self.flags.failed.store(true, Ordering::SeqCst);
            self.flags.request_stop();
            return frame;
        };
        frame.seq = self.next_seq;
        self.next_seq = after;
        self.stats.picked.fetch_add(1, Ordering::Relaxed);
        let (pushed, spare) = self.producer.push(frame);
        match pushed {
            Pushed::Queued => {}
            Pushed::DroppedOldest(seq) => self.stats.frame_dropped(
                DropReason::Overflow,
                seq,
                &"the ring was full (drop-oldest)",
            ),
            Pushed::DroppedNewest(seq) => self.stats.frame_dropped(
                DropReason::Overflow,
                seq,
                &"the ring was full (drop-newest)",
            ),
            Pushed::Closed => {
                self.flags.request_stop();
            }
        }
        spare
    }
}
