"""`presensi finger info|scan|enroll|sync|emulator`: talk to the fingerprint sensor.

Thin wrappers over drivers/fingerprint (the sensor its registry picks by [fingerprint] model, the emulator)
and terminal/finger/slots.py. Port, baud, password and address come from [fingerprint]; --port overrides
the port, and with --port the commands work without a configuration file (scan then cannot name the
employee).
"""

from __future__ import annotations

import sys
import time

from terminal import config as config_mod
from terminal.cli.common import CommandError, add_command, add_group, emit, load_config

# What the employee reads during enrolment (Bahasa Indonesia).
ENROL_PROMPTS = {"place": "Letakkan jari di sensor", "lift": "Angkat jari",
                 "place_again": "Letakkan jari yang sama sekali lagi", "done": "Sidik jari tersimpan"}


def register(sub) -> None:
    group = add_group(sub, "finger", "talk to the fingerprint sensor (info, scan, enroll, sync, emulator)")
    p = add_command(group, "info", cmd_info, "capacity, stored templates, security level, packet size, baud")
    _port_options(p)
    p = add_command(group, "scan", cmd_scan, "wait for a finger and search it on the sensor")
    _port_options(p)
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for a finger (default 15)")
    p = add_command(group, "enroll", cmd_enrol, "enrol a finger for an employee (two reads)")
    _port_options(p)
    p.add_argument("--employee", required=True, metavar="ID", help="the employee's id (NIP)")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds to wait at each step (default 20)")
    p = add_command(group, "sync", cmd_sync, "load the roster's fingerprint templates into the sensor slots")
    _port_options(p)
    p = add_command(group, "emulator", cmd_emulator, "run an emulated sensor on a pty (prints its device path)")
    from drivers.fingerprint.emulator.console import add_arguments

    add_arguments(p)


def _port_options(p) -> None:
    p.add_argument("--port", metavar="PORT", help="serial port (default: [fingerprint] port)")
    p.add_argument("--baud", type=int, help="baud rate (default: [fingerprint] baud)")


def _settings(args, need_state: bool = False) -> tuple[config_mod.Fingerprint, config_mod.Config | None]:
    try:
        cfg = load_config(args)
    except config_mod.ConfigError:
        if need_state or not args.port or getattr(args, "config", None):
            raise
        return config_mod.Fingerprint(), None
    return cfg.fingerprint, cfg


def _open_sensor(args, fp: config_mod.Fingerprint):
    from drivers.fingerprint.base import SensorError
    from drivers.fingerprint.registry import from_config

    try:
        sensor = from_config(fp, port=args.port or fp.port, baud=args.baud or fp.baud)
    except SensorError as e:  # an unknown [fingerprint] model
        raise CommandError(str(e)) from None
    try:
        sensor.open()
    except SensorError as e:
        sensor.close()
        raise CommandError(str(e)) from None
    return sensor


def cmd_info(args) -> int:
    from drivers.fingerprint.base import SensorError

    fp, _ = _settings(args)
    sensor = _open_sensor(args, fp)
    try:
        info = sensor.info()
    except SensorError as e:
        raise CommandError(str(e)) from None
    finally:
        sensor.close()
    emit(args, info, "\n".join(f"{k:<15}{v}" for k, v in info.items()))
    return 0


def cmd_scan(args) -> int:
    from drivers.fingerprint.base import SensorError

    fp, cfg = _settings(args)
    sensor = _open_sensor(args, fp)
    print("Letakkan jari di sensor", file=sys.stderr, flush=True)
    try:
        capture, end = None, time.monotonic() + args.timeout
        while capture is None and time.monotonic() < end:
            capture = sensor.capture()
            if capture is None:
                time.sleep(0.05)
    except SensorError as e:
        raise CommandError(str(e)) from None
    finally:
        sensor.close()
    if capture is None:
        raise CommandError(f"no finger on the sensor within {args.timeout:g} s; place a finger and run again")
    employee = None
    if cfg is not None and capture.slot is not None:
        from terminal.finger.slots import SlotMap

        with SlotMap(cfg.state_dir) as slots:
            employee = slots.employee_for(capture.slot)
    result = {"slot": capture.slot, "score": capture.score if capture.slot is not None else None,
              "employee": employee}
    text = ("no match" if capture.slot is None else
            f"slot {capture.slot}  score {capture.score}  employee {employee or '(not in the slot map)'}")
    emit(args, result, text)
    return 0


def cmd_enrol(args) -> int:
    import base64

    from drivers.fingerprint.base import SensorError
    from terminal.finger.slots import SlotMap, enrol_employee
    from terminal.log import punchlog
    from terminal.punch import enrolments

    fp, cfg = _settings(args, need_state=True)
    sensor = _open_sensor(args, fp)
    try:
        with SlotMap(cfg.state_dir) as slots:
            result = enrol_employee(sensor, slots, args.employee, timeout=args.timeout,
                                     prompt=lambda step: print(ENROL_PROMPTS[step], file=sys.stderr, flush=True))
    except SensorError as e:
        raise CommandError(str(e)) from None
    finally:
        sensor.close()
    # for the central server, and from there every terminal (sent by `presensi sync now`); a state directory
    # without `presensi init` has no punch database and no device key to send it with
    if punchlog.db_path(cfg.state_dir).exists():
        enrolments.record_in(cfg.state_dir, args.employee, "finger", [base64.b64decode(result["template"])])
    emit(args, result, f"employee {result['employee']} enrolled in slot {result['slot']}")
    return 0


def cmd_sync(args) -> int:
    from drivers.fingerprint.base import SensorError
    from terminal.finger.slots import SlotMap, report_sync_fault, sync_slots
    from terminal.log.punchlog import PunchLog
    from terminal.punch.roster import Roster

    fp, cfg = _settings(args, need_state=True)
    with Roster.open(cfg.state_dir) as roster:
        people = [(e["id"], e.get("finger_templates") or []) for e in roster.employees()]
    sensor = _open_sensor(args, fp)
    try:
        with SlotMap(cfg.state_dir) as slots:
            report = sync_slots(sensor, slots, people)
    except SensorError as e:
        raise CommandError(f"{e}; the slots stored so far are kept, run sync again") from None
    finally:
        sensor.close()
    with PunchLog(cfg.state_dir) as log:
        report_sync_fault(log.conn, report)
    data = report.as_dict()
    emit(args, data, f"added {data['added']}  removed {data['removed']}  capacity {data['capacity']}"
         + (f"\nrepaired: {data['repaired']}" if data["repaired"] else "")
         + (f"\nFAULT: {data['fault']}" if data["fault"] else ""))
    return 2 if report.fault else 0


def cmd_emulator(args) -> int:
    from drivers.fingerprint.emulator.console import make_emulator, serve

    return serve(make_emulator(args))
