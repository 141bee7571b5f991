"""Fetching the roster from the central server (or a file) and swapping it in once it is proven good.

    GET {central.url}/api/v1/devices/{device_id}/roster?since=VERSION   (Authorization: Bearer token)
    200 → a bundle (sync.wire.rosterbundle) · 204/304 → nothing newer than VERSION

Every bundle is verified completely with the PINNED server key before `terminal.punch.roster.install` swaps it
in; a rejected bundle leaves the installed roster untouched. Both outcomes go to the punch log's audit
trail (no biometric data, just version, sha256, counts or the reason). The download goes through
sync/device/central.py's Client with `[roster] max_bundle_bytes` as its body limit, so an oversized bundle
is refused from its Content-Length, or cut off one chunk past the limit, never read whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sync.device import central
from sync.wire.rosterbundle import BundleLimits, BundleRejected, verify_bundle
from terminal.errors import LogError
from terminal.log import punchlog
from terminal.punch import roster, rules, workcodes

log = logging.getLogger("presensi.roster")
ROSTER_PATH = "/roster"
ROSTER_MEDIA_TYPE = "application/vnd.presensi.roster+gzip"


class RosterPullError(Exception):
    """The roster could not be fetched (network, server, configuration); the message says what to do.
    `transient`: a later try may succeed without anyone acting (then `retry_after` is the server's wish)."""

    def __init__(self, message: str, *, transient: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.transient, self.retry_after = transient, retry_after


def limits_from_config(cfg) -> BundleLimits:
    r = cfg.roster
    return BundleLimits(max_bundle_bytes=r.max_bundle_bytes, max_manifest_bytes=4 * r.max_bundle_bytes,
                        max_employees=r.max_employees, max_face_templates=r.max_templates,
                        max_face_photos=r.max_templates, max_finger_templates=r.max_templates,
                        max_photo_bytes=r.max_photo_bytes)


def client_for(cfg) -> central.Client:
    """The central client from [central], or RosterPullError saying what to configure."""
    try:
        return central.Client.from_config(cfg)
    except central.ConfigError as e:
        raise RosterPullError(str(e)) from None


def pull_roster(cfg, *, client: central.Client | None = None) -> dict:
    """Ask the central server for a roster newer than the installed one and install it if it is good.
    Returns {"status": "current"|"installed", "version", ...}; raises RosterPullError or BundleRejected."""
    own = client is None
    client = client or client_for(cfg)
    try:
        current = roster.current_version(cfg.state_dir)
        url = client.s.url + client.device_path(ROSTER_PATH)
        data = _download(client, url, cfg, current)
    finally:
        if own:
            client.close()
    if data is None:
        return {"status": "current", "version": current}
    return install_bundle(cfg, data, source=url)


def import_file(cfg, path: str | Path) -> dict:
    """`presensi roster import FILE`: install a bundle carried on a USB stick (still verified and signed)."""
    try:
        size = Path(path).stat().st_size
        limit = limits_from_config(cfg).max_bundle_bytes
        if size > limit:
            _reject(cfg, str(path), BundleRejected("oversized", f"bundle is {size} bytes, over the limit of "
                                                                f"{limit} bytes"))
        data = Path(path).read_bytes()
    except OSError as e:
        raise RosterPullError(f"{path}: cannot read the bundle ({e.strerror or e})") from None
    return install_bundle(cfg, data, source=f"file:{path}")


def check_published(schedule: dict, holidays: list) -> None:
    """What this terminal must be able to use of a bundle: the schedule and holidays, and the work codes."""
    rules.check_published(schedule, holidays)
    workcodes.check_published(schedule, holidays)


def install_bundle(cfg, data: bytes, *, source: str) -> dict:
    current = roster.current_version(cfg.state_dir)
    try:
        bundle = verify_bundle(data, cfg.central.server_key, current, limits_from_config(cfg),
                               device_id=cfg.device.id, schedule_check=check_published)
    except BundleRejected as e:
        _reject(cfg, source, e)
    try:
        info = roster.install(cfg.state_dir, version=bundle["version"], employees=bundle["employees"],
                              schedule=bundle["schedule"], holidays=bundle["holidays"], source=source,
                              bundle_sha256=bundle["sha256"], created_utc=bundle["created_utc"],
                              messages=bundle["messages"], apel_cancelled=bundle["apel_cancelled"],
                              enrolment_key=bundle["enrolment_key"])
    except roster.StaleRoster as e:
        _reject(cfg, source, BundleRejected("old-version", f"{e} (installed meanwhile)"))
    details = {"version": bundle["version"], "previous_version": current, "sha256": bundle["sha256"],
               "source": source, **bundle["counts"], "messages": len(bundle["messages"]),
               "apel_cancelled": len(bundle["apel_cancelled"])}
    audit = _audit(cfg, "roster.installed", details)
    log.info("roster version %s installed (%s employees)", bundle["version"], bundle["counts"]["employees"])
    return {"status": "installed", **details, "audit": audit, "roster": info}


def _reject(cfg, source: str, e: BundleRejected):
    _audit(cfg, "roster.rejected", {"code": e.code, "reason": e.reason, "source": source})
    log.warning("roster bundle from %s rejected: %s", source, e)
    raise e


def _audit(cfg, action: str, details: dict) -> str:
    try:
        with punchlog.PunchLog(cfg.state_dir) as plog:
            plog.audit("roster", action, details)
        return "recorded"
    except LogError as e:  # the roster still works without the punch log; say so instead of failing
        log.warning("could not write the audit entry: %s", e)
        return f"not recorded: {e}"


def _download(client: central.Client, url: str, cfg, current: int) -> bytes | None:
    """The bundle newer than `current`, None when there is none; never more than max_bundle_bytes read."""
    limit = limits_from_config(cfg).max_bundle_bytes
    try:
        reply = client.request("GET", client.device_path(ROSTER_PATH), params={"since": current},
                               headers={"Accept": ROSTER_MEDIA_TYPE}, limit=limit)
    except central.BodyTooLarge as e:
        reason = (f"server offers {e.declared} bytes, over the limit of {limit} bytes" if e.received == 0
                  else f"bundle is over the limit of {limit} bytes (cut off after {e.received} bytes)")
        _reject(cfg, url, BundleRejected("oversized", reason))
    except central.CentralError as e:
        raise _pull_error(url, e) from None
    if reply.status in (204, 304):
        return None
    if reply.status != 200:
        raise RosterPullError(f"{url}: unexpected HTTP {reply.status} from the central server; retry later "
                              "and report it to the server administrator if it persists")
    return reply.body


def _pull_error(url: str, e: central.CentralError) -> RosterPullError:
    if isinstance(e, central.TransientError):
        return RosterPullError(f"{url}: {e}; the current roster stays in use, retry later", transient=True,
                               retry_after=e.retry_after)
    if e.status == 404:
        return RosterPullError(f"{url}: not found (HTTP 404); is the device registered on the server and "
                               "[device] id spelled as registered?")
    if isinstance(e, central.AuthError):
        return RosterPullError(f"{url}: {e}")
    return RosterPullError(f"{url}: {e}; retry later and report it to the server administrator if it persists")


def run_periodically(cfg, stop_event, *, client: central.Client | None = None) -> None:
    """For the daemon: pull every [roster] pull_interval seconds until stop_event is set. Failures are
    logged (and audited when a bundle is refused); a transient one (network, busy server) is retried with
    the central client's full-jitter back-off, one that needs a person (token, refused bundle) after
    [central] max_backoff. The installed roster keeps working throughout."""
    try:
        client = client or client_for(cfg)
    except RosterPullError as e:
        log.warning("roster pull off: %s", e)
        return
    backoff = client.backoff()
    with client:
        while not stop_event.is_set():
            wait = cfg.roster.pull_interval
            try:
                pull_roster(cfg, client=client)
                backoff.succeeded()
            except RosterPullError as e:
                log.warning("roster pull failed: %s", e)
                wait = backoff.failed(e.retry_after) if e.transient else cfg.central.max_backoff
            except (BundleRejected, roster.RosterError) as e:
                log.warning("roster pull failed: %s", e)
                wait = cfg.central.max_backoff
            stop_event.wait(wait)
