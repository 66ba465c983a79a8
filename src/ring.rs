//! The ring: a bounded queue of captured frames between the capture thread
//! and the encoder pool, over frame buffers allocated once and reused.
//!
//! Two crossbeam channels carry the buffers: `filled` (capture → encoders,
//! bounded to `ring.frames`) and `free` (encoders → capture). Every buffer is
//! always in exactly one place: a channel, the capture thread's hands, or one
//! encoder's hands. There are `frames + threads + HELD_BY_CAPTURE` buffers, so
//! whenever `filled` has room, `free` has a buffer: capture never allocates
//! and never waits on the disk.
//!
//! When `filled` is full, the [`Overflow`] policy decides: drop the oldest
//! waiting frame (capture takes it back out of the queue and reuses its
//! buffer), drop the new one, or block (raw files only).
//!
//! Closing is dropping the [`Producer`]: encoders drain what is queued and
//! then see the channel closed.

use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::frame::Frame;

/// Buffers the capture thread may hold at once (the frame being filled and
/// the previous one, kept back in case it is nearer the next tick).
pub const HELD_BY_CAPTURE: usize = 2;

/// The most memory the ring's frame buffers may take together.
pub const MAX_BYTES: u64 = 8 << 30;

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
    /// Every policy, by its config name.
    pub const ALL: [(&'static str, Overflow); 3] = [
        ("drop-oldest", Overflow::DropOldest),
        ("drop-newest", Overflow::DropNewest),
        ("block", Overflow::Block),
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop-oldest",
            Overflow::DropNewest => "drop-newest",
            Overflow::Block => "block",
        }
    }
}

/// The ring's size and policy (`[ring]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Frames that can wait for an encoder; at least 1.
    pub frames: usize,
    pub when_full: Overflow,
}

/// How many frame buffers a ring of `frames` slots for `workers` encoders
/// allocates: every slot, one in each encoder's hands, and those capture
/// holds.
pub const fn buffer_count(frames: usize, workers: usize) -> usize {
    frames + workers + HELD_BY_CAPTURE
}

/// What happened to a pushed frame.
#[derive(Debug)]
pub enum Pushed {
    /// Queued; nothing was lost.
    Queued,
    /// Queued after dropping the oldest waiting frame, whose `seq` this is.
    DroppedOldest(u64),
    /// Not queued: the ring was full (`drop-newest`). Its `seq` is given.
    DroppedNewest(u64),
    /// The encoders are gone; the frame could not be queued.
    Closed,
}

/// The capture thread's end of the ring.
pub struct Producer {
    filled_tx: Sender<Frame>,
    /// Only with `drop-oldest`, to take the oldest frame back out. (Holding
    /// a receiver keeps the channel open, so the other policies must not:
    /// they learn from it that the encoders are gone.)
    filled_rx: Option<Receiver<Frame>>,
    free_rx: Receiver<Frame>,
    queued: Occupancy,
    when_full: Overflow,
    /// To give buffers back (frames held back, then not picked).
    free_tx: Sender<Frame>,
}

/// An encoder's end of the ring (cloneable: one per worker).
#[derive(Clone)]
pub struct Consumer {
    filled_rx: Receiver<Frame>,
    queued: Occupancy,
    free_tx: Sender<Frame>,
}

/// How many frames wait in the ring (for the metrics), kept beside the
/// channel: holding one of its ends would change when it counts as closed.
#[derive(Clone, Debug, Default)]
pub struct Occupancy(std::sync::Arc<std::sync::atomic::AtomicIsize>);

impl Occupancy {
    /// Frames queued now.
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed).max(0) as usize
    }

    fn add(&self, n: isize) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The ring's buffers could not be allocated (a memory limit).
#[derive(Debug, thiserror::Error)]
#[error("cannot allocate {buffers} frame buffers of {} KiB ({} MiB in all)", buffer_bytes >> 10, (*buffers as u64 * *buffer_bytes as u64) >> 20)]
pub struct AllocError {
    pub buffers: usize,
    pub buffer_bytes: usize,
}

