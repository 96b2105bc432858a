"""What every reader needs: reading files and checking values, with errors naming file and line."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.jsonl import refuse_non_finite
from sim.trace import read_text as read_trace_text

_NON_FINITE = re.compile(r"\b(NaN|-?Infinity)\b")


def error(path: Path | str, line: int | None, message: str) -> ConfigError:
    where = f"{path}:{line}" if line is not None else str(path)
    return ConfigError(f"{where}: {message}")


def read_text(path: Path, what: str) -> str:
    try:
        text = read_trace_text(path)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise error(path, None, f"cannot read {what} ({reason})") from None
    if not text.strip():
        raise error(path, None, f"empty file (expected {what})")
    return text


def load_json(path: Path, what: str) -> Any:
    """A JSON document; NaN/Infinity (which Python's json accepts) is refused with its line."""
    text = read_text(path, what)
    try:
        return json.loads(text, parse_constant=refuse_non_finite)
    except json.JSONDecodeError as exc:
        raise error(path, exc.lineno, f"not valid JSON, {what} expected ({exc.msg})") from None
    except ValueError:
        match = _NON_FINITE.search(text)
        line = text.count("\n", 0, match.start()) + 1 if match else None
        raise error(path, line, f"{match.group(0) if match else 'NaN'} is not a number") from None


def number(
    value: Any, where: tuple[Path | str, int | None], name: str, minimum: float = 0.0
) -> float:
    """A finite number >= ``minimum``; anything else is an error naming the field."""
    path, line = where
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise error(path, line, f"{name} must be a number, got {value!r}")
    try:
        result = float(value)
    except ValueError:
        raise error(path, line, f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(result):
        raise error(path, line, f"{name} is {value!r}, not a finite number")
    if result < minimum:
        raise error(path, line, f"{name} must be >= {minimum:g}, got {result:g}")
    return result


def count(value: Any, where: tuple[Path | str, int | None], name: str, minimum: int = 0) -> int:
    result = number(value, where, name, minimum)
    if result != int(result):
        raise error(where[0], where[1], f"{name} must be a whole number, got {value!r}")
    return int(result)


def field(record: dict[str, Any], key: str, where: tuple[Path | str, int | None]) -> Any:
    if key not in record:
        raise error(where[0], where[1], f"missing field {key!r}")
    return record[key]


def csv_rows(path: Path, required: list[str], what: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file whose rows must fill the ``required`` columns (trailing
    optional ones may be left off, as some published files do)."""
    lines = read_text(path, what).splitlines()
    reader = csv.reader(lines)
    header = [h.strip() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        raise error(path, 1, f"not a {what}: missing columns {', '.join(missing)}")
    found = False
    for number_, values in enumerate(reader, 2):
        if not any(v.strip() for v in values):
            continue
        row = dict(zip(header, (v.strip() for v in values), strict=False))
        if len(values) > len(header) or any(not row.get(c) for c in required):
            raise error(
                path, number_, f"expected {len(header)} columns, found {len(values)} (truncated?)"
            )
        found = True
        yield number_, row
    if not found:
        raise error(path, None, f"{what} has a header but no rows")


def parse_selection(items: dict[str, str], allowed: dict[str, str], source: str) -> dict[str, str]:
    """Check ``--select key=value`` keys against what a format understands."""
    unknown = [k for k in items if k not in allowed]
    if unknown:
        known = ", ".join(f"{k} ({v})" for k, v in allowed.items()) or "none"
        raise ConfigError(
            f"{source}: cannot select by {', '.join(unknown)}; this format knows {known}"
        )
    return items


def selected_rows(
    path: Path, columns: list[str], what: str, keys: dict[str, str], wanted: dict[str, str]
) -> list[tuple[int, dict[str, str]]]:
    """(line, row) of the CSV rows whose ``keys`` columns hold the ``wanted`` values."""
    rows = []
    choices: dict[str, set[str]] = {k: set() for k in keys}
    for line, row in csv_rows(path, columns, what):
        for key, column in keys.items():
            choices[key].add(row[column])
        if all(row[keys[k]] == v for k, v in wanted.items()):
            rows.append((line, row))
    require_selected(rows, choices, wanted, str(path))
    return rows


def require_selected(
    rows: list[Any], choices: dict[str, set[str]], selection: dict[str, str], source: str
) -> None:
    """Empty selection -> an error that lists the values the file does have."""
    if rows:
        return
    offered = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in choices.items())
    wanted = ", ".join(f"{k}={v}" for k, v in selection.items()) or "nothing"
    raise ConfigError(f"{source}: no rows match {wanted} (the file has {offered})")
