//! Configuration: TOML text → raw serde structs (`deny_unknown_fields`, every
//! value with its span) → validated [`Settings`] with typed values.
//!
//! [`Settings::from_toml`] reports *every* problem it can find at once, each
//! with its line and column: all unknown keys, one type error per section,
//! then every out-of-range or inconsistent value. Nothing here does I/O
//! except [`Settings::load`], which reads the file.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::frame::{ImageFormat, PixelFormat};
use crate::retention::plan::{MinFree, Quota};
use crate::store::naming::{Template, TimeZone};

/// Largest accepted frame side, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most memory the ring's frame buffers may take together.
pub const MAX_RING_BYTES: u64 = 8 << 30;

/// Everything framerec needs to record, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The camera's name, used in file names, the manifest and logs.
    pub camera: String,
    pub source: SourceSettings,
    pub ring: RingSettings,
    pub snapshot: SnapshotSettings,
    pub output: OutputSettings,
    /// The quota; empty when `[retention]` gives no limit.
    pub retention: Quota,
    pub encoder: EncoderSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    /// A V4L2 camera: `device` is a path, an index or part of its name.
    Camera { device: String, strict: bool },
    /// A moving test pattern made in memory.
    Synthetic,
    /// Back-to-back raw frames (or concatenated JPEGs) from a file or stdin.
    Raw { path: PathBuf },
}

impl SourceKind {
    /// The `kind` value.
    pub const fn name(&self) -> &'static str {
        match self {
            SourceKind::Camera { .. } => "camera",
            SourceKind::Synthetic => "synthetic",
            SourceKind::Raw { .. } => "raw",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceSettings {
    pub kind: SourceKind,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub pixel_format: PixelFormat,
    /// The camera to open (`kind = "camera"`): a path, an index or a name.
    pub device: Option<String>,
}

/// What a full ring does with the next frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest waiting frame to make room (the default: newest data wins).
    DropOldest,
    /// Drop the frame just captured.
    DropNewest,
    /// Make capture wait for an encoder (files only: a camera would lose frames anyway).
    Block,
}

impl Overflow {
    pub const fn name(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop-oldest",
            Overflow::DropNewest => "drop-newest",
            Overflow::Block => "block",
        }
    }
}

#[derive(Clone, Debug)]
pub struct RingSettings {
    pub frames: usize,
    pub when_full: Overflow,
}

/// Which captured frames become snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// Every captured frame.
    Frame,
    /// One frame per tick of this interval, ticks on the wall-clock grid.
    Interval(Duration),
}

/// JPEG chroma subsampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subsampling {
    S444,
    S422,
    S420,
    Gray,
}

impl Subsampling {
    pub const fn name(self) -> &'static str {
        match self {
            Subsampling::S444 => "444",
            Subsampling::S422 => "422",
            Subsampling::S420 => "420",
            Subsampling::Gray => "gray",
        }
    }
}

/// PNG deflate effort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PngCompression {
    Fast,
    Default,
    Best,
}

