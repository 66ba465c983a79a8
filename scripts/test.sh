#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit and
# integration tests (with Pillow, exiftool and ImageMagick as independent
# checkers), and the docs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
export RUSTDOCFLAGS="-D warnings"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets --quiet
cargo test --doc --quiet
cargo doc --no-deps --quiet
