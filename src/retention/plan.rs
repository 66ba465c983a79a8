//! The quota planner: which of the oldest files must go so that every limit
//! holds. Pure: it sees sizes, times and the free space it is given, and
//! decides; the caller deletes. Each call costs O(files deleted).

use std::time::Duration;

/// A free-space floor: a size, or a share of the filesystem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// Percent of the filesystem's size, 0 to 100.
    Percent(f64),
}

impl MinFree {
    /// The floor in bytes for a filesystem of `total` bytes.
    pub(crate) fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(b) => b,
            MinFree::Percent(p) => (total as f64 * p / 100.0).ceil() as u64,
        }
    }
}

/// The limits of `[retention]`; all given ones hold at once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quota {
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
    pub max_age: Option<Duration>,
    pub min_free: Option<MinFree>,
}

impl Quota {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Quota::default()
    }

    /// Whether files' sizes and times matter (only `max_files` does without).
    pub(crate) fn needs_file_facts(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some() || self.min_free.is_some()
    }
}

/// Space on the output's filesystem (from statvfs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes available to framerec.
    pub available: u64,
    /// The filesystem's size.
    pub total: u64,
}

/// One file as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    pub bytes: u64,
    /// Seconds since the Unix epoch.
    pub mtime: u64,
}

/// What is on disk now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

/// Why a file is deleted (the first limit it breaks, for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    MaxFiles,
    MaxBytes,
    MaxAge,
    MinFree,
    /// Room asked for by a write that found the disk full.
    DiskFull,
}

impl Reason {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Reason::MaxFiles => "max_files",
            Reason::MaxBytes => "max_bytes",
            Reason::MaxAge => "max_age",
            Reason::MinFree => "min_free",
            Reason::DiskFull => "disk_full",
        }
    }
}

/// How many of the oldest files to delete (and the first reason), given
/// them oldest first. `extra_free` asks for that many more bytes of free
/// space on top of the quota (a write that found the disk full). The newest
/// file is always kept.
pub fn plan_deletions(
    oldest_first: impl IntoIterator<Item = FileFacts>,
    usage: Usage,
    quota: &Quota,
    now: u64,
    space: Option<Space>,
    extra_free: u64,
) -> (usize, Option<Reason>) {
    let max_age = quota.max_age.map(|d| d.as_secs());
    let floor = match (quota.min_free, space) {
        (Some(min_free), Some(space)) => Some(min_free.bytes(space.total)),
        _ => None,
    };
    let available_now = space.map_or(0, |s| s.available);
    let mut files = usage.files;
    let mut bytes = usage.bytes;
    let mut freed = 0u64;
    let mut deleted = 0;
    let mut first_reason = None;
    for file in oldest_first {
        if files <= 1 {
            break;
        }
        let reason = if quota.max_files.is_some_and(|m| files > m) {
            Reason::MaxFiles
        } else if quota.max_bytes.is_some_and(|m| bytes > m) {
            Reason::MaxBytes
        } else if max_age.is_some_and(|a| now.saturating_sub(file.mtime) > a) {
            Reason::MaxAge
        } else if floor.is_some_and(|f| available_now + freed < f) {
            Reason::MinFree
        } else if extra_free > 0 && available_now + freed < extra_free {
            Reason::DiskFull
        } else {
            break;
        };
        first_reason.get_or_insert(reason);
        files -= 1;
        bytes = bytes.saturating_sub(file.bytes);
        freed += file.bytes;
        deleted += 1;
    }
    (deleted, first_reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Ten files of 1 MiB, a minute apart, the newest at `now`.
    fn files() -> Vec<FileFacts> {
        (0..10)
            .map(|i| FileFacts {
                bytes: MIB,
                mtime: 1_000 + i * 60,
            })
            .collect()
    }

    fn plan(quota: Quota, space: Option<Space>, extra: u64) -> (usize, Option<Reason>) {
        let files = files();
        let usage = Usage {
            files: 10,
            bytes: 10 * MIB,
        };
        plan_deletions(files, usage, &quota, 1_000 + 9 * 60, space, extra)
    }

    #[test]
    fn each_limit_alone() {
        let cases = [
            (
                Quota {
                    max_files: Some(7),
                    ..Quota::default()
                },
                None,
                (3, Some(Reason::MaxFiles)),
            ),
            (
                Quota {
                    max_files: Some(10),
                    ..Quota::default()
                },
                None,
                (0, None),
            ),
            (
                Quota {
                    max_bytes: Some(4 * MIB),
                    ..Quota::default()
                },
                None,
                (6, Some(Reason::MaxBytes)),
            ),
            (
                Quota {
                    max_bytes: Some(4 * MIB + 1),
                    ..Quota::default()
                },
                None,
                (6, Some(Reason::MaxBytes)),
            ),
            // Older than 5 minutes: the first four (ages 540, 480, 420, 360 s).
            (
                Quota {
                    max_age: Some(Duration::from_secs(300)),
                    ..Quota::default()
                },
                None,
                (4, Some(Reason::MaxAge)),
            ),
            (
                Quota {
                    min_free: Some(MinFree::Bytes(5 * MIB)),
                    ..Quota::default()
                },
                Some(Space {
                    available: 2 * MIB,
                    total: 100 * MIB,
                }),
                (3, Some(Reason::MinFree)),
            ),
            (
                Quota {
                    min_free: Some(MinFree::Percent(10.0)),
                    ..Quota::default()
                },
                Some(Space {
                    available: 7 * MIB,
                    total: 100 * MIB,
                }),
                (3, Some(Reason::MinFree)),
            ),
            // Without statvfs figures, min_free cannot be judged: nothing goes.
            (
                Quota {
                    min_free: Some(MinFree::Bytes(5 * MIB)),
                    ..Quota::default()
                },
                None,
                (0, None),
            ),
        ];
        for (quota, space, expected) in cases {
            assert_eq!(plan(quota, space, 0), expected, "{quota:?} {space:?}");
        }
    }

    #[test]
    fn all_limits_hold_at_once() {
        let quota = Quota {
            max_files: Some(8),
            max_bytes: Some(6 * MIB),
            max_age: Some(Duration::from_secs(600)),
            min_free: Some(MinFree::Bytes(6 * MIB)),
        };
        // max_files needs 2, max_bytes 4, min_free (1 MiB free) 5: the most wins.
        let (n, reason) = plan(
            quota,
            Some(Space {
                available: MIB,
                total: 100 * MIB,
            }),
            0,
        );
        assert_eq!((n, reason), (5, Some(Reason::MaxFiles)));
    }

    #[test]
    fn the_newest_file_is_kept_whatever_the_quota() {
        let quota = Quota {
            max_bytes: Some(0),
            ..Quota::default()
        };
        assert_eq!(plan(quota, None, 0).0, 9);
    }

    #[test]
    fn a_full_disk_asks_for_room() {
        let space = Some(Space {
            available: 0,
            total: 100 * MIB,
        });
        assert_eq!(
            plan(
                Quota {
                    max_files: Some(100),
                    ..Quota::default()
                },
                space,
                2 * MIB + 1
            ),
            (3, Some(Reason::DiskFull))
        );
        assert_eq!(
            plan(Quota::default(), None, MIB),
            (1, Some(Reason::DiskFull))
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(MinFree::Percent(10.0).bytes(1001), 101);
        assert_eq!(MinFree::Bytes(5).bytes(1001), 5);
    }
}
