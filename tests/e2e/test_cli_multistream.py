"""`mode: multistream` through the real console script: simulated, never run live."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cli_simulate import EXAMPLE, stairwise

MULTISTREAM = ["--set", "topology.mode=multistream"]


def test_simulate_reports_a_multistream_scenario_on_the_common_scale():
    out = stairwise("simulate", EXAMPLE, *MULTISTREAM, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["requests"] == 8 and summary["failed_requests"] == 0
    assert summary["kv_peak_tokens"]["count"] == 8
    assert set(summary["agents"]) == {"p1", "p2", "p3", "aggregator"}


@pytest.mark.parametrize("command", ["run", "validate"])
def test_run_and_validate_refuse_it_in_one_line_with_exit_2(command):
    out = stairwise(command, EXAMPLE, *MULTISTREAM)
    assert out.returncode == 2
    assert "no engine serves multi-stream decoding yet" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
