"""`stairwise simulate` through the real console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim.metrics import summarize
from sim.trace import read_trace

EXAMPLE = "examples/staircase-moa.yaml"
STAIRWISE = shutil.which("stairwise") or str(Path(sys.executable).parent / "stairwise")


def stairwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAIRWISE, *args], capture_output=True, text=True, timeout=300)


def test_json_output_has_the_documented_shape_and_is_deterministic(tmp_path):
    trace = tmp_path / "run.jsonl"
    first = stairwise("simulate", EXAMPLE, "--json", "--trace", str(trace))
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    for key in ("ttft_s", "itl_s", "tpot_s", "e2e_s", "tps", "stall_s"):
        assert set(summary[key]) >= {"mean", "p50", "p90", "p99", "p50_ci", "p90_ci"}
        low, high = summary[key]["p50_ci"]
        assert low <= summary[key]["p50"] <= high
    assert summary["intervals"]["level"] == 0.9
    assert summary["source"] == "sim" and summary["scenario"] == "staircase-moa-3x1"
    assert summary["requests"] == 8
    assert set(summary["cost_usd"]) == {"total", "per_request", "tokens", "gpu", "servers"}
    assert 0 <= summary["prefix_cache_hit_ratio"] <= 1 and summary["throughput_tok_s"] > 0

    again = stairwise("simulate", EXAMPLE, "--json")
    assert again.stdout == first.stdout
    other_seed = stairwise("simulate", EXAMPLE, "--json", "--seed", "8")
    assert json.loads(other_seed.stdout)["e2e_s"] != summary["e2e_s"]
    # the trace alone reproduces the summary, but for the intervals (they need other runs)
    assert summarize(read_trace(trace)) == without_intervals(summary)


def without_intervals(summary: dict) -> dict:
    return {
        key: {k: v for k, v in value.items() if not k.endswith("_ci")}
        if isinstance(value, dict)
        else value
        for key, value in summary.items()
        if key != "intervals"
    }


def test_overrides_change_the_prediction():
    staircase = json.loads(stairwise("simulate", EXAMPLE, "--json").stdout)
    standard = json.loads(
        stairwise("simulate", EXAMPLE, "--json", "--set", "topology.mode=standard").stdout
    )
    assert staircase["ttft_s"]["p50"] < standard["ttft_s"]["p50"]


def test_tables_are_printed_by_default():
    out = stairwise("simulate", EXAMPLE)
    assert out.returncode == 0
    assert "TTFT" in out.stdout and "stall" in out.stdout and "aggregator" in out.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "topology.redundancy=3"], "redundancy"),
        (["--set", "topology.chunks.proposer=[]"], "chunks.proposer"),
        (["--set", "topology.chunks.aggregator=[8,-4]"], "chunks.aggregator"),
        (["--set", "topology.sugar=1"], "topology.sugar: unknown field"),
        (["--set", "servers.local.profile=no-such-profile"], "no-such-profile"),
        (["--set", "topology.agent.server=gpu9"], "gpu9"),
        (["--set", "topology={kind: graph, agents: {a: {next: [b]}, b: {next: [a]}}}"], "cycle"),
        (["--set", "nonsense"], "dotted.path=value"),
        (["--replications", "0"], "--replications must be at least 1"),
        (["--level", "1.5"], "--level must be between 0 and 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    out = stairwise("simulate", EXAMPLE, *args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers: {a: [1,\n")
    for path, needle in ((bad, "malformed YAML"), (tmp_path / "none.yaml", "cannot read")):
        out = stairwise("simulate", str(path))
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr
