//! Raw config → [`Settings`]: one function per section, each building its
//! stage's options type, then the checks that span sections. Every problem
//! is collected with its place; nothing stops at the first.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::{
    RawConfig, RawControl, RawEncoder, RawHttp, RawOutput, RawRetention, RawRing, RawSnapshot,
    RawSource, StringOrInt,
};
use super::{Problems, Settings};
use crate::encode::{self, PngCompression, Subsampling};
use crate::frame::{ImageFormat, PixelFormat, TimeZone, MAX_SIDE};
use crate::retention::{MinFree, Quota};
use crate::ring::{self, Overflow};
use crate::schedule::Every;
use crate::source::v4l2::{ControlSetting, ControlValue};
use crate::source::{self, Kind};
use crate::store::{self, naming::Template};

// Defaults: the built-in demo config (synthetic 1280×720 at 30 fps, one JPEG
// q90 a second into ./frames).
const fn default_width() -> u32 {
    1280
}
const fn default_height() -> u32 {
    720
}
const fn default_fps() -> f64 {
    30.0
}
const fn default_ring_frames() -> usize {
    16
}
const fn default_every() -> Every {
    Every::Interval(Duration::from_secs(1))
}
const fn default_quality() -> u8 {
    90
}
const fn default_file_mode() -> u32 {
    0o640
}
const fn default_dir_mode() -> u32 {
    0o750
}
/// The default `output.name`.
pub(crate) const DEFAULT_NAME: &str = "{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}";
/// The default `camera`.
pub(crate) const DEFAULT_CAMERA: &str = "cam0";
/// The default `source.device`.
pub(crate) const DEFAULT_DEVICE: &str = "/dev/video0";
/// The default `output.dir`.
pub(crate) const DEFAULT_DIR: &str = "./frames";

/// Validates every section, then the checks across sections. `None` if
/// anything is wrong (the problems say what).
pub(super) fn validate(raw: RawConfig, problems: &mut Problems<'_>) -> Option<Settings> {
    let camera = camera(raw.camera.as_ref(), problems);
    let raw_source = raw.source.unwrap_or_default();
    let raw_ring = raw.ring.unwrap_or_default();
    let raw_snapshot = raw.snapshot.unwrap_or_default();
    let raw_output = raw.output.unwrap_or_default();
    let source = source(&raw_source, problems);
    let ring = ring(&raw_ring, problems);
    let snapshot = snapshot(&raw_snapshot, problems);
    let output = output(&raw_output, problems);
    let write_timeout = write_timeout(&raw_output, problems);
    let retention = retention(&raw.retention.unwrap_or_default(), problems);
    let raw_encoder = raw.encoder.unwrap_or_default();
    let raw_threads_auto = raw_encoder
        .threads
        .as_ref()
        .is_none_or(|t| *t.get_ref() == 0);
    let threads = encoder(&raw_encoder, problems);
    // With fsync, a thread waiting for the disk leaves its core idle, and
    // concurrent syncs wait for the same journal commit: two threads a core
    // keep the cores encoding while others wait (measured: one more than
    // the cores left a tenth of them idle).
    let durable = raw_output.fsync.as_ref().is_none_or(|v| *v.get_ref());
    let threads = threads.map(|t| {
        if raw_threads_auto && durable {
            t * 2
        } else {
            t
        }
    });
    let http = http(&raw.http.unwrap_or_default(), problems);

    // Across sections, on the values involved alone (each valid by itself),
    // so a problem elsewhere in a section hides none of these.
    ring_fits_source(source.kind_name, ring.when_full, &raw_ring, problems);
    let format = snapshot.as_ref().map(|(format, _)| *format);
    format_holds_source(
        source.pixel_format,
        format,
        &raw_source,
        &raw_snapshot,
        problems,
    );
    ring_fits_memory(
        &source,
        ring.frames,
        threads,
        &raw_source,
        &raw_ring,
        problems,
    );

    if !problems.is_empty() {
        return None;
    }
    let (every, snapshot) = snapshot?.1?;
    let output = output?;
    Some(Settings {
        camera: camera?,
        source: source.options()?,
        ring: ring::Options {
            frames: ring.frames?,
            when_full: ring.when_full?,
        },
        every,
        encode: encode::Options {
            timezone: output.timezone,
            threads: threads?,
            ..snapshot
        },
        output,
        retention: retention?,
        http: http?,
        write_timeout: write_timeout?,
        threads_auto: raw_threads_auto,
    })
}

/// `[http]`: off unless `listen` is set; an address other machines can
/// reach only with `allow_remote = true` (there is no authentication).
fn http(http: &RawHttp, problems: &mut Problems<'_>) -> Option<Option<crate::http::Options>> {
    let allow_remote = http.allow_remote.as_ref().is_some_and(|v| *v.get_ref());
    let Some(listen) = &http.listen else {
        if http.allow_remote.is_some() {
            problems.at(
                http.allow_remote.as_ref()?,
                "http.allow_remote",
                "has no effect without http.listen (such as listen = \"127.0.0.1:8090\")",
            );
            return None;
        }
        return Some(None);
    };
    let address: std::net::SocketAddr = match listen.get_ref().trim().parse() {
        Ok(address) => address,
        Err(_) => {
            problems.at(
                listen,
                "http.listen",
                format!(
                    "{:?} is not an IP address and port; write it as \"127.0.0.1:8090\" (or \"[::1]:8090\")",
                    listen.get_ref()
                ),
            );
            return None;
        }
    };
    if address.port() == 0 {
        problems.at(
            listen,
            "http.listen",
            "port 0 would be a different port at every start; choose one, such as 8090",
        );
        return None;
    }
    if !address.ip().is_loopback() && !allow_remote {
        problems.at(
            listen,
            "http.listen",
            format!(
                "{address} can be reached from other machines and the endpoints have no authentication; \
                 use 127.0.0.1, or set http.allow_remote = true to serve it anyway"
            ),
        );
        return None;
    }
    Some(Some(crate::http::Options {
        listen: address,
        allow_remote,
    }))
}

/// `camera`: a name that is safe in file names.
fn camera(value: Option<&Spanned<String>>, problems: &mut Problems<'_>) -> Option<String> {
    let Some(value) = value else {
        return Some(DEFAULT_CAMERA.to_owned());
    };
    let name = value.get_ref();
    let good = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !good {
        problems.at(
            value,
            "camera",
            format!("\"{name}\" cannot be used in file names: use 1 to 64 letters, digits, '-', '_' or '.' (not first)"),
        );
        return None;
    }
    Some(name.clone())
}

/// `[source]`'s values, each as far as it is valid by itself.
struct SourceParts<'a> {
    /// The `kind` as written (or its default), valid or not.
    kind_name: &'a str,
    kind: Option<Kind>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    pixel_format: Option<PixelFormat>,
    /// As written, or the default for the size once the size is valid.
    max_frame_bytes: Option<usize>,
    stall_timeout: Option<Option<Duration>>,
    controls: Option<Vec<ControlSetting>>,
    /// No problem in the section at all.
    valid: bool,
}

impl SourceParts<'_> {
    fn options(self) -> Option<source::Options> {
        if !self.valid {
            return None;
        }
        Some(source::Options {
            kind: self.kind?,
            width: self.width?,
            height: self.height?,
            fps: self.fps?,
            pixel_format: self.pixel_format?,
            max_frame_bytes: self.max_frame_bytes?,
            stall_timeout: self.stall_timeout?,
            controls: self.controls?,
        })
    }
}

