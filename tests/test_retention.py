"""Photo retention keeps the evidence still needed: the photo of a punch the central server has not
acknowledged and the photo of an undelivered fault report survive any keep_days (0 included); only the hard
disk cap ([photos] max_mb) may delete them, and then with a disk fault IT staff see in `presensi status`.
Real SQLite log, real photo files (../shared/data), the daemon's own retention job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import presensi_json, write_config
from face_support import LFW, needs_shared

from terminal.app import jobs
from terminal.config import load
from terminal.log import evidence, punchlog, syncstate
from terminal.ops import faults

pytestmark = needs_shared
CENTRAL = "http://127.0.0.1:9"  # configured, never reached: retention only reads what it acknowledged
EMPLOYEES = ("198501012010011001", "198602022011012002", "198703032012013003")


def photo(i: int) -> bytes:
    return sorted(LFW.glob("A*/*_0001.jpg"))[i].read_bytes()  # distinct people: distinct photos


@pytest.fixture
def terminal(tmp_path):
    def make(photos: str = "", central: str = CENTRAL):
        extra = (f'\n[central]\nurl = "{central}"\n' if central else "") + f"\n[photos]\n{photos}\n"
        cfg_path = write_config(tmp_path / "presensi.toml", tmp_path / "state", extra)
        punchlog.init(tmp_path / "state")
        return cfg_path, load(cfg_path)
    return make


def punch_with_photos(state: Path, n: int) -> list[dict]:
    with punchlog.PunchLog(state) as log:
        return [log.append(EMPLOYEES[i % 3], "face", photo_jpeg=photo(i)) for i in range(n)]


def on_disk(state: Path, record: dict) -> bool:
    return (state / record["photo_path"]).is_file()


def acknowledge_photos(cfg, through_seq: int) -> None:
    with punchlog.PunchLog(cfg.state_dir) as log:
        syncstate.set_acked(log.conn, syncstate.target_of(cfg.central.url), "photos", log.log_id, through_seq)


def test_keep_days_0_deletes_only_delivered_photos_never_an_unacknowledged_punchs_or_a_faults(terminal):
    cfg_path, cfg = terminal("keep_days = 0")
    state = Path(cfg.state_dir)
    records = punch_with_photos(state, 3)
    with punchlog.PunchLog(state) as log:
        report = faults.report(log.conn, state, category="camera", message="lensa retak", photo_jpeg=photo(5))
    acknowledge_photos(cfg, 1)  # the server has the first punch's photo; not the others

    result = jobs.photo_retention(jobs.JobContext(cfg))

    assert not on_disk(state, records[0]), "a delivered photo outlived keep_days = 0"
    assert on_disk(state, records[1]) and on_disk(state, records[2]), "an undelivered punch lost its photo"
    assert (state / report["photo_path"]).is_file(), "an undelivered fault report lost its photo"
    assert result["removed"] == 1 and result["kept_protected"] == 3 and result["cap_removed"] == 0
    acknowledge_photos(cfg, 3)
    jobs.photo_retention(jobs.JobContext(cfg))
    assert not on_disk(state, records[1]) and not on_disk(state, records[2])
    assert (state / report["photo_path"]).is_file()  # the report itself is still undelivered
    with punchlog.PunchLog(state) as log:
        assert log.verify() == []  # the records keep the photos' hashes


def test_photos_past_keep_days_stay_while_their_punch_is_undelivered(terminal):
    """Retention judged by the calendar alone: 40 days on, keep_days 30, the server never reached."""
    _, cfg = terminal("keep_days = 30")
    state = Path(cfg.state_dir)
    records = punch_with_photos(state, 2)
    acknowledge_photos(cfg, 1)
    with punchlog.PunchLog(state) as log:
        protected = jobs.protected_photos(cfg, log.conn, log.log_id)
    result = evidence.apply_retention(state, 30, protected, now=time.time() + 40 * 86400)
    assert not on_disk(state, records[0]) and on_disk(state, records[1])
    assert result.removed == 1 and result.kept_protected == 1


def test_the_disk_cap_deletes_the_oldest_photos_even_undelivered_ones_with_a_disk_fault(terminal):
    sizes = [len(photo(i)) for i in range(4)]
    cap_mb = (sizes[2] + sizes[3] + 100) / 1024 / 1024  # room for the two newest photos only
    cfg_path, cfg = terminal(f"keep_days = 30\nmax_mb = {cap_mb!r}")
    state = Path(cfg.state_dir)
    records = punch_with_photos(state, 4)
    assert presensi_json("status", "--json", config=cfg_path)["faults"]["count"] == 0

    result = jobs.photo_retention(jobs.JobContext(cfg))

    assert [on_disk(state, r) for r in records] == [False, False, True, True]
    assert result["cap_removed"] == 2 and result["cap_removed_protected"] == 2
    shown = presensi_json("status", "--json", config=cfg_path)["faults"]
    assert shown["count"] == 1 and shown["open"][0]["category"] == "disk"
    assert "max_mb" in shown["open"][0]["message"] and "2 photos" in shown["open"][0]["message"]


def test_without_a_cap_nothing_undelivered_is_ever_deleted(terminal):
    _, cfg = terminal("keep_days = 0\nmax_mb = 0")
    state = Path(cfg.state_dir)
    records = punch_with_photos(state, 3)
    result = jobs.photo_retention(jobs.JobContext(cfg))
    assert all(on_disk(state, r) for r in records) and result["removed"] == 0
