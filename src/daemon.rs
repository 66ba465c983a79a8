//! The supervisor: starts the threads, turns signals into [`Control`]
//! messages, stops and drains, and reports.
//!
//! Start-up, in order:
//! 1. open the store (create `output.dir`, take the lock, sweep temp files,
//!    find the next sequence number);
//! 2. build the ring (every frame buffer allocated here, once);
//! 3. start the encoder workers, then the capture thread;
//! 4. tell systemd READY=1.
//!
//! Shutdown, in order:
//! 1. a stop (TERM/INT, `--duration`, `--frames`, end of input) sets the
//!    stop flag; capture finishes its frame and returns, which closes the ring;
//! 2. the workers drain every queued frame to disk and exit;
//! 3. `thread::scope` joins them; the manifest is synced; the summary is
//!    logged. A second TERM/INT exits at once (code 130): every file on disk
//!    is still whole, and temp files are swept at the next start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, Sender};

use crate::config::Settings;
use crate::encode::{run_worker, Encoder, PanicGuard};
use crate::frame::Frame;
use crate::retention::{self, index::Index, Retention};
use crate::ring::{ring, Producer, Pushed};
use crate::schedule::Schedule;
use crate::source::{buffer_capacity, Captured, Source, SourceError};
use crate::stats::{DropReason, Stats, Summary};
use crate::store::{Store, EXTENSIONS};

/// What signals (or tests) ask the supervisor to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop capturing, drain every captured frame to disk, exit 0.
    Stop,
    /// Reload the config (not supported yet: logged and ignored).
    Reload,
    /// Keep the next frame, whatever the schedule.
    Snapshot,
}

/// The exit code of a second TERM/INT (exit at once).
pub const QUIT_EXIT_CODE: i32 = 130;

/// When to end a run besides a stop signal or the end of input.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Stop once this many files are written.
    pub frames: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Sets a flag when dropped (also while unwinding).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Flags shared by the threads of one run.
#[derive(Debug, Default)]
struct Flags {
    /// Capture must stop (then the pipeline drains).
    stop: AtomicBool,
    /// A thread panicked or the source failed: the run ends with an error.
    failed: AtomicBool,
    /// The capture thread has returned.
    capture_done: AtomicBool,
    /// Keep the next frame (USR1).
    snapshot: AtomicBool,
}

/// Routes TERM/INT/HUP/USR1 into `control_tx`. A second TERM or INT exits
/// the process at once with [`QUIT_EXIT_CODE`]. Returns the handle that
/// stops the forwarding thread.
pub fn forward_signals(
    control_tx: Sender<Control>,
) -> anyhow::Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let stopping = std::sync::Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Order matters: the exit is armed by the first signal, fired by the second.
        signal_hook::flag::register_conditional_shutdown(signal, QUIT_EXIT_CODE, stopping.clone())
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, stopping.clone())
            .context("cannot install the signal handlers")?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install the signal handlers")?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let control = match signal {
                    SIGHUP => Control::Reload,
                    SIGUSR1 => Control::Snapshot,
                    _ => Control::Stop,
                };
                if control_tx.send(control).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(handle)
}

