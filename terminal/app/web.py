"""The daemon's local web server on `[web] listen`: the kiosk screen and admin pages (terminal/web/) and,
when `[web] token` is set, the pull API for central servers (sync/device/pullapi.py) under /api/v1/, on one
FastAPI app with the shared plumbing of sync/asgi.py, served by uvicorn in a background thread."""

from __future__ import annotations

import logging

log = logging.getLogger("presensi.web")


def build_app(daemon):
    """The app: kiosk and admin routes (their schema at /openapi.json), the pull API, the plumbing."""
    from sync import asgi
    from sync.device import pullapi
    from terminal import __version__
    from terminal.web import make_app

    web = make_app(daemon)
    app = asgi.make_app(title="presensi-edge terminal: kiosk and admin pages", version=__version__,
                        render=web.error_page,
                        description="The kiosk screen, its live streams and the admin pages of one terminal.")
    app.include_router(web.router)
    api = pullapi.PullAPI(daemon.cfg, status=daemon.status_report) if daemon.cfg.web.token else None
    return pullapi.include(app, api)


def start(daemon) -> int | None:
    """Serve in a background thread; returns the port actually bound (useful with port 0)."""
    from sync.asgi import Served
    from sync.device.pullapi import parse_listen

    host, port = parse_listen(daemon.cfg.web.listen)
    try:
        served = Served(build_app(daemon), host, port, name="web", idle_timeout=60)
    except OSError as e:
        log.error("[web] listen = %r: cannot listen there (%s); the kiosk and pull API are off",
                  daemon.cfg.web.listen, e.strerror or e)
        return None
    daemon.services["web"] = served  # shutdown() calls served.stop()
    log.info("web listening on http://%s:%s/", host, served.port)
    return served.port
