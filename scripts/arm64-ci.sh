#!/usr/bin/env bash
# Proves presensi-edge on arm64, the Raspberry Pi's architecture, on an x86 CI machine: a Debian bookworm
# arm64 root built by mmdebstrap (Debian's packages only) and run under qemu-user-static, the project
# installed into it by systemd/install-pi.sh itself (systemd is not running there, so the unit is installed
# and enabled, not started), then `presensi demo` and a subset of the tests run inside it. What this catches
# that the native suite cannot: a dependency with no aarch64 wheel, an install step that fails on a Pi, a
# fixed wait that a slow ARM core misses. .ci/run runs it beside scripts/test.sh; it needs root.
#
#   bash scripts/arm64-ci.sh              build (or reuse) the root, install, run the demo and the tests
#   bash scripts/arm64-ci.sh prepare      only install the host's packages and check that arm64 runs here
#   bash scripts/arm64-ci.sh run CMD...   run CMD inside the root the last run left (e.g. a benchmark)
#
# The root is left at $PRESENSI_ARM64_ROOT (default /var/cache/presensi-arm64/root). The Debian packages are
# cached as a tarball beside it, keyed by the package list, so a warm run skips mmdebstrap; pip's cache is
# kept there too. A fresh machine builds both. If qemu or binfmt_misc cannot run arm64 programs here the
# script fails and says why: it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
CACHE=${PRESENSI_ARM64_CACHE:-/var/cache/presensi-arm64}
ROOT=${PRESENSI_ARM64_ROOT:-$CACHE/root}
# Each demo step (daemon start, face punch, finger punch, delivery) may take this long under emulation: dlib
# is 20-45x slower there than natively, and CI shares two cores with nothing else by then.
DEMO_TIMEOUT=${PRESENSI_ARM64_DEMO_TIMEOUT:-600}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
HOST_PACKAGES=(mmdebstrap qemu-user-static binfmt-support arch-test)
# What install-pi.sh installs (so its apt-get step finds them present; Debian's GPIO library is
# python3-rpi.gpio) and what its steps call (systemctl, systemd-analyze, udevadm, useradd, runuser).
ROOT_PACKAGES=(python3 python3-venv python3-pip sqlite3 libopenblas0 ca-certificates systemd udev
               python3-rpi.gpio)
# Fast tests where the architecture matters, modules of the native suite run unchanged: the punch log's
# SQLite durability, hash chain and Ed25519 checkpoints (cryptography's aarch64 wheel) and tamper detection
# through `presensi log verify`; the fingerprint emulator on a real pty driven by the unmodified
# pyfingerprint; and the face path (dlib-bin and OpenCV's aarch64 wheels) on real photos: embeddings that
# match across photos, encrypted at rest, and the live pipeline keeping two people apart; the Pi camera's
# source against its double and the choice of source; the LED, buzzer and relay through gpiozero's mock pins
# with the OS's RPi.GPIO installed beside them. The rest of the face suite repeats these under emulation at
# 20-45x the native time.
FACE=tests/test_face_pipeline.py
TESTS=(tests/test_punchlog.py tests/test_tamper.py tests/test_fingerprint_emulator.py
       tests/test_picamera2.py tests/test_gpio_feedback.py
       "$FACE::test_templates_are_encrypted_with_a_private_key_and_tampering_is_refused"
       "$FACE::test_templates_published_in_the_roster_join_the_gallery"
       "$FACE::test_two_people_in_view_get_one_decision_each")
# The emulator tells a client's baud rate from the pty with the TCGETS2 ioctl, which qemu-user does not
# translate (ENOSYS; a real arm64 kernel has it, with the same struct layout as x86): under emulation it
# cannot see a wrong baud, so the two tests of that are left to the native suite.
# And the refusal of a GPIO library that is not installed needs a machine without RPi.GPIO, which this root,
# like a Pi, has.
FINGER=tests/test_fingerprint_emulator.py
DESELECT=(--deselect "$FINGER::test_a_client_at_the_wrong_baud_reads_garbage"
          --deselect "$FINGER::test_a_baud_change_needs_a_power_cycle_and_then_the_client_must_follow"
          --deselect tests/test_gpio_feedback.py::test_unknown_and_unavailable_pin_factories_are_refused_with_advice)

die() { echo "arm64-ci: error: $*" >&2; exit 1; }
step() { printf '== arm64: %s  (%d s)\n' "$*" "$SECONDS"; }

