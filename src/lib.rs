//! framerec records camera frames as durable, numbered JPEG/PNG files.
//!
//! The pipeline, in the order data flows through it:
//!
//! 1. [`source`] fills reusable frame buffers on the capture thread
//!    (synthetic test pattern, raw frames from a file or stdin).
//! 2. [`schedule`] picks which captured frames become snapshots and gives
//!    them their sequence numbers.
//! 3. [`ring`] queues picked frames for the encoders: bounded, its buffers
//!    allocated once, with a named overflow policy.
//! 4. [`encode`] turns frames into JPEG (libjpeg-turbo) or PNG on a pool of
//!    worker threads.
//! 5. [`store`] names each file from the template and writes it durably
//!    (hidden temp file → fsync → rename → directory fsync), then appends a
//!    manifest line.
//!
//! [`daemon`] starts and joins the threads, turns signals into control
//! messages and prints the summary; [`config`] turns TOML into validated
//! [`config::Settings`]; [`frame`] holds the types passed between stages;
//! [`convert`] the pixel conversions; [`stats`] the counters.

pub mod config;
pub mod convert;
pub mod daemon;
pub mod encode;
pub mod frame;
pub mod retention;
pub mod ring;
pub mod schedule;
pub mod source;
pub mod stats;
pub mod store;
