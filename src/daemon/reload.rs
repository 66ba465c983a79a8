//! Reload on HUP: the config file is read and validated again, compared
//! with the settings in force, and what changed is handed to the stages
//! that use it, without stopping capture:
//!
//! - `snapshot.every`: the capture thread's schedule, from the next frame;
//! - the rest of `[snapshot]` and `output.timezone`: the encoders, from the
//!   next frame each takes;
//! - `[output]` (but `dir` and `name`): the store, from the next file;
//! - `[retention]`: the retention thread, at once (a quota set where there
//!   was none first indexes the files on disk);
//! - `[source]` (and `snapshot.format` for a camera, which decides the
//!   formats it can use): capture closes the source and opens the new one;
//!   the ring, the encoders and the numbering go on. Not for raw input (a
//!   stream cannot be reopened where it was: frames would tear or repeat),
//!   and not to frames larger than the buffers allocated at start.
//!
//! A file with problems is refused with every one of them, and so is a
//! change that cannot apply while recording (`camera`, `output.dir`,
//! `output.name`, `[ring]`, `[encoder]`, `[http]`): the message says to
//! restart. Either way the settings in force stay, whole.

use crate::config::{changes, Change, ConfigError, Settings};
use crate::encode;
use crate::frame::ImageFormat;
use crate::live::Live;
use crate::retention;
use crate::schedule::Every;
use crate::source::{self, Kind};
use crate::store::Store;

/// Keys that cannot change while recording, by prefix.
const RESTART_ONLY: [&str; 6] = [
    "camera",
    "output.dir",
    "output.name",
    "ring.",
    "encoder.",
    "http.",
];

/// What the supervisor holds to apply a reload.
pub(super) struct Targets<'a> {
    pub(super) source: &'a Live<(source::Options, ImageFormat)>,
    pub(super) every: &'a Live<Every>,
    pub(super) encode: &'a Live<encode::Setup>,
    pub(super) store: &'a Store,
    pub(super) retention: Option<&'a retention::Handle>,
    /// Wakes the capture thread from a wait for the source.
    pub(super) wake: &'a std::sync::atomic::AtomicBool,
    /// The size of the ring's frame buffers, allocated at start.
    pub(super) buffer_capacity: usize,
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("there is no config file to read again (framerec runs the built-in config)")]
    NoFile,
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{} cannot change while recording ({}): restart framerec to apply them; nothing was changed",
        if .0.len() == 1 { "this setting" } else { "these settings" },
        .0.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "))]
    NeedsRestart(Vec<Change>),
    #[error("raw input is a stream that cannot be reopened where it was ({}): restart framerec to apply this; nothing was changed",
        .0.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "))]
    RawSource(Vec<Change>),
    #[error("the new frames need buffers of {need} KiB, larger than the {have} KiB allocated at start: restart framerec to apply this; nothing was changed",
        need = .need >> 10, have = .have >> 10)]
    LargerFrames { need: usize, have: usize },
    #[error("cannot apply the new [output] settings; nothing was changed")]
    Output(#[source] crate::store::StoreError),
}

/// Whether a change to `key` needs a restart.
fn needs_restart(key: &str) -> bool {
    RESTART_ONLY
        .iter()
        .any(|p| key == *p || (p.ends_with('.') && key.starts_with(p)))
}

/// Applies `new` over `current` (see the module docs). Returns the changes
/// made (empty when the file says what is in force already).
pub(super) fn apply(
    current: &mut Settings,
    mut new: Settings,
    targets: &Targets<'_>,
) -> Result<Vec<Change>, Refused> {
    // "One per core" was counted at start; the cores framerec may use can
    // change since (affinity, a CPU quota) without the file saying so.
    if current.threads_auto && new.threads_auto {
        new.encode.threads = current.encode.threads;
    }
    let changed = changes(current, &new);
    let blocked: Vec<Change> = changed
        .iter()
        .filter(|c| needs_restart(&c.key))
        .cloned()
        .collect();
    if !blocked.is_empty() {
        return Err(Refused::NeedsRestart(blocked));
    }
    if changed.is_empty() {
        return Ok(changed);
    }
    let touched = |prefix: &str| changed.iter().any(|c| c.key.starts_with(prefix));
    let raw = |s: &Settings| matches!(s.source.kind, Kind::Raw { .. });
    if touched("source.") && (raw(current) || raw(&new)) {
        let source = changed.iter().filter(|c| c.key.starts_with("source."));
        return Err(Refused::RawSource(source.cloned().collect()));
    }
    let need = new.source.buffer_capacity();
    if touched("source.") && need > targets.buffer_capacity {
        return Err(Refused::LargerFrames {
            need,
            have: targets.buffer_capacity,
        });
    }
    let camera = matches!(new.source.kind, Kind::Camera { .. });
    if touched("output.") {
        targets.store.apply(&new.output).map_err(Refused::Output)?;
    }
    if touched("snapshot.every") {
        targets.every.set(new.every);
    }
    let restart_source = touched("source.") || (camera && touched("snapshot.format"));
    if touched("snapshot.") || touched("output.timezone") || restart_source {
        targets.encode.set(encode::Setup {
            options: new.encode.clone(),
            input: new.source.pixel_format,
        });
    }
    if restart_source {
        targets.source.set((new.source.clone(), new.encode.format));
        targets
            .wake
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if touched("retention.") {
        if let Some(handle) = targets.retention {
            if !handle.set_quota(new.retention) {
                tracing::warn!("retention is busy; the new quota applies when it is free");
            }
        }
    }
    *current = new;
    Ok(changed)
}

/// Reads the file again with `load` and applies it, logging the outcome.
pub(super) fn reload(
    current: &mut Settings,
    load: Option<&super::Loader<'_>>,
    targets: &Targets<'_>,
) -> Result<Vec<Change>, Refused> {
    let load = load.ok_or(Refused::NoFile)?;
    let new = load()?;
    apply(current, new, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_keys_and_sections_need_a_restart() {
        for key in [
            "camera",
            "output.dir",
            "output.name",
            "ring.frames",
            "encoder.threads",
            "http.listen",
        ] {
            assert!(needs_restart(key), "{key}");
        }
        for key in [
            "snapshot.quality",
            "output.fsync",
            "retention.max_files",
            "source.fps",
            "cameras",
        ] {
            assert!(!needs_restart(key), "{key}");
        }
    }
}
