"""sync/device/time_client.py end to end over real HTTP on 127.0.0.1: a small FastAPI app (served by uvicorn, as
the reference server is) mounts answer_time_request the way the reference server does, in honest and
dishonest modes."""

from __future__ import annotations

import base64
import email.utils
import json
import time

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from sync.asgi import Served
from sync.device import central, time_client
from sync.wire import timesample
from terminal.log import chain, punchlog
from terminal.timing import timeline


class TimeServer:
    """POST /api/v1/time answered by answer_time_request; `mode` makes it misbehave."""

    def __init__(self):
        self.key = Ed25519PrivateKey.generate()
        self.mode = "ok"
        self.ports: list[str] = []
        self.first_answer = None
        self.slow_first = 0  # answers delayed on the way back (after t3), like a slow downlink
        self.app = FastAPI()
        self.app.add_api_route("/api/v1/time", self.time, methods=["POST"])
        self.server = None

    def start(self) -> None:
        self.server = Served(self.app, "127.0.0.1", 0)
        self.url = self.server.url

    async def time(self, request: Request):
        t2 = time.time_ns()
        self.ports.append(request.client.port)
        if self.mode == "missing":
            raise HTTPException(404, "no such resource")
        if request.headers.get("Authorization") != "Bearer tok":
            raise HTTPException(401, "bad token")
        try:
            key = Ed25519PrivateKey.generate() if self.mode == "wrong-key" else self.key
            answer = timesample.answer_time_request(key, json.loads(await request.body()), t2,
                                                    error_bound_ns=1_000_000, synced=True)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        if self.mode == "replay":
            self.first_answer = self.first_answer or answer
            answer = self.first_answer
        if self.mode == "tamper":
            answer = {**answer, "t2_ns": answer["t2_ns"] + 3600 * 10**9, "t3_ns": answer["t3_ns"] + 3600 * 10**9}
        if self.slow_first > 0:
            self.slow_first -= 1
            time.sleep(0.25)  # blocks the server's loop, as a slow downlink delays the answer
        return JSONResponse(answer)


@pytest.fixture
def server():
    srv = TimeServer()
    srv.start()
    yield srv
    srv.server.stop()


@pytest.fixture
def log(tmp_path):
    punchlog.init(tmp_path / "state")
    with punchlog.PunchLog(tmp_path / "state") as lg:
        yield lg


def pub(srv: TimeServer) -> str:
    return chain.public_key_b64(srv.key)


def client(url: str, token: str = "tok", timeout: float = 10.0) -> central.Client:
    return central.Client(central.Settings(url=url, device_id="dev-1", token=token, timeout=timeout))


def test_signed_exchange_keeps_the_lowest_delay_on_one_keep_alive_connection(server, log):
    server.slow_first = 3  # the first three answers take 250 ms longer on the way back
    with client(server.url) as c:
        s = time_client.fetch_time_sample(c, pub(server), log.conn, exchanges=6)
    assert len(server.ports) == 6 and len(set(server.ports)) == 1, "all exchanges on one keep-alive connection"
    assert s["source"] == "server-signed" and s["status"] == "accepted"
    assert s["evidence"]["delay_ns"] < 200_000_000, "a 250 ms exchange was kept instead of a fast one"
    assert s["evidence"]["nonce"] and s["evidence"]["signature"]
    assert s["monoraw_ns"] - s["sent_monoraw_ns"] < 200_000_000
    # the signed evidence verifies against the pinned key later, too
    assert chain.verify_b64(server.key.public_key(), s["evidence"]["signature"],
                               timesample.signed_message(s["evidence"]))
    now = timeline.now(log.conn)
    truth = time.time_ns()  # the server's clock is this machine's clock: it is the truth here
    assert now["verified"] and now["basis"] == "server-signed"
    assert timeline.parse_iso(now["earliest"]) - 50_000_000 <= truth <= timeline.parse_iso(now["latest"]) + 50_000_000
    assert now["uncertainty_s"] < 0.1


