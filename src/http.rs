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
//! The server is tiny_http (synchronous, few dependencies) on a few threads
//! of its own. Requests only read counters and the preview frame, which
//! capture copies in without ever waiting; nothing here writes files. So
//! slow or many clients cost those threads, never capture.

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
use tiny_http::{Header, Method, Request, Response};

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

/// What the handlers read.
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
    pub started: Instant,
    /// The last preview encoded: its capture time (ns) and the JPEG.
    jpeg: Mutex<(u64, Arc<Vec<u8>>)>,
}

impl<'a> State<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        camera: String,
        dir: PathBuf,
        stats: &'a Stats,
        flags: &'a Flags,
        snapshots: &'a Snapshots,
        preview: &'a Preview,
        (ring, ring_frames): (Occupancy, usize),
        condition: &'a Mutex<Condition>,
    ) -> State<'a> {
        State {
            camera,
            dir,
            stats,
            flags,
            snapshots,
            preview,
            ring,
            ring_frames,
            condition,
            started: Instant::now(),
            jpeg: Mutex::new((0, Arc::new(Vec::new()))),
        }
    }
}

/// Handler threads: enough that a slow client does not hold up a scrape.
pub const THREADS: usize = 4;
/// How long `POST /snapshot` waits for the frame to be picked.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// Binds the listening socket (before any thread starts: a taken port is
/// a setup error).
pub fn bind(options: &Options) -> anyhow::Result<tiny_http::Server> {
    if !options.listen.ip().is_loopback() {
        tracing::warn!(listen = %options.listen, "http serves other machines (allow_remote = true); its endpoints have no authentication");
    }
    tiny_http::Server::http(options.listen).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (http.listen): {e}; choose another port or stop what uses it",
            options.listen
        )
    })
}

/// Answers requests until `stop` is set (one of [`THREADS`] threads).
pub fn serve(server: &tiny_http::Server, state: &State<'_>, stop: &AtomicBool) {
    // libjpeg-turbo's state belongs to one thread: each has its own.
    let mut encoder = None;
    while !stop.load(Relaxed) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => handle(request, state, &mut encoder),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "http: cannot accept a request");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn text(code: u16, body: impl Into<String>) -> Reply {
    Response::from_string(body.into())
        .with_status_code(code)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn json(code: u16, value: &serde_json::Value) -> Reply {
    Response::from_string(format!("{value}\n"))
        .with_status_code(code)
        .with_header(header("Content-Type", "application/json"))
}

fn handle(request: Request, state: &State<'_>, encoder: &mut Option<JpegEncoder>) {
    let path = request.url().split(['?', '#']).next().unwrap_or("");
    let method = request.method().clone();
    let reading = matches!(method, Method::Get | Method::Head);
    let reply = match (path, reading, &method) {
        ("/metrics", true, _) => Response::from_string(metrics(state)).with_header(header(
            "Content-Type",
            "text/plain; version=0.0.4; charset=utf-8",
        )),
        ("/healthz", true, _) => healthz(state),
        ("/status", true, _) => json(200, &status(state)),
        ("/snapshot.jpg", true, _) => snapshot_jpeg(state, encoder),
        ("/snapshot", _, Method::Post) => take_snapshot(state),
        ("/metrics" | "/healthz" | "/status" | "/snapshot.jpg", _, _) => {
            text(405, "method not allowed: use GET\n").with_header(header("Allow", "GET, HEAD"))
        }
        ("/snapshot", _, _) => {
            text(405, "method not allowed: use POST\n").with_header(header("Allow", "POST"))
        }
        _ => text(
            404,
            "not found; try /metrics, /healthz, /status, /snapshot.jpg or POST /snapshot\n",
        ),
    };
    // A client that went away is no concern of the recorder's.
    let _ = request.respond(reply);
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
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
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
fn snapshot_jpeg(state: &State<'_>, encoder: &mut Option<JpegEncoder>) -> Reply {
    state.preview.watched();
    let mut cache = state.jpeg.lock().unwrap_or_else(|e| e.into_inner());
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
            match preview_jpeg(frame, encoder) {
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
    Response::from_data(jpeg.as_ref().clone())
        .with_header(header("Content-Type", "image/jpeg"))
        .with_header(header("Cache-Control", "no-store"))
}

/// Encodes a preview frame (a camera's JPEG is served as it is).
fn preview_jpeg(
    frame: &Frame,
    encoder: &mut Option<JpegEncoder>,
) -> Result<Vec<u8>, crate::encode::EncodeError> {
    if frame.format == PixelFormat::Mjpeg {
        return Ok(frame.data.clone());
    }
    let encoder = match encoder {
        Some(e) => e,
        None => encoder.insert(JpegEncoder::new(85, Subsampling::S420, TimeZone::Utc)?),
    };
    if frame.format == PixelFormat::Gray16 {
        // JPEG holds 8 bits: the high byte of each (big-endian) sample.
        let mut gray = Frame::with_capacity(frame.data.len() / 2);
        (gray.width, gray.height, gray.format) = (frame.width, frame.height, PixelFormat::Gray);
        gray.captured_at = frame.captured_at;
        gray.data.extend(frame.data.chunks_exact(2).map(|s| s[0]));
        return Ok(encoder.encode(&gray)?.concat());
    }
    Ok(encoder.encode(frame)?.concat())
}

fn take_snapshot(state: &State<'_>) -> Reply {
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
            state.started.elapsed().as_secs_f64(),
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
