"""`presensi time status` (the corrected time now, drift, samples, uncertainty, alarms) and `presensi time
sync` (take a signed time sample from the central server now and send re-anchored punch times)."""

from __future__ import annotations

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.log import punchlog
from terminal.timing import timeline


def register(sub) -> None:
    grp = add_group(sub, "time", "the corrected time: estimate, drift, samples and uncertainty")
    add_command(grp, "status", cmd_time_status, "the time estimate now, drift in ppm, samples and uncertainty")
    p = add_command(grp, "sync", cmd_time_sync,
                    "take a signed time sample from the central server now (HTTP Date as fallback) and send "
                    "re-anchored punch times; never sets the system clock")
    p.add_argument("--exchanges", type=int, default=6, choices=range(4, 9), metavar="N",
                   help="request/answer exchanges; the lowest-delay one is kept (4-8, default 6)")
    p.add_argument("--no-push", action="store_true", help="do not send re-anchored punch times")
    add_command(grp, "sources", cmd_time_sources,
                "read the offline time sources of [time] once (kernel NTP status, GPS through gpsd, the RTC) and "
                "record their samples; calibrates (and may set) the RTC after a trusted sample")


def cmd_time_status(args) -> int:
    from terminal.timing import rtc

    cfg = load_config(args)
    with punchlog.PunchLog(cfg.state_dir, readonly=True) as log:  # reads only: works on a full disk
        report = timeline.status(log.conn)
    if cfg.time.rtc != "off":
        cal = rtc.load(cfg.state_dir)
        report["rtc"] = {"model": cfg.time.rtc, "drift_ppm": cfg.time.rtc_drift_ppm,
                         "calibration": cal.as_dict() if cal else None}
    emit(args, report, _format(report))
    return 0


def cmd_time_sources(args) -> int:
    from terminal.app import timesources

    cfg = load_config(args)
    with punchlog.PunchLog(cfg.state_dir) as log:
        results = timesources.read_sources(cfg, log.conn, force=True)
        now = timeline.now(log.conn)
    report = {"ok": bool(results) and all(r.get("ok") for r in results.values()), "sources": results, "now": now}
    lines = [f"{name:<11} {_source_line(r)}" for name, r in results.items()] or [
        "no offline time source is configured: see [time] in the configuration"]
    unc = "unbounded" if now["uncertainty_s"] is None else f"±{now['uncertainty_s']:.3f} s"
    lines.append(f"utc now     {now['utc']}  {unc}  basis {now['basis']}")
    emit(args, report, "\n".join(lines))
    return 0 if report["ok"] else 1


def _source_line(r: dict) -> str:
    if not r.get("ok"):
        return f"FAILED  {r.get('error')}"
    if "skipped" in r:
        return f"skipped {r['skipped']}"
    if r.get("action") == "calibrated":
        how = "set and calibrated" if r["set"] else f"calibrated, not set ({r['set_error'] or 'within 1 s'})"
        return f"ok      RTC {how}; offset {r['offset_s']:+.3f} s"
    s = r["sample"]
    return f"ok      sample #{s['id']} {s['utc']} ±{s['uncertainty_ns'] / 1e6:.1f} ms {s['status']}"


def _format(r: dict) -> str:
    now = r["now"]
    unc = "unbounded" if now["uncertainty_s"] is None else f"±{now['uncertainty_s']:.3f} s"
    bounds = f"[{now['earliest'] or 'unknown'} … {now['latest'] or 'unknown'}]"
    lines = [f"state      {now['message']}",
             f"utc now    {now['utc']}  {bounds}  {unc}  basis {now['basis']}",
             f"wall clock {now['wall_clock']}" + ("" if now["wall_clock_error_s"] is None
                                                   else f"  (off by {now['wall_clock_error_s']:+.3f} s)")]
    if r["drift"]:
        d = r["drift"]
        lines.append(f"drift      {d['ppm']:+.3f} ppm ({'measured' if d['measured'] else 'assumed'}; "
                     f"bounds {d['bound_ppm'][0]:+.1f} … {d['bound_ppm'][1]:+.1f} ppm)")
    else:
        lines.append("drift      unknown (no sample this boot)")
    lines.append(f"samples    {r['samples_this_boot']} this boot, {r['samples_total']} in total; "
                 f"kernel {'synchronised' if r['kernel']['synced'] else 'not synchronised'}")
    for s in r["recent_samples"]:
        rtt = "" if s["round_trip_ms"] is None else f" rtt {s['round_trip_ms']:.1f} ms"
        lines.append(f"  #{s['id']:<5} {s['source']:<14} {s['utc']} ±{s['uncertainty_ns'] / 1e6:.1f} ms{rtt} "
                     f"{s['status']}")
    if r["contradicting_samples"]:
        lines.append(f"ALARM      {r['contradicting_samples']} time sample(s) contradict the others; they are "
                     "kept as evidence and not used: check the clocks of the servers that sent them")
    if r.get("time_claims"):
        lines.append(f"claims     {r['time_claims']} time claim(s) from ZK SetTime / ADMS DateTime are kept as "
                     "evidence and not used (unauthenticated on the LAN; see [zk] trust_set_time)")
    if r["server_clock_unsynced_samples"]:
        lines.append(f"note       {r['server_clock_unsynced_samples']} sample(s) this boot came from a central server "
                     "whose own clock was not NTP-synchronised (error bound assumed 100 ms): configure chrony "
                     "with rtcsync on the server")
    if "rtc" in r:
        cal = r["rtc"]["calibration"]
        lines.append("rtc        " + ("never calibrated: no samples until a trusted time (server, NTP, GPS) is seen"
                                      if cal is None else
                                      f"calibrated {cal['utc']} from {cal['source']}; "
                                      + ("set by the daemon" if cal["set_rtc"] else
                                         f"not set ({cal['set_error'] or 'it was within 1 s'})")
                                      + f"; drift rating {r['rtc']['drift_ppm']:g} ppm"))
    if r["unanchored_punches"]:
        lines.append(f"review     {r['unanchored_punches']} punch(es) from boots without any time sample are "
                     "bounded by order only")
    return "\n".join(lines)


def cmd_time_sync(args) -> int:
    from sync.device import central, time_client
    from terminal.punch.service import recomputer

    cfg = load_config(args)
    c = cfg.central
    if not c.url:
        raise CommandError("[central] url is not set: the terminal has no central server to take time from")
    try:
        client = central.Client.from_config(cfg)
    except central.ConfigError as e:
        raise CommandError(str(e)) from None
    with punchlog.PunchLog(cfg.state_dir) as log, client:
        try:
            result = time_client.sync_time(client, c.server_key, log.conn, exchanges=args.exchanges)
            # kinds and lateness follow the re-anchored times before they go to the server
            result["kinds_changed"] = recomputer(cfg)(log.conn)
            pushed = 0 if args.no_push else time_client.push_punch_times(client, log.conn)
        except time_client.TimeSyncError as e:
            raise CommandError(str(e)) from None
        now = timeline.now(log.conn)
    sample = result["sample"]
    result.update(punch_times_sent=pushed, now=now)
    emit(args, result, f"sample #{sample['id']} ({result['method']}, {sample['status']}): utc now {now['utc']} "
                       f"±{now['uncertainty_s']:.3f} s; wall clock off by {now['wall_clock_error_s']:+.3f} s; "
                       f"{pushed} re-anchored punch time(s) sent")
    return 0 if sample["status"] == "accepted" else 1
