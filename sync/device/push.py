"""The push client: delivers the punch log (the outbox) to the central server, at least once, in order.

- Outbox: `seq > acked ORDER BY seq LIMIT batch_size` from the punch log; memory is one batch whatever the
  backlog. Each batch is gzipped JSON to `POST /api/v1/devices/{id}/punches`; the server dedupes on
  (device, log_id, seq) and answers `{"acked_through": N}`, which is stored in one transaction. A crash
  anywhere only causes a resend.
- HTTP is sync/device/central.py (session, token, timeouts, body limits, what a failure means). Transient
  failures (connection errors, timeouts, 5xx, 408/425/429) back off with its full-jitter policy and honour
  Retry-After; a 401/403 is a configuration problem and is reported as such. A heartbeat thread keeps
  telling the server the head and backlog while bulk upload fails, on its own connection. Fault events
  (C5 table) go after the punches, photos last (lowest priority).
- Time before delivery (issue 15): before punches of a boot without a trusted sample go out, the pusher
  takes a signed time sample from the same server on the same connection (sync/device/time_client.py), so
  the server gets the corrected UTC and the kind of the true local time in the first delivery. A failed
  sample never blocks delivery (the punches go out flagged). After punches, re-anchored times and derived
  kinds of punches already delivered follow (the C3 punch-times path), within the same run.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from sync.device import central, time_client
from sync.device.central import backoff_delay, parse_retry_after
from sync.wire import signed
from terminal import __version__
from terminal.log import punchlog, syncstate
from terminal.punch.derived import mark_pushed as _derived_mark_pushed
from terminal.timing import clock, timeline

log = logging.getLogger("presensi.sync")

RECORD_FIELDS = (
    "log_id", "seq", "employee", "method", "kind", "details", "boot_id", "monoraw_ns", "boottime_ns",
    "realtime_ns", "timex_status", "maxerror_us", "latitude", "longitude", "photo_sha256", "prev_hash", "hash",
)
TIME_FIELDS = ("utc", "earliest", "latest", "basis", "flags")
# Each record also carries `derived`: kind, lateness, local date/time, workday … (punch_derived, outside the
# hash) with their basis and revision; the central server stores them beside the record.
PHOTOS_PER_ROUND = 20
FAULTS_PER_BATCH = 200
NO_PROGRESS_LIMIT = 5
SAMPLE_RETRY_S = 300.0  # a boot without a trusted sample: the pusher tries again at most this often anyway


# Delivery's two outcomes are the central client's: PushError = cannot go on without someone acting (wrong
# token, refused data; the message says what), TransientError = a later attempt may succeed.
PushError = central.PermanentError
TransientError = central.TransientError
__all__ = ["Heartbeat", "PushError", "Pusher", "Settings", "TransientError", "backoff_delay",
           "parse_retry_after", "send_punch_times"]


@dataclass(frozen=True)
class Settings:
    url: str
    device_id: str
    token: str
    timeout: float = 10.0
    batch_size: int = 500
    retry_base: float = 1.0
    max_backoff: float = 900.0
    heartbeat_interval: float = 60.0
    key: object | None = None  # the device key that signs every request and the log announcement
    enrolment_code: str | None = None
    server_key: str = ""  # pinned key of the server's signed time answers ([central] server_key)

    @classmethod
    def from_config(cls, cfg) -> Settings:
        c = cfg.central
        base = central.Settings.from_config(cfg)  # raises ConfigError (a PushError) without url, token, key
        return cls(url=base.url, device_id=base.device_id, token=c.token, timeout=c.timeout,
                   batch_size=c.batch_size, retry_base=c.retry_base, max_backoff=c.max_backoff,
                   heartbeat_interval=c.heartbeat_interval, key=base.key, enrolment_code=base.enrolment_code,
                   server_key=c.server_key or "")

    @property
    def central(self) -> central.Settings:
        return central.Settings(url=self.url, device_id=self.device_id, token=self.token, timeout=self.timeout,
                                retry_base=self.retry_base, max_backoff=self.max_backoff, key=self.key,
                                enrolment_code=self.enrolment_code)


def annotate(conn: sqlite3.Connection, records: list[dict]) -> list[dict]:
    """Derived time fields (terminal.timing.timeline.annotate); if that fails the records still go, flagged,
    because delivery must never wait on time estimation."""
    try:
        return timeline.annotate(conn, records)
    except Exception:
        log.exception("time annotation failed; sending punches without corrected times")
        flag = "time-annotation-failed"
    return [{**r, "utc": None, "earliest": None, "latest": None, "basis": "unanchored", "flags": [flag]}
            for r in records]


def post(client: central.Client, rest: str, body, *, compress: bool = True) -> dict:
    """POST JSON to the device's part of the API. A 413 is transient here: the pusher halves its batch."""
    try:
        return client.post_json(client.device_path(rest), body, compress=compress)
    except central.RefusedError as e:
        if e.status == 413:
            raise TransientError("the batch is too large for the server", status=413) from None
        raise


