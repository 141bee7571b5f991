"""The simulation harness (bench/time_sim.py) drives the real punch log and estimation code with synthetic
clocks; here every scenario must keep every punch's true time inside its interval, after every sample and
at the end, and keep intervals ≤ 2 s near a same-boot sample once the drift is measured. The widths per
scenario are printed (pytest -s) and by `python bench/time_sim.py`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "time_sim.py"
_spec = importlib.util.spec_from_file_location("time_sim", BENCH)
time_sim = importlib.util.module_from_spec(_spec)
sys.modules["time_sim"] = time_sim  # dataclasses look their module up while the file executes
_spec.loader.exec_module(time_sim)

OFFLINE = {sc.name for sc in time_sim.offline_scenarios(4)}
SCENARIOS = {sc.name: sc for sc in time_sim.scenarios(days=1.5, office_days=5)}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_true_time_is_inside_its_interval(name, tmp_path):
    result = time_sim.run_scenario(SCENARIOS[name], tmp_path / "state")
    print(json.dumps({k: result[k] for k in ("scenario", "width_s", "width_within_8h_of_sample_s",
                                              "unanchored_width_s", "flags")}))
    assert result["punches"] > 10 and result["checks"] > result["punches"]
    assert result["all_inside"], result["violations"]
    assert not result["near_sample_over_2s"], result["near_sample_over_2s"]
    assert result["stored_equals_annotate"], "re-anchored punch_times differ from annotate()"
    if name in OFFLINE:
        check_offline(name, result)
        return
    if name == "lying_server":
        assert result["contradicting_samples"] == 2
        assert result["flags"].get("sample-contradiction") == result["punches"]
    else:
        assert result["contradicting_samples"] == 0, "honest samples were rejected"
    if name == "boot_without_sample":
        assert result["unanchored_punches"] > 0
        assert result["flags"]["review"] == result["unanchored_punches"]
        assert result["unanchored_width_s"]["unbounded"] == 0, "order bounds must close both ends"
    else:
        assert result["unanchored_punches"] == 0
    if name == "boot_1970":
        assert result["flags"]["wall-clock-implausible"] == result["punches"]
    if name in ("boot_1970", "boot_3_days_behind", "wall_stepped", "sparse_samples_50ppm",
                "asymmetric_delays", "http_date_only"):
        assert result["width_within_8h_of_sample_s"]["max"] <= 2.0


def check_offline(name: str, r: dict) -> None:
    """The offline offices: RTC widths within what the rating allows, refusals where the RTC lies."""
    if name.startswith("rtc_") or name == "zk_adms_claims_ignored":
        assert r["rtc_punches"] > 0 and not r["rtc_over_allowance"], r["rtc_over_allowance"]
        assert r["calibration_sources"] == ["server-signed"]  # never from an RTC sample, a ZK or ADMS claim
        assert abs(r["chip_error_at_end_s"]) <= 1.5 + r["rtc_rating_ppm"] * 1e-6 * 5 * 86400
    if name == "rtc_office_30d_power_cuts":  # 2 ppm: a few seconds wide after days offline
        assert r["unanchored_punches"] == 0 and r["width_s"]["max"] <= 2.5 + 2 * 2e-6 * 5 * 86400
    if name == "gps_only":
        assert r["unanchored_punches"] == 0 and r["gps_samples"] > 0 and r["width_s"]["max"] <= 1.2
    if name == "rtc_lost_dead_battery":  # boots 2 and 3 have no usable time source: flagged, bounded by order
        assert r["rtc_refused"]["rtc-lost-time"] > 0 and r["unanchored_punches"] > 0
        assert r["flags"]["review"] == r["unanchored_punches"] and r["unanchored_width_s"]["unbounded"] == 0
    else:
        assert r["unanchored_punches"] == 0
    if name == "zk_adms_claims_ignored":  # both claims of every offline boot kept as evidence, never fitted
        assert r["claims_kept_aside"] >= 2 * 4 and r["contradicting_samples"] == 0
    else:
        assert r["contradicting_samples"] == 0


def test_default_drift_bound_with_a_100ppm_crystal_is_only_wrong_before_the_drift_is_measured(tmp_path):
    """The configured bound (50 ppm) is an assumption; a 100 ppm crystal breaks it. Once two samples measure
    the drift the intervals hold again and the boot is flagged drift-exceeds-bound."""
    sc = time_sim.Scenario("drift_100ppm_default_bound", "100 ppm crystal, 50 ppm assumed",
                           [dict(at=0, dur=2 * time_sim.DAY, rate=100.0, wall="ok")])
    result = time_sim.run_scenario(sc, tmp_path / "state")
    final = [v for v in result["violations"] if v.get("checked_at") == "end"]
    assert final == [], final
    assert result["flags"].get("drift-exceeds-bound") == result["punches"]
