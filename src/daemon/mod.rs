//! The supervisor: the one place that knows every stage. It wires them from
//! [`Settings`], starts their threads, turns [`Control`] messages (from
//! [`signals`]) into actions, stops and drains, and reports.
//!
//! Start-up, in order:
//! 1. open the store (create `output.dir`, take the lock, sweep temp files,
//!    find the next sequence number), handing each file found to
//!    retention's index when a quota is kept;
//! 2. build the ring (every frame buffer allocated here, once);
//! 3. start the retention thread, the encoder workers (each encoding into
//!    its own sink), then the capture thread, which opens the source;
//! 4. tell systemd READY=1.
//!
//! Shutdown, in order:
//! 1. a stop (TERM/INT, `--duration`, `--frames`, end of input) sets the
//!    stop flag; capture finishes its frame and returns, which closes the ring;
//! 2. the workers drain every queued frame to disk and exit; retention
//!    ends after them;
//! 3. `thread::scope` joins them; the manifest is synced; the summary is
//!    logged. A second TERM/INT exits at once (code 130): every file on disk
//!    is still whole, and temp files are swept at the next start.

mod health;
pub mod signals;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::Receiver;

use crate::capture::{Capture, Flags};
use crate::config::Settings;
use crate::encode::{run_worker, Encoder};
use crate::retention::{self, index::Index, Retention};
use crate::ring::ring;
use crate::schedule::Schedule;
use crate::sink::Sink;
use crate::source::{Source, SourceError};
use crate::stats::{DropReason, Stats, Summary};
use crate::store::{Found, Owned, Store, Visitor, EXTENSIONS};

pub use signals::forward_signals;

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

