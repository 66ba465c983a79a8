//! Which captured frames become snapshots.
//!
//! `every = "frame"` keeps them all. An interval keeps one frame per tick,
//! with ticks on the wall-clock grid (multiples of the interval since the
//! Unix epoch, so a 10 s interval saves at :00, :10, ...). Each tick takes the
//! captured frame nearest to it: the last one before the tick or the first
//! one after, whichever is closer, if it is within half an interval. A tick
//! with no such frame is counted as missed. Ticks are computed from the grid,
//! never by adding up intervals, so nothing drifts over days.
//!
//! The schedule is pure: it sees only frame timestamps, so tests drive it
//! with an injected clock. The capture thread keeps the previous frame back
//! until the next one arrives, and asks [`Schedule::offer`] which to keep.

use std::time::{Duration, SystemTime};

/// Which captured frames become snapshots (`snapshot.every`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// Every captured frame.
    Frame,
    /// One frame per tick of this interval, ticks on the wall-clock grid.
    Interval(Duration),
}

/// The verdict on the held (previous) frame and the current one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pick {
    /// Keep the previous frame (it was nearest to a tick now past).
    pub held: bool,
    /// Keep the current frame.
    pub current: bool,
    /// Ticks that passed with no frame near enough.
    pub missed: u64,
}

/// Picks snapshot frames. See the module docs.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The interval in nanoseconds; `None` keeps every frame.
    interval: Option<i128>,
    /// The first tick not yet decided, in nanoseconds since the epoch.
    next_tick: Option<i128>,
    /// A snapshot was asked for (USR1): keep the next frame whatever the grid.
    requested: bool,
}

fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

impl Schedule {
    pub fn new(every: Every) -> Schedule {
        let interval = match every {
            Every::Frame => None,
            Every::Interval(d) => Some(d.as_nanos().max(1) as i128),
        };
        Schedule {
            interval,
            next_tick: None,
            requested: false,
        }
    }

    /// Whether frames must be held back one step for [`Schedule::offer`] to
    /// compare them with the next one.
    pub fn holds_frames(&self) -> bool {
        self.interval.is_some()
    }