/// Builds a ring for `workers` encoders, with buffers of `buffer_capacity`
/// bytes each. Every buffer is allocated here; if memory runs out, nothing
/// is kept and the error says how much was asked for.
pub fn ring(
    options: &Options,
    workers: usize,
    buffer_capacity: usize,
) -> Result<(Producer, Consumer), AllocError> {
    let frames = options.frames.max(1);
    let when_full = options.when_full;
    let buffers = buffer_count(frames, workers);
    let (filled_tx, filled_rx) = bounded(frames);
    let (free_tx, free_rx) = bounded(buffers);
    for _ in 0..buffers {
        let frame = Frame::try_with_capacity(buffer_capacity).map_err(|_| AllocError {
            buffers,
            buffer_bytes: buffer_capacity,
        })?;
        // The channel has room for every buffer.
        let _ = free_tx.try_send(frame);
    }
    let queued = Occupancy::default();
    Ok((
        Producer {
            filled_tx,
            filled_rx: (when_full == Overflow::DropOldest).then(|| filled_rx.clone()),
            free_rx,
            when_full,
            queued: queued.clone(),
            free_tx: free_tx.clone(),
        },
        Consumer {
            filled_rx,
            free_tx,
            queued,
        },
    ))
}

impl Producer {
    /// Gives a buffer whose frame is not queued back to the free ones.
    pub fn recycle(&self, mut frame: Frame) {
        frame.view = None;
        // The free channel has room for every buffer.
        let _ = self.free_tx.try_send(frame);
    }

    /// How many frames wait (for the metrics).
    pub fn occupancy(&self) -> Occupancy {
        self.queued.clone()
    }

    /// A free buffer for the next frame. Free buffers always exist while the
    /// capture thread holds fewer than [`HELD_BY_CAPTURE`]; if the encoders
    /// have died this gives a fresh one rather than hang.
    pub fn take_buffer(&self) -> Frame {
        if let Ok(frame) = self.free_rx.try_recv() {
            return frame;
        }
        match self.free_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(frame) => frame,
            Err(_) => Frame::with_capacity(0),
        }
    }

    /// Queues `frame` and returns what happened plus a buffer for the next
    /// frame (the frame itself when it was dropped, or a dropped frame's).
    pub fn push(&self, frame: Frame) -> (Pushed, Frame) {
        match self.when_full {
            Overflow::Block => match self.filled_tx.send(frame) {
                Ok(()) => {
                    self.queued.add(1);
                    (Pushed::Queued, self.take_buffer())
                }
                Err(e) => (Pushed::Closed, e.into_inner()),
            },
            Overflow::DropNewest => match self.filled_tx.try_send(frame) {
                Ok(()) => {
                    self.queued.add(1);
                    (Pushed::Queued, self.take_buffer())
                }
                Err(TrySendError::Full(frame)) => {
                    let seq = frame.seq;
                    (Pushed::DroppedNewest(seq), frame)
                }
                Err(TrySendError::Disconnected(frame)) => (Pushed::Closed, frame),
            },
            Overflow::DropOldest => {
                let mut frame = frame;
                let mut dropped: Option<Frame> = None;
                loop {
                    match self.filled_tx.try_send(frame) {
                        Ok(()) => {
                            self.queued.add(1);
                            break;
                        }
                        Err(TrySendError::Disconnected(frame)) => return (Pushed::Closed, frame),
                        Err(TrySendError::Full(back)) => {
                            frame = back;
                            // Take the oldest out. If an encoder took it first,
                            // there is room now and the next try succeeds.
                            if dropped.is_none() {
                                dropped = self.filled_rx.as_ref().and_then(|rx| rx.try_recv().ok());
                                if dropped.is_some() {
                                    self.queued.add(-1);
                                }
                            }
                        }
                    }
                }
                match dropped {
                    Some(oldest) => (Pushed::DroppedOldest(oldest.seq), oldest),
                    None => (Pushed::Queued, self.take_buffer()),
                }
            }
        }
    }
}

impl Consumer {
    /// The next frame, waiting at most `timeout`. `Err(true)` once the ring is
    /// closed and empty; `Err(false)` on a timeout.
    pub fn pop(&self, timeout: Duration) -> Result<Frame, bool> {
        match self.filled_rx.recv_timeout(timeout) {
            Ok(frame) => {
                self.queued.add(-1);
                Ok(frame)
            }
            Err(RecvTimeoutError::Disconnected) => Err(true),
            Err(RecvTimeoutError::Timeout) => Err(false),
        }
    }

