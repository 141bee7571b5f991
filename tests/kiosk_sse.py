"""The kiosk as a test sees it: the page's starting state (/kiosk/state) and every Server-Sent Event the
daemon pushes to it (/events), read in a thread that reconnects like the browser's EventSource."""

from __future__ import annotations

import http.client
import json
import threading


class Kiosk:
    """What the kiosk page receives: its starting state, and every Server-Sent Event, read in a thread."""

    def __init__(self, port: int):
        self.port = port
        self.events: list[tuple[str, dict]] = []
        self._closed = threading.Event()
        self._conn = None
        self._connect()
        threading.Thread(target=self._read, daemon=True).start()

    def _connect(self):
        self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self._conn.request("GET", "/events")
        resp = self._conn.getresponse()
        assert resp.status == 200
        self._resp = resp

    def _read(self) -> None:
        """Every event, reconnecting when the stream ends (as EventSource does)."""
        while not self._closed.is_set():
            buf = b""
            try:
                while chunk := self._resp.read1(65536):
                    buf += chunk
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        fields = dict(ln.split(": ", 1) for ln in block.decode().splitlines() if ": " in ln)
                        if "event" in fields:
                            self.events.append((fields["event"], json.loads(fields["data"])))
            except (OSError, AttributeError, http.client.HTTPException):
                pass
            if not self._closed.is_set():
                try:
                    self._connect()
                except (OSError, AssertionError, http.client.HTTPException):
                    self._closed.wait(0.5)

    def state(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/kiosk/state")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def decisions(self) -> list[dict]:
        return [data for kind, data in list(self.events) if kind == "decision"]

    def close(self) -> None:
        self._closed.set()
        self._conn.close()
