"""Capacity planning against answers worked out by hand.

The hand-made system: one ``api`` server serving one request at a time, a lone agent
answering 101 tokens with a 0.1 s first token and 9 ms between tokens, no network delay —
a fixed service time T = 0.1 + 100 × 0.009 = 1.0 s. With requests arriving at a constant
rate λ, request i arrives at i/λ; below 1/T nobody waits, above it request i waits
i·(T − 1/λ) and the server never idles, so the last of N requests ends at N·T.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sim.capacity import PlanSettings, Reference, geometric_schedule, parse_slo, plan
from sim.errors import ConfigError
from sim.scenario import scenario_from_dict
from tests.helpers import api_profile, one_at_a_time, write_profile

FIRST_TOKEN_S, ITL_S, TOKENS = 0.1, 0.009, 101
SERVICE_S = FIRST_TOKEN_S + (TOKENS - 1) * ITL_S  # 1.0 s


def single_server(tmp_path: Path, arrival: dict | None = None):
    return one_at_a_time(tmp_path, arrival, ttft_s=FIRST_TOKEN_S, itl_s=ITL_S)


def settings(**changes) -> PlanSettings:
    """No intervals: these searches are checked against answers worked out by hand
    (tests/unit/test_intervals.py checks the intervals)."""
    base = {"requests": 50, "search_schedules": False, "interval_replications": 1}
    return PlanSettings(**(base | changes))


def within(search, expected: float) -> None:
    """The search brackets the exact answer, to its tolerance."""
    assert search.max_rate <= expected * (1 + 1e-9)
    assert search.first_failing > expected
    assert search.first_failing / search.max_rate <= 1.01 + 1e-9


def test_with_loose_slos_the_maximum_rate_is_one_over_the_service_time(tmp_path):
    result = plan(single_server(tmp_path), ["e2e_p99=1000s"], settings(keep_up_slack=0), workers=1)
    within(result.capacity, 1 / SERVICE_S)
    assert result.capacity.at_failing is not None and not result.capacity.at_failing.keeps_up


@pytest.mark.parametrize("slack", [0.05, 0.2])
def test_the_keep_up_slack_admits_falling_behind_by_that_fraction(tmp_path, slack):
    # the last of N ends at N·T; allowed: (1 + slack)·(N − 1)/λ + T  →  λ ≤ (1 + slack)/T
    result = plan(
        single_server(tmp_path), ["e2e_p99=1000s"], settings(keep_up_slack=slack), workers=1
    )
    within(result.capacity, (1 + slack) / SERVICE_S)


def test_a_ttft_slo_caps_the_rate_where_the_queue_reaches_its_bound(tmp_path):
    # TTFT_i = 0.1 + i·(T − 1/λ); numpy's p90 over i = 0..N−1 is at i = 0.9·(N − 1)
    n, slack_s = 50, 0.441
    expected = 1 / (SERVICE_S - slack_s / (0.9 * (n - 1)))  # 1.0101 requests/s
    result = plan(
        single_server(tmp_path),
        [f"ttft_p90={(FIRST_TOKEN_S + slack_s) * 1000:.0f}ms"],
        settings(requests=n, keep_up_slack=0.1),  # keeping up allows 1.1/s: the SLO binds
        workers=2,
    )
    within(result.capacity, expected)
    assert result.capacity.at_max.keeps_up


def test_replicas_for_a_target_rate(tmp_path):
    # least-loaded routing of constant arrivals: each of k copies sees λ/k
    result = plan(
        single_server(tmp_path),
        ["e2e_p99=1000s"],
        settings(keep_up_slack=0, target_rate=2.5),
        workers=1,
    )
    assert result.replicas.servers == {"api": math.ceil(2.5 * SERVICE_S)} == {"api": 3}
    assert result.replicas.at_target.sustainable
    assert result.replicas.at_target.replicas == {"api": 3}


def test_only_the_bottleneck_server_is_scaled_for_a_target_rate(tmp_path):
    """A chain: a quick agent on an endpoint without limits, then the one-at-a-time server's
    agent (1.0 s a call). At λ = 2.5/s the slow server needs ⌈2.5 × 1.0⌉ = 3 replicas (as
    above) and the quick one none more; a GPU-hour price makes the difference visible."""
    slow = one_at_a_time(tmp_path, {"kind": "constant", "rate_per_s": 0.3}).model_dump()
    quick = write_profile(tmp_path, api_profile(ttft_s=0.01, itl_s=0.001, name="quick"))
    slow["servers"]["quick"] = {
        "kind": "api",
        "profile": quick,
        "prefix_caching": False,
        "prices": {"per_gpu_hour": 3.6},
    }
    slow["topology"]["agents"] = {
        "first": {"steps": 1, "next": ["solo"], "server": "quick"},
        "solo": {"steps": 1, "server": "api"},
    }
    slow["topology"]["unit"] = {"tokens": 101}
    slow["topology"]["agent"] = {"server": "api"}
    result = plan(
        scenario_from_dict(slow),
        ["e2e_p99=1000s"],
        settings(keep_up_slack=0, target_rate=2.5),
        workers=2,
    )
    assert result.replicas.servers == {"api": 3, "quick": 1}
    assert set(result.replicas.scaled) == {"api"}
    at = result.replicas.at_target
    # one quick replica rented for the run: 3.6 $/h × its duration, spread over the requests
    assert at.cost_gpu_per_request > 0 and at.cost_tokens_per_request == 0
    assert at.cost_per_request == pytest.approx(at.cost_gpu_per_request)


def test_poisson_arrivals_sustain_less_than_the_service_rate(tmp_path):
    poisson = single_server(tmp_path, {"kind": "poisson", "rate_per_s": 0.3})
    result = plan(poisson, ["ttft_p90=2s"], settings(requests=200), workers=2)
    # an M/D/1 queue at load ρ waits ρ/(2μ(1 − ρ)) on average: a 2 s TTFT p90 bound holds
    # up to roughly ρ ≈ 0.6; it can never reach ρ = 1
    assert 0.4 / SERVICE_S < result.capacity.max_rate < 0.9 / SERVICE_S


def test_no_rate_is_sustainable_when_even_a_lone_request_misses_the_slo(tmp_path):
    result = plan(single_server(tmp_path), ["e2e_p50=0.5s"], settings(), workers=1)
    assert result.capacity.max_rate is None
    assert result.capacity.at_failing.values["e2e_p50"] == pytest.approx(SERVICE_S)


def test_geometric_schedules_cover_the_answer():
    assert geometric_schedule(8, 2, 256) == [8, 16, 32, 64, 128, 256]
    assert geometric_schedule(4, 1.5, 40) == [4, 6, 9, 14, 20]
    assert geometric_schedule(16, 1, 256) == [16]


@pytest.mark.parametrize(
    "text,name,bound",
    [
        ("ttft_p90=2s", "ttft_p90", 2.0),
        ("stall_p99=1500ms", "stall_p99", 1.5),
        ("tpot_mean=0.05", "tpot_mean", 0.05),
    ],
)
def test_slos_parse_with_units(text, name, bound):
    slo = parse_slo(text)
    assert (slo.name, slo.bound_s) == (name, pytest.approx(bound))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("ttft<2", "expected METRIC_STAT=VALUE"),
        ("latency_p90=2", "metric must be one of"),
        ("ttft_p95=2", "statistic must be one of"),
        ("ttft_p90=0", "must be positive"),
        ("ttft_p90=1.2.3", "not a number"),
    ],
)
def test_bad_slos_are_named(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_slo(text)


# --- the schedule optimiser ------------------------------------------------------------------
# Three proposers on their own endpoints (10, 20 and 30 ms between tokens, 0.1 s to the first)
# feed an aggregator that streams at 20 ms a token and re-prefills only new text (prefix
# cache). Staircase TTFT is the k-th fastest first chunk plus the aggregator's first
# prefill (tests/unit/test_closed_forms.py), so a small first chunk and high redundancy are
# fastest; a standard MoA answers in one call, whose only gaps are the aggregator's 20 ms,
# but starts after a whole proposer answer (seconds).

PROPOSER_ITL = {"fast": 0.010, "mid": 0.020, "slow": 0.030}
AGGREGATOR_ITL = 0.02


def staircase_moa(tmp_path: Path):
    servers = {
        name: {
            "kind": "api",
            "prefix_caching": False,
            "profile": write_profile(tmp_path, api_profile(0.1, 0.0, itl, name=name)),
        }
        for name, itl in PROPOSER_ITL.items()
    }
    aggregator = api_profile(0.05, 0.001, AGGREGATOR_ITL, name="agg")
    servers["agg"] = {"kind": "api", "profile": write_profile(tmp_path, aggregator)}
    return scenario_from_dict(
        {
            "name": "staircase",
            "servers": servers,
            "topology": {
                "kind": "moa",
                "proposers": 3,
                "agent": {"server": "agg", "max_tokens": 256},
                "proposer": [{"server": name} for name in PROPOSER_ITL],
                "template": "prefix_cache",
                # redundancy in every round: under the paper's first-chunk scope the slowest
                # proposer paces every later round, and no schedule meets a 0.3 s stall
                "redundancy_scope": "all",
            },
            "workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.2}},
        }
    )


def best_schedules(tmp_path: Path, slos: list[str]):
    settings = PlanSettings(requests=10, interval_replications=1)
    result = plan(staircase_moa(tmp_path), slos, settings, workers=2)
    return result.schedules


def test_a_ttft_slo_alone_is_met_by_the_stream_closest_to_the_standard_modes_speed(tmp_path):
    """Staircases meet a 2 s TTFT easily; each of their rounds opens with a new first token
    (50 ms + 1 ms per new token, against 20 ms gaps), so none streams as fast as the standard
    mode, and the ranking goes to the fastest stream, not to the fastest first token."""
    ranked = best_schedules(tmp_path, ["ttft_p90=2s"])
    best = ranked[0]
    sustainable = [c for c in ranked if c.assessment.sustainable]
    assert best.tps_ratio == min(c.tps_ratio for c in sustainable) > 1
    first = min(sustainable, key=lambda c: c.assessment.values["ttft_p90"])
    assert first.values["topology.chunks.proposer"][0] == 4 and first.redundancy == 2
    assert first.assessment.answer_tps < best.assessment.answer_tps


def test_a_stall_slo_alone_picks_the_standard_mode_whose_only_gaps_are_token_gaps(tmp_path):
    ranked = best_schedules(tmp_path, ["stall_p90=0.5s"])
    best = ranked[0]
    assert best.values["topology.mode"] == "standard"
    assert best.assessment.values["stall_p90"] == pytest.approx(AGGREGATOR_ITL)
    as_given = [c for c in ranked if c.label.startswith("as given")]  # 8 → 128: long pauses
    assert as_given and not any(c.assessment.sustainable for c in as_given)


def test_both_slos_are_met_by_trading_first_token_time_against_pauses(tmp_path):
    ranked = best_schedules(tmp_path, ["ttft_p90=1s", "stall_p90=0.3s"])
    best = ranked[0].assessment
    assert best.sustainable
    assert best.values["ttft_p90"] <= 1 and best.values["stall_p90"] <= 0.3
    # neither extreme would do: the standard mode starts too late, 8 → 128 pauses too long
    for candidate in ranked:
        if candidate.label.startswith(("standard", "as given")):
            assert not candidate.assessment.sustainable
    standard = next(c for c in ranked if c.label.startswith("standard"))
    assert standard.assessment.values["ttft_p90"] > 1 >= best.values["ttft_p90"]


# --- the smooth staircase ---------------------------------------------------------------------
# One ``api`` endpoint where every call's first token takes one token gap d and every later
# token d: a proposer's token k arrives at k·d. Three proposers answer 64 tokens, the
# aggregator 32. Proposers 4, 8, 16, 32 with the aggregator on the same schedule: its round 1
# (4 tokens) ends at 8d but the proposers' unit 2 (12 tokens) only at 12d, so it waits 4d and
# the answer pauses 5d; later rounds wait longer (the last gap is 17d). Shifted by one (8, 16,
# 32), each aggregator chunk ends exactly when the proposers' next unit does: every gap is d,
# the same stream as the standard mode's, which starts 65d in (after whole proposer answers).
# (Four calls at a time, one request's worth, so the rate search ends quickly.)

D = 0.01


def smooth_moa(tmp_path: Path):
    profile = write_profile(tmp_path, api_profile(ttft_s=D, itl_s=D))
    return scenario_from_dict(
        {
            "name": "smooth",
            "servers": {
                "api": {
                    "kind": "api",
                    "profile": profile,
                    "prefix_caching": False,
                    "max_concurrency": 4,
                }
            },
            "topology": {
                "kind": "moa",
                "proposers": 3,
                "agent": {"max_tokens": 64},
                "aggregator": {"max_tokens": 32},
            },
            "workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.2}},
        }
    )


def test_the_planner_finds_the_schedule_that_never_pauses(tmp_path):
    settings = PlanSettings(requests=4, first_chunks=(4, 8), growths=(2.0,), rate_tolerance=0.5)
    result = plan(smooth_moa(tmp_path), ["ttft_p90=0.1s", "stall_p90=1.5xitl"], settings)
    assert result.reference.itl_s["p90"] == pytest.approx(D)  # the standard mode's stream
    (ttft, stall) = result.slos
    assert (ttft.bound_s, stall.bound_s) == (pytest.approx(10 * D), pytest.approx(1.5 * D))
    best = result.best
    assert best.values["topology.chunks.proposer"] == [4, 8, 16, 32, 64]
    assert best.values["topology.chunks.aggregator"] == [8, 16, 32, 64]
    assert best.assessment.values == {
        "ttft_p90": pytest.approx(5 * D),  # proposers' 4th token + the aggregator's first
        "stall_p90": pytest.approx(D),
    }
    assert best.tps_ratio == pytest.approx(1.0)  # as fast a stream as the standard mode's
    same = next(c for c in result.schedules if c.label == "4×2 [4,8,16,…]")
    assert same.values["topology.chunks.aggregator"] == [4, 8, 16, 32, 64]
    assert same.assessment.values["stall_p90"] == pytest.approx(17 * D)
    standard = next(c for c in result.schedules if c.label == "standard mode")
    assert standard.assessment.values["ttft_p90"] == pytest.approx(65 * D)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("stall_p90=2xttft", "multiple of the standard mode's ITL"),
        ("ttft_p90=2xitl", "only stall and itl bounds"),
        ("stall_p90=0xitl", "must be positive"),
    ],
)
def test_bad_relative_slos_are_named(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_slo(text)


def test_a_bound_relative_to_an_answer_without_gaps_is_impossible():
    one_token = Reference(itl_s={"p90": None}, answer_tps=None)
    with pytest.raises(ConfigError, match="no inter-token gaps"):
        parse_slo("stall_p90=2xitl").resolved(one_token)


def test_an_unknown_lever_is_refused():
    with pytest.raises(ConfigError, match="unknown lever"):
        PlanSettings(levers=("schedule", "temperature")).check()


# --- quality floors -----------------------------------------------------------------------------
# In the smooth MoA every proposer answers 64 tokens (192 in all): an aggregator whose first
# round reads first chunks of 4 from all three has read 12/192 = 1/16 of them behind the
# answer's first token, of 8: 24/192 = 1/8; the standard mode reads everything.


def test_quality_floors_keep_short_first_chunks_and_skipped_inputs_out(tmp_path):
    settings = PlanSettings(
        requests=4,
        first_chunks=(4, 8),
        growths=(2.0,),
        rate_tolerance=0.5,
        min_first_chunk=8,
        max_redundancy=0,
    )
    result = plan(smooth_moa(tmp_path), ["ttft_p90=0.1s", "stall_p90=1.5xitl"], settings)
    assert result.schedules
    for candidate in result.schedules:
        assert candidate.redundancy == 0
        if candidate.label != "standard mode":
            assert candidate.values.get("topology.chunks.proposer", [8])[0] >= 8
    best = result.best
    assert best.values["topology.chunks.proposer"] == [8, 16, 32, 64]
    assert best.assessment.coverage == pytest.approx(24 / 192)
    standard = next(c for c in result.schedules if c.label == "standard mode")
    assert standard.assessment.coverage == 1.0


def test_a_coverage_floor_drops_the_candidates_that_read_too_little(tmp_path):
    settings = PlanSettings(
        requests=4, first_chunks=(4, 8), growths=(2.0,), rate_tolerance=0.5, min_coverage=0.1
    )
    result = plan(smooth_moa(tmp_path), ["ttft_p90=0.1s", "stall_p90=1.5xitl"], settings)
    assert all(c.assessment.coverage >= 0.1 for c in result.schedules)
    firsts = {c.values.get("topology.chunks.proposer", [0])[0] for c in result.schedules}
    assert 4 not in firsts and 8 in firsts  # 1/16 read behind token 1 is below the floor


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"min_first_chunk": 0}, "--min-first-chunk"),
        ({"max_redundancy": -1}, "--max-redundancy"),
        ({"min_coverage": 1.5}, "--min-coverage"),
    ],
)
def test_bad_quality_floors_are_named(changes, needle):
    with pytest.raises(ConfigError, match=needle):
        PlanSettings(**changes).check()


def _probe_reading(profile: str, prefill: float, decode: float):
    from calibration.probe import ProbeReading

    return ProbeReading("gpu", profile, prefill, decode, cells=())


def test_at_a_probed_speed_half_as_fast_the_capacity_halves(tmp_path):
    # every step cost doubled and no fixed delays: the whole timeline at rate λ/2 is the
    # original at λ stretched twice, so the keep-up rule admits exactly half the rate
    from sim.capacity import Planner
    from sim.sweep.backends import LocalBackend
    from stairwise.orchestrate.capacity import probe_scaled_capacity
    from tests.helpers import vllm_profile

    profile = write_profile(tmp_path, vllm_profile())
    scenario = scenario_from_dict(
        {
            "name": "one-vllm",
            # an endpoint makes it probeable; nothing here contacts it
            "servers": {"gpu": {"kind": "vllm", "profile": profile, "endpoint": "http://x/v1"}},
            "topology": {"kind": "graph", "unit": {"tokens": 64}, "agents": {"solo": {"steps": 1}}},
            "workload": {
                "arrival": {"kind": "constant", "rate_per_s": 1.0},
                "prompt_tokens": {"dist": "fixed", "value": 200},
            },
        }
    )
    slos = [parse_slo("e2e_p99=1000s")]
    plan_settings = settings(requests=30, keep_up_slack=0)
    with LocalBackend(1) as serial:
        as_profiled = Planner(scenario, slos, plan_settings, serial).max_rate()
    same = probe_scaled_capacity(
        scenario, slos, plan_settings, [{"gpu": _probe_reading("test-vllm", 1.0, 1.0)}]
    )
    halved = probe_scaled_capacity(
        scenario,
        slos,
        plan_settings,
        [  # before and after the search: their mean is 2
            {"gpu": _probe_reading("test-vllm", 1.5, 1.5)},
            {"gpu": _probe_reading("test-vllm", 2.5, 2.5)},
        ],
    )
    assert same is not None and halved is not None and as_profiled.max_rate is not None
    assert same.max_rate == as_profiled.max_rate
    within(halved, as_profiled.max_rate / 2)
    # a probe read against another profile says nothing of this one
    other = [{"gpu": _probe_reading("another-profile", 2.0, 2.0)}]
    assert probe_scaled_capacity(scenario, slos, plan_settings, other) is None