# Runs a command inside the root: a private mount and PID namespace (every mount and every process left
# behind ends with it, so nothing leaks onto the host; --kill-child ends them when this script is stopped),
# /proc, /sys, /dev (with /dev/pts for the emulator's pty), the host's DNS settings and the certificate
# authorities it trusts (a network that inspects TLS has its own CA there), pip's cache, and ../shared (the
# test photos, read-only).
in_root() {
  local shared="$SRC/../shared"
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  unshare --mount --pid --fork --kill-child --propagation private -- bash -euc '
    root=$1 cache=$2 shared=$3; shift 3
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$root/run"
    install -d "$cache/pip" "$root/root/.cache/pip" "$root/usr/src/shared"
    mount --bind "$cache/pip" "$root/root/.cache/pip"
    if [ -d "$shared" ]; then mount --bind -o ro "$shared" "$root/usr/src/shared"; fi
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    mount --bind -o ro /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 CI="${CI:-}" TERM=dumb \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$@"
  ' in_root "$ROOT" "$CACHE" "$shared" "$@"
}

require_host() {
  [ "$(id -u)" = 0 ] || die "run as root (mmdebstrap, binfmt_misc and chroot need it): sudo bash $0"
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# qemu-user-static registers itself with binfmt_misc, with the F flag (the kernel keeps the interpreter open,
# so the root needs no copy of qemu). A container or a kernel without binfmt_misc cannot do that.
require_binfmt() {
  local bm=/proc/sys/fs/binfmt_misc
  if [ ! -e "$bm/register" ]; then
    mount -t binfmt_misc binfmt_misc "$bm" 2>/dev/null ||
      die "binfmt_misc is not available (mount -t binfmt_misc failed): arm64 programs cannot run here"
  fi
  [ -e "$bm/qemu-aarch64" ] || update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  [ -e "$bm/qemu-aarch64" ] || die "no qemu-aarch64 entry in $bm (update-binfmts --enable qemu-aarch64 failed)"
  grep -qx enabled "$bm/qemu-aarch64" || die "$bm/qemu-aarch64 is disabled (update-binfmts --enable qemu-aarch64)"
  grep -q '^flags: .*F' "$bm/qemu-aarch64" ||
    die "$bm/qemu-aarch64 lacks the F (fix binary) flag: a chroot cannot find qemu; reinstall qemu-user-static"
}

# The Debian part of the root, cached by what decides its content.
base_tarball() {
  local key; key=$(printf '%s\n' "$SUITE" "$MIRROR" minbase "${ROOT_PACKAGES[@]}" | sha256sum | cut -c1-16)
  local tarball="$CACHE/base-$key.tar"
  if [ ! -s "$tarball" ]; then
    step "mmdebstrap $SUITE arm64 (no cached root for this package list)" >&2
    install -d -m 0755 "$CACHE"
    rm -f "$CACHE"/base-*.tar "$CACHE"/base-*.tar.part
    local list; list=$(IFS=,; echo "${ROOT_PACKAGES[*]}")
    # --skip=cleanup/apt/lists keeps the package lists, so install-pi.sh's apt-get update is a quick check
    mmdebstrap --quiet --arch=arm64 --variant=minbase --include="$list" --skip=cleanup/apt/lists \
      --format=tar "$SUITE" "$tarball.part" "$MIRROR" >&2
    mv "$tarball.part" "$tarball"
  else
    step "cached Debian root $tarball" >&2
  fi
  echo "$tarball"
}

# The boot partition of a fresh Raspberry Pi OS bookworm image, for install-pi.sh to edit as on a Pi.
pi_boot_files() {
  install -d "$ROOT/boot/firmware"
  cat > "$ROOT/boot/firmware/config.txt" <<'EOF'
# For more options and information see http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
arm_64bit=1

[cm4]
otg_mode=1

[all]
EOF
  echo "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait" \
    > "$ROOT/boot/firmware/cmdline.txt"
}

fresh_root() {
  local tarball=$1
  case "$ROOT" in /|/usr|/var|/var/cache|"$CACHE") die "PRESENSI_ARM64_ROOT=$ROOT is not a dedicated directory" ;; esac
  # Only this script's namespaces mount anything under the root, and they end with it; a mount left by hand
  # would be deleted through, so refuse instead.
  if findmnt -rn -o TARGET | grep -q "^$ROOT\(/\|$\)"; then
    die "something is mounted under $ROOT (findmnt | grep $ROOT): unmount it first"
  fi
  rm -rf --one-file-system "$ROOT"
  install -d -m 0755 "$ROOT"
  tar -C "$ROOT" -xf "$tarball"
  pi_boot_files
  # The project as CI checked it out (tracked and new files, not .venv or build output).
  install -d "$ROOT/usr/src/presensi-edge"
  git -C "$SRC" ls-files -z -co --exclude-standard | tar -C "$SRC" --null -T - -cf - |
    tar -C "$ROOT/usr/src/presensi-edge" -xf -
}

