"""Headless Chromium driven over the DevTools protocol (websocket-client), for the kiosk and admin tests.

Debian's `chromium` package is the browser; `Browser.start()` returns None when it is not installed, so tests
can skip with a clear reason. Every wait is bounded; the process is killed on close.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import requests

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars", "--remote-debugging-port=0",
         "--window-size=800,480", "--lang=id-ID")


def chromium_path() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(Exception):
    pass


class Browser:
    def __init__(self, proc: subprocess.Popen, profile: str, ws):
        self.proc, self.profile, self.ws = proc, profile, ws
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    @classmethod
    def start(cls, timeout: float = 30.0) -> Browser | None:
        import websocket

        exe = chromium_path()
        if exe is None:
            return None
        profile = tempfile.mkdtemp(prefix="presensi-chromium-")
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise BrowserError(f"chromium exited with {proc.returncode} at start")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages = []
        while time.monotonic() < deadline and not pages:
            pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                     if t.get("type") == "page"]
            time.sleep(0.05)
        if not pages:
            proc.kill()
            raise BrowserError("chromium opened no page target")
        ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        b = cls(proc, profile, ws)
        b.call("Page.enable")
        b.call("Runtime.enable")
        b.call("Emulation.setDeviceMetricsOverride", width=800, height=480, deviceScaleFactor=1, mobile=False)
        return b

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.kill()
            self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- protocol ---------------------------------------------------------------------------------------

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise BrowserError(f"{method}: no answer within {timeout} s")

    def navigate(self, url: str, timeout: float = 20.0) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout)

    def js(self, expression: str, timeout: float = 20.0):
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.02):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.js(expression, timeout=max(1.0, deadline - time.monotonic()))
            except BrowserError:
                value = None  # e.g. during a navigation
            if value:
                return value
            time.sleep(interval)
        raise BrowserError(f"timed out after {timeout} s waiting for: {expression}")

    def submit(self, form_selector: str, values: dict[str, str], checks: tuple[str, ...] = ()) -> None:
        """Fill a form's fields by name and submit it the way a click would (the browser posts it)."""
        self.js(f"(() => {{ const f = document.querySelector({json.dumps(form_selector)});"
                f"  for (const [k, v] of Object.entries({json.dumps(values)})) f.elements[k].value = v;"
                f"  for (const k of {json.dumps(list(checks))}) f.elements[k].checked = true;"
                f"  window.__submitted = true; f.requestSubmit(); }})()")
        self.wait_for("!window.__submitted && document.readyState === 'complete'")

    def set_file(self, selector: str, path: str) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[path], nodeId=node)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
