"""The designed profiling run: a grid of single-agent runs that pins the step cost down.

Each cell is one closed-loop run of one agent on the server being profiled: ``concurrency``
users send prompts of ``prompt_tokens`` tokens, of which ``cached_prefix_tokens`` are a
system prompt shared by every request of the cell (so the server's prefix cache holds it
after the first one), and each answer is exactly ``output_tokens`` long (``ignore_eos``).
Concurrency 1 isolates prefill (TTFT) and one-sequence decode (ITL); higher concurrency
shows how steps grow with the batch; the cached prefix shows what a hit saves.

``stairwise calibrate --endpoint URL`` (the live runner) runs :func:`cell_scenario` for every
cell of :func:`profiling_plan` with ``stairwise run`` and hands the traces to
:func:`fit_profiling_run`. The simulator runs the same scenarios, which is how the fit is
tested: traces made on a known profile must give that profile back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.fit_replay import Progress
from calibration.readers import read_tables
from sim.errors import ConfigError
from sim.profile import VllmProfile

AGENT = "solo"
FILLER = "data "  # repeated to the length the simulator counts as the wanted tokens


@dataclass(frozen=True)
class ProfilingCell:
    prompt_tokens: int
    concurrency: int
    cached_prefix_tokens: int
    output_tokens: int
    requests: int

    @property
    def name(self) -> str:
        return f"profile-p{self.prompt_tokens}-c{self.concurrency}-k{self.cached_prefix_tokens}"


def profiling_plan(
    prompt_lengths: tuple[int, ...] = (32, 128, 512, 1024, 1536),
    concurrencies: tuple[int, ...] = (1, 4, 16),
    cached_prefixes: tuple[int, ...] = (0, 512),
    output_tokens: int = 128,
    rounds: int = 3,
) -> list[ProfilingCell]:
    """Every combination whose cached prefix is shorter than its prompt; each user sends
    ``rounds`` requests (so repeats of each cell come for free)."""
    return [
        ProfilingCell(prompt, users, cached, output_tokens, users * rounds)
        for prompt in prompt_lengths
        for users in concurrencies
        for cached in cached_prefixes
        if cached < prompt
    ]


def cell_scenario(cell: ProfilingCell, server: dict[str, Any]) -> dict[str, Any]:
    """The scenario of one cell, for ``stairwise run`` (and the simulator): ``server`` is the
    scenario's server entry (kind, profile, endpoint, model, limits)."""
    return {
        "name": cell.name,
        "servers": {"target": server},
        "topology": {
            "kind": "graph",
            "agent": {"system_prompt": prefix_text(cell.cached_prefix_tokens)},
            "unit": {"tokens": cell.output_tokens},
            "agents": {AGENT: {"steps": 1}},
        },
        "workload": {
            "requests": cell.requests,
            "arrival": {"kind": "closed", "concurrency": cell.concurrency},
            "prompt_tokens": {
                "dist": "fixed",
                "value": max(1, cell.prompt_tokens - cell.cached_prefix_tokens),
            },
            "output_tokens": "max",
        },
    }


def prefix_text(tokens: int) -> str:
    """A system prompt of about ``tokens`` tokens (empty for none)."""
    characters = tokens * 4  # sim.texts.estimate_tokens: about 4 characters a token
    return (FILLER * (characters // len(FILLER) + 1))[:characters]


def fit_profiling_run(
    traces: list[Path], options: CalibrationOptions, progress: Progress | None = None
) -> VllmProfile:
    """A vllm profile from the stairwise traces of a profiling run (one file per cell).

    Every trace must be a single-agent run on one server. The start comes from the requests
    that ran alone (concurrency-1 cells: TTFT = one prefill step, decode = one-sequence
    steps); the replay fit then matches TTFT/TPOT quantiles of every cell, re-running each
    cell's scenario with its measured send times and lengths.
    """
    tables = read_tables(traces, "stairwise")
    for table in tables:
        agents = (table.scenario or {}).get("topology", {}).get("agents", {})
        if len(agents) != 1 or len((table.scenario or {}).get("servers", {})) != 1:
            raise ConfigError(f"{table.source}: not a profiling cell (one agent on one server)")
    profile = calibrate(tables, options.model_copy(update={"method": "replay"}), progress)
    assert isinstance(profile, VllmProfile)
    return profile
