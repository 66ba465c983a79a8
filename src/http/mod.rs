//! The HTTP surface, off unless `[http] listen` is set: what a monitoring
//! system, a load balancer or a person with a browser may ask of a running
//! recorder.
//!
//! - `GET /metrics`: Prometheus text format (0.0.4), built with
//!   prometheus-client from the run's counters at each scrape; every metric
//!   carries a `camera` label.
//! - `GET /healthz`: 200 `ok` while frames come and files are written as
//!   scheduled and the disk has room, else 503 with the reason.
//! - `GET /status`: JSON with the settings in force, the counters, the
//!   camera's state and the newest file.
//! - `GET /snapshot.jpg`: the newest frame as JPEG, from memory (503 before
//!   the first).
//! - `POST /snapshot`: as USR1; answers with the number the file gets.
//!
//! The server ([`server`]) is a small bounded HTTP/1.1 responder on a few
//! threads of its own. Requests only read counters and the preview frame,
//! which capture copies in without ever waiting; nothing here writes
//! files. So slow or many clients cost those threads, never capture.

pub mod server;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use server::{Body, Reply, Request};

use crate::capture::{Flags, Preview, Snapshots};
use crate::encode::jpeg::JpegEncoder;
use crate::encode::Subsampling;
use crate::frame::{Frame, PixelFormat, TimeZone};
use crate::ring::Occupancy;
use crate::stats::{DropReason, Histogram, Stats};

/// `[http]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub listen: SocketAddr,
    /// Serve an address other machines can reach (there is no
    /// authentication).
    pub allow_remote: bool,
}

/// How the run is doing, as the supervisor's health check last saw it.
#[derive(Clone, Debug, Default)]
pub struct Condition {
    /// Why the recorder is unhealthy; `None` when it is fine.
    pub problem: Option<String>,
    /// `waiting for the source`, `recording`, or the problem.
    pub state: String,
    /// Frames came within the stall timeout.
    pub camera_up: bool,
    /// `retention.max_bytes`, if set.
    pub quota_bytes: Option<u64>,
    /// A quota is kept (retention knows the bytes of framerec's files).
    pub keeps_quota: bool,
    /// The settings in force, for `/status` (kept by the supervisor).
    pub settings: serde_json::Value,
}

/// What the handlers read: the run's shared state, and the server's own.
pub struct State<'a> {
    pub camera: String,
    pub dir: PathBuf,
    pub stats: &'a Stats,
    pub flags: &'a Flags,
    pub snapshots: &'a Snapshots,
    pub preview: &'a Preview,
    pub ring: Occupancy,
    pub ring_frames: usize,
    pub condition: &'a Mutex<Condition>,
    /// Made with `Served::default()`.
    pub served: Served,
}

/// What the server keeps between requests.
pub struct Served {
    started: Instant,
    /// The last preview encoded: its capture time (ns) and the JPEG.
    jpeg: Mutex<(u64, Arc<Vec<u8>>)>,
    /// `POST /snapshot` requests waiting now.
    snapshot_waiters: std::sync::atomic::AtomicUsize,
    /// `/snapshot.jpg` answers being written now.
    previews_writing: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Served {
    fn default() -> Served {
        Served {
            started: Instant::now(),
            jpeg: Mutex::new((0, Arc::new(Vec::new()))),
            snapshot_waiters: std::sync::atomic::AtomicUsize::new(0),
            previews_writing: Arc::default(),
        }
    }
}

/// Threads answering requests: two for /healthz, /metrics and /status,
/// the rest for the preview and snapshots (whose answers may take long).
pub const THREADS: usize = 6;
/// How long `POST /snapshot` waits for the frame to be picked.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// `POST /snapshot` requests waiting at once; more are answered 503, so
/// they never take every thread from `/healthz`.
const SNAPSHOT_WAITERS: usize = 2;
/// `/snapshot.jpg` answers written at once.
const PREVIEW_WRITERS: usize = THREADS - 3;

/// Binds the listening socket (before anything else: a taken port is a
/// setup error that leaves nothing behind).
pub fn bind(options: &Options) -> anyhow::Result<std::net::TcpListener> {
    if !options.listen.ip().is_loopback() {
        tracing::warn!(listen = %options.listen, "http serves other machines (allow_remote = true); its endpoints have no authentication");
    }
    std::net::TcpListener::bind(options.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (http.listen): {e}; choose another port or stop what uses it",
            options.listen
        )
    })
}

