#!/usr/bin/env bash
# Installs what framerec needs on Debian 12, only when it is missing.
#   scripts/deps.sh build   cmake, nasm, libclang (for the vendored libjpeg-turbo)
#   scripts/deps.sh test    the above plus the independent checkers the tests use,
#                           and PipeWire's V4L2 layer with GStreamer's test source
#                           (a real V4L2 camera without hardware: scripts/pwcam.sh)
#   scripts/deps.sh bench   the build set plus the peers the benchmark compares
#                           against (FFmpeg, GStreamer's jpegenc and multifilesink)
#                           and a venv in target/bench-venv with OpenCV and numpy
set -euo pipefail

want=(cmake nasm libclang1-14)
command -v cc >/dev/null 2>&1 || want+=(build-essential)
if [[ ${1:-build} == test ]]; then
  want+=(python3 python3-pil python3-prometheus-client libimage-exiftool-perl imagemagick systemd fiu-utils)
  want+=(pipewire pipewire-bin pipewire-v4l2 wireplumber dbus gstreamer1.0-pipewire
         gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good v4l-utils)
fi
if [[ ${1:-build} == bench ]]; then
  want+=(python3 python3-venv ffmpeg gstreamer1.0-tools gstreamer1.0-plugins-base
         gstreamer1.0-plugins-good)
fi

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust 1.89 or newer (https://rustup.rs), then run this again" >&2
  exit 1
fi

if [[ ${1:-build} == bench ]]; then
  cd "$(dirname "$0")/.."
  venv=target/bench-venv
  if ! "$venv/bin/python" -c 'import cv2, numpy' >/dev/null 2>&1; then
    echo "installing into $venv: opencv-python-headless numpy" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q opencv-python-headless numpy
  fi
fi
