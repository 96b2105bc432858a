"""Live runs against hosted (``api``) endpoints, on the in-process fake server: strict OpenAI
requests, a model that stops early, 429 with Retry-After, and the endpoint's limits.

(A 429 is a fault the real local server cannot produce; the strict requests themselves are
also checked on the real server, in tests/integration/test_hosted_endpoints.py.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from live.client import LimitGate
from live.runner import LiveRunner
from sim.ratelimit import CallTooLarge
from sim.scenario import ApiServer, Scenario, scenario_from_dict
from tests.fake_server import FakeServer, Fault, fake_server
from tests.helpers import api_profile, write_profile

VLLM_ONLY_FIELDS = {
    "ignore_eos",
    "min_tokens",
    "continue_final_message",
    "add_generation_prompt",
    "priority",
}
MOA = {
    "kind": "moa",
    "mode": "staircase",
    "proposers": 2,
    "template": "standard",
    "agent": {"server": "hosted", "max_tokens": 12},
    "aggregator": {"server": "local", "max_tokens": 8},
    "chunks": {"proposer": [4, 8], "aggregator": [4, 4]},
}


def hosted_moa(
    tmp_path: Path, url: str, api: str = "chat", mode: str = "staircase", **limits: Any
) -> Scenario:
    """Hosted proposers (strict ``api``) and a vLLM aggregator, both on the fake server."""
    profile = write_profile(tmp_path, api_profile(name="hosted"))
    hosted = {"kind": "api", "profile": profile, "endpoint": url, "api": api, **limits}
    local = {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m", "endpoint": url}
    return scenario_from_dict(
        {
            "name": "hosted-moa",
            "seed": 5,
            "servers": {"hosted": hosted, "local": local},
            "topology": {**MOA, "mode": mode},
            "workload": {"requests": 2, "prompt_tokens": {"dist": "fixed", "value": 40}},
            "live": {"stall_timeout_s": 2.0, "first_token_timeout_s": 5.0, "backoff_s": 0.05},
        }
    )


def run(scenario: Scenario) -> list[dict[str, Any]]:
    return asyncio.run(LiveRunner(scenario).run()).records


def proposer_calls(server: FakeServer) -> list[Any]:
    return [r for r in server.received if r.agent.startswith("p")]


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_hosted_calls_are_strict_openai_requests_and_vllm_calls_keep_their_extras(
    tmp_path: Path, api: str
) -> None:
    with fake_server() as server:
        records = run(hosted_moa(tmp_path, server.url, api=api))
    assert [r["ok"] for r in records if r["type"] == "request_end"] == [True, True]
    hosted = proposer_calls(server)
    aggregator = [r for r in server.received if r.agent == "aggregator"]
    assert hosted and aggregator
    for call in hosted:
        assert not VLLM_ONLY_FIELDS & set(call.body), call.body
        assert call.body["stream_options"] == {"include_usage": True}
        assert call.body["max_tokens"] == call.max_tokens
    for call in aggregator:
        assert call.body["ignore_eos"] is True and call.body["min_tokens"] == call.max_tokens
        assert call.body["stream_options"]["continuous_usage_stats"] is True


def test_a_hosted_model_that_stops_early_ends_its_answer_there(tmp_path: Path) -> None:
    fault = Fault("short", agent="p1", after_tokens=5)  # a 12-token answer stops at 5
    with fake_server(faults=[fault]) as server:
        records = run(hosted_moa(tmp_path, server.url))
    ends = [r for r in records if r["type"] == "call_end" and r["call"].startswith("p1#")]
    assert ends[0]["status"] == "ok" and ends[0]["completion_tokens"] == 5
    assert [r["ok"] for r in records if r["type"] == "request_end"] == [True, True]


def test_a_429_is_retried_after_the_servers_retry_after(tmp_path: Path) -> None:
    fault = Fault("rate_limited", agent="p1", times=1, retry_after_s=0.5)
    with fake_server(faults=[fault]) as server:
        records = run(hosted_moa(tmp_path, server.url))
    first, again = [r for r in server.received if r.agent == "p1"][:2]
    assert first.outcome == "failed" and again.outcome == "finished"
    assert first.ended is not None and again.at - first.ended >= 0.5  # not the 0.05 s backoff
    ends = [r for r in records if r["type"] == "call_end" and r["call"] == again.call]
    assert ends[0]["status"] == "ok" and ends[0]["attempts"] == 2


def test_a_429_beyond_the_retries_fails_the_call_in_one_line(tmp_path: Path) -> None:
    fault = Fault("rate_limited", agent="p1")  # every time, no Retry-After: the backoff
    with fake_server(faults=[fault]) as server:
        records = run(hosted_moa(tmp_path, server.url))
    ends = [r for r in records if r["type"] == "call_end" and r["call"].startswith("p1#")]
    assert ends[0]["status"] == "failed" and ends[0]["reason"] == "HTTP 429"
    assert ends[0]["attempts"] == 3  # 1 + live.retries (2)


def test_the_runner_keeps_a_hosted_endpoints_concurrency_limit(tmp_path: Path) -> None:
    with fake_server() as server:
        # the standard mode cancels no proposer (a cancelled stream may outlive its call on
        # the server by a token)
        records = run(hosted_moa(tmp_path, server.url, mode="standard", max_concurrency=1))
    served = sorted((r.at, r.ended) for r in proposer_calls(server))
    assert len(served) > 2
    for (_, ended), (started, _) in itertools.pairwise(served):
        assert ended is not None and started >= ended  # one at a time
    queued = [r["queued_s"] for r in records if r["type"] == "call_end" and r["call"][0] == "p"]
    assert all(q is not None for q in queued) and max(q for q in queued if q) > 0


def test_a_call_larger_than_tpm_fails_live_as_simulated(tmp_path: Path) -> None:
    with fake_server() as server:
        records = run(hosted_moa(tmp_path, server.url, tpm=10))
    ends = [r for r in records if r["type"] == "call_end" and r["call"][0] == "p"]
    assert ends and all("more than the endpoint's tpm" in e["reason"] for e in ends)
    assert not proposer_calls(server)


def test_the_gate_admits_a_minutes_requests_then_waits_for_the_refill() -> None:
    """rpm 60: sixty calls start at once, the 61st one second later (60/60 s)."""
    server = ApiServer(kind="api", profile="unused", rpm=60)

    async def admissions() -> list[float]:
        gate = LimitGate(server)
        began = time.perf_counter()

        async def one(key: int) -> float:
            await gate.enter(key, tokens=1)
            return time.perf_counter() - began

        return list(await asyncio.gather(*(one(k) for k in range(61))))

    times = asyncio.run(admissions())
    assert times[60] >= 1.0 and times[60] == max(times)


def test_the_gate_refuses_a_call_beyond_tpm() -> None:
    gate = LimitGate(ApiServer(kind="api", profile="unused", tpm=100))
    with pytest.raises(CallTooLarge):
        asyncio.run(gate.enter("big", tokens=101))
