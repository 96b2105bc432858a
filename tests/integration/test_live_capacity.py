"""`plan --live` on the local vLLM: the real maximum rate, found within its time budget."""

from __future__ import annotations

import pytest

from calibration.probe import drift_pct
from sim.capacity import PlanSettings, parse_slos
from stairwise.orchestrate.capacity import live_capacity
from tests.integration.conftest import live_scenario

pytestmark = pytest.mark.live


def test_live_search_finds_a_sustainable_rate_and_stops_within_its_budget(vllm_url, tmp_path):
    scenario = live_scenario(
        vllm_url,
        {"kind": "graph", "unit": {"tokens": 16}, "agents": {"solo": {"steps": 1}}},
        workload={"requests": 6, "arrival": {"kind": "poisson", "rate_per_s": 1.0}},
    )
    budget_s = 45.0
    measured = live_capacity(
        scenario,
        parse_slos(["e2e_p90=30s"]),  # loose: the rate search is what is under test
        PlanSettings(requests=6, search_schedules=False),
        start_rate=0.5,
        budget_s=budget_s,
        trace_dir=tmp_path,
        log=lambda message: None,
    )
    search = measured.search
    # a lone short request meets a 30 s bound: some rate is sustainable, and it was run live
    assert search.max_rate is not None and search.at_max is not None
    assert search.at_max.sustainable and search.at_max.failed_requests == 0
    assert measured.levels >= 2  # it went looking above the first sustainable rate
    # the budget is checked before each level: at most one level runs past it
    one_level_s = measured.elapsed_s / measured.levels
    assert measured.elapsed_s <= budget_s + 3 * one_level_s
    assert len(list(tmp_path.glob("*.jsonl"))) == measured.levels  # every level's trace kept
    # the engine was probed before and after the search, outside its budget
    [(server, probes)] = measured.probe_record().items()
    assert server in scenario.servers
    before, after = measured.probes
    for when, readings in (("before", before), ("after", after)):
        assert probes[when]["prefill_factor"] > 0 and probes[when]["decode_factor"] > 0
        assert probes[when] == readings[server].to_dict()  # what was read is what is kept
    assert probes["drift_pct"] == drift_pct(before[server], after[server])
