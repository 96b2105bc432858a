"""Calibration: real measurements in, profile files the simulator runs on out.

Readers turn each source (stairwise traces, ``vllm bench serve`` results, Prometheus
snapshots, public GPU data) into one :class:`~calibration.table.TraceTable`; fitting turns
tables into a :class:`sim.profile.VllmProfile` or :class:`sim.profile.ApiProfile` — directly
from isolating step measurements, or by replaying a request-level trace in the simulator and
fitting the parameters that reproduce its latency quantiles.
"""

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.profiling import fit_profiling_run, profiling_plan
from calibration.readers import FORMATS, read_tables
from calibration.replay import compare, replay
from calibration.table import RequestRow, StepRow, TraceTable

__all__ = [
    "FORMATS",
    "CalibrationOptions",
    "RequestRow",
    "StepRow",
    "TraceTable",
    "calibrate",
    "compare",
    "fit_profiling_run",
    "profiling_plan",
    "read_tables",
    "replay",
]
