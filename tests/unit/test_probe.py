"""The engine probe recovers a planted change of engine speed from simulator-made traces."""

from __future__ import annotations

import pytest

from calibration.probe import (
    PROBE_CELLS,
    ProbeReading,
    drift_pct,
    probe_scenarios,
    read_probe,
    rescaled,
)
from sim.profile import load_profile
from sim.simulator import Simulator

PROFILE = "vllm-cpu-smollm2-135m"
SERVER = {"kind": "vllm", "profile": PROFILE}


def probe_on(truth_prefill: float, truth_decode: float, seed: int = 11) -> ProbeReading:
    """Probe a simulated engine that runs ``truth_*`` times the shipped profile's costs."""
    base = load_profile(PROFILE)
    truth = rescaled(base, truth_prefill, truth_decode)
    scenarios = probe_scenarios(SERVER, seed=seed, chars_per_token=base.chars_per_token)
    measured = [Simulator(s, profiles={"target": truth}).run().records for s in scenarios]
    return read_probe("target", base, scenarios, measured)


@pytest.mark.parametrize(("prefill", "decode"), [(1.0, 1.0), (1.3, 0.8), (0.7, 1.45)])
def test_probe_recovers_a_planted_speed_change_within_2_percent(prefill, decode):
    reading = probe_on(prefill, decode)
    assert reading.prefill_factor == pytest.approx(prefill, rel=0.02)
    assert reading.decode_factor == pytest.approx(decode, rel=0.02)
    for cell in reading.cells:  # the rescaled profile reproduces every probe cell
        assert cell.rescaled_s == pytest.approx(cell.live_s, rel=0.02)


def test_a_slower_engine_reads_as_a_positive_deviation_and_a_drift():
    before, after = probe_on(1.0, 1.0), probe_on(1.0, 1.25)
    assert before.deviation_pct["decode"] == pytest.approx(0.0, abs=2)
    assert after.deviation_pct["decode"] == pytest.approx(25.0, abs=2)
    assert drift_pct(before, after) == pytest.approx(25.0, abs=2)


def test_each_cell_isolates_its_phase_and_a_reading_round_trips_through_json():
    reading = probe_on(1.5, 1.0)
    for cell, probe in zip(reading.cells, PROBE_CELLS, strict=True):
        if probe.measures == "decode":  # a prefill slowdown leaves decode cells alone
            assert cell.live_s == pytest.approx(cell.predicted_s, rel=0.02)
        else:
            assert cell.live_s > 1.2 * cell.predicted_s
    assert ProbeReading.from_dict(reading.to_dict()) == reading


def test_rescaling_leaves_the_original_profile_untouched():
    base = load_profile(PROFILE)
    scaled = rescaled(base, 2.0, 3.0)
    assert scaled.step.prefill_token_s == 2.0 * base.step.prefill_token_s
    assert scaled.step.base_s == 3.0 * base.step.base_s
    assert scaled.step.decode_seqs_free == base.step.decode_seqs_free
    assert load_profile(PROFILE).step == base.step


def test_a_probe_cell_that_measured_nothing_is_one_line_naming_the_cell():
    from calibration.probe import _p50
    from sim.errors import ConfigError

    header = {"type": "header", "name": "probe-profile-p128-c1-k0", "scenario": {}}
    with pytest.raises(ConfigError, match="probe-profile-p128-c1-k0 measured no ttft_s"):
        _p50([header], "ttft_s")
