"""Reading presensi.toml: the file named by -c, $PRESENSI_CONFIG or the default, parsed and validated
whole; every problem is reported, one line each, naming the file, the key and the fix."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from terminal.config.fields import ConfigError
from terminal.config.sections import (
    SECTIONS,
    Adms,
    Camera,
    Central,
    Device,
    Face,
    Fingerprint,
    Gpio,
    Health,
    Liveness,
    Log,
    Paths,
    Photos,
    Roster,
    Schedule,
    Time,
    Web,
    WorkCodes,
    Zk,
)

DEFAULT_PATH = "/etc/presensi/presensi.toml"
REQUIRED_SECTIONS = ("device", "paths")


class Config(BaseModel):
    """The validated configuration; one attribute per section."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    path: str = Field("<config>", description="The file the configuration was read from.")
    device: Device
    paths: Paths
    central: Central = Field(default_factory=Central)
    log: Log = Field(default_factory=Log)
    web: Web = Field(default_factory=Web)
    camera: Camera = Field(default_factory=Camera)
    face: Face = Field(default_factory=Face)
    liveness: Liveness = Field(default_factory=Liveness)
    fingerprint: Fingerprint = Field(default_factory=Fingerprint)
    gpio: Gpio = Field(default_factory=Gpio)
    zk: Zk = Field(default_factory=Zk)
    adms: Adms = Field(default_factory=Adms)
    photos: Photos = Field(default_factory=Photos)
    roster: Roster = Field(default_factory=Roster)
    schedule: Schedule = Field(default_factory=Schedule)
    health: Health = Field(default_factory=Health)
    time: Time = Field(default_factory=Time)
    work_codes: WorkCodes = Field(default_factory=WorkCodes)

    @property
    def state_dir(self) -> Path:
        return Path(self.paths.state_dir)


# -- reading a file ---------------------------------------------------------------------------------------


def resolve_path(cli_path: str | None) -> str:
    """The file to read: ``-c FILE``, else ``$PRESENSI_CONFIG``, else the default."""
    return cli_path or os.environ.get("PRESENSI_CONFIG") or DEFAULT_PATH


def load(path: str | os.PathLike | None = None) -> Config:
    path = resolve_path(str(path) if path else None)
    return from_dict(parse_toml(read_text(path), path), path)


def read_text(path: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: configuration file not found; copy config/presensi.example.toml there "
            "or pass -c FILE (or set PRESENSI_CONFIG)"
        ) from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the configuration file (permission denied); run as a user "
                          "who may read it, or make it readable (chmod 640, group presensi)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file; pass -c FILE") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path itself
        raise ConfigError(f"{path}: cannot read the configuration file ({getattr(e, 'strerror', None) or e}); "
                          "pass -c FILE") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        place = _place(raw.decode("utf-8", errors="replace"), raw.count(b"\n", 0, e.start) + 1)
        raise ConfigError(f"{path}: {place}not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8 "
                          "(e.g. `iconv -f latin1 -t utf-8`)") from None
    return text.removeprefix("\ufeff")  # a byte-order mark that some Windows editors write


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=")


def parse_toml(text: str, path: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POSITION.search(str(e))
        place = _place(text, int(m.group(1))) if m else ""
        raise ConfigError(f"{path}: {place}not valid TOML ({e}); fix the syntax at that line, "
                          'e.g. key = "text", key = 1.5, key = true') from None


def _place(text: str, number: int) -> str:
    """'[face] threshold (line 12): ' for line `number` of the file, so the user finds the key at once."""
    lines = text.split("\n")  # TOML counts lines by newline only (splitlines also splits on \f, \u2028, ...)
    section = ""
    for line in lines[:number]:
        header = line.strip()
        if header.startswith("[") and "]" in header:
            section = header[: header.index("]") + 1].strip("[]").strip()
    key = _TOML_KEY.match(lines[number - 1]) if 0 < number <= len(lines) else None
    where = " ".join(p for p in (f"[{section}]" if section else "", key.group(1) if key else "") if p)
    return f"{where} (line {number}): " if where else f"line {number}: "


def from_dict(data: dict, path: str = "<config>") -> Config:
    """Validate parsed TOML; every problem of every section is reported, one line each."""
    path = str(path)
    problems = []
    for name, raw in data.items():
        if name not in SECTIONS:
            problems.append(_unknown_section(name, raw))
        elif not isinstance(raw, dict):
            problems.append(f"[{name}] must be a table (a [{name}] section), not a value")
    for name in REQUIRED_SECTIONS:
        if name not in data:
            problems.append(f"missing section [{name}]; see config/presensi.example.toml")
    sections = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict) or (name not in data and name in REQUIRED_SECTIONS):
            continue
        try:
            sections[name] = cls(**raw)
        except ConfigError as e:
            problems.extend(e.lines)
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return Config(path=path, **sections)


def _unknown_section(name: str, raw) -> str:
    if not isinstance(raw, dict):
        owners = [s for s, cls in SECTIONS.items() if name in cls.model_fields]
        hint = f"; it belongs under [{owners[0]}]" if len(owners) == 1 else "; put it under its [section]"
        return f"unknown key '{name}' outside any section{hint}"
    close = difflib.get_close_matches(name, SECTIONS, n=1)
    hint = f"did you mean [{close[0]}]? " if close else ""
    return f"unknown section [{name}]; {hint}known sections are {', '.join(sorted(SECTIONS))}"

