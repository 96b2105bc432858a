"""Splitwise's ``perf_model.csv``: isolated prefill and decode timings of batched requests.

A row is ``batch_size`` requests of ``prompt_size`` tokens generating ``token_size`` tokens:
``prompt_time`` (ms) is their one prefill step, ``token_time`` (ms) the mean decode step,
whose context grows from ``prompt_size`` to ``prompt_size + token_size`` (so its mean is the
midpoint — exact, the cost being linear in context). The file mixes models and hardware:
pick one with ``--select model=…,hardware=…,tp=…``.
"""

from __future__ import annotations

from pathlib import Path

from calibration.readers.common import count, number, parse_selection, selected_rows
from calibration.table import StepRow, TraceTable

COLUMNS = [
    "model",
    "hardware",
    "tensor_parallel",
    "prompt_size",
    "batch_size",
    "token_size",
    "prompt_time",
    "token_time",
]
SELECT = {"model": "e.g. llama2-70b", "hardware": "e.g. h100-80gb", "tp": "tensor-parallel degree"}
KEYS = {"model": "model", "hardware": "hardware", "tp": "tensor_parallel"}


def read(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, SELECT, str(path))
    rows = selected_rows(path, COLUMNS, "Splitwise perf_model.csv", KEYS, selection)
    return TraceTable(
        source=str(path),
        format="splitwise",
        steps=[step for line, row in rows for step in _steps(path, line, row)],
        settings={"engine": "not stated (Splitwise perf model)", **selection},
    )


def _steps(path: Path, line: int, row: dict[str, str]) -> list[StepRow]:
    at = (path, line)
    prompt = count(row["prompt_size"], at, "prompt_size", 1)
    batch = count(row["batch_size"], at, "batch_size", 1)
    tokens = count(row["token_size"], at, "token_size", 1)
    where = f"{path}:{line}"
    prefill = StepRow(
        number(row["prompt_time"], at, "prompt_time") / 1e3,
        prefill_steps=1,
        prefill_tokens=batch * prompt,
        prefill_attention=batch * prompt * prompt,
        where=where,
    )
    decode = StepRow(
        number(row["token_time"], at, "token_time") / 1e3,
        decode_seqs=batch,
        context_tokens=batch * (prompt + tokens / 2),
        where=where,
    )
    return [prefill, decode]
