"""Fitting recovers known parameters from traces the simulator made on a known profile."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from calibration import CalibrationOptions, calibrate, read_tables
from calibration.fit_latency import fit_api, fit_latency
from calibration.fit_replay import at_speed, fit_by_replay, request_steps, run_speed
from calibration.fit_steps import fit_step_cost
from calibration.profiling import cell_scenario, fit_profiling_run, profiling_plan
from calibration.replay import EngineSettings, compare, plan
from calibration.table import StepRow
from sim import Simulator, scenario_from_dict
from sim.profile import ApiProfile, StepCost, VllmProfile, load_profile, parse_profile
from tests.helpers import api_profile, vllm_profile, write_profile

TRUTH = StepCost(
    base_s=0.02,
    prefill_token_s=2e-4,
    prefill_attention_s=5e-8,
    decode_seq_s=1.5e-3,
    context_token_s=4e-6,
    prefill_step_s=0.01,
)


def known_profile(tmp_path: Path, **overrides: Any) -> str:
    data = vllm_profile(**TRUTH.model_dump())
    data.update(overrides)
    return write_profile(tmp_path, data)


def one_agent_trace(
    tmp_path: Path, profile: str, workload: dict[str, Any], tokens: int = 48
) -> Path:
    scenario = scenario_from_dict(
        {
            "seed": 3,
            "servers": {"gpu": {"kind": "api" if "api" in profile else "vllm", "profile": profile}},
            "topology": {
                "kind": "graph",
                "unit": {"tokens": tokens},
                "agents": {"solo": {"steps": 1}},
            },
            "workload": workload,
        }
    )
    trace = tmp_path / f"trace-{len(list(tmp_path.glob('trace-*')))}.jsonl"
    Simulator(scenario, trace_path=trace).run()
    return trace


def poisson(
    requests: int, rate: float, prompts: tuple[int, int], outputs: tuple[int, int]
) -> dict[str, Any]:
    """A workload of Poisson arrivals with uniform prompt and answer lengths."""
    return {
        "requests": requests,
        "arrival": {"kind": "poisson", "rate_per_s": rate},
        "prompt_tokens": {"dist": "uniform", "low": prompts[0], "high": prompts[1]},
        "output_tokens": {"dist": "uniform", "low": outputs[0], "high": outputs[1]},
    }


def test_direct_fit_recovers_the_step_cost_from_requests_that_ran_alone(tmp_path):
    trace = one_agent_trace(
        tmp_path,
        known_profile(tmp_path),
        {
            "requests": 12,
            "prompt_tokens": {"dist": "uniform", "low": 20, "high": 1500},
            "output_tokens": {"dist": "uniform", "low": 2, "high": 48},
        },
    )
    (table,) = read_tables([trace])
    steps = [s for row in table.served for s in request_steps(row)]
    fit = fit_step_cost(steps)
    # one sequence per decode step: decode_seq_s cannot be told from base_s, and says so;
    # the step times themselves are recovered exactly
    assert fit.not_identifiable == ["decode_seq_s"]
    assert fit.cost.base_s == pytest.approx(TRUTH.base_s + TRUTH.decode_seq_s, rel=1e-4)
    assert fit.cost.prefill_step_s == pytest.approx(
        TRUTH.prefill_step_s - TRUTH.decode_seq_s, rel=1e-3
    )
    for name in ("prefill_token_s", "prefill_attention_s", "context_token_s"):
        assert getattr(fit.cost, name) == pytest.approx(getattr(TRUTH, name), rel=1e-3), name
    assert fit.quality["r2"] == pytest.approx(1.0, abs=1e-9)


def test_direct_fit_shrugs_off_outliers():
    rng = np.random.default_rng(0)
    rows = []
    for batch in (1, 2, 4, 8, 16, 32, 64):
        for context in (128, 512, 2048):
            rows.append(StepRow(0.0, decode_seqs=batch, context_tokens=batch * context))
    for prompt in (32, 128, 512, 1024, 2048, 4096):
        rows.append(
            StepRow(0.0, prefill_steps=1, prefill_tokens=prompt, prefill_attention=prompt * prompt)
        )
    exact = [
        replace(
            r,
            duration_s=TRUTH.seconds(
                int(r.prefill_tokens),
                r.prefill_attention,
                int(r.decode_seqs),
                int(r.context_tokens),
            ),
        )
        for r in rows
    ]
    noisy = [replace(r, duration_s=r.duration_s * rng.normal(1, 0.01)) for r in exact]
    for i in (3, 11, 20):
        noisy[i] = replace(noisy[i], duration_s=noisy[i].duration_s * 3)
    fit = fit_step_cost(noisy)
    for name in ("base_s", "prefill_token_s", "decode_seq_s", "context_token_s"):
        assert getattr(fit.cost, name) == pytest.approx(getattr(TRUTH, name), rel=0.05), name
    assert fit.quality["rel_err_p50"] < 0.02 and fit.quality["rel_err_max"] > 0.5


def test_replay_fit_recovers_parameters_from_a_loaded_trace(tmp_path):
    truth_path = known_profile(tmp_path, kv_capacity_tokens=200_000)
    trace = one_agent_trace(
        tmp_path,
        truth_path,
        poisson(60, 1.5, prompts=(50, 1500), outputs=(8, 64)),
        tokens=64,
    )
    (table,) = read_tables([trace])
    generic = replace(table, scenario=None, format="test")  # the one-agent replay path
    truth = load_profile(truth_path)
    assert isinstance(truth, VllmProfile)
    # quantiles pin down what the trace varies: the step's fixed part (TPOT) and the
    # per-token prefill (TTFT across prompt lengths); the rest stays at its known value
    free = ("base_s", "prefill_token_s")
    wrong = TRUTH.model_copy(update={"base_s": 0.032, "prefill_token_s": 1.2e-4})
    start = truth.model_copy(update={"step": wrong})
    fit = fit_by_replay([generic], start, EngineSettings(), params=free, max_evaluations=120)
    assert fit.fitted == list(free)
    # event reordering makes single quantiles jump a few percent near the truth
    assert fit.quality["max_abs_err_pct"] < 10
    for name in free:
        assert getattr(fit.profile.step, name) == pytest.approx(getattr(TRUTH, name), rel=0.1), name
    errors = compare(generic, fit.profile, EngineSettings())["error_pct"]
    assert all(abs(e) < 5 for e in errors.values()), errors
    before = compare(generic, start, EngineSettings())["error_pct"]
    assert abs(before["tpot_p50"]) > 20  # the start was clearly wrong


def test_replay_fit_finds_a_batch_cost_that_grows_slower_than_the_batch(tmp_path):
    concave = TRUTH.model_copy(update={"decode_seq_s": 6e-3, "decode_seq_exponent": 0.6})
    truth_path = known_profile(tmp_path, kv_capacity_tokens=200_000, step=concave.model_dump())
    tables = []
    for rate in (1.0, 8.0):  # a light and a heavy load: batches of ~1–3 and of ~10–20
        trace = one_agent_trace(
            tmp_path,
            truth_path,
            poisson(60, rate, prompts=(50, 500), outputs=(16, 64)),
            tokens=64,
        )
        (table,) = read_tables([trace])
        tables.append(replace(table, scenario=None, format="test"))
    truth = load_profile(truth_path)
    assert isinstance(truth, VllmProfile)
    linear = truth.step.model_copy(update={"decode_seq_s": 2e-3, "decode_seq_exponent": 1.0})
    start = truth.model_copy(update={"step": linear})
    free = ("decode_seq_s", "decode_seq_exponent")
    fit = fit_by_replay(tables, start, EngineSettings(), params=free, max_evaluations=40)
    assert fit.fitted == ["decode_seq_s", "decode_seq_exponent"]
    assert fit.profile.step.decode_seq_exponent == 0.6
    assert fit.profile.step.decode_seq_s == pytest.approx(6e-3, rel=0.15)
    for table in tables:
        errors = compare(table, fit.profile, EngineSettings())["error_pct"]
        assert abs(errors["tpot_p50"]) < 5, errors


def test_replay_fit_recovers_the_step_cost_of_an_engine_that_pads_prompt_batches(tmp_path):
    # vLLM 0.2: prompts that arrive together are prefilled as one batch padded to the longest
    truth_path = known_profile(
        tmp_path, kv_capacity_tokens=200_000, scheduler="prefill_first", prompt_padding=256
    )
    trace = one_agent_trace(
        tmp_path, truth_path, poisson(60, 2.0, prompts=(50, 1000), outputs=(8, 64)), tokens=64
    )
    (table,) = read_tables([trace])
    generic = replace(table, scenario=None, format="test")
    truth = load_profile(truth_path)
    assert isinstance(truth, VllmProfile)
    free = ("base_s", "prefill_token_s")
    wrong = TRUTH.model_copy(update={"base_s": 0.032, "prefill_token_s": 1.2e-4})
    fit = fit_by_replay(
        [generic],
        truth.model_copy(update={"step": wrong}),
        EngineSettings(),
        params=free,
        max_evaluations=120,
    )
    for name in free:
        assert getattr(fit.profile.step, name) == pytest.approx(getattr(TRUTH, name), rel=0.1), name


def test_replay_fit_tries_the_batch_exponents_it_is_given(tmp_path):
    concave = TRUTH.model_copy(update={"decode_seq_s": 8e-3, "decode_seq_exponent": 0.3})
    truth_path = known_profile(tmp_path, kv_capacity_tokens=200_000, step=concave.model_dump())
    tables = []
    for rate in (1.0, 8.0):
        trace = one_agent_trace(
            tmp_path, truth_path, poisson(60, rate, prompts=(50, 500), outputs=(16, 64)), tokens=64
        )
        (table,) = read_tables([trace])
        tables.append(replace(table, scenario=None, format="test"))
    truth = load_profile(truth_path)
    assert isinstance(truth, VllmProfile)
    linear = truth.step.model_copy(update={"decode_seq_s": 2e-3, "decode_seq_exponent": 1.0})
    free = ("decode_seq_s", "decode_seq_exponent")
    fit = fit_by_replay(
        tables,
        truth.model_copy(update={"step": linear}),
        EngineSettings(),
        params=free,
        max_evaluations=40,
        exponents=(1.0, 0.6, 0.3),
    )
    assert fit.profile.step.decode_seq_exponent == 0.3
    assert fit.profile.step.decode_seq_s == pytest.approx(8e-3, rel=0.15)


def test_the_kv_occupancy_a_trace_shows_reaches_the_capacity_only_when_it_binds(tmp_path):
    capacity = 8_000
    peaks = {}
    for rate in (0.5, 20.0):
        trace = one_agent_trace(
            tmp_path,
            known_profile(tmp_path, kv_capacity_tokens=capacity),
            poisson(80, rate, prompts=(200, 800), outputs=(32, 64)),
            tokens=64,
        )
        (table,) = read_tables([trace])
        peaks[rate] = table.kv_occupancy_peak(16)
    assert peaks[0.5] < capacity / 2  # a few requests at a time
    # saturated: right up to the capacity (a preempted request still counts as held: +5 %)
    assert 0.9 * capacity <= peaks[20.0] <= 1.05 * capacity


def test_api_fit_recovers_ttft_line_and_itl_distribution(tmp_path):
    data = api_profile(ttft_s=0.3, per_token_s=4e-4, itl_s=0.02, name="truth-api")
    data["ttft_jitter"] = {"dist": "lognormal", "median_ms": 30, "sigma": 0.5}
    data["itl"] = {"dist": "gamma", "mean_ms": 25, "shape": 8}
    trace = one_agent_trace(
        tmp_path,
        write_profile(tmp_path, data),
        {
            "requests": 150,
            "arrival": {"kind": "poisson", "rate_per_s": 20},
            "prompt_tokens": {"dist": "uniform", "low": 50, "high": 3000},
        },
    )
    (table,) = read_tables([trace])
    fit = fit_api([table])
    assert fit.ttft_per_uncached_token_s == pytest.approx(4e-4, rel=0.1)
    assert fit.ttft_base_s == pytest.approx(0.3, abs=0.03)
    assert fit.itl.dist == "gamma" and fit.itl.mean_s == pytest.approx(0.025, rel=0.03)
    assert fit.quality["itl"]["ks"]["gamma"] < 0.05
    profile = calibrate(
        [table], CalibrationOptions(name="fitted-api", kind="api", model="m", hardware="h")
    )
    assert isinstance(profile, ApiProfile)
    assert parse_profile(profile.model_dump(mode="json"), "round trip") == profile


def test_distribution_fit_keeps_a_good_parametric_fit_and_else_the_samples():
    rng = np.random.default_rng(1)
    lognormal = fit_latency(rng.lognormal(np.log(0.004), 0.6, 2000), "delays")
    assert lognormal.dist.dist == "lognormal"
    assert lognormal.dist.median_ms == pytest.approx(4.0, rel=0.05)
    assert lognormal.dist.sigma == pytest.approx(0.6, rel=0.05)
    two_modes = np.concatenate([rng.normal(0.002, 1e-4, 1000), rng.normal(0.05, 1e-3, 1000)])
    empirical = fit_latency(two_modes, "bimodal")
    assert empirical.dist.dist == "empirical" and empirical.ks["lognormal"] > 0.05
    assert stats.ks_2samp(two_modes, np.asarray(empirical.dist.samples_ms) / 1e3).statistic < 0.03


@pytest.mark.parametrize("free", [0, 2])
def test_the_designed_profiling_run_gives_the_profile_back(tmp_path, free):
    truth_step = TRUTH.model_copy(update={"decode_seqs_free": free})
    truth_path = known_profile(tmp_path, block_size=16, step=truth_step.model_dump())
    truth = load_profile(truth_path)
    server = {"kind": "vllm", "profile": truth_path}
    plan = profiling_plan(
        prompt_lengths=(64, 512, 1024),
        concurrencies=(1, 3, 8),  # three batch sizes: free sequences show as a bend
        cached_prefixes=(0, 256),
        output_tokens=32,
        rounds=2,
    )
    assert {c.cached_prefix_tokens for c in plan} == {0, 256} and len(plan) == 15
    traces = []
    for cell in plan:
        trace = tmp_path / f"{cell.name}.jsonl"
        Simulator(scenario_from_dict(cell_scenario(cell, server)), trace_path=trace).run()
        traces.append(trace)
    cached_cells = [t for t in read_tables(traces) if t.requests[-1].cached_tokens]
    assert len(cached_cells) == 6  # prompts of 512 and 1,024 tokens × 3 concurrencies
    # the shared system prompt was a hit
    assert all(t.requests[-1].cached_tokens >= 240 for t in cached_cells)
    options = CalibrationOptions(
        name="profiled",
        model="m",
        hardware="h",
        block_size=16,
        kv_capacity_tokens=truth.kv_capacity_tokens,
        max_evaluations=100,
    )
    fitted = fit_profiling_run(traces, options)
    assert fitted.fit["replay"]["max_abs_err_pct"] < 10
    # 0 and 1 free sequences price every decode step alike (a step decodes at least one)
    assert fitted.step.decode_seqs_free in ({0, 1} if free == 0 else {free})
    for name in ("prefill_token_s", "decode_seq_s", "context_token_s"):
        assert getattr(fitted.step, name) == pytest.approx(getattr(TRUTH, name), rel=0.2), name
    for batch in (1, 2, 3, 4, 8, 16):
        predicted = fitted.step.seconds(0, 0.0, batch, 600 * batch)
        assert predicted == pytest.approx(truth_step.seconds(0, 0.0, batch, 600 * batch), rel=0.05)


def test_the_quick_grid_gives_back_an_engine_whose_api_server_prepares_one_request_at_a_time(
    tmp_path,
):
    """``calibrate --local --quick``: the embedded vLLM's one API-server process hands a burst
    to the engine one request at a time; a fit that knows it finds the engine again, one that
    does not cannot explain the cells with several users."""
    from calibration.profiling import QUICK_GRID

    overhead = 0.05  # longer than a short prompt's prefill: a burst reaches the engine spread
    truth_path = known_profile(
        tmp_path, request_overhead_s=overhead, request_overhead_serial=True, block_size=16
    )
    server = {"kind": "vllm", "profile": truth_path}
    g = QUICK_GRID
    plan_ = profiling_plan(
        g.prompt_lengths, g.concurrencies, g.cached_prefixes, g.output_tokens, g.rounds
    )
    traces = []
    for cell in plan_:
        trace = tmp_path / f"{cell.name}.jsonl"
        Simulator(scenario_from_dict(cell_scenario(cell, server)), trace_path=trace).run()
        traces.append(trace)

    def fitted_with(serial: bool) -> VllmProfile:
        options = CalibrationOptions(
            name="quick",
            model="m",
            hardware="h",
            block_size=16,
            max_evaluations=60,
            request_overhead_serial=serial,
        )
        return fit_profiling_run(traces, options)

    serial, parallel = fitted_with(True), fitted_with(False)
    assert serial.request_overhead_serial and not parallel.request_overhead_serial
    # a first token's fixed time: the API server's and a prefill step's are told apart only by
    # how bursts queue, which four users show little of
    intercept = serial.request_overhead_s + serial.step.prefill_step_s
    assert intercept == pytest.approx(overhead + TRUTH.prefill_step_s, rel=0.1)
    for name in ("base_s", "prefill_token_s", "decode_seq_s"):
        assert getattr(serial.step, name) == pytest.approx(getattr(TRUTH, name), rel=0.2), name
    worst = {
        fit.request_overhead_serial: fit.fit["replay"]["max_abs_err_pct"]
        for fit in (serial, parallel)
    }
    assert worst[True] < 15  # the rest: a prefill step's fixed cost, folded into the API's
    assert worst[False] > 5 * worst[True]  # 121 % vs 12 % when written


def _generic(trace: Path):
    (table,) = read_tables([trace])
    return replace(table, scenario=None, format="test")


def test_a_runs_speed_is_read_from_its_first_requests_while_its_queue_grows_later(tmp_path):
    truth_path = known_profile(tmp_path, kv_capacity_tokens=200_000)
    truth = load_profile(truth_path)
    assert isinstance(truth, VllmProfile)
    slower = write_profile(
        tmp_path,
        vllm_profile(**at_speed(truth, 1.2).step.model_dump())
        | {"name": "slower", "kv_capacity_tokens": 200_000},
    )
    # 6 req/s overloads this engine: the later requests queue for seconds
    workload = poisson(80, 6.0, prompts=(50, 800), outputs=(32, 128))
    for path, speed in ((truth_path, 1.0), (slower, 1.2)):
        table = _generic(one_agent_trace(tmp_path, path, workload, tokens=128))
        replay_plan = plan(table, "vllm", EngineSettings())
        assert run_speed(replay_plan, truth) == pytest.approx(speed, rel=0.01)
        ttfts = [r.ttft_s for r in table.served]
        assert np.median(ttfts[-20:]) > 3 * np.median(ttfts[:20])  # the run did queue


def test_a_fit_at_per_run_speeds_recovers_the_step_cost_when_one_run_was_slower(tmp_path):
    truth = load_profile(known_profile(tmp_path, kv_capacity_tokens=200_000))
    assert isinstance(truth, VllmProfile)
    # a light run and a loaded one 15 % slower as a whole, around the engine TRUTH describes
    # (the geometric mean of their speeds: what a fit at per-run speeds finds)
    tables = []
    for speed, rate in ((1.15**-0.5, 1.0), (1.15**0.5, 5.0)):
        step = at_speed(truth, speed).step.model_dump()
        path = write_profile(
            tmp_path, vllm_profile(**step) | {"name": "run", "kv_capacity_tokens": 200_000}
        )
        tables.append(
            _generic(one_agent_trace(tmp_path, path, poisson(60, rate, (50, 500), (16, 64)), 64))
        )
    free = ("base_s", "decode_seq_s")
    wrong = TRUTH.model_copy(update={"base_s": 0.03, "decode_seq_s": 3e-3})
    start = truth.model_copy(update={"step": wrong})
    fits = {
        per_run: fit_by_replay(
            tables, start, EngineSettings(), params=free, max_evaluations=60, per_run_speed=per_run
        )
        for per_run in (False, True)
    }
    factors = list(fits[True].quality["run_speed"]["factors"].values())
    assert factors[1] / factors[0] == pytest.approx(1.15, rel=0.03)
    for name in free:
        found = getattr(fits[True].profile.step, name)
        assert found == pytest.approx(getattr(TRUTH, name), rel=0.15), name
    assert fits[True].quality["max_abs_err_pct"] < 10  # single quantiles jump near the truth
    # pooled, the batch cost bends to pass through the slow loaded run
    pooled = fits[False].profile.step.decode_seq_s
    assert abs(pooled / TRUTH.decode_seq_s - 1) > 0.3, pooled
