"""Prediction intervals: they cover planted truths at their nominal rate, shrink with more
requests when only the seeds vary, and never leave out the prediction they surround."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sim import simulate
from sim.capacity import PlanSettings, plan
from sim.errors import ConfigError
from sim.intervals import (
    HEADLINE_METRICS,
    POOL_WORTH_S,
    IntervalSettings,
    inside,
    interval_paths,
    pool_size,
    predict,
)
from sim.profile import parse_profile
from sim.scenario import Scenario, scenario_from_dict
from sim.simulator import Simulator
from sim.sweep.backends import default_workers
from sim.sweep.replicate import draw_profile, prediction_interval, replication_profiles
from tests.helpers import one_at_a_time, vllm_profile, write_profile

PLANTED_REL_SD = {"base_s": 0.3, "decode_seq_s": 0.3, "prefill_token_s": 0.3}


def planted_profile(rel_sd: dict[str, float] | None = None) -> dict:
    return {**vllm_profile(), "step_rel_sd": PLANTED_REL_SD if rel_sd is None else rel_sd}


FIXED_PROMPTS = {"dist": "fixed", "value": 256}


def one_agent(
    directory: Path,
    profile: dict,
    requests: int = 4,
    seed: int = 1,
    rate: float = 4.0,
    prompts: dict = FIXED_PROMPTS,
) -> Scenario:
    """One agent answering 32 tokens on a vLLM server, Poisson arrivals: the seed moves the
    arrivals (and prompt lengths, if drawn), the profile's parameters every step."""
    return scenario_from_dict(
        {
            "name": "one-agent",
            "seed": seed,
            "servers": {"engine": {"kind": "vllm", "profile": write_profile(directory, profile)}},
            "topology": {"kind": "graph", "unit": {"tokens": 32}, "agents": {"solo": {"steps": 1}}},
            "workload": {
                "requests": requests,
                "arrival": {"kind": "poisson", "rate_per_s": rate},
                "prompt_tokens": prompts,
            },
        }
    )


def truth(profile: dict, rng: np.random.Generator) -> dict:
    """A machine whose true costs are the planted profile's, each off by a lognormal factor of
    the planted relative sd (median 1) — drawn here, not by the code under test."""
    step = dict(profile["step"])
    for name, rel_sd in PLANTED_REL_SD.items():
        step[name] *= math.exp(math.sqrt(math.log1p(rel_sd**2)) * rng.standard_normal())
    return {**profile, "step": step, "step_rel_sd": {}}


COVERED = ("e2e_s.p50", "ttft_s.p90")


def coverage(tmp_path: Path, predicted_profile: dict, trials: int) -> float:
    """Share of trials whose live stand-in (the truth profile, its own seed) falls inside
    the interval predicted from ``predicted_profile`` (6 runs: the t interval is exact for
    normal values at any count, so few runs keep the test fast without biasing it)."""
    rng = np.random.default_rng(2024)
    hits = []
    for trial in range(trials):
        machine = parse_profile(truth(planted_profile(), rng), "truth")
        observed = Simulator(
            one_agent(tmp_path, planted_profile(), seed=10_000 + trial),
            profiles={"engine": machine},
        ).run()
        scenario = one_agent(tmp_path, predicted_profile, seed=trial)
        predicted = predict(scenario, settings=IntervalSettings(replications=6)).summary
        for path in COVERED:
            metric, quantile = path.split(".")
            low, high = predicted[metric][f"{quantile}_ci"]
            hits.append(low <= observed.summary[metric][quantile] <= high)
    return float(np.mean(hits))


def test_intervals_cover_planted_truths_at_about_their_nominal_rate(tmp_path):
    # 40 trials x 2 quantiles at a nominal 90 %: one standard error is about 4 %
    assert 0.78 <= coverage(tmp_path, planted_profile(), trials=40) <= 0.98


def test_without_the_parameter_uncertainty_the_same_truths_are_missed_far_more(tmp_path):
    # the seeds alone know nothing of a 30 % error in every cost: the planted part matters
    assert coverage(tmp_path, planted_profile(rel_sd={}), trials=20) < 0.6