/// `[source]`.
fn source<'a>(source: &'a RawSource, problems: &mut Problems<'_>) -> SourceParts<'a> {
    let before = problems.len();
    let kind_name = source
        .kind
        .as_ref()
        .map_or("synthetic", |k| k.get_ref().as_str());
    let kind = match kind_name {
        "synthetic" => Some(Kind::Synthetic),
        "raw" => match &source.path {
            Some(path) if !path.get_ref().is_empty() => Some(Kind::Raw {
                path: PathBuf::from(path.get_ref()),
            }),
            Some(path) => {
                problems.at(
                    path,
                    "source.path",
                    "is empty: give a file of raw frames, or \"-\" for stdin",
                );
                None
            }
            None => {
                problems.add(
                    source.kind.as_ref().map(|k| k.span()),
                    "source.path",
                    "kind = \"raw\" needs path = a file of raw frames, or \"-\" for stdin",
                );
                None
            }
        },
        "camera" => Some(Kind::Camera {
            device: source
                .device
                .as_ref()
                .map_or_else(|| DEFAULT_DEVICE.to_owned(), |d| d.get_ref().to_string()),
            strict: source.strict.as_ref().is_some_and(|v| *v.get_ref()),
        }),
        other => {
            problems.add(
                source.kind.as_ref().map(|k| k.span()),
                "source.kind",
                format!("\"{other}\" is not one of: camera, synthetic, raw"),
            );
            None
        }
    };
    let side =
        |value: &Option<Spanned<i64>>, key: &str, default: u32, problems: &mut Problems<'_>| {
            value.as_ref().map_or(Some(default), |v| {
                in_range(v, key, 1..=i64::from(MAX_SIDE), problems).map(|v| v as u32)
            })
        };
    let width = side(&source.width, "source.width", default_width(), problems);
    let height = side(&source.height, "source.height", default_height(), problems);
    let fps = match &source.fps {
        Some(value) => {
            let fps = *value.get_ref();
            if fps.is_finite() && (0.001..=1000.0).contains(&fps) {
                Some(fps)
            } else {
                problems.at(
                    value,
                    "source.fps",
                    format!("{fps} is out of range; use 0.001 (one frame in 1000 s) to 1000"),
                );
                None
            }
        }
        None => Some(default_fps()),
    };
    let pixel_format = match &source.pixel_format {
        Some(value) => match PixelFormat::from_name(value.get_ref()) {
            Some(format) => Some(format),
            None => {
                let names: Vec<&str> = PixelFormat::ALL.iter().map(|f| f.name()).collect();
                problems.at(
                    value,
                    "source.pixel_format",
                    format!(
                        "\"{}\" is not one of: {}",
                        value.get_ref(),
                        names.join(", ")
                    ),
                );
                None
            }
        },
        // Cameras do MJPEG best (and it can be stored as it is).
        None if kind_name == "camera" => Some(PixelFormat::Mjpeg),
        None => Some(PixelFormat::Rgb),
    };
    if let (Some(format), Some(w), Some(h)) = (pixel_format, width, height) {
        let span = source.pixel_format.as_ref().map(|v| v.span());
        if format.needs_even_width() && w % 2 != 0 {
            problems.add(
                span.clone(),
                "source.width",
                format!("{format} needs an even width, got {w}"),
            );
        }
        if format.needs_even_height() && h % 2 != 0 {
            problems.add(
                span,
                "source.height",
                format!("{format} needs an even height, got {h}"),
            );
        }
    }
    if let (Some(PixelFormat::Rgba), "camera") = (pixel_format, kind_name) {
        problems.add(
            source.pixel_format.as_ref().map(|v| v.span()),
            "source.pixel_format",
            "cameras do not deliver rgba: use mjpeg, yuyv, nv12, gray, gray16 or rgb",
        );
    }
    if let (Some(path), "synthetic" | "camera") = (&source.path, kind_name) {
        problems.at(
            path,
            "source.path",
            "is only used by kind = \"raw\"; remove it or set kind = \"raw\"",
        );
    }
    let max_frame_bytes = match &source.max_frame_bytes {
        Some(value) => max_frame_bytes(value, kind_name, pixel_format, problems),
        None => match (width, height) {
            (Some(w), Some(h)) => Some(source::default_max_frame_bytes(w, h)),
            _ => None,
        },
    };
    let stall_timeout =
        match &source.stall_timeout {
            None => Some(None),
            Some(value) => camera_only(value, "source.stall_timeout", kind_name, problems)
                .and_then(|()| match parse_duration(value.get_ref()) {
                    Ok(d) if d >= Duration::from_millis(100) => Some(Some(d)),
                    Ok(_) => {
                        problems.at(value, "source.stall_timeout", "must be at least 100ms");
                        None
                    }
                    Err(e) => {
                        problems.at(value, "source.stall_timeout", e);
                        None
                    }
                }),
        };
    let controls = match &source.controls {
        None => Some(Vec::new()),
        Some(table) => camera_only(table, "source.controls", kind_name, problems).map(|()| {
            table
                .get_ref()
                .iter()
                .map(|(name, value)| ControlSetting {
                    name: name.clone(),
                    value: match value.get_ref() {
                        RawControl::Int(n) => ControlValue::Number(*n),
                        RawControl::Bool(b) => ControlValue::Number(i64::from(*b)),
                        RawControl::Str(text) => ControlValue::Name(text.clone()),
                    },
                })
                .collect()
        }),
    };
    SourceParts {
        kind_name,
        kind,
        width,
        height,
        fps,
        pixel_format,
        max_frame_bytes,
        stall_timeout,
        controls,
        valid: problems.len() == before,
    }
}

