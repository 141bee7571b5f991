"""`presensi roster show|pull|import`: the roster the terminal uses, fetched and verified from the server."""

from __future__ import annotations

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.punch import roster


def register(sub) -> None:
    grp = add_group(sub, "roster", "the roster of employees, templates, schedule and holidays")
    p = add_command(grp, "show", cmd_show, "show the installed roster (no biometric data)")
    p.add_argument("--employees", action="store_true", help="list every employee (id, name, uid, pin_allowed)")
    add_command(grp, "pull", cmd_pull, "fetch a newer roster from the central server and install it if valid")
    p = add_command(grp, "import", cmd_import, "install a signed roster bundle from a file (e.g. a USB stick)")
    p.add_argument("file", metavar="FILE", help="bundle file (.roster.gz) exported by the central server")


def cmd_show(args) -> int:
    cfg = load_config(args)
    try:
        with roster.Roster.open(cfg.state_dir) as r:
            info = r.info()
            info["schedule"] = r.schedule()
            info["holidays"] = r.holidays()
            if args.employees:
                info["people"] = r.people()
    except roster.RosterError as e:
        raise CommandError(str(e)) from None
    if info["version"] == 0:
        text = "no roster installed yet; run `presensi roster pull` (or `presensi roster import FILE`)"
    else:
        text = (f"roster version {info['version']} ({info['source']})\n"
                f"employees {info['employees']}  face templates {info['face_templates']}  "
                f"face photos {info['face_photos']}  fingerprint templates {info['finger_templates']}\n"
                f"holidays {len(info['holidays'])}  local changes {info['local_changes']}")
        for p in info.get("people", []):
            text += f"\n{p['uid']:>6}  {p['id']:<22} {p['name']}{'  (PIN)' if p['pin_allowed'] else ''}"
    emit(args, info, text)
    return 0


def _install(args, fn) -> int:
    # imported here, not at the top: they load requests and numpy, which every other command can skip
    from sync.device import roster_client
    from sync.wire.rosterbundle import BundleRejected
    from terminal.secretbox import SecretBoxError

    cfg = load_config(args)
    try:
        result = fn(cfg)
    except BundleRejected as e:
        raise CommandError(f"roster bundle REFUSED ({e.code}): {e.reason}; the previous roster "
                           f"(version {roster.current_version(cfg.state_dir)}) stays in use") from None
    except (roster_client.RosterPullError, roster.RosterError, SecretBoxError) as e:
        raise CommandError(str(e)) from None
    result.pop("roster", None)
    # every time, not only on a new version: a pull after a failed settling settles then
    result["local_templates_settled"] = _settle(cfg, result["version"])
    if result["status"] == "current":
        text = f"roster is up to date (version {result['version']})"
    else:
        text = (f"roster version {result['version']} installed (was {result['previous_version']}): "
                f"{result['employees']} employees, {result['face_templates']} face templates, "
                f"{result['face_photos']} photos, {result['finger_templates']} fingerprint templates")
    emit(args, result, text)
    return 0


def _settle(cfg, version: int) -> dict:
    """Local enrolments follow the new roster; the sensor's slots follow with `presensi finger sync`."""
    import sqlite3

    from terminal.app import roaming
    from terminal.face.store import TemplateStoreError
    from terminal.secretbox import SecretBoxError

    try:
        return roaming.settle_local(cfg.state_dir)
    except (TemplateStoreError, SecretBoxError, roster.RosterError, sqlite3.Error) as e:
        # fail loudly: a removed employee's local templates would still let them punch here
        raise CommandError(f"roster version {version} is in use, but the templates enrolled here could not be "
                           f"brought in line with it ({e}); fix that and run `presensi roster pull` again "
                           "(the daemon retries on its next roster change)") from None


def cmd_pull(args) -> int:
    from sync.device import roster_client

    return _install(args, roster_client.pull_roster)


def cmd_import(args) -> int:
    from sync.device import roster_client

    return _install(args, lambda cfg: roster_client.import_file(cfg, args.file))
