"""`[fingerprint] model` picks the sensor class from drivers/fingerprint/registry.py: an unknown model is refused
with the valid names (in code, in the CLI and in `presensi status`), every registered class implements the
interface, and the "emulator" model chosen by a configuration file works end to end: the unmodified
pyfingerprint on a real pty, through the capture loop and the slot map, to a committed punch."""

from __future__ import annotations

import inspect
import os
import time

import pytest
from conftest import presensi, presensi_json, write_config

from drivers.fingerprint.base import FingerprintSensor, SensorError
from drivers.fingerprint.emulator.sensorsim import synthetic_template
from drivers.fingerprint.registry import DEFAULT_MODEL, MODELS, UnknownModel, from_config
from terminal import config
from terminal.finger.service import FingerprintService
from terminal.log import punchlog

EMPLOYEE = "199001012015021001"


def wait_for(predicate, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def config_file(tmp_path, fingerprint: str):
    return write_config(tmp_path / "presensi.toml", tmp_path / "state", f"\n[fingerprint]\n{fingerprint}\n")


def load(tmp_path, fingerprint: str) -> config.Config:
    return config.load(config_file(tmp_path, fingerprint))


def test_an_unknown_model_is_refused_naming_the_valid_ones(tmp_path):
    cfg = load(tmp_path, 'enabled = true\nmodel = "r999"')
    with pytest.raises(UnknownModel) as e:
        from_config(cfg.fingerprint)
    message = str(e.value)
    assert "[fingerprint] model = 'r999'" in message
    assert all(name in message for name in MODELS), message
    assert isinstance(e.value, SensorError) and e.value.category == "config"


def test_the_cli_and_status_name_the_valid_models(tmp_path):
    cfg = config_file(tmp_path, 'enabled = true\nmodel = "r999"')
    assert presensi("init", config=cfg).returncode == 0
    result = presensi("finger", "info", config=cfg, timeout=30)
    assert result.returncode != 0
    assert "'r999'" in result.stderr and "emulator, zhiantec" in result.stderr
    assert "Traceback" not in result.stderr
    status = presensi("status", "--json", config=cfg, timeout=60)
    assert "'r999' is not a known fingerprint sensor model" in status.stdout, status.stdout + status.stderr


def test_the_default_model_is_the_zhiantec_driver_and_every_model_implements_the_interface():
    assert config.Fingerprint().model == DEFAULT_MODEL == "zhiantec"
    for name, cls in MODELS.items():
        assert issubclass(cls, FingerprintSensor) and cls.model == name
        assert not inspect.isabstract(cls), f"{name}: {cls.__abstractmethods__} not implemented"


def test_the_emulator_model_from_a_config_file_punches_end_to_end(tmp_path):
    cfg = load(tmp_path, 'enabled = true\nmodel = "emulator"\nport = "/dev/ttyNONE-not-used"')
    punchlog.init(cfg.state_dir)
    with punchlog.PunchLog(cfg.state_dir) as log:
        service = FingerprintService(cfg.fingerprint, cfg.state_dir, log)
        emulator = service.sensor.emulator
        port = emulator.path
        try:
            assert port.startswith("/dev/pts/") and os.path.exists(port)  # a real pty, not the configured port
            service.start()
            report = service.sync([(EMPLOYEE, [synthetic_template(EMPLOYEE)])])
            assert report.fault is None and len(report.added) == 1 and report.capacity == 1000
            emulator.place_finger(synthetic_template(EMPLOYEE), score=130)
            assert wait_for(lambda: log.count() == 1, 10), "no punch from the emulated sensor"
            record = next(log.records())
            assert record["employee"] == EMPLOYEE and record["method"] == "finger"
            assert service.health()["ok"]
            # The bytes went through pyfingerprint's packets: the emulator parsed its commands off the pty.
            commands = {e.get("command") for e in emulator.packet_log if e["dir"] == "rx"}
            assert {"verify_password", "read_sys_para", "down_char", "store", "read_image", "convert_image",
                    "search"} <= commands, commands
        finally:
            service.stop()
    assert not os.path.exists(port), "closing the sensor leaves the emulator's pty behind"


def test_presensi_finger_info_on_the_emulator_model(tmp_path):
    cfg = config_file(tmp_path, 'enabled = true\nmodel = "emulator"')
    assert presensi("init", config=cfg).returncode == 0
    info = presensi_json("finger", "info", config=cfg, timeout=30)
    assert info["capacity"] == 1000 and info["templates"] == 0
    status = presensi_json("status", config=cfg, timeout=60)
    assert "emulator sensor (no port)" in str(status), status
