"""Predicted vs measured: error %, KS distance, per-agent timing, the validate --json shape."""

from __future__ import annotations

import json

import pytest

from reports.compare import (
    agent_timing_errors,
    error_pct,
    ks_distance,
    percentile_errors,
    prompt_accounting,
    run_stats,
    validation_summary,
)
from sim import simulate
from sim.metrics import summarize
from sim.trace import make_header
from tests.helpers import api_profile, moa, write_profile


def answer_trace(source: str, answers: list[tuple[float, list[float]]]) -> list[dict]:
    """One request per (sent, delta times): a helper agent, then the answering agent.

    The helper's call runs from the request to the answer's start, so its start offset is 0
    and its end offset is the answer call's start (0.5 s after the request here).
    """
    records: list[dict] = [make_header(source, {"name": "hand"})]
    for req, (sent, times) in enumerate(answers):
        records += [
            {"type": "request", "req": req, "t": sent, "prompt_tokens": 10},
            call(req, "helper", sent, final=False),
            {"type": "call_end", "req": req, "call": "helper#1", "t": sent + 0.5,
             "status": "ok", "prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 4,
             "queued_s": 0.0, "reason": ""},
            call(req, "answer", sent + 0.5, final=True),
            {"type": "deltas", "req": req, "call": "answer#1", "t": times, "n": [1] * len(times)},
            {"type": "call_end", "req": req, "call": "answer#1", "t": times[-1], "status": "ok",
             "prompt_tokens": 20, "cached_tokens": 0, "completion_tokens": len(times),
             "queued_s": 0.0, "reason": ""},
            {"type": "request_end", "req": req, "t": times[-1], "ok": True, "reason": ""},
        ]  # fmt: skip
    return records


def call(req: int, agent: str, t: float, final: bool) -> dict:
    return {"type": "call", "req": req, "call": f"{agent}#1", "agent": agent, "round": 1,
            "server": "s", "t": t, "tokens": 3, "final": final, "prompt_tokens": 10}  # fmt: skip


def test_error_is_signed_relative_to_the_measurement():
    assert error_pct(110.0, 100.0) == pytest.approx(10.0)
    assert error_pct(90.0, 100.0) == pytest.approx(-10.0)
    assert error_pct(2.0, 1.0) == pytest.approx(100.0)  # the denominator is the measurement
    assert error_pct(1.0, 2.0) == pytest.approx(-50.0)
    assert error_pct(1.0, 0.0) is None and error_pct(None, 1.0) is None
    assert error_pct(1.0, None) is None


