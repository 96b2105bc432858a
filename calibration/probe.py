"""The engine probe: a few seconds of single-agent requests that say how fast a server is now.

A live run's error against the simulator mixes the model's own error with the machine's speed
at that minute (the local CPU engine drifts by tens of percent within an hour). The probe
measures the second beside every live run: a handful of long-prompt requests (prefill speed)
and short-prompt, longer-answer requests alone and four at a time (decode speed), run live and
simulated on the profile the prediction uses. Two factors then say how far the engine is from
its profile right now:

* ``prefill``: multiplies the profile's prefill costs (per token, attention, per prefill step);
* ``decode``: multiplies the costs every step pays (base, per decoding sequence, per context
  token).

They are found by least squares on the cells' relative errors, using that a probe cell's
TTFT and TPOT are linear in the two factors (each cell runs without queueing), so a profile
rescaled by them reproduces the probe. Cells are the designed profiling run's
(:mod:`calibration.profiling`), so the probe is a very short profiling run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from calibration.profiling import ProfilingCell, cell_scenario
from sim.errors import ConfigError
from sim.metrics import summarize
from sim.profile import VllmProfile
from sim.scenario import Scenario, scenario_from_dict
from sim.simulator import Simulator
from sim.trace import Record


@dataclass(frozen=True)
class ProbeCell:
    """A profiling cell and the quantity it isolates: TTFT p50 (prefill) or TPOT p50 (decode)."""

    cell: ProfilingCell
    measures: Literal["prefill", "decode"]

    @property
    def metric(self) -> str:
        return "ttft_s" if self.measures == "prefill" else "tpot_s"


# Two prompts alone (prefill), one sequence decoding, four at once: about 5 s on the
# reference machine's CPU engine, 30 s on a machine without AVX-512 (prefill 18x slower).
PROBE_CELLS: tuple[ProbeCell, ...] = (
    ProbeCell(ProfilingCell(128, 1, 0, 2, 2), "prefill"),
    ProbeCell(ProfilingCell(512, 1, 0, 2, 2), "prefill"),
    ProbeCell(ProfilingCell(32, 1, 0, 32, 2), "decode"),
    ProbeCell(ProfilingCell(32, 4, 0, 32, 4), "decode"),
)


@dataclass(frozen=True)
class CellReading:
    name: str
    metric: str
    live_s: float
    predicted_s: float  # on the profile as given
    rescaled_s: float  # on the profile rescaled by the probe's factors
    spread_pct: float  # the cell's own requests: (max - min) / median


@dataclass(frozen=True)
class ProbeReading:
    """One probe of one server: measured and predicted cells, and the two speed factors."""

    server: str
    profile: str
    prefill_factor: float
    decode_factor: float
    cells: tuple[CellReading, ...]

    @property
    def deviation_pct(self) -> dict[str, float]:
        """How much slower (+) or faster (−) the engine runs than its profile, per phase."""
        return {
            "prefill": 100 * (self.prefill_factor - 1),
            "decode": 100 * (self.decode_factor - 1),
        }

    @property
    def noise_pct(self) -> float:
        """The largest spread among one cell's repeated requests: what one probe can resolve."""
        return max((c.spread_pct for c in self.cells), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "profile": self.profile,
            "prefill_factor": self.prefill_factor,
            "decode_factor": self.decode_factor,
            "deviation_pct": self.deviation_pct,
            "noise_pct": self.noise_pct,
            "cells": [asdict(c) for c in self.cells],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeReading:
        return cls(
            server=data["server"],
            profile=data["profile"],
            prefill_factor=data["prefill_factor"],
            decode_factor=data["decode_factor"],
            cells=tuple(CellReading(**c) for c in data["cells"]),
        )


def probe_scenarios(
    server: dict[str, Any], seed: int, chars_per_token: float = 4.0
) -> list[Scenario]:
    """The probe's cells as scenarios on ``server`` (a scenario's server entry). A fresh
    ``seed`` per probe makes prompts no earlier probe sent, so no cell hits the prefix cache."""
    scenarios = []
    for index, probe in enumerate(PROBE_CELLS):
        data = cell_scenario(probe.cell, server, chars_per_token)
        data["seed"] = seed + index
        data["name"] = f"probe-{probe.cell.name}"
        scenarios.append(scenario_from_dict(data, data["name"]))
    return scenarios


def rescaled(profile: VllmProfile, prefill: float, decode: float) -> VllmProfile:
    """The profile with its prefill and decode costs multiplied by the probe's factors."""
    note = f"rescaled by an engine probe: prefill x{prefill:.3f}, decode x{decode:.3f}"
    provenance = profile.provenance.model_copy(
        update={"notes": f"{profile.provenance.notes}; {note}".lstrip("; ")}
    )
    return profile.model_copy(
        update={
            "name": f"{profile.name}@probe",
            "step": profile.step.rescaled(prefill, decode),
            "provenance": provenance,
        }
    )


def read_probe(
    server: str,
    profile: VllmProfile,
    scenarios: list[Scenario],
    live_runs: list[list[Record]],
) -> ProbeReading:
    """The probe's reading from its live traces (one per cell, in :data:`PROBE_CELLS` order),
    against the same cells simulated on ``profile``."""
    live = np.array(
        [_p50(records, probe.metric) for records, probe in zip(live_runs, PROBE_CELLS, strict=True)]
    )

    def predicted(prefill: float, decode: float) -> np.ndarray:
        candidate = rescaled(profile, prefill, decode)
        return np.array(
            [
                _p50(_simulate(scenario, candidate), probe.metric)
                for scenario, probe in zip(scenarios, PROBE_CELLS, strict=True)
            ]
        )

    # each cell is linear in the two factors: three simulations give its three coefficients
    at_one = predicted(1.0, 1.0)
    per_prefill = predicted(2.0, 1.0) - at_one
    per_decode = predicted(1.0, 2.0) - at_one
    fixed = at_one - per_prefill - per_decode
    # relative least squares: minimise sum((fixed + p*per_prefill + d*per_decode)/live - 1)^2
    design = np.column_stack([per_prefill, per_decode]) / live[:, None]
    target = 1.0 - fixed / live
    (prefill, decode), *_ = np.linalg.lstsq(design, target, rcond=None)
    prefill, decode = max(float(prefill), 0.05), max(float(decode), 0.05)
    rescaled_s = fixed + prefill * per_prefill + decode * per_decode
    cells = tuple(
        CellReading(
            name=probe.cell.name,
            metric=probe.metric,
            live_s=float(live[i]),
            predicted_s=float(at_one[i]),
            rescaled_s=float(rescaled_s[i]),
            spread_pct=_spread_pct(live_runs[i], probe.metric),
        )
        for i, probe in enumerate(PROBE_CELLS)
    )
    return ProbeReading(server, profile.name, prefill, decode, cells)


def drift_pct(before: ProbeReading, after: ProbeReading) -> float:
    """How far the engine's speed moved during the run: the larger phase change, in %."""
    return 100 * max(
        abs(after.prefill_factor / before.prefill_factor - 1),
        abs(after.decode_factor / before.decode_factor - 1),
    )


def _simulate(scenario: Scenario, profile: VllmProfile) -> list[Record]:
    (server,) = scenario.servers
    return Simulator(scenario, profiles={server: profile}).run().records


def _p50(records: list[Record], metric: str) -> float:
    value = summarize(records)[metric]["p50"]
    if value is None or value <= 0:
        cell = records[0].get("name", "a probe cell") if records else "a probe cell"
        raise ConfigError(f"engine probe: {cell} measured no {metric} (did its requests stream?)")
    return float(value)


def _spread_pct(records: list[Record], metric: str) -> float:
    from sim.metrics import request_metrics

    field = "ttft" if metric == "ttft_s" else "tpot"
    values = [getattr(m, field) for m in request_metrics(records) if m.ok]
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return 0.0
    return float(100 * (max(values) - min(values)) / np.median(values))
