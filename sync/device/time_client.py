"""Trusted time samples from the central server (contract C2), and the fallbacks.

The exchange's format and its signature are sync/wire/timesample.py (the reference server answers with it at
POST /api/v1/time). Here, the terminal's side: `fetch_time_sample` runs 4–8 exchanges on one keep-alive
session, reads the raw monotonic clock at each send and receive, verifies every answer against the pinned
`[central] server_key` (so the sample holds even when a wrong clock breaks TLS), keeps the lowest-delay
exchange and stores it with terminal.timing.timeline.record_sample; the signed answer stays in the sample's
evidence. The offset is bounded by NTP's θ ± δ/2 plus the server's own error bound (../shared/reference/time-
and-durability.md §1.1, §1.4).

Fallback: the `Date` header of any central-server response (1 s resolution: ±0.5 s + RTT/2).

HTTP (session, token, timeouts, body limits, failure classes) is sync/device/central.py's Client, shared
with push and the roster.
"""

from __future__ import annotations

import base64
import email.utils
import os
import sqlite3

from sync.device import central
from sync.wire.timesample import PROTOCOL, SIGNED_FIELDS, TIME_PATH, signed_message
from terminal.log import chain
from terminal.punch import derived
from terminal.timing import clock, timeline
from terminal.timing.clock import ClockReading

MIN_EXCHANGES, MAX_EXCHANGES = 4, 8


