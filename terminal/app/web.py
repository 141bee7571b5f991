"""The daemon's local web server on `[web] listen`: the kiosk screen and admin pages (terminal/web/) and,
when `[web] token` is set, the pull API for central servers (sync/device/pullapi.py) under /api/v1/."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("presensi.web")


def build_app(daemon):
    from sync.device import pullapi
    from terminal.web import make_app

    api = pullapi.PullAPI(daemon.cfg, status=daemon.status_report) if daemon.cfg.web.token else None
    return pullapi.mount(api, make_app(daemon))


def start(daemon) -> int | None:
    """Serve in a background thread; returns the port actually bound (useful with port 0)."""
    import waitress.server

    from sync.device.pullapi import parse_listen

    host, port = parse_listen(daemon.cfg.web.listen)
    try:
        server = waitress.server.create_server(build_app(daemon), host=host, port=port, threads=8,
                                               channel_timeout=60, ident="presensi")
    except OSError as e:
        log.error("[web] listen = %r: cannot listen there (%s); the kiosk and pull API are off",
                  daemon.cfg.web.listen, e.strerror or e)
        return None
    threading.Thread(target=server.run, name="web", daemon=True).start()
    daemon.services["web"] = server  # shutdown() calls server.close()
    log.info("web listening on http://%s:%s/", host, server.effective_port)
    return server.effective_port
