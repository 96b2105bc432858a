"""JSON lines in (traces, workload files), with errors that name the file and the line; and
the digests that key stored results: of a JSON value, of a file's bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sim.errors import ConfigError


def refuse_non_finite(name: str) -> float:
    """``parse_constant`` for json.loads: NaN and Infinity, which Python accepts, are not JSON."""
    raise ValueError(name)


def json_object(line: str, where: str, what: str) -> dict[str, Any]:
    """One JSON object; ``where`` is ``file:line`` for the error message."""
    try:
        value = json.loads(line, parse_constant=refuse_non_finite)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not a JSON {what} (truncated? {exc.msg})") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} is not a number") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a JSON object ({what})")
    return value


def json_objects(
    lines: Iterable[str], source: str, what: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, json_object(line, f"{source}:{number}", what)


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no spaces: the same text for equal values
    however their dicts were built."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_digest(value: Any) -> str:
    """SHA-256 (hex) of ``value``'s :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def file_digest(path: str) -> str:
    """A hash of a file's bytes: a workload or prompt file named by what it holds, not where
    it lies (sweep point keys, a trace's scenario hash)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
