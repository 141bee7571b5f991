#!/usr/bin/env bash
# Install presensi-edge on Raspberry Pi OS (bookworm, 64-bit) from this source tree:
#   sudo systemd/install-pi.sh [--uart pl011|miniuart|usb] [--camera csi|usb] [--prefix /opt/presensi]
#                              [--kiosk auto|none|USER]
# It creates the `presensi` user (groups video, dialout, gpio, systemd-journal), a virtual environment with
# the package (and the OS's python3-picamera2), /etc/presensi/presensi.toml (kept if present), the systemd
# unit and the udev rule, sets the UART and camera options in the boot files, and shows the kiosk page full
# screen at boot for the desktop user (auto: the one Raspberry Pi OS logs in). Running it again is safe.
# docs/install-pi.md explains every step; systemd/pi-storage.sh protects the SD card against power cuts.
#
# --boot-only --root DIR edits only DIR/boot/firmware/{cmdline,config}.txt (used by the tests).
# Where systemd is not running (a chroot, an image being built: scripts/arm64-ci.sh) the unit is installed
# and enabled but nothing is started or reloaded; it starts on the next boot.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/presensi
UART=pl011
CAMERA=csi
KIOSK=auto
ROOT=
BOOT_ONLY=0

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install-pi: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --uart) UART=${2:?}; shift 2 ;;
    --camera) CAMERA=${2:?}; shift 2 ;;
    --prefix) PREFIX=${2:?}; shift 2 ;;
    --kiosk) KIOSK=${2:?}; shift 2 ;;
    --root) ROOT=${2:?}; shift 2 ;;
    --boot-only) BOOT_ONLY=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install-pi: unknown option $1" >&2; usage 2 ;;
  esac
done
case "$UART" in pl011|miniuart|usb) ;; *) die "--uart must be pl011, miniuart or usb (got '$UART')" ;; esac
case "$CAMERA" in csi|usb) ;; *) die "--camera must be csi or usb (got '$CAMERA')" ;; esac
case "$KIOSK" in *[!a-z0-9_-]*|"") die "--kiosk must be auto, none or a user name (got '$KIOSK')" ;; esac

apt_has() { apt-cache show "$1" >/dev/null 2>&1; }

boot_dir() {
  # Bookworm mounts the boot partition at /boot/firmware; older releases at /boot.
  if [ -f "$ROOT/boot/firmware/config.txt" ]; then echo "$ROOT/boot/firmware"
  elif [ -f "$ROOT/boot/config.txt" ]; then echo "$ROOT/boot"
  else die "no config.txt under $ROOT/boot/firmware or $ROOT/boot: is this Raspberry Pi OS?"
  fi
}

# Edit cmdline.txt and config.txt: no login console on the UART the sensor uses, the UART enabled, the
# PL011 UART moved to GPIO 14/15 (Bluetooth off) unless the mini UART is chosen, the camera detected.
# Prints "changed" when a reboot is needed. Idempotent; keeps a .presensi.bak of each file it changes.
configure_boot() {
  local dir; dir=$(boot_dir)
  python3 - "$dir" "$UART" "$CAMERA" <<'PY'
import re, shutil, sys
from pathlib import Path

boot, uart, camera = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
changed = False

def save(path: Path, old: str, new: str) -> None:
    global changed
    if new != old:
        bak = path.with_name(path.name + ".presensi.bak")
        if not bak.exists():
            shutil.copy2(path, bak)
        path.write_text(new)
        changed = True

cmdline = boot / "cmdline.txt"
if cmdline.exists() and uart != "usb":
    old = cmdline.read_text()
    # the kernel's serial console would answer the sensor's packets with login prompts
    words = [w for w in old.split() if not re.fullmatch(r"console=(serial\d|ttyAMA\d|ttyS\d)(,\d+)?", w)]
    save(cmdline, old, " ".join(words) + "\n")

config = boot / "config.txt"
old = config.read_text()
want = {}  # key -> value that must be active under [all]
if uart != "usb":
    want["enable_uart"] = "1"
overlays = ["disable-bt"] if uart == "pl011" else []
if camera == "csi":
    want["camera_auto_detect"] = "1"

lines, section, out = old.splitlines(), "all", []
for line in lines:
    s = line.strip()
    if s.startswith("[") and s.endswith("]"):
        section = s[1:-1].strip()
    elif section == "all" and "=" in s and not s.startswith("#"):
        key, _, value = s.partition("=")
        key, value = key.strip(), value.strip()
        if key in want:
            if value == want[key]:
                want.pop(key)
            else:  # e.g. enable_uart=0: switch it, do not add a contradicting second line
                line = f"{key}={want.pop(key)}"
        elif key == "dtoverlay" and value in overlays:
            overlays.remove(value)
    out.append(line)
block = [f"{k}={v}" for k, v in want.items()] + [f"dtoverlay={o}" for o in overlays]
if block:
    # a trailing [pi4]/[cm4] section would limit our lines to that model: reopen [all] first
    out += ["", "[all]", "# presensi-edge (systemd/install-pi.sh): fingerprint UART and camera", *block]
save(config, old, "\n".join(out) + "\n")
print("changed" if changed else "unchanged")
PY
}

