//! The capture thread: source → schedule → numbering → ring.
//!
//! It fills the buffer it holds from the source, asks the schedule whether
//! the frame (or the one held back before it) becomes a snapshot, gives each
//! picked frame the next sequence number and pushes it into the ring, taking
//! a free buffer back. It never waits on the disk (unless the ring's policy
//! is `block`, for files), and with `--frames N` it stops picking once N
//! files are written or on their way. Returning drops the producer, which
//! closes the ring: the encoders drain it and exit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::frame::Frame;
use crate::ring::{Producer, Pushed};
use crate::schedule::Schedule;
use crate::source::{Captured, Source, SourceError};
use crate::stats::{DropReason, Stats};

/// Flags the supervisor and the recording threads share.
#[derive(Debug, Default)]
pub struct Flags {
    /// Capture must stop (then the pipeline drains).
    pub stop: AtomicBool,
    /// A thread panicked or the source failed: the run ends with an error.
    pub failed: AtomicBool,
    /// Keep the next frame (USR1).
    pub snapshot: AtomicBool,
}

/// The capture thread's state.
pub struct Capture<'a> {
    pub source: Source,
    pub producer: Producer,
    pub schedule: Schedule,
    pub stats: &'a Stats,
    pub flags: &'a Flags,
    /// The number the next picked frame gets.
    pub next_seq: u64,
    /// `--frames N`: stop once N files are written.
    pub frames_limit: Option<u64>,
}

impl Capture<'_> {
    /// Captures until stopped or the source ends; returning closes the ring.
    pub fn run(mut self) -> Result<(), SourceError> {
        let mut current = self.producer.take_buffer();
        let mut held: Option<Frame> = None;
        let mut stash: Option<Frame> = None;
        let result = loop {
            if self.flags.stop.load(Ordering::Relaxed) || !self.wait_for_budget() {
                break Ok(());
            }
            match self.source.next_frame(&mut current, &self.flags.stop) {
                Ok(Captured::Frame) => {}
                Ok(Captured::End) => break Ok(()),
                Ok(Captured::Corrupt(e)) => {
                    self.stats.captured.fetch_add(1, Ordering::Relaxed);
                    self.stats.frame_dropped(DropReason::Corrupt, 0, &e);
                    continue;
                }
                Err(e) => {
                    self.flags.failed.store(true, Ordering::SeqCst);
                    break Err(e);
                }
            }
            self.stats.captured.fetch_add(1, Ordering::Relaxed);
            if self.flags.snapshot.swap(false, Ordering::Relaxed) {
                self.schedule.request();
            }
            let pick = self
                .schedule
                .offer(current.captured_at, held.as_ref().map(|h| h.captured_at));
            if pick.missed > 0 {
                self.stats
                    .missed_ticks
                    .fetch_add(pick.missed, Ordering::Relaxed);
            }
            if pick.held {
                if let Some(frame) = held.take() {
                    stash = Some(self.push(frame));
                }
            }
            if pick.current {
                current = self.push(current);
                held = None;
            } else if self.schedule.holds_frames() {
                // The current frame waits for the next one; the frame it
                // replaces (never picked) becomes the next buffer.
                let replaced = held.replace(current);
                current = replaced
                    .or_else(|| stash.take())
                    .unwrap_or_else(|| self.producer.take_buffer());
            }
        };
        let (stretches, bytes) = self.source.skipped();
        self.stats.skipped_input.store(stretches, Ordering::Relaxed);
        self.stats.skipped_bytes.store(bytes, Ordering::Relaxed);
        let (reconnects, stalls) = self.source.reconnects();
        self.stats.reconnects.store(reconnects, Ordering::Relaxed);
        self.stats.stalls.store(stalls, Ordering::Relaxed);
        result
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
            self.flags.stop.store(true, Ordering::SeqCst);
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
                self.flags.stop.store(true, Ordering::SeqCst);
            }
        }
        spare
    }
}
