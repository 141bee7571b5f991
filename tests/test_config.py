"""Configuration: a minimal file works; every mistake gives one clear error naming file, key and fix."""

from __future__ import annotations

import pytest
from conftest import REPO, presensi, write_config

from terminal import config


def load_text(tmp_path, text: str) -> config.Config:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return config.load(path)


MINIMAL = '[device]\nid = "opd-01"\n[paths]\nstate_dir = "/tmp/x"\n'


def test_minimal_file_of_two_keys_works(tmp_path):
    cfg = load_text(tmp_path, MINIMAL)
    assert cfg.device.id == "opd-01"
    assert cfg.device.timezone == "Asia/Jakarta"
    assert cfg.central.url is None  # no [central]: the terminal simply keeps its punches
    assert cfg.fingerprint.baud == 57600


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[paths]\nstate_dir = "/x"\n', "missing section [device]"),
        ('[device]\nname = "a"\n[paths]\nstate_dir = "/x"\n', "[device] id is required"),
        (MINIMAL + "[device2]\n", "unknown section [device2]"),
        (MINIMAL.replace('id = "opd-01"', 'id = "opd-01"\ntimezon = "Asia/Jakarta"'),
         "unknown key 'timezon' in [device]"),
        (MINIMAL.replace('id = "opd-01"', 'id = "a"\ntimezone = "Asia/Tokyo"'), "Asia/Makassar"),
        (MINIMAL.replace('id = "opd-01"', "id = 5"), "[device] id must be a string"),
        (MINIMAL + "[central]\ntimeout = \"ten\"\n", "[central] timeout must be a number"),
        (MINIMAL + "[device.x]\n", "unknown key 'x' in [device]"),
        (MINIMAL + "[fingerprint]\nbaud = 1200\n", "out of range"),
        (MINIMAL + "[camera]\nenabled = 1\n", "[camera] enabled must be true or false"),
        (MINIMAL + "[liveness]\nmode = \"maybe\"\n", "'passive+active'"),
        ("[device\n", "not valid TOML"),
    ],
)
def test_invalid_files_name_the_key_and_the_fix(tmp_path, text, expected):
    with pytest.raises(config.ConfigError) as err:
        load_text(tmp_path, text)
    message = str(err.value)
    assert expected in message
    assert str(tmp_path / "p.toml") in message


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(config.ConfigError, match="presensi.example.toml"):
        config.load(tmp_path / "nope.toml")


def test_config_path_from_environment(tmp_path, monkeypatch):
    path = write_config(tmp_path / "env.toml", tmp_path / "state", device_id="from-env")
    monkeypatch.setenv("PRESENSI_CONFIG", str(path))
    assert config.load().device.id == "from-env"


def test_cli_reports_config_error_on_stderr_with_nonzero_exit(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[central]\nurll = 'x'\n")
    result = presensi("status", config=bad)
    assert result.returncode != 0
    assert "unknown key 'urll' in [central]" in result.stderr
    assert result.stdout == ""


def test_example_file_is_valid_and_documents_every_key():
    example = REPO / "config" / "presensi.example.toml"
    cfg = config.load(example)
    assert cfg.device.id
    text = example.read_text()
    sections = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1]
        elif current and "=" in stripped:
            key = stripped.lstrip("# ").split("=")[0].strip()
            sections.setdefault(current, set()).add(key)
    missing = [f"[{s}] {k}" for s, k, _, _ in config.documented_keys() if k not in sections.get(s, set())]
    assert not missing, f"config/presensi.example.toml does not document: {', '.join(missing)}"
