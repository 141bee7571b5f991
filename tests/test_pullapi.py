"""The terminal's pull API over real HTTP (uvicorn on 127.0.0.1): auth, paging, checkpoint, faults,
rate limit, malformed input, and schemathesis against the OpenAPI document."""

from __future__ import annotations

import threading

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from sync.device import pullapi
from terminal import config
from terminal.app import status as app_status
from terminal.log import chain, punchlog
from terminal.ops import faults

TOKEN = "pull-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N_PUNCHES = 37


def _make_state(tmp_path_factory, n=N_PUNCHES):
    state = tmp_path_factory.mktemp("pull") / "state"
    punchlog.init(state)
    with punchlog.PunchLog(state, checkpoint_every=10) as plog:
        for i in range(n):
            plog.append(f"1980{i % 5:04d}", ["face", "finger", "pin"][i % 3], kind="masuk",
                        details={"score": i})
    with punchlog.PunchLog(state) as plog:
        faults.raise_fault(plog.conn, "camera:0", part="camera", category="camera", message="no frames",
                           diagnostics={"seconds": 12})
        faults.clear_fault(plog.conn, "camera:0")
    return state


class Served:
    def __init__(self, state, rate_limit=1000.0, token=TOKEN):
        self.cfg = config.from_dict({"device": {"id": "opd-07"}, "paths": {"state_dir": str(state)},
                                     "web": {"token": token, "listen": "127.0.0.1:0", "rate_limit": rate_limit}})
        self.stop, self.ready, self.port = threading.Event(), threading.Event(), None
        self.thread = threading.Thread(target=pullapi.serve_pull_api, args=(self.cfg, self.stop),
                                       kwargs={"on_ready": self._ready,
                                               "status": lambda: app_status.collect(self.cfg)}, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), "pull API did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def _ready(self, port):
        self.port = port
        self.ready.set()

    def close(self):
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "pull API did not stop"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    s = Served(_make_state(tmp_path_factory))
    yield s
    s.close()


def get(served, path, headers=AUTH, **params):
    return requests.get(served.url + path, headers=headers, params=params, timeout=10)


def test_paging_with_cursor_returns_every_record_once_and_verifies(served):
    seen, after, pages = [], 0, 0
    while True:
        body = get(served, "/api/v1/punches", after_seq=after, limit=10).json()
        seen += body["records"]
        after, pages = body["cursor"]["after_seq"], pages + 1
        assert body["next_after_seq"] == after
        if not body["more"]:
            break
        assert pages < 20
    assert [r["seq"] for r in seen] == list(range(1, N_PUNCHES + 1)) and pages == 4
    assert body["head"]["seq"] == N_PUNCHES and body["device"] == "opd-07"
    # What the central server does with the page: check the chain and the checkpoint signature.
    assert list(chain.check_records(seen, body["log_id"])) == []
    cp = body["checkpoint"]
    assert cp["seq"] == 30 and seen[29]["hash"] == cp["hash"]
    assert chain.verify_b64(chain.public_key_from_b64(cp["public_key"]), cp["signature"],
                               chain.checkpoint_message(cp["log_id"], cp["seq"], cp["hash"]))
    assert seen[0]["details"] == {"score": 0} and seen[0]["method"] == "face"
    if pullapi.timeline is not None:  # the time engineer's module is there: derived times go out too
        assert {"utc", "earliest", "latest", "basis", "flags"} <= set(seen[0])


def test_empty_page_past_head_keeps_cursor(served):
    body = get(served, "/api/v1/punches", after_seq=1000).json()
    assert body["records"] == [] and body["cursor"]["after_seq"] == 1000 and body["more"] is False


@pytest.mark.parametrize("path", ["/api/v1/punches", "/api/v1/health", "/api/v1/faults", "/api/v1/nothing"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}])
def test_without_the_right_token_everything_is_401(served, path, headers):
    r = get(served, path, headers=headers)
    assert r.status_code == 401 and r.headers["Content-Type"] == "application/json"
    assert "Bearer" in r.json()["error"] and r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("params, word", [
    ({"after_seq": "abc"}, "after_seq"), ({"after_seq": "-1"}, "after_seq"), ({"limit": "0"}, "limit"),
    ({"limit": "5001"}, "limit"), ({"limit": "1_0"}, "limit"), ({"after_seq": " 1"}, "after_seq"),
    ({"after_seq": "9" * 30}, "after_seq"),
])
def test_malformed_queries_are_400_with_json(served, params, word):
    r = get(served, "/api/v1/punches", **params)
    assert r.status_code == 400 and word in r.json()["error"]


