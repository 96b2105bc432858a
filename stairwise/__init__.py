"""stairwise: predict (simulate) and measure (run) streaming multi-agent LLM inference.

The Python API mirrors the CLI::

    import stairwise
    result = stairwise.simulate("examples/staircase-moa.yaml", overrides=["topology.redundancy=1"])
    result.summary["ttft_s"]["p50"], result.summary["ttft_s"]["p50_ci"]  # [low, high], 90 %

    swept = stairwise.sweep("examples/sweep-chunks.yaml", out="sweeps/chunks")
    swept.dataframe()  # one row per point: axes, metric means and confidence intervals

    capacity = stairwise.plan("examples/staircase-moa.yaml", ["ttft_p90=2s", "stall_p90=2s"])
    capacity.capacity.max_rate, capacity.best, capacity.to_dict()
    capacity.capacity.at_max.intervals, capacity.capacity.held_share

    live = stairwise.run("examples/staircase-moa.yaml", local=True)  # the embedded vLLM
    # answers kept as text, compared with another run's by prompt (ROUGE-L, latency deltas)
    stairwise.run("examples/answer-quality.yaml", local=True, keep_text=True, trace="a.jsonl")
    stairwise.compare("standard.jsonl", "a.jsonl")["rouge_l_f1"]["p50"]
    checked = stairwise.validate("examples/staircase-moa.yaml", repeat=3)
    checked.summary["error_pct"]["ttft_p50"], checked.summary["inside_interval"]
    suite = stairwise.validate_suite(["a.yaml", "b.yaml"], report="out/suite.html")

    local = stairwise.calibrate(local=True, output="local.json")  # profile the embedded vLLM
    # how far this machine's engine speed strays from a profile: kept validate runs' probes
    spread = stairwise.speed_spread("local.json", ["out/"], output="local.json")  # >= 5 runs

    profile = stairwise.calibrate(["bench.json"], "my-gpu.json", model="m", hardware="1x L40S")
    stairwise.replay("bench.json", "my-gpu.json")["error_pct"]
    stairwise.report(["out/a.live.jsonl", "out/a.sim.jsonl"], "out/a.html")
"""

from sim import ConfigError, Scenario, SimResult, load_scenario, scenario_from_dict, simulate
from sim.capacity import CapacityPlan, PlanSettings
from sim.metrics import summarize
from sim.sweep import SweepResult, sweep
from sim.trace import read_trace
from stairwise.api import (
    calibrate,
    compare,
    plan,
    replay,
    report,
    run,
    speed_spread,
    validate,
    validate_suite,
)

__all__ = [
    "CapacityPlan",
    "ConfigError",
    "PlanSettings",
    "Scenario",
    "SimResult",
    "SweepResult",
    "calibrate",
    "compare",
    "load_scenario",
    "plan",
    "read_trace",
    "replay",
    "report",
    "run",
    "scenario_from_dict",
    "simulate",
    "speed_spread",
    "summarize",
    "sweep",
    "validate",
    "validate_suite",
]