/// Sets `failed` if the thread holding it panics, so the supervisor stops.
struct PanicGuard<'a>(&'a AtomicBool);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
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
    let (store, found, index) = open_store(settings)?;
    let next_seq = found.next_seq();
    tracing::info!(
        camera = %settings.camera,
        source = settings.source.kind.name(),
        dir = %store.dir().display(),
        existing_files = found.files,
        next_seq,
        swept_temp_files = found.swept,
        "recording"
    );
    let encode = &settings.encode;
    let input = settings.source.pixel_format;
    // Fail before starting anything if the encoder cannot be set up.
    Encoder::new(encode, input).context("cannot set up the encoder")?;
    let (producer, consumer) = ring(
        &settings.ring,
        encode.threads,
        settings.source.buffer_capacity(),
    )
    .with_context(|| {
        format!(
            "the ring does not fit in memory (ring.frames = {}, {}x{} {}): lower ring.frames or the frame size",
            settings.ring.frames,
            settings.source.width,
            settings.source.height,
            settings.source.pixel_format
        )
    })?;
    let stats = Stats::new();
    let flags = Flags::default();
    let capture_done = AtomicBool::new(false);
    let (retention_handle, requests) = Retention::channel();
    let retention_handle = index.is_some().then_some(retention_handle);

    let capture_result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut helpers = Vec::with_capacity(encode.threads + 1);
        if let Some(index) = index {
            let retention = Retention::new(
                &store,
                settings.retention,
                index,
                settings.output.name.matcher(&settings.camera, &EXTENSIONS),
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
        for k in 0..encode.threads {
            let consumer = consumer.clone();
            let mut sink = Sink::new(&store, &stats, retention_handle.clone());
            let (stats, flags) = (&stats, &flags);
            let handle = std::thread::Builder::new()
                .name(format!("encoder-{k}"))
                .spawn_scoped(scope, move || {
                    let _guard = PanicGuard(&flags.failed);
                    let worker =
                        run_worker(consumer, encode, input, stats, |frame, format, parts| {
                            sink.deliver(frame, format, parts)
                        });
                    if let Err(e) = worker {
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
                let _done = SetOnDrop(&capture_done);
                let source = open_source().inspect_err(|_| {
                    flags.failed.store(true, Ordering::SeqCst);
                })?;
                Capture {
                    source,
                    producer,
                    schedule: Schedule::new(settings.every),
                    stats: &stats,
                    flags: &flags,
                    next_seq,
                    frames_limit: limits.frames,
                }
                .run()
            })
            .context("cannot start the capture thread")?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let health = health::Health::new(settings.source.stall_timeout());
        let let_go = supervise(
            &flags,
            &capture_done,
            control_rx,
            limits,
            &store,
            (health, &stats),
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        if !let_go {
            finish_without_capture(&store, &stats, &capture_done);
        }
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
        tracing::warn!(error = %e, "cannot sync the manifest or write the sequence mark");
    }
    let summary = stats.summary();
    tracing::info!("{summary}");
    capture_result?;
    if flags.failed.load(Ordering::SeqCst) {
        anyhow::bail!("a recording thread failed; see the log above");
    }
    let write_failures = stats.dropped(DropReason::Write);
    if summary.written == 0 && write_failures > 0 {
        anyhow::bail!(
            "no file could be written ({write_failures} writes failed); see the log above"
        );
    }
    Ok(summary)
}

/// Opens the store. With a quota, the start-up scan also fills retention's
/// index, which is returned ready for the retention thread.
fn open_store(settings: &Settings) -> anyhow::Result<(Store, Found, Option<Index>)> {
    let quota = settings.retention;
    if quota.is_empty() {
        let (store, found) = Store::open(&settings.camera, &settings.output, None)?;
        return Ok((store, found, None));
    }
    let mut index = Index::new(&settings.output.name, &settings.camera);
    if quota.max_age.is_some() {
        index.track_ages();
    }
    let scan_started = Instant::now();
    let mut visit = |owned: Owned<'_>| {
        index.insert_unsorted(owned.seq, owned.relative, owned.bytes, owned.mtime)
    };
    let visitor = Visitor {
        stat: quota.needs_file_facts(),
        visit: &mut visit,
    };
    let (store, found) = Store::open(&settings.camera, &settings.output, Some(visitor))?;
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
    Ok((store, found, Some(index)))
}

/// How long capture may take to end after a stop before it is given up on
/// (a call into a camera's driver or its LD_PRELOAD layer that never
/// returns).
const CAPTURE_GRACE: Duration = Duration::from_secs(3);
/// How long the encoders get to write what was captured, then.
const DRAIN_GRACE: Duration = Duration::from_secs(60);

/// A stop came and capture did not end within [`CAPTURE_GRACE`]: the frames
/// already captured are written; if capture still has not ended by then,
/// the summary is logged and the process exits 0 without waiting for the
/// stuck thread. (If it ends meanwhile, the run ends as usual.)
fn finish_without_capture(store: &Store, stats: &Stats, capture_done: &AtomicBool) {
    tracing::warn!(
        "capture does not end (a call into the camera's driver may hang); writing the frames captured"
    );
    let started = Instant::now();
    let settled = || {
        let done = stats.written.load(Ordering::Relaxed) + stats.dropped_total();
        done >= stats.picked.load(Ordering::Relaxed)
    };
    while started.elapsed() < DRAIN_GRACE {
        if capture_done.load(Ordering::SeqCst) {
            return;
        }
        if settled() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!("capture is stuck; exiting without it");
    if let Err(e) = store.finish() {
        tracing::warn!(error = %e, "cannot sync the manifest or write the sequence mark");
    }
    tracing::info!("{}", stats.summary());
    // Without exit handlers: a camera layer's (pw-v4l2's) would wait for the
    // stuck call. Everything of framerec's is written and synced above.
    // SAFETY: ends the process at once; nothing after this runs.
    unsafe { libc::_exit(0) }
}

/// Waits for a reason to stop, then sets the stop flag and returns once
/// capture has ended: true, or false if it did not within
/// [`CAPTURE_GRACE`] of the stop.
fn supervise(
    flags: &Flags,
    capture_done: &AtomicBool,
    control_rx: &Receiver<Control>,
    limits: Limits,
    store: &Store,
    (mut health, stats): (health::Health, &Stats),
) -> bool {
    let started = Instant::now();
    let mut stopped_at: Option<Instant> = None;
    let mut checked_at = started;
    let mut in_place = true;
    // Bounded when parsed; should the clock still overflow, there is no
    // deadline rather than a panic.
    let deadline = limits.duration.and_then(|d| started.checked_add(d));
    let mut stopping = false;
    while !capture_done.load(Ordering::SeqCst) {
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
        if !stopping {
            health.tick(stats);
        }
        // Once a second: is the output directory still ours? (Removed, or
        // removed and made again, it is taken back before the next file,
        // so a second recorder cannot start on it in the meantime.)
        if checked_at.elapsed() >= Duration::from_secs(1) {
            checked_at = Instant::now();
            match store.reestablish() {
                Ok(()) => in_place = true,
                // Another recorder took it over: this one stops (exit 1).
                Err(e) if e.is_taken() => {
                    tracing::error!(error = %crate::stats::Chain(&e), "another recorder took the output directory over; stopping");
                    flags.failed.store(true, Ordering::SeqCst);
                    stopping = true;
                }
                Err(e) if in_place => {
                    in_place = false;
                    tracing::error!(error = %crate::stats::Chain(&e), "the output directory is no longer framerec's; files cannot be written");
                }
                Err(_) => {}
            }
        }
        if stopping {
            flags.stop.store(true, Ordering::SeqCst);
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() >= CAPTURE_GRACE && !capture_done.load(Ordering::SeqCst) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{self, PngCompression, Subsampling};
    use crate::frame::{ImageFormat, PixelFormat, TimeZone};
    use crate::retention::Quota;
    use crate::ring::Overflow;
    use crate::schedule::Every;
    use crate::source::{self, Kind};
    use crate::store::naming::Template;
    use crate::{ring, store};

    /// Settings built from the stages' options, without any TOML.
    fn settings(dir: &std::path::Path) -> Settings {
        Settings {
            camera: "lab".into(),
            source: source::Options {
                kind: Kind::Synthetic,
                width: 64,
                height: 48,
                fps: 50.0,
                pixel_format: PixelFormat::Gray,
                max_frame_bytes: 1 << 20,
                stall_timeout: None,
                controls: Vec::new(),
            },
            ring: ring::Options {
                frames: 64,
                when_full: Overflow::DropNewest,
            },
            every: Every::Frame,
            encode: encode::Options {
                format: ImageFormat::Png,
                quality: 90,
                subsampling: Subsampling::S420,
                compression: PngCompression::Fast,
                passthrough: false,
                timezone: TimeZone::Utc,
                threads: 2,
            },
            output: store::Options {
                dir: dir.to_owned(),
                name: Template::parse("{camera}-{seq:6}.{ext}").unwrap(),
                timezone: TimeZone::Utc,
                fsync: false,
                manifest: true,
                file_mode: 0o640,
                dir_mode: 0o750,
            },
            retention: Quota::default(),
        }
    }

    /// Records the synthetic source in-process until a `Control::Stop`;
    /// every frame picked is on disk, numbered from 1, once each.
    #[test]
    fn runs_in_process_until_stopped_and_drains_every_frame() {
        let root = tempfile::tempdir().unwrap();
        let settings = settings(root.path());
        let (control_tx, control_rx) = crossbeam_channel::bounded(4);
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            control_tx.send(Control::Stop).unwrap();
        });
        let open = || Source::open(&settings.source, settings.encode.format);
        let summary = run(&settings, open, &control_rx, Limits::default()).unwrap();
        stopper.join().unwrap();

        assert!(summary.written >= 5, "{summary}");
        let dropped: u64 = summary.dropped.iter().map(|(_, n)| n).sum();
        assert_eq!(summary.picked, summary.written + dropped, "{summary}");
        let mut seqs: Vec<u64> = std::fs::read_dir(root.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_prefix("lab-")?
                    .strip_suffix(".png")?
                    .parse()
                    .ok()
            })
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs.len() as u64, summary.written);
        assert_eq!(seqs.first(), Some(&1));
        let manifest = std::fs::read_to_string(root.path().join("manifest.jsonl")).unwrap();
        assert_eq!(manifest.lines().count() as u64, summary.written);

        // A second run goes on after the highest number.
        let limits = Limits {
            frames: Some(2),
            duration: None,
        };
        let open = || Source::open(&settings.source, settings.encode.format);
        let again = run(&settings, open, &control_rx, limits).unwrap();
        assert_eq!(again.written, 2, "{again}");
        let next = format!("lab-{:06}.png", seqs.last().unwrap() + 1);
        assert!(root.path().join(&next).exists(), "{next} was not written");
    }
}
