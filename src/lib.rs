//! framerec records camera frames as durable, numbered JPEG/PNG files.
//!
//! The stages, in the order a frame passes them:
//!
//! 1. [`source`] fills a reusable frame buffer and stamps its capture time
//!    (a V4L2 camera, the synthetic test pattern, raw frames from a file or
//!    stdin), on the capture thread.
//! 2. `capture` runs that thread: it asks the `schedule` whether the
//!    frame becomes a snapshot, gives each one its sequence number, and
//!    pushes it into the ring.
//! 3. `ring` queues picked frames for the encoders: bounded, its buffers
//!    allocated once, with a named overflow policy.
//! 4. `encode` turns frames into JPEG (libjpeg-turbo), PNG, or stores a
//!    camera's own JPEG, with the capture time in the file, on a pool of
//!    worker threads.
//! 5. `sink`, on the same worker, hands the encoded file to the store
//!    (with room made by retention when the disk is full) and tells
//!    retention it exists.
//! 6. [`store`] names the file from the template and writes it durably
//!    (hidden temp file → fsync → rename → directory fsync), then appends a
//!    manifest line.
//! 7. [`retention`] deletes the oldest files to keep the quota, on its own
//!    thread.
//!
//! Around them: [`frame`] holds the types passed between stages, `convert`
//! the pixel conversions, `stats` the counters every stage adds to.
//! [`config`] turns TOML into [`config::Settings`], built from each stage's
//! own options type; [`daemon`] (the supervisor) wires the stages from it,
//! starts and joins their threads, turns signals into control messages,
//! tells systemd how the run goes, and applies a reloaded config through
//! `live` (options a reload replaces while threads read them). [`http`]
//! serves metrics, health, status and the newest frame. Dependencies point one way: main → daemon and config → stages
//! → frame; no stage imports config or daemon.

mod capture;
pub mod config;
mod convert;
pub mod daemon;
mod encode;
pub mod frame;
pub mod http;
mod live;
pub mod retention;
mod ring;
mod schedule;
mod sink;
pub mod source;
mod stats;
pub mod store;