def test_with_seeds_only_the_interval_narrows_as_runs_get_more_requests(tmp_path):
    def width(requests: int) -> float:
        # requests 20 s apart rarely meet: each E2E follows its own prompt length, so the
        # median of the run is a sample median of a continuous distribution
        prompts = {"dist": "uniform", "low": 16, "high": 1024}
        scenario = one_agent(tmp_path, planted_profile(rel_sd={}), requests, 1, 0.05, prompts)
        settings = IntervalSettings(replications=6)
        low, high = predict(scenario, settings=settings).summary["e2e_s"]["p50_ci"]
        return high - low

    # the spread of a sample median falls as 1/sqrt(n): 16x the requests, about 1/4 the width
    assert width(64) < width(4) / 2


def test_every_headline_interval_contains_its_prediction_which_intervals_leave_unchanged(
    tmp_path,
):
    scenario = one_agent(tmp_path, planted_profile())
    alone = Simulator(scenario, profile_dir=tmp_path).run().summary
    predicted = predict(scenario, settings=IntervalSettings(replications=4)).summary
    for path in interval_paths():
        metric, quantile = path.split(".")
        value = predicted[metric][quantile]
        assert value == alone[metric][quantile]
        low, high = predicted[metric][f"{quantile}_ci"]
        assert low <= value <= high
    assert predicted["intervals"]["replications"] == 4
    assert predicted["intervals"]["parameter_uncertainty"] == ["engine"]
    json.dumps(predicted, allow_nan=False)  # what --json prints


def test_with_one_seed_only_the_parameters_make_the_interval(tmp_path):
    one_seed = IntervalSettings(replications=6, vary_seeds=False)
    fitted_only = predict(one_agent(tmp_path, planted_profile(rel_sd={})), settings=one_seed)
    assert fitted_only.summary["e2e_s"]["p50_ci"] == pytest.approx(
        [fitted_only.summary["e2e_s"]["p50"]] * 2
    )
    uncertain = predict(one_agent(tmp_path, planted_profile()), settings=one_seed).summary
    low, high = uncertain["e2e_s"]["p50_ci"]
    assert low < uncertain["e2e_s"]["p50"] < high
    assert uncertain["intervals"]["seeds_vary"] is False


def test_one_replication_means_no_interval(tmp_path):
    summary = simulate(one_agent(tmp_path, planted_profile()), replications=1).summary
    assert summary["ttft_s"]["p50_ci"] is None and summary["ttft_s"]["p90_ci"] is None
    assert summary["ttft_s"]["p50"] is not None
    assert set(inside(summary, summary).values()) == {None}


def test_inside_says_which_observed_quantiles_the_intervals_hold(tmp_path):
    scenario = one_agent(tmp_path, planted_profile())
    predicted = predict(scenario, settings=IntervalSettings(replications=4)).summary
    observed = {metric: dict(predicted[metric]) for metric in HEADLINE_METRICS}
    observed["e2e_s"]["p50"] = predicted["e2e_s"]["p50_ci"][1] * 1.01
    observed["ttft_s"]["p90"] = None
    verdicts = inside(predicted, observed)
    assert verdicts["e2e_s.p50"] is False and verdicts["ttft_s.p90"] is None
    assert verdicts["ttft_s.p50"] is True  # the prediction itself is always inside


def test_prediction_interval_is_the_student_t_one_in_log_scale():
    values = [1.0, 2.0, 4.0]  # logs 0, ln 2, 2 ln 2: mean ln 2, sd ln 2
    t90 = 2.919985580355516  # t(0.95, 2 degrees of freedom)
    half = t90 * math.log(2) * math.sqrt(1 + 1 / 3)
    low, high = prediction_interval(values, 0.9)
    assert low == pytest.approx(2 * math.exp(-half))
    assert high == pytest.approx(2 * math.exp(half))
    # a value <= 0 keeps the linear scale: mean 0, sd sqrt 2, t(0.95, 1 degree of freedom)
    half = 6.313751514675 * math.sqrt(2) * math.sqrt(1 + 1 / 2)
    assert prediction_interval([-1.0, 1.0], 0.9) == pytest.approx((-half, half))
    assert prediction_interval([3.0, 3.0], 0.9, point=5.0) == pytest.approx((3.0, 5.0))
    assert prediction_interval([3.0, None], 0.9) is None