    /// Returns a buffer once its frame is written (or dropped).
    pub fn release(&self, mut frame: Frame) {
        // A mapped frame's pages go now, not when the buffer is next used.
        frame.view = None;
        // Room for every buffer; if capture is gone the buffer is simply freed.
        let _ = self.free_tx.try_send(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn frame(producer: &Producer, seq: u64) -> Frame {
        let mut f = producer.take_buffer();
        f.seq = seq;
        f
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(prop_oneof![Just(Op::Push), Just(Op::Pop)], 0..200)
    }

    fn policy() -> impl Strategy<Value = Overflow> {
        prop_oneof![Just(Overflow::DropOldest), Just(Overflow::DropNewest)]
    }

    proptest! {
        /// The ring behaves like a bounded VecDeque with the same policy, and
        /// never allocates a buffer beyond the ones it started with.
        #[test]
        fn matches_a_vecdeque_model(capacity in 1usize..6, when_full in policy(), ops in ops()) {
            let (producer, consumer) = ring(
                &Options {
                    frames: capacity,
                    when_full,
                },
                1,
                8,
            ).unwrap();
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut next_seq = 0;
            let mut dropped_model = Vec::new();
            let mut dropped_ring = Vec::new();
            for op in ops {
                match op {
                    Op::Push => {
                        let f = frame(&producer, next_seq);
                        prop_assert!(f.data.capacity() >= 8, "a buffer was allocated anew");
                        if model.len() == capacity {
                            match when_full {
                                Overflow::DropOldest => {
                                    dropped_model.push(model.pop_front().unwrap());
                                    model.push_back(next_seq);
                                }
                                _ => dropped_model.push(next_seq),
                            }
                        } else {
                            model.push_back(next_seq);
                        }
                        let (pushed, spare) = producer.push(f);
                        match pushed {
                            Pushed::Queued => {}
                            Pushed::DroppedOldest(seq) | Pushed::DroppedNewest(seq) => dropped_ring.push(seq),
                            Pushed::Closed => prop_assert!(false, "closed"),
                        }
                        // The spare buffer goes back as a capture thread would reuse it.
                        consumer.release(spare);
                        next_seq += 1;
                    }
                    Op::Pop => {
                        let got = consumer.pop(Duration::ZERO).ok().map(|f| {
                            let seq = f.seq;
                            consumer.release(f);
                            seq
                        });
                        prop_assert_eq!(got, model.pop_front());
                    }
                }
                prop_assert_eq!(consumer.filled_rx.len(), model.len());
            }
            prop_assert_eq!(dropped_ring, dropped_model);
        }
    }

    #[test]
    fn closing_lets_consumers_drain_then_stop() {
        let (producer, consumer) = ring(
            &Options {
                frames: 4,
                when_full: Overflow::DropOldest,
            },
            1,
            0,
        )
        .unwrap();
        for seq in 0..3 {
            let f = frame(&producer, seq);
            let (_, spare) = producer.push(f);
            consumer.release(spare);
        }
        drop(producer);
        let drained: Vec<u64> =
            std::iter::from_fn(|| consumer.pop(Duration::ZERO).ok().map(|f| f.seq)).collect();
        assert_eq!(drained, [0, 1, 2]);
        assert!(matches!(consumer.pop(Duration::ZERO), Err(true)));
    }

    #[test]
    fn block_sees_the_encoders_gone() {
        let (producer, consumer) = ring(
            &Options {
                frames: 1,
                when_full: Overflow::Block,
            },
            1,
            0,
        )
        .unwrap();
        let first = frame(&producer, 1);
        let (_, spare) = producer.push(first);
        drop(consumer);
        let mut second = spare;
        second.seq = 2;
        assert!(matches!(producer.push(second).0, Pushed::Closed));
    }

    #[test]
    fn block_waits_for_an_encoder() {
        let (producer, consumer) = ring(
            &Options {
                frames: 1,
                when_full: Overflow::Block,
            },
            1,
            0,
        )
        .unwrap();
        let first = frame(&producer, 1);
        let (_, spare) = producer.push(first);
        let handle = std::thread::spawn(move || {
            let mut second = spare;
            second.seq = 2;
            matches!(producer.push(second).0, Pushed::Queued)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(consumer.pop(Duration::from_secs(5)).map(|f| f.seq), Ok(1));
        assert!(handle.join().unwrap());
        assert_eq!(consumer.pop(Duration::from_secs(5)).map(|f| f.seq), Ok(2));
    }
}