    /// Asks for the next frame to be kept, whatever the interval.
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Decides on the frame captured at `current`, given the held frame's time
    /// (`held`: the previous frame, if it was not kept already).
    pub fn offer(&mut self, current: SystemTime, held: Option<SystemTime>) -> Pick {
        let requested = std::mem::take(&mut self.requested);
        let Some(interval) = self.interval else {
            return Pick {
                current: true,
                ..Pick::default()
            };
        };
        let t = nanos(current);
        let first_tick_at_or_after = |t: i128| {
            t.div_euclid(interval) * interval
                + if t.rem_euclid(interval) == 0 {
                    0
                } else {
                    interval
                }
        };
        let next = match self.next_tick {
            // The wall clock went back by more than an interval (NTP, a manual
            // change): start again from the grid instead of waiting it out.
            Some(next) if t < next - 2 * interval => first_tick_at_or_after(t),
            Some(next) => next,
            None => first_tick_at_or_after(t),
        };
        let mut pick = Pick {
            current: requested,
            ..Pick::default()
        };
        if t < next {
            self.next_tick = Some(next);
            return pick;
        }
        // Ticks in (previous frame, t]: from `next` to the last one at or before t.
        let last = t.div_euclid(interval) * interval;
        let ticks = (last - next) / interval + 1;
        let tolerance = interval / 2;
        let held_distance = held.map(|h| next - nanos(h)).filter(|d| *d >= 0);
        if ticks == 1 {
            let current_distance = t - next;
            match held_distance {
                Some(d) if d < current_distance && d <= tolerance => pick.held = true,
                _ if current_distance <= tolerance => pick.current = true,
                Some(d) if d <= tolerance => pick.held = true,
                _ => pick.missed += 1,
            }
        } else {
            // The first tick can only go to the held frame, the last only to
            // the current one; those between had no frame at all.
            match held_distance {
                Some(d) if d <= tolerance => pick.held = true,
                _ => pick.missed += 1,
            }
            if t - last <= tolerance {
                pick.current = true;
            } else {
                pick.missed += 1;
            }
            pick.missed += (ticks - 2) as u64;
        }
        self.next_tick = Some(last + interval);
        pick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ms(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Runs a schedule over frame times (ms), holding frames as the capture
    /// thread does; returns the kept times and the missed ticks.
    fn run(every: Duration, times: impl IntoIterator<Item = u64>) -> (Vec<u64>, u64) {
        let mut schedule = Schedule::new(Every::Interval(every));
        let mut held: Option<u64> = None;
        let mut kept = Vec::new();
        let mut missed = 0;
        for t in times {
            let pick = schedule.offer(at_ms(t), held.map(at_ms));
            missed += pick.missed;
            if pick.held {
                kept.push(held.unwrap());
            }
            if pick.current {
                kept.push(t);
                held = None;
            } else {
                held = Some(t);
            }
        }
        (kept, missed)
    }

    #[test]
    fn every_frame_keeps_all() {
        let mut s = Schedule::new(Every::Frame);
        assert!(!s.holds_frames());
        assert!(s.offer(at_ms(5), None).current);
    }

    #[test]
    fn picks_the_frame_nearest_each_tick() {
        // 30 fps frames (33 ms apart) starting at 10.005 s, one snapshot a second.
        let times = (0..300).map(|i| 10_005 + i * 33);
        let (kept, missed) = run(Duration::from_secs(1), times);
        assert_eq!(missed, 0);
        // Ticks at 11 s .. 19 s; nearest frames: 10.995? no: 10_005 + 30*33 = 10_995 (5 ms before).
        assert_eq!(kept.first(), Some(&10_995));
        for (k, t) in kept.iter().enumerate() {
            let tick = 11_000 + 1000 * k as u64;
            assert!(t.abs_diff(tick) <= 16, "tick {tick} got frame {t}");
        }
        assert_eq!(kept.len(), 9);
    }

    #[test]
    fn ticks_sit_on_the_wall_clock_grid() {
        // Frames every 100 ms, 10 s interval: snapshots at exactly :00, :10, ...
        let (kept, missed) = run(
            Duration::from_secs(10),
            (0..=600).map(|i| 1_000_003_000 + i * 100),
        );
        assert_eq!(missed, 0);
        let expected: Vec<u64> = (0..6).map(|i| 1_000_010_000 + i * 10_000).collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn counts_missed_ticks_when_frames_stop() {
        // A frame each second, then a 5 s stall.
        let (kept, missed) = run(Duration::from_secs(1), [1_000, 2_000, 3_000, 8_000, 9_000]);
        assert_eq!(kept, [1_000, 2_000, 3_000, 8_000, 9_000]);
        assert_eq!(missed, 4);
    }

    #[test]
    fn a_slow_camera_misses_ticks_it_cannot_serve() {
        // 100 ms interval, frames 250 ms apart: only ticks within 50 ms get a frame.
        let (kept, missed) = run(Duration::from_millis(100), (0..9).map(|i| i * 250));
        // Ticks 0..2000 step 100 = 21 ticks; frames at 0, 250, 500, ... serve 0, 200/300 (250 is 50 from both: one), 500, ...
        assert_eq!(kept.len() as u64 + missed, 21);
        assert!(missed > 0);
    }

    #[test]
    fn no_drift_over_days() {
        // A 10 min timelapse over 30 days, frames at 1 fps with 3 ms jitter.
        let start = 1_700_000_000_000u64;
        let end = start + 30 * 86_400_000;
        let times = (start / 1000..end / 1000).map(|s| s * 1000 + (s * 7919 % 7));
        let (kept, missed) = run(Duration::from_secs(600), times);
        assert_eq!(missed, 0);
        assert_eq!(kept.len(), 30 * 144);
        for t in &kept {
            let off = t % 600_000;
            assert!(
                !(10..=600_000 - 10).contains(&off),
                "{t} is {off} ms off the grid"
            );
        }
    }

    #[test]
    fn a_clock_jump_back_restarts_on_the_grid() {
        let (kept, _) = run(
            Duration::from_secs(1),
            [10_000, 11_000, 12_000, 2_000, 3_000, 4_000],
        );
        assert_eq!(kept, [10_000, 11_000, 12_000, 2_000, 3_000, 4_000]);
    }

    #[test]
    fn a_request_keeps_the_next_frame() {
        let mut s = Schedule::new(Every::Interval(Duration::from_secs(60)));
        assert!(!s.offer(at_ms(1_000), None).current);
        s.request();
        assert!(s.offer(at_ms(1_033), Some(at_ms(1_000))).current);
        assert!(!s.offer(at_ms(1_066), Some(at_ms(1_033))).current);
    }
}