impl PngCompression {
    pub const fn name(self) -> &'static str {
        match self {
            PngCompression::Fast => "fast",
            PngCompression::Default => "default",
            PngCompression::Best => "best",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SnapshotSettings {
    pub every: Every,
    pub format: ImageFormat,
    pub quality: u8,
    pub subsampling: Subsampling,
    pub compression: PngCompression,
    pub passthrough: bool,
}

#[derive(Clone, Debug)]
pub struct OutputSettings {
    pub dir: PathBuf,
    pub name: Template,
    pub timezone: TimeZone,
    pub fsync: bool,
    pub manifest: bool,
    /// Permission bits of written files (before the umask).
    pub file_mode: u32,
    /// Permission bits of created directories (before the umask).
    pub dir_mode: u32,
}

#[derive(Clone, Debug)]
pub struct EncoderSettings {
    /// Worker threads; never 0 (0 in the file means one per core).
    pub threads: usize,
}

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The key, such as `snapshot.quality` (empty for syntax errors).
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.position {
            write!(f, "line {line}, column {column}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has {} problem{}:\n{}", origin.display(), problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.iter().map(|p| format!("  {}: {p}", origin.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: PathBuf,
        problems: Vec<Problem>,
    },
}

// ---------------------------------------------------------------------------
// Raw structs: what the file says, with spans for error positions.

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    camera: Option<Spanned<String>>,
    source: Option<RawSource>,
    ring: Option<RawRing>,
    snapshot: Option<RawSnapshot>,
    output: Option<RawOutput>,
    retention: Option<RawRetention>,
    encoder: Option<RawEncoder>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Option<Spanned<String>>,
    device: Option<Spanned<StringOrInt>>,
    width: Option<Spanned<i64>>,
    height: Option<Spanned<i64>>,
    fps: Option<Spanned<f64>>,
    pixel_format: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    strict: Option<Spanned<bool>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRing {
    frames: Option<Spanned<i64>>,
    when_full: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    every: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    quality: Option<Spanned<i64>>,
    subsampling: Option<Spanned<StringOrInt>>,
    compression: Option<Spanned<String>>,
    passthrough: Option<Spanned<bool>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    fsync: Option<Spanned<bool>>,
    manifest: Option<Spanned<bool>>,
    file_mode: Option<Spanned<String>>,
    dir_mode: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_bytes: Option<Spanned<StringOrInt>>,
    max_files: Option<Spanned<i64>>,
    max_age: Option<Spanned<String>>,
    min_free: Option<Spanned<StringOrInt>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEncoder {
    threads: Option<Spanned<i64>>,
}

/// A value written either as a string or as a bare integer
/// (`subsampling = 420` or `"420"`, `device = 0` or `"/dev/video0"`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(untagged)]
enum StringOrInt {
    Str(String),
    Int(i64),
}

impl fmt::Display for StringOrInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringOrInt::Str(s) => f.write_str(s),
            StringOrInt::Int(i) => write!(f, "{i}"),
        }
    }
}

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
pub const DEFAULT_NAME: &str = "{camera}/{time:%Y-%m-%d}/{camera}-{seq}.{ext}";
/// The default `camera`.
pub const DEFAULT_CAMERA: &str = "cam0";
/// The default `source.device`.
pub const DEFAULT_DEVICE: &str = "/dev/video0";
/// The default `output.dir`.
pub const DEFAULT_DIR: &str = "./frames";

/// The field names serde knows for `T`, read from its `Deserialize` impl so
/// the unknown-key check can never disagree with the structs.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Introspect(Option<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for &mut Introspect {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("introspection only"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("introspection only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            enum identifier ignored_any
        }
    }
    let mut introspect = Introspect(None);
    let _ = T::deserialize(&mut introspect);
    introspect.0.unwrap_or(&[])
}

/// Turns byte offsets into 1-based line and column.
struct Positions<'a> {
    text: &'a str,
}

impl Positions<'_> {
    fn at(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

/// Collects problems while validating.
struct Problems<'a> {
    positions: Positions<'a>,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.list.push(Problem {
            position: span.map(|s| self.positions.at(s.start)),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.add(Some(value.span()), key, message);
    }
}

impl Settings {
    /// The built-in config of `framerec run` without `--config`.
    pub fn demo() -> Settings {
        Settings::from_toml("", Path::new("<built-in>")).expect("the built-in config is valid")
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Settings::from_toml(&text, path)
    }

    /// Validates config text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Settings, ConfigError> {
        let mut problems = Problems {
            positions: Positions { text },
            list: Vec::new(),
        };
        let raw = parse_raw(text, &mut problems);
        let settings = raw.and_then(|raw| validate(raw, &mut problems));
        // In file order; problems without a place last.
        problems
            .list
            .sort_by_key(|p| p.position.unwrap_or((usize::MAX, 0)));
        match settings {
            Some(settings) if problems.list.is_empty() => Ok(settings),
            _ => Err(ConfigError::Invalid {
                origin: origin.to_owned(),
                problems: problems.list,
            }),
        }
    }

    /// The snapshot files' extension (`{ext}`).
    pub fn extension(&self) -> &'static str {
        self.snapshot.format.extension()
    }

    /// Whether frames are stored as the source's own JPEG bytes.
    pub fn passthrough(&self) -> bool {
        self.snapshot.passthrough
            && self.snapshot.format == ImageFormat::Jpeg
            && self.source.pixel_format == PixelFormat::Mjpeg
    }
}

