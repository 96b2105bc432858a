"""The strict client on the real local server: the local vLLM spoken to as a hosted ``api``
endpoint (no vLLM extras, lengths by ``max_tokens`` only, prompts sized by the profile's
characters per token), beside a vLLM aggregator on the same server — the staircase paper's
setup, as examples/hosted-moa.yaml has it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from live import local_server
from live.runner import LiveRunner
from sim.scenario import Scenario, load_scenario

pytestmark = pytest.mark.live

EXAMPLE = Path("examples/hosted-moa.yaml")


def every_server_at(scenario: Scenario, url: str) -> Scenario:
    """The example's hosted and vLLM servers both on the local server (the hosted one spoken
    to as a strict endpoint)."""
    servers = {
        name: server.model_copy(update={"endpoint": url, "model": local_server.MODEL_NAME})
        for name, server in scenario.servers.items()
    }
    return scenario.model_copy(update={"servers": servers})


def test_the_hosted_moa_example_runs_on_the_local_server_as_a_strict_endpoint(
    vllm_url: str, tmp_path: Path
) -> None:
    scenario = load_scenario(  # short answers: the shared CPU engine is slow
        EXAMPLE,
        [
            "workload.requests=2",
            "workload.arrival={kind: closed, concurrency: 2}",
            "topology.agent.max_tokens=24",
            "topology.aggregator.max_tokens=16",
            "topology.chunks={proposer: [8, 16], aggregator: [8, 8]}",
        ],
    )
    scenario = every_server_at(scenario, vllm_url)
    runner = LiveRunner(scenario, trace_path=tmp_path / "t.jsonl", profile_dir=EXAMPLE.parent)
    result = asyncio.run(runner.run())

    assert result.summary["requests"] == 2 and result.summary["failed_requests"] == 0
    calls = {(r["req"], r["call"]): r for r in result.records if r["type"] == "call"}
    for end in (r for r in result.records if r["type"] == "call_end"):
        call = calls[(end["req"], end["call"])]
        if end["status"] != "ok":
            continue
        if call["server"] == "hosted":  # max_tokens only: the model may stop earlier
            assert 0 < end["completion_tokens"] <= call["tokens"]
            assert end["queued_s"] is not None  # limited: the time it waited is recorded
        else:  # vLLM extras: exactly the tokens asked for
            assert end["completion_tokens"] == call["tokens"]
    cost = result.summary["cost_usd"]
    assert cost["servers"]["hosted"]["tokens"] > 0 and cost["servers"]["local"]["gpu"] > 0
    # no vLLM route asked of the hosted server: /metrics was read for the vLLM one only
    scraped = {r["server"] for r in result.records if r["type"] == "server_metrics"}
    assert scraped == {"local"}


def test_prompts_sized_by_characters_per_token_come_out_near_their_length(
    vllm_url: str, tmp_path: Path
) -> None:
    """A lone hosted agent: its prompts are made without a tokenizer, from the profile's 4.6
    characters per token; the real tokenizer counts them within 10 %."""
    scenario = load_scenario(
        EXAMPLE,
        [
            "topology.proposers=1",
            "topology.aggregator.server=hosted",
            "topology.agent.max_tokens=8",
            "topology.aggregator.max_tokens=4",
            "topology.chunks={proposer: [4], aggregator: [4]}",
            "workload.requests=2",
            "workload.prompt_tokens={dist: fixed, value: 400}",
        ],
    )
    scenario = every_server_at(scenario, vllm_url)
    runner = LiveRunner(scenario, profile_dir=EXAMPLE.parent)
    result = asyncio.run(runner.run())
    assert result.summary["failed_requests"] == 0
    base = vllm_url.removesuffix("/v1")
    for prompt in runner._prompts.values():
        body = {"model": local_server.MODEL_NAME, "prompt": prompt, "add_special_tokens": False}
        counted = len(httpx.post(f"{base}/tokenize", json=body).json()["tokens"])
        assert abs(counted - 400) / 400 < 0.10, json.dumps({"counted": counted})
