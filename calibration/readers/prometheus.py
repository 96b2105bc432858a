"""Prometheus ``/metrics`` text snapshots (vLLM's counters and histograms) and their diffs.

A snapshot holds totals since the server started; what a run did is ``after − before``.
``server totals`` are flattened like the live runner records them (one number per series
name, summed over label sets; a histogram contributes ``_sum`` and ``_count``) so files and
trace records compare directly.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from calibration.readers.common import error, number, read_text

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')
Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    source: str
    types: dict[str, str] = field(default_factory=dict)  # family -> counter|gauge|histogram|…
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def totals(self) -> dict[str, float]:
        """One number per series name, summed over label sets (buckets and _created left out)."""
        result: dict[str, float] = defaultdict(float)
        for (name, _), value in self.samples.items():
            if not name.endswith(("_bucket", "_created")):
                result[name] += value
        return dict(result)

    def minus(self, before: Snapshot) -> Snapshot:
        """What happened between two snapshots: counters and histograms subtract, gauges stay."""
        diff = Snapshot(f"{before.source} -> {self.source}", dict(self.types))
        for key, value in self.samples.items():
            gauge = self.types.get(_family(key[0])) == "gauge"
            diff.samples[key] = value if gauge else value - before.samples.get(key, 0.0)
        return diff


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_created", "_total"):
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def parse_metrics(text: str, source: Path | str) -> Snapshot:
    snapshot = Snapshot(str(source))
    for line_number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            parts = stripped.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                snapshot.types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.match(stripped)
        if match is None:
            raise error(source, line_number, "not a Prometheus sample line (truncated?)")
        name, raw_labels, raw_value = match.groups()
        labels = _labels(raw_labels or "", source, line_number)
        where = (source, line_number)
        snapshot.samples[(name, labels)] = number(raw_value, where, name, minimum=-float("inf"))
    if not snapshot.samples:
        raise error(source, None, "no metric samples (not a /metrics snapshot)")
    return snapshot


def _labels(raw: str, source: Path | str, line_number: int) -> Labels:
    pairs = []
    position = 0
    while position < len(raw.strip()):
        match = _LABEL.match(raw, position)
        if match is None:
            raise error(source, line_number, f"malformed labels {{{raw}}}")
        pairs.append((match.group(1), match.group(2)))
        position = match.end()
    return tuple(sorted(pairs))


def read_snapshot(path: Path) -> Snapshot:
    return parse_metrics(read_text(path, "Prometheus /metrics snapshot"), path)


def run_totals(paths: list[Path]) -> dict[str, float]:
    """Totals of the run between the first and the last snapshot (or since start, if one)."""
    snapshots = [read_snapshot(p) for p in paths]
    last = snapshots[-1]
    return (last.minus(snapshots[0]) if len(snapshots) > 1 else last).totals()
