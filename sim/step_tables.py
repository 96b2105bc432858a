"""A step cost looked up in measured operator tables instead of a fitted formula.

An operator profile (LLMServingSim's profiler, Vidur's) times one transformer layer's
operators over a grid of batch shapes: attention by (prefill chunk, context before it, decode
count, decode context), the dense operators by tokens, the LM head and sampler by sequences.
A formula squeezed over such a grid throws away what it knows, so the simulator can price a
step from the grid itself:

    step = layers × (attention + Σ per-layer dense ops(tokens))
           + Σ once-per-step dense ops(tokens) + Σ per-sequence ops(sequences)

with the step's real batch: prefill chunk and context summed over its prefilling sequences,
decode context averaged over its decoding ones (a uniform batch at the mean reads the same KV),
tokens = prefill tokens + decodes, sequences = every scheduled sequence.

Lookups are linear on each axis between the two bracketing grid points (the kernels are close
to linear in each axis; the grid is only spaced geometrically), clamped to the first point
below the grid and extrapolated along the last two points above it. Attention corners
(prefill chunk × decode count) that were not measured borrow the nearest measured pair.

The tables are measured arrays, kept in a compressed ``.npz`` sidecar beside the profile JSON
(``sim/profiles/<name>.npz``); ``load_tables`` validates and caches them, so a replay fit
that runs hundreds of simulations loads them once.
"""

from __future__ import annotations

import zipfile
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from sim.errors import ConfigError

ATTENTION_COLUMNS = ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us")
DENSE_PREFIX = "dense/"  # sidecar arrays "dense/<op>": rows of (tokens, time_us)
PER_SEQUENCE_PREFIX = "per_sequence/"  # "per_sequence/<op>": rows of (sequences, time_us)


@dataclass(frozen=True)
class Curve:
    """Time (µs) against one size, sorted, for linear lookups with the module's edge rules."""

    sizes: np.ndarray
    times: np.ndarray

    def at(self, size: float) -> float:
        return _linear(self.sizes, self.times, size)

    def over(self, sizes: np.ndarray) -> np.ndarray:
        """Vectorised ``at``."""
        out = np.interp(sizes, self.sizes, self.times)
        if len(self.sizes) > 1:
            above = sizes > self.sizes[-1]
            if above.any():
                slope = (self.times[-1] - self.times[-2]) / (self.sizes[-1] - self.sizes[-2])
                out[above] = self.times[-1] + slope * (sizes[above] - self.sizes[-1])
        return out

    def __add__(self, other: Curve) -> Curve:
        """Two curves on one size grid, summed (the per-layer ops share the profiler's grid)."""
        if not np.array_equal(self.sizes, other.sizes):
            sizes = np.union1d(self.sizes, other.sizes)
            return Curve(sizes, self.over(sizes) + other.over(sizes))
        return Curve(self.sizes, self.times + other.times)


def _linear(sizes: np.ndarray | Sequence[float], times: np.ndarray, size: float) -> float:
    lo, t = _position(sizes, size)
    return float(times[lo] + t * (times[lo + 1] - times[lo])) if t else float(times[lo])


def _position(values: np.ndarray | Sequence[float], query: float) -> tuple[int, float]:
    """Where ``query`` falls on a sorted grid: the index of the point below it and the fraction
    of the way to the next (0 below the grid, past 1 above it: extrapolated on the last two)."""
    n = len(values)
    if n == 1 or query <= values[0]:
        return 0, 0.0
    lo = min(bisect_right(values, query), n - 1) - 1
    return lo, (query - values[lo]) / (values[lo + 1] - values[lo])


@dataclass(frozen=True)
class _Slice:
    """The attention grid at one (prefill chunk, decode count): rows by prefill context, each a
    curve over decode context."""

    contexts: list[int]
    rows: list[Curve]

    def at(self, prefill_context: float, decode_context: float) -> float:
        lo, t = _position(self.contexts, prefill_context)
        low = self.rows[lo].at(decode_context)
        return low + t * (self.rows[lo + 1].at(decode_context) - low) if t else low


