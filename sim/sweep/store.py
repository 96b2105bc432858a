"""The results file: one CSV row per finished point, appended and flushed at once.

Rows are keyed by the hash of the point's configuration, so a sweep that was killed reads
the keys back and computes only what is missing. A kill in the middle of a write leaves a
torn last line; it is cut off on the next open (that point is simply computed again).
Axis values are stored as JSON text (they may be lists or mappings), metrics as numbers,
an empty cell meaning "no value" (e.g. no interval from one replication).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sim.errors import ConfigError

Row = dict[str, Any]


@dataclass(frozen=True)
class Layout:
    axes: list[str]
    metrics: list[str]

    @property
    def columns(self) -> list[str]:
        metric_columns = [
            column for m in self.metrics for column in (m, f"{m}.ci_low", f"{m}.ci_high")
        ]
        return ["key", "point", *self.axes, "replications", *metric_columns]

    def encode(self, row: Row) -> dict[str, str]:
        encoded = {"key": row["key"], "point": str(row["point"])}
        encoded.update({axis: json.dumps(row[axis]) for axis in self.axes})
        encoded["replications"] = str(row["replications"])
        for column in self.columns[len(self.axes) + 3 :]:
            encoded[column] = "" if row[column] is None else repr(float(row[column]))
        return encoded

    def decode(self, raw: dict[str, str]) -> Row:
        row: Row = {"key": raw["key"], "point": int(raw["point"])}
        row.update({axis: json.loads(raw[axis]) for axis in self.axes})
        row["replications"] = int(raw["replications"])
        for column in self.columns[len(self.axes) + 3 :]:
            row[column] = float(raw[column]) if raw[column] else None
        return row


class ResultStore:
    def __init__(self, path: Path, layout: Layout) -> None:
        self.path = path
        self.layout = layout
        self._file: IO[str] | None = None
        self._writer: csv.DictWriter[str] | None = None

    def load(self) -> dict[str, Row]:
        """Rows already stored, by key (repairing a torn last line)."""
        if not self.path.exists():
            return {}
        self._cut_torn_line()
        if self.path.stat().st_size == 0:
            return {}
        with self.path.open(newline="") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames != self.layout.columns:
                raise ConfigError(
                    f"{self.path}: holds results of another sweep (its columns differ); "
                    "choose another --out or remove the file"
                )
            rows = {}
            for line, raw in enumerate(reader, start=2):
                try:
                    rows[raw["key"]] = self.layout.decode(raw)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{self.path}:{line}: malformed row ({exc})") from None
        return rows

    def _cut_torn_line(self) -> None:
        with self.path.open("rb+") as file:
            data = file.read()
            if not data.endswith(b"\n"):
                file.truncate(data.rfind(b"\n") + 1)

    def append(self, row: Row) -> None:
        if self._writer is None:
            self._open()
        assert self._file is not None and self._writer is not None
        self._writer.writerow(self.layout.encode(row))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.layout.columns)
        if new:
            self._writer.writeheader()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._writer = None
