"""The diagnostics bundle an admin downloads for Diskominfo: a zip of status, health, configuration without
secrets, recent faults, delivery attempts, audit entries and log lines. By construction it holds no
biometric data and no photos: nothing is read from the face store, the roster's templates or evidence/."""

from __future__ import annotations

import collections
import io
import json
import logging
import re
import threading
import time
import zipfile

from terminal.log import punchlog
from terminal.ops import faults

SECRET_WORDS = ("token", "password", "secret", "private", "comm_key")
LOG_LINES = 2000

README = """presensi-edge diagnostics bundle
status.json         what `presensi status` shows (counts only; no templates)
health.json         the daemon's latest self-tests, kiosk indicators, open faults
config.json         the configuration; tokens, passwords and secrets replaced by "<redacted>"
faults.json         the latest fault events (photo files are NOT included)
sync_attempts.json  the latest deliveries to the central server
audit.json          the latest admin actions
daemon.log          the latest log lines of this daemon
Not included: face templates, fingerprint templates, photos, keys.
"""


class RingLog(logging.Handler):
    """Keeps the daemon's last log lines in memory for the bundle (journald has them too, when reachable)."""

    def __init__(self, capacity: int = LOG_LINES):
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


_ring: RingLog | None = None
_ring_lock = threading.Lock()


def ring_log() -> RingLog:
    """The one ring handler, attached to the root logger on first use."""
    global _ring
    with _ring_lock:
        if _ring is None:
            _ring = RingLog()
            logging.getLogger().addHandler(_ring)
        return _ring


def redact(value, key: str = ""):
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, bool):  # "comm_key": true says a key is set, not which
        return value
    if any(w in key.lower() for w in SECRET_WORDS) and value not in (None, "", 0):
        return "<redacted>"
    return value


def secret_values(cfg) -> list[str]:
    """The configuration's secrets as text (the token, the ZK comm key, ...): scrubbed from every file of
    the bundle, so one that reached a log line or an audit entry does not leave the building either."""
    from terminal import config

    if not hasattr(cfg, "model_dump"):
        return []
    out = []
    for name in config.SECTIONS:
        section = getattr(cfg, name, None)
        for key, f in type(section).model_fields.items() if section is not None else ():
            value = getattr(section, key)
            if config.is_secret(f) and value not in (None, "", 0) and not isinstance(value, bool):
                out.append(str(value))
    return out


def scrub(value, secrets: list[str]):
    """`value` (text, or a JSON-able structure) with every secret replaced by <redacted>."""
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return "<redacted>" if str(value) in secrets else value
    if isinstance(value, str):
        for secret in secrets:
            # a numeric secret only as a whole number (a comm key inside a longer number is not it)
            pattern = rf"(?<![0-9]){re.escape(secret)}(?![0-9])" if secret.isdigit() else re.escape(secret)
            value = re.sub(pattern, "<redacted>", value)
    return value


def config_dict(cfg) -> dict:
    """Every section with its defaults; the configuration's own secrets redacted, then any key that sounds
    secret (the bundle leaves the building)."""
    if not hasattr(cfg, "model_dump"):
        return redact(dict(vars(cfg)))
    from terminal import config

    return redact({"path": cfg.path, **config.effective(cfg, json_mode=True)})


def build(daemon, health: dict) -> bytes:
    cfg = daemon.cfg
    with punchlog.PunchLog(cfg.state_dir) as plog:
        recent_faults = [{k: v for k, v in f.items() if k != "photo_path"} for f in faults.recent(plog.conn, 200)]
        attempts = [dict(r) for r in plog.conn.execute("SELECT * FROM sync_attempts ORDER BY id DESC LIMIT 200")]
        audit = plog.audit_entries(200)
    files = {
        "README.txt": README,
        "status.json": daemon.status_report(),
        "health.json": health,
        "config.json": config_dict(cfg),
        "faults.json": recent_faults,
        "sync_attempts.json": attempts,
        "audit.json": audit,
        "daemon.log": "\n".join(ring_log().lines) + "\n",
    }
    buf = io.BytesIO()
    stamp = time.localtime()[:6]
    secrets = secret_values(cfg)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            content = scrub(json.loads(json.dumps(content, default=str)) if not isinstance(content, str)
                            else content, secrets)
            text = content if isinstance(content, str) else json.dumps(content, indent=1, ensure_ascii=False)
            z.writestr(zipfile.ZipInfo(name, stamp), text.encode("utf-8"))
    return buf.getvalue()
