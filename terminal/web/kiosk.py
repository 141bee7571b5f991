"""The kiosk's live data: Server-Sent Events from the daemon's event bus, the camera preview (MJPEG with the
face box from the pipeline's tracks), camera snapshots, and the state a freshly loaded page starts from.

Every stream keeps a thread of the server's pool waiting for its next event or frame for as long as it
runs, so streams are counted (`StreamSlots`) and time-limited; the page reconnects by itself (EventSource
does; the preview's script reloads the image).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import cv2
from fastapi import HTTPException
from starlette.responses import StreamingResponse

from terminal.web.pages import stream

log = logging.getLogger("presensi.web")

KEEPALIVE_SECONDS = 5.0  # a comment line this often finds a vanished client (only a write can)
STREAM_MAX_SECONDS = 600.0  # then the browser reconnects; bounds a vanished client's thread
PREVIEW_FPS = 6.0  # enough for a preview, cheap on a Pi
PREVIEW_WIDTH = 480
PREVIEW_QUALITY = 70
BOX_RECENT_SECONDS = 0.6
STALL_SECONDS = 5.0  # a preview without new frames for this long ends (no thread held for a dead camera)


class StreamSlots:
    """At most `limit` concurrent streams, so pages and the pull API always keep free server threads."""

    def __init__(self, limit: int):
        self._sem = threading.BoundedSemaphore(limit)

    def take(self) -> None:
        if not self._sem.acquire(blocking=False):
            raise HTTPException(503, "too many live streams open; close another kiosk or admin tab",
                            {"Retry-After": "5"})

    def give(self) -> None:
        self._sem.release()


def state(daemon) -> dict:
    """What the page shows before the first event: indicators, corrected time, office timezone."""
    try:
        indicators = daemon.indicators()
    except Exception as e:  # the page must still come up; it shows the time as unverified
        log.warning("kiosk indicators unavailable: %s", e)
        indicators = {"time_verified": False, "utc": None}
    codes = daemon.punches.work_codes if getattr(daemon, "punches", None) is not None else None
    return {"indicators": indicators, "timezone": daemon.cfg.device.timezone, "device": daemon.cfg.device.id,
            "name": daemon.cfg.device.name,
            "work_codes": [c.as_dict() for c in codes.codes.values()] if codes and codes.enabled else [],
            "armed": daemon.punches.chooser.peek() if codes else None}


def _sse(event_id: int | None, type_: str, data: dict) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {type_}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _not_stopping(daemon) -> None:
    if daemon.stop_event.is_set():
        raise HTTPException(503, "the terminal is stopping", {"Retry-After": "5"})


def events_stream(daemon, slots: StreamSlots) -> StreamingResponse:
    _not_stopping(daemon)
    slots.take()
    q = daemon.events.subscribe()

    def release():
        daemon.events.unsubscribe(q)
        slots.give()

    def chunks():
        yield b"retry: 1500\n\n"
        yield _sse(None, "status", state(daemon)["indicators"])
        prompt = daemon.events.last("prompt")
        if prompt is not None:
            yield _sse(prompt.id, "prompt", prompt.data)
        started = last_sent = time.monotonic()
        while time.monotonic() - started < STREAM_MAX_SECONDS and not daemon.stop_event.is_set():
            try:
                event = q.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:  # the daemon's health loop publishes
                    last_sent = time.monotonic()                       # "status" every [health] interval
                    yield b": keepalive\n\n"
                continue
            last_sent = time.monotonic()
            yield _sse(event.id, event.type, event.data)

    return stream(chunks(), release, "text/event-stream; charset=utf-8",
                  headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def face_worker(daemon):
    worker = daemon.workers.get("face") if hasattr(daemon, "workers") else None
    if worker is None or getattr(worker, "camera", None) is None:
        return None
    return worker


def draw_faces(image, worker, frame_t: float):
    """A box around every face the pipeline is tracking right now (green once identified)."""
    pipeline = getattr(worker, "pipeline", None)
    for track in list(getattr(pipeline, "tracks", None) or []):
        if frame_t - getattr(track, "last_seen", -1e9) > BOX_RECENT_SECONDS:
            continue
        x, y, w, h = (int(v) for v in track.box)
        colour = (60, 200, 60) if getattr(track, "identity", None) is not None else (0, 200, 255)
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, max(2, image.shape[1] // 160))
    return image


def encode_preview(image, worker=None, frame_t: float = 0.0) -> bytes:
    image = image.copy()
    if worker is not None:
        draw_faces(image, worker, frame_t)
    if image.shape[1] > PREVIEW_WIDTH:
        scale = PREVIEW_WIDTH / image.shape[1]
        image = cv2.resize(image, (PREVIEW_WIDTH, int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding of the preview failed")
    return buf.tobytes()


def preview_stream(daemon, slots: StreamSlots) -> StreamingResponse:
    worker = face_worker(daemon)
    if worker is None:
        raise HTTPException(503, "the camera is not running")
    _not_stopping(daemon)
    slots.take()

    def chunks():
        seq, started, next_due, last_frame = 0, time.monotonic(), 0.0, time.monotonic()
        yield b"--frame\r\n"
        while time.monotonic() - started < STREAM_MAX_SECONDS and not daemon.stop_event.is_set():
            frame = worker.camera.latest(after_seq=seq, timeout=1.0)
            if frame is None:
                if time.monotonic() - last_frame > STALL_SECONDS:  # the page reconnects once the camera is back
                    return
                continue
            seq, last_frame = frame.seq, time.monotonic()
            if last_frame < next_due:
                continue
            next_due = last_frame + 1.0 / PREVIEW_FPS
            jpeg = encode_preview(frame.image, worker, frame.t)
            # each part ends with the next boundary: browsers show a part once they see its end
            yield (b"Content-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
                   + b"\r\n\r\n" + jpeg + b"\r\n--frame\r\n")

    return stream(chunks(), slots.give, "multipart/x-mixed-replace; boundary=frame",
                  headers={"Cache-Control": "no-store"})


def snapshot(daemon, timeout: float = 2.0, boxes: bool = False) -> bytes:
    """The newest camera frame as JPEG (full resolution; the evidence for a fault report)."""
    worker = face_worker(daemon)
    if worker is None:
        raise HTTPException(503, "the camera is not running; upload a photo instead")
    frame = worker.camera.latest(after_seq=0, timeout=timeout)
    if frame is None:
        raise HTTPException(503, "the camera gave no picture; upload a photo instead")
    image = frame.image.copy()
    if boxes:
        draw_faces(image, worker, frame.t)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise HTTPException(500, "JPEG encoding of the snapshot failed")
    return buf.tobytes()