# The desktop user the kiosk runs as: --kiosk USER, or (auto) the user Raspberry Pi OS logs in automatically,
# else the first regular user; nothing with --kiosk none or on an image without a desktop session.
kiosk_user() {
  local user=
  case "$KIOSK" in
    none) return 0 ;;
    auto)
      command -v labwc >/dev/null || command -v wayfire >/dev/null || return 0
      user=$(sed -n 's/^autologin-user=//p' /etc/lightdm/lightdm.conf 2>/dev/null | tail -n 1)
      [ -n "$user" ] || user=$(getent passwd 1000 | cut -d: -f1) ;;
    *) user=$KIOSK; id "$user" >/dev/null 2>&1 || die "--kiosk $user: no such user" ;;
  esac
  echo "$user"
}

# Chromium in kiosk mode on the kiosk page for `user`, from the desktop session's autostart (labwc, the
# bookworm default, and wayfire, its earlier one); presensi-kiosk restarts the browser when it exits.
setup_kiosk() {
  local user=$1 home line browser=chromium-browser
  if [ -z "$user" ]; then
    echo "   no desktop session or user: kiosk not set up (--kiosk USER to choose one)"
    return 0
  fi
  apt_has chromium-browser || browser=chromium
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$browser" >/dev/null
  install -m 0755 "$SRC/systemd/presensi-kiosk" /usr/local/bin/presensi-kiosk
  home=$(getent passwd "$user" | cut -d: -f6)
  line="/usr/local/bin/presensi-kiosk &"
  install -d -o "$user" -g "$(id -gn "$user")" "$home/.config" "$home/.config/labwc"
  if ! grep -qxF "$line" "$home/.config/labwc/autostart" 2>/dev/null; then
    echo "$line" >> "$home/.config/labwc/autostart"
  fi
  chown "$user:$(id -gn "$user")" "$home/.config/labwc/autostart"
  if [ -f "$home/.config/wayfire.ini" ] && ! grep -q "presensi-kiosk" "$home/.config/wayfire.ini"; then
    printf '\n[autostart]\npresensi_kiosk = /usr/local/bin/presensi-kiosk\n' >> "$home/.config/wayfire.ini"
  fi
  if command -v raspi-config >/dev/null; then
    raspi-config nonint do_boot_behaviour B4  # desktop, logged in automatically as that user
    raspi-config nonint do_blanking 1         # screen blanking off
  else
    echo "   raspi-config not found: turn on desktop autologin and turn off screen blanking by hand"
  fi
  echo "   Chromium shows the kiosk page for $user at boot (~/.config/labwc/autostart)"
}

if [ "$BOOT_ONLY" = 1 ]; then
  configure_boot
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root: sudo $0 $*"
command -v systemctl >/dev/null || die "systemd is required"
case "$KIOSK" in auto|none) ;; *) id "$KIOSK" >/dev/null 2>&1 || die "--kiosk $KIOSK: no such user" ;; esac
# sd_booted(3): systemd is PID 1 exactly when /run/systemd/system exists
SYSTEMD_RUNNING=0
if [ -d /run/systemd/system ]; then SYSTEMD_RUNNING=1; fi
case "$(dpkg --print-architecture)" in
  armhf|armel) die "32-bit Raspberry Pi OS: dlib-bin (face recognition) has no wheel for it; install the 64-bit Raspberry Pi OS" ;;
esac

echo "== packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python3-pip sqlite3 libopenblas0 ca-certificates >/dev/null
if [ "$CAMERA" = csi ]; then
  # The Pi camera is only reachable through libcamera; its Python binding comes from Raspberry Pi OS's
  # apt repository (not PyPI), and the virtual environment sees it through --system-site-packages.
  if apt_has python3-picamera2; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-picamera2 >/dev/null
  else
    echo "   python3-picamera2 is not in the apt sources (not Raspberry Pi OS?): the Pi camera will report a" \
         "fault until it is installed; with a USB webcam use --camera usb"
  fi
fi
# gpiozero (in the venv, from PyPI) drives the LEDs, buzzer and relay through a GPIO library, and neither
# lgpio nor RPi.GPIO has an aarch64 wheel on PyPI. The OS builds them for its own Python: Raspberry Pi OS has
# python3-lgpio (gpiozero's first choice and the only one that works on a Pi 5), Debian python3-rpi.gpio
# (Pi 1-4); the venv sees them through --system-site-packages. Only where apt has neither does pip build the
# `pi` extra, which needs a compiler (lgpio with its C library linked in, PYPI=1).
GPIO_EXTRA=
if apt_has python3-lgpio; then gpio_pkg=python3-lgpio
elif apt_has python3-rpi.gpio; then gpio_pkg=python3-rpi.gpio
else gpio_pkg=; GPIO_EXTRA="[pi]"
fi
if [ -n "$gpio_pkg" ]; then
  echo "   GPIO through $gpio_pkg"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$gpio_pkg" >/dev/null
