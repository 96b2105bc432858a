"""`stairwise report` opened in a real headless Chromium (Debian's package), offline.

Traces come from the real simulator through the CLI; the report is loaded from disk with
every non-file request refused. Checked: no JS error, no dialog, the timeline and CDF plots
hold the expected traces (read from the plot divs' ``data``), hostile names show as text and
run nothing, and a screenshot is taken.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_report_html import HOSTILE_AGENT, HOSTILE_NAME, hostile_scenario

CHROMIUM = shutil.which("chromium")
STAIRWISE = shutil.which("stairwise") or str(Path(sys.executable).parent / "stairwise")
EXAMPLE = "examples/staircase-moa.yaml"
TIMELINE_REQUESTS = 3
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (scripts/install.sh --dev installs it as root)",
    ),
]


def stairwise(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAIRWISE, *args], capture_output=True, text=True, timeout=300)


def simulated_trace(path: Path, scenario: str, *overrides: str) -> Path:
    sets = [arg for o in overrides for arg in ("--set", o)]
    done = stairwise("simulate", scenario, "--json", "--trace", str(path), *sets)
    assert done.returncode == 0, done.stderr
    return path


def hostile_scenario_file(directory: Path) -> Path:
    path = directory / "hostile.yaml"
    server = {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}
    path.write_text(yaml.safe_dump(hostile_scenario({"local": server})))
    return path


def expected_timeline_traces(trace: Path) -> int:
    """Agents that called in the first requests (one bar trace each) + units + first token."""
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    first = sorted(r["req"] for r in records if r["type"] == "request")[:TIMELINE_REQUESTS]
    agents = {r["agent"] for r in records if r["type"] == "call" and r["req"] in first}
    return len(agents) + 2


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, list[Path]]:
    directory = tmp_path_factory.mktemp("report")
    traces = [
        simulated_trace(directory / "staircase.jsonl", EXAMPLE, "workload.requests=4"),
        simulated_trace(
            directory / "standard.jsonl",
            EXAMPLE,
            "workload.requests=4",
            "topology.mode=standard",
        ),
        simulated_trace(directory / "hostile.jsonl", str(hostile_scenario_file(directory))),
    ]
    html = directory / "report.html"
    done = stairwise(
        "report",
        *map(str, traces),
        "-o",
        str(html),
        "--timeline-requests",
        str(TIMELINE_REQUESTS),
    )
    assert done.returncode == 0, done.stderr
    return html, traces


def test_report_renders_in_chromium_offline(report, tmp_path):
    from playwright.sync_api import sync_playwright

    html, traces = report
    problems: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh user data dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        context.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort())
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("request", lambda r: requested.append(r.url))
        page.goto(html.as_uri())
        page.wait_for_function(
            "['timeline-plot', 'cdf-plot'].every(id => "
            "document.getElementById(id)?.querySelector('.main-svg'))"
        )
        timeline = page.evaluate("document.getElementById('timeline-plot').data")
        cdf = page.evaluate("document.getElementById('cdf-plot').data")
        drawn_bars = page.locator("#timeline-plot .bars path").count()
        drawn_lines = page.locator("#cdf-plot .scatterlayer .trace").count()
        ticks = page.locator("#timeline-plot .yaxislayer-above text").all_text_contents()
        pwned = page.evaluate("window.__pwned")
        title, images = page.title(), page.locator("img").count()
        screenshot = tmp_path / "report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        context.close()

    assert problems == []
    assert requested == [html.as_uri()]  # one file, nothing else: it opens offline

    per_run = [expected_timeline_traces(trace) for trace in traces]
    assert len(timeline) == sum(per_run)
    panels = ["y", "y2", "y3"]
    assert [sum(1 for t in timeline if t.get("yaxis", "y") == p) for p in panels] == per_run
    assert drawn_bars > 0
    assert len(cdf) == 3 * len(traces) and drawn_lines == len(cdf)

    assert pwned is None and images == 0
    assert HOSTILE_NAME in title  # the name is shown as text, not run
    assert any(HOSTILE_AGENT in tick for tick in ticks)

    width, height = png_size(screenshot)
    assert width == 1400 and height > 2000
