//! The integration tests: one binary, one module per area. Each runs the
//! framerec binary as a user would and checks what it wrote with tools
//! nobody here wrote (Pillow, exiftool, ImageMagick, systemd-analyze).

mod architecture;
mod camera;
mod cli;
mod common;
mod faults;
mod formats;
mod hardening;
mod lifecycle;
mod packaging;
mod retention;
mod service;
