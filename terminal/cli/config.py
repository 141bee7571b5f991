"""`presensi config check`: validate the configuration file and print the configuration in force.

An installer edits /etc/presensi/presensi.toml by hand; this command tells them, before the daemon restarts,
whether the file is valid (every problem, one line each, naming the file, the key and the fix) and what the
terminal will actually use (every section with its defaults filled in). Secrets are shown as <redacted>:
the output gets pasted into tickets and chats.
"""

from __future__ import annotations

import sys

from terminal import config as config_mod
from terminal.cli.common import add_command, add_group, emit

# Exit status of an invalid file: the same as a usage error, and as `python -m sync.device.zk.server` and
# `python -m sync.device.adms` give for a bad configuration.
INVALID = 2


def register(sub) -> None:
    group = add_group(sub, "config", "the configuration file")
    add_command(group, "check", cmd_check,
                "validate the configuration and print the effective one (defaults filled in, secrets redacted)")


def driver_problems(cfg: config_mod.Config) -> list[str]:
    """Keys whose valid values are the drivers' registries (drivers/ owns them, so a new sensor model or
    camera kind touches drivers/ only): checked here, where the wiring may import both."""
    from drivers.camera import registry as cameras
    from drivers.fingerprint import registry as sensors

    problems = []
    if cfg.fingerprint.model not in sensors.MODELS:
        problems.append(f"{cfg.path}: [fingerprint] model = {cfg.fingerprint.model!r} is not a known sensor "
                        f"model; use one of: {', '.join(sorted(sensors.MODELS))}")
    if cfg.camera.kind != cameras.AUTO and cfg.camera.kind not in cameras.KINDS:
        problems.append(f"{cfg.path}: [camera] kind = {cfg.camera.kind!r} is not a known camera source kind; "
                        f"use one of: {', '.join([cameras.AUTO, *cameras.KINDS])}")
    return problems


def cmd_check(args) -> int:
    try:
        cfg = config_mod.load(getattr(args, "config", None))
        problems = driver_problems(cfg)
    except config_mod.ConfigError as e:
        problems = e.lines
    if problems:
        for line in problems:
            print(f"presensi: error: {line}", file=sys.stderr)
        return INVALID
    if getattr(args, "json", False):
        emit(args, {"ok": True, "path": cfg.path, "config": config_mod.effective(cfg, json_mode=True)})
    else:
        header = (f"# {cfg.path}: valid. The configuration in force, defaults filled in, secrets redacted;\n"
                  "# unset keys are shown as comments.\n\n")
        emit(args, None, header + config_mod.to_toml(config_mod.effective(cfg)).rstrip("\n"))
    return 0