def test_ks_distance_is_the_largest_gap_between_empirical_cdfs():
    # at x = 2, half of the second sample and none of the first is <= x
    assert ks_distance([3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.5)
    assert ks_distance([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert ks_distance([10.0, 11.0], [1.0, 2.0]) == 1.0
    assert ks_distance([], [1.0]) is None


def test_percentile_errors_from_hand_computed_metrics():
    measured = run_stats(answer_trace("live", [(0.0, [1.0, 1.5, 2.0])]))
    predicted = run_stats(answer_trace("sim", [(0.0, [1.1, 1.6, 2.3])]))
    errors = percentile_errors(predicted, measured)
    # TTFT 1.1 vs 1.0; E2E 2.3 vs 2.0; TPS 3/(2.3-1.1)=2.5 vs 3/(2.0-1.0)=3
    assert errors["ttft_p50"] == pytest.approx(10.0)
    assert errors["ttft_p99"] == pytest.approx(10.0)
    assert errors["e2e_p50"] == pytest.approx(15.0)
    assert errors["tps_p50"] == pytest.approx(100 * (2.5 - 3.0) / 3.0)
    # ITL gaps 0.5, 0.7 vs 0.5, 0.5: the p50 (linear interpolation) is 0.6 vs 0.5
    assert errors["itl_p50"] == pytest.approx(20.0)


def test_agent_timing_errors_compare_mean_offsets():
    measured = run_stats(answer_trace("live", [(0.0, [1.0, 1.5]), (10.0, [11.0, 11.5])]))
    # the same answers shifted by 1 s: the helper still ends 0.5 s after its request
    predicted = run_stats(answer_trace("sim", [(0.0, [2.0, 2.5]), (10.0, [12.0, 12.5])]))
    errors = agent_timing_errors(predicted, measured)
    assert set(errors) == {"helper", "answer"}
    assert errors["helper"]["end_s"] == {
        "measured": 0.5,
        "predicted": 0.5,
        "error_s": 0.0,
        "error_pct": 0.0,
    }
    # the answer call: starts at 0.5 s in both; lasts 1.0 s measured, 2.0 s predicted
    assert errors["answer"]["start_s"]["error_s"] == pytest.approx(0.0)
    assert errors["answer"]["call_s"]["measured"] == pytest.approx(1.0)
    assert errors["answer"]["call_s"]["error_pct"] == pytest.approx(100.0)


def test_validation_summary_has_the_documented_shape(tmp_path):
    profile = write_profile(tmp_path, api_profile(ttft_s=0.1, itl_s=0.02))
    slower = write_profile(tmp_path, api_profile(ttft_s=0.2, itl_s=0.03))
    workload = {"requests": 4}
    live = simulate(
        moa({"s": {"kind": "api", "profile": profile}}, workload), replications=1
    ).records
    predicted = simulate(
        moa({"s": {"kind": "api", "profile": slower}}, workload), replications=1
    ).records
    summary = validation_summary(live, predicted, live)

    assert set(summary) == {
        "live",
        "sim",
        "sim_trace_driven",
        "error_pct",
        "error_pct_trace_driven",
        "ks",
        "ks_trace_driven",
        "agents",
    }
    assert summary["live"] == summarize(live)  # the `simulate --json` shape
    assert summary["sim"] == summarize(predicted)
    assert {"ttft_p50", "ttft_p90", "tps_p50", "e2e_p50", "throughput"} <= set(summary["error_pct"])
    # a slower engine is predicted slower: positive latency errors, negative TPS error
    assert summary["error_pct"]["ttft_p50"] > 0 and summary["error_pct"]["e2e_p50"] > 0
    assert summary["error_pct"]["tps_p50"] < 0
    # replaying the measurement itself is exact
    assert all(v == 0 for v in summary["error_pct_trace_driven"].values() if v is not None)
    assert all(v == 0 for v in summary["ks_trace_driven"].values() if v is not None)
    assert summary["ks"]["ttft"] == 1.0  # every predicted TTFT is above every measured one
    assert set(summary["agents"]["sim"]) == set(summary["live"]["agents"])
    json.dumps(summary, allow_nan=False)  # plain JSON, no numpy scalars or NaN


def ended(req: int, call: str, prompt: int, cached: int, status: str = "ok") -> dict:
    return {"type": "call_end", "req": req, "call": call, "t": 1.0, "status": status,
            "prompt_tokens": prompt, "cached_tokens": cached, "completion_tokens": 8,
            "queued_s": None, "reason": ""}  # fmt: skip


def test_prompts_are_compared_call_by_call_over_the_calls_both_ended_ok() -> None:
    simulated = [ended(0, "p#1", 100, 0), ended(0, "agg#1", 200, 100), ended(1, "p#1", 50, 0)]
    live_run = [
        ended(0, "p#1", 110, 0),
        ended(0, "agg#1", 210, 200),
        ended(1, "p#1", 60, 0, status="cancelled"),  # not comparable: it ended apart
        ended(2, "p#1", 80, 0),  # the simulation made no such call
    ]
    found = prompt_accounting(simulated, [live_run, live_run])
    assert found["calls"] == 4  # two matched calls, in each of two runs
    assert found["prompt_tokens_error_pct"] == pytest.approx(100 * (300 / 320 - 1))
    # computed: 100 + 100 simulated against 110 + 10 live
    assert found["computed_tokens_error_pct"] == pytest.approx(100 * (200 / 120 - 1))
    assert found["cached_tokens_equal_pct"] == 50
    assert prompt_accounting(simulated, [])["calls"] == 0