/// Answers requests until `stop` is set (on [`THREADS`] threads).
pub fn serve(listener: &std::net::TcpListener, state: &State<'_>, stop: &AtomicBool) {
    let pools = server::Pools {
        fast: 2,
        slow: THREADS - 2,
        is_slow: &|path| path.starts_with("/snapshot"),
    };
    server::serve(listener, pools, stop, &|request| handle(request, state))
}

fn text(code: u16, body: impl Into<String>) -> Reply {
    Reply::text(code, body)
}

fn json(code: u16, value: &serde_json::Value) -> Reply {
    Reply {
        status: code,
        content_type: "application/json",
        headers: Vec::new(),
        body: Body::Owned(format!("{value}\n").into_bytes()),
        hold: None,
    }
}

fn handle(request: &Request<'_>, state: &State<'_>) -> Reply {
    let reading = matches!(request.method, "GET" | "HEAD");
    match (request.path, reading, request.method) {
        ("/metrics", true, _) => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: Body::Owned(metrics(state).into_bytes()),
            hold: None,
        },
        ("/healthz", true, _) => healthz(state),
        ("/status", true, _) => json(200, &status(state)),
        ("/snapshot.jpg", true, _) => snapshot_jpeg(state),
        ("/snapshot", _, "POST") => take_snapshot(state),
        ("/metrics" | "/healthz" | "/status" | "/snapshot.jpg", _, _) => {
            text(405, "method not allowed: use GET\n").with_header("Allow", "GET, HEAD")
        }
        ("/snapshot", _, _) => {
            text(405, "method not allowed: use POST\n").with_header("Allow", "POST")
        }
        _ => text(
            404,
            "not found; try /metrics, /healthz, /status, /snapshot.jpg or POST /snapshot\n",
        ),
    }
}

