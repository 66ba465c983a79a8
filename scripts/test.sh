#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, docs, then unit and
# integration tests (with Pillow, exiftool, ImageMagick and systemd-analyze
# as independent checkers) and a smoke run of the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --all-targets 2>&1 | tee "$log"
# One closing line for the whole run.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "all tests: %d passed, %d failed, %d skipped\n", p, f, i; exit (f > 0) }' "$log"
