"""The building blocks of every configuration section: the strict base model, documented fields, the
value checks several sections share, and the one-line error text for each problem (file, key, fix)."""

from __future__ import annotations

import difflib
import json
import math
import re
import urllib.parse
from datetime import date, datetime, time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REDACTED = "<redacted>"


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message says how to fix it.

    ``lines`` holds one line per problem (a file may have several); the message is those lines joined."""

    def __init__(self, message: str | list[str]):
        self.lines = [message] if isinstance(message, str) else list(message)
        super().__init__("\n".join(self.lines))


def _f(default, doc, *, min=None, max=None, secret: bool = False, example=None):
    """A documented field; min/max are inclusive bounds. Mutable defaults get a fresh copy per instance."""
    extra = {"secret": True} if secret else None
    examples = None if example is None else [example]
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda: type(default)(default), description=doc, ge=min, le=max,
                     json_schema_extra=extra, examples=examples)
    return Field(default, description=doc, ge=min, le=max, json_schema_extra=extra, examples=examples)


# -- value checks shared by several sections (they raise ValueError; the message is the fix) --------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_listen(value: str, example: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit():
        raise ValueError(f"write HOST:PORT, e.g. {example} (an IPv6 host in brackets: [::1]:{example.split(':')[-1]})")
    if int(port) > 65535:
        raise ValueError(f"port {port} is out of range; use a port from 1 to 65535 (0 = any free port)")
    return value


def _check_url(value: str | None, example: str) -> str | None:
    if value is None:
        return None
    fix = f"write an http:// or https:// URL with a host, e.g. {example}"
    if _CONTROL.search(value) or " " in value:
        raise ValueError(f"contains spaces or control characters; {fix}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, not {parts.scheme or 'missing'!r}; {fix}")
    try:
        port = parts.port  # raises ValueError for a port that is not a number 0-65535
    except ValueError:
        port = 0
    if port == 0 and parts.netloc.rpartition("]")[2].count(":"):  # "host:0" or "host:x" (not "[::1]" alone)
        raise ValueError(f"the port is not a number from 1 to 65535; {fix}")
    if not parts.hostname:
        raise ValueError(f"the URL has no host; {fix}")
    return value


def _check_id(value: str, *, empty_ok: bool) -> str:
    """Ids end up in file names, HTTP paths and protocol fields: no control characters or separators."""
    if not value.strip():
        if empty_ok:
            return value
        raise ValueError("must not be empty; write the id registered on the central server, e.g. 'opd-dinkes-01'")
    if _CONTROL.search(value):
        raise ValueError("contains a control character (NUL, tab, newline, ...); use letters, digits, '-' or '_'")
    if "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError("must not contain '/' or '\\' or be '.' or '..'; use letters, digits, '-' or '_'")
    return value


class Section(BaseModel):
    """One [section] of the file. Building one from bad values raises ConfigError (one line per problem,
    without the file name, which only the loader knows)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    def __init__(self, /, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigError([_describe(type(self), err) for err in e.errors()]) from None

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value):
        # A NUL byte in a path or name would surface later as a traceback from the operating system.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("contains a NUL character; remove it")
        return value


# -- errors, one line each --------------------------------------------------------------------------------

_TYPE_NAMES = {"string_type": "a string", "float_type": "a number", "int_type": "a whole number",
               "bool_type": "true or false", "dict_type": "a table, e.g. { key = value }",
               "list_type": "a list, e.g. [\"a\", \"b\"]"}
_RANGE_ERRORS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def _describe(cls: type[Section], err: dict) -> str:
    """One pydantic error as '[section] key ... ; what to write instead'."""
    # each section class is named after its [section]; a name with an underscore says it (SECTION)
    section = getattr(cls, "SECTION", "") or cls.__name__.lower()
    loc = [str(p) for p in err["loc"]]
    key = loc[0] if loc else ""
    field = cls.model_fields.get(key)
    name = f"[{section}] {'.'.join(loc)}".rstrip()
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden" and len(loc) == 1:
        close = difflib.get_close_matches(key, cls.model_fields, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown key '{key}' in [{section}]; {hint}valid keys are {', '.join(cls.model_fields)}"
    if kind == "missing":
        return f"{name} is required: {field.description}" if field else f"{name} is required"
    if field is not None and value is not None and isinstance(value, int) and not isinstance(value, bool) \
            and _takes_float(field.annotation):
        value = float(value)  # shown as the number the program uses: -1 is -1.0 for a number key
    shown = _toml_value(value)
    if kind == "finite_number":
        return f"{name} = {shown} is not a number; write a finite number{_bounds_text(field)}{_example(key, field)}"
    if kind in _RANGE_ERRORS:
        return f"{name} = {shown} is out of range; {_bounds_text(field, lead='use a value')}"
    if kind == "literal_error":
        return f"{name} = {shown} is not allowed; use one of {err['ctx']['expected'].replace(' or ', ', ')}"
    if kind in _TYPE_NAMES:
        want = _TYPE_NAMES[kind]
        got = shown if isinstance(value, bool) else f"{_toml_kind(value)} {shown}"
        return f"{name} must be {want}, got {got}{_example(key, field) if len(loc) == 1 else ''}"
    if kind == "value_error":
        reason = str(err["ctx"]["error"])
        return f"{name}: {reason}" if isinstance(value, (dict, list)) else f"{name} = {shown}: {reason}"
    return f"{name}: {err['msg']}{_example(key, field)}"


def _takes_float(annotation) -> bool:
    return annotation is float or annotation == (float | None)


def _bounds(field) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in (field.metadata if field else ()):
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def _bounds_text(field, lead: str = "") -> str:
    lo, hi = _bounds(field)
    if lo is not None and hi is not None:
        text = f"from {lo} to {hi}"
    elif lo is not None:
        text = f"of at least {lo}"
    elif hi is not None:
        text = f"of at most {hi}"
    else:
        return lead and f"{lead} within range"
    return f"{lead} {text}" if lead else f" {text}"


def _example(key: str, field) -> str:
    if field is None:
        return ""
    value = field.examples[0] if field.examples else field.get_default(call_default_factory=True)
    if value is None or value == {} or value == []:
        return "; see config/presensi.example.toml"
    return f", e.g. {key} = {_toml_value(value)}"


def _toml_kind(value) -> str:
    for typ, name in ((bool, "boolean"), (int, "whole number"), (float, "number"), (str, "string"),
                      (dict, "table"), (list, "list"), (datetime, "date-time"), (date, "date"), (time, "time")):
        if isinstance(value, typ):
            return name
    return type(value).__name__


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, date, time)):  # datetime is a date: TOML writes both in ISO 8601
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{k if _BARE_KEY.match(str(k)) else json.dumps(str(k))} = {_toml_value(v)}"
                 for k, v in value.items()]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    return repr(value)

