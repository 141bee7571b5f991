"""Configuration: a minimal file works; every mistake gives one clear error naming file, key and fix;
`presensi config check` prints the effective configuration or the errors; the example file documents
exactly the keys of the models with their defaults."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

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


EXAMPLE = REPO / "config" / "presensi.example.toml"
_EXAMPLE_KEY = re.compile(r"^(#\s*)?([a-z_][a-z0-9_]*)\s*=(.*)$")
# Keys the example sets to illustrative values instead of the default (required keys have no default).
ILLUSTRATED = {("device", "id"), ("device", "name"), ("paths", "state_dir"), ("schedule", "holidays")}


def example_keys(text: str) -> dict[str, dict[str, tuple[bool, str, str]]]:
    """{section: {key: (commented_out, value text, the comment block just above)}} of the example file."""
    out: dict[str, dict] = {}
    section, comments = None, []
    for line in text.split("\n"):
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section, comments = s.strip("[]"), []
        elif not s:
            comments = []
        elif section and (m := _EXAMPLE_KEY.match(s)):
            out.setdefault(section, {})[m.group(2)] = (bool(m.group(1)), m.group(3).strip(), " ".join(comments))
            comments = []
        elif s.startswith("#"):
            comments.append(s.lstrip("#").strip())
    return out


def test_example_file_is_valid_and_documents_exactly_the_models_keys_with_their_defaults():
    text = EXAMPLE.read_text()
    assert config.load(EXAMPLE).device.id
    assert "presensi config check" in text  # what it tells users to run exists: see the tests below
    documented = example_keys(text)
    assert set(documented) == set(config.SECTIONS)
    problems = []
    for section, cls in config.SECTIONS.items():
        keys = documented[section]
        problems += [f"[{section}] {k}: not in the example" for k in cls.model_fields if k not in keys]
        problems += [f"[{section}] {k}: in the example, not in the model" for k in keys if k not in cls.model_fields]
        for key, field in cls.model_fields.items():
            if key in keys:
                problems += example_problems(text, section, key, field, *keys[key])
    assert not problems, ("config/presensi.example.toml and terminal/config/sections.py disagree:\n"
                          + "\n".join(problems))


def example_problems(text: str, section: str, key: str, field, commented: bool, value: str, comment: str):
    """What is wrong with one key of the example: its comment, its value, or its commented-out example."""
    problems = []
    doc = " ".join(field.description.split()).rstrip(".")
    if doc not in comment:
        problems.append(f"[{section}] {key}: the comment above it does not carry the description {doc!r}")
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    written = tomllib.loads(text)[section]
    if not commented and (section, key) not in ILLUSTRATED and written[key] != default:
        problems.append(f"[{section}] {key} = {value} differs from the default {default!r}")
    if commented and default not in (None, {}, []):
        problems.append(f"[{section}] {key} is commented out but has a default, {default!r}: write it")
    if commented:  # a commented-out example must be valid when a user uncomments it
        try:
            example = tomllib.loads(f"{key} = {value}")
        except tomllib.TOMLDecodeError:
            return problems  # "(unset by default)": prose, not an example
        try:
            config.SECTIONS[section](**{**written, **example})
        except config.ConfigError as e:
            problems.append(f"[{section}] the example {key} = {value} is invalid: {e}")
    return problems


# -- `presensi config check` on bad files: one line each, naming the file and the key --------------------

BAD_FILES = {
    "nan": (MINIMAL + "[face]\nthreshold = nan\n", "[face] threshold", "finite number"),
    "inf": (MINIMAL + "[face]\nthreshold = inf\n", "[face] threshold", "finite number"),
    "negative-inf": (MINIMAL + "[health]\ninterval = -inf\n", "[health] interval", "finite number"),
    "unknown-key": (MINIMAL + "[face]\nthreshhold = 0.5\n", "'threshhold' in [face]", "did you mean threshold"),
    "unknown-section": (MINIMAL + "[faces]\nthreshold = 0.5\n", "[faces]", "did you mean [face]"),
    "port": (MINIMAL + '[web]\nlisten = "0.0.0.0:99999"\n', "[web] listen", "1 to 65535"),
    "zk-port": (MINIMAL + '[zk]\nlisten = "0.0.0.0:70000"\n', "[zk] listen", "1 to 65535"),
    "no-port": (MINIMAL + '[web]\nlisten = "0.0.0.0"\n', "[web] listen", "HOST:PORT"),
    "url": (MINIMAL + '[central]\nurl = "ftp://x"\n', "[central] url", "http:// or https://"),
    "adms-url": (MINIMAL + '[adms]\nurl = "http://"\n', "[adms] url", "with a host"),
    "id-slash": (MINIMAL.replace('"opd-01"', '"opd/01"'), "[device] id", "'/'"),
    "id-nul": (MINIMAL.replace('"opd-01"', '"opd\\u000001"'), "[device] id", "NUL"),
    "serial-dotdot": (MINIMAL + '[zk]\nserial_number = ".."\n', "[zk] serial_number", "'..'"),
    "empty-state-dir": (MINIMAL.replace('"/tmp/x"', '"  "'), "[paths] state_dir", "must not be empty"),
    "string-for-number": (MINIMAL + '[face]\nthreshold = "0.5"\n', "[face] threshold", "must be a number"),
    "string-for-int": (MINIMAL + '[camera]\nwidth = "640"\n', "[camera] width", "whole number"),
    "syntax": (MINIMAL + "[face]\nthreshold = 0.5.1\n", "[face] threshold (line 6)", "not valid TOML"),
    "not-utf8": ((MINIMAL + '[device]\nname = "Dinas Kesehatan Caf\xe9"\n').encode("latin-1"),
                 "name (line 6)", "not UTF-8"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_config_check_refuses_a_bad_file_with_one_line_naming_file_and_key(tmp_path, case):
    content, key, fix = BAD_FILES[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = presensi("config", "check", config=path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and key in lines[0] and fix in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_config_check_reports_every_error_of_a_file_one_line_each(tmp_path):
    path = tmp_path / "many.toml"
    path.write_text(MINIMAL + '[face]\nthreshold = nan\nworkers = "2"\n[web]\nlisten = "x:99999"\n'
                    "[central]\nurl = \"ftp://x\"\n[bogus]\n")
    result = presensi("config", "check", config=path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 5, result.stderr
    for key in ("[face] threshold", "[face] workers", "[web] listen", "[central] url", "[bogus]"):
        assert sum(key in line and str(path) in line for line in lines) == 1, (key, lines)


def test_config_check_names_the_drivers_a_sensor_model_or_camera_kind_may_be(tmp_path):
    """The valid values live in the drivers' registries (a new model touches drivers/ only); config check asks
    them, so a misspelt model is caught before the daemon starts."""
    path = tmp_path / "drivers.toml"
    path.write_text(MINIMAL + '[fingerprint]\nmodel = "r999"\n[camera]\nkind = "webcam"\n')
    result = presensi("config", "check", config=path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "[fingerprint] model = 'r999'" in lines[0] and "emulator, zhiantec" in lines[0]
    assert "[camera] kind = 'webcam'" in lines[1] and "opencv" in lines[1] and str(path) in lines[1]
    path.write_text(MINIMAL + '[fingerprint]\nmodel = "emulator"\n[camera]\nkind = "folder"\n')
    assert presensi("config", "check", config=path).returncode == 0


def test_config_check_of_a_missing_file_says_how_to_create_one(tmp_path):
    result = presensi("config", "check", config=tmp_path / "nope.toml")
    assert result.returncode == 2
    assert str(tmp_path / "nope.toml") in result.stderr and "presensi.example.toml" in result.stderr
    result = presensi("config", "check", config=tmp_path)
    assert result.returncode == 2 and f"{tmp_path}: is a directory" in result.stderr


def test_config_check_of_an_unreadable_file_says_so(tmp_path):
    path = write_config(tmp_path / "p.toml", tmp_path / "state")
    path.chmod(0)
    cmd = [sys.executable, "-m", "terminal.cli", "config", "check", "-c", str(path)]
    if os.geteuid() == 0:
        # Root reads any file through CAP_DAC_OVERRIDE: run the command as root without the two capabilities
        # that bypass file modes (util-linux setpriv), so CI, which runs as root, tests the refusal too.
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2 and str(path) in result.stderr and "permission denied" in result.stderr


def test_config_check_prints_the_effective_configuration_with_secrets_redacted(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(MINIMAL + '[central]\nurl = "https://presensi.kab.go.id"\ntoken = "s3cret-central"\n'
                    '[web]\ntoken = "s3cret-pull"\n[zk]\ncomm_key = 4242\n[face]\nthreshold = 0.45\n')
    text = presensi("config", "check", config=path)
    as_json = presensi("config", "check", "--json", config=path)
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    for out in (text.stdout, as_json.stdout):
        assert "s3cret" not in out and "4242" not in out
    shown = tomllib.loads(text.stdout)  # the text output is TOML itself
    data = json.loads(as_json.stdout)
    assert data["ok"] is True and data["path"] == str(path)
    assert list(shown) == list(data["config"]) == list(config.SECTIONS)  # every section, defaults filled in
    assert shown["face"]["threshold"] == 0.45 and shown["face"]["margin"] == 0.09
    assert shown["central"]["url"] == "https://presensi.kab.go.id"
    for section, key in (("central", "token"), ("web", "token"), ("zk", "comm_key")):
        assert shown[section][key] == data["config"][section][key] == "<redacted>"
    assert data["config"]["central"]["server_key"] is None  # unset keys: null in JSON, a comment in TOML
    assert "# server_key =" in text.stdout
    expected = {k: v for k, v in data["config"].items()}
    for section in expected.values():
        for key in [k for k, v in section.items() if v is None]:
            del section[key]
    assert shown == expected


def test_config_check_passes_the_example_file():
    result = presensi("config", "check", config=EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["device"]["id"] == "opd-dinkes-01"


def test_a_section_built_in_code_refuses_nan_with_the_same_line():
    with pytest.raises(config.ConfigError, match=r"^\[face\] threshold = nan is not a number"):
        config.Face(threshold=float("nan"))
    with pytest.raises(config.ConfigError, match=r"\[liveness\] passive_threshold = inf"):
        config.Liveness(passive_threshold=float("inf"))


def test_the_configuration_imports_no_other_part_of_the_terminal():
    """Every wing may depend on the configuration, so it depends on none of them (no cycle to break)."""
    code = ("import sys, terminal.config; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('terminal', 'sync', 'drivers') and not m.startswith('terminal.config') and m != 'terminal'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# -- the attack that motivated the models: a NaN threshold must not let a stranger in ------------------


def test_identify_refuses_to_run_with_a_nan_face_threshold(tmp_path):
    from face_support import lfw, needs_shared

    if needs_shared.args[0]:
        pytest.skip(needs_shared.kwargs["reason"])
    photos = tmp_path / "photos" / "emp-bill"
    photos.mkdir(parents=True)
    photos.joinpath("1.jpg").write_bytes(lfw("Bill_Clinton", 1).read_bytes())
    stranger = str(lfw("Cruz_Bustamante", 3))
    good = write_config(tmp_path / "good.toml", tmp_path / "state", '\n[face]\nworkers = 1\n')
    assert presensi("init", config=good).returncode == 0
    assert presensi("enroll-photos", str(tmp_path / "photos"), config=good).returncode == 0
    refused = presensi("identify", stranger, "--json", config=good)
    assert refused.returncode == 0, refused.stderr
    assert [f["employee"] for f in json.loads(refused.stdout)["faces"]] == [None]  # the stranger is nobody

    attack = write_config(tmp_path / "attack.toml", tmp_path / "state", '\n[face]\nworkers = 1\nthreshold = nan\n')
    result = presensi("identify", stranger, "--json", config=attack)
    assert result.returncode != 0
    assert result.stdout == ""  # nothing identified: the command did not run
    assert str(attack) in result.stderr and "[face] threshold = nan" in result.stderr
