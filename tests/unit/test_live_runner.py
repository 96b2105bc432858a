"""The live runner on the fake streaming server: faults, arrivals, Ctrl-C, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from live.runner import LiveRunner
from sim.errors import ConfigError
from sim.scenario import Scenario, scenario_from_dict
from sim.simulator import Simulator
from sim.trace import read_trace
from tests.fake_server import FakeServer, Fault, Timing, fake_server
from tests.helpers import api_profile, write_profile

MOA = {
    "kind": "moa",
    "mode": "staircase",
    "proposers": 3,
    "redundancy": 1,
    "agent": {"max_tokens": 12},
    "aggregator": {"max_tokens": 8},
    "chunks": {"proposer": [4, 4], "aggregator": [4, 4]},
}


def scenario_on(url: str, topology: dict[str, Any] | None = None, **extra: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "fake",
        "seed": 2,
        "servers": {"gpu": {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m", "endpoint": url}},
        "topology": topology or MOA,
        "workload": {"requests": 2, "prompt_tokens": {"dist": "fixed", "value": 16}},
        "live": {"stall_timeout_s": 1.0, "first_token_timeout_s": 5.0},
        **extra,
    }
    return scenario_from_dict(data)


def run(server: FakeServer, **extra: Any) -> list[dict[str, Any]]:
    return asyncio.run(LiveRunner(scenario_on(server.url, **extra)).run()).records


def ends_of(records: list[dict[str, Any]], agent: str) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "call_end" and r["call"].startswith(f"{agent}#")]


def test_a_clean_run_empties_the_cache_counts_prompts_and_finishes_every_request():
    with fake_server() as server:
        records = run(server, live={"cold_cache": True})
    assert server.cache_resets == 1
    ends = [r for r in records if r["type"] == "request_end"]
    assert [r["ok"] for r in ends] == [True, True]
    sent = [r for r in records if r["type"] == "request"]
    assert [r["prompt_tokens"] for r in sent] == [16, 16]  # the server's own count
    assert {r["when"] for r in records if r["type"] == "server_metrics"} == {"before", "after"}
    for end in (r for r in records if r["type"] == "call_end" and r["status"] == "ok"):
        assert end["prompt_tokens"] > 16 and end["attempts"] == 1


@pytest.mark.parametrize(
    "fault,reason",
    [
        (Fault("malformed", agent="p2", after_tokens=2), "unexpected"),
        (Fault("stall", agent="p2", after_tokens=2), "stalled"),
        (Fault("short", agent="p2", after_tokens=2), "stream ended after 2 of"),
        (Fault("status", agent="p2", status=503), "HTTP 503"),
    ],
)
def test_a_broken_proposer_call_is_one_failed_call_and_the_run_goes_on(fault, reason):
    with fake_server(faults=[fault]) as server:
        records = run(server, topology={**MOA, "redundancy": 0})
    (first, *_) = ends_of(records, "p2")
    assert first["status"] == "failed" and reason in first["reason"]
    assert [r["ok"] for r in records if r["type"] == "request_end"] == [True, True]


def test_a_failing_aggregator_fails_its_request_only():
    with fake_server(faults=[Fault("status", agent="aggregator", times=1)]) as server:
        records = run(server)
    ends = [r for r in records if r["type"] == "request_end"]
    assert [r["ok"] for r in ends] == [False, True]
    assert "aggregator: HTTP 500" in ends[0]["reason"]


def test_a_workload_files_arrival_times_are_kept_live_as_simulated(tmp_path):
    rows = [{"prompt_tokens": 8, "arrival_s": t} for t in (0.0, 0.6, 0.9)]
    workload = tmp_path / "w.jsonl"
    workload.write_text("\n".join(json.dumps(r) for r in rows))
    solo = {"kind": "graph", "unit": {"tokens": 4}, "agents": {"solo": {"steps": 1}}}
    with fake_server(timings={"solo": Timing(0.01, 0.01)}) as server:
        records = run(server, topology=solo, workload={"file": str(workload)})
    sent = [r["t"] for r in records if r["type"] == "request"]
    assert sent == pytest.approx([0.0, 0.6, 0.9], abs=0.1)  # not back to back


def test_replicas_are_spread_over_their_endpoints_as_simulated(tmp_path):
    """Two users; answer lengths 4, 16, 30, 4 tokens: request 2 (long) still runs on replica
    0 when request 3 arrives, so the least-loaded rule sends request 3 to replica 1."""
    rows = [{"prompt_tokens": 8, "output_tokens": n} for n in (4, 16, 30, 4)]
    workload = tmp_path / "w.jsonl"
    workload.write_text("\n".join(json.dumps(r) for r in rows))
    profile = write_profile(tmp_path, api_profile(ttft_s=0.03, itl_s=0.02))
    solo = {"kind": "graph", "unit": {"tokens": 32}, "agents": {"solo": {"steps": 1}}}
    timing = {"solo": Timing(0.03, 0.02)}
    with fake_server(timing) as first, fake_server(timing) as second:
        server = {"kind": "api", "profile": profile, "replicas": 2}
        live = {**server, "endpoints": [first.url, second.url]}
        data = {
            "name": "replicas",
            "topology": solo,
            "workload": {"file": str(workload), "arrival": {"kind": "closed", "concurrency": 2}},
        }
        measured = asyncio.run(
            LiveRunner(scenario_from_dict(data | {"servers": {"s": live}})).run()
        )
    simulated = Simulator(scenario_from_dict(data | {"servers": {"s": server}})).run()

    def replicas(records: list[dict[str, Any]]) -> list[int]:
        calls = sorted((r for r in records if r["type"] == "call"), key=lambda r: r["req"])
        return [call["replica"] for call in calls]

    assert replicas(measured.records) == replicas(simulated.records) == [0, 1, 0, 1]
    assert sorted(r.req for r in first.received) == [0, 2]
    assert sorted(r.req for r in second.received) == [1, 3]


def test_replicas_without_one_url_each_are_refused_live_in_one_line():
    with fake_server() as server:
        data = scenario_on(server.url).model_dump(mode="json")
        data["servers"]["gpu"]["replicas"] = 2
        with pytest.raises(ConfigError, match=r"servers\.gpu\.replicas: 2 copies need one URL"):
            LiveRunner(scenario_from_dict(data))
        data["servers"]["gpu"] |= {"endpoint": None, "endpoints": [server.url]}
        with pytest.raises(ConfigError, match=r"endpoints lists 1 URLs for 2 replicas"):
            scenario_from_dict(data)


def _ignore_and_block_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def test_ctrl_c_ends_a_run_even_if_it_inherited_sigint_ignored_and_blocked(tmp_path: Path):
    """A shell starts background jobs with SIGINT ignored; Ray's launcher starts processes
    with it blocked (a run started so finished with exit 0 when signalled). Ctrl-C must
    still stop the sending and keep the trace. (The plain case: tests/integration.)"""
    with fake_server(timings={"aggregator": Timing(0.05, 0.05)}) as server:
        scenario = tmp_path / "s.yaml"
        data = scenario_on(server.url, workload={"requests": 20}).model_dump(mode="json")
        scenario.write_text(yaml.safe_dump(data))
        trace = tmp_path / "trace.jsonl"
        command = [sys.executable, "-m", "stairwise.cli", "run", str(scenario), "--json"]
        process = subprocess.Popen(
            [*command, "--trace", str(trace)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_ignore_and_block_sigint,
        )
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            if trace.exists() and '"request_end"' in trace.read_text():
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    records = read_trace(trace)
    assert records[-1]["type"] == "end" and records[-1]["interrupted"] is True
    cancelled = [r for r in records if r["type"] == "call_end" and r["status"] == "cancelled"]
    assert cancelled and all(r["reason"] == "interrupted" for r in cancelled)
    completed = sum(1 for r in records if r["type"] == "request_end" and r["ok"])
    assert json.loads(stdout)["requests"] == completed < 20