/// Refuses a camera setting for another kind of source.
fn camera_only<T>(
    value: &Spanned<T>,
    key: &str,
    kind_name: &str,
    problems: &mut Problems<'_>,
) -> Option<()> {
    if kind_name == "camera" {
        return Some(());
    }
    problems.at(
        value,
        key,
        "is only used by kind = \"camera\"; remove it or set kind = \"camera\"",
    );
    None
}

/// The limits of `source.max_frame_bytes`: a JPEG's headers alone take a
/// few hundred bytes; no camera sends a gigabyte a frame.
const FRAME_BYTES: RangeInclusive<u64> = 1 << 10..=1 << 30;

/// `source.max_frame_bytes`: a size, for MJPEG frames only.
fn max_frame_bytes(
    value: &Spanned<StringOrInt>,
    kind_name: &str,
    pixel_format: Option<PixelFormat>,
    problems: &mut Problems<'_>,
) -> Option<usize> {
    const KEY: &str = "source.max_frame_bytes";
    let bytes = parse_size_value(value, KEY, problems)?;
    if !FRAME_BYTES.contains(&bytes) {
        problems.at(
            value,
            KEY,
            format!(
                "{bytes} bytes is out of range; use \"1KiB\" to \"1GiB\" (the largest MJPEG frame to keep)"
            ),
        );
        return None;
    }
    if kind_name != "camera" && pixel_format.is_some_and(|f| f != PixelFormat::Mjpeg) {
        problems.at(
            value,
            KEY,
            "bounds MJPEG frames only: remove it, or set pixel_format = \"mjpeg\"",
        );
        return None;
    }
    usize::try_from(bytes).ok()
}

/// `[ring]`'s values, each as far as it is valid by itself.
struct RingParts {
    frames: Option<usize>,
    when_full: Option<Overflow>,
}

/// `[ring]`.
fn ring(ring: &RawRing, problems: &mut Problems<'_>) -> RingParts {
    let frames = ring
        .frames
        .as_ref()
        .map_or(Some(default_ring_frames()), |v| {
            in_range(v, "ring.frames", 1..=1024, problems).map(|v| v as usize)
        });
    let when_full = ring
        .when_full
        .as_ref()
        .map_or(Some(Overflow::DropOldest), |v| {
            one_of(v, "ring.when_full", &Overflow::ALL, problems)
        });
    RingParts { frames, when_full }
}

/// `[snapshot]`: the file format as soon as it is valid, and once the whole
/// section is, the schedule's `every` and the encoders' options (their time
/// zone and thread count are filled in from other sections).
type SnapshotParts = (ImageFormat, Option<(Every, encode::Options)>);