/// Deserializes one section (or the top-level `camera`) from a value, to
/// check it on its own.
fn check_section(name: &str, value: Spanned<DeValue<'_>>) -> Result<(), toml::de::Error> {
    let deserializer = toml::de::ValueDeserializer::from(value);
    match name {
        "camera" => Spanned::<String>::deserialize(deserializer).map(drop),
        "source" => RawSource::deserialize(deserializer).map(drop),
        "ring" => RawRing::deserialize(deserializer).map(drop),
        "snapshot" => RawSnapshot::deserialize(deserializer).map(drop),
        "output" => RawOutput::deserialize(deserializer).map(drop),
        "retention" => RawRetention::deserialize(deserializer).map(drop),
        "encoder" => RawEncoder::deserialize(deserializer).map(drop),
        _ => Ok(()),
    }
}

/// Parses the text into raw structs. Unknown keys and values of the wrong
/// type are reported and left out, key by key, so the rest is still
/// validated and every problem is listed at once; only a syntax error stops
/// early.
fn parse_raw(text: &str, problems: &mut Problems<'_>) -> Option<RawConfig> {
    let document = match toml::de::DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            problems.add(error.span(), "", error.message().trim().to_owned());
            return None;
        }
    };
    let sections: [(&str, &'static [&'static str]); 6] = [
        ("source", field_names::<RawSource>()),
        ("ring", field_names::<RawRing>()),
        ("snapshot", field_names::<RawSnapshot>()),
        ("output", field_names::<RawOutput>()),
        ("retention", field_names::<RawRetention>()),
        ("encoder", field_names::<RawEncoder>()),
    ];
    let top = field_names::<RawConfig>();
    let document_span = document.span();
    let mut clean = DeTable::new();
    for (key, value) in document.into_inner() {
        let name = key.get_ref().to_string();
        if !top.contains(&name.as_str()) {
            problems.add(
                Some(key.span()),
                &name,
                format!("unknown key; expected one of: {}", top.join(", ")),
            );
            continue;
        }
        let Some((_, fields)) = sections.iter().find(|(s, _)| *s == name) else {
            // A top-level value such as `camera`.
            match check_section(&name, value.clone()) {
                Ok(()) => {
                    clean.insert(key, value);
                }
                Err(error) => problems.add(
                    error.span().or(Some(value.span())),
                    &name,
                    error.message().trim().to_owned(),
                ),
            }
            continue;
        };
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            problems.add(Some(span), &name, format!("must be a table: [{name}]"));
            continue;
        };
        let mut kept = DeTable::new();
        for (inner, inner_value) in table {
            let inner_name = inner.get_ref().to_string();
            let key_path = format!("{name}.{inner_name}");
            if !fields.contains(&inner_name.as_str()) {
                problems.add(
                    Some(inner.span()),
                    &key_path,
                    format!("unknown key; [{name}] takes: {}", fields.join(", ")),
                );
                continue;
            }
            let mut single = DeTable::new();
            single.insert(inner.clone(), inner_value.clone());
            if let Err(error) =
                check_section(&name, Spanned::new(span.clone(), DeValue::Table(single)))
            {
                let at = error.span().unwrap_or(inner_value.span());
                problems.add(Some(at), &key_path, error.message().trim().to_owned());
                continue;
            }
            kept.insert(inner, inner_value);
        }
        clean.insert(key, Spanned::new(span, DeValue::Table(kept)));
    }
    let deserializer =
        toml::de::ValueDeserializer::from(Spanned::new(document_span, DeValue::Table(clean)));
    match RawConfig::deserialize(deserializer) {
        Ok(raw) => Some(raw),
        Err(error) => {
            problems.add(error.span(), "", error.message().trim().to_owned());
            None
        }
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
    range: std::ops::RangeInclusive<i64>,
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

/// Parses `"500ms"`, `"10s"`, `"5m"`, `"1h 30m"` (humantime's syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("\"{text}\" is not a duration such as \"500ms\", \"10s\" or \"5m\" ({e})")
    })
}