def test_parameter_draws_are_lognormal_with_the_stated_relative_sd():
    profile = parse_profile(planted_profile(), "planted")
    rng = np.random.default_rng(0)
    drawn = np.array([draw_profile(profile, rng).step.base_s for _ in range(4000)])
    fitted = profile.step.base_s
    assert np.median(drawn) == pytest.approx(fitted, rel=0.03)
    assert drawn.std() / drawn.mean() == pytest.approx(0.3, rel=0.06)
    assert {draw_profile(profile, rng).step.context_token_s for _ in range(5)} == {
        profile.step.context_token_s
    }  # a parameter without uncertainty stays as fitted


def test_a_speed_draw_moves_each_phase_s_parameters_together_by_the_stated_spread():
    """A run's speed is one factor per phase: prefill parameters keep their ratios to one
    another, as do those every step pays, and each factor has the stated relative sd."""
    profile = parse_profile(
        {**vllm_profile(), "speed_rel_sd": {"prefill": 0.05, "decode": 0.2}}, "drifting"
    )
    rng = np.random.default_rng(0)
    draws = [draw_profile(profile, rng).step for _ in range(4000)]
    fitted = profile.step
    prefill = np.array([d.prefill_token_s / fitted.prefill_token_s for d in draws])
    decode = np.array([d.base_s / fitted.base_s for d in draws])
    assert [d.prefill_attention_s / fitted.prefill_attention_s for d in draws] == pytest.approx(
        prefill
    )
    assert [d.context_token_s / fitted.context_token_s for d in draws] == pytest.approx(decode)
    assert np.median(decode) == pytest.approx(1, rel=0.02)
    assert prefill.std() / prefill.mean() == pytest.approx(0.05, rel=0.06)
    assert decode.std() / decode.mean() == pytest.approx(0.2, rel=0.06)
    assert abs(np.corrcoef(prefill, decode)[0, 1]) < 0.05  # the phases drift apart


def test_a_speed_spread_widens_an_interval_and_is_named_in_it(tmp_path):
    one_seed = IntervalSettings(replications=8, vary_seeds=False)
    steady = predict(one_agent(tmp_path, planted_profile()), settings=one_seed).summary
    drifting = {**planted_profile(), "speed_rel_sd": {"prefill": 0.1, "decode": 0.2}}
    moving = predict(one_agent(tmp_path, drifting), settings=one_seed).summary
    assert moving["e2e_s"]["p50"] == steady["e2e_s"]["p50"]  # the prediction is the fit's

    def width(summary: dict) -> float:
        low, high = summary["e2e_s"]["p50_ci"]
        return high / low

    assert width(moving) > width(steady)
    assert steady["intervals"]["speed_spread"] == []
    assert moving["intervals"]["speed_spread"] == ["engine"]


def test_a_speed_spread_beyond_1_or_of_no_phase_is_refused():
    with pytest.raises(ConfigError, match="between 0 and 1"):
        parse_profile({**vllm_profile(), "speed_rel_sd": {"decode": 1.5}}, "bad")
    with pytest.raises(ConfigError, match="prefill"):
        parse_profile({**vllm_profile(), "speed_rel_sd": {"prefil": 0.1}}, "typo")


def test_replication_0_runs_the_fitted_profiles_the_others_one_reproducible_draw_each(tmp_path):
    shared = write_profile(tmp_path, planted_profile())
    other = write_profile(tmp_path, planted_profile())
    servers = {"a": shared, "b": shared, "c": other}
    scenario = scenario_from_dict(
        {
            "name": "three-servers",
            "seed": 5,
            "servers": {name: {"kind": "vllm", "profile": path} for name, path in servers.items()},
            "topology": {
                "kind": "graph",
                "agents": {name: {"server": name, "steps": 1} for name in servers},
                "agent": {"server": "a"},
                "output": "a",
            },
        }
    )
    assert replication_profiles(scenario, None, 0) is None
    drawn = replication_profiles(scenario, None, 1)
    assert drawn == replication_profiles(scenario, None, 1)  # the seed decides, nothing else
    assert drawn["a"] is drawn["b"]  # one profile, one machine, one draw
    assert drawn["a"].step.base_s != drawn["c"].step.base_s  # another profile draws anew
    again = replication_profiles(scenario.model_copy(update={"seed": 6}), None, 1)
    assert again["a"].step.base_s != drawn["a"].step.base_s


