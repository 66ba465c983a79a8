//! `framerec check`'s output: the effective settings, printed as a config
//! file that would give them (every default spelled out).

use std::fmt;

use super::Settings;
use crate::frame::PixelFormat;
use crate::retention::MinFree;
use crate::schedule::Every;
use crate::source::v4l2::ControlValue;
use crate::source::Kind;

/// A key as TOML needs it: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        toml_str(key)
    }
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
            Kind::Synthetic => writeln!(f, "kind = \"synthetic\"")?,
            Kind::Camera { device, strict } => {
                writeln!(f, "kind = \"camera\"")?;
                writeln!(f, "device = {}", toml_str(device))?;
                writeln!(f, "strict = {strict}")?;
            }
            Kind::Raw { path } => {
                writeln!(f, "kind = \"raw\"")?;
                writeln!(f, "path = {}", toml_str(&path.to_string_lossy()))?;
            }
        }
        writeln!(f, "width = {}", self.source.width)?;
        writeln!(f, "height = {}", self.source.height)?;
        writeln!(f, "fps = {}", self.source.fps)?;
        writeln!(f, "pixel_format = \"{}\"", self.source.pixel_format)?;
        let camera = matches!(self.source.kind, Kind::Camera { .. });
        if camera || self.source.pixel_format == PixelFormat::Mjpeg {
            writeln!(f, "max_frame_bytes = {}", self.source.max_frame_bytes)?;
        }
        if camera {
            let stall = humantime::format_duration(self.source.stall_timeout());
            writeln!(f, "stall_timeout = \"{stall}\"")?;
            if !self.source.controls.is_empty() {
                writeln!(f, "\n[source.controls]")?;
                for control in &self.source.controls {
                    let key = toml_key(&control.name);
                    match &control.value {
                        ControlValue::Number(n) => writeln!(f, "{key} = {n}")?,
                        ControlValue::Name(name) => writeln!(f, "{key} = {}", toml_str(name))?,
                    }
                }
            }
        }
        writeln!(f, "\n[ring]")?;
        writeln!(f, "frames = {}", self.ring.frames)?;
        writeln!(f, "when_full = \"{}\"", self.ring.when_full.name())?;
        writeln!(f, "\n[snapshot]")?;
        match self.every {
            Every::Frame => writeln!(f, "every = \"frame\"")?,
            Every::Interval(d) => writeln!(f, "every = \"{}\"", humantime::format_duration(d))?,
        }
        writeln!(f, "format = \"{}\"", self.encode.format)?;
        writeln!(f, "quality = {}", self.encode.quality)?;
        writeln!(f, "subsampling = \"{}\"", self.encode.subsampling.name())?;
        writeln!(f, "compression = \"{}\"", self.encode.compression.name())?;
        writeln!(f, "passthrough = {}", self.encode.passthrough)?;
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
        write!(f, "threads = {}", self.encode.threads)
    }
}
