"""One reader module per trace format, each returning a :class:`~calibration.table.TraceTable`.

``read_tables`` reads one table per file (files of one format, e.g. DistServe's three rates,
stay separate so each can be replayed on its own).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from calibration.readers import argonne, distserve, llmservingsim, splitwise, stairwise, vllm_bench
from calibration.readers.common import read_text
from calibration.table import TraceTable
from sim.errors import ConfigError

Reader = Callable[[Path, dict[str, str]], TraceTable]

FORMATS: dict[str, Reader] = {
    "stairwise": stairwise.read,
    "vllm-bench": vllm_bench.read,
    "distserve": distserve.read,
    "distserve-profile": distserve.read_profile,
    "llmservingsim": llmservingsim.read,
    "llmservingsim-profile": llmservingsim.read_profile,
    "splitwise": splitwise.read,
    "argonne": argonne.read,
}


def detect_format(path: Path) -> str:
    """Guess a file's format from its name and first bytes (``--format auto``)."""
    if path.is_dir() or path.name == "attention.csv":
        return "llmservingsim-profile"
    if path.suffix == ".exp":
        return "distserve"
    head = read_text(path, "trace").lstrip()[:4000]
    first_line = head.splitlines()[0] if head else ""
    guesses = [
        ('"type": "header"' in first_line or '"type":"header"' in first_line, "stairwise"),
        ('"input_toks"' in first_line and '"queued_ts"' in first_line, "llmservingsim"),
        (head.startswith("{") and '"ttfts"' in read_text(path, "trace"), "vllm-bench"),
        (head.startswith("{") and '"decoding_smallbs"' in head, "distserve-profile"),
        ("prompt_time" in first_line and "token_time" in first_line, "splitwise"),
        ("Framework" in first_line and "Batch Size" in first_line, "argonne"),
    ]
    for matched, name in guesses:
        if matched:
            return name
    raise ConfigError(f"{path}: cannot tell its format; pass --format ({', '.join(FORMATS)})")


def read_tables(
    paths: list[Path], fmt: str = "auto", selection: dict[str, str] | None = None
) -> list[TraceTable]:
    if not paths:
        raise ConfigError("no trace files given")
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r} (known: auto, {', '.join(FORMATS)})")
    tables = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file")
        name = detect_format(path) if fmt == "auto" else fmt
        tables.append(FORMATS[name](path, dict(selection or {})))
    return tables
