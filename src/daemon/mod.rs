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
//! 4. tell systemd READY=1 once the source is open (a camera that is not
//!    there yet is waited for; the status line says so).
//!
//! While recording, HUP reloads the config (`reload`): RELOADING=1 (with
//! MONOTONIC_USEC), then READY=1 again, whatever the outcome.
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
mod reload;
pub mod signals;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::Receiver;

use crate::capture::{Capture, Flags, Preview, Reloadable, Snapshots};
use crate::config::{ConfigError, Settings};
use crate::encode::{self, run_worker, Encoder};
use crate::http::{self, Condition};
use crate::live::Live;
use crate::retention::{self, index::Index, Retention};
use crate::ring::ring;
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
    /// Read the config file again and apply what changed.
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

/// Reads the config file again, for a reload.
pub type Loader<'a> = dyn Fn() -> Result<Settings, ConfigError> + 'a;

/// Opens a source on the capture thread (a camera must stay on the thread
/// that opened it).
fn open_source(
    options: &crate::source::Options,
    format: crate::frame::ImageFormat,
) -> Result<Source, SourceError> {
    Source::open(options, format)
}

/// Records until stopped; returns the run's counters. Errors are setup
/// failures, or a source or thread that died (exit code 1). `reload` reads
/// the config file again on HUP (`None`: there is no file; HUP is refused).
pub fn run(
    settings: &Settings,
    reload: Option<&Loader<'_>>,
    control_rx: &Receiver<Control>,
    limits: Limits,
) -> anyhow::Result<Summary> {
    // A SIGBUS sent by another process ends every run alike (mapped input
    // or not); see `frame::mapped`.
    crate::frame::mapped::install_handler();
    // First: a port in use is a setup error that leaves nothing behind.
    let http_server = settings.http.as_ref().map(http::bind).transpose()?;
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
    let occupancy = producer.occupancy();
    let stats = Stats::new();
    let flags = Flags::default();
    let preview = Preview::default();
    let snapshots = Snapshots::default();
    let condition = std::sync::Mutex::new(Condition {
        quota_bytes: settings.retention.max_bytes,
        keeps_quota: !settings.retention.is_empty(),
        settings: settings_json(settings),
        state: "starting".into(),
        ..Condition::default()
    });
    let http_state = http::State {
        camera: settings.camera.clone(),
        dir: store.dir().to_owned(),
        stats: &stats,
        flags: &flags,
        snapshots: &snapshots,
        preview: &preview,
        ring: occupancy,
        ring_frames: settings.ring.frames,
        condition: &condition,
        served: http::Served::default(),
    };
    let http_stop = AtomicBool::new(false);
    let capture_done = AtomicBool::new(false);
    // Never sent on: the capture thread's end drops the sender, which wakes
    // the supervisor at once (the end of a file is not noticed 100 ms late).
    let (capture_ended_tx, capture_ended) = crossbeam_channel::bounded::<()>(0);
    let (retention_handle, requests) = Retention::channel();
    let live_source = Live::new((settings.source.clone(), encode.format));
    let live_every = Live::new(settings.every);
    let live_encode = Live::new(encode::Setup {
        options: encode.clone(),
        input,
    });

    let capture_result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut helpers = Vec::with_capacity(encode.threads + 1);
        // Without a quota the thread only waits, for a reload that sets one.
        let index = index.unwrap_or_else(|| Index::new(&settings.output.name, &settings.camera));
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
        for k in 0..encode.threads {
            let consumer = consumer.clone();
            let mut sink = Sink::new(&store, &stats, Some(retention_handle.clone()));
            let (stats, flags, live_encode) = (&stats, &flags, &live_encode);
            let handle = std::thread::Builder::new()
                .name(format!("encoder-{k}"))
                .spawn_scoped(scope, move || {
                    let _guard = PanicGuard(&flags.failed);
                    let worker =
                        run_worker(consumer, live_encode, stats, |frame, format, parts| {
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
        let mut servers = Vec::with_capacity(1);
        if let Some(listener) = &http_server {
            let (state, stop) = (&http_state, &http_stop);
            let handle = std::thread::Builder::new()
                .name("http".into())
                .spawn_scoped(scope, move || http::serve(listener, state, stop))
                .context("cannot start the http thread")?;
            servers.push(handle);
            if let Some(listen) = settings.http.as_ref().map(|h| h.listen) {
                tracing::info!(%listen, "http: serving /metrics, /healthz, /status, /snapshot.jpg and POST /snapshot");
            }
        }
        let capture = std::thread::Builder::new()
            .name("capture".into())
            .spawn_scoped(scope, || {
                // Dropped last, after `capture_done` is set.
                let _wake = capture_ended_tx;
                let _guard = PanicGuard(&flags.failed);
                // Set however capture ends, a panic included, so the
                // supervisor never waits for a thread that is gone.
                let _done = SetOnDrop(&capture_done);
                Capture {
                    reloadable: Reloadable {
                        source: &live_source,
                        every: &live_every,
                        open: &open_source,
                    },
                    producer,
                    preview: http_server.as_ref().map(|_| &preview),
                    snapshots: &snapshots,
                    stats: &stats,
                    flags: &flags,
                    next_seq,
                    frames_limit: limits.frames,
                }
                .run()
                .inspect_err(|_| flags.failed.store(true, Ordering::SeqCst))
            })
            .context("cannot start the capture thread")?;
        let health = health::Health::new(
            settings.source.stall_timeout(),
            settings.write_timeout,
            Some(&condition),
            store.dir(),
        );
        let targets = reload::Targets {
            source: &live_source,
            every: &live_every,
            encode: &live_encode,
            store: &store,
            retention: Some(&retention_handle),
            wake: &flags.wake,
            buffer_capacity: settings.source.buffer_capacity(),
        };
        let supervisor = Supervisor {
            flags: &flags,
            capture_done: &capture_done,
            capture_ended: &capture_ended,
            control_rx,
            limits,
            store: &store,
            stats: &stats,
            settings: settings.clone(),
            reload,
            targets,
            condition: &condition,
        };
        let let_go = supervisor.run(health);
        // Stopping: the endpoints answer no more (what waits is dropped, an
        // answer being sent has its deadline), while the frames drain.
        http_stop.store(true, Ordering::SeqCst);
        // The workers hold the only handles now: retention ends after them.
        drop(retention_handle);
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
        for server in servers {
            let _ = server.join();
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

/// The settings as `framerec check` prints them, as JSON (for `/status`).
fn settings_json(settings: &Settings) -> serde_json::Value {
    toml::from_str::<toml::Table>(&settings.to_string())
        .ok()
        .and_then(|table| serde_json::to_value(table).ok())
        .unwrap_or_default()
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

/// The supervisor's view of the run.
struct Supervisor<'a> {
    flags: &'a Flags,
    capture_done: &'a AtomicBool,
    /// Disconnected once capture has ended.
    capture_ended: &'a Receiver<()>,
    control_rx: &'a Receiver<Control>,
    limits: Limits,
    store: &'a Store,
    stats: &'a Stats,
    /// The settings in force (a reload replaces them).
    settings: Settings,
    reload: Option<&'a Loader<'a>>,
    targets: reload::Targets<'a>,
    /// What `/status` and `/metrics` show of the settings.
    condition: &'a std::sync::Mutex<Condition>,
}

impl Supervisor<'_> {
    /// HUP: reads the config file again and applies it (see `reload`),
    /// telling systemd RELOADING=1 … READY=1 around it.
    fn reload(&mut self) {
        use sd_notify::NotifyState;
        let mut reloading = vec![NotifyState::Reloading];
        reloading.extend(NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&reloading);
        tracing::info!("reloading the config");
        match reload::reload(&mut self.settings, self.reload, &self.targets) {
            Ok(changes) if changes.is_empty() => {
                tracing::info!("config reloaded: nothing changed")
            }
            Ok(changes) => {
                let mut c = self.condition.lock().unwrap_or_else(|e| e.into_inner());
                c.settings = settings_json(&self.settings);
                c.quota_bytes = self.settings.retention.max_bytes;
                c.keeps_quota = !self.settings.retention.is_empty();
                drop(c);
                let list: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                tracing::info!(changes = %list.join(", "), "config reloaded; applied");
            }
            Err(e) => {
                tracing::error!(
                    "config not reloaded; the settings in force stay: {}",
                    crate::stats::Chain(&e)
                )
            }
        }
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }

    /// Waits for a reason to stop, then sets the stop flag and returns once
    /// capture has ended: true, or false if it did not within
    /// [`CAPTURE_GRACE`] of the stop.
    fn run(mut self, mut health: health::Health) -> bool {
        let (flags, capture_done, capture_ended, control_rx, limits, store, stats) = (
            self.flags,
            self.capture_done,
            self.capture_ended,
            self.control_rx,
            self.limits,
            self.store,
            self.stats,
        );
        let mut ready = false;
        let started = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        let mut checked_at = started;
        let mut in_place = true;
        // Bounded when parsed; should the clock still overflow, there is no
        // deadline rather than a panic.
        let deadline = limits.duration.and_then(|d| started.checked_add(d));
        let mut stopping = false;
        while !capture_done.load(Ordering::SeqCst) {
            // Ready once the source is open (a camera is looked for on its
            // first frame: one that is absent is waited for, and said so).
            if !ready && flags.opened.load(Ordering::SeqCst) {
                ready = true;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
            let wait = match deadline {
                Some(d) if !stopping => d
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
                _ => Duration::from_millis(100),
            };
            let control = crossbeam_channel::select! {
                recv(control_rx) -> control => control.ok(),
                recv(capture_ended) -> _ => continue,
                default(wait) => None,
            };
            match control {
                Some(Control::Stop) if !stopping => {
                    tracing::info!("stop requested; finishing captured frames");
                    stopping = true;
                }
                Some(Control::Stop) => {}
                Some(Control::Reload) if !stopping => {
                    self.reload();
                    health.write_bound = self.settings.write_timeout;
                    health.stall = self.settings.source.stall_timeout();
                }
                Some(Control::Reload) => {}
                Some(Control::Snapshot) => flags.snapshot.store(true, Ordering::SeqCst),
                None => {}
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
                flags.request_stop();
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= CAPTURE_GRACE && !capture_done.load(Ordering::SeqCst) {
                    return false;
                }
            }
        }
        true
    }
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
            http: None,
            write_timeout: crate::config::DEFAULT_WRITE_TIMEOUT,
            threads_auto: false,
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
        let summary = run(&settings, None, &control_rx, Limits::default()).unwrap();
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
        let again = run(&settings, None, &control_rx, limits).unwrap();
        assert_eq!(again.written, 2, "{again}");
        let next = format!("lab-{:06}.png", seqs.last().unwrap() + 1);
        assert!(root.path().join(&next).exists(), "{next} was not written");
    }
}
