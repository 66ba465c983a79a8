//! Configuration: TOML text → raw serde structs (`raw`) → validated
//! [`Settings`] (`validate`), built from each stage's own options type;
//! `print` shows them back as `framerec check` prints them. No stage
//! imports this module: only the wiring (main and the supervisor) does.
//!
//! [`Settings::from_toml`] reports *every* problem it can find at once, each
//! with its line and column: all unknown keys, one type error per section,
//! then every out-of-range or inconsistent value. Nothing here does I/O
//! except [`Settings::load`], which reads the file.

mod print;
pub use print::{changes, Change};
mod raw;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::retention::Quota;
use crate::schedule::Every;
use crate::{encode, ring, source, store};

pub use validate::{parse_duration, DEFAULT_WRITE_TIMEOUT};

/// The largest config file read: a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Everything framerec needs to record, validated: each stage's options.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The camera's name, used in file names, the manifest and logs.
    pub camera: String,
    pub source: source::Options,
    pub ring: ring::Options,
    /// Which frames become snapshots (`snapshot.every`).
    pub every: Every,
    /// `[snapshot]` (less `every`) and `[encoder]`.
    pub encode: encode::Options,
    /// `[output]`.
    pub output: store::Options,
    /// The quota; empty when `[retention]` gives no limit.
    pub retention: Quota,
    /// `[http]`, when `listen` is set.
    pub http: Option<crate::http::Options>,
    /// `encoder.threads` was 0 (one per core, counted at start).
    pub threads_auto: bool,
    /// `output.write_timeout`: picked frames waiting this long with no file
    /// written mean a wedged writer (the watchdog stops, `/healthz` says so).
    pub write_timeout: std::time::Duration,
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
    #[error("config file {path} is larger than {max} KiB: is it the right file?", max = MAX_CONFIG_BYTES >> 10)]
    TooLarge { path: PathBuf },
    #[error("{} has {} problem{}:\n{}", origin.display(), problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.iter().map(|p| format!("  {}: {p}", origin.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        origin: PathBuf,
        problems: Vec<Problem>,
    },
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
pub(super) struct Problems<'a> {
    positions: Positions<'a>,
    list: Vec<Problem>,
}