fn validate(raw: RawConfig, problems: &mut Problems<'_>) -> Option<Settings> {
    let mut ok = true;

    let camera = match &raw.camera {
        Some(value) => {
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
                ok = false;
            }
            name.clone()
        }
        None => DEFAULT_CAMERA.to_owned(),
    };

    // [source]
    let source = raw.source.unwrap_or_default();
    let kind_name = source
        .kind
        .as_ref()
        .map_or("synthetic", |k| k.get_ref().as_str());
    let kind = match kind_name {
        "synthetic" => Some(SourceKind::Synthetic),
        "raw" => match &source.path {
            Some(path) if !path.get_ref().is_empty() => Some(SourceKind::Raw {
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
        "camera" => Some(SourceKind::Camera {
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
    ok &= kind.is_some();
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
            ok = false;
        }
        if format.needs_even_height() && h % 2 != 0 {
            problems.add(
                span,
                "source.height",
                format!("{format} needs an even height, got {h}"),
            );
            ok = false;
        }
    }
    if let (Some(PixelFormat::Rgba), "camera") = (pixel_format, kind_name) {
        problems.add(
            source.pixel_format.as_ref().map(|v| v.span()),
            "source.pixel_format",
            "cameras do not deliver rgba: use mjpeg, yuyv, nv12, gray, gray16 or rgb",
        );
        ok = false;
    }
    if let (Some(path), "synthetic" | "camera") = (&source.path, kind_name) {
        problems.at(
            path,
            "source.path",
            "is only used by kind = \"raw\"; remove it or set kind = \"raw\"",
        );
        ok = false;
    }

    // [ring]
    let ring = raw.ring.unwrap_or_default();
    let ring_frames = ring
        .frames
        .as_ref()
        .map_or(Some(default_ring_frames()), |v| {
            in_range(v, "ring.frames", 1..=1024, problems).map(|v| v as usize)
        });
    let when_full = ring
        .when_full
        .as_ref()
        .map_or(Some(Overflow::DropOldest), |v| {
            one_of(
                v,
                "ring.when_full",
                &[
                    ("drop-oldest", Overflow::DropOldest),
                    ("drop-newest", Overflow::DropNewest),
                    ("block", Overflow::Block),
                ],
                problems,
            )
        });
    if let (Some(Overflow::Block), Some(SourceKind::Synthetic | SourceKind::Camera { .. })) =
        (when_full, &kind)
    {
        problems.add(
            ring.when_full.as_ref().map(|v| v.span()),
            "ring.when_full",
            "\"block\" is only for kind = \"raw\": a camera cannot wait; use \"drop-oldest\" or \"drop-newest\"",
        );
        ok = false;
    }

    // [snapshot]
    let snapshot = raw.snapshot.unwrap_or_default();
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
            let choice = [
                ("444", Subsampling::S444),
                ("422", Subsampling::S422),
                ("420", Subsampling::S420),
                ("gray", Subsampling::Gray),
            ]
            .into_iter()
            .find(|(n, _)| *n == text);
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
    if let (Some(ImageFormat::Jpeg), Some(pf)) = (format, pixel_format) {
        let span = snapshot
            .format
            .as_ref()
            .map(|v| v.span())
            .or(source.pixel_format.as_ref().map(|v| v.span()));
        match pf {
            PixelFormat::Gray16 => {
                problems.add(span, "snapshot.format", "JPEG holds 8 bits a sample and would lose the low byte of gray16: use format = \"png\"");
                ok = false;
            }
            PixelFormat::Rgba => {
                problems.add(span, "snapshot.format", "JPEG cannot hold the alpha channel of rgba: use format = \"png\", or pixel_format = \"rgb\"");
                ok = false;
            }
            _ => {}
        }
    }

    // [output]
    let output = raw.output.unwrap_or_default();
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
            parse_mode(v, "output.dir_mode", problems)
        });

    // [retention]
    let retention = raw.retention.unwrap_or_default();
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
        .and_then(|v| match parse_duration(v.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) => Some(d),
            Ok(_) => {
                problems.at(v, "retention.max_age", "must be at least 1s");
                None
            }
            Err(e) => {
                problems.at(v, "retention.max_age", e);
                None
            }
        });
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
    let quota = Quota {
        max_bytes,
        max_files,
        max_age,
        min_free,
    };

    // [encoder]
    let encoder = raw.encoder.unwrap_or_default();
    let threads = match &encoder.threads {
        Some(v) => in_range(v, "encoder.threads", 0..=256, problems).map(|v| v as usize),
        None => Some(0),
    }
    .map(|t| {
        if t == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            t
        }
    });

    // Every buffer is allocated up front: refuse a ring that cannot fit.
    if let (Some(pf), Some(w), Some(h), Some(frames), Some(threads)) =
        (pixel_format, width, height, ring_frames, threads)
    {
        let frame = crate::source::buffer_capacity(w, h, pf) as u64;
        let buffers = (frames + threads + crate::ring::HELD_BY_CAPTURE) as u64;
        if frame * buffers > MAX_RING_BYTES {
            problems.add(
                ring.frames.as_ref().map(|v| v.span()),
                "ring.frames",
                format!(
                    "{buffers} buffers of {w}x{h} {pf} take {} MiB, more than the {} MiB allowed: lower ring.frames or the frame size",
                    (frame * buffers) >> 20,
                    MAX_RING_BYTES >> 20
                ),
            );
        }
    }

    if !ok || !problems.list.is_empty() {
        return None;
    }
    Some(Settings {
        camera,
        source: SourceSettings {
            kind: kind?,
            width: width?,
            height: height?,
            fps: fps?,
            pixel_format: pixel_format?,
            device: source.device.as_ref().map(|d| d.get_ref().to_string()),
        },
        ring: RingSettings {
            frames: ring_frames?,
            when_full: when_full?,
        },
        snapshot: SnapshotSettings {
            every: every?,
            format: format?,
            quality: quality?,
            subsampling: subsampling?,
            compression: compression?,
            passthrough,
        },
        output: OutputSettings {
            dir: dir?,
            name: name?,
            timezone: timezone?,
            fsync,
            manifest,
            file_mode: file_mode?,
            dir_mode: dir_mode?,
        },
        retention: quota,
        encoder: EncoderSettings { threads: threads? },
    })
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The effective settings, as a config file that would give them.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "camera = {}", toml_str(&self.camera))?;
        writeln!(f, "\n[source]")?;
        match &self.source.kind {
            SourceKind::Synthetic => writeln!(f, "kind = \"synthetic\"")?,
            SourceKind::Camera { device, strict } => {
                writeln!(f, "kind = \"camera\"")?;
                writeln!(f, "device = {}", toml_str(device))?;
                writeln!(f, "strict = {strict}")?;
            }
            SourceKind::Raw { path } => {
                writeln!(f, "kind = \"raw\"")?;
                writeln!(f, "path = {}", toml_str(&path.to_string_lossy()))?;
            }
        }
        writeln!(f, "width = {}", self.source.width)?;
        writeln!(f, "height = {}", self.source.height)?;
        writeln!(f, "fps = {}", self.source.fps)?;
        writeln!(f, "pixel_format = \"{}\"", self.source.pixel_format)?;
        writeln!(f, "\n[ring]")?;
        writeln!(f, "frames = {}", self.ring.frames)?;
        writeln!(f, "when_full = \"{}\"", self.ring.when_full.name())?;
        writeln!(f, "\n[snapshot]")?;
        match self.snapshot.every {
            Every::Frame => writeln!(f, "every = \"frame\"")?,
            Every::Interval(d) => writeln!(f, "every = \"{}\"", humantime::format_duration(d))?,
        }
        writeln!(f, "format = \"{}\"", self.snapshot.format)?;
        writeln!(f, "quality = {}", self.snapshot.quality)?;
        writeln!(f, "subsampling = \"{}\"", self.snapshot.subsampling.name())?;
        writeln!(f, "compression = \"{}\"", self.snapshot.compression.name())?;
        writeln!(f, "passthrough = {}", self.snapshot.passthrough)?;
        writeln!(f, "\n[output]")?;
        writeln!(f, "dir = {}", toml_str(&self.output.dir.to_string_lossy()))?;
        writeln!(f, "name = {}", toml_str(self.output.name.as_str()))?;
        writeln!(f, "timezone = \"{}\"", self.output.timezone.name())?;
        writeln!(f, "fsync = {}", self.output.fsync)?;
        writeln!(f, "manifest = {}", self.output.manifest)?;
        writeln!(f, "file_mode = \"{:04o}\"", self.output.file_mode)?;
        writeln!(f, "dir_mode = \"{:04o}\"", self.output.dir_mode)?;
        let q = &self.retention;
        if !q.is_empty() {
            writeln!(f, "\n[retention]")?;
            if let Some(b) = q.max_bytes {
                writeln!(f, "max_bytes = {b}")?;
            }
            if let Some(n) = q.max_files {
                writeln!(f, "max_files = {n}")?;
            }
            if let Some(d) = q.max_age {
                writeln!(f, "max_age = \"{}\"", humantime::format_duration(d))?;
            }
            match q.min_free {
                Some(MinFree::Bytes(b)) => writeln!(f, "min_free = {b}")?,
                Some(MinFree::Percent(p)) => writeln!(f, "min_free = \"{p}%\"")?,
                None => {}
            }
        }
        writeln!(f, "\n[encoder]")?;
        write!(f, "threads = {}", self.encoder.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        match Settings::from_toml(text, Path::new("test.toml")) {
            Ok(s) => panic!("expected problems, got {s:?}"),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn empty_text_gives_the_demo_defaults() {
        let s = Settings::from_toml("", Path::new("x")).unwrap();
        assert_eq!(s.camera, "cam0");
        assert_eq!(s.source.kind, SourceKind::Synthetic);
        assert_eq!(
            (s.source.width, s.source.height, s.source.fps),
            (1280, 720, 30.0)
        );
        assert_eq!(s.snapshot.every, Every::Interval(Duration::from_secs(1)));
        assert_eq!(
            (s.snapshot.format, s.snapshot.quality),
            (ImageFormat::Jpeg, 90)
        );
        assert_eq!(s.output.dir, PathBuf::from("./frames"));
        assert_eq!(s.ring.when_full, Overflow::DropOldest);
        assert!(s.output.fsync && s.output.manifest);
        assert!(s.encoder.threads >= 1);
    }

    #[test]
    fn reads_every_key() {
        let text = r#"
camera = "lab-1"
[source]
kind = "raw"
path = "-"
width = 640
height = 480
fps = 7.5
pixel_format = "nv12"
[ring]
frames = 4
when_full = "block"
[snapshot]
every = "frame"
format = "png"
quality = 75
subsampling = 444
compression = "best"
passthrough = false
[output]
dir = "/srv/frames"
name = "{seq:6}.{ext}"
timezone = "local"
fsync = false
manifest = false
file_mode = "0644"
dir_mode = "0755"
[retention]
max_bytes = "50GiB"
max_files = 1000000
max_age = "30d"
min_free = "10%"
[encoder]
threads = 3
"#;
        let s = Settings::from_toml(text, Path::new("x")).unwrap();
        assert_eq!(s.camera, "lab-1");
        assert_eq!(s.source.kind, SourceKind::Raw { path: "-".into() });
        assert_eq!(s.source.pixel_format, PixelFormat::Nv12);
        assert_eq!(s.source.fps, 7.5);
        assert_eq!((s.ring.frames, s.ring.when_full), (4, Overflow::Block));
        assert_eq!(s.snapshot.every, Every::Frame);
        assert_eq!(s.snapshot.subsampling, Subsampling::S444);
        assert_eq!(s.snapshot.compression, PngCompression::Best);
        assert_eq!((s.output.file_mode, s.output.dir_mode), (0o644, 0o755));
        assert_eq!(s.output.timezone, TimeZone::Local);
        assert_eq!(s.encoder.threads, 3);
        assert_eq!(s.retention.max_bytes, Some(50 << 30));
        assert_eq!(s.retention.max_files, Some(1_000_000));
        assert_eq!(s.retention.max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(s.retention.min_free, Some(MinFree::Percent(10.0)));
        // The printed settings are themselves a valid config giving the same result.
        let again = Settings::from_toml(&s.to_string(), Path::new("y")).unwrap();
        assert_eq!(again.to_string(), s.to_string());
    }

    #[test]
    fn reports_every_unknown_key_with_its_position() {
        let found =
            problems("camra = \"x\"\n[source]\nwidht = 3\n[output]\nfsync = true\ndri = \"a\"\n");
        let keys: Vec<(&str, Option<(usize, usize)>)> =
            found.iter().map(|p| (p.key.as_str(), p.position)).collect();
        assert_eq!(
            keys,
            [
                ("camra", Some((1, 1))),
                ("source.widht", Some((3, 1))),
                ("output.dri", Some((6, 1)))
            ]
        );
    }

    #[test]
    fn reports_a_type_error_in_each_section() {
        let found = problems("[source]\nwidth = \"wide\"\n[snapshot]\nquality = \"high\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].position.map(|p| p.0), Some(2));
        assert_eq!(found[1].position.map(|p| p.0), Some(4));
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let found = problems("[source\nwidth = 3\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].position.map(|p| p.0), Some(1));
    }

    #[test]
    fn reports_every_bad_value_at_once() {
        let text = r#"
camera = "a/b"
[source]
width = 0
fps = -1
pixel_format = "bgr"
[ring]
frames = 0
when_full = "sometimes"
[snapshot]
every = "often"
quality = 101
subsampling = "411"
compression = "max"
[output]
name = "{camera}.jpg"
timezone = "mars"
file_mode = "rw"
[encoder]
threads = 1000
"#;
        let found = problems(text);
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "camera",
            "source.width",
            "source.fps",
            "source.pixel_format",
            "ring.frames",
            "ring.when_full",
            "snapshot.every",
            "snapshot.quality",
            "snapshot.subsampling",
            "snapshot.compression",
            "output.name",
            "output.timezone",
            "output.file_mode",
            "encoder.threads",
        ] {
            assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
        }
        for p in &found {
            assert!(p.position.is_some(), "{p} has no position");
        }
        let quality = found.iter().find(|p| p.key == "snapshot.quality").unwrap();
        assert_eq!(quality.position, Some((12, 11)));
    }

    #[test]
    fn refuses_inconsistent_choices() {
        let cases = [
            ("[source]\npixel_format = \"gray16\"\n", "snapshot.format"),
            (
                "[source]\npixel_format = \"rgba\"\n[snapshot]\nformat = \"jpeg\"\n",
                "snapshot.format",
            ),
            (
                "[source]\npixel_format = \"yuyv\"\nwidth = 641\n",
                "source.width",
            ),
            (
                "[source]\npixel_format = \"nv12\"\nheight = 479\n",
                "source.height",
            ),
            ("[source]\nkind = \"raw\"\n", "source.path"),
            ("[source]\npath = \"x.rgb\"\n", "source.path"),
            ("[ring]\nwhen_full = \"block\"\n", "ring.when_full"),
            ("[source]\nkind = \"camera\"\npixel_format = \"rgba\"\n[snapshot]\nformat = \"png\"\n", "source.pixel_format"),
            ("[source]\nkind = \"camera\"\n[ring]\nwhen_full = \"block\"\n", "ring.when_full"),
            ("[retention]\nmax_bytes = \"lots\"\n", "retention.max_bytes"),
            ("[retention]\nmax_bytes = 0\n", "retention.max_bytes"),
            ("[retention]\nmax_files = 0\n", "retention.max_files"),
            ("[retention]\nmax_age = \"0s\"\n", "retention.max_age"),
            ("[retention]\nmin_free = \"150%\"\n", "retention.min_free"),
            ("[output]\nname = \"../{seq}.{ext}\"\n", "output.name"),
            ("[snapshot]\nevery = \"0s\"\n", "snapshot.every"),
            (
                "[source]\nwidth = 16384\nheight = 16384\n[ring]\nframes = 64\n",
                "ring.frames",
            ),
        ];
        for (text, key) in cases {
            let found = problems(text);
            assert!(found.iter().any(|p| p.key == key), "{text:?}: {found:?}");
        }
    }

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(field_names::<RawRing>(), ["frames", "when_full"]);
    }
}