class TimeSyncError(Exception):
    """No trusted sample could be taken; the message says what to do. `response` is the last HTTP
    response, if any, for the Date-header fallback."""

    def __init__(self, message: str, response: central.Reply | None = None, fallback_ok: bool = True,
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


def _exchange(client: central.Client, request: dict) -> tuple[ClockReading, ClockReading, dict]:
    """One request/answer with the raw monotonic clock read around it; HTTP failures become TimeSyncError
    (with the server's answer, when there is one, for the Date-header fallback)."""
    sent = clock.read()
    try:
        reply = client.request("POST", TIME_PATH, json_body=request)
    except central.CentralError as e:
        received = clock.read()
        if e.reply is None:  # nothing came back: no Date header either
            raise TimeSyncError(f"{e}; punches are kept and re-anchored later", fallback_ok=False) from None
        raise TimeSyncError(_http_problem(e), response=e.reply, readings=(sent, received)) from None
    received = clock.read()
    if reply.status != 200:
        raise TimeSyncError(f"{TIME_PATH}: HTTP {reply.status}: unexpected answer", response=reply,
                            readings=(sent, received))
    try:
        answer = reply.json()
    except central.TransientError:
        raise TimeSyncError(f"{TIME_PATH}: the answer is not JSON", response=reply,
                            readings=(sent, received)) from None
    return sent, received, answer


def fetch_time_sample(client: central.Client, server_key_b64: str, conn: sqlite3.Connection, *,
                      exchanges: int = 6, params: timeline.Params = timeline.DEFAULT_PARAMS) -> dict:
    """Take 4–8 signed exchanges on the client's keep-alive session, record the lowest-delay one and
    return it."""
    if not server_key_b64:
        raise TimeSyncError("[central] server_key is not set: pin the key `presensi server add-device` printed",
                            fallback_ok=False)
    try:
        public_key = chain.public_key_from_b64(server_key_b64)
    except ValueError as e:
        raise TimeSyncError(f"[central] server_key: {e}", fallback_ok=False) from None
    best = None
    for _ in range(max(MIN_EXCHANGES, min(MAX_EXCHANGES, exchanges))):
        request = {"nonce": base64.b64encode(os.urandom(16)).decode(), "device_id": client.s.device_id,
                   "chain_head": _chain_head(conn)}
        sent, received, answer = _exchange(client, request)
        answer = check_answer(answer, request, public_key)
        delay = exchange_delay(sent, received, answer)
        if best is None or delay < best[0]:
            best = (delay, sent, received, answer)
    _, sent, received, answer = best
    return timeline.record_sample(conn, params=params, **sample_from_answer(sent, received, answer))


def _http_problem(e: central.CentralError) -> str:
    hints = {404: "the central server has no time endpoint (an older server?)",
             503: "the central server's time service is unavailable"}
    hint = hints.get(e.status)
    return f"{TIME_PATH}: {e}" + (f"; {hint}" if hint else "")


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


def record_http_date(conn: sqlite3.Connection, response: central.Reply, sent: ClockReading,
                     received: ClockReading, *, params: timeline.Params = timeline.DEFAULT_PARAMS) -> dict | None:
    """Record the Date header of a central-server response as a sample; None when there is none."""
    header = response.headers.get("Date")
    if not header:
        return None
    kwargs = sample_from_date_header(header, sent, received)
    kwargs["evidence"]["url"] = response.url
    return timeline.record_sample(conn, params=params, **kwargs)


def sync_time(client: central.Client, server_key_b64: str | None, conn: sqlite3.Connection, *,
              exchanges: int = 6, params: timeline.Params = timeline.DEFAULT_PARAMS) -> dict:
    """A signed sample, or the Date header of the central server's answer when the time endpoint is missing
    or failing. Also records the kernel's NTP view when it says it is synchronised. Raises TimeSyncError."""
    kernel = timeline.observe_kernel(conn, params=params)
    try:
        sample = fetch_time_sample(client, server_key_b64 or "", conn, exchanges=exchanges, params=params)
        return {"method": "server-signed", "sample": sample, "kernel_sample": kernel}
    except TimeSyncError as e:
        if not e.fallback_ok or e.response is None or e.readings is None:
            raise
        sample = record_http_date(conn, e.response, *e.readings, params=params)
        if sample is None:
            raise
        return {"method": "http-date", "sample": sample, "signed_error": str(e), "kernel_sample": kernel}


# -- re-anchored times to the central server (C3) -----------------------------------------------------------


def push_punch_times(client: central.Client, conn: sqlite3.Connection, *, batch: int = 500,
                     max_batches: int = 1000, up_to_seq: int | None = None) -> int:
    """POST re-anchored punch times and recomputed derived values (kind, lateness, local time …) the server
    has not seen; returns how many punches they covered. With `up_to_seq`: only punches it already stored
    (a later batch carries the current values of the others)."""
    log_id = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
    path = client.device_path("/punch-times")
    sent_total = 0
    for _ in range(max_batches):
        entries, times, values = _pending_entries(conn, batch, up_to_seq)
        if not entries:
            break
        try:
            client.post_json(path, {"log_id": log_id, "times": entries})
        except central.CentralError as e:
            raise TimeSyncError(f"{path}: {e}", response=e.reply, fallback_ok=False) from None
        timeline.mark_pushed(conn, times)
        derived.mark_pushed(conn, values)
        sent_total += len(entries)
    return sent_total


def _pending_entries(conn: sqlite3.Connection, batch: int, up_to_seq: int | None):
    """The next C3 entries: {seq, utc, earliest, latest, basis, flags, derived?} for punches whose time or
    derived values changed since the server last had them (at most `batch` punches)."""
    times = timeline.pending_times(conn, limit=batch, up_to_seq=up_to_seq)
    values = derived.pending(conn, up_to_seq=up_to_seq, limit=batch)
    seqs = sorted({t["seq"] for t in times} | {v["seq"] for v in values})[:batch]
    keep = set(seqs)
    times = [t for t in times if t["seq"] in keep]
    values = [v for v in values if v["seq"] in keep]
    current = timeline.stored_times(conn, seqs)
    by_seq = {v["seq"]: v for v in values}
    entries = []
    for seq in seqs:
        entry = {"seq": seq, **current.get(seq, {})}
        if seq in by_seq:
            entry["derived"] = {k: v for k, v in by_seq[seq].items() if k != "seq"}
        entries.append(entry)
    return entries, times, values