def test_a_profile_naming_an_unknown_parameter_is_a_config_error():
    profile = parse_profile(planted_profile({"base": 0.1}), "typo")
    with pytest.raises(ConfigError, match="not a step-cost parameter"):
        draw_profile(profile, np.random.default_rng(0))


def test_interval_runs_on_a_process_pool_give_the_same_numbers(tmp_path):
    scenario = one_agent(tmp_path, planted_profile(), requests=8)
    here = simulate(scenario, replications=5, workers=1)
    seen: list[tuple[int, int]] = []
    pooled = simulate(
        scenario, replications=5, workers=2, progress=lambda done, total: seen.append((done, total))
    )
    assert pooled.summary == here.summary  # the intervals' floats too: runs kept in order
    # the same records but for when each trace was made (the two runs may straddle a second)
    assert [r | {"created": ""} for r in pooled.records[:1]] == [
        r | {"created": ""} for r in here.records[:1]
    ]
    assert pooled.records[1:] == here.records[1:]
    assert seen[-1] == (8 * 5, 8 * 5)  # every run reported, the pool's as they finish


def test_unasked_a_pool_is_used_only_when_the_runs_outlast_its_start():
    assert pool_size(None, serial_s=POOL_WORTH_S / 2) == 1
    assert pool_size(None, serial_s=POOL_WORTH_S * 2) == default_workers()
    assert pool_size(3, serial_s=0.0) == 3  # as asked


def test_bad_workers_is_a_config_error_before_anything_runs(tmp_path):
    scenario = one_agent(tmp_path, planted_profile())
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        simulate(scenario, workers=0, trace=tmp_path / "never.jsonl")
    assert not (tmp_path / "never.jsonl").exists()


@pytest.mark.parametrize(
    ("replications", "level", "message"),
    [(0, 0.9, "--replications must be at least 1"), (5, 1.0, "--level"), (5, 0.0, "--level")],
)
def test_bad_interval_options_are_config_errors(tmp_path, replications, level, message):
    scenario = one_agent(tmp_path, planted_profile())
    with pytest.raises(ConfigError, match=message):
        simulate(scenario, replications=replications, level=level)


def test_plan_gives_intervals_at_its_answer(tmp_path):
    # the hand-made server of test_capacity: nothing random, so every run agrees exactly
    scenario = one_at_a_time(tmp_path)
    settings = PlanSettings(requests=20, search_schedules=False, interval_replications=3)
    result = plan(scenario, ["e2e_p90=1000s"], settings, workers=1)
    at_max = result.capacity.at_max
    value = at_max.values["e2e_p90"]
    assert at_max.intervals == {"e2e_p90": (value, value)}
    assert result.capacity.held_share == 1.0
    assert result.to_dict()["capacity"]["at_max"]["intervals"] == {"e2e_p90": [value, value]}


def test_plan_intervals_widen_with_the_profiles_uncertainty(tmp_path):
    scenario = one_agent(tmp_path, planted_profile(), requests=10)
    settings = PlanSettings(
        requests=10, search_schedules=False, rate_tolerance=0.2, interval_replications=5
    )
    capacity = plan(scenario, ["ttft_p90=2s"], settings, workers=1).capacity
    low, high = capacity.at_max.intervals["ttft_p90"]
    assert low < capacity.at_max.values["ttft_p90"] < high
    assert capacity.held_share is not None and 0 <= capacity.held_share <= 1


def test_bad_plan_interval_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="--interval-replications must be at least 1"):
        plan(one_at_a_time(tmp_path), ["e2e_p90=10s"], PlanSettings(interval_replications=0))
