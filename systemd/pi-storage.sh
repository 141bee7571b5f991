#!/usr/bin/env bash
# Protect a terminal's SD card against power cuts (docs/install-pi.md, "SD cards and power cuts"):
#   sudo systemd/pi-storage.sh [--state-device DEV [--format]] [--noatime] [--fsck-repair]
#                              [--volatile-journal] [--read-only-root] [--status]
#   --state-device DEV  the punch database (/var/lib/presensi) on its own ext4 partition: a USB SSD or a
#                       third SD partition (mounted noatime, errors=remount-ro; existing data is copied)
#   --format            make DEV a new ext4 file system first (everything on DEV is lost)
#   --noatime           mount / and the boot partition noatime (no write for every file read)
#   --fsck-repair       fsck.repair=yes on the kernel command line: the root is checked and fixed at boot
#   --volatile-journal  the system journal in RAM only (32 MB): no log writes to the SD card
#   --read-only-root    the OS root read-only with a RAM overlay (raspi-config's overlay file system);
#                       refused unless the state directory is on its own partition (punches must survive)
#   --status            show what is in place
# Running it again is safe. --root DIR edits the files under DIR only and runs no command on the system
# (used by the tests).
set -euo pipefail

STATE=/var/lib/presensi
ROOT=
DEVICE=
FORMAT=0
NOATIME=0
FSCK=0
VOLATILE=0
READONLY=0
STATUS=0

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "pi-storage: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --state-device) DEVICE=${2:?}; shift 2 ;;
    --format) FORMAT=1; shift ;;
    --noatime) NOATIME=1; shift ;;
    --fsck-repair) FSCK=1; shift ;;
    --volatile-journal) VOLATILE=1; shift ;;
    --read-only-root) READONLY=1; VOLATILE=1; shift ;;
    --status) STATUS=1; shift ;;
    --root) ROOT=${2:?}; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "pi-storage: unknown option $1" >&2; usage 2 ;;
  esac