check_install() {
  local unit=/etc/systemd/system/presensi.service
  in_root test -f "$unit" || die "install-pi.sh did not install $unit"
  [ "$(in_root systemctl is-enabled presensi.service)" = enabled ] || die "presensi.service is not enabled"
  in_root test -s /var/lib/presensi/punches.db || die "install-pi.sh did not run presensi init"
  in_root test -x /opt/presensi/venv/bin/presensi || die "no /opt/presensi/venv/bin/presensi"
  # found, not imported: RPi.GPIO refuses to import on anything but a Pi
  in_root /opt/presensi/venv/bin/python -c 'import importlib.util as u, sys; sys.exit(u.find_spec("RPi.GPIO") is None)' ||
    die "the venv does not see the OS's GPIO library (RPi.GPIO): --system-site-packages?"
  grep -qx enable_uart=1 "$ROOT/boot/firmware/config.txt" || die "install-pi.sh did not enable the UART"
  if grep -q console=serial0 "$ROOT/boot/firmware/cmdline.txt"; then die "the serial console is still on"; fi
  echo "   presensi.service installed and enabled (not started: systemd is not running in the root);"
  echo "   /var/lib/presensi initialised; boot files edited; GPIO through the OS's RPi.GPIO;" \
       "$(in_root uname -m) $(in_root python3 --version)"
}

# One pin for each test tool: the one in setup.py's dev extra.
pinned() {
  local name
  for name in "$@"; do
    grep -o "\"$name==[^\"]*\"" setup.py | tr -d '"' | grep . || die "setup.py pins no $name"
  done
}

main() {
  require_host
  require_binfmt
  local tarball; tarball=$(base_tarball)
  step "fresh root at $ROOT"
  fresh_root "$tarball"
  in_root /bin/true || die "the arm64 root's /bin/true does not run: qemu-aarch64 under binfmt_misc is broken"
  [ "$(in_root uname -m)" = aarch64 ] || die "the root does not run as aarch64 (uname -m: $(in_root uname -m))"

  step "systemd/install-pi.sh inside the root"
  in_root bash /usr/src/presensi-edge/systemd/install-pi.sh --uart pl011 --camera csi
  check_install

  step "presensi demo --timeout $DEMO_TIMEOUT"
  local venv=/opt/presensi/venv
  in_root "$venv/bin/pip" install -q --disable-pip-version-check "/usr/src/presensi-edge[demo]"
  in_root "$venv/bin/presensi" demo --timeout "$DEMO_TIMEOUT" --state-dir /tmp/presensi-demo

  step "tests: ${TESTS[*]}"
  # shellcheck disable=SC2046  # one word per pin
  in_root "$venv/bin/pip" install -q --disable-pip-version-check $(pinned pytest pytest-timeout)
  # shellcheck disable=SC2016  # expanded inside the root
  in_root bash -c 'cd /usr/src/presensi-edge && exec "$0" -m pytest -q -p no:cacheprovider "$@"' \
    "$venv/bin/python" "${DESELECT[@]}" "${TESTS[@]}"
  step "passed; the root stays at $ROOT (bash scripts/arm64-ci.sh run CMD... runs CMD in it)"
}

if [ "${1:-}" = prepare ]; then
  require_host
  require_binfmt
  step "the host can run arm64 programs"
elif [ "${1:-}" = run ]; then
  shift
  [ $# -gt 0 ] || die "usage: bash scripts/arm64-ci.sh run CMD [ARGS...]"
  [ "$(id -u)" = 0 ] || die "run as root"
  [ -x "$ROOT/bin/bash" ] || die "no arm64 root at $ROOT: run bash scripts/arm64-ci.sh first"
  require_binfmt
  in_root "$@"
else
  main
fi