/// `[snapshot]`.
fn snapshot(snapshot: &RawSnapshot, problems: &mut Problems<'_>) -> Option<SnapshotParts> {
    let every = match &snapshot.every {
        Some(value) if value.get_ref() == "frame" => Some(Every::Frame),
        Some(value) => match parse_duration(value.get_ref()) {
            Ok(d) if d >= Duration::from_millis(1) => Some(Every::Interval(d)),
            Ok(_) => {
                problems.at(
                    value,
                    "snapshot.every",
                    "must be at least 1ms, or \"frame\"",
                );
                None
            }
            Err(e) => {
                problems.at(value, "snapshot.every", format!("{e}, or \"frame\""));
                None
            }
        },
        None => Some(default_every()),
    };
    let format = snapshot
        .format
        .as_ref()
        .map_or(Some(ImageFormat::Jpeg), |v| {
            one_of(
                v,
                "snapshot.format",
                &[
                    ("jpeg", ImageFormat::Jpeg),
                    ("jpg", ImageFormat::Jpeg),
                    ("png", ImageFormat::Png),
                ],
                problems,
            )
        });
    let quality = snapshot
        .quality
        .as_ref()
        .map_or(Some(default_quality()), |v| {
            in_range(v, "snapshot.quality", 1..=100, problems).map(|v| v as u8)
        });
    let subsampling = match &snapshot.subsampling {
        Some(value) => {
            let text = value.get_ref().to_string();
            let choice = Subsampling::ALL.into_iter().find(|(n, _)| *n == text);
            if choice.is_none() {
                problems.at(
                    value,
                    "snapshot.subsampling",
                    format!("\"{text}\" is not one of: 444, 422, 420, gray"),
                );
            }
            choice.map(|(_, s)| s)
        }
        None => Some(Subsampling::S420),
    };
    let compression = snapshot
        .compression
        .as_ref()
        .map_or(Some(PngCompression::Fast), |v| {
            one_of(
                v,
                "snapshot.compression",
                &[
                    ("fast", PngCompression::Fast),
                    ("default", PngCompression::Default),
                    ("best", PngCompression::Best),
                ],
                problems,
            )
        });
    let passthrough = snapshot.passthrough.as_ref().is_none_or(|v| *v.get_ref());
    let format = format?;
    let options = || {
        Some((
            every?,
            encode::Options {
                format,
                quality: quality?,
                subsampling: subsampling?,
                compression: compression?,
                passthrough,
                timezone: TimeZone::Utc,
                threads: 1,
            },
        ))
    };
    Some((format, options()))
}

/// A duration of at least `min`, or a problem saying what is wrong.
fn duration_at_least(
    value: &Spanned<String>,
    key: &str,
    min: Duration,
    problems: &mut Problems<'_>,
) -> Option<Duration> {
    match parse_duration(value.get_ref()) {
        Ok(d) if d >= min => Some(d),
        Ok(_) => {
            let min = humantime::format_duration(min);
            problems.at(value, key, format!("must be at least {min}"));
            None
        }
        Err(e) => {
            problems.at(value, key, e);
            None
        }
    }
}

/// `output.write_timeout`: how long picked frames may wait with no file
/// written before the writer counts as wedged (the supervisor's health
/// check, not the store's).
pub(super) fn write_timeout(output: &RawOutput, problems: &mut Problems<'_>) -> Option<Duration> {
    match &output.write_timeout {
        None => Some(DEFAULT_WRITE_TIMEOUT),
        Some(v) => duration_at_least(v, "output.write_timeout", Duration::from_secs(1), problems),
    }
}

/// The default `output.write_timeout`: a PNG "best" of a large frame takes
/// seconds, a slow network filesystem a few more; nothing sane takes this.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `[output]`.
fn output(output: &RawOutput, problems: &mut Problems<'_>) -> Option<store::Options> {
    let dir = match &output.dir {
        Some(value) if value.get_ref().trim().is_empty() => {
            problems.at(
                value,
                "output.dir",
                "is empty: give the directory to write into",
            );
            None
        }
        Some(value) => Some(PathBuf::from(value.get_ref())),
        None => Some(PathBuf::from(DEFAULT_DIR)),
    };
    let name = match &output.name {
        Some(value) => match Template::parse(value.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.at(value, "output.name", e.to_string());
                None
            }
        },
        None => Template::parse(DEFAULT_NAME).ok(),
    };
    let timezone = output.timezone.as_ref().map_or(Some(TimeZone::Utc), |v| {
        one_of(
            v,
            "output.timezone",
            &[("utc", TimeZone::Utc), ("local", TimeZone::Local)],
            problems,
        )
    });
    let fsync = output.fsync.as_ref().is_none_or(|v| *v.get_ref());
    let manifest = output.manifest.as_ref().is_none_or(|v| *v.get_ref());
    let file_mode = output
        .file_mode
        .as_ref()
        .map_or(Some(default_file_mode()), |v| {
            parse_mode(v, "output.file_mode", problems)
        });
    let dir_mode = output
        .dir_mode
        .as_ref()
        .map_or(Some(default_dir_mode()), |v| {
            let mode = parse_mode(v, "output.dir_mode", problems)?;
            if mode & 0o700 != 0o700 {
                problems.at(
                    v,
                    "output.dir_mode",
                    format!(
                        "\"{:04o}\" does not let framerec itself list and write the directories it makes; keep the owner's rwx, such as \"0750\"",
                        mode
                    ),
                );
                return None;
            }
            Some(mode)
        });
    Some(store::Options {
        dir: dir?,
        name: name?,
        timezone: timezone?,
        fsync,
        manifest,
        file_mode: file_mode?,
        dir_mode: dir_mode?,
    })
}