def _ranges(seqs: list[int]) -> str:
    out: list[str] = []
    for s in seqs:
        if out and out[-1].split("-")[-1] == str(s - 1):
            out[-1] = out[-1].split("-")[0] + f"-{s}"
        else:
            out.append(str(s))
    return ", ".join(out[:20]) + (" …" if len(out) > 20 else "")


class Pusher:
    """Delivers one terminal's punches, photos and fault events to one central server."""

    def __init__(self, state_dir: Path, settings: Settings, *, health: Callable[[], dict] | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep,
                 recompute: Callable[[sqlite3.Connection], int] | None = None):
        self.state_dir = Path(state_dir)
        self.s = settings
        self.log = punchlog.PunchLog(self.state_dir)
        self.conn = self.log.conn
        self.target = syncstate.target_of(settings.url)
        self.client = central.Client(settings.central, session)
        self.health = health or (lambda: {})
        self.sleep = sleep
        self.batch_size = settings.batch_size
        self._built: dict[int, tuple[dict, int]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # kinds and lateness follow re-anchored times (terminal/punch/derived.py refresh, wired by the caller)
        self.recompute = recompute
        self.unreachable = False  # the last run ended on a transient failure: sample again once it is back
        self.last_sample: dict | None = None
        self._last_sample_at: float | None = None  # monotonic time of the last attempt

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.client.close()
        self.log.close()

    # -- punches --------------------------------------------------------------------------------------

    def acked(self) -> int:
        return syncstate.acked(self.conn, self.target, "punches", self.log.log_id)

    def backlog(self) -> int:
        return self.conn.execute("SELECT count(*) FROM punches WHERE seq > ?", (self.acked(),)).fetchone()[0]

    def build_batch(self, after: int) -> tuple[dict, int]:
        """The next batch after `after` and its last seq (0 when nothing is pending)."""
        records = [{**{k: r[k] for k in RECORD_FIELDS}, "derived": r.get("derived")}
                   for r in self.log.records(after_seq=after, limit=self.batch_size, batch=self.batch_size)]
        if not records:
            return {}, 0
        last = records[-1]["seq"]
        if last == self.log.head()[0]:
            self.log.checkpoint()  # the server can then check a signature over the very head
        derived = {r["seq"]: r.get("derived") for r in records}
        records = [{**{k: r.get(k) for k in RECORD_FIELDS + TIME_FIELDS}, "derived": derived.get(r["seq"])}
                   for r in annotate(self.conn, records)]
        cps = [dict(r) for r in self.conn.execute(
            "SELECT log_id, seq, hash, signed_realtime_ns, public_key, signature FROM checkpoints "
            "WHERE seq > ? AND seq <= ? ORDER BY seq, id", (after, last))]
        body = {"log_id": self.log.log_id, "after_seq": after, "records": records, "checkpoints": cps}
        if self.s.key is not None:  # the server takes a log_id it has not seen only with this
            body["log_announcement"] = signed.announce_log(self.s.key, self.s.device_id, self.log.log_id)
        return body, last

    def _batch_after(self, after: int) -> tuple[dict, int]:
        """The batch after `after`, from the two-entry cache (the retry of a failed batch, or the next batch
        built while the previous one was on the wire), else built now. Memory: two batches at most."""
        if after not in self._built:
            self._built = {k: v for k, v in self._built.items() if k > after}
            while len(self._built) >= 2:
                self._built.pop(min(self._built))
            self._built[after] = self.build_batch(after)
        return self._built[after]

    def push_batch(self) -> int:
        """Send one batch; returns how many records it carried (0 = nothing pending). Raises on failure.
        While the batch is on the wire the next one is read and encoded (pipelining both processes)."""
        after = self.acked()
        body, last = self._batch_after(after)
        if not last:
            self._built.clear()
            return 0
        started = time.time_ns()
        try:
            future = self._sender().submit(post, self.client, "/punches", body)
            if last not in self._built:
                self._batch_after(last)
                self._built[after] = (body, last)
            reply = future.result()
            acked = reply.get("acked_through") if isinstance(reply, dict) else None
            if not isinstance(acked, int) or isinstance(acked, bool) or acked < 0:
                raise TransientError(f"the server's answer has no valid acked_through: {str(reply)[:200]}")
        except (TransientError, PushError) as e:
            if getattr(e, "status", None) == 413 and self.batch_size > 1:
                self.batch_size = max(1, self.batch_size // 2)
                self._built.clear()
            self._attempt("punches", started, False, len(body["records"]), error=str(e),
                          status=getattr(e, "status", None))
            raise
        acked = min(acked, last)  # never believe the server holds more than we sent
        self._note_kept_aside(reply, acked)
        try:
            syncstate.set_acked(self.conn, self.target, "punches", self.log.log_id, acked, attempt={
                "kind": "punches", "started_ns": started, "ok": True, "http_status": 200,
                "sent": len(body["records"]), "acked_seq": acked})
        except sqlite3.Error as e:
            raise PushError(f"the server stored the batch but the terminal cannot record that in its database "
                            f"({e}); the batch will be sent again (harmless). Check free space on the SD card "
                            "(`presensi status`)") from None
        if acked <= after:
            raise TransientError(f"the server stored the batch but acknowledges only up to seq {acked}; resending")
        self._mark_derived_sent([r for r in body["records"] if r["seq"] <= acked])
        return len(body["records"])

    def _note_kept_aside(self, reply: dict, acked: int) -> None:
        """Records the server kept aside (it already holds another version of that seq) are not delivered:
        they are written down as such (`kept_aside`, shown by `presensi sync status`) and logged, instead
        of being counted as delivered with the rest of the batch."""
        seqs = reply.get("kept_aside") if isinstance(reply, dict) else None
        if not isinstance(seqs, list) or not seqs:
            return
        seqs = sorted({s for s in seqs if isinstance(s, int) and not isinstance(s, bool) and 0 < s <= acked})
        if not seqs:
            return
        log.error("the central server kept %d punch(es) aside (it holds another version of seq %s): they are "
                  "NOT delivered; IT staff must compare `presensi log verify` with `presensi server alarms`",
                  len(seqs), ", ".join(map(str, seqs[:20])))
        try:
            self.log.audit("sync", "sync.kept-aside", {"target": self.target, "log_id": self.log.log_id,
                                                       "seqs": seqs[:1000], "count": len(seqs)})
            self._attempt("punches", time.time_ns(), False, len(seqs),
                          error=f"kept aside by the server (not delivered): seq {_ranges(seqs)}")
        except sqlite3.Error:
            log.exception("could not record the punches kept aside")

    def _mark_derived_sent(self, records: list[dict]) -> None:
        """The derived revisions a stored batch carried need not go again by the punch-times path."""
        rows = [{"seq": r["seq"], "revision": r["derived"]["revision"]} for r in records if r.get("derived")]
        if rows:
            try:
                _derived_mark_pushed(self.conn, rows)
            except sqlite3.Error:
                log.exception("could not record the delivered derived values (they will be sent again)")

    def _sender(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="presensi-push")
        return self._executor

    def _attempt(self, kind: str, started: int, ok: bool, sent: int = 0, *, acked: int | None = None,
                 error: str | None = None, status: int | None = None) -> None:
        try:
            syncstate.record_attempt(self.conn, self.target, kind, started_ns=started, ok=ok, http_status=status,
                                     sent=sent, acked_seq=acked, error=error)
        except sqlite3.Error:
            log.exception("could not record the delivery attempt")  # the attempt itself is what matters

    # -- photos and faults (lower priority) -----------------------------------------------------------

    def push_photos(self, limit: int = PHOTOS_PER_ROUND) -> int:
        """Upload photos of acknowledged punches; a photo removed by retention is skipped."""
        done_to = syncstate.acked(self.conn, self.target, "photos", self.log.log_id)
        acked = self.acked()
        rows = self.conn.execute(
            "SELECT seq, photo_path, photo_sha256 FROM punches WHERE seq > ? AND seq <= ? "
            "AND photo_sha256 IS NOT NULL ORDER BY seq LIMIT ?", (done_to, acked, limit)).fetchall()
        sent = 0
        for seq, path, sha in rows:
            self._put_photo(path, sha)
            sent += 1
            syncstate.set_acked(self.conn, self.target, "photos", self.log.log_id, seq)
        if len(rows) < limit and done_to < acked:
            syncstate.set_acked(self.conn, self.target, "photos", self.log.log_id, acked)
        return sent

    def _put_photo(self, rel_path: str | None, sha: str) -> None:
        try:
            data = (self.state_dir / rel_path).read_bytes() if rel_path else None
        except OSError:
            data = None
        if data is None:
            log.info("photo %s no longer on the terminal (retention); skipped", sha[:12])
            return
        started = time.time_ns()
        try:
            try:
                reply = self.client.request("PUT", self.client.device_path(f"/photos/{sha}"), data=data,
                                            headers={"Content-Type": "image/jpeg"})
            except central.RefusedError as e:
                if e.status not in (400, 413):
                    raise
                # this photo is refused (a damaged file): skip it, never stall the queue on it
                text = e.reply.error_text() if e.reply else str(e)
                log.warning("the server refused photo %s: %s; skipped", sha[:12], text)
                self._attempt("photo", started, False, 1, error=f"refused: {text}", status=e.status)
                return
            if reply.status not in (200, 201):
                raise PushError(f"the server refused photo {sha[:12]} (HTTP {reply.status}: {reply.error_text()})",
                                status=reply.status)
        except (TransientError, PushError) as e:
            self._attempt("photo", started, False, 1, error=str(e), status=getattr(e, "status", None))
            raise
        self._attempt("photo", started, True, 1, status=reply.status)

    def fault_backlog(self) -> list[dict]:
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name='fault_events'").fetchone():
            return []  # the fault table (C5) is not installed
        hwm = syncstate.acked(self.conn, self.target, "faults", "faults")
        rows = self.conn.execute("SELECT * FROM fault_events WHERE id > ? ORDER BY id LIMIT ?",
                                 (hwm, FAULTS_PER_BATCH)).fetchall()
        events = []
        for r in rows:
            e = dict(r)
            try:
                e["diagnostics"] = json.loads(e.get("diagnostics") or "null")
            except ValueError:
                pass
            events.append(e)
        return events

    def push_faults(self) -> int:
        events = self.fault_backlog()
        if not events:
            return 0
        for e in events:
            if e.get("photo_sha256") and e.get("photo_path"):
                self._put_photo(e["photo_path"], e["photo_sha256"])
        started = time.time_ns()
        body = {"events": [{k: v for k, v in e.items() if k != "photo_path"} for e in events]}
        try:
            post(self.client, "/faults", body)
        except (TransientError, PushError) as e:
            self._attempt("faults", started, False, len(events), error=str(e), status=getattr(e, "status", None))
            raise
        top = events[-1]["id"]
        syncstate.set_acked(self.conn, self.target, "faults", "faults", top)
        self._attempt("faults", started, True, len(events), acked=top, status=200)
        return len(events)

    def pending(self) -> dict:
        photos = self.conn.execute(
            "SELECT count(*) FROM punches WHERE seq > ? AND photo_sha256 IS NOT NULL",
            (syncstate.acked(self.conn, self.target, "photos", self.log.log_id),)).fetchone()[0]
        return {"punches": self.backlog(), "photos": photos, "faults": len(self.fault_backlog())}

    # -- the loops ------------------------------------------------------------------------------------

    def step(self) -> int:
        """One unit of work in priority order: a punch batch, else re-anchored times and kinds of delivered
        punches, else fault events, else photos. 0 = done."""
        return self.push_batch() or self.push_times() or self.push_faults() or self.push_photos()

    # -- time before delivery --------------------------------------------------------------------------

    def needs_sample(self, reading: clock.ClockReading | None = None) -> bool:
        """True when this boot has no trusted sample and punches of unanchored boots wait for delivery, or
        when the server was unreachable in the last run (it may be back: its time first)."""
        if self.unreachable:
            return True
        reading = reading or clock.read()
        anchored = "SELECT boot_id FROM time_samples WHERE status = 'accepted'"
        if self.conn.execute("SELECT 1 FROM time_samples WHERE boot_id = ? AND status = 'accepted' LIMIT 1",
                             (reading.boot_id,)).fetchone():
            return False
        if self._last_sample_at is None or time.monotonic() - self._last_sample_at > SAMPLE_RETRY_S:
            return True  # this boot is still unanchored: try again now and then, whatever is pending
        return self.conn.execute(f"SELECT 1 FROM punches WHERE seq > ? AND boot_id NOT IN ({anchored}) LIMIT 1",
                                 (self.acked(),)).fetchone() is not None

    def sample_time(self) -> dict:
        """A signed time sample from this server on this connection (Date header as fallback), then the
        derived kinds recomputed. Never raises: a failed sample is reported and delivery goes on."""
        self._last_sample_at = time.monotonic()
        try:
            result = time_client.sync_time(self.client, self.s.server_key, self.conn)
            self.last_sample = {"ok": True, "method": result["method"]}
            self._built.clear()  # batches built before the sample carry the old times and kinds
            log.info("time sample before delivery: %s", result["method"])
        except (time_client.TimeSyncError, central.CentralError, timeline.TimeSampleError, sqlite3.Error) as e:
            repeated = (self.last_sample or {}).get("error") == str(e)  # a week offline: one warning, not 10,000
            self.last_sample = {"ok": False, "error": str(e)}
            log.log(logging.DEBUG if repeated else logging.WARNING, "no time sample before delivery (%s); the "
                    "punches go out flagged and are re-anchored after the next good sample", e)
        self.refresh_derived()
        return self.last_sample

    def refresh_derived(self) -> int:
        if self.recompute is None:
            return 0
        try:
            return self.recompute(self.conn)
        except Exception:  # a broken recomputation must not stop delivery; the punches keep their kinds
            log.exception("recomputing kinds after re-anchoring failed")
            return 0

    def push_times(self) -> int:
        """Re-anchored times and derived values of punches the server already stored (C3); 0 = none."""
        try:
            return time_client.push_punch_times(self.client, self.conn, up_to_seq=self.acked(), max_batches=1)
        except time_client.TimeSyncError as e:
            raise TransientError(str(e)) from None

    def drain(self, deadline: float, stop: threading.Event | None = None) -> dict:
        """Deliver until nothing is pending or the deadline passes. Never raises TransientError. Takes a time
        sample first when punches of a boot without one are waiting (time before delivery)."""
        backoff, last_error = self.client.backoff(), None
        # a failed sample is taken again after a failed attempt (the server may have come back meanwhile),
        # so the punches still go out with their corrected time; it never holds delivery back
        retry_sample, failed, recovered = False, False, False
        if self.needs_sample():
            retry_sample = not self.sample_time()["ok"]  # its outcome: self.last_sample
        else:
            self.refresh_derived()
        while not (stop and stop.is_set()):
            try:
                if retry_sample and (failed or recovered):  # after a failure, and once the server is back
                    retry_sample, recovered = not self.sample_time()["ok"], False
                sent = self.step()
                recovered, failed = recovered or failed, False
                if sent == 0 and not (retry_sample and recovered):
                    self.unreachable = False
                    return {"done": True, "last_error": None, **self.pending()}
                backoff.succeeded()
                continue
            except TransientError as e:
                last_error, failed = str(e), True
                delay = backoff.failed(e.retry_after)
            if time.monotonic() + delay > deadline:
                break
            log.warning("delivery failed (%s); retrying in %.2f s", last_error, delay)
            if stop is not None:
                stop.wait(delay)
            else:
                self.sleep(delay)
        self.unreachable = True
        return {"done": False, "last_error": last_error, **self.pending()}

    def run(self, stop: threading.Event, push_interval: float) -> None:
        """The daemon's delivery loop until `stop` is set; never raises. Pair it with a Heartbeat."""
        while not stop.is_set():
            wait = push_interval
            try:
                self.drain(time.monotonic() + max(push_interval, self.s.max_backoff), stop)
            except PushError as e:  # needs a person (token, refused data): retry rarely, keep the outbox
                log.error("delivery stopped: %s", e)
                wait = self.s.max_backoff
            except Exception:  # a bug or a storage error must not end delivery for good
                log.exception("delivery loop error")
            stop.wait(wait)


class Heartbeat(threading.Thread):
    """Sends a small heartbeat every interval on its own connection, whatever the bulk upload does."""

    def __init__(self, state_dir: Path, settings: Settings, health: Callable[[], dict] | None = None):
        super().__init__(name="presensi-heartbeat", daemon=True)
        self.state_dir, self.s = Path(state_dir), settings
        self.client = central.Client(settings.central)  # its own session: a stuck upload cannot block it
        self.health = health or (lambda: {})
        self.stop_event = threading.Event()
        self.sent = 0
        self.last_error: str | None = None

    def beat(self) -> dict:
        """Read the head and backlog without writing (a full disk must not silence the heartbeat), send, and
        record the attempt when the database can be written."""
        conn = punchlog.connect_readonly(punchlog.db_path(self.state_dir))
        try:
            log_id = conn.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()[0]
            target = syncstate.target_of(self.s.url)
            row = conn.execute("SELECT seq, hash FROM punches ORDER BY seq DESC LIMIT 1").fetchone()
            acked = syncstate.acked(conn, target, "punches", log_id)
            backlog = conn.execute("SELECT count(*) FROM punches WHERE seq > ?", (acked,)).fetchone()[0]
        finally:
            conn.close()
        body = {"version": __version__, "log_id": log_id, "acked_seq": acked, "backlog": backlog,
                "head": {"seq": row[0] if row else 0, "hash": row[1] if row else None},
                "health": self.health()}
        started = time.time_ns()
        try:
            reply = post(self.client, "/heartbeat", body, compress=False)
        except (TransientError, PushError) as e:
            self._record(target, started, ok=False, http_status=getattr(e, "status", None), error=str(e))
            raise
        self.sent += 1
        self._record(target, started, ok=True, http_status=200)
        return reply

    def _record(self, target: str, started: int, **attempt) -> None:
        try:
            conn = punchlog.connect(punchlog.db_path(self.state_dir))
            try:
                syncstate.record_attempt(conn, target, "heartbeat", started_ns=started, **attempt)
            finally:
                conn.close()
        except Exception as e:  # a full disk: the heartbeat itself went out (or failed) all the same
            log.warning("heartbeat attempt not recorded: %s", e)

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.beat()
                self.last_error = None
            except Exception as e:  # keep beating whatever happened; the attempt is recorded
                self.last_error = str(e)
            self.stop_event.wait(self.s.heartbeat_interval)
        self.client.close()

    def stop(self) -> None:
        self.stop_event.set()


def send_punch_times(settings: Settings, log_id: str, times: list[dict]) -> dict:
    """C3: send re-anchored derived times of already delivered punches (utc, earliest, latest, basis,
    flags); the server updates only those columns."""
    with central.Client(settings.central) as client:
        return post(client, "/punch-times", {"log_id": log_id, "times": times})
