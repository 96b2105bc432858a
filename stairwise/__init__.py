"""stairwise: predict (simulate) and measure (run) streaming multi-agent LLM inference.

The Python API mirrors the CLI::

    import stairwise
    result = stairwise.simulate("examples/staircase-moa.yaml", overrides=["topology.redundancy=1"])
    result.summary["ttft_s"]["p50"]
"""

from sim import ConfigError, Scenario, SimResult, load_scenario, scenario_from_dict, simulate
from sim.metrics import summarize
from sim.trace import read_trace

__all__ = [
    "ConfigError",
    "Scenario",
    "SimResult",
    "load_scenario",
    "read_trace",
    "scenario_from_dict",
    "simulate",
    "summarize",
]
