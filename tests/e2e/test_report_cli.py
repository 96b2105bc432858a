"""`stairwise report` through the real console script: output file, reference, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

STAIRWISE = shutil.which("stairwise") or str(Path(sys.executable).parent / "stairwise")
EXAMPLE = "examples/staircase-moa.yaml"


def stairwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAIRWISE, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("traces")
    staircase, standard = directory / "staircase.jsonl", directory / "standard.jsonl"
    for path, mode in ((staircase, "staircase"), (standard, "standard")):
        done = stairwise(
            "simulate",
            EXAMPLE,
            "--json",
            "--trace",
            str(path),
            "--set",
            "workload.requests=3",
            "--set",
            f"topology.mode={mode}",
        )
        assert done.returncode == 0, done.stderr
    return staircase, standard


def test_report_writes_one_html_file_compared_with_the_reference(traces, tmp_path):
    staircase, standard = traces
    out = tmp_path / "sub" / "report.html"
    done = stairwise("report", str(staircase), str(standard), "-o", str(out), "--reference", "2")
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and "compared with standard (sim)" in done.stdout
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "Errors against standard (sim)" in page
    assert "<script src" not in page and "<link" not in page  # plotly.js is inline


def test_a_live_trace_is_the_default_reference(traces, tmp_path):
    staircase, _ = traces
    records = [json.loads(line) for line in staircase.read_text().splitlines()]
    records[0]["source"] = "live"
    live = tmp_path / "measured.jsonl"
    live.write_text("\n".join(json.dumps(r) for r in records))
    done = stairwise("report", str(staircase), str(live), "-o", str(tmp_path / "r.html"))
    assert done.returncode == 0, done.stderr
    assert "compared with measured (live)" in done.stdout


@pytest.mark.parametrize(
    "make_args,needle",
    [
        (lambda t, d: [str(d / "none.jsonl"), "-o", str(d / "r.html")], "cannot read trace"),
        (lambda t, d: [str(t[0]), "-o", str(d / "r.html"), "--reference", "5"], "--reference 5"),
        (lambda t, d: [str(t[0]), "-o", str(d)], "cannot write the report"),
        (lambda t, d: [str(d / "bad.jsonl"), "-o", str(d / "r.html")], "bad.jsonl:2: call record"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(traces, tmp_path, make_args, needle):
    header = traces[0].read_text().splitlines()[0]
    (tmp_path / "bad.jsonl").write_text(header + '\n{"type": "call", "req": 0}\n')
    done = stairwise("report", *make_args(traces, tmp_path))
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
