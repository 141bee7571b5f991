"""Trusted time samples from the central server (contract C2), and the fallbacks.

The exchange's format and its signature are sync/wire/timesample.py (the reference server answers with it at
POST /api/v1/time). Here, the terminal's side: `fetch_time_sample` runs 4–8 exchanges on one keep-alive
session, reads the raw monotonic clock at each send and receive, verifies every answer against the pinned
`[central] server_key` (so the sample holds even when a wrong clock breaks TLS), keeps the lowest-delay
exchange and stores it with terminal.timing.timeline.record_sample; the signed answer stays in the sample's
evidence. The offset is bounded by NTP's θ ± δ/2 plus the server's own error bound (../shared/reference/time-
and-durability.md §1.1, §1.4).

Fallback: the `Date` header of any central-server response (1 s resolution: ±0.5 s + RTT/2).
"""

from __future__ import annotations

import base64
import email.utils
import os
import sqlite3

import requests

from sync.wire.timesample import PROTOCOL, SIGNED_FIELDS, TIME_PATH, signed_message
from terminal.log import chain
from terminal.timing import clock, timeline
from terminal.timing.clock import ClockReading

MIN_EXCHANGES, MAX_EXCHANGES = 4, 8


class TimeSyncError(Exception):
    """No trusted sample could be taken; the message says what to do. `response` is the last HTTP
    response, if any, for the Date-header fallback."""

    def __init__(self, message: str, response: requests.Response | None = None, fallback_ok: bool = True,
                 readings: tuple[ClockReading, ClockReading] | None = None):
        super().__init__(message)
        self.response, self.fallback_ok, self.readings = response, fallback_ok, readings


# -- terminal side -----------------------------------------------------------------------------------------


def _chain_head(conn: sqlite3.Connection) -> dict | None:
    row = conn.execute("SELECT seq, hash FROM punches ORDER BY seq DESC LIMIT 1").fetchone()
    return {"seq": row[0], "hash": row[1]} if row else None


def check_answer(answer, request: dict, public_key) -> dict:
    """The verified answer, or TimeSyncError: signature, nonce, device and plausibility."""
    if not isinstance(answer, dict) or not all(k in answer for k in (*SIGNED_FIELDS, "signature")):
        raise TimeSyncError("the central server's time answer is incomplete; is [central] url right?")
    if not isinstance(answer["signature"], str) or not chain.verify_b64(
            public_key, answer["signature"], signed_message(answer)):
        raise TimeSyncError("the time answer's signature does not match the pinned [central] server_key: "
                            "either the key in the configuration is wrong or something between the terminal "
                            "and the central server altered the answer; no sample was recorded",
                            fallback_ok=False)
    if answer["protocol"] != PROTOCOL or answer["nonce"] != request["nonce"] or \
            answer["device_id"] != request["device_id"]:
        raise TimeSyncError("the time answer does not belong to this request (nonce or device differs): "
                            "a replayed answer; no sample was recorded", fallback_ok=False)
    t2, t3, bound = answer["t2_ns"], answer["t3_ns"], answer["error_bound_ns"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (t2, t3, bound)) or t3 < t2 or bound < 0:
        raise TimeSyncError("the time answer is inconsistent (t3 before t2 or a negative error bound)",
                            fallback_ok=False)
    return answer


def sample_from_answer(sent: ClockReading, received: ClockReading, answer: dict) -> dict:
    """record_sample keyword arguments for one verified exchange: UTC (t2+t3)/2 stamped between send and
    receive, uncertain by the server's own error bound (the timeline adds half the round trip)."""
    evidence = {k: answer[k] for k in (*SIGNED_FIELDS, "signature")}
    evidence["delay_ns"] = exchange_delay(sent, received, answer)
    return {"source": "server-signed", "reading": received, "sent": sent,
            "utc_ns": (answer["t2_ns"] + answer["t3_ns"]) // 2, "uncertainty_ns": answer["error_bound_ns"],
            "evidence": evidence}


def exchange_delay(sent: ClockReading, received: ClockReading, answer: dict) -> int:
    """NTP's δ = (m4 − m1) − (t3 − t2): the network part of the round trip."""
    return (received.monoraw_ns - sent.monoraw_ns) - (answer["t3_ns"] - answer["t2_ns"])


def _post(session, url, headers, body, timeout) -> requests.Response:
    try:
        return session.post(url, json=body, headers=headers, timeout=(timeout, timeout))
    except requests.RequestException as e:
        raise TimeSyncError(f"cannot reach the central server at {url} ({type(e).__name__}); check the "
                            "network and [central] url; punches are kept and re-anchored later",
                            fallback_ok=False) from None


