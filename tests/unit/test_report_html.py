"""The HTML report without a browser: figures, sections, escaping and the script policy."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from reports.cdf import cdf_figure, cdf_points
from reports.html import render_report, validation_report
from reports.runs import Run
from reports.timeline import timeline_figure
from sim import scenario_from_dict, simulate
from tests.helpers import api_profile, moa, write_profile
from tests.unit.test_report_compare import answer_trace

HOSTILE_NAME = "<script>window.__pwned=1</script>"
# plotly would draw <b> as bold and drop the tags: escaped, every character shows
HOSTILE_AGENT = '<b>bold</b><img src=x onerror="window.__pwned=2">'


@pytest.fixture(scope="module")
def moa_runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("profiles")
    fast = write_profile(directory, api_profile(ttft_s=0.1, itl_s=0.02))
    slow = write_profile(directory, api_profile(ttft_s=0.3, itl_s=0.03))
    workload = {"requests": 5}
    staircase = moa({"s": {"kind": "api", "profile": fast}}, workload, proposers=2)
    standard = moa({"s": {"kind": "api", "profile": slow}}, workload, proposers=2, mode="standard")
    return [
        Run("staircase", simulate(staircase).records),
        Run("standard", simulate(standard).records),
    ]


def hostile_scenario(servers: dict) -> dict:
    """A graph whose scenario and agent names are markup; its second agent is the answer."""
    return {
        "name": HOSTILE_NAME,
        "servers": servers,
        "topology": {
            "kind": "graph",
            "unit": {"tokens": 8},
            "agents": {
                "planner": {"next": [HOSTILE_AGENT], "steps": 2},
                HOSTILE_AGENT: {"steps": 2, "system_prompt": "</script><b>bold</b>"},
            },
        },
        "workload": {"requests": 2},
    }


def hostile_run(tmp_path) -> Run:
    profile = write_profile(tmp_path, api_profile())
    scenario = scenario_from_dict(hostile_scenario({"s": {"kind": "api", "profile": profile}}))
    return Run(HOSTILE_NAME, simulate(scenario).records)


def test_timeline_has_a_bar_trace_per_agent_and_two_marker_traces_per_run(moa_runs):
    figure = timeline_figure(moa_runs, max_requests=3)
    # agents p1, p2, aggregator in each run, plus unit ticks and first-token stars
    assert len(figure.data) == 2 * (3 + 2)
    bars = [t for t in figure.data if t.type == "bar"]
    assert sorted({t.name for t in bars}) == ["aggregator", "p1", "p2"]
    rows = {row for t in bars for row in t.y}
    assert {row.split(" · ")[0] for row in rows} == {"req 0", "req 1", "req 2"}
    first_panel = [t for t in figure.data if t.yaxis == "y"]
    assert len(first_panel) == 5  # the staircase run, alone in its panel


def test_timeline_places_calls_and_first_token_relative_to_the_request():
    # request 1 is sent at 10 s; its answer starts at 10.5 s, first token at 11 s
    run = Run("hand", answer_trace("live", [(0.0, [1.0, 1.5]), (10.0, [11.0, 11.25])]))
    figure = timeline_figure([run], max_requests=5)
    answer = next(t for t in figure.data if t.name == "answer")
    assert list(answer.base) == [0.5, 0.5]
    assert list(answer.x) == [1.0, 0.75]  # call lengths: to the last delta
    stars = next(t for t in figure.data if t.name == "user's first token")
    assert list(stars.x) == [1.0, 1.0] and list(stars.y) == ["req 0 · answer", "req 1 · answer"]


def test_cdf_has_one_trace_per_run_and_metric(moa_runs):
    figure = cdf_figure(moa_runs, reference=0)
    assert len(figure.data) == 3 * len(moa_runs)
    ttft = [t for t in figure.data if t.xaxis == "x"]
    assert [t.name for t in ttft] == ["staircase (reference)", "standard"]


def test_cdf_points_are_the_empirical_cdf_thinned_to_a_maximum():
    values, probabilities = cdf_points([3.0, 1.0, 2.0, 4.0])
    assert values == [1.0, 1.0, 2.0, 3.0, 4.0]  # the step starts from 0 at the smallest
    assert probabilities == [0.0, 0.25, 0.5, 0.75, 1.0]
    values, probabilities = cdf_points([float(v) for v in range(10_000)], max_points=101)
    assert len(values) == 1 + 101
    assert values[0] == 0.0 and values[-1] == 9999.0 and probabilities[-1] == 1.0
    assert values == sorted(values) and probabilities == sorted(probabilities)
    assert cdf_points([]) == ([], [])


def test_data_cannot_become_markup_or_script(tmp_path, moa_runs):
    hostile = hostile_run(tmp_path)
    names = {trace.name for trace in timeline_figure([hostile]).data}
    assert '&lt;b&gt;bold&lt;/b&gt;&lt;img src=x onerror="window.__pwned=2"&gt;' in names
    page = render_report([hostile, moa_runs[0]], reference=0)
    for raw in (HOSTILE_NAME, HOSTILE_AGENT, "<img", "</script><b>", "<b>bold"):
        assert raw not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page  # shown, as text
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    assert len(scripts) == 2 and page.count("<script") == 2  # plotly.js and the plot calls
    policy = re.search(r'Content-Security-Policy" content="([^"]*)"', page).group(1)
    allowed = re.findall(r"'sha256-([^']+)'", policy)
    digests = [base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts]
    assert sorted(allowed) == sorted(digests)  # exactly the page's own scripts may run
    assert "default-src 'none'" in policy


def test_sections_depend_on_what_is_compared(moa_runs):
    alone = render_report(moa_runs[:1])
    compared = render_report(moa_runs, reference=1)
    assert 'id="errors"' not in alone and 'id="errors"' in compared
    assert "Errors against standard" in compared
    for anchor in ("runs", "timeline", "distributions", "agents", "engine", "provenance"):
        assert f'id="{anchor}"' in alone
    assert "None of these traces has server metrics" in alone
    assert "test-api" in alone  # the sim header's profile, in the provenance


def test_validation_report_compares_both_predictions_with_live(tmp_path, moa_runs):
    path = tmp_path / "deep" / "validation.html"
    live, sim = moa_runs[0].records, moa_runs[1].records
    validation_report(path, live, sim, live)
    page = path.read_text()
    assert "Errors against live" in page
    assert "<td>sim (trace-driven)</td>" in page and "<td>reference</td>" in page


def test_engine_section_shows_server_deltas_and_the_runners_overhead():
    records = answer_trace("live", [(0.0, [1.0, 1.5])])
    records[1:1] = [
        {"type": "server_metrics", "server": "local", "when": "before", "t": 0.0,
         "values": {"vllm:prefix_cache_hits_total": 128, "vllm:prefix_cache_queries_total": 512,
                    "vllm:request_queue_time_seconds_sum": 0.5,
                    "vllm:request_queue_time_seconds_count": 2}},
    ]  # fmt: skip
    records += [
        {"type": "server_metrics", "server": "local", "when": "after", "t": 2.0,
         "values": {"vllm:prefix_cache_hits_total": 1536, "vllm:prefix_cache_queries_total": 2112,
                    "vllm:request_queue_time_seconds_sum": 0.56,
                    "vllm:request_queue_time_seconds_count": 4}},
        {"type": "end", "t": 2.0, "interrupted": False,
         "client": {"cpu_share": 0.25, "loop_lag_p99_ms": 4.5}},
    ]  # fmt: skip
    page = render_report([Run("measured", records)])
    # hits 1408 of 1600 queried tokens; 2 requests queued 0.06 s in all
    assert "<td>prefix-cache hits (tokens)</td><td>1,408</td>" in page
    assert "<td>prefix-cache hit rate</td><td>88.0%</td>" in page
    assert "<td>mean queue time (s)</td><td>30.0 ms</td>" in page
    assert "<td>loop_lag_p99_ms</td><td>4.500</td>" in page
    assert "None of these traces has server metrics" not in page
