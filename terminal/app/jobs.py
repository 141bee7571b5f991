"""The daemon's periodic jobs, as plain functions of a JobContext, and their registration with apscheduler.

Each job is small and idempotent, catches its own expected failures (a dead central server is normal) and
returns a short dict for logs and tests. Intervals use apscheduler's monotonic-friendly interval trigger;
no job depends on the wall clock being right.
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

    pusher = ctx.state.get("pusher")
    if pusher is None:
        pusher = ctx.state["pusher"] = push_mod.Pusher(ctx.cfg.state_dir, push_mod.Settings.from_config(ctx.cfg))
    # finish within the interval, so that runs never pile up behind a slow or dead server
    result = pusher.drain(deadline=time.monotonic() + max(1.0, 0.8 * ctx.cfg.central.push_interval),
                          stop=ctx.state.get("stop"))
    ctx.state["last_push"] = result
    return result


def time_sample(ctx: JobContext) -> dict:
    """A signed time sample from the central server (HTTP Date as fallback), then re-anchored times."""
    from sync.device import central, time_client
    from terminal.log import punchlog

    conn = punchlog.connect(punchlog.db_path(ctx.cfg.state_dir))
    try:
        with central.Client.from_config(ctx.cfg) as client:
            result = time_client.sync_time(client, ctx.cfg.central.server_key, conn)
            sent = time_client.push_punch_times(client, conn)
    except Exception as e:  # offline is normal; the next run tries again
        ctx.state["last_time_sample"] = {"ok": False, "error": str(e)}
        return ctx.state["last_time_sample"]
    finally:
        conn.close()
    ctx.state["last_time_sample"] = {"ok": True, "method": result["method"], "times_sent": sent}
    return ctx.state["last_time_sample"]


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


def photo_retention(ctx: JobContext) -> dict:
    removed = evidence.delete_older_than(ctx.cfg.state_dir, ctx.cfg.photos.keep_days)
    return {"removed": removed}


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
    "time_sample": (time_sample, lambda cfg: 3600.0, True),
    "roster_refresh": (roster_refresh, lambda cfg: cfg.roster.pull_interval, True),
    "photo_retention": (photo_retention, lambda cfg: 3600.0, False),
    "integrity_check": (integrity_check, lambda cfg: 86400.0, False),
    "checkpoint": (checkpoint, lambda cfg: 900.0, False),
}


def schedule_jobs(scheduler, ctx: JobContext) -> list[str]:
    """Register every job that applies to this configuration; returns their names. Time-sample and roster
    jobs also run once right at start, because a fresh boot needs a time anchor as soon as possible."""
    import datetime as dt

    names = []
    for name, (fn, interval, needs_central) in JOBS.items():
        if needs_central and not ctx.cfg.central.url:
            continue
        first = dt.datetime.now() + dt.timedelta(seconds=1 if name in ("time_sample", "roster_refresh", "push")
                                                 else min(interval(ctx.cfg), 60))
        scheduler.add_job(_guarded(name, fn), "interval", args=[ctx], seconds=interval(ctx.cfg), id=name,
                          next_run_time=first, max_instances=1, coalesce=True, misfire_grace_time=None)
        names.append(name)
    return names


def _guarded(name, fn):
    def run(ctx: JobContext):
        try:
            result = fn(ctx)
            log.debug("job %s: %s", name, result)
            return result
        except Exception:
            log.exception("job %s failed", name)
    run.__name__ = run.__qualname__ = name
    return run
