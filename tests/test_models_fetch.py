"""`presensi models fetch|verify` against a real HTTP server on 127.0.0.1 serving the model files from
../shared/models (the upstream URLs are replaced with --base-url; no internet here), plus a server that
serves a corrupted copy, one that answers 404, and one that is not there at all."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from conftest import SHARED, presensi, serve_app

from terminal.liveness import modelfiles

MODELS = SHARED / "models"
pytestmark = pytest.mark.skipif(not MODELS.is_dir(),
                                reason=f"{MODELS} is absent: shared test models live beside the repo")


def static_app(root: Path, corrupt: set[str] = frozenset()):
    """An ASGI app serving files under root; paths in `corrupt` get one byte flipped (a tampered mirror)."""
    async def app(scope, receive, send):
        rel = scope["path"].lstrip("/")
        path = (root / rel).resolve()
        if root.resolve() not in path.parents or not path.is_file():
            status, headers, data = 404, [(b"content-type", b"text/plain")], b"not found"
        else:
            data = bytearray(path.read_bytes())
            if rel in corrupt:
                data[len(data) // 2] ^= 0xFF
            status = 200
            headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(data)})
    return app


serving = serve_app  # the shared helper (tests/conftest.py)


def fetch(dest: Path, base_url: str, *extra: str):
    return presensi("models", "fetch", "--dir", str(dest), "--base-url", base_url, "--timeout", "10", "--json",
                    *extra, timeout=60)


def test_pinned_entries_match_the_shared_files_and_sources():
    sources = (MODELS / "SOURCES.md").read_text()
    for model in modelfiles.MODEL_FILES.values():
        assert model.sha256 in sources and str(model.size) in sources
        assert modelfiles.check(MODELS / model.relpath, model) is None
        pinned = [seg for seg in model.url.split("/") if re.fullmatch(r"[0-9a-f]{40}", seg)]
        assert model.url.startswith("https://") and pinned, f"{model.url} is not pinned to a commit"


def test_fetch_downloads_and_verifies_every_file(tmp_path):
    dest = tmp_path / "models"
    with serving(static_app(MODELS)) as url:
        result = fetch(dest, url)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["ok"] and [f["status"] for f in report["files"]] == ["downloaded"] * 3
        for model in modelfiles.MODEL_FILES.values():
            assert modelfiles.sha256_of(dest / model.relpath) == model.sha256
        assert f'minifasnet_v2 = "{(dest / "liveness/MiniFASNetV2.onnx").resolve()}"' in report["config"]
        again = json.loads(fetch(dest, url).stdout)  # verified copies are not downloaded again
        assert [f["status"] for f in again["files"]] == ["present"] * 3
    verify = presensi("models", "verify", "--dir", str(dest), "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"]


def test_a_tampered_download_is_refused_and_not_installed(tmp_path):
    dest = tmp_path / "models"
    with serving(static_app(MODELS, corrupt={"liveness/MiniFASNetV2.onnx"})) as url:
        result = fetch(dest, url)
    assert result.returncode != 0
    assert "MiniFASNetV2.onnx" in result.stderr and "sha256" in result.stderr
    assert "nothing was installed" in result.stderr
    assert not (dest / "liveness/MiniFASNetV2.onnx").exists()
    assert not list(dest.rglob("*.part"))
    statuses = {f["model"]: f["status"] for f in json.loads(result.stdout)["files"]}
    assert statuses == {"yunet": "downloaded", "minifasnet_v2": "failed", "minifasnet_v1se": "downloaded"}


def test_a_corrupted_installed_file_is_detected_and_replaced(tmp_path):
    dest = tmp_path / "models"
    (dest / "liveness").mkdir(parents=True)
    good = (MODELS / "liveness/MiniFASNetV1SE.onnx").read_bytes()
    (dest / "liveness/MiniFASNetV1SE.onnx").write_bytes(good[: len(good) // 2])  # truncated
    verify = presensi("models", "verify", "--dir", str(dest))
    assert verify.returncode != 0 and "presensi models fetch" in verify.stderr
    assert "871157 bytes, expected 1742315" in verify.stdout
    with serving(static_app(MODELS)) as url:
        assert fetch(dest, url).returncode == 0
    expected = modelfiles.MODEL_FILES["minifasnet_v1se"].sha256
    assert modelfiles.sha256_of(dest / "liveness/MiniFASNetV1SE.onnx") == expected


def test_server_errors_say_what_to_do(tmp_path):
    with serving(static_app(tmp_path / "empty")) as url:
        result = fetch(tmp_path / "m", url)
    assert result.returncode != 0 and "HTTP 404" in result.stderr and "--base-url" in result.stderr
    with socket.socket() as sock:  # a port nobody listens on: the mirror is down
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = fetch(tmp_path / "m", dead)
    assert result.returncode != 0 and "download failed" in result.stderr and "network" in result.stderr
