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
# The tests write to a file that is shown as it grows, not to a pipe: a
# process a failing test left behind cannot hold the run open. `timeout`
# bounds a hang (well before CI gives up) and leads a process group of its
# own, which is stopped whole when the run ends or is cancelled: nothing a
# test started outlives it.
tests=
trap 'if [ -n "$tests" ]; then kill -KILL -- "-$tests" 2>/dev/null || true; fi; rm -f "$log"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
timeout --kill-after=60 2700 cargo test --all-targets >"$log" 2>&1 &
tests=$!
# In the background, so a signal to this script is acted on at once.
tail -n +1 -f --pid="$tests" "$log" &
wait "$!" || true
status=0
wait "$tests" || status=$?
# One closing line for the whole run.
awk -v status="$status" '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "all tests: %d passed, %d failed, %d skipped\n", p, f, i
           if (f == 0 && status != 0) printf "cargo test failed (exit %d) before every test ran\n", status }' "$log"
exit "$status"
