"""Cost per server: token prices (a server's own or the scenario's) and GPU-hours."""

from __future__ import annotations

from typing import Any

import pytest

from sim.errors import ConfigError
from sim.metrics import costs
from sim.scenario import scenario_from_dict
from sim.simulator import Simulator

SERVERS = {
    "hosted": {
        "replicas": 1,
        "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.5},
    },
    "gpu": {"replicas": 2, "prices": {"per_gpu_hour": 3.6, "gpus": 2}},
    "plain": {"replicas": 1},  # no prices of its own: the scenario's
}


def trace(usage: list[tuple[str, int, int, int]]) -> list[dict[str, Any]]:
    """A header and one call per (server, prompt, cached, generated)."""
    header = {
        "type": "header",
        "scenario": {"servers": SERVERS, "prices": {"input_per_mtok": 10, "output_per_mtok": 20}},
    }
    records: list[dict[str, Any]] = [header]
    for index, (server, prompt, cached, generated) in enumerate(usage):
        records.append({"type": "call", "req": 0, "call": f"c{index}", "server": server})
        records.append(
            {
                "type": "call_end",
                "req": 0,
                "call": f"c{index}",
                "prompt_tokens": prompt,
                "cached_tokens": cached,
                "completion_tokens": generated,
            }
        )
    return records


def test_each_server_is_priced_its_own_way() -> None:
    records = trace([("hosted", 1000, 400, 500), ("gpu", 5000, 0, 800), ("plain", 100, 0, 50)])
    cost = costs(records, duration_s=100.0, prices={"input_per_mtok": 10, "output_per_mtok": 20})
    hosted = (600 * 1.0 + 400 * 0.5 + 500 * 2.0) / 1e6  # uncached, cached, generated
    gpu = 3.6 * 2 * 2 * 100 / 3600  # $/GPU-hour × GPUs × replicas × hours; tokens are free
    plain = (100 * 10 + 50 * 20) / 1e6  # the scenario's prices
    assert cost["servers"]["hosted"] == {
        "tokens": pytest.approx(hosted),
        "gpu": 0.0,
        "gpu_hours": 0.0,
    }
    assert cost["servers"]["gpu"]["tokens"] == 0.0
    assert cost["servers"]["gpu"]["gpu"] == pytest.approx(gpu)
    assert cost["servers"]["gpu"]["gpu_hours"] == pytest.approx(2 * 2 * 100 / 3600)
    assert cost["servers"]["plain"]["tokens"] == pytest.approx(plain)
    assert cost["tokens"] == pytest.approx(hosted + plain)
    assert cost["total"] == pytest.approx(hosted + plain + gpu)


def gpu_scenario(replicas: int) -> dict[str, Any]:
    return {
        "name": "rented",
        "seed": 4,
        "servers": {
            "gpu": {
                "kind": "vllm",
                "profile": "vllm-cpu-smollm2-135m",
                "replicas": replicas,
                "prices": {"per_gpu_hour": 2.0},
            }
        },
        "topology": {"kind": "graph", "unit": {"tokens": 16}, "agents": {"solo": {"steps": 1}}},
        "workload": {"requests": 10, "arrival": {"kind": "constant", "rate_per_s": 0.5}},
    }


def test_more_replicas_of_a_rented_server_cost_more_per_request() -> None:
    one, two = (Simulator(scenario_from_dict(gpu_scenario(k))).run().summary for k in (1, 2))
    for replicas, summary in ((1, one), (2, two)):
        expected = 2.0 * replicas * summary["duration_s"] / 3600
        assert summary["cost_usd"]["gpu"] == pytest.approx(expected)
        assert summary["cost_usd"]["per_request"] == pytest.approx(expected / 10)
    assert two["cost_usd"]["per_request"] > 1.9 * one["cost_usd"]["per_request"]


@pytest.mark.parametrize(
    "prices,needle",
    [
        ({"per_gpu_hour": 2.0, "output_per_mtok": 1.0}, "per token or per GPU-hour, not both"),
        ({"gpus": 4}, "give per_gpu_hour too"),
        ({"per_gpu_hour": -1}, "servers.s.prices.per_gpu_hour"),
        ({"per_hour": 2.0}, "servers.s.prices.per_hour: unknown field"),
    ],
)
def test_bad_server_prices_are_one_line_naming_the_field(prices: dict[str, Any], needle: str):
    data = {
        "servers": {"s": {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m", "prices": prices}},
        "topology": {"kind": "moa"},
    }
    with pytest.raises(ConfigError) as excinfo:
        scenario_from_dict(data, "file.yaml")
    message = str(excinfo.value)
    assert needle in message and message.startswith("file.yaml: ") and "\n" not in message


def test_the_scenario_wide_token_prices_still_read() -> None:
    data = {
        "servers": {"s": {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}},
        "topology": {"kind": "moa"},
        "prices": {"input_per_mtok": 0.2, "output_per_mtok": 0.6, "cached_input_per_mtok": 0.05},
    }
    assert scenario_from_dict(data).prices.output_per_mtok == 0.6