def test_other_methods_are_405(served):
    r = requests.post(served.url + "/api/v1/punches", headers=AUTH, data=b"x", timeout=10)
    assert r.status_code == 405 and r.json()["error"]


def test_health_and_faults(served):
    health = get(served, "/api/v1/health").json()
    assert health["device"] == "opd-07" and health["head"]["seq"] == N_PUNCHES
    assert "database" in health["status"]
    faults = get(served, "/api/v1/faults").json()
    if faults["supported"]:
        assert [e["event"] for e in faults["events"]] == ["raised", "cleared"]
        assert faults["events"][0]["diagnostics"] == {"seconds": 12}
        page = get(served, "/api/v1/faults", after_id=faults["events"][0]["id"], limit=1).json()
        assert [e["event"] for e in page["events"]] == ["cleared"] and page["more"] is False


def test_openapi_is_public_and_describes_the_operations(served):
    doc = requests.get(served.url + "/api/v1/openapi.json", timeout=10).json()
    assert set(doc["paths"]) == {"/api/v1/punches", "/api/v1/health", "/api/v1/faults"}


def test_rate_limit_gives_429_with_retry_after(tmp_path_factory):
    s = Served(_make_state(tmp_path_factory, n=1), rate_limit=2.0)
    try:
        codes = [get(s, "/api/v1/health").status_code for _ in range(6)]
        assert codes[:2] == [200, 200] and 429 in codes
        r = get(s, "/api/v1/health")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "per second" in r.json()["error"]
        # Unauthenticated floods are limited too (they cannot be used to guess the token quickly).
        assert get(s, "/api/v1/punches", headers={}).status_code == 429
    finally:
        s.close()


def test_without_web_token_the_pull_api_is_off(tmp_path):
    cfg = config.from_dict({"device": {"id": "x"}, "paths": {"state_dir": str(tmp_path)}})
    stop = threading.Event()
    pullapi.serve_pull_api(cfg, stop)  # returns at once instead of serving an open API
    with pytest.raises(ValueError, match=r"\[web\] token"):
        pullapi.PullAPI(cfg)


def test_address_in_use_is_a_clear_error(served):
    cfg = config.from_dict({"device": {"id": "x"}, "paths": {"state_dir": "/nonexistent"},
                            "web": {"token": TOKEN, "listen": served.url.removeprefix("http://")}})
    with pytest.raises(pullapi.PullAPIError, match="cannot listen there"):
        pullapi.serve_pull_api(cfg, threading.Event())


def test_not_initialised_terminal_gives_503_not_a_crash(tmp_path):
    s = Served(tmp_path / "empty")
    try:
        r = get(s, "/api/v1/punches")
        assert r.status_code == 503 and "presensi init" in r.json()["error"]
    finally:
        s.close()


# -- schemathesis ---------------------------------------------------------------------------------------
# Driven through schemathesis' Python API (operation.as_strategy + hypothesis) rather than its pytest
# plugin, whose lazy fixture loader does not work with pytest 9.

def _operations(served) -> list:
    loaded = schemathesis.openapi.from_url(served.url + "/api/v1/openapi.json")
    ops = [result.ok() for result in loaded.get_all_operations()]
    assert {op.path for op in ops} == {"/api/v1/punches", "/api/v1/health", "/api/v1/faults"}
    return ops


def test_schemathesis_conforms_and_never_5xx(served):
    for op in _operations(served):
        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            case.call_and_validate(base_url=served.url, headers=AUTH)
        check()


def test_schemathesis_wrong_token_is_401(served):
    for op in _operations(served):
        @given(case=op.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            response = case.call(base_url=served.url, headers={"Authorization": "Bearer not-the-token"})
            assert response.status_code == 401, (case.path, response.text)
            case.validate_response(response)
        check()