def fetch_time_sample(session: requests.Session, base_url: str, device_id: str, token: str | None,
                      server_key_b64: str, conn: sqlite3.Connection, *, exchanges: int = 6,
                      timeout: float = 10.0, params: timeline.Params = timeline.DEFAULT_PARAMS) -> dict:
    """Take 4–8 signed exchanges on one keep-alive session, record the lowest-delay one and return it."""
    if not server_key_b64:
        raise TimeSyncError("[central] server_key is not set: pin the key `presensi server add-device` printed",
                            fallback_ok=False)
    try:
        public_key = chain.public_key_from_b64(server_key_b64)
    except ValueError as e:
        raise TimeSyncError(f"[central] server_key: {e}", fallback_ok=False) from None
    url = base_url.rstrip("/") + TIME_PATH
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    best = None
    for _ in range(max(MIN_EXCHANGES, min(MAX_EXCHANGES, exchanges))):
        request = {"nonce": base64.b64encode(os.urandom(16)).decode(), "device_id": device_id,
                   "chain_head": _chain_head(conn)}
        sent = clock.read()
        response = _post(session, url, headers, request, timeout)
        received = clock.read()
        if response.status_code != 200:
            raise TimeSyncError(_http_problem(url, response), response=response, readings=(sent, received))
        try:
            answer = response.json()
        except ValueError:
            raise TimeSyncError(f"{url}: the answer is not JSON", response=response,
                                readings=(sent, received)) from None
        answer = check_answer(answer, request, public_key)
        delay = exchange_delay(sent, received, answer)
        if best is None or delay < best[0]:
            best = (delay, sent, received, answer)
    _, sent, received, answer = best
    return timeline.record_sample(conn, params=params, **sample_from_answer(sent, received, answer))


def _http_problem(url: str, response: requests.Response) -> str:
    hints = {401: "the device token was refused: check [central] token",
             403: "the device token was refused: check [central] token",
             404: "the central server has no time endpoint (an older server?)",
             503: "the central server's time service is unavailable"}
    return f"{url}: HTTP {response.status_code}: {hints.get(response.status_code, 'unexpected answer')}"


# -- fallback: the HTTP Date header ------------------------------------------------------------------------


def sample_from_date_header(date_header: str, sent: ClockReading, received: ClockReading) -> dict:
    """record_sample keyword arguments for an HTTP `Date` header (RFC 9110: whole seconds, generated
    somewhere between our send and receive): UTC ∈ [Date, Date + 1 s), so Date + 0.5 s ± 0.5 s."""
    try:
        when = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        raise ValueError(f"not an HTTP date: {date_header!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"HTTP date without a time zone: {date_header!r}")
    utc_ns = int(when.timestamp()) * 1_000_000_000 + 500_000_000
    return {"source": "http-date", "reading": received, "sent": sent, "utc_ns": utc_ns,
            "uncertainty_ns": 500_000_000, "evidence": {"date": date_header}}


def record_http_date(conn: sqlite3.Connection, response: requests.Response, sent: ClockReading,
                     received: ClockReading, *, params: timeline.Params = timeline.DEFAULT_PARAMS) -> dict | None:
    """Record the Date header of a central-server response as a sample; None when there is none."""
    header = response.headers.get("Date")
    if not header:
        return None
    kwargs = sample_from_date_header(header, sent, received)
    kwargs["evidence"]["url"] = response.url
    return timeline.record_sample(conn, params=params, **kwargs)


def sync_time(session: requests.Session, base_url: str, device_id: str, token: str | None,
              server_key_b64: str | None, conn: sqlite3.Connection, *, exchanges: int = 6,
              timeout: float = 10.0, params: timeline.Params = timeline.DEFAULT_PARAMS) -> dict:
    """A signed sample, or the Date header of the central server's answer when the time endpoint is missing
    or failing. Also records the kernel's NTP view when it says it is synchronised. Raises TimeSyncError."""
    kernel = timeline.observe_kernel(conn, params=params)
    try:
        sample = fetch_time_sample(session, base_url, device_id, token, server_key_b64 or "", conn,
                                   exchanges=exchanges, timeout=timeout, params=params)
        return {"method": "server-signed", "sample": sample, "kernel_sample": kernel}
    except TimeSyncError as e:
        if not e.fallback_ok or e.response is None or e.readings is None:
            raise
        sample = record_http_date(conn, e.response, *e.readings, params=params)
        if sample is None:
            raise
        return {"method": "http-date", "sample": sample, "signed_error": str(e), "kernel_sample": kernel}


# -- re-anchored times to the central server (C3) -----------------------------------------------------------


def push_punch_times(session: requests.Session, base_url: str, device_id: str, token: str | None,
                     conn: sqlite3.Connection, *, batch: int = 500, timeout: float = 10.0,
                     max_batches: int = 1000) -> int:
    """POST re-anchored punch times the server has not seen; returns how many were accepted."""
    log_id = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
    url = f"{base_url.rstrip('/')}/api/v1/devices/{device_id}/punch-times"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sent_total = 0
    for _ in range(max_batches):
        times = timeline.pending_times(conn, limit=batch)
        if not times:
            break
        body = {"log_id": log_id, "times": [{k: t[k] for k in ("seq", "utc", "earliest", "latest", "basis",
                                                                "flags")} for t in times]}
        response = _post(session, url, headers, body, timeout)
        if response.status_code != 200:
            raise TimeSyncError(_http_problem(url, response), response=response)
        timeline.mark_pushed(conn, times)
        sent_total += len(times)
    return sent_total