done
[ $((NOATIME + FSCK + VOLATILE + READONLY + STATUS)) -gt 0 ] || [ -n "$DEVICE" ] || usage 2
if [ "$FORMAT" = 1 ] && [ -z "$DEVICE" ]; then die "--format needs --state-device DEV"; fi
if [ -z "$ROOT" ]; then [ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"; fi

FSTAB="$ROOT/etc/fstab"
live() { [ -z "$ROOT" ]; }  # act on this machine (not on a tree under --root)

boot_dir() {
  if [ -f "$ROOT/boot/firmware/cmdline.txt" ]; then echo "$ROOT/boot/firmware"
  elif [ -f "$ROOT/boot/cmdline.txt" ]; then echo "$ROOT/boot"
  else die "no cmdline.txt under $ROOT/boot/firmware or $ROOT/boot: is this Raspberry Pi OS?"
  fi
}

# fstab_set MOUNTPOINT [LINE]: with LINE, make it the one entry for MOUNTPOINT; without, print the entry.
# fstab_option MOUNTPOINT OPTION: add OPTION to the entry's options unless present.
fstab() {
  python3 - "$FSTAB" "$@" <<'PY'
import sys
from pathlib import Path

path, action, mount, arg = Path(sys.argv[1]), sys.argv[2], sys.argv[3], (sys.argv[4:] or [""])[0]
lines = path.read_text().splitlines() if path.exists() else []
def fields(line):
    f = line.split()
    return f if len(f) >= 4 and not line.lstrip().startswith("#") else None
index = next((i for i, l in enumerate(lines) if (f := fields(l)) and f[1] == mount), None)
if action == "get":
    print(lines[index] if index is not None else "")
    sys.exit(0)
if action == "set":
    new = arg
elif index is None:
    sys.exit(f"pi-storage: no {mount} entry in {path}")
else:
    f = fields(lines[index])
    options = f[3].split(",")
    if arg in options:
        sys.exit(0)
    f[3] = ",".join([o for o in options if o != "defaults" or len(options) == 1] + [arg])
    new = "\t".join(f)
if index is None:
    lines.append(new)
elif lines[index] == new:
    sys.exit(0)
else:
    lines[index] = new
path.write_text("\n".join(lines) + "\n")
print(f"   {path}: {new}")
PY
}

set_noatime() {
  echo "== noatime on / and the boot partition"
  fstab option / noatime
  if [ -n "$(fstab get /boot/firmware)" ]; then fstab option /boot/firmware noatime; fi
}

set_fsck_repair() {
  echo "== fsck at boot (fsck.repair=yes)"
  local cmdline; cmdline="$(boot_dir)/cmdline.txt"
  if ! grep -qw "fsck.repair=yes" "$cmdline"; then
    sed -i -e 's/ *fsck\.repair=[a-z]*//' -e '1s/$/ fsck.repair=yes/' "$cmdline"
    echo "   $cmdline: fsck.repair=yes"
  fi
}

set_volatile_journal() {
  echo "== journal in RAM (Storage=volatile, 32 MB)"
  install -d "$ROOT/etc/systemd/journald.conf.d"
  printf '# systemd/pi-storage.sh: no log writes to the SD card\n[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' \
    > "$ROOT/etc/systemd/journald.conf.d/presensi-volatile.conf"
  if live; then systemctl restart systemd-journald; fi
}

set_state_device() {
  echo "== state directory $STATE on $DEVICE"
  if live; then
    [ -b "$DEVICE" ] || die "$DEVICE is not a block device (lsblk lists the partitions)"
    if findmnt -n -S "$DEVICE" -o TARGET | grep -qx "/"; then die "$DEVICE holds the root file system"; fi
    if [ "$FORMAT" = 1 ]; then mkfs.ext4 -q -F -L presensi-state "$DEVICE"; fi
    [ "$(blkid -o value -s TYPE "$DEVICE")" = ext4 ] || die "$DEVICE is not ext4: add --format to make it one"
  fi
  local uuid; uuid=$(if live; then blkid -o value -s UUID "$DEVICE"; else echo "${PI_STORAGE_UUID:?}"; fi)
  fstab set "$STATE" "UUID=$uuid	$STATE	ext4	noatime,nofail,errors=remount-ro,x-systemd.device-timeout=30s	0	2"
  # the daemon starts only once the partition is mounted: never punches onto the SD card underneath it
  install -d "$ROOT/etc/systemd/system/presensi.service.d"
  printf '# systemd/pi-storage.sh: the punch database lives on its own partition\n[Unit]\nRequiresMountsFor=%s\n' \
    "$STATE" > "$ROOT/etc/systemd/system/presensi.service.d/state-mount.conf"
  if live && ! findmnt -n "$STATE" >/dev/null; then copy_state; fi
}

copy_state() {
  local tmp; tmp=$(mktemp -d)
  systemctl stop presensi.service 2>/dev/null || true
  mount "$DEVICE" "$tmp"
  if [ -d "$STATE" ]; then cp -a "$STATE/." "$tmp/"; fi
  umount "$tmp" && rmdir "$tmp"
  systemctl daemon-reload
  mount "$STATE"
  chown presensi:presensi "$STATE" 2>/dev/null || true
  chmod 0700 "$STATE"
  systemctl start presensi.service 2>/dev/null || true
  echo "   punches copied; the old copy on the SD card is hidden under the mount (remove it when all is well)"
}

state_on_own_partition() {
  if live; then [ "$(findmnt -n -o TARGET --target "$STATE")" = "$STATE" ]; else [ -n "$(fstab get "$STATE")" ]; fi
}

set_read_only_root() {
  echo "== read-only root (overlay file system)"
  if ! live; then echo "   (--root: would run raspi-config nonint enable_overlayfs and enable_bootro)"; return; fi
  command -v raspi-config >/dev/null || die "raspi-config not found: see docs/install-pi.md for the overlayroot way"
  raspi-config nonint enable_overlayfs
  raspi-config nonint enable_bootro
  echo "   active after a reboot; to change the configuration later: sudo raspi-config nonint disable_overlayfs," \
       "reboot, edit, enable again"
}

show_status() {
  echo "== status"
  if live; then
    echo "   root:      $(findmnt -n -o SOURCE,FSTYPE,OPTIONS /)"
    echo "   state dir: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS --target "$STATE")"
  fi
  echo "   fstab $STATE: $(fstab get "$STATE")"
  if [ -f "$ROOT/etc/systemd/journald.conf.d/presensi-volatile.conf" ]; then
    echo "   journal: volatile (RAM)"
  else
    echo "   journal: persistent (as configured)"
  fi
}

# refuse before changing anything: a read-only root needs the punches on a partition of their own
if [ "$READONLY" = 1 ] && [ -z "$DEVICE" ] && ! state_on_own_partition; then
  die "the state directory $STATE is on the root file system: with a read-only root the punches would live" \
    "in RAM and be lost at the next power cut. Put it on its own partition first (--state-device DEV)"
fi
if [ -n "$DEVICE" ]; then set_state_device; fi
if [ "$NOATIME" = 1 ]; then set_noatime; fi
if [ "$FSCK" = 1 ]; then set_fsck_repair; fi
if [ "$VOLATILE" = 1 ]; then set_volatile_journal; fi
if [ "$READONLY" = 1 ]; then set_read_only_root; fi
if [ "$STATUS" = 1 ]; then show_status; fi
