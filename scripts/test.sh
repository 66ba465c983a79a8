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
# The tests write to a file that is shown as it grows, not to a pipe: a
# process a failing test left behind cannot hold the run open, and whatever
# is left of framerec when the tests end is stopped.
# A test that hangs ends the run (with its output) well before CI gives up.
timeout --kill-after=60 2700 cargo test --all-targets >"$log" 2>&1 &
tests=$!
tail -n +1 -f --pid="$tests" "$log"
status=0
wait "$tests" || status=$?
pkill -KILL -f "${CARGO_TARGET_DIR:-$PWD/target}/debug/framerec" || true
# One closing line for the whole run.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "all tests: %d passed, %d failed, %d skipped\n", p, f, i; exit (f > 0) }' "$log"
exit "$status"