@pytest.mark.parametrize("mode, message", [
    ("wrong-key", "signature does not match the pinned"),
    ("tamper", "signature does not match the pinned"),
    ("replay", "nonce or device differs"),
])
def test_answers_that_fail_verification_record_nothing(server, log, mode, message):
    server.mode = mode
    with client(server.url) as c, pytest.raises(time_client.TimeSyncError, match=message):
        time_client.sync_time(c, pub(server), log.conn)
    assert log.conn.execute("SELECT count(*) FROM time_samples").fetchone()[0] == 0


def test_missing_time_endpoint_falls_back_to_the_http_date_header(server, log):
    server.mode = "missing"
    with client(server.url) as c:
        result = time_client.sync_time(c, pub(server), log.conn)
    s = result["sample"]
    assert result["method"] == "http-date" and s["source"] == "http-date" and "HTTP 404" in result["signed_error"]
    assert s["uncertainty_ns"] == 500_000_000 and "GMT" in s["evidence"]["date"]
    now = timeline.now(log.conn)
    truth = time.time_ns()
    assert timeline.parse_iso(now["earliest"]) <= truth <= timeline.parse_iso(now["latest"])
    assert now["uncertainty_s"] < 0.7  # ±0.5 s + RTT/2 (tighter if this host's kernel is NTP-synchronised)


def test_refused_token_and_unreachable_server_give_clear_errors(server, log):
    with pytest.raises(time_client.TimeSyncError, match="refused the device token .* check \\[central\\] token"):
        time_client.fetch_time_sample(client(server.url, token="wrong"), pub(server), log.conn)
    with pytest.raises(time_client.TimeSyncError, match="cannot reach the central server"):
        time_client.fetch_time_sample(client("http://127.0.0.1:9", timeout=2), pub(server), log.conn)
    with pytest.raises(time_client.TimeSyncError, match="server_key is not set"):
        time_client.fetch_time_sample(client(server.url), "", log.conn)


NONCE = base64.b64encode(b"n" * 16).decode()


@pytest.mark.parametrize("request_body", [
    None, [], {}, {"nonce": NONCE}, {"nonce": "not base64!", "device_id": "d"},
    {"nonce": base64.b64encode(b"short").decode(), "device_id": "d"},
    {"nonce": NONCE, "device_id": ""}, {"nonce": NONCE, "device_id": "d", "chain_head": {"seq": -1, "hash": "0"}},
    {"nonce": NONCE, "device_id": "d", "chain_head": "abc"},
])
def test_malformed_time_requests_raise_value_error(request_body):
    with pytest.raises(ValueError):
        timesample.answer_time_request(Ed25519PrivateKey.generate(), request_body, time.time_ns(),
                                       error_bound_ns=1_000_000, synced=True)


def test_answer_signs_what_the_terminal_checks():
    key = Ed25519PrivateKey.generate()
    head = {"seq": 7, "hash": "a" * 64}
    t2 = time.time_ns()
    answer = timesample.answer_time_request(key, {"nonce": NONCE, "device_id": "d", "chain_head": head}, t2,
                                            error_bound_ns=1_000_000, synced=True)
    assert answer["t2_ns"] == t2 <= answer["t3_ns"] and answer["chain_head"] == head
    assert answer["error_bound_ns"] > 0 and isinstance(answer["server_clock_synced"], bool)
    assert time_client.check_answer(answer, {"nonce": NONCE, "device_id": "d"}, key.public_key()) == answer


def test_the_date_header_is_the_time_the_answer_was_made_even_while_the_server_is_busy():
    """A terminal without a signed sample takes its time from the Date header (±0.5 s): the header must say
    the second the answer was made, not one the server cached earlier (uvicorn's own is refreshed by its main
    loop about once a second, later on a busy machine). Each answer's Date lies within the request's time."""
    app = FastAPI()

    @app.get("/busy")
    def busy():  # a handler that keeps a worker thread busy, as a loaded server would be
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            pass
        return {}

    served = Served(app, "127.0.0.1", 0)
    try:
        with requests.Session() as http:
            for _ in range(40):
                before = time.time()
                date = http.get(served.url + "/busy", timeout=10).headers["Date"]
                after = time.time()
                stamp = email.utils.parsedate_to_datetime(date).timestamp()
                assert int(before) <= stamp <= after, (date, before, after)
    finally:
        served.stop()
