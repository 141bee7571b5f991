"""The fingerprint emulator on a real pty, driven by the unmodified pyfingerprint 1.5: every public method,
the datasheet's test vectors, the module rules, pacing, and the line faults as pyfingerprint sees them."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import readline
from pyfingerprint.pyfingerprint import PyFingerprint

from drivers.fingerprint.emulator import FAULTS, FingerprintEmulator
from drivers.fingerprint.emulator import protocol as p
from drivers.fingerprint.emulator.sensorsim import IMAGE_HEIGHT, IMAGE_WIDTH, Settings, synthetic_template

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def emulator(tmp_path):
    with FingerprintEmulator(Settings(capacity=1000), link=tmp_path / "ttyFP", paced=False) as emu:
        yield emu


def client(emu, **kw) -> PyFingerprint:
    return PyFingerprint(emu.path, kw.pop("baud", 57600), kw.pop("address", 0xFFFFFFFF), kw.pop("password", 0))


def raw_exchange(emu, frame: bytes, expect: int, wait: float = 1.0) -> bytes:
    """Write bytes to the slave ourselves and read what comes back (no library in between)."""
    fd = os.open(emu.path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, frame)
        out, end = b"", time.monotonic() + wait
        while len(out) < expect and time.monotonic() < end:
            if select.select([fd], [], [], 0.05)[0]:
                out += os.read(fd, 4096)
        return out
    finally:
        os.close(fd)


# --- the datasheet's test vectors ---------------------------------------------------------------------------

VFY_PWD = bytes.fromhex("EF01 FFFFFFFF 01 0007 13 00000000 001B")
ACK_OK = bytes.fromhex("EF01 FFFFFFFF 07 0003 00 000A")
ACK_NO_FINGER = bytes.fromhex("EF01 FFFFFFFF 07 0003 02 000C")
SYS_PARA = bytes.fromhex("EF01 FFFFFFFF 07 0013 00 0000 0000 03E8 0003 FFFFFFFF 0002 0006 050C")


def test_encoder_reproduces_the_datasheet_vectors():
    assert p.encode(p.PID_COMMAND, bytes.fromhex("1300000000")) == VFY_PWD
    assert p.ack(p.OK) == ACK_OK
    assert p.ack(p.NO_FINGER) == ACK_NO_FINGER


def test_emulator_answers_the_datasheet_vectors_on_the_wire(emulator):
    assert raw_exchange(emulator, VFY_PWD, len(ACK_OK)) == ACK_OK
    read_sys_para = p.encode(p.PID_COMMAND, bytes([p.READ_SYS_PARA]))
    assert raw_exchange(emulator, read_sys_para, len(SYS_PARA)) == SYS_PARA
    gen_img = p.encode(p.PID_COMMAND, bytes([p.GEN_IMG]))
    assert raw_exchange(emulator, gen_img, len(ACK_NO_FINGER)) == ACK_NO_FINGER


def test_pyfingerprint_sends_the_datasheet_password_packet(emulator):
    assert client(emulator).verifyPassword() is True
    first = emulator.packet_log[0]
    assert (first["dir"], first["pid"], first["address"], first["payload"]) == ("rx", 1, 0xFFFFFFFF, "1300000000")
    assert p.encode(first["pid"], bytes.fromhex(first["payload"])) == VFY_PWD


def test_parser_resynchronises_after_noise_and_answers_a_bad_checksum_with_01(emulator):
    noisy = b"\x55\x00\xef\x13" + VFY_PWD
    assert raw_exchange(emulator, noisy, len(ACK_OK)) == ACK_OK
    broken = VFY_PWD[:-1] + b"\x1c"
    assert raw_exchange(emulator, broken, 12) == p.ack(p.ERR_COMM)


# --- every public pyfingerprint method ----------------------------------------------------------------------

PUBLIC_METHODS = sorted(n for n in dir(PyFingerprint) if not n.startswith("_"))


class Recorder:
    """Calls methods on a real PyFingerprint and remembers which public ones ran."""

    def __init__(self, fp: PyFingerprint):
        self.fp, self.called = fp, set()

    def __getattr__(self, name):
        self.called.add(name)
        return getattr(self.fp, name)


def test_every_public_pyfingerprint_method_works(emulator, tmp_path):
    finger = synthetic_template("alice")
    other = synthetic_template("bob")
    f = Recorder(client(emulator))
    assert f.verifyPassword() is True
    assert f.getSystemParameters() == (0, 0, 1000, 3, 0xFFFFFFFF, 2, 6)
    assert (f.getStorageCapacity(), f.getSecurityLevel(), f.getMaxPacketSize(), f.getBaudRate()) == (1000, 3, 128,
                                                                                                      57600)
    assert f.getTemplateCount() == 0 and f.getTemplateIndex(0) == [False] * 256
    assert f.readImage() is False  # nothing on the glass
    emulator.place_finger(finger, score=87)
    assert f.readImage() is True
    f.downloadImage(str(tmp_path / "finger.bmp"))
    from PIL import Image

    assert Image.open(tmp_path / "finger.bmp").size == (IMAGE_WIDTH, IMAGE_HEIGHT)
    assert f.convertImage(0x01) is True
    assert f.convertImage(0x02) is True
    assert f.compareCharacteristics() == 87
    assert f.createTemplate() is True
    assert f.storeTemplate() == 0  # first free position, found through the index pages
    assert f.storeTemplate(700, 0x01) == 700
    assert f.getTemplateCount() == 2 and f.getTemplateIndex(2)[700 - 512] is True
    assert f.searchTemplate() == (0, 87)
    assert f.uploadCharacteristics(0x01, list(other)) is True
    assert f.downloadCharacteristics(0x01) == list(other)
    assert f.searchTemplate() == (-1, -1)
    assert f.compareCharacteristics() == 0  # buffer 1 (bob) against buffer 2 (alice)
    assert f.loadTemplate(700, 0x02) is True and f.downloadCharacteristics(0x02) == list(finger)
    assert f.deleteTemplate(700) is True and f.getTemplateCount() == 1
    assert f.clearDatabase() is True and f.getTemplateCount() == 0
    assert 0 <= f.generateRandomNumber() < 2**32
    assert f.setSystemParameter(5, 4) is True
    f.setSecurityLevel(2)  # these three return None in 1.5
    f.setMaxPacketSize(64)
    f.setBaudRate(57600)
    assert emulator.sim.flash.security_level == 2 and emulator.sim.flash.packet_size == 64
    assert f.setPassword(0x1234) is True
    assert f.verifyPassword() is True  # the client adopted the new password
    assert f.setAddress(0xCAFE0001) is True
    assert f.getStorageCapacity() == 1000  # the client adopted the new address, and so did the module
    assert f.called == set(PUBLIC_METHODS), f"not exercised: {set(PUBLIC_METHODS) - f.called}"


def test_confirmation_codes_reach_the_client_as_pyfingerprint_reports_them(emulator):
    f = client(emulator)
    emulator.place_finger(synthetic_template(1), quality="messy")
    assert f.readImage() is True
    with pytest.raises(Exception, match="too messy"):
        f.convertImage(0x01)
    emulator.sim.force_code(p.STORE, p.FLASH_ERROR)
    with pytest.raises(Exception, match="Error writing to flash"):
        f.storeTemplate(3, 0x01)
    with pytest.raises(Exception, match="could not be read"):
        f.loadTemplate(5, 0x01)  # empty slot: 0x0C
    emulator.sim.force_code(p.READ_SYS_PARA, p.OK)  # a short-bodied OK: the packet size code reads as 0
    assert f.getMaxPacketSize() == 32


# --- module rules ----------------------------------------------------------------------------------------------

def test_another_address_gets_no_reply(emulator):
    frame = p.encode(p.PID_COMMAND, bytes.fromhex("1300000000"), address=0x12345678)
    assert raw_exchange(emulator, frame, 1, wait=0.4) == b""


def test_after_a_password_change_everything_but_vfypwd_is_refused(tmp_path):
    with FingerprintEmulator(Settings(password=0xA5A5), link=tmp_path / "fp", paced=False) as emu:
        f = client(emu, password=0xA5A5)
        with pytest.raises(Exception, match="Unknown error 0x21"):
            f.getTemplateCount()
        assert client(emu, password=1).verifyPassword() is False
        assert f.verifyPassword() is True
        assert f.getTemplateCount() == 0


def test_set_system_parameter_applies_at_the_next_power_on(emulator):
    f = client(emulator)
    f.setSecurityLevel(5)
    f.setMaxPacketSize(32)
    assert (f.getSecurityLevel(), f.getMaxPacketSize()) == (3, 128)  # manual: after the next power-on
    emulator.power_cycle()
    assert (f.getSecurityLevel(), f.getMaxPacketSize()) == (5, 32)
    with pytest.raises(Exception, match="Invalid register number"):
        emulator.sim.force_code(p.SET_SYS_PARA, p.BAD_REGISTER)
        f.setSystemParameter(5, 1)


@pytest.mark.parametrize("packet_size", [32, 64, 128, 256])
def test_templates_travel_at_every_packet_size(tmp_path, packet_size):
    with FingerprintEmulator(Settings(packet_size=packet_size), link=tmp_path / "fp", paced=False) as emu:
        f = client(emu)
        template = synthetic_template(packet_size)
        assert f.uploadCharacteristics(0x01, list(template)) is True
        data_packets = [e for e in emu.packet_log if e["dir"] == "tx" and e["pid"] in (p.PID_DATA, p.PID_END)]
        assert [e["payload"] for e in data_packets] == [f"<{packet_size} bytes>"] * (512 // packet_size)


def test_a_full_162_slot_module_refuses_auto_store(tmp_path):
    with FingerprintEmulator(Settings(capacity=162), link=tmp_path / "fp", paced=False) as emu:
        for slot in range(162):
            emu.sim.store(slot, synthetic_template(slot))
        f = client(emu)
        assert f.getTemplateCount() == 162 and f.getTemplateIndex(0)[161] is True
        assert f.getTemplateIndex(0)[162] is False
        emu.place_finger(synthetic_template(5))
        f.readImage()
        f.convertImage(0x01)
        assert f.searchTemplate() == (5, 120)
        with pytest.raises(ValueError, match="position number is invalid"):
            f.storeTemplate()


def test_bytes_are_paced_at_the_configured_baud(tmp_path):
    # 512 bytes come back as four 139-byte packets plus a 12-byte ack: 568 bytes × 10 bits at 9600 baud.
    with FingerprintEmulator(Settings(baud=9600), link=tmp_path / "fp", paced=True) as emu:
        emu.sim.store(0, synthetic_template(0))
        f = client(emu, baud=9600)
        f.loadTemplate(0, 0x01)
        started = time.monotonic()
        assert f.downloadCharacteristics(0x01) == list(synthetic_template(0))
        assert time.monotonic() - started >= 568 * 10 / 9600 * 0.9


def test_a_client_at_the_wrong_baud_reads_garbage(emulator):
    with pytest.raises(Exception, match="valid header"):
        client(emulator, baud=115200).verifyPassword()


# --- line faults as the bare library sees them -----------------------------------------------------------------

LIBRARY_SYMPTOMS = {
    "garbage": "valid header", "stray55": "valid header", "bad_checksum": "checksum is wrong",
    "wrong_pid": "no ack packet", "empty": "unsupported operand",  # LEN = 2: 11 bytes, a 12th never comes
}


@pytest.mark.parametrize("fault", sorted(LIBRARY_SYMPTOMS))
def test_fault_switches_produce_the_field_symptoms(emulator, fault):
    f = client(emulator)
    emulator.set_fault(fault, count=1)
    with pytest.raises(Exception, match=LIBRARY_SYMPTOMS[fault]):
        f.getTemplateCount()
    assert emulator.faults == {}  # a counted fault clears itself


def test_unplugging_removes_the_device_and_replugging_restores_it(emulator):
    f = client(emulator)
    emulator.set_fault("unplugged")
    assert not os.path.exists(emulator.path)
    with pytest.raises(Exception, match="(?i)input/output|disconnected|read failed|write failed"):
        f.getTemplateCount()
    emulator.clear_fault("unplugged")
    assert client(emulator).getTemplateCount() == 0


def test_a_hung_module_stays_silent_until_power_cycled(emulator):
    emulator.set_fault("hang")
    assert raw_exchange(emulator, VFY_PWD, 12, wait=0.3) == b""
    assert raw_exchange(emulator, VFY_PWD, 12, wait=0.3) == b""
    emulator.clear_fault("hang")  # = power cycle
    assert raw_exchange(emulator, VFY_PWD, 12) == ACK_OK


def test_every_fault_switch_is_documented():
    assert set(FAULTS) >= {"garbage", "stray55", "bad_checksum", "truncated", "wrong_pid", "late", "hang",
                           "unplugged"}
    with pytest.raises(ValueError, match="unknown fault"):
        FingerprintEmulator().set_fault("smoke")


# --- standalone ------------------------------------------------------------------------------------------------

def test_standalone_emulator_prints_its_path_and_takes_console_commands(tmp_path):
    link = tmp_path / "ttyFINGER"
    args = ["--link", str(link), "--no-pacing", "--enrolled", "3", "--packet-log", str(tmp_path / "packets.log")]
    proc = subprocess.Popen([sys.executable, "-m", "drivers.fingerprint.emulator", *args], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert readline(proc.stdout, 30).strip() == str(link)
        f = PyFingerprint(str(link), 57600, 0xFFFFFFFF, 0)
        assert f.getTemplateCount() == 3
        proc.stdin.write("finger 1 95\n")
        proc.stdin.flush()
        assert readline(proc.stdout, 30).startswith("finger of slot 1")
        assert f.readImage() and f.convertImage(0x01)
        assert f.searchTemplate() == (1, 95)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
        assert not link.exists()
        lines = (tmp_path / "packets.log").read_text().splitlines()
        assert any("<<< pid=01 1d" in line for line in lines)  # TemplateNum in
        assert any(">>> pid=07 000003" in line for line in lines)  # its ack out: OK, 3 templates
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_presensi_finger_emulator_runs_the_same_emulator(tmp_path):
    link = tmp_path / "ttyFP"
    proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "finger", "emulator", "--link", str(link),
                             "--capacity", "162"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert readline(proc.stdout, 30).strip() == str(link)
        assert PyFingerprint(str(link), 57600, 0xFFFFFFFF, 0).getStorageCapacity() == 162
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_a_baud_change_needs_a_power_cycle_and_then_the_client_must_follow(emulator):
    f = client(emulator)
    f.setBaudRate(115200)
    assert f.getBaudRate() == 57600  # still the old speed until power-on
    emulator.power_cycle()
    with pytest.raises(Exception, match="valid header"):
        f.getTemplateCount()  # 57600 against a 115200 module: framing garbage
    assert client(emulator, baud=115200).getBaudRate() == 115200


def test_the_immediate_sys_para_switch(tmp_path):
    with FingerprintEmulator(Settings(sys_para_immediate=True), link=tmp_path / "fp", paced=False) as emu:
        f = client(emu)
        f.setSecurityLevel(1)
        assert f.getSecurityLevel() == 1


def test_standalone_emulator_stops_cleanly_on_sigterm(tmp_path):
    link = tmp_path / "ttyFP"
    proc = subprocess.Popen([sys.executable, "-m", "drivers.fingerprint.emulator", "--link", str(link)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert readline(proc.stdout, 30).strip() == str(link) and link.is_symlink()
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert not link.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