impl Problems<'_> {
    pub(super) fn add(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) {
        self.list.push(Problem {
            position: span.map(|s| self.positions.at(s.start)),
            key: key.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn at<T>(&mut self, value: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.add(Some(value.span()), key, message);
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Settings {
    /// The built-in config of `framerec run` without `--config`.
    pub fn demo() -> Settings {
        Settings::from_toml("", Path::new("<built-in>")).expect("the built-in config is valid")
    }

    /// Reads and validates a config file (at most [`MAX_CONFIG_BYTES`]).
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        use std::io::Read as _;
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        // Never waits: a FIFO put in the file's place would block the open
        // (at a reload, the supervisor), so it is refused.
        let file = {
            use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
            let file = std::fs::File::options()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(read_error)?;
            let kind = file.metadata().map_err(read_error)?.file_type();
            if kind.is_fifo() || kind.is_socket() {
                return Err(read_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "it is a FIFO or socket, not a config file",
                )));
            }
            file
        };
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Settings::from_toml(&text, path)
    }

    /// Validates config text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Settings, ConfigError> {
        let mut problems = Problems {
            positions: Positions { text },
            list: Vec::new(),
        };
        let raw = raw::parse_raw(text, &mut problems);
        let settings = raw.and_then(|raw| validate::validate(raw, &mut problems));
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::encode::{PngCompression, Subsampling};
    use crate::frame::{ImageFormat, PixelFormat, TimeZone};
    use crate::retention::MinFree;
    use crate::ring::Overflow;
    use crate::source::Kind;

    fn problems(text: &str) -> Vec<Problem> {
        match Settings::from_toml(text, Path::new("test.toml")) {
            Ok(s) => panic!("expected problems, got {s:?}"),
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn settings_that_would_lose_files_or_ports_are_refused() {
        let found = problems("[output]\ndir_mode = \"0640\"\n");
        assert_eq!(found[0].key, "output.dir_mode", "{found:?}");
        assert!(found[0].message.contains("owner's rwx"), "{found:?}");
        let found = problems("[http]\nlisten = \"127.0.0.1:0\"\n");
        assert!(found[0].message.contains("port 0"), "{found:?}");
        let found = problems("[http]\nlisten = \"0.0.0.0:8090\"\n");
        assert!(found[0].message.contains("allow_remote"), "{found:?}");
        let found = problems("[http]\nlisten = \"localhost:8090\"\n");
        assert!(found[0].message.contains("127.0.0.1:8090"), "{found:?}");
        let found = problems("[http]\nallow_remote = true\n");
        assert_eq!(found[0].key, "http.allow_remote", "{found:?}");
        let s = Settings::from_toml(
            "[http]\nlisten = \"[::]:8090\"\nallow_remote = true\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(s.http.unwrap().listen.port(), 8090);
    }

    #[test]
    fn empty_text_gives_the_demo_defaults() {
        let s = Settings::from_toml("", Path::new("x")).unwrap();
        assert_eq!(s.camera, "cam0");
        assert_eq!(s.source.kind, Kind::Synthetic);
        assert_eq!(
            (s.source.width, s.source.height, s.source.fps),
            (1280, 720, 30.0)
        );
        assert_eq!(s.every, Every::Interval(Duration::from_secs(1)));
        assert_eq!((s.encode.format, s.encode.quality), (ImageFormat::Jpeg, 90));
        assert_eq!(s.output.dir, PathBuf::from("./frames"));
        assert_eq!(s.ring.when_full, Overflow::DropOldest);
        assert!(s.output.fsync && s.output.manifest);
        assert!(s.encode.threads >= 1);
    }

    /// A config with every key set (none at its default).
    const EVERY_KEY: &str = r#"
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

    #[test]
    fn reads_every_key() {
        let text = EVERY_KEY;
        let s = Settings::from_toml(text, Path::new("x")).unwrap();
        assert_eq!(s.camera, "lab-1");
        assert_eq!(s.source.kind, Kind::Raw { path: "-".into() });
        assert_eq!(s.source.pixel_format, PixelFormat::Nv12);
        assert_eq!(s.source.fps, 7.5);
        assert_eq!((s.ring.frames, s.ring.when_full), (4, Overflow::Block));
        assert_eq!(s.every, Every::Frame);
        assert_eq!(s.encode.subsampling, Subsampling::S444);
        assert_eq!(s.encode.compression, PngCompression::Best);
        assert_eq!((s.output.file_mode, s.output.dir_mode), (0o644, 0o755));
        assert_eq!(s.output.timezone, TimeZone::Local);
        assert_eq!(s.encode.threads, 3);
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
    fn a_problem_in_a_section_hides_no_problem_across_sections() {
        let cases: [(&str, &[&str]); 4] = [
            (
                "[source]\nkind = \"camera\"\npixel_format = \"rgba\"\n",
                &["source.pixel_format", "snapshot.format"],
            ),
            (
                "[ring]\nframes = 0\nwhen_full = \"block\"\n",
                &["ring.frames", "ring.when_full"],
            ),
            (
                "[source]\nwidth = 16384\nheight = 16384\nfps = 0\n[ring]\nframes = 64\n",
                &["source.fps", "ring.frames"],
            ),
            (
                "[source]\nkind = \"bogus\"\nwidth = 16384\nheight = 16384\npixel_format = \"gray16\"\n[snapshot]\nquality = 101\n",
                &["source.kind", "snapshot.quality", "snapshot.format", "ring.frames"],
            ),
        ];
        for (text, keys) in cases {
            let found = problems(text);
            for key in keys {
                assert!(
                    found.iter().any(|p| p.key == *key),
                    "{text:?}: no {key} in {found:?}"
                );
            }
        }
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
    fn max_frame_bytes_defaults_from_the_size_and_prints_back() {
        let s = Settings::from_toml(
            "[source]\nkind = \"raw\"\npath = \"-\"\npixel_format = \"mjpeg\"\nwidth = 640\nheight = 480\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(s.source.max_frame_bytes, 640 * 480 * 3 + (256 << 10));
        // A tiny size still allows a few hundred KiB.
        let s = Settings::from_toml(
            "[source]\nkind = \"camera\"\nwidth = 16\nheight = 16\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(s.source.max_frame_bytes, 512 << 10);
        let text = "[source]\nkind = \"camera\"\nmax_frame_bytes = \"8MiB\"\n";
        let s = Settings::from_toml(text, Path::new("x")).unwrap();
        assert_eq!(s.source.max_frame_bytes, 8 << 20);
        let printed = s.to_string();
        assert!(
            printed.contains("\nmax_frame_bytes = 8388608\n"),
            "{printed}"
        );
        let again = Settings::from_toml(&printed, Path::new("y")).unwrap();
        assert_eq!(again.source.max_frame_bytes, 8 << 20);
        // Not shown where it does nothing (and refused there: see below).
        assert!(!Settings::demo().to_string().contains("max_frame_bytes"));
    }

    #[test]
    fn refuses_a_bad_max_frame_bytes_naming_the_key_and_the_fix() {
        let cases = [
            ("[source]\npixel_format = \"mjpeg\"\nmax_frame_bytes = \"lots\"\n", "not a size"),
            ("[source]\npixel_format = \"mjpeg\"\nmax_frame_bytes = 100\n", "1KiB"),
            ("[source]\npixel_format = \"mjpeg\"\nmax_frame_bytes = \"2GiB\"\n", "1GiB"),
            ("[source]\npixel_format = \"mjpeg\"\nmax_frame_bytes = -5\n", "negative"),
            ("[source]\nmax_frame_bytes = \"8MiB\"\n", "pixel_format = \"mjpeg\""),
            // 11 buffers that may each grow to 1 GiB do not fit the ring's 8 GiB.
            (
                "[source]\npixel_format = \"mjpeg\"\nmax_frame_bytes = \"1GiB\"\n[ring]\nframes = 8\n[encoder]\nthreads = 1\n",
                "lower source.max_frame_bytes",
            ),
        ];
        for (text, words) in cases {
            let found = problems(text);
            let p = found
                .iter()
                .find(|p| p.key == "source.max_frame_bytes")
                .unwrap_or_else(|| panic!("{text:?}: {found:?}"));
            assert!(
                p.position.is_some() && p.message.contains(words),
                "{text:?}: {p}"
            );
        }
    }

    #[test]
    fn the_ring_check_counts_mjpeg_buffers_at_their_largest() {
        // 16384x16384 MJPEG: frames may grow to ~768 MiB each, so 7 buffers
        // fit in 8 GiB and 19 do not.
        let base = "[source]\nkind = \"raw\"\npath = \"-\"\npixel_format = \"mjpeg\"\nwidth = 16384\nheight = 16384\n[encoder]\nthreads = 1\n";
        assert!(
            Settings::from_toml(&format!("{base}[ring]\nframes = 4\n"), Path::new("x")).is_ok()
        );
        let found = problems(&format!("{base}[ring]\nframes = 16\n"));
        let ring = found
            .iter()
            .find(|p| p.key == "ring.frames")
            .expect("a ring.frames problem");
        assert!(ring.message.contains("source.max_frame_bytes"), "{ring}");
        // A smaller bound makes it fit.
        let bounded = format!("{base}max_frame_bytes = \"64MiB\"\n[ring]\nframes = 16\n").replacen(
            "[encoder]\nthreads = 1\n",
            "",
            1,
        ) + "[encoder]\nthreads = 1\n";
        assert!(
            Settings::from_toml(&bounded, Path::new("x")).is_ok(),
            "{bounded}"
        );
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        /// Checks what a user would see from any text: no panic; every
        /// problem has a key or a place; a config that is accepted prints
        /// back as one that gives the same settings.
        fn check(text: &str) -> Result<(), TestCaseError> {
            match Settings::from_toml(text, Path::new("fuzz.toml")) {
                Ok(settings) => {
                    let printed = settings.to_string();
                    let again = Settings::from_toml(&printed, Path::new("printed.toml"));
                    prop_assert!(
                        again.is_ok(),
                        "{text:?} prints as an invalid config:\n{printed}"
                    );
                    prop_assert_eq!(again.unwrap().to_string(), printed);
                }
                Err(ConfigError::Invalid { problems, .. }) => {
                    prop_assert!(!problems.is_empty());
                    for p in &problems {
                        prop_assert!(
                            !p.key.is_empty() || p.position.is_some(),
                            "{text:?}: a problem with neither key nor place: {p}"
                        );
                        prop_assert!(!p.message.is_empty(), "{text:?}: {p:?}");
                    }
                }
                Err(e) => prop_assert!(false, "{text:?}: {e}"),
            }
            Ok(())
        }

        const KEYS: &[&str] = &[
            "camera",
            "kind",
            "device",
            "strict",
            "width",
            "height",
            "fps",
            "pixel_format",
            "path",
            "max_frame_bytes",
            "frames",
            "when_full",
            "every",
            "format",
            "quality",
            "subsampling",
            "compression",
            "passthrough",
            "dir",
            "name",
            "timezone",
            "fsync",
            "manifest",
            "file_mode",
            "dir_mode",
            "max_bytes",
            "max_files",
            "max_age",
            "min_free",
            "threads",
            "bogus",
            "source.width",
            "ring.frames",
        ];
        const SECTIONS: &[&str] = &[
            "source",
            "ring",
            "snapshot",
            "output",
            "retention",
            "encoder",
            "http",
            "source.controls",
            "[source]",
            "snapshot.every",
        ];
        const WORDS: &[&str] = &[
            "camera",
            "raw",
            "synthetic",
            "-",
            "mjpeg",
            "rgb",
            "gray16",
            "yuyv",
            "nv12",
            "rgba",
            "block",
            "drop-oldest",
            "frame",
            "1s",
            "0s",
            "500ms",
            "1000000years",
            "png",
            "jpeg",
            "444",
            "gray",
            "best",
            "{seq}.{ext}",
            "{camera}/{time:%Y}/{seq:6}.{ext}",
            "../{seq}",
            "{time:%Q}{seq}",
            "utc",
            "local",
            "0640",
            "999",
            "50GiB",
            "8MiB",
            "1KiB",
            "10%",
            "150%",
            "é",
            "日本",
            "🎥",
            "",
            " ",
            "\u{0}",
        ];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                (-5i64..70_000).prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| format!("{f:?}")),
                Just("inf".to_owned()),
                Just("nan".to_owned()),
                any::<bool>().prop_map(|b| b.to_string()),
                prop::sample::select(WORDS)
                    .prop_map(|w| toml::Value::String(w.to_owned()).to_string()),
                "[^\n]{0,12}".prop_map(|s| format!("\"{s}\"")),
                Just("[1, 2]".to_owned()),
                Just("{ a = 1 }".to_owned()),
                Just("1979-05-27T07:32:00Z".to_owned()),
            ]
        }

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
                2 => prop::sample::select(SECTIONS).prop_map(|s| format!("[{s}]")),
                1 => "[^\n]{0,24}",
                1 => Just(String::new()),
                1 => Just("[[source]]".to_owned()),
                1 => Just("# comment é".to_owned()),
            ]
        }

        /// A change to a valid config.
        #[derive(Clone, Debug)]
        enum Edit {
            Delete(prop::sample::Index, usize),
            Insert(prop::sample::Index, String),
            DuplicateLine(prop::sample::Index),
        }

        fn edit() -> impl Strategy<Value = Edit> {
            prop_oneof![
                (any::<prop::sample::Index>(), 1..12usize).prop_map(|(at, n)| Edit::Delete(at, n)),
                (
                    any::<prop::sample::Index>(),
                    prop_oneof![
                        line().prop_map(|l| format!("\n{l}\n")),
                        "[^\n]{1,4}",
                        value()
                    ]
                )
                    .prop_map(|(at, s)| Edit::Insert(at, s)),
                any::<prop::sample::Index>().prop_map(Edit::DuplicateLine),
            ]
        }

        fn apply(text: &str, edits: &[Edit]) -> String {
            let mut chars: Vec<char> = text.chars().collect();
            for edit in edits {
                match edit {
                    Edit::Delete(at, n) if !chars.is_empty() => {
                        let at = at.index(chars.len());
                        let end = (at + n).min(chars.len());
                        chars.drain(at..end);
                    }
                    Edit::Delete(..) => {}
                    Edit::Insert(at, s) => {
                        let at = at.index(chars.len() + 1);
                        chars.splice(at..at, s.chars());
                    }
                    Edit::DuplicateLine(at) => {
                        let text: String = chars.iter().collect();
                        let lines: Vec<&str> = text.lines().collect();
                        if !lines.is_empty() {
                            let line = lines[at.index(lines.len())];
                            chars.extend(format!("\n{line}\n").chars());
                        }
                    }
                }
            }
            chars.into_iter().collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]

            #[test]
            fn random_config_text_is_reported_never_a_panic(lines in prop::collection::vec(line(), 0..16)) {
                check(&lines.join("\n"))?;
            }

            #[test]
            fn a_changed_valid_config_is_reported_never_a_panic(
                base in prop::sample::select(vec![EVERY_KEY, "[source]\nkind = \"camera\"\nmax_frame_bytes = \"8MiB\"\n[retention]\nmin_free = \"5GiB\"\n", ""]),
                edits in prop::collection::vec(edit(), 1..6),
            ) {
                check(&apply(base, &edits))?;
            }
        }
    }
}
