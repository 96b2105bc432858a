"""The one exception users see: a bad scenario, profile or trace, reported in one line."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)

DISTRIBUTION_TAGS = frozenset({"fixed", "uniform", "normal", "lognormal", "gamma", "empirical"})


class ConfigError(ValueError):
    """Bad user input (scenario, override, profile, trace). The CLI prints it and exits 2."""


def one_line(exc: ValidationError, source: str, whole: str, tags: Collection[str]) -> str:
    """The first pydantic error as ``source: field.path: message``.

    pydantic puts the union member it tried into the location (a ``kind``/``dist`` value
    such as "moa", or "function-after[...]"): ``tags`` and bracketed names are left out, so
    the path reads like the file.
    """
    err = exc.errors()[0]
    path = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in tags or "[" in p))]
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    elif err["type"] == "missing":
        message = "required field missing"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {'.'.join(path) or whole}: {message}{more}"


def validated(
    model: type[Model], data: Any, source: str, what: str, tags: Collection[str]
) -> Model:
    """``data`` (a parsed YAML/JSON mapping) as ``model``, or a one-line ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {what} must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, source, what, tags)) from None


def writable_file(path: str | Path, what: str) -> Path:
    """``path``, checked before long work that ends by writing it: not a folder, and in a
    folder that exists or can be made and can be written (missing folders are made then)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder; give a file name")
    _check_folder(path.parent, path, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path}: not writable")
    return path


def writable_folder(path: str | Path, what: str) -> Path:
    """``path``, checked like :func:`writable_file`, for a folder results are written into."""
    path = Path(path)
    _check_folder(path, path, what)
    return path


def _check_folder(folder: Path, named: Path, what: str) -> None:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {named}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {named}: cannot write in {existing}")
