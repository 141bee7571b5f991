"""Body limits and hostile bodies against the reference central server over real HTTP on 127.0.0.1 (the
kiosk's login and admin API get the same attacks in tests/test_web.py): a declared 1 GiB body is refused
with 413 before any of it is read, a chunked body is stopped at the route's limit, and JSON nested far
deeper than any parser recurses is a 400 on every JSON endpoint, gzip-compressed or not."""

from __future__ import annotations

import gzip
import select
import socket

import pytest
import requests
from conftest import wait_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_attacks import chunked_until_answer, declared_length, error_of, nested, read_response
from synctools import serve_in_thread

from sync import asgi
from sync.server import app as server_app
from sync.wire import signed
from terminal.log import chain

GIB = 2**30
JSON_ENDPOINTS = ["/api/v1/devices/dev-01/punches", "/api/v1/devices/dev-01/heartbeat",
                  "/api/v1/devices/dev-01/faults", "/api/v1/devices/dev-01/punch-times", "/api/v1/time"]


KEY = Ed25519PrivateKey.generate()  # the device key bound at registration: bodies below are signed with it


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    app = server_app.make_app(str(tmp_path_factory.mktemp("central") / "central.db"))
    reg = server_app.add_device(app.store, "dev-01", chain.public_key_b64(KEY))
    with serve_in_thread(app) as url:
        yield url, {"Authorization": f"Bearer {reg['token']}", "Content-Type": "application/json"}
    app.store.close()


def sign(headers: dict, path: str, raw: bytes) -> dict:
    return {**headers, **signed.sign_request(KEY, "POST", path, "dev-01", raw)}


def test_a_declared_gigabyte_is_refused_before_the_body_is_read(central):
    url, auth = central
    # Nothing of the body is sent: the answer can only come from the declared length.
    status, headers, body = declared_length(url, "POST", "/api/v1/devices/dev-01/punches", GIB, auth)
    assert status == 413 and "64 MiB" in error_of(body)
    assert headers["connection"] == "close" and headers["content-type"] == "application/json"
    status, _, body = declared_length(url, "PUT", "/api/v1/devices/dev-01/photos/" + "a" * 64, GIB, auth,
                                      sent_body=b"\xff\xd8" * 1000)
    assert status == 413 and "8 MiB" in error_of(body)
    assert requests.get(url + "/api/v1/openapi.json", timeout=10).status_code == 200  # the server is fine


def test_a_small_oversized_body_is_read_before_the_refusal_so_the_client_always_reads_it(central):
    """A client that sends its body after its headers (requests does) must read the 413, never a reset: the
    server answers once the refused body is in, then closes cleanly. Without the drain it answered after the
    headers and closed while the body arrived, and the kernel's reset could destroy the answer."""
    url, _ = central
    host, port = url.split("//")[1].split(":")
    body = b"csrf=x&password=" + b"x" * 10_000  # over the login form's 4 KiB
    head = (f"POST /login HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body[:5000])
        assert select.select([sock], [], [], 0.5)[0] == [], "answered before the refused body was in"
        sock.sendall(body[5000:])
        status, headers, answer = read_response(sock)
        assert status == 413 and "4 KiB" in error_of(answer) and headers["connection"] == "close"
        assert sock.recv(10) == b""  # a clean close (FIN), not a reset
    # a client that waits for 100 Continue is answered at once, and so never sends the body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        status, _, answer = read_response(sock)
        assert status == 413 and "4 KiB" in error_of(answer)
    # a declared body beyond the drain bound is not waited for (the 1 GiB case above)
    assert asgi.DRAIN_LIMIT < GIB


def test_a_chunked_body_is_stopped_at_the_limit(central):
    url, auth = central
    # signed headers (over another body): the signature is checked on the body read within the limit
    headers = sign(auth, "/api/v1/devices/dev-01/heartbeat", b"")
    status, _, body, sent = chunked_until_answer(url, "POST", "/api/v1/devices/dev-01/heartbeat", headers,
                                                 chunk=b" " * 4096)
    assert status == 413 and "256 KiB" in error_of(body)
    assert server_app.SMALL_LIMIT < sent < server_app.SMALL_LIMIT + 4 * 2**20, sent  # stopped near the limit


def test_limits_are_declared_in_the_openapi_document(central):
    url, _ = central
    doc = requests.get(url + "/api/v1/openapi.json", timeout=10).json()
    punches = doc["paths"]["/api/v1/devices/{device_id}/punches"]["post"]
    assert punches[asgi.LIMIT_KEY] == server_app.PUNCHES_LIMIT and "413" in punches["responses"]
    assert doc["openapi"] == "3.0.3" and not [op for item in doc["paths"].values() for op in item.values()
                                              if "422" in op["responses"]]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_deeply_nested_json_is_a_400(central, path, encoding):
    url, auth = central
    raw = nested(100_000)
    headers = dict(auth)
    if encoding == "gzip":
        raw, headers["Content-Encoding"] = gzip.compress(raw), "gzip"
    r = requests.post(url + path, data=raw, headers=headers, timeout=30)
    assert r.status_code == 401  # without the device key's signature the body is not even parsed
    r = requests.post(url + path, data=raw, headers=sign(headers, path, raw), timeout=30)
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"], (r.status_code, r.text[:200])
    shallow = b"[" * 500 + b"]" * 500  # parses, but is no batch: refused by the model, still 400
    r = requests.post(url + path, data=shallow, headers=sign(auth, path, shallow), timeout=30)
    assert r.status_code == 400 and r.json()["error"]


def test_a_streaming_answer_outlives_the_body_timeout():
    """The body timeout is for a client stalling mid-body; once a GET's (empty) body is in, a stream such as
    the kiosk's /events must go on for as long as it runs (it was cut with 408 after 30 s)."""
    import asyncio

    from fastapi.responses import StreamingResponse

    app = asgi.make_app(title="stream", version="1")

    @app.get("/stream")
    async def stream():
        async def ticks():
            for i in range(8):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(0.25)
        return StreamingResponse(ticks(), media_type="text/event-stream")

    for m in app.user_middleware:
        if m.cls is asgi.BodyLimit:
            m.kwargs["body_timeout"] = 0.5  # the stream (2 s) runs four body timeouts long
    app.middleware_stack = None
    with serve_in_thread(app) as url:
        r = requests.get(url + "/stream", stream=True, timeout=10)
        body = b"".join(r.iter_content(None))
    assert r.status_code == 200 and body.count(b"data: ") == 8, body


def test_a_client_that_hangs_up_mid_body_is_no_server_error(central, caplog):
    """A terminal whose own timeout ran out mid-upload (a slow line, an overloaded Pi) is a normal event:
    logged as such, not as an unhandled error with a traceback that would send IT staff looking for a bug."""
    url, auth = central
    path = "/api/v1/time"
    raw = b'{"t0_ms": 1}' + b" " * 200
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in sign(auth, path, raw).items())
    with caplog.at_level("INFO"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(raw)}\r\n\r\n".encode()
                      + raw[:20])
        wait_for(lambda: any("went away" in r.getMessage() for r in caplog.records), 30,
                 "the server noticing the hang-up")
        assert requests.get(url + "/api/v1/openapi.json", timeout=10).status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert errors == [], errors
