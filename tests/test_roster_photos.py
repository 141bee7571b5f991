"""A roster that carries enrolment photos instead of templates: the terminal embeds them itself (once) and
identifies those employees."""

from __future__ import annotations

import json

import pytest
from conftest import presensi, write_config

from terminal.face import store
from terminal.log import punchlog
from terminal.punch import roster


def person_with_photos(shared_dir, n=2):
    root = shared_dir / "data" / "faces" / "lfw-dev"
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= n:
            return person.name, photos
    pytest.skip("no identity with enough photos in lfw-dev")


def test_roster_photos_become_templates_and_identify(tmp_path, shared_dir):
    name, photos = person_with_photos(shared_dir)
    cfg = write_config(tmp_path / "p.toml", tmp_path / "state")
    punchlog.init(tmp_path / "state")
    roster.install(tmp_path / "state", version=1, employees=[
        {"id": "197001012000011001", "name": name, "uid": 1, "face_photos": [photos[0].read_bytes()]},
        {"id": "197001012000011002", "name": "Tanpa Wajah", "uid": 2, "face_photos": [b"not a photo"]},
    ])
    templates = store.roster_templates(tmp_path / "state")
    assert list(templates) == ["197001012000011001"]  # the unusable photo gives no template, no crash
    cache = tmp_path / "state" / "face" / "photo-templates.enc"
    assert cache.exists() and photos[0].read_bytes()[:64] not in cache.read_bytes()

    result = presensi("identify", str(photos[1]), "--json", config=cfg)
    assert result.returncode == 0, result.stderr
    faces = json.loads(result.stdout.splitlines()[0])["faces"]
    assert [f["employee"] for f in faces] == ["197001012000011001"]