else
  echo "   no GPIO library in the apt sources: pip builds RPi.GPIO and lgpio (gcc, python3-dev, swig)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc python3-dev swig >/dev/null
fi

echo "== user presensi (groups video, dialout, gpio, systemd-journal)"
getent group gpio >/dev/null || groupadd --system gpio
if ! id presensi >/dev/null 2>&1; then
  useradd --system --user-group --home-dir /var/lib/presensi --no-create-home --shell /usr/sbin/nologin presensi
fi
usermod -a -G video,dialout,gpio presensi
# the file-system self-test reads the kernel's I/O errors from the journal (ProtectKernelLogs= hides /dev/kmsg)
if getent group systemd-journal >/dev/null; then usermod -a -G systemd-journal presensi; fi

echo "== virtual environment in $PREFIX/venv"
install -d -m 0755 "$PREFIX"
# --system-site-packages: python3-picamera2 and libcamera come from the OS, not from PyPI. The packages pip
# installs into the venv still come first on sys.path, so the pinned numpy/OpenCV are the ones used.
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv --system-site-packages "$PREFIX/venv"
sed -i 's/^include-system-site-packages = false$/include-system-site-packages = true/' "$PREFIX/venv/pyvenv.cfg"
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
PYPI=1 "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check "${SRC}${GPIO_EXTRA}"

echo "== configuration /etc/presensi/presensi.toml"
install -d -m 0750 -o root -g presensi /etc/presensi
if [ ! -f /etc/presensi/presensi.toml ]; then
  source=auto  # the Pi camera if libcamera lists one, else a USB webcam
  if [ "$CAMERA" = usb ]; then source=/dev/presensi-camera; fi
  sed -e "s/^id = \"opd-dinkes-01\"/id = \"$(hostname -s)\"/" -e "s#^source = \"0\"#source = \"$source\"#" \
    "$SRC/config/presensi.example.toml" > /etc/presensi/presensi.toml
  echo "   created from the example; set [device] id, [central] url and token, then restart"
fi
if [ "$UART" = usb ]; then
  echo "   fingerprint on USB: set [fingerprint] port = \"/dev/presensi-fingerprint\""
fi
chown root:presensi /etc/presensi/presensi.toml
chmod 0640 /etc/presensi/presensi.toml

echo "== udev rule and systemd unit"
install -m 0644 "$SRC/systemd/60-presensi.rules" /etc/udev/rules.d/60-presensi.rules
if [ "$SYSTEMD_RUNNING" = 1 ] && udevadm control --reload; then
  udevadm trigger --subsystem-match=tty --subsystem-match=video4linux --subsystem-match=gpio || true
fi
sed -e "s#/opt/presensi/venv#$PREFIX/venv#" "$SRC/systemd/presensi.service" > /etc/systemd/system/presensi.service
chmod 0644 /etc/systemd/system/presensi.service
systemd-analyze verify /etc/systemd/system/presensi.service || die "the installed unit does not verify"

echo "== serial port and camera ($UART, $CAMERA)"
reboot_needed=$(configure_boot)
if [ "$UART" != usb ]; then
  # a getty on the sensor's UART would fight for the line
  systemctl disable --now serial-getty@ttyAMA0.service serial-getty@ttyS0.service 2>/dev/null || true
  if [ "$UART" = pl011 ]; then systemctl disable --now hciuart.service 2>/dev/null || true; fi
fi

echo "== state directory and first start"
if [ "$SYSTEMD_RUNNING" = 1 ]; then systemctl daemon-reload; fi
install -d -m 0700 -o presensi -g presensi /var/lib/presensi
runuser -u presensi -- env PRESENSI_CONFIG=/etc/presensi/presensi.toml "$PREFIX/venv/bin/presensi" init
systemctl enable presensi.service

echo "== kiosk screen ($KIOSK)"
kiosk_as=$(kiosk_user)
setup_kiosk "$kiosk_as"

if [ "$SYSTEMD_RUNNING" = 0 ]; then
  echo "systemd is not running here: presensi.service is installed and enabled, and starts on the next boot."
elif [ "$reboot_needed" = changed ]; then
  echo "The boot configuration changed (UART/camera): reboot now (sudo reboot); presensi starts on boot."
else
  systemctl restart presensi.service
  echo "presensi is running: systemctl status presensi; journalctl -u presensi -f"
fi
