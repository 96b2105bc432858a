"""`stairwise sweep` and `stairwise plan` through the real console script."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import one_at_a_time

STAIRWISE = shutil.which("stairwise") or str(Path(sys.executable).parent / "stairwise")
EXAMPLE = Path("examples/staircase-moa.yaml").resolve()


def stairwise(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAIRWISE, *args], capture_output=True, text=True, timeout=600, env=env)


def sweep_file(tmp_path: Path, name: str = "sweep.yaml", requests: int = 10, **extra) -> Path:
    spec = {
        "kind": "sweep",
        "name": "e2e",
        "scenario": str(EXAMPLE),
        "overrides": [f"workload.requests={requests}"],
        "axes": {"topology.chunks.proposer.0": [4, 16, 64], "topology.redundancy": [0, 2]},
        "replications": 2,
        "metrics": ["ttft_s.p90", "stall_s.p90", "cost_usd.per_request"],
    } | extra
    path = tmp_path / name
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def data_rows(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()[1:]) if path.exists() else []


def test_a_sweep_stores_rows_writes_a_report_and_prints_them(tmp_path):
    out = tmp_path / "out"
    done = stairwise("sweep", str(sweep_file(tmp_path)), "--out", str(out), "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "6 points: 6 computed, 0 resumed" in done.stdout
    with (out / "results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 6 and {r["topology.redundancy"] for r in rows} == {"0", "2"}
    assert all(float(r["ttft_s.p90.ci_low"]) <= float(r["ttft_s.p90"]) for r in rows)
    report = (out / "report.html").read_text()
    assert report.count('class="plot"') == 3 and "Plotly.newPlot" in report

    again = stairwise("sweep", str(sweep_file(tmp_path)), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr
    printed = json.loads(again.stdout)
    assert [row["key"] for row in printed] == [
        row["key"] for row in sorted(rows, key=lambda r: int(r["point"]))
    ]


def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    spec = sweep_file(tmp_path, requests=100)
    killed_out, whole_out = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(
        [STAIRWISE, "sweep", str(spec), "--out", str(killed_out), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while len(data_rows(killed_out / "results.csv")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the sweep ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(data_rows(killed_out / "results.csv"))
    assert 2 <= finished < 6

    resumed = stairwise("sweep", str(spec), "--out", str(killed_out), "--workers", "1")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{6 - finished} computed, {finished} resumed" in resumed.stdout
    whole = stairwise("sweep", str(spec), "--out", str(whole_out), "--no-report")
    assert whole.returncode == 0, whole.stderr
    assert data_rows(killed_out / "results.csv") == data_rows(whole_out / "results.csv")


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"axes": {}}, "axes"),
        ({"axes": {"topology.sugar": [1]}}, "topology.sugar: unknown field"),
        ({"axes": {"topology.redundancy": [3]}}, "redundancy (3) must be less than proposers"),
        ({"method": {"kind": "lhs"}}, "method.n: required field missing"),
        ({"metrics": ["ttft_s.p95"]}, "unknown metric"),
        ({"replications": -1}, "replications"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"scenario": "missing.yaml"}, "cannot read"),
    ],
)
def test_bad_sweep_files_are_one_line_and_exit_2(tmp_path, change, needle):
    out = stairwise("sweep", str(sweep_file(tmp_path, **change)), "--out", str(tmp_path / "o"))
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing was run


@pytest.mark.parametrize(
    "make,args,needle",
    [
        (lambda p: p.write_text("kind: sweep\naxes: {a: [1,\n"), [], "malformed YAML"),
        (lambda p: None, [], "cannot read"),
        (lambda p: p.write_text("- 1\n"), [], "a sweep must be a mapping"),
        (lambda p: sweep_file(p.parent, p.name), ["--backend", "spark"], "expected local or ray"),
        (lambda p: sweep_file(p.parent, p.name), ["--address", "x:1"], "only applies to"),
        (lambda p: sweep_file(p.parent, p.name), ["--workers", "0"], "at least 1"),
    ],
)
def test_bad_files_and_options_are_one_line_and_exit_2(tmp_path, make, args, needle):
    path = tmp_path / "sweep.yaml"
    make(path)
    out = stairwise("sweep", str(path), "--out", str(tmp_path / "o"), *args)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


def one_at_a_time_file(tmp_path: Path) -> Path:
    """One api server, one request at a time, 1.0 s per request (see test_capacity.py)."""
    path = tmp_path / "one.yaml"
    path.write_text(json.dumps(one_at_a_time(tmp_path).model_dump(mode="json")))
    return path


def test_plan_finds_the_hand_computed_rate_and_replicas(tmp_path):
    out = stairwise(
        "plan", str(one_at_a_time_file(tmp_path)), "--slo", "e2e_p99=1000s", "--keep-up-slack", "0",
        "--requests", "50", "--target-rate", "2.5", "--json", "--workers", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    capacity = result["capacity"]
    assert capacity["max_rate"] <= 1.0 < capacity["first_failing"] <= 1.0101
    assert result["replicas"]["servers"] == {"api": 3} and result["replicas"]["scaled"][0] == "api"
    assert result["slos"] == {"e2e_p99": 1000.0} and result["schedules"] == []
    # nothing in this system is random: every interval run agrees with the prediction
    value = capacity["at_max"]["values"]["e2e_p99"]
    assert capacity["at_max"]["intervals"] == {"e2e_p99": [value, value]}
    assert capacity["held_share"] == 1.0


def test_plan_prints_capacity_and_the_schedule_table():
    out = stairwise(
        "plan", str(EXAMPLE), "--slo", "ttft_p90=1.5s", "--slo", "stall_p90=2s",
        "--requests", "20", "--first-chunk", "8", "--growth", "2",
        "--schedule", "8,128,256", "--workers", "2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "ttft_p90 ≤ 1.5 s" in out.stdout and "stall_p90 ≤ 2 s" in out.stdout
    assert "as given: " in out.stdout
    assert "8×2 [8,16,32,…]" in out.stdout and "standard mode" in out.stdout
    # the aggregator one chunk ahead, and the answer's speed against the standard mode's
    assert "/ aggregator +1" in out.stdout and "answer TPS p50" in out.stdout


def test_plan_prints_the_intervals_at_the_maximum_rate(tmp_path):
    out = stairwise(
        "plan", str(one_at_a_time_file(tmp_path)), "--slo", "e2e_p99=1000s",
        "--requests", "20", "--interval-replications", "3", "--workers", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "at that rate: e2e_p99" in out.stdout and "sustainable in 100% of 3 runs" in out.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--slo", "ttft<2"], "expected METRIC_STAT=VALUE"),
        (["--slo", "ttft_p90=2", "--slo", "ttft_p90=3"], "names one SLO twice"),
        (["--slo", "ttft_p90=2", "--requests", "1"], "--requests must be at least 2"),
        (["--slo", "ttft_p90=2", "--schedule", "8,x"], "--schedule '8,x'"),
        (["--slo", "ttft_p90=2", "--set", "topology.redundancy=9"], "redundancy"),
        (["--slo", "ttft_p90=2", "--interval-replications", "0"], "--interval-replications"),
        (["--slo", "ttft_p90=2", "--level", "2"], "--level must be between 0 and 1"),
        (["--slo", "stall_p90=2xitl", "--lever", "temperature"], "unknown lever"),
        (["--slo", "ttft_p90=2xitl"], "only stall and itl bounds"),
        (["--slo", "stall_p90=2xttft"], "multiple of the standard mode's ITL"),
        (
            ["--slo", "ttft_p90=2", "--set", "topology.aggregator.priority=-1"],
            "servers.local.scheduling_policy: priority",
        ),
    ],
)
def test_bad_plan_input_is_one_line_and_exit_2(args, needle):
    out = stairwise("plan", str(EXAMPLE), *args)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr


@pytest.mark.ray
def test_the_ray_backend_started_by_the_cli_matches_the_local_pool(tmp_path):
    pytest.importorskip("ray", reason="Ray is the `ray` extra: pip install -e '.[ray]'")
    token_dir = Path.home() / ".ray"
    had_token_dir = token_dir.exists()
    session = Path(tempfile.mkdtemp(prefix="ray-", dir=tempfile.gettempdir()))
    env = {**os.environ, "RAY_TMPDIR": str(session)}
    spec = str(sweep_file(tmp_path))
    try:
        on_ray = stairwise(
            "sweep", spec, "--backend", "ray", "--workers", "2", "--out", str(tmp_path / "ray"),
            env=env,
        )  # fmt: skip
    finally:
        shutil.rmtree(session, ignore_errors=True)
        if not had_token_dir:
            shutil.rmtree(token_dir, ignore_errors=True)
    assert on_ray.returncode == 0, on_ray.stderr
    local = stairwise("sweep", spec, "--workers", "2", "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    assert data_rows(tmp_path / "ray" / "results.csv") == data_rows(
        tmp_path / "local" / "results.csv"
    )


def test_the_capacity_planning_example_script_runs():
    out = subprocess.run(
        [sys.executable, "examples/capacity_plan.py"], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert "best schedule:" in out.stdout and "needs servers" in out.stdout