fn condition(state: &State<'_>) -> Condition {
    state
        .condition
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn healthz(state: &State<'_>) -> Reply {
    match condition(state).problem {
        None => text(200, "ok\n"),
        Some(problem) => text(503, format!("{problem}\n")),
    }
}

fn status(state: &State<'_>) -> serde_json::Value {
    let c = condition(state);
    let s = state.stats.summary();
    let dropped: serde_json::Map<String, serde_json::Value> = s
        .dropped
        .iter()
        .map(|(reason, n)| (reason.name().to_owned(), (*n).into()))
        .collect();
    let newest = state
        .stats
        .newest_file()
        .map(|(seq, path, captured)| {
            serde_json::json!({ "seq": seq, "path": path, "captured_at": captured })
        });
    serde_json::json!({
        "camera": state.camera,
        "version": env!("CARGO_PKG_VERSION"),
        "state": c.state,
        "healthy": c.problem.is_none(),
        "problem": c.problem,
        "uptime_seconds": state.served.started.elapsed().as_secs_f64(),
        "settings": c.settings,
        "source": {
            "up": c.camera_up,
            "reconnects": s.reconnects,
            "stalls": s.stalls,
        },
        "counters": {
            "captured": s.captured,
            "picked": s.picked,
            "written": s.written,
            "bytes_written": s.bytes,
            "dropped": dropped,
            "missed_ticks": s.missed_ticks,
            "skipped_input": s.skipped_input,
            "skipped_bytes": s.skipped_bytes,
            "deleted_files": s.deleted_files,
            "deleted_bytes": s.deleted_bytes,
            "delete_failed": s.delete_failed,
            "manifest_failures": state.stats.manifest_failures.load(Relaxed),
        },
        "ring": { "queued": state.ring.get(), "frames": state.ring_frames },
        "newest_file": newest,
    })
}

/// The newest frame as JPEG: encoded once per frame, however many ask.
fn snapshot_jpeg(state: &State<'_>) -> Reply {
    // Large answers to slow readers hold a thread for up to the write
    // deadline: at most half the threads do, the rest answer /healthz.
    let started = Instant::now();
    let writing = loop {
        let writing = InFlight::enter(&state.served.previews_writing);
        if writing.count <= PREVIEW_WRITERS {
            break writing;
        }
        drop(writing);
        if started.elapsed() > Duration::from_secs(2) {
            return text(
                503,
                "busy: other clients are being sent the preview; try again\n",
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    thread_local! {
        // libjpeg-turbo's state belongs to one thread: each has its own.
        static ENCODER: std::cell::RefCell<Option<JpegEncoder>> =
            const { std::cell::RefCell::new(None) };
    }
    state.preview.watched();
    let mut cache = state.served.jpeg.lock().unwrap_or_else(|e| e.into_inner());
    let jpeg = {
        let slot = state
            .preview
            .frame
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Some(frame) = slot.as_ref() else {
            return text(503, "no frame captured yet\n");
        };
        let key = crate::capture::epoch_ns(frame.captured_at);
        if key != cache.0 || cache.1.is_empty() {
            let made = ENCODER.with(|e| preview_jpeg(frame, &mut e.borrow_mut()));
            match made {
                Ok(bytes) => *cache = (key, Arc::new(bytes)),
                Err(e) => {
                    return text(
                        500,
                        format!("cannot encode the frame: {}\n", crate::stats::Chain(&e)),
                    )
                }
            }
        }
        cache.1.clone()
    };
    drop(cache);
    Reply {
        status: 200,
        content_type: "image/jpeg",
        headers: vec![("Cache-Control", "no-store".into())],
        body: Body::Shared(jpeg),
        hold: Some(Box::new(writing)),
    }
}

/// Encodes a preview frame (a camera's JPEG is served as it is).
fn preview_jpeg(
    frame: &Frame,
    encoder: &mut Option<JpegEncoder>,
) -> Result<Vec<u8>, crate::encode::EncodeError> {
    if frame.format == PixelFormat::Mjpeg {
        return Ok(frame.bytes().to_vec());
    }
    let encoder = match encoder {
        Some(e) => e,
        None => encoder.insert(JpegEncoder::new(85, Subsampling::S420, TimeZone::Utc)?),
    };
    if frame.format == PixelFormat::Gray16 {
        // JPEG holds 8 bits: the high byte of each (big-endian) sample.
        let mut gray = Frame::with_capacity(frame.bytes().len() / 2);
        (gray.width, gray.height, gray.format) = (frame.width, frame.height, PixelFormat::Gray);
        gray.captured_at = frame.captured_at;
        gray.data
            .extend(frame.bytes().chunks_exact(2).map(|s| s[0]));
        return Ok(encoder.encode(&gray)?.concat());
    }
    Ok(encoder.encode(frame)?.concat())
}

fn take_snapshot(state: &State<'_>) -> Reply {
    // A stalled source would hold the request for nothing.
    if !condition(state).camera_up && state.stats.captured.load(Relaxed) > 0 {
        return text(
            503,
            "the source sends no frames; the next frame captured is kept\n",
        );
    }
    let waiting = state.served.snapshot_waiters.fetch_add(1, Relaxed);
    let _leave = Leave(&state.served.snapshot_waiters);
    if waiting >= SNAPSHOT_WAITERS {
        return text(503, "busy: other snapshots are being taken; try again\n");
    }
    let (reply, answer) = crossbeam_channel::bounded(1);
    state.snapshots.request(state.flags, reply);
    match answer.recv_timeout(SNAPSHOT_WAIT) {
        Ok(seq) => json(200, &serde_json::json!({ "seq": seq })),
        Err(_) => text(
            503,
            "no frame came within 5 s (is the source stalled?); the next frame captured is kept\n",
        ),
    }
}

/// Counts a waiter out when dropped.
struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One answer in flight, counted in a shared counter until dropped (it
/// travels with the answer, so it is counted out once written).
struct InFlight {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    /// In flight with this one.
    count: usize,
}

impl InFlight {
    fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        InFlight {
            counter: counter.clone(),
            count: counter.fetch_add(1, Relaxed) + 1,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Relaxed);
    }
}

/// The values of one scrape, owned (prometheus-client's collectors must be).
#[derive(Debug)]
struct Sample {
    counters: Vec<(&'static str, &'static str, u64)>,
    gauges: Vec<(&'static str, &'static str, f64)>,
    dropped: Vec<(&'static str, u64)>,
    histograms: Vec<(&'static str, &'static str, HistogramSample)>,
}

type HistogramSample = (f64, u64, Vec<(f64, u64)>);

fn histogram(h: &Histogram) -> HistogramSample {
    let (sum, count, buckets) = h.snapshot();
    (sum, count, buckets.to_vec())
}

impl Collector for Sample {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in &self.counters {
            let counter = ConstCounter::new(*value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        for (name, help, value) in &self.gauges {
            let gauge = ConstGauge::new(*value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "framerec_frames_dropped",
            "Frames lost, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in &self.dropped {
            let labels = [("reason", *reason)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(*n).encode(metric)?;
        }
        for (name, help, (sum, count, buckets)) in &self.histograms {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            metric.encode_histogram::<Vec<(&str, &str)>>(*sum, *count, buckets, None)?;
        }
        let mut info = encoder.encode_descriptor(
            "framerec_build",
            "The version of framerec",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

/// `/metrics`: every counter of the run, in Prometheus text format.
fn metrics(state: &State<'_>) -> String {
    let stats = state.stats;
    let c = condition(state);
    let s = stats.summary();
    let newest = stats.newest_capture_ns.load(Relaxed);
    let mut gauges = vec![
        (
            "framerec_ring_frames_queued",
            "Frames waiting in the ring for an encoder",
            state.ring.get() as f64,
        ),
        (
            "framerec_ring_frames",
            "Frames the ring holds (ring.frames)",
            state.ring_frames as f64,
        ),
        (
            "framerec_camera_up",
            "1 while the source sends frames (within its stall timeout)",
            if c.camera_up { 1.0 } else { 0.0 },
        ),
        (
            "framerec_healthy",
            "1 while /healthz answers 200",
            if c.problem.is_none() { 1.0 } else { 0.0 },
        ),
        (
            "framerec_uptime_seconds",
            "Seconds since recording started",
            state.served.started.elapsed().as_secs_f64(),
        ),
    ];
    if newest > 0 {
        gauges.push((
            "framerec_last_file_timestamp_seconds",
            "Capture time of the newest file written (Unix time)",
            newest as f64 / 1e9,
        ));
    }
    if c.keeps_quota {
        gauges.push((
            "framerec_disk_used_bytes",
            "Bytes of framerec's files in the output directory (kept with a quota)",
            stats.disk_used.load(Relaxed) as f64,
        ));
    }
    if let Some(quota) = c.quota_bytes {
        gauges.push(("framerec_quota_bytes", "retention.max_bytes", quota as f64));
    }
    if let Some(space) = crate::retention::space_of(&state.dir) {
        gauges.push((
            "framerec_disk_free_bytes",
            "Bytes available on the output directory's filesystem",
            space.available as f64,
        ));
    }
    let sample = Sample {
        counters: vec![
            (
                "framerec_frames_captured",
                "Frames the source delivered",
                s.captured,
            ),
            (
                "framerec_frames_picked",
                "Frames the schedule picked to become files",
                s.picked,
            ),
            (
                "framerec_files_written",
                "Files made durable under their final name",
                s.written,
            ),
            (
                "framerec_bytes_written",
                "Bytes of the files written",
                s.bytes,
            ),
            (
                "framerec_missed_ticks",
                "Schedule ticks with no frame to keep",
                s.missed_ticks,
            ),
            (
                "framerec_camera_reconnects",
                "Times the camera was lost or stalled and reopened",
                s.reconnects,
            ),
            (
                "framerec_camera_stalls",
                "Times the camera sent no frame for the stall timeout",
                s.stalls,
            ),
            (
                "framerec_files_deleted",
                "Files retention deleted to keep the quota",
                s.deleted_files,
            ),
            (
                "framerec_bytes_deleted",
                "Bytes of the files retention deleted",
                s.deleted_bytes,
            ),
            (
                "framerec_delete_failures",
                "Deletions that failed (the file stays, counted in the quota)",
                s.delete_failed,
            ),
            (
                "framerec_input_skipped",
                "Stretches of raw or MJPEG input skipped as not whole frames",
                s.skipped_input,
            ),
            (
                "framerec_input_skipped_bytes",
                "Bytes of the input skipped as not whole frames",
                s.skipped_bytes,
            ),
            (
                "framerec_manifest_failures",
                "Manifest lines lost for files that are on disk",
                stats.manifest_failures.load(Relaxed),
            ),
        ],
        gauges,
        dropped: DropReason::ALL
            .iter()
            .map(|&r| (r.name(), stats.dropped(r)))
            .collect(),
        histograms: vec![
            (
                "framerec_encode_seconds",
                "Time to encode one file",
                histogram(&stats.encode_time),
            ),
            (
                "framerec_write_seconds",
                "Time to write one file durably (its manifest line included)",
                histogram(&stats.write_time),
            ),
            (
                "framerec_latency_seconds",
                "Time from a frame's capture to its file being durable",
                histogram(&stats.latency),
            ),
        ],
    };
    let labels = [(Cow::Borrowed("camera"), Cow::Owned(state.camera.clone()))];
    let mut registry = Registry::with_labels(labels.into_iter());
    registry.register_collector(Box::new(sample));
    let mut out = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        Ok(()) => out,
        Err(_) => String::from("# cannot encode the metrics\n"),
    }
}
