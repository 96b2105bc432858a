"""The hosted-proposers example through the real console script: its costs per server, and
its new fields refused in one line (exit 2) when wrong."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_cli_simulate import stairwise

EXAMPLE = "examples/hosted-moa.yaml"


def test_the_hosted_example_simulates_with_costs_per_server():
    out = stairwise("simulate", EXAMPLE, "--json", "--replications", "1")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["requests"] == 8 and summary["failed_requests"] == 0
    cost = summary["cost_usd"]
    hosted, local = cost["servers"]["hosted"], cost["servers"]["local"]
    assert hosted["tokens"] > 0 and hosted["gpu"] == 0  # per token
    assert local["tokens"] == 0 and local["gpu"] > 0  # per GPU-hour
    assert local["gpu_hours"] == pytest.approx(summary["duration_s"] / 3600)
    assert cost["total"] == pytest.approx(hosted["tokens"] + local["gpu"])


@pytest.mark.parametrize(
    "override,needle",
    [
        ("servers.hosted.rpm=0", "servers.hosted.rpm"),
        ("servers.hosted.burst=3", "servers.hosted.burst: unknown field"),
        ("servers.local.tpm=1000", "servers.local.tpm: unknown field"),
        ("servers.local.prices.output_per_mtok=1", "per token or per GPU-hour, not both"),
        ("servers.hosted.prices.gpus=2", "give per_gpu_hour too"),
    ],
)
def test_bad_hosted_fields_are_one_line_and_exit_2(override, needle):
    out = stairwise("simulate", EXAMPLE, "--set", override)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
