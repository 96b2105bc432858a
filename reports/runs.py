"""The runs a report shows: trace records with a label, loaded and checked once.

Checking each record's required fields (the record types of ``sim/trace.py``) on load turns
a hand-edited or truncated trace into one line naming the file, line and field instead of a
``KeyError`` deep inside a plot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from reports.compare import RunStats, run_stats
from sim.errors import ConfigError
from sim.metrics import DEFAULT_K
from sim.trace import Record, missing_field, read_trace


@dataclass
class Run:
    label: str
    records: list[Record]
    origin: str = ""  # the trace file, when there is one
    k: int = DEFAULT_K

    @property
    def header(self) -> Record:
        return self.records[0] if self.records and self.records[0]["type"] == "header" else {}

    @property
    def source(self) -> str:
        return str(self.header.get("source", ""))

    @cached_property
    def stats(self) -> RunStats:
        return run_stats(self.records, self.k)


def load_trace(path: Path) -> list[Record]:
    """A trace file's records, each checked for its type's required fields."""
    records = read_trace(path)
    for index, record in enumerate(records):
        if (name := missing_field(record)) is not None:
            raise ConfigError(
                f"{path}:{_line_number(path, index)}: {record['type']} record has no field {name!r}"
            )
    return records


def _line_number(path: Path, index: int) -> int:
    """The file line of the ``index``-th record (blank lines hold no record)."""
    lines = path.read_text().splitlines()
    return [number for number, line in enumerate(lines, 1) if line.strip()][index]


def load_runs(paths: list[Path]) -> list[Run]:
    """One run per trace file, labelled ``file (source)``; repeated labels get ``#2``, ``#3``."""
    runs = []
    for path in paths:
        records = load_trace(path)
        source = records[0].get("source", "?")
        runs.append(Run(label=f"{path.stem} ({source})", records=records, origin=str(path)))
    return unique_labels(runs)


def unique_labels(runs: list[Run]) -> list[Run]:
    seen: Counter[str] = Counter()
    for run in runs:
        seen[run.label] += 1
        if seen[run.label] > 1:
            run.label = f"{run.label} #{seen[run.label]}"
    return runs


def pick_reference(runs: list[Run], position: int | None) -> int:
    """Index of the measured run others are compared with.

    ``position`` (1-based, as the user counts traces) wins; otherwise the first live run, so
    ``report sim.jsonl live.jsonl`` compares the prediction with the measurement; otherwise
    the first run.
    """
    if position is not None:
        if not 1 <= position <= len(runs):
            raise ConfigError(
                f"--reference {position}: there are {len(runs)} traces (use 1..{len(runs)})"
            )
        return position - 1
    return next((i for i, run in enumerate(runs) if run.source == "live"), 0)
