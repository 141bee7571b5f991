"""The effective configuration, as `presensi config check` prints it: every section with its defaults
filled in, secrets redacted, as TOML or JSON; and the documented keys for the example file's test."""

from __future__ import annotations

from terminal.config.fields import REDACTED, _toml_value
from terminal.config.loading import Config
from terminal.config.sections import SECTIONS


def effective(cfg: Config, *, redact: bool = True, json_mode: bool = False) -> dict[str, dict]:
    """{section: {key: value}} with every default filled in; secrets shown as <redacted> when set."""
    out = {}
    for name, cls in SECTIONS.items():
        values = getattr(cfg, name).model_dump(mode="json" if json_mode else "python")
        if redact:
            for key, f in cls.model_fields.items():
                if is_secret(f) and values[key] not in (None, "", 0):
                    values[key] = REDACTED
        out[name] = values
    return out


def is_secret(field) -> bool:
    return bool((field.json_schema_extra or {}).get("secret"))


def to_toml(data: dict[str, dict]) -> str:
    """Sections as TOML text; a key without a value (None) is written as a comment, as TOML has no null."""
    blocks = []
    for section, values in data.items():
        lines = [f"[{section}]"]
        for key, value in values.items():
            lines.append(f"# {key} =   (unset)" if value is None else f"{key} = {_toml_value(value)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def documented_keys() -> list[tuple[str, str, object, str]]:
    """(section, key, default, doc) for every key, for docs and the example-file test (required: None)."""
    out = []
    for name, cls in SECTIONS.items():
        for key, f in cls.model_fields.items():
            default = None if f.is_required() else f.get_default(call_default_factory=True)
            out.append((name, key, default, f.description))
    return out
