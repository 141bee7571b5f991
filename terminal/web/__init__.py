"""The terminal's local web pages: the kiosk screen at `/` and the admin pages under `/admin/`.

`make_app(daemon)` returns the WebApp whose router the daemon's web server (terminal/app/web.py) serves. Templates
and static files are package data (templates/, static/): no external asset, so the pages work offline.
"""

from __future__ import annotations


def make_app(daemon):
    from terminal.web.app import WebApp

    return WebApp(daemon)


def ensure_admin_password(state_dir) -> str | None:
    """First run (`presensi init`): a one-time admin password, returned only when just created."""
    from terminal.web.auth import ensure_password

    return ensure_password(state_dir)


def status_part(cfg) -> dict:
    """`presensi status` part "web": whether the admin pages can be logged into."""
    from terminal.web.auth import admin_path

    path = admin_path(cfg.state_dir)
    if not path.exists():
        return {"ok": True, "admin_password": False, "listen": cfg.web.listen,  # punching works without it
                "summary": "no admin password: run `presensi admin set-password` (or `presensi init`)"}
    return {"ok": True, "admin_password": True, "listen": cfg.web.listen, "summary": f"admin pages at http://{cfg.web.listen}/admin/"}
