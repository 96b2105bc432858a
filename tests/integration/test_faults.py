"""Faults the real server does not produce, injected by a proxy in front of it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from live.proxy import Fault, ProxyConfig, free_port, start_proxy
from live.runner import LiveRunner
from sim.trace import read_trace
from tests.integration.conftest import live_scenario

pytestmark = pytest.mark.live

MOA = {
    "kind": "moa",
    "mode": "staircase",
    "proposers": 3,
    "agent": {"max_tokens": 48},
    "proposer": [{}, {"system_prompt": "You are helpful. MARK-P2"}, {}],
    "aggregator": {"max_tokens": 24, "system_prompt": "You merge answers. MARK-AGG"},
    "chunks": {"proposer": [8, 16], "aggregator": [8, 16]},
    "redundancy": 1,
}


def run_through(vllm_url, *faults, live=None, topology=MOA):
    config = ProxyConfig(upstream=vllm_url.removesuffix("/v1"), faults=list(faults))
    with start_proxy(config, free_port()) as url:
        scenario = live_scenario(url, topology, live=live or {})
        return asyncio.run(LiveRunner(scenario).run())


def ends(result, call):
    return [r for r in result.records if r["type"] == "call_end" and r["call"] == call]


def test_a_stream_dropped_mid_way_drops_that_proposer_and_keeps_its_tokens(vllm_url):
    result = run_through(vllm_url, Fault(kind="drop", match="MARK-P2", after_events=5))
    assert result.summary["requests"] == 2 and result.summary["failed_requests"] == 0
    for end in ends(result, "p2#1"):
        assert end["status"] == "failed" and end["reason"]
        assert 0 < end["completion_tokens"] < 48  # what it received before the cut


def test_a_stalled_proposer_is_dropped_after_the_stall_timeout(vllm_url):
    started = time.perf_counter()
    result = run_through(
        vllm_url,
        Fault(kind="stall", match="MARK-P2", after_events=4),
        live={"stall_timeout_s": 2.0},
        topology={**MOA, "redundancy": 0},  # so the run must notice the stall itself
    )
    assert result.summary["requests"] == 2
    assert all("stalled" in e["reason"] for e in ends(result, "p2#1"))
    assert time.perf_counter() - started < 60


def test_a_failing_aggregator_fails_its_request_and_the_run_goes_on(vllm_url):
    result = run_through(vllm_url, Fault(kind="status", status=500, match="MARK-AGG", times=1))
    assert (result.summary["requests"], result.summary["failed_requests"]) == (1, 1)
    failed = [r for r in result.records if r["type"] == "request_end" and not r["ok"]]
    assert "HTTP 500" in failed[0]["reason"]


def test_connection_resets_before_the_first_token_are_retried(vllm_url):
    result = run_through(
        vllm_url,
        Fault(kind="reset", match="MARK-P2", times=2),
        live={"backoff_s": 0.05},
        topology={**MOA, "redundancy": 0},  # so p2 is waited for, not cancelled
    )
    assert result.summary["failed_requests"] == 0
    attempts = [e["attempts"] for e in ends(result, "p2#1")]
    assert sorted(attempts) == [1, 3]  # the first request's p2 needed two retries


def test_an_unreachable_endpoint_is_one_line_and_exit_2(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        yaml.safe_dump(
            live_scenario(f"http://127.0.0.1:{free_port()}/v1", MOA).model_dump(mode="json")
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "stairwise.cli", "run", str(scenario)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_ctrl_c_keeps_everything_recorded_and_summarises_what_completed(vllm_url, tmp_path):
    scenario = tmp_path / "s.yaml"
    data = live_scenario(vllm_url, MOA, workload={"requests": 6}).model_dump(mode="json")
    scenario.write_text(yaml.safe_dump(data))
    trace = tmp_path / "trace.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stairwise.cli",
            "run",
            str(scenario),
            "--json",
            "--trace",
            str(trace),
            "--no-probe",  # Ctrl-C during the run itself, not during a probe
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if trace.exists() and '"request_end"' in trace.read_text():
            break
        time.sleep(0.2)
    recorded_before = trace.read_text().splitlines()
    assert process.poll() is None, process.communicate()  # still running: 5 requests to go
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    records = read_trace(trace)
    assert [json.loads(line) for line in recorded_before] == records[: len(recorded_before)]
    assert records[-1]["type"] == "end" and records[-1]["interrupted"] is True
    summary = json.loads(stdout)
    completed = sum(1 for r in records if r["type"] == "request_end" and r["ok"])
    assert summary["requests"] == completed >= 1
    assert Path(trace).stat().st_size > 0