@dataclass
class MeasuredTables:
    """The measured tables and how one step composes them (one model, one GPU, one TP)."""

    arrays: dict[str, np.ndarray]  # as measured, for the sidecar
    attention: np.ndarray  # rows of ATTENTION_COLUMNS
    dense: dict[str, Curve]
    per_sequence: dict[str, Curve]
    layers: int
    per_layer_ops: tuple[str, ...]
    once_ops: tuple[str, ...]
    per_sequence_ops: tuple[str, ...]
    _slices: dict[tuple[int, int], _Slice] = field(init=False, repr=False)
    _chunks: list[int] = field(init=False, repr=False)
    _decodes: list[int] = field(init=False, repr=False)
    _layer_dense: Curve = field(init=False, repr=False)
    _once: Curve = field(init=False, repr=False)
    _heads: Curve = field(init=False, repr=False)
    _decode_cache: dict[int, tuple[float, Curve]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._layer_dense = _summed([self.dense[op] for op in self.per_layer_ops])
        self._once = _summed([self.dense[op] for op in self.once_ops])
        self._heads = _summed([self.per_sequence[op] for op in self.per_sequence_ops])
        grouped: dict[tuple[int, int], dict[int, list[tuple[int, float]]]] = {}
        for chunk, before, decodes, context, us in self.attention.tolist():
            by_before = grouped.setdefault((int(chunk), int(decodes)), {})
            by_before.setdefault(int(before), []).append((int(context), us))
        self._slices = {
            key: _Slice(
                sorted(by_before),
                [_curve(by_before[k]) for k in sorted(by_before)],
            )
            for key, by_before in grouped.items()
        }
        self._chunks = sorted({c for c, _ in self._slices})
        self._decodes = sorted({d for _, d in self._slices})
        self._decode_cache = {}

    # --- pricing ------------------------------------------------------------------------------

    def step_us(
        self,
        prefill_tokens: int,
        prefill_context: int,
        prefill_seqs: int,
        decode_seqs: int,
        decode_context: int,
        longest_context: int = 0,
        skew_alpha: float = 0.0,
    ) -> float:
        """One step's GPU time (µs). ``prefill_context``: Σ context before each prefill chunk;
        ``decode_context``: Σ context of the decoding sequences, the longest of them
        ``longest_context``; ``skew_alpha``: see TableStepCost."""
        tokens = prefill_tokens + decode_seqs
        mean_context = decode_context / decode_seqs if decode_seqs else 0.0
        attention = self.attention_us(prefill_tokens, prefill_context, decode_seqs, mean_context)
        if skew_alpha and decode_seqs > 1:
            longest = self.attention_us(
                prefill_tokens, prefill_context, decode_seqs, longest_context
            )
            attention += skew_alpha * max(0.0, longest - attention)
        return (
            self.layers * (attention + self._layer_dense.at(tokens))
            + self._once.at(tokens)
            + self._heads.at(prefill_seqs + decode_seqs)
        )

    def decode_run_us(
        self,
        decode_seqs: int,
        decode_context: int,
        steps: int,
        longest_context: int = 0,
        skew_alpha: float = 0.0,
        growth: int | None = None,
    ) -> np.ndarray:
        """GPU times (µs) of ``steps`` consecutive decode-only steps of one batch whose summed
        context grows by ``growth`` tokens a step (default: one per sequence)."""
        fixed, curve = self._decode_curve(decode_seqs)
        per_seq = 1.0 if growth is None else growth / decode_seqs
        grown = per_seq * np.arange(steps)
        attention = curve.over(decode_context / decode_seqs + grown)
        if skew_alpha and decode_seqs > 1:
            longest = curve.over(longest_context + grown)
            attention += skew_alpha * np.maximum(longest - attention, 0.0)
        return fixed + self.layers * attention

    def _decode_curve(self, decode_seqs: int) -> tuple[float, Curve]:
        """Per batch size: the context-independent part of a decode step and its attention over
        context (the decode-count axis blended once, then cached)."""
        cached = self._decode_cache.get(decode_seqs)
        if cached is None:
            contexts = np.unique(
                np.concatenate(
                    [
                        row.sizes
                        for (chunk, _), s in self._slices.items()
                        if chunk == 0
                        for row in s.rows
                    ]
                )
            )
            times = np.array([self.attention_us(0, 0, decode_seqs, k) for k in contexts])
            fixed = (
                self.layers * self._layer_dense.at(decode_seqs)
                + self._once.at(decode_seqs)
                + self._heads.at(decode_seqs)
            )
            cached = (fixed, Curve(contexts, times))
            self._decode_cache[decode_seqs] = cached
        return cached

    def attention_us(
        self, chunk: float, prefill_context: float, decodes: float, decode_context: float
    ) -> float:
        """One layer's attention, bilinear over the (chunk, decodes) corners around the query."""
        chunks, decode_counts = self._chunks, self._decodes
        c, tc = _position(chunks, chunk)
        d, td = _position(decode_counts, decodes)

        def along_decodes(c: int) -> float:
            value = self._slice(chunks[c], decode_counts[d]).at(prefill_context, decode_context)
            if td:
                upper = self._slice(chunks[c], decode_counts[d + 1])
                value += td * (upper.at(prefill_context, decode_context) - value)
            return value

        low = along_decodes(c)
        return low + tc * (along_decodes(c + 1) - low) if tc else low

    def _slice(self, chunk: int, decodes: int) -> _Slice:
        found = self._slices.get((chunk, decodes))
        if found is None:  # an unmeasured corner borrows the nearest measured one
            key = min(self._slices, key=lambda k: (k[0] - chunk) ** 2 + (k[1] - decodes) ** 2)
            found = self._slices[(chunk, decodes)] = self._slices[key]
        return found


def _curve(points: list[tuple[int, float]]) -> Curve:
    points = sorted(points)
    return Curve(np.array([p for p, _ in points], dtype=float), np.array([t for _, t in points]))


def _summed(curves: list[Curve]) -> Curve:
    total = curves[0]
    for curve in curves[1:]:
        total = total + curve
    return total


# --- the sidecar file ---------------------------------------------------------------------------


def save_tables(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write measured tables (``attention``, ``dense/<op>``, ``per_sequence/<op>``) as a
    compressed ``.npz``."""
    with path.open("wb") as out:
        tables = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
        np.savez_compressed(out, **tables)  # type: ignore[arg-type]  # numpy's stub


def load_tables(
    path: Path,
    layers: int,
    per_layer_ops: Sequence[str],
    once_ops: Sequence[str],
    per_sequence_ops: Sequence[str],
) -> MeasuredTables:
    """The sidecar's tables, checked; cached per file and composition."""
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    return _load(
        path, mtime, layers, tuple(per_layer_ops), tuple(once_ops), tuple(per_sequence_ops)
    )


@lru_cache(maxsize=8)
def _load(
    path: Path,
    mtime: int,
    layers: int,
    per_layer_ops: tuple[str, ...],
    once_ops: tuple[str, ...],
    per_sequence_ops: tuple[str, ...],
) -> MeasuredTables:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: not a readable operator-table file ({exc})") from None
    return tables_from_arrays(arrays, str(path), layers, per_layer_ops, once_ops, per_sequence_ops)


def tables_from_arrays(
    arrays: dict[str, np.ndarray],
    source: str,
    layers: int,
    per_layer_ops: Sequence[str],
    once_ops: Sequence[str],
    per_sequence_ops: Sequence[str],
) -> MeasuredTables:
    """Measured tables, checked (a malformed one is a ConfigError naming ``source``)."""
    attention = _checked(source, arrays, "attention", len(ATTENTION_COLUMNS))
    dense = {
        name.removeprefix(DENSE_PREFIX): _checked_curve(source, arrays, name)
        for name in arrays
        if name.startswith(DENSE_PREFIX)
    }
    per_sequence = {
        name.removeprefix(PER_SEQUENCE_PREFIX): _checked_curve(source, arrays, name)
        for name in arrays
        if name.startswith(PER_SEQUENCE_PREFIX)
    }
    missing = [op for op in (*per_layer_ops, *once_ops) if op not in dense]
    missing += [op for op in per_sequence_ops if op not in per_sequence]
    if missing:
        raise ConfigError(f"{source}: no table for {', '.join(sorted(set(missing)))}")
    if not per_layer_ops:
        raise ConfigError(f"{source}: no per-layer operators to compose a layer from")
    if len(np.unique(attention[:, :4], axis=0)) < len(attention):
        raise ConfigError(f"{source}: attention: a grid point is measured twice")
    return MeasuredTables(
        dict(arrays),
        attention,
        dense,
        per_sequence,
        layers,
        tuple(per_layer_ops),
        tuple(once_ops),
        tuple(per_sequence_ops),
    )


def _checked(source: str, arrays: dict[str, np.ndarray], name: str, columns: int) -> np.ndarray:
    """A 2-D table of ``columns`` finite, non-negative numbers whose size columns are whole."""
    if name not in arrays:
        raise ConfigError(f"{source}: no {name} table")
    table = arrays[name]
    if table.ndim != 2 or table.shape[1] != columns or len(table) == 0:
        raise ConfigError(
            f"{source}: {name}: expected rows of {columns} numbers, got {table.shape}"
        )
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        row = int(np.flatnonzero(~np.isfinite(table).all(axis=1) | (table < 0).any(axis=1))[0])
        raise ConfigError(f"{source}: {name} row {row + 1}: not a finite non-negative number")
    sizes = table[:, :-1]
    if np.any(sizes != np.round(sizes)):
        raise ConfigError(f"{source}: {name}: sizes must be whole numbers")
    return table


def _checked_curve(source: str, arrays: dict[str, np.ndarray], name: str) -> Curve:
    table = _checked(source, arrays, name, 2)
    if len(np.unique(table[:, 0])) < len(table):
        raise ConfigError(f"{source}: {name}: a size is measured twice")
    order = np.argsort(table[:, 0])
    return Curve(table[order, 0], table[order, 1])


@dataclass(frozen=True)
class TableStepCost:
    """Seconds per engine step from the tables, with the serving run's correction:
    ``compute_scale × table time + step_overhead_s`` (the engine's StepCost interface).

    ``skew_alpha``: decode contexts of one batch differ, and the attention kernel pays for
    the imbalance (tile padding, idle SMs) over a uniform batch at their mean:
    ``t = t(mean) + skew_alpha · (t(longest) − t(mean))``, the rule and the measured share
    of LLMServingSim's profiler (its skew profile's pooled fit)."""

    tables: MeasuredTables
    skew_alpha: float = 0.0
    compute_scale: float = 1.0
    step_overhead_s: float = 0.0

    def seconds(
        self,
        prefill_tokens: int,
        prefill_attention: float,
        decode_seqs: int,
        context: int,
        prefill_context: int = 0,
        prefill_seqs: int = 0,
        longest_context: int = 0,
    ) -> float:
        del prefill_attention  # the attention table prices chunks by their summed context
        us = self.tables.step_us(
            prefill_tokens,
            prefill_context,
            prefill_seqs,
            decode_seqs,
            context,
            longest_context,
            self.skew_alpha,
        )
        return self.compute_scale * 1e-6 * us + self.step_overhead_s

    def decode_run(
        self,
        decode_seqs: int,
        context: int,
        steps: int,
        longest_context: int = 0,
        growth: int | None = None,
    ) -> np.ndarray:
        us = self.tables.decode_run_us(
            decode_seqs, context, steps, longest_context, self.skew_alpha, growth
        )
        return self.compute_scale * 1e-6 * us + self.step_overhead_s

    @property
    def prices_longest(self) -> bool:
        """Whether a step's price needs the longest decoding context (the skew term)."""
        return bool(self.skew_alpha)
