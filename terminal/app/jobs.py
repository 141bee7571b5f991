"""The daemon's periodic jobs, as plain functions of a JobContext, and their registration with the
monotonic scheduler (terminal/app/scheduler.py: a wall-clock step never delays a job).

Each job is small and idempotent, catches its own expected failures (a dead central server is normal) and
returns a short dict for logs and tests. No job depends on the wall clock being right.

Time truth (issue 15): the time sample runs at start, periodically, and as soon as the central server is
reachable again after the push found it down; the push takes a sample itself before delivering punches of
a boot without one; kinds are recomputed from re-anchored times by the push and by their own job (so
offline time sources re-anchor kinds too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from terminal.config import Config
from terminal.log import evidence

log = logging.getLogger("presensi.jobs")


@dataclass
class JobContext:
    cfg: Config
    state: dict = field(default_factory=dict)  # last results, shown by status and the kiosk


def push(ctx: JobContext) -> dict:
    """Deliver pending punches, photos and fault events (bounded by one interval's worth of work)."""
    from sync.device import push as push_mod
    from terminal.punch.service import recomputer

    pusher = ctx.state.get("pusher")
    if pusher is None:
        pusher = ctx.state["pusher"] = push_mod.Pusher(ctx.cfg.state_dir, push_mod.Settings.from_config(ctx.cfg),
                                                       recompute=recomputer(ctx.cfg))
    was_unreachable = pusher.unreachable
    # finish within the interval, so that runs never pile up behind a slow or dead server
    # the daemon's stop event: a back-off wait ends at shutdown, and it waits on the monotonic clock
    result = pusher.drain(deadline=time.monotonic() + max(1.0, 0.8 * ctx.cfg.central.push_interval),
                          stop=ctx.state.get("stop"))
    result["time_sample"] = pusher.last_sample  # the latest attempt, of this run or an earlier one
    ctx.state["last_push"] = result
    if was_unreachable and result.get("done"):  # the server is back: the full time sample job now
        trigger = ctx.state.get("trigger")
        if trigger is not None:
            trigger("time_sample")
    return result


def time_sample(ctx: JobContext) -> dict:
    """A signed time sample from the central server (HTTP Date as fallback), then re-anchored times."""
    from sync.device import central, time_client
    from terminal.log import punchlog
    from terminal.punch.service import recomputer

    conn = punchlog.connect(punchlog.db_path(ctx.cfg.state_dir))
    try:
        with central.Client.from_config(ctx.cfg) as client:
            result = time_client.sync_time(client, ctx.cfg.central.server_key, conn)
            recomputer(ctx.cfg)(conn)  # kinds follow the re-anchored times before they are sent
            sent = time_client.push_punch_times(client, conn)
    except Exception as e:  # offline is normal; the next run tries again
        ctx.state["last_time_sample"] = {"ok": False, "error": str(e)}
        return ctx.state["last_time_sample"]
    finally:
        conn.close()
    ctx.state["last_time_sample"] = {"ok": True, "method": result["method"], "times_sent": sent}
    return ctx.state["last_time_sample"]


def time_sources(ctx: JobContext) -> dict:
    """The offline time sources ([time]: kernel NTP status, GPS, the hardware RTC) read once."""
    from terminal.app import timesources
    from terminal.log import punchlog

    conn = punchlog.connect(punchlog.db_path(ctx.cfg.state_dir))
    try:
        result = timesources.read_sources(ctx.cfg, conn)
    finally:
        conn.close()
    ctx.state["last_time_sources"] = result
    return result


def derived_refresh(ctx: JobContext) -> dict:
    """Recompute kinds and lateness of punches whose time was re-anchored by any source (also offline ones,
    and ZK/ADMS set-time samples); cheap when nothing changed (one indexed query)."""
    from terminal.log import punchlog
    from terminal.punch.service import recomputer

    conn = punchlog.connect(punchlog.db_path(ctx.cfg.state_dir))
    try:
        return {"changed": recomputer(ctx.cfg)(conn)}
    finally:
        conn.close()


def roster_refresh(ctx: JobContext) -> dict:
    from sync.device import roster_client

    try:
        result = roster_client.pull_roster(ctx.cfg)
    except Exception as e:  # a bad bundle or an unreachable server leaves the old roster working
        result = {"ok": False, "error": str(e)}
    ctx.state["last_roster"] = result
    on_change = ctx.state.get("on_roster_change")
    if on_change and result.get("status") == "installed":
        on_change()
    return result


def enrolment_upload(ctx: JobContext) -> dict:
    """Send the enrolments made here to the central server (sync/device/enrol_client.py); when it took any,
    the roster that carries them is fetched at once."""
    from sync.device import central, enrol_client
    from terminal.log import punchlog

    conn = punchlog.connect(punchlog.db_path(ctx.cfg.state_dir))
    try:
        with central.Client.from_config(ctx.cfg) as client:
            result = enrol_client.upload(client, conn, ctx.cfg.state_dir)
    except Exception as e:  # offline is normal; the outbox keeps them for the next run
        result = {"ok": False, "error": str(e)}
    finally:
        conn.close()
    ctx.state["last_enrolment_upload"] = result
    trigger = ctx.state.get("trigger")
    if result.get("accepted") and trigger is not None:
        trigger("roster_refresh")
    return result


def photo_retention(ctx: JobContext) -> dict:
    """Delete photos past [photos] keep_days, except the evidence still needed: the photo of a punch the
    central server has not acknowledged (its photo not delivered), and the photo of a fault event that is
    open or not yet delivered. Above [photos] max_mb the oldest photos go even so, with a fault, because a
    full disk would refuse every punch."""
    from terminal.log import punchlog
    from terminal.ops import faults

    with punchlog.PunchLog(ctx.cfg.state_dir) as plog:
        protected = protected_photos(ctx.cfg, plog.conn, plog.log_id)
        result = evidence.apply_retention(ctx.cfg.state_dir, ctx.cfg.photos.keep_days, protected,
                                          max_bytes=int(ctx.cfg.photos.max_mb * 1024 * 1024))
        key = "photos:cap"
        if result.cap_removed_protected:
            faults.raise_fault(
                plog.conn, key, part="disk", category="disk",
                message=f"photos exceeded [photos] max_mb = {ctx.cfg.photos.max_mb:g}: "
                        f"{result.cap_removed_protected} photos of undelivered punches or open faults deleted",
                diagnostics=result.as_dict())
        elif result.total_bytes <= ctx.cfg.photos.max_mb * 1024 * 1024 or not ctx.cfg.photos.max_mb:
            faults.clear_fault(plog.conn, key, message="photos fit within [photos] max_mb again")
    return result.as_dict()


def protected_photos(cfg: Config, conn, log_id: str) -> set[str]:
    """Relative paths of the photos retention must keep (see photo_retention). Without a central server
    nothing will acknowledge a punch photo, so those follow keep_days; fault-report photos are kept."""
    from terminal.log import syncstate

    target = syncstate.target_of(cfg.central.url)
    if target:
        photos_done = syncstate.acked(conn, target, "photos", log_id)
        faults_done = syncstate.acked(conn, target, "faults", "faults")  # the push client's key for events
        rows = conn.execute("SELECT photo_path FROM punches WHERE seq > ? AND photo_path IS NOT NULL",
                            (photos_done,)).fetchall()
    else:
        faults_done, rows = None, []
    keep = {r[0] for r in rows}
    keep |= {r[0] for r in conn.execute(
        """SELECT photo_path FROM fault_events WHERE photo_path IS NOT NULL AND (id > ? OR fault_key IN
               (SELECT fault_key FROM fault_events f WHERE f.id = (SELECT MAX(id) FROM fault_events g
                WHERE g.fault_key = f.fault_key AND g.event IN ('raised', 'cleared')) AND f.event = 'raised'))""",
        (faults_done if faults_done is not None else -1,))}
    return keep


def integrity_check(ctx: JobContext) -> dict:
    """Daily: the full chain and checkpoint verification plus SQLite's quick_check; problems raise a fault."""
    from terminal.log import punchlog
    from terminal.ops import faults

    with punchlog.PunchLog(ctx.cfg.state_dir) as plog:
        problems = plog.verify()
        quick = plog.integrity(quick=True)
        key = "integrity:log"
        if problems:
            first = problems[0]
            faults.raise_fault(plog.conn, key, part="database", category="software",
                               message=f"punch log verify failed at seq {first.seq}: {first.what}",
                               diagnostics={"problems": [str(p) for p in problems[:20]]})
        else:
            faults.clear_fault(plog.conn, key, message="punch log verified")
    return {"ok": not problems, "quick_check": quick, "problems": len(problems)}


def checkpoint(ctx: JobContext) -> dict:
    from terminal.log import punchlog

    with punchlog.PunchLog(ctx.cfg.state_dir) as plog:
        cp = plog.checkpoint()
    return {"seq": cp["seq"] if cp else 0}


# name -> (function, interval in seconds from the configuration, needs a central server)
JOBS = {
    "push": (push, lambda cfg: cfg.central.push_interval, True),
    "time_sample": (time_sample, lambda cfg: TIME_SAMPLE_INTERVAL, True),
    "time_sources": (time_sources, lambda cfg: cfg.time.sources_interval, False),
    "roster_refresh": (roster_refresh, lambda cfg: cfg.roster.pull_interval, True),
    "enrolment_upload": (enrolment_upload, lambda cfg: cfg.central.push_interval, True),
    "derived_refresh": (derived_refresh, lambda cfg: 60.0, False),
    "photo_retention": (photo_retention, lambda cfg: 3600.0, False),
    "integrity_check": (integrity_check, lambda cfg: 86400.0, False),
    "checkpoint": (checkpoint, lambda cfg: 900.0, False),
}
TIME_SAMPLE_INTERVAL = 3600.0
# a fresh boot needs a time anchor (server or offline sources) and the roster as soon as possible
STARTUP_JOBS = ("time_sample", "time_sources", "roster_refresh", "push")


def schedule_jobs(scheduler, ctx: JobContext) -> list[str]:
    """Register every job that applies to this configuration with a MonotonicScheduler; returns their
    names. Time-sample, roster and push jobs run one second after start; `ctx.state["trigger"]` runs a job
    now (the push uses it to take a time sample when the server is reachable again)."""
    names = []
    for name, (fn, interval, needs_central) in JOBS.items():
        if needs_central and not ctx.cfg.central.url:
            continue
        first = 1.0 if name in STARTUP_JOBS else min(interval(ctx.cfg), 60.0)
        scheduler.add(name, _guarded(name, fn, ctx), interval(ctx.cfg), first_delay=first)
        names.append(name)
    ctx.state["trigger"] = scheduler.trigger
    return names


def _guarded(name, fn, ctx: JobContext):
    def run():
        try:
            result = fn(ctx)
            log.debug("job %s: %s", name, result)
            return result
        except Exception:
            log.exception("job %s failed", name)
    run.__name__ = run.__qualname__ = name
    return run
