"""Running a sweep: fan replications out to a backend, store each point when it completes.

A point's row is written the moment its last replication arrives (never at exit), so a
sweep killed at any time keeps every finished point and a rerun simulates only the rest.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.scenario import Scenario
from sim.sweep.backends import Backend, BackendName, make_backend
from sim.sweep.points import Sweep, SweepPoint, load_sweep, resolve_sweep
from sim.sweep.replicate import MetricValues, Replication, estimate, replications, run_replication
from sim.sweep.spec import SweepSpec, parse_sweep
from sim.sweep.store import Layout, ResultStore, Row

if TYPE_CHECKING:
    import pandas

ProgressCallback = Callable[[int, int], None]  # (points done, points in all)
RESULTS_FILE = "results.csv"


@dataclass
class SweepResult:
    name: str
    axes: list[str]
    metrics: list[str]
    method: str
    rows: list[Row]  # one per point, in point order: key, point, axes, metrics and intervals
    computed: int  # points simulated by this run
    resumed: int  # points read back from the results file
    skipped: int  # points the scenario rejected (invalid_points: skip)
    wall_s: float
    path: Path | None  # the results file, when the sweep has an output directory

    def dataframe(self) -> pandas.DataFrame:
        import pandas  # half a second to import: only callers who want a frame pay it

        return pandas.DataFrame(self.rows)


def run_sweep(
    sweep: Sweep,
    backend: Backend,
    out: Path | None = None,
    progress: ProgressCallback | None = None,
) -> SweepResult:
    started = time.perf_counter()
    spec = sweep.spec
    layout = Layout(list(spec.axes), spec.metrics)
    store = ResultStore(out / RESULTS_FILE, layout) if out is not None else None
    stored = store.load() if store is not None else {}
    rows = {p.index: _resumed_row(p, stored[p.key]) for p in sweep.points if p.key in stored}
    todo = [p for p in sweep.points if p.key not in stored]
    report = progress or (lambda done, total: None)
    report(len(rows), len(sweep.points))
    try:
        for row in _compute(sweep, todo, backend):
            if store is not None:
                store.append(row)
            rows[row["point"]] = row
            report(len(rows), len(sweep.points))
    finally:
        if store is not None:
            store.close()
    return SweepResult(
        name=spec.name,
        axes=layout.axes,
        metrics=spec.metrics,
        method=spec.method.kind,
        rows=[rows[i] for i in sorted(rows)],
        computed=len(todo),
        resumed=len(sweep.points) - len(todo),
        skipped=sweep.skipped,
        wall_s=time.perf_counter() - started,
        path=store.path if store is not None else None,
    )


def _compute(sweep: Sweep, todo: list[SweepPoint], backend: Backend) -> Iterator[Row]:
    """Yield each point's row as soon as all its replications are back."""
    spec = sweep.spec
    tasks: list[Replication] = [
        task
        for point in todo
        for task in replications(
            point.index, point.scenario, spec.replications, sweep.profile_dir, spec.metrics
        )
    ]
    by_index = {point.index: point for point in todo}
    results: dict[int, dict[int, MetricValues]] = defaultdict(dict)
    for task_index, values in backend.imap_unordered(run_replication, tasks):
        task = tasks[task_index]
        results[task.point][task.replication] = values
        if len(results[task.point]) == spec.replications:
            finished = results.pop(task.point)
            yield point_row(by_index[task.point], [finished[r] for r in sorted(finished)], spec)


def point_row(point: SweepPoint, values: list[MetricValues], spec: SweepSpec) -> Row:
    row: Row = {"key": point.key, "point": point.index, **point.values}
    row["replications"] = len(values)
    for metric in spec.metrics:
        interval = estimate([v[metric] for v in values], spec.confidence)
        row[metric] = interval.mean
        row[f"{metric}.ci_low"] = interval.ci_low
        row[f"{metric}.ci_high"] = interval.ci_high
    return row


def _resumed_row(point: SweepPoint, stored: Row) -> Row:
    """A stored row under this run's point number and axis spelling (same key, same config)."""
    return {**stored, "point": point.index, **point.values}


def sweep(
    spec: SweepSpec | Mapping[str, Any] | str | Path,
    *,
    backend: BackendName = "local",
    workers: int | None = None,
    address: str | None = None,
    out: str | Path | None = None,
    progress: ProgressCallback | None = None,
) -> SweepResult:
    """Run a sweep given as a file, a mapping (its ``scenario`` may be a :class:`Scenario`)
    or a spec; with ``out``, results go to ``out/results.csv`` and a rerun resumes."""
    resolved = _resolve(spec)
    with make_backend(backend, workers, address) as running:
        return run_sweep(resolved, running, Path(out) if out is not None else None, progress)


def _resolve(spec: SweepSpec | Mapping[str, Any] | str | Path) -> Sweep:
    if isinstance(spec, str | Path):
        return load_sweep(spec)
    if isinstance(spec, Mapping):
        data = dict(spec)
        if isinstance(data.get("scenario"), Scenario):
            data["scenario"] = data["scenario"].model_dump(mode="json")
        spec = parse_sweep(data, "sweep")
    return resolve_sweep(spec, None, "sweep")
