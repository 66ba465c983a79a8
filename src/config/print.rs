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
        let write_timeout = humantime::format_duration(self.write_timeout);
        writeln!(f, "write_timeout = \"{write_timeout}\"")?;
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
        write!(f, "threads = {}", self.encode.threads)?;
        if let Some(http) = &self.http {
            writeln!(f, "\n\n[http]")?;
            writeln!(f, "listen = \"{}\"", http.listen)?;
            write!(f, "allow_remote = {}", http.allow_remote)?;
        }
        Ok(())
    }
}

/// One key whose effective value a reload changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `section.key`, such as `snapshot.quality` (`camera` at the top).
    pub key: String,
    /// The values as `framerec check` prints them; `None` when unset.
    pub old: Option<String>,
    pub new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(f, "{} {} -> {}", self.key, show(&self.old), show(&self.new))
    }
}

/// The printed settings as (`section.key`, value), in order.
fn keyed(settings: &Settings) -> Vec<(String, String)> {
    let text = settings.to_string();
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((key, value)) = line.split_once(" = ") {
            out.push((format!("{section}{key}"), value.to_owned()));
        }
    }
    out
}

/// Every key whose effective value differs between `old` and `new`, in
/// the order `framerec check` prints them (keys only in `new` last).
pub fn changes(old: &Settings, new: &Settings) -> Vec<Change> {
    let (before, after) = (keyed(old), keyed(new));
    let find = |list: &[(String, String)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let mut out: Vec<Change> = before
        .iter()
        .filter_map(|(key, value)| {
            let now = find(&after, key);
            (now.as_deref() != Some(value.as_str())).then(|| Change {
                key: key.clone(),
                old: Some(value.clone()),
                new: now,
            })
        })
        .collect();
    out.extend(
        after
            .iter()
            .filter(|(key, _)| find(&before, key).is_none())
            .map(|(key, value)| Change {
                key: key.clone(),
                old: None,
                new: Some(value.clone()),
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn changes_name_each_key_that_differs_with_both_values() {
        let parse = |text: &str| Settings::from_toml(text, Path::new("t.toml")).unwrap();
        let old = parse("[snapshot]\nquality = 90\n");
        let new = parse("[snapshot]\nquality = 70\n[retention]\nmax_files = 10\n");
        let changes: Vec<String> = changes(&old, &new).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            changes,
            [
                "snapshot.quality 90 -> 70",
                "retention.max_files (unset) -> 10"
            ]
        );
        assert!(super::changes(&old, &old.clone()).is_empty());
    }
}
