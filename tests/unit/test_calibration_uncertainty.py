"""Each fitted step coefficient carries an uncertainty, and what the data cannot identify is
flagged: closed forms, planted truths, and data built to hide a parameter."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from calibration import CalibrationOptions, calibrate
from calibration.fit_replay import Target, replay_uncertainty
from calibration.fit_steps import fit_step_cost
from calibration.readers import read_tables
from calibration.replay import EngineSettings, plan
from calibration.table import StepRow, TraceTable
from calibration.uncertainty import choice_sd, linearised_sd
from sim.errors import ConfigError
from sim.profile import StepCost, VllmProfile, load_profile
from stairwise import api
from tests.unit.test_calibration_fit import known_profile, one_agent_trace, poisson

TRUTH = StepCost(base_s=0.008, prefill_token_s=2.5e-5, decode_seq_s=5e-5, context_token_s=6e-8)
PARAMS = ("base_s", "prefill_token_s", "decode_seq_s", "context_token_s")


def test_jacobian_sd_is_the_least_squares_standard_error_and_covers_at_its_nominal_rate():
    rng = np.random.default_rng(1)
    x = np.linspace(1, 10, 40)
    design = np.column_stack([np.ones_like(x), x])
    truth = np.array([2.0, 0.5])
    trials, inside = 400, 0
    for _ in range(trials):
        y = design @ truth + rng.normal(0, 0.3, len(x))
        fitted = np.linalg.lstsq(design, y, rcond=None)[0]
        residual = y - design @ fitted
        variance = residual @ residual / (len(x) - 2)
        sd = linearised_sd(design, variance)
        closed = np.sqrt(np.diag(np.linalg.inv(design.T @ design)) * variance)
        np.testing.assert_allclose(sd, closed, rtol=1e-9)
        inside += abs(fitted[1] - truth[1]) <= sd[1]
    # one sigma covers 68.3 %; 400 trials give a binomial sd of 2.3 points
    assert 0.61 < inside / trials < 0.76


def test_a_residual_the_parameter_does_not_move_gives_an_infinite_sd():
    design = np.array([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    sd = linearised_sd(design, 0.01)
    assert np.isfinite(sd[0]) and math.isinf(sd[1])


def batch_runs(with_prefill_alone: bool) -> list[StepRow]:
    """Offline batches whose answer is as long as the prompt (Argonne's design): a batch's
    prefill tokens and its decoding sequences both scale with batch × length."""
    rows = []
    for batch in (1, 4, 16, 64):
        for length in (128, 512, 1024, 2048):
            prefill_steps = math.ceil(batch / max(1, 2048 // length))
            rows.append(
                StepRow(
                    0.0,
                    steps=prefill_steps + length - 1,
                    prefill_steps=prefill_steps,
                    prefill_tokens=batch * length,
                    decode_seqs=batch * (length - 1),
                    context_tokens=batch * sum(length + k for k in range(1, length)),
                )
            )
    if with_prefill_alone:  # one batch's time to first token: its prefill steps alone
        rows.append(StepRow(0.0, steps=8, prefill_steps=8, prefill_tokens=16 * 1024))
    rng = np.random.default_rng(2)
    return [
        replace(
            r,
            duration_s=sum(
                getattr(TRUTH, p) * getattr(r, f)
                for p, f in zip(
                    PARAMS,
                    ("steps", "prefill_tokens", "decode_seqs", "context_tokens"),
                    strict=True,
                )
            )
            * rng.normal(1, 0.01),
        )
        for r in rows
    ]


def test_collinear_prefill_and_decode_are_flagged_until_a_prefill_is_measured_alone():
    hidden = fit_step_cost(batch_runs(False), PARAMS)
    assert {"prefill_token_s", "decode_seq_s"} <= set(hidden.not_identifiable)
    assert hidden.rel_sd["prefill_token_s"] == 1.0  # the cap: not pinned down
    seen = fit_step_cost(batch_runs(True), PARAMS)
    assert seen.not_identifiable == []
    for name in PARAMS:  # the planted truth, within three of the fit's own sigmas
        value, rel_sd = getattr(seen.cost, name), seen.rel_sd[name]
        assert rel_sd < 0.5, name
        assert abs(value - getattr(TRUTH, name)) <= 3 * rel_sd * value + 1e-12, name


def test_a_hardware_floor_holds_what_the_data_cannot_price_and_the_profile_says_so():
    unbounded = fit_step_cost(batch_runs(False), PARAMS).cost.prefill_token_s
    floor = 2 * unbounded  # a floor above where the collinear data happened to put it
    fit = fit_step_cost(batch_runs(False), PARAMS, floors={"prefill_token_s": floor})
    assert fit.cost.prefill_token_s == pytest.approx(floor)
    assert fit.at_floor == ["prefill_token_s"] and "prefill_token_s" in fit.not_identifiable
    assert fit.rel_sd["prefill_token_s"] == 1.0
    table = TraceTable(source="batches.csv", format="test", steps=batch_runs(False))
    options = CalibrationOptions(
        name="floored", model="m", hardware="h", params=PARAMS, floors={"prefill_token_s": floor}
    )
    profile = calibrate([table], options)
    assert isinstance(profile, VllmProfile)
    assert profile.step.prefill_token_s == pytest.approx(floor)
    assert "held at the hardware floor given to the fit: prefill_token_s" in (
        profile.provenance.notes
    )
    assert profile.fit["floors"] == {"prefill_token_s": floor}
    assert set(profile.step_rel_sd) == set(PARAMS)


def test_unknown_or_negative_floors_are_refused():
    splitwise = (
        Path(__file__).parent.parent / "data" / "splitwise-perf_model-llama2-70b-h100-tp4.csv"
    )
    for floors, needle in (({"speed_s": 1.0}, "no floor for speed_s"), ({"base_s": -1.0}, ">= 0")):
        with pytest.raises(ConfigError, match=needle):
            api.calibrate([splitwise], format="splitwise", model="m", hardware="h", floors=floors)


def test_a_replay_flags_the_batch_cost_only_when_no_request_shared_a_step(tmp_path):
    """Requests that ran alone decode one sequence per step: the per-sequence cost and the
    step's fixed part move every quantile alike. Under load they part."""
    truth_path = known_profile(tmp_path, kv_capacity_tokens=200_000)
    truth = load_profile(truth_path)
    assert isinstance(truth, VllmProfile)
    names = ["base_s", "prefill_token_s", "decode_seq_s"]
    verdicts = {}
    for label, rate in (("alone", 0.05), ("loaded", 4.0)):
        trace = one_agent_trace(
            tmp_path, truth_path, poisson(40, rate, prompts=(50, 1500), outputs=(16, 48)), 48
        )
        (table,) = read_tables([trace])
        generic = replace(table, scenario=None, format="test")
        replay_plan = plan(generic, "vllm", EngineSettings())
        verdicts[label] = replay_uncertainty(
            [replay_plan], [Target(generic, replay_plan)], truth, names
        )
    assert {"base_s", "decode_seq_s"} <= set(verdicts["alone"].not_identifiable)
    assert "prefill_token_s" not in verdicts["alone"].not_identifiable
    assert verdicts["loaded"].not_identifiable == []
    assert all(v < 0.5 for v in verdicts["loaded"].rel_sd.values()), verdicts["loaded"]


def test_a_choice_among_a_few_values_gets_the_spread_of_those_that_fit_as_well():
    # 20 residuals, best cost 1.0: within 1.05 fits "as well"
    chosen = choice_sd("x", 0.8, {1.0: 1.04, 0.8: 1.0, 0.6: 1.5, 0.4: 3.0}, 20, 0.2)
    assert chosen.rel_sd == {"x": pytest.approx(0.1 / 0.8, abs=1e-4)}
    assert chosen.not_identifiable == []
    flat = choice_sd("x", 0.8, {1.0: 1.01, 0.8: 1.0, 0.6: 1.02, 0.4: 1.03}, 20, 0.2)
    assert flat.not_identifiable == ["x"]
    lone = choice_sd("x", 0.6, {1.0: 2.0, 0.8: 1.5, 0.6: 1.0, 0.4: 1.6}, 20, 0.2)
    assert lone.rel_sd["x"] == pytest.approx(0.1 / 0.6, abs=1e-4)  # half a grid step
