#!/usr/bin/env bash
# Records the built-in synthetic camera for 10 seconds into ./frames.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cargo build --release --quiet
./target/release/framerec run --duration "${DURATION:-10s}"
echo
echo "files written (newest last):"
find frames -type f -name '*.jpg' | sort | tail -n 5
echo "manifest: frames/manifest.jsonl ($(wc -l < frames/manifest.jsonl) lines)"
