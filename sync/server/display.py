"""Text from terminals made safe to show: on an operator's terminal and in the server's pages.

Whatever a device sends (employee ids, kinds, fault messages, alarm texts that quote them) is stored as
sent, but it is never printed raw: an ANSI escape sequence in a fault message would move the cursor,
rewrite earlier lines or retitle the window of whoever runs `presensi server alarms`, and a bidi override
reorders what an operator reads. Control characters (C0, DEL, C1) and the bidi controls become visible
escapes (\\x1b, \\u202e); long texts are cut with a marker.
"""

from __future__ import annotations

import re

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_SHOWN = 2000


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(value, limit: int = MAX_SHOWN) -> str:
    """`value` as text with every control character shown as an escape, at most `limit` characters."""
    text = "" if value is None else str(value)
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more characters)"
    return UNSAFE.sub(_escape, text)
