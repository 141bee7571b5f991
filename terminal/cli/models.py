"""`presensi models fetch|verify`: the YuNet and MiniFASNet model files (not on PyPI), from their pinned
upstream URLs, checked against pinned sha256."""

from __future__ import annotations

from pathlib import Path

from terminal.cli.common import CommandError, add_command, add_group, emit, load_config
from terminal.config import ConfigError


def register(sub) -> None:
    group = add_group(sub, "models", "download and verify the model files that are not on PyPI")
    p = add_command(group, "fetch", cmd_fetch,
                    "download YuNet and MiniFASNet from their pinned URLs and verify their sha256")
    p.add_argument("--dir", metavar="DIR", help="where to put them (default: STATE_DIR/models from the config)")
    p.add_argument("--base-url", metavar="URL",
                   help="fetch DIR-relative paths from this mirror instead of the upstream URLs")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per-request timeout (default 60)")
    p = add_command(group, "verify", cmd_verify, "check size and sha256 of the model files in DIR")
    p.add_argument("--dir", metavar="DIR", help="where they are (default: STATE_DIR/models from the config)")


def _models_dir(args) -> Path:
    if args.dir:
        return Path(args.dir)
    try:
        return load_config(args).state_dir / "models"
    except ConfigError as e:
        raise CommandError(f"{e}\n(or pass --dir DIR to choose where the model files go)") from None


def cmd_fetch(args) -> int:
    from terminal.liveness import modelfiles  # loads requests: only when a download is asked for

    dest = _models_dir(args)
    reports = modelfiles.fetch_all(dest, args.base_url, args.timeout)
    failed = [r for r in reports if r["status"] == "failed"]
    lines = [f"{r['model']:<16} {r['status']:<10} {r.get('error') or r['file']}" for r in reports]
    if not failed:
        lines += ["", "Add to the configuration:", modelfiles.config_lines(dest)]
    emit(args, {"dir": str(dest), "files": reports, "ok": not failed,
                "config": None if failed else modelfiles.config_lines(dest)}, "\n".join(lines))
    if failed:
        raise CommandError(f"{len(failed)} model file(s) not installed: " + "; ".join(r["error"] for r in failed))
    return 0


def cmd_verify(args) -> int:
    from terminal.liveness import modelfiles

    dest = _models_dir(args)
    reports = []
    for name, model in modelfiles.MODEL_FILES.items():
        problem = modelfiles.check(dest / model.relpath, model)
        reports.append({"model": name, "file": str(dest / model.relpath), "ok": problem is None,
                        "problem": problem})
    lines = [f"{r['model']:<16} {'ok' if r['ok'] else 'PROBLEM: ' + r['problem']}  {r['file']}" for r in reports]
    emit(args, {"dir": str(dest), "files": reports, "ok": all(r["ok"] for r in reports)}, "\n".join(lines))
    if not all(r["ok"] for r in reports):
        raise CommandError("some model files are missing or wrong; run `presensi models fetch`")
    return 0
