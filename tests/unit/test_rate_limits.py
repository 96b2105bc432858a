"""Rate limits of hosted endpoints: the shared rule, and the simulated engine obeying it.

Expected times are worked out by hand from the rule in ``sim/ratelimit.py``: a bucket holds
one minute's allowance, full at the start, refilled at limit/60 per second.
"""

from __future__ import annotations

from typing import Any

import pytest

from sim.errors import ConfigError
from sim.ratelimit import CallTooLarge, RateLimiter
from sim.scenario import scenario_from_dict
from sim.simulator import Simulator
from tests.helpers import api_profile, write_profile


def test_requests_per_minute_let_a_minutes_allowance_through_then_one_per_refill() -> None:
    limiter = RateLimiter(rpm=2)
    for key in "abc":
        limiter.add(key, tokens=10)
    assert limiter.admit(0.0) == ["a", "b"]
    assert limiter.next_time(0.0) == pytest.approx(30.0)  # one request refills in 60/2 s
    assert limiter.admit(29.9) == []
    assert limiter.admit(30.0) == ["c"]
    assert limiter.next_time(30.0) is None


def test_tokens_per_minute_charge_prompt_plus_max_tokens_in_arrival_order() -> None:
    limiter = RateLimiter(tpm=600)  # 10 tokens a second
    limiter.add("a", 400)
    limiter.add("b", 400)
    limiter.add("c", 100)  # would fit now, but waits behind b (first in, first out)
    assert limiter.admit(0.0) == ["a"]  # 200 left
    assert limiter.next_time(0.0) == pytest.approx(20.0)  # 200 more at 10/s
    assert limiter.admit(20.0) == ["b"]  # 0 left
    assert limiter.next_time(20.0) == pytest.approx(30.0)  # c's 100 tokens
    assert limiter.admit(30.0) == ["c"]


def test_a_call_beyond_tpm_is_refused_and_concurrency_waits_for_a_release() -> None:
    limiter = RateLimiter(tpm=100, max_concurrency=1)
    with pytest.raises(CallTooLarge, match="101 tokens"):
        limiter.add("huge", 101)
    limiter.add("a", 10)
    limiter.add("b", 10)
    assert limiter.admit(0.0) == ["a"]
    assert limiter.next_time(0.0) is None  # only a release lets b start
    limiter.release("a")
    assert limiter.admit(5.0) == ["b"]


def test_a_cancelled_queued_call_leaves_the_queue() -> None:
    limiter = RateLimiter(rpm=1)
    limiter.add("a", 1)
    limiter.add("b", 1)
    limiter.add("c", 1)
    assert limiter.admit(0.0) == ["a"]
    limiter.release("b")
    assert limiter.admit(60.0) == ["c"]


def lone_agent(tmp_path: Any, **limits: int) -> dict[str, Any]:
    """Three requests sent at once to one api endpoint; a lone agent answers 11 tokens:
    TTFT 0.1 s, then 10 gaps of 0.01 s, so a call takes 0.2 s."""
    profile = write_profile(tmp_path, api_profile(ttft_s=0.1, itl_s=0.01))
    return {
        "name": "limited",
        "servers": {"hosted": {"kind": "api", "profile": profile, **limits}},
        "topology": {"kind": "graph", "unit": {"tokens": 11}, "agents": {"solo": {"steps": 1}}},
        "workload": {"requests": 3, "arrival": {"kind": "closed", "concurrency": 3}},
    }


def simulated(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = Simulator(scenario_from_dict(data)).run()
    ends = [r for r in result.records if r["type"] == "call_end"]
    return result.summary, sorted(ends, key=lambda r: r["req"])


def test_the_api_engine_queues_calls_beyond_the_request_limit(tmp_path) -> None:
    summary, ends = simulated(lone_agent(tmp_path, rpm=2))
    # two calls start at once; the third when a request refills, 30 s later
    assert [e["queued_s"] for e in ends] == pytest.approx([0.0, 0.0, 30.0])
    assert [e["t"] for e in ends] == pytest.approx([0.2, 0.2, 30.2])
    assert summary["ttft_s"]["p50"] == pytest.approx(0.1)
    assert summary["e2e_s"]["mean"] == pytest.approx((0.2 + 0.2 + 30.2) / 3)


def test_the_api_engine_queues_calls_beyond_the_token_limit(tmp_path) -> None:
    _, free = simulated(lone_agent(tmp_path))
    call_tokens = free[0]["prompt_tokens"] + 11  # prompt + max_tokens
    tpm = 2 * call_tokens + call_tokens // 2  # two calls fit; the third misses half its tokens
    _, ends = simulated(lone_agent(tmp_path, tpm=tpm))
    wait = (call_tokens - tpm + 2 * call_tokens) * 60 / tpm
    assert [e["queued_s"] for e in ends] == pytest.approx([0.0, 0.0, wait])


def test_the_api_engine_refuses_a_call_larger_than_the_token_limit(tmp_path) -> None:
    summary, ends = simulated(lone_agent(tmp_path, tpm=5))
    assert summary["failed_requests"] == 3
    assert all(e["status"] == "failed" for e in ends)
    assert all("more than the endpoint's tpm" in e["reason"] for e in ends)


@pytest.mark.parametrize(
    "server,needle",
    [
        ({"kind": "api", "rpm": 0}, "servers.s.rpm"),
        ({"kind": "api", "tpm": -5}, "servers.s.tpm"),
        ({"kind": "vllm", "rpm": 60}, "servers.s.rpm: unknown field"),
        ({"kind": "api", "rpm_limit": 60}, "servers.s.rpm_limit: unknown field"),
    ],
)
def test_bad_limits_are_one_line_naming_the_field(server: dict[str, Any], needle: str) -> None:
    data = {
        "servers": {"s": {"profile": "vllm-cpu-smollm2-135m", **server}},
        "topology": {"kind": "moa"},
    }
    with pytest.raises(ConfigError) as excinfo:
        scenario_from_dict(data, "file.yaml")
    message = str(excinfo.value)
    assert needle in message and message.startswith("file.yaml: ") and "\n" not in message


def test_idle_replicas_take_turns_so_each_endpoints_budget_is_used(tmp_path) -> None:
    """One request at a time on two endpoints allowing one request a minute each: the second
    request goes to the other, idle replica and starts at once (on the first it would wait
    60 s for the refill); the third waits for the first replica's refill, 60 s after its
    first call (0.2 s of service each: at 0.4 s it waits 59.6 s)."""
    data = lone_agent(tmp_path, rpm=1)
    data["servers"]["hosted"]["replicas"] = 2
    data["workload"]["arrival"] = {"kind": "closed", "concurrency": 1}
    _, ends = simulated(data)
    assert [e["queued_s"] for e in ends] == pytest.approx([0.0, 0.0, 59.6])
