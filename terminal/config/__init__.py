"""The terminal's configuration: one TOML file, validated completely before any command runs.

Why pydantic models and not a hand-written walker: the walker let `threshold = nan` through (every range
check is false for NaN), and a NaN face threshold made `presensi identify` accept a stranger. Each section is
a frozen pydantic model (sections.py) with ``extra="forbid"`` (a misspelt key is an error, not a silently
ignored line), ``allow_inf_nan=False`` (NaN and infinities refused everywhere) and ``strict=True`` (TOML values are
typed, so "1" is not quietly turned into 1; a whole number where a number is expected is fine). Every field
documents itself in ``Field(description=...)``; ``config/presensi.example.toml`` documents the same keys
with the same defaults, and tests/test_config.py keeps the two in step.

Every error is one line naming the file, the key (``[section] key``) and what to write instead; all errors
of a file are reported at once. ``presensi config check`` (terminal/cli/config.py) prints them, or the
effective configuration with the secrets redacted.

The package: fields.py (the strict base model, shared value checks, one-line error texts), sections.py (one model
per section), windows.py (the syntax of punch windows and holidays), loading.py (the file, its parsing and
validation), output.py (the effective configuration for `presensi config check`). It imports no other part of
the terminal, so every wing may depend on it.
"""

from __future__ import annotations

from terminal.config.fields import REDACTED, ConfigError, Section
from terminal.config.loading import (
    DEFAULT_PATH,
    REQUIRED_SECTIONS,
    Config,
    from_dict,
    load,
    parse_toml,
    read_text,
    resolve_path,
)
from terminal.config.output import documented_keys, effective, is_secret, to_toml
from terminal.config.sections import (
    SECTIONS,
    TIMEZONES,
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

__all__ = [
    "DEFAULT_PATH", "REDACTED", "REQUIRED_SECTIONS", "SECTIONS", "TIMEZONES", "Adms", "Camera", "Central",
    "Config", "ConfigError", "Device", "Face", "Fingerprint", "Gpio", "Health", "Liveness", "Log", "Paths",
    "Photos", "Roster", "Schedule", "Section", "Time", "Web", "WorkCodes", "Zk", "documented_keys", "effective",
    "from_dict",
    "is_secret", "load", "parse_toml", "read_text", "resolve_path", "to_toml",
]
