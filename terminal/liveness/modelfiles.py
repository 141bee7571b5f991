"""Model files that are not on PyPI: pinned upstream URLs and sha256 (from ../shared/models/SOURCES.md),
downloaded by `presensi models fetch` on a terminal with internet and verified before use.

A file is written under a temporary name, its size and sha256 checked, then renamed into place, so a
partial or wrong download never takes the place of a good file.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import requests


@dataclass(frozen=True)
class ModelFile:
    key: str            # the config key that takes this file's path
    relpath: str        # where it goes under the models directory
    size: int
    sha256: str
    url: str            # pinned upstream location (a fixed commit)
    licence: str


YAKHYO = "https://raw.githubusercontent.com/yakhyo/face-anti-spoofing/c175efef505bc275f7835cc9aa2aecab305ac184"
# opencv_zoo keeps .onnx files in Git LFS; github.com/<repo>/raw/<commit>/<path> redirects to the LFS blob.
OPENCV_ZOO = "https://github.com/opencv/opencv_zoo/raw/82b38c8f98e7b52aa171400f3e4c722352d0669f"

MODEL_FILES: dict[str, ModelFile] = {
    "yunet": ModelFile(
        "[face] yunet_model", "face_detection_yunet_2023mar.onnx", 232589,
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        f"{OPENCV_ZOO}/models/face_detection_yunet/face_detection_yunet_2023mar.onnx", "MIT (c) 2020 Shiqi Yu"),
    "minifasnet_v2": ModelFile(
        "[liveness] minifasnet_v2", "liveness/MiniFASNetV2.onnx", 1743561,
        "4eed38f0bde33c9b805942a5f25e42ce1161e2bda545254be622be957727794e",
        f"{YAKHYO}/weights/MiniFASNetV2.onnx", "Apache-2.0 (minivision-ai/Silent-Face-Anti-Spoofing)"),
    "minifasnet_v1se": ModelFile(
        "[liveness] minifasnet_v1se", "liveness/MiniFASNetV1SE.onnx", 1742315,
        "d819a69bac6b9ade2a0f4d9b60b618e1260f7bf3ba1fddff6c5d82131cb1083f",
        f"{YAKHYO}/weights/MiniFASNetV1SE.onnx", "Apache-2.0 (minivision-ai/Silent-Face-Anti-Spoofing)"),
}

MAX_BYTES = 64 * 1024 * 1024  # no model here is near this; bounds a misbehaving server


class FetchError(Exception):
    """A model file could not be downloaded or failed verification; the message says what to do."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(path: Path, model: ModelFile) -> str | None:
    """None when the file at path is the pinned one, else what is wrong with it."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != model.size:
        return f"{size} bytes, expected {model.size}"
    digest = sha256_of(path)
    if digest != model.sha256:
        return f"sha256 {digest}, expected {model.sha256}"
    return None


def url_for(model: ModelFile, base_url: str | None) -> str:
    """The pinned URL, or base_url + the file's relative path (a mirror, or a test server)."""
    return f"{base_url.rstrip('/')}/{model.relpath}" if base_url else model.url


def fetch_one(model: ModelFile, dest_dir: Path, base_url: str | None = None, timeout: float = 60.0,
              session: requests.Session | None = None) -> dict:
    """Download one file unless a verified copy is already there. Returns a report dict."""
    target = dest_dir / model.relpath
    if check(target, model) is None:
        return {"file": str(target), "status": "present", "sha256": model.sha256}
    url = url_for(model, base_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        _download(session or requests.Session(), url, tmp, timeout)
        problem = check(tmp, model)
        if problem:
            raise FetchError(f"{url}: downloaded file does not match the pinned {model.relpath} ({problem}); "
                             "the upstream file changed or the download was tampered with; nothing was installed")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(target), "status": "downloaded", "sha256": model.sha256, "url": url}


def _download(session: requests.Session, url: str, tmp: Path, timeout: float) -> None:
    try:
        with session.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise FetchError(f"{url}: HTTP {resp.status_code}; check the network or pass --base-url "
                                 "pointing at a mirror holding the same files")
            written = 0
            with open(tmp, "wb") as f:
                for chunk in resp.iter_content(1 << 16):
                    written += len(chunk)
                    if written > MAX_BYTES:
                        raise FetchError(f"{url}: more than {MAX_BYTES} bytes; not a model file")
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
    except requests.RequestException as e:
        raise FetchError(f"{url}: download failed ({type(e).__name__}: {e}); check the network "
                         "(the terminal needs internet for this) or use --base-url for a mirror") from None


def fetch_all(dest_dir: Path, base_url: str | None = None, timeout: float = 60.0) -> list[dict]:
    """Every model file; a failure of one does not stop the others. Reports carry an "error" on failure."""
    reports = []
    with requests.Session() as session:
        for name, model in MODEL_FILES.items():
            try:
                reports.append({"model": name, **fetch_one(model, dest_dir, base_url, timeout, session)})
            except (FetchError, OSError) as e:
                reports.append({"model": name, "file": str(dest_dir / model.relpath), "status": "failed",
                                "error": str(e)})
    return reports


def config_lines(dest_dir: Path) -> str:
    """The configuration that uses the fetched files."""
    d = dest_dir.resolve()
    return "\n".join([
        "[face]", f'yunet_model = "{d / MODEL_FILES["yunet"].relpath}"', "",
        "[liveness]", f'minifasnet_v2 = "{d / MODEL_FILES["minifasnet_v2"].relpath}"',
        f'minifasnet_v1se = "{d / MODEL_FILES["minifasnet_v1se"].relpath}"'])