/// `[retention]`: any subset of the limits.
fn retention(retention: &RawRetention, problems: &mut Problems<'_>) -> Option<Quota> {
    let before = problems.len();
    let max_bytes = retention.max_bytes.as_ref().and_then(|v| {
        let bytes = parse_size_value(v, "retention.max_bytes", problems)?;
        if bytes == 0 {
            problems.at(v, "retention.max_bytes", "must be more than 0");
            return None;
        }
        Some(bytes)
    });
    let max_files = retention
        .max_files
        .as_ref()
        .and_then(|v| in_range(v, "retention.max_files", 1..=i64::MAX, problems).map(|n| n as u64));
    let max_age = retention
        .max_age
        .as_ref()
        .and_then(|v| duration_at_least(v, "retention.max_age", Duration::from_secs(1), problems));
    let min_free = retention.min_free.as_ref().and_then(|v| {
        if let StringOrInt::Str(text) = v.get_ref() {
            if let Some(percent) = text.trim().strip_suffix('%') {
                return match percent.trim().parse::<f64>() {
                    Ok(p) if p > 0.0 && p < 100.0 => Some(MinFree::Percent(p)),
                    _ => {
                        problems.at(
                            v,
                            "retention.min_free",
                            format!("\"{text}\" is not a percentage between 0% and 100%"),
                        );
                        None
                    }
                };
            }
        }
        parse_size_value(v, "retention.min_free", problems).map(MinFree::Bytes)
    });
    (problems.len() == before).then_some(Quota {
        max_bytes,
        max_files,
        max_age,
        min_free,
    })
}

/// `[encoder]`: the thread count (0 = one per core).
fn encoder(encoder: &RawEncoder, problems: &mut Problems<'_>) -> Option<usize> {
    match &encoder.threads {
        Some(v) => in_range(v, "encoder.threads", 0..=256, problems).map(|v| v as usize),
        None => Some(0),
    }
    .map(|t| {
        if t == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            t
        }
    })
}

/// A camera cannot wait for the encoders: `block` is for files only.
fn ring_fits_source(
    kind_name: &str,
    when_full: Option<Overflow>,
    raw_ring: &RawRing,
    problems: &mut Problems<'_>,
) {
    if when_full == Some(Overflow::Block) && matches!(kind_name, "synthetic" | "camera") {
        problems.add(
            raw_ring.when_full.as_ref().map(|v| v.span()),
            "ring.when_full",
            "\"block\" is only for kind = \"raw\": a camera cannot wait; use \"drop-oldest\" or \"drop-newest\"",
        );
    }
}

/// JPEG holds neither 16-bit samples nor alpha.
fn format_holds_source(
    pixel_format: Option<PixelFormat>,
    format: Option<ImageFormat>,
    raw_source: &RawSource,
    raw_snapshot: &RawSnapshot,
    problems: &mut Problems<'_>,
) {
    if format != Some(ImageFormat::Jpeg) {
        return;
    }
    let span = raw_snapshot
        .format
        .as_ref()
        .map(|v| v.span())
        .or(raw_source.pixel_format.as_ref().map(|v| v.span()));
    match pixel_format {
        Some(PixelFormat::Gray16) => problems.add(span, "snapshot.format", "JPEG holds 8 bits a sample and would lose the low byte of gray16: use format = \"png\""),
        Some(PixelFormat::Rgba) => problems.add(span, "snapshot.format", "JPEG cannot hold the alpha channel of rgba: use format = \"png\", or pixel_format = \"rgb\""),
        _ => {}
    }
}

