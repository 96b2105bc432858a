"""`stairwise validate` end to end on the local vLLM: live run, two simulations, report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from sim.profile import load_profile
from tests.integration.conftest import live_scenario

pytestmark = pytest.mark.live


def test_validate_prints_the_comparison_and_writes_the_report(vllm_url, tmp_path):
    topology = {
        "kind": "moa",
        "proposers": 2,
        "agent": {"max_tokens": 32},
        "aggregator": {"max_tokens": 16},
        "chunks": {"proposer": [8, 24], "aggregator": [8, 8]},
    }
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump(live_scenario(vllm_url, topology).model_dump(mode="json")))
    report = tmp_path / "report.html"
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "stairwise.cli",
        "validate",
        str(scenario),
        "--json",
        "--report",
        str(report),
        "--out",
        str(out),
        "--no-local",
    ]
    done = subprocess.run([*command, "--repeat", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"live", "sim", "sim_trace_driven", "error_pct", "ks"} <= set(result)
    assert result["live"]["source"] == "live" and result["sim"]["source"] == "sim"
    # two live runs pooled against one simulation of the same two requests
    assert result["live"]["requests"] == 4 and result["sim"]["requests"] == 2
    assert result["sim_trace_driven"]["requests"] == 4
    assert set(result["error_pct"]) >= {"ttft_p50", "ttft_p90", "tps_p50", "e2e_p50"}
    # the real engine probed around each of the two runs, and the rescaled comparison
    probe = result["probe"]["local"]
    assert len(probe["before"]) == len(probe["after"]) == 2
    assert all(f > 0 for f in probe["factors"].values())
    assert set(result["error_pct_probe_scaled"]) == set(result["error_pct"])
    # the prompts call by call: two runs' calls against the simulation's, priced as the
    # server counted them (a unit may end a token past its boundary live)
    prompts = result["prompts"]
    assert prompts["calls"] >= 2 * 6
    assert abs(prompts["prompt_tokens_error_pct"]) < 3
    # the shipped name resolves to the variant of this machine's processor class
    assert result["profiles"]["local"]["profile"] == load_profile("vllm-cpu-smollm2-135m").name
    assert "Staircase timeline" in report.read_text()
    assert (out / "integration.live.jsonl").exists() and (out / "integration.live-2.jsonl").exists()

    # the same comparison again from the kept live traces, and a failing --max-error
    again = subprocess.run(
        [*command, "--live-from", str(out), "--max-error", "0.0001"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 1 and "running live" not in again.stderr
    assert json.loads(again.stdout)["live"] == result["live"]
