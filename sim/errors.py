"""The one exception users see: a bad scenario, profile or trace, reported in one line."""

from __future__ import annotations

from collections.abc import Collection
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