/// Every buffer is allocated up front, and MJPEG buffers may grow to
/// `source.max_frame_bytes`: refuse a ring that cannot fit.
fn ring_fits_memory(
    source: &SourceParts<'_>,
    frames: Option<usize>,
    threads: Option<usize>,
    raw_source: &RawSource,
    raw_ring: &RawRing,
    problems: &mut Problems<'_>,
) {
    let (Some(pf), Some(w), Some(h), Some(max_frame), Some(frames), Some(threads)) = (
        source.pixel_format,
        source.width,
        source.height,
        source.max_frame_bytes,
        frames,
        threads,
    ) else {
        return;
    };
    let camera = source.kind_name == "camera";
    let frame = source::grown_buffer_bytes(camera, pf, w, h, max_frame) as u64;
    let buffers = ring::buffer_count(frames, threads) as u64;
    if frame * buffers <= ring::MAX_BYTES {
        return;
    }
    let total = (frame * buffers) >> 20;
    let allowed = ring::MAX_BYTES >> 20;
    let grows = frame > pf.buffer_capacity(w, h) as u64;
    match &raw_source.max_frame_bytes {
        // The limit the user set is what does not fit.
        Some(value) if grows => problems.at(
            value,
            "source.max_frame_bytes",
            format!(
                "{buffers} buffers that may each grow to {frame} bytes take {total} MiB, more than the {allowed} MiB allowed: lower source.max_frame_bytes or ring.frames"
            ),
        ),
        _ if grows => problems.add(
            raw_ring.frames.as_ref().map(|v| v.span()),
            "ring.frames",
            format!(
                "{buffers} buffers of {w}x{h} MJPEG frames (each up to source.max_frame_bytes = {frame} bytes) take {total} MiB, more than the {allowed} MiB allowed: lower ring.frames, the frame size or source.max_frame_bytes"
            ),
        ),
        _ => problems.add(
            raw_ring.frames.as_ref().map(|v| v.span()),
            "ring.frames",
            format!(
                "{buffers} buffers of {w}x{h} {pf} take {total} MiB, more than the {allowed} MiB allowed: lower ring.frames or the frame size"
            ),
        ),
    }
}

fn one_of<T: Copy>(
    value: &Spanned<String>,
    key: &str,
    choices: &[(&str, T)],
    problems: &mut Problems<'_>,
) -> Option<T> {
    let text = value.get_ref().as_str();
    match choices.iter().find(|(name, _)| *name == text) {
        Some((_, choice)) => Some(*choice),
        None => {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            problems.at(
                value,
                key,
                format!("\"{text}\" is not one of: {}", names.join(", ")),
            );
            None
        }
    }
}

fn in_range(
    value: &Spanned<i64>,
    key: &str,
    range: RangeInclusive<i64>,
    problems: &mut Problems<'_>,
) -> Option<i64> {
    let v = *value.get_ref();
    if range.contains(&v) {
        Some(v)
    } else {
        problems.at(
            value,
            key,
            format!(
                "{v} is out of range; use {} to {}",
                range.start(),
                range.end()
            ),
        );
        None
    }
}

/// A size such as `"50GiB"`, `"500 MB"` or a plain number of bytes.
fn parse_size_value(
    value: &Spanned<StringOrInt>,
    key: &str,
    problems: &mut Problems<'_>,
) -> Option<u64> {
    match value.get_ref() {
        StringOrInt::Int(n) if *n >= 0 => Some(*n as u64),
        StringOrInt::Int(n) => {
            problems.at(value, key, format!("{n} is negative"));
            None
        }
        StringOrInt::Str(text) => match parse_size::parse_size(text.trim()) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                problems.at(
                    value,
                    key,
                    format!("\"{text}\" is not a size such as \"50GiB\" or \"500MB\" ({e})"),
                );
                None
            }
        },
    }
}

fn parse_mode(value: &Spanned<String>, key: &str, problems: &mut Problems<'_>) -> Option<u32> {
    match u32::from_str_radix(value.get_ref(), 8) {
        Ok(mode) if mode <= 0o777 => Some(mode),
        _ => {
            problems.at(
                value,
                key,
                format!(
                    "\"{}\" is not an octal permission such as \"0640\"",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// The longest duration accepted anywhere (config or command line): far
/// beyond any recording, and far from the clock arithmetic's limits.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Parses `"500ms"`, `"10s"`, `"5m"`, `"1h 30m"` (humantime's syntax), up to
/// `MAX_DURATION` (100 years).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a duration such as \"500ms\", \"10s\" or \"5m\" ({e})")
    })?;
    if duration > MAX_DURATION {
        return Err(format!(
            "\"{text}\" is longer than {} (100 years)",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(duration)
}
