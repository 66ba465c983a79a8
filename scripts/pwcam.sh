#!/usr/bin/env bash
# A real V4L2 camera without hardware: PipeWire's V4L2 layer (pw-v4l2)
# serving GStreamer's videotestsrc as /dev/video0, for tests and trials.
# Needs root (mount namespace, mknod) and Debian's pipewire-v4l2 and
# gstreamer1.0-pipewire packages (scripts/deps.sh camera installs them).
#
#   scripts/pwcam.sh start                 private dbus + pipewire + wireplumber
#   scripts/pwcam.sh source yuyv|mjpeg [W H FPS]
#                                          a camera node; prints the gst PID
#   scripts/pwcam.sh run CMD [ARGS...]     CMD in a private mount namespace with
#                                          /dev/video0, under pw-v4l2
#   scripts/pwcam.sh stop                  stops everything started here
#
# State lives in $PWCAM_DIR (default /tmp/framerec-pwcam); the host's /dev
# and /sys are never changed.
set -euo pipefail
dir=${PWCAM_DIR:-/tmp/framerec-pwcam}
export XDG_RUNTIME_DIR=$dir/run
export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus
export PIPEWIRE_RUNTIME_DIR=$XDG_RUNTIME_DIR

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

case ${1:-} in
start)
  mkdir -p "$XDG_RUNTIME_DIR"
  chmod 700 "$XDG_RUNTIME_DIR"
  if ! alive "$dir/dbus.pid"; then
    rm -f "$XDG_RUNTIME_DIR/bus"
    dbus-daemon --session --fork --address="$DBUS_SESSION_BUS_ADDRESS" --print-pid >"$dir/dbus.pid"
  fi
  if ! alive "$dir/pipewire.pid"; then
    pipewire >"$dir/pipewire.log" 2>&1 &
    echo $! >"$dir/pipewire.pid"
    for _ in $(seq 50); do [[ -S $XDG_RUNTIME_DIR/pipewire-0 ]] && break; sleep 0.1; done
  fi
  if ! alive "$dir/wireplumber.pid"; then
    wireplumber >"$dir/wireplumber.log" 2>&1 &
    echo $! >"$dir/wireplumber.pid"
    sleep 1
  fi
  ;;
source)
  kind=${2:-yuyv} width=${3:-640} height=${4:-480} fps=${5:-30}
  caps="video/x-raw,format=YUY2,width=$width,height=$height,framerate=$fps/1"
  encode=()
  if [[ $kind == mjpeg ]]; then
    encode=(! jpegenc ! "image/jpeg,width=$width,height=$height,framerate=$fps/1")
  fi
  gst-launch-1.0 -q videotestsrc is-live=true ! "$caps" "${encode[@]}" \
    ! pipewiresink mode=provide sync=false "stream-properties=p,media.class=Video/Source" \
    >"$dir/source-$$.log" 2>&1 &
  echo $!
  # Wait for the node to appear.
  for _ in $(seq 50); do
    pw-cli ls Node 2>/dev/null | grep -q 'Video/Source' && break
    sleep 0.1
  done
  ;;
run)
  shift
  exec unshare -m --propagation private "$0" in-namespace "$@"
  ;;
in-namespace)
  shift
  work=$dir/overlay-$$
  mkdir -p "$work"/{dev,class,char}/{up,work}
  overlay() { mount -t overlay overlay -o "lowerdir=$1,upperdir=$work/$2/up,workdir=$work/$2/work" "$1"; }
  overlay /dev dev
  mknod -m 666 /dev/video0 c 81 0
  overlay /sys/class class
  mkdir -p /sys/class/video4linux/video0
  echo "videotestsrc" >/sys/class/video4linux/video0/name
  overlay /sys/dev/char char
  mkdir -p /sys/dev/char/81:0
  printf 'MAJOR=81\nMINOR=0\nDEVNAME=video0\n' >/sys/dev/char/81:0/uevent
  exec pw-v4l2 "$@"
  ;;
stop)
  for name in wireplumber pipewire dbus; do
    if alive "$dir/$name.pid"; then kill "$(cat "$dir/$name.pid")" || true; fi
    rm -f "$dir/$name.pid"
  done
  ;;
*)
  sed -n '2,16p' "$0" >&2
  exit 2
  ;;
esac
