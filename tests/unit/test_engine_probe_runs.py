"""Engine probes around live runs, on the fake server: kept in the trace, read back, used by
validate; a probe that fails after the run is one line, exit 2, and the run's trace stays."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reports.table import interval_line, probe_line
from sim.errors import ConfigError
from sim.profile import load_profile, measured_here
from sim.trace import read_trace
from stairwise import api
from stairwise.cli import app
from stairwise.orchestrate.probe import readings_of
from tests.fake_server import Timing, fake_server
from tests.unit.test_live_runner import scenario_on

FAST = {"solo": Timing(ttft_s=0.02, itl_s=0.005)}  # the probe's agent


def test_a_run_keeps_the_probes_before_and_after_and_says_which_profile(tmp_path):
    trace = tmp_path / "run.jsonl"
    with fake_server(FAST) as server:
        result = api.run(scenario_on(server.url), trace=trace, log=lambda m: None)
    records = read_trace(trace)
    header = records[0]
    used = load_profile("vllm-cpu-smollm2-135m")  # the variant of this machine's processor
    assert header["profiles"]["gpu"] == {
        "profile": used.name,
        "measured_here": measured_here(used),
        "speed_rel_sd": used.speed_rel_sd,
    }
    assert [r["type"] for r in records[-2:]] == ["end", "probe"]  # the after-probe follows
    before, after = readings_of(records)
    assert set(before) == set(after) == {"gpu"}
    # the fake answers a 1,024-token prompt as fast as a 256-token one: far from the profile
    assert before["gpu"].prefill_factor < 0.5 and after["gpu"].prefill_factor < 0.5
    assert records[-1]["servers"]["gpu"]["after"] == after["gpu"].to_dict()
    assert records[-1]["servers"]["gpu"]["unreliable"] in (True, False)
    assert result.records[-1] == records[-1]  # the result holds what the file holds


def test_no_probe_leaves_the_trace_without_probes(tmp_path):
    trace = tmp_path / "run.jsonl"
    with fake_server(FAST) as server:
        api.run(scenario_on(server.url), trace=trace, probe=False, log=lambda m: None)
    before, after = readings_of(read_trace(trace))
    assert before == {} and after == {}
    assert read_trace(trace)[-1]["type"] == "end"


def test_a_probe_failing_after_the_run_exits_2_in_one_line_and_keeps_the_trace(
    tmp_path, monkeypatch
):
    import stairwise.orchestrate.probe as engine_probe

    real = engine_probe.probe_servers
    calls = []

    def server_gone_after_the_run(*args, **kwargs):
        calls.append(kwargs.get("when", args[2] if len(args) > 2 else ""))
        if len(calls) == 2:  # the server died during the run
            raise ConfigError("http://127.0.0.1:1/v1: cannot connect")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_probe, "probe_servers", server_gone_after_the_run)
    trace = tmp_path / "run.jsonl"
    with fake_server(FAST) as server:
        scenario = tmp_path / "s.yaml"
        scenario.write_text(scenario_on(server.url).model_dump_json())
        done = CliRunner().invoke(app, ["run", str(scenario), "--trace", str(trace)])
    assert done.exit_code == 2
    error = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cannot connect" in error[0]
    assert f"the run's trace is kept: {trace}" in error[0]
    assert "Traceback" not in done.output
    records = read_trace(trace)
    assert records[-1]["type"] == "end"  # every request of the run is there
    assert sum(r["type"] == "request_end" for r in records) == 2


def test_validate_compares_on_the_profile_rescaled_to_the_probes(tmp_path):
    with fake_server(FAST) as server:
        result = api.validate(
            scenario_on(server.url),
            out=tmp_path,
            local=False,
            repeat=2,
            report=False,
            log=lambda m: None,
        )
    summary = result.summary
    probe = summary["probe"]["gpu"]
    assert len(probe["before"]) == len(probe["after"]) == 2 and len(probe["drift_pct"]) == 2
    # two live runs: their spread, and which errors it covers
    assert summary["live_spread_pct"]["ttft_p50"] >= 0
    assert set(summary["within_live_noise"]) == set(summary["error_pct"])
    assert summary["inside_interval"]["ttft_s.p50"] in (True, False)
    assert summary["sim"]["ttft_s"]["p50_ci"] is not None
    # the fake runs far faster than the CPU profile: beyond the speed its intervals allow for
    said = probe_line("gpu", probe, summary["profiles"]["gpu"])
    assert "beyond twice the profile's speed spread in prefill" in said
    held = interval_line(summary)  # the line under validate's table
    verdicts = summary["inside_interval"].values()
    assert held is not None and f"{sum(v is True for v in verdicts)} of " in held
    assert ("outside:" in held) == (False in verdicts)
    assert set(summary["error_pct_probe_scaled"]) == set(summary["error_pct"])
    # the fake prefills ~20x faster than the CPU profile: rescaling moves the prediction
    assert summary["error_pct_probe_scaled"]["ttft_p50"] != pytest.approx(
        summary["error_pct"]["ttft_p50"], abs=1.0
    )
    assert isinstance(summary["unreliable"], bool)
    json.dumps(summary)  # validate --json prints it: plain Python values only

    # the kept runs re-compared on another profile: the probes' factors were read against
    # the first one and do not apply, so there is no probe-scaled comparison
    again = api.validate(
        scenario_on(server.url),
        out=tmp_path / "again",
        profile="vllm-a100-llama3-8b",
        local=False,
        live_from=[tmp_path],
        report=False,
        log=lambda m: None,
    )
    assert "error_pct_probe_scaled" not in again.summary
    assert again.summary["error_pct"]["ttft_p50"] is not None
