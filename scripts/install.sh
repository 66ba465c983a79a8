#!/usr/bin/env bash
# Installs framerec: the binary, the systemd units, the system user and its
# directories, and the example configs. Run it again to upgrade: it replaces
# what it shipped and never touches a config in /etc/framerec.
#
#   sudo scripts/install.sh                 install, create the user and the
#                                           directories, reload systemd
#   DESTDIR=/tmp/stage scripts/install.sh   only stage the files below /tmp/stage
#
# Environment:
#   PREFIX        where the binary and the shared files go (default /usr/local);
#                 the installed units run $PREFIX/bin/framerec
#   DESTDIR       put every file below this directory (for packaging); then
#                 nothing is set up on this machine
#   FRAMEREC_BIN  the binary to install (default target/release/framerec,
#                 built with `cargo build --release` when missing)
#
# Where things go (each below $DESTDIR):
#   $PREFIX/bin/framerec
#   /etc/systemd/system/framerec.service, framerec@.service
#   /usr/lib/sysusers.d/framerec.conf, /usr/lib/tmpfiles.d/framerec.conf
#   $PREFIX/share/framerec/  the example configs and framerec-http.conf, the
#                            drop-in that opens the loopback for [http]
#   /etc/framerec/framerec.toml  the example config, only if there is none
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${PREFIX:-/usr/local}
prefix=${prefix%/}
destdir=${DESTDIR:-}
destdir=${destdir%/}

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[[ $prefix == /* ]] || die "PREFIX must be an absolute path, not '$prefix'"
if [[ -z $destdir && $(id -u) != 0 ]]; then
  die "installing into / needs root (run it with sudo), or set DESTDIR=DIR to stage the files"
fi

# The binary: FRAMEREC_BIN, or the release build (built when missing).
if [[ -n ${FRAMEREC_BIN:-} ]]; then
  bin=$FRAMEREC_BIN
  [[ -f $bin && -x $bin ]] || die "FRAMEREC_BIN=$bin is not an executable file"
else
  bin=$repo/target/release/framerec
  if [[ ! -x $bin ]]; then
    command -v cargo >/dev/null 2>&1 ||
      die "$bin is missing and cargo is not on PATH: build it with 'cargo build --release' first (or set FRAMEREC_BIN)"
    say "building $bin (cargo build --release)"
    cargo build --release --manifest-path "$repo/Cargo.toml"
  fi
fi

# put MODE SOURCE TARGET: installs SOURCE as TARGET (below DESTDIR), saying
# whether anything changed.
put() {
  local mode=$1 source=$2 target=$destdir$3
  if [[ -f $target ]] && cmp -s "$source" "$target"; then
    chmod "$mode" "$target"
    say "unchanged  $target"
  else
    install -D -m "$mode" "$source" "$target"
    say "installed  $target"
  fi
}

# put_once MODE SOURCE TARGET: installs SOURCE only if TARGET does not exist
# (a user's config is never overwritten).
put_once() {
  local mode=$1 source=$2 target=$destdir$3
  if [[ -e $target || -L $target ]]; then
    say "kept       $target (it exists; the example is in $destdir$prefix/share/framerec)"
  else
    install -D -m "$mode" "$source" "$target"
    say "installed  $target"
  fi
}

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT

put 0755 "$bin" "$prefix/bin/framerec"

# The units name /usr/local: point them at PREFIX.
for unit in framerec.service framerec@.service; do
  text=$(<"$repo/systemd/$unit")
  text=${text//"/usr/local/bin/framerec"/"$prefix/bin/framerec"}
  text=${text//"/usr/local/share/framerec"/"$prefix/share/framerec"}
  printf '%s\n' "$text" >"$staging/$unit"
  put 0644 "$staging/$unit" "/etc/systemd/system/$unit"
done
text=$(<"$repo/systemd/framerec-http.conf")
printf '%s\n' "${text//"/usr/local/share/framerec"/"$prefix/share/framerec"}" >"$staging/framerec-http.conf"
put 0644 "$staging/framerec-http.conf" "$prefix/share/framerec/framerec-http.conf"

put 0644 "$repo/systemd/sysusers.d/framerec.conf" /usr/lib/sysusers.d/framerec.conf
put 0644 "$repo/systemd/tmpfiles.d/framerec.conf" /usr/lib/tmpfiles.d/framerec.conf

for example in "$repo"/config/*.toml; do
  put 0644 "$example" "$prefix/share/framerec/$(basename "$example")"
done
install -d -m 0755 "$destdir/etc/framerec"
put_once 0644 "$repo/config/framerec.toml" /etc/framerec/framerec.toml

# Every config the services will read must still pass the installed binary's
# check (an upgrade can refuse what an older version took).
for config in "$destdir"/etc/framerec/*.toml; do
  [[ -e $config ]] || continue
  if ! problems=$("$destdir$prefix/bin/framerec" check --config "$config" 2>&1 >/dev/null); then
    printf 'install.sh: warning: %s does not pass framerec check; its service will not start:\n%s\n' \
      "$config" "$problems" >&2
  fi
done

if [[ -n $destdir ]]; then
  say "staged below $destdir: the user, the directories and systemd are left to the package's scripts"
  exit 0
fi

if command -v systemd-sysusers >/dev/null 2>&1; then
  systemd-sysusers /usr/lib/sysusers.d/framerec.conf
  say "user       framerec ($(id -Gn framerec | tr ' ' ','))"
else
  say "skipped    systemd-sysusers is not installed: create the user with"
  say "           useradd --system --home-dir /var/lib/framerec --shell /usr/sbin/nologin --groups video framerec"
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
  systemd-tmpfiles --create /usr/lib/tmpfiles.d/framerec.conf
  say "ready      /var/lib/framerec (0750 framerec:framerec), /etc/framerec"
else
  say "skipped    systemd-tmpfiles is not installed: systemd creates /var/lib/framerec when a service starts"
fi
if [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  say "reloaded   systemd"
else
  say "skipped    systemctl daemon-reload: systemd is not running here"
fi

say ""
say "Next: edit /etc/framerec/framerec.toml, then: systemctl enable --now framerec"
say "  or, one service per camera: cp $prefix/share/framerec/surveillance.toml /etc/framerec/NAME.toml,"
say "  set camera = \"NAME\" in it, then: systemctl enable --now framerec@NAME"