/// Records until stopped; returns the run's counters. Errors are setup
/// failures, or a source or thread that died (exit code 1). `open_source`
/// runs on the capture thread: a camera must stay on the thread that
/// opened it.
pub fn run(
    settings: &Settings,
    open_source: impl FnOnce() -> Result<Source, SourceError> + Send,
    control_rx: &Receiver<Control>,
    limits: Limits,
) -> anyhow::Result<Summary> {
    let quota = settings.retention;
    let mut index =
        (!quota.is_empty()).then(|| Index::new(&settings.output.name, &settings.camera));
    let scan_started = Instant::now();
    let (store, found) = Store::open(settings, index.as_mut())?;
    let next_seq = found.next_seq();
    if let Some(index) = &mut index {
        index.finish_scan();
        let usage = index.usage();
        tracing::info!(
            files = usage.files,
            mib = usage.bytes >> 20,
            scan_ms = scan_started.elapsed().as_millis() as u64,
            index_kib = index.memory() >> 10,
            "retention: indexed the files on disk"
        );
        retention::warn_about_quota(&quota, store.dir(), usage.bytes);
    }
    tracing::info!(
        camera = %settings.camera,
        source = settings.source.kind.name(),
        dir = %store.dir().display(),
        existing_files = found.files,
        next_seq,
        swept_temp_files = found.swept,
        "recording"
    );
    let threads = settings.encoder.threads;
    // Fail before starting anything if the encoder cannot be set up.
    Encoder::for_settings(settings).context("cannot set up the encoder")?;
    let capacity = buffer_capacity(
        settings.source.width,
        settings.source.height,
        settings.source.pixel_format,
    );
    let (producer, consumer) = ring(
        settings.ring.frames,
        threads,
        capacity,
        settings.ring.when_full,
    );
    let stats = Stats::new();
    let flags = Flags::default();
    let schedule = Schedule::new(settings.snapshot.every);

    let (retention_handle, requests) = Retention::channel();
    let retention_handle = index.is_some().then_some(retention_handle);

    let capture_result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut helpers = Vec::with_capacity(threads + 1);
        if let Some(index) = index {
            let matcher = settings.output.name.matcher(&settings.camera, &EXTENSIONS);
            let retention = Retention::new(
                store.dir(),
                quota,
                index,
                matcher,
                settings.output.name.depth(),
                &stats,
            );
            let failed = &flags.failed;
            let handle = std::thread::Builder::new()
                .name("retention".into())
                .spawn_scoped(scope, move || {
                    let _guard = PanicGuard(failed);
                    retention.run(requests);
                })
                .context("cannot start the retention thread")?;
            helpers.push(handle);
        } else {
            drop(requests);
        }
        for k in 0..threads {
            let consumer = consumer.clone();
            let retention = retention_handle.clone();
            let (store, stats, flags) = (&store, &stats, &flags);
            let handle = std::thread::Builder::new()
                .name(format!("encoder-{k}"))
                .spawn_scoped(scope, move || {
                    let _guard = PanicGuard(&flags.failed);
                    if let Err(e) = run_worker(consumer, settings, store, stats, retention) {
                        tracing::error!(error = %e, "cannot set up an encoder");
                        flags.failed.store(true, Ordering::SeqCst);
                    }
                })
                .context("cannot start an encoder thread")?;
            helpers.push(handle);
        }
        drop(consumer);
        // The workers hold the only handles now: retention ends after them.
        drop(retention_handle);
        let capture = std::thread::Builder::new()
            .name("capture".into())
            .spawn_scoped(scope, || {
                let _guard = PanicGuard(&flags.failed);
                // Set however capture ends, a panic included, so the
                // supervisor never waits for a thread that is gone.
                let _done = SetOnDrop(&flags.capture_done);
                let source = match open_source() {
                    Ok(source) => source,
                    Err(e) => {
                        flags.failed.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                };
                Capture {
                    source,
                    producer,
                    schedule,
                    stats: &stats,
                    flags: &flags,
                    next_seq,
                    frames_limit: limits.frames,
                }
                .run()
            })
            .context("cannot start the capture thread")?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        supervise(&flags, control_rx, limits);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let result = match capture.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("capture failed")),
            Err(_) => Err(anyhow::anyhow!("the capture thread panicked")),
        };
        // Join the rest here, so a panic in one is an error, not a re-raise.
        for helper in helpers {
            if helper.join().is_err() {
                flags.failed.store(true, Ordering::SeqCst);
            }
        }
        result
    });
    if let Err(e) = store.finish() {
        tracing::warn!(error = %e, "cannot sync the manifest");
    }
    let summary = stats.summary();
    tracing::info!("{summary}");
    capture_result?;
    if flags.failed.load(Ordering::SeqCst) {
        anyhow::bail!("a recording thread failed; see the log above");
    }
    Ok(summary)
}

/// Waits for a reason to stop, then sets the stop flag and returns once
/// capture has ended.
fn supervise(flags: &Flags, control_rx: &Receiver<Control>, limits: Limits) {
    let started = Instant::now();
    let deadline = limits.duration.map(|d| started + d);
    let mut stopping = false;
    while !flags.capture_done.load(Ordering::SeqCst) {
        let wait = match deadline {
            Some(d) if !stopping => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
            _ => Duration::from_millis(100),
        };
        match control_rx.recv_timeout(wait) {
            Ok(Control::Stop) if !stopping => {
                tracing::info!("stop requested; finishing captured frames");
                stopping = true;
            }
            Ok(Control::Stop) => {}
            Ok(Control::Reload) => {
                tracing::warn!(
                    "reloading the config is not supported yet; restart framerec to apply changes"
                )
            }
            Ok(Control::Snapshot) => flags.snapshot.store(true, Ordering::SeqCst),
            Err(_) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && !stopping {
            tracing::info!("duration reached; finishing captured frames");
            stopping = true;
        }
        if flags.failed.load(Ordering::SeqCst) {
            stopping = true;
        }
        if stopping {
            flags.stop.store(true, Ordering::SeqCst);
        }
    }
}

/// The capture thread's state.
struct Capture<'a> {
    source: Source,
    producer: Producer,
    schedule: Schedule,
    stats: &'a Stats,
    flags: &'a Flags,
    next_seq: u64,
    frames_limit: Option<u64>,
}

impl Capture<'_> {
    /// Captures until stopped or the source ends; returning closes the ring.
    fn run(mut self) -> Result<(), SourceError> {
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
        self.stats
            .skipped_input
            .store(self.source.skipped(), Ordering::Relaxed);
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
