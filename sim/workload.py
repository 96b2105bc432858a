"""The requests of a run: arrival times, prompt lengths and each agent's answer length."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from sim.dag import Dag
from sim.errors import ConfigError
from sim.jsonl import json_objects
from sim.scenario import (
    BUILTIN_PROMPTS,
    ClosedArrival,
    FixedRateArrival,
    PoissonArrival,
    Workload,
)
from sim.texts import CHARS_PER_TOKEN_GUESS, estimate_tokens


@dataclass(frozen=True)
class RequestSpec:
    index: int
    prompt_tokens: int
    output_tokens: dict[str, int]  # answer length per agent
    arrival_s: float | None  # None: a closed loop sends it when a user is free
    prompt: str | None = None  # the text, when the workload gives one
    extra: dict[str, Any] = field(default_factory=dict)


def build_requests(
    workload: Workload,
    dag: Dag,
    arrivals_rng: np.random.Generator,
    lengths_rng: np.random.Generator,
    chars_per_token: float = CHARS_PER_TOKEN_GUESS,
) -> list[RequestSpec]:
    """The requests of a run; a workload file's text prompts are counted in tokens with
    ``chars_per_token`` (the simulator passes its profile's; the live runner tokenizes them)."""
    rows = read_workload_file(Path(workload.file)) if workload.file else None
    texts = read_prompts(workload.prompts) if workload.prompts else None
    n = len(rows) if rows is not None else workload.requests
    arrivals = _arrivals(workload, n, arrivals_rng)
    prompt_lengths = workload.prompt_tokens.sample(lengths_rng, n)
    lengths = workload.output_tokens
    outputs = {
        agent.name: (
            np.full(n, agent.max_tokens)  # natural answers: at most this, all the sim can know
            if isinstance(lengths, str)
            else np.minimum(lengths.sample(lengths_rng, n), agent.max_tokens)
        )
        for agent in dag.agents
    }
    requests = []
    for i in range(n):
        row = rows[i] if rows is not None else {}
        per_agent = {name: int(values[i]) for name, values in outputs.items()}
        given = row.get("output_tokens")
        if isinstance(given, int):
            per_agent = {a.name: min(given, a.max_tokens) for a in dag.agents}
        elif isinstance(given, dict):
            per_agent.update({k: int(v) for k, v in given.items() if k in per_agent})
        prompt = row.get("prompt") if texts is None else texts[i % len(texts)]
        prompt_tokens = row.get("prompt_tokens") or (
            estimate_tokens(prompt, chars_per_token) if prompt else int(prompt_lengths[i])
        )
        arrival = row.get("arrival_s", arrivals[i] if arrivals is not None else None)
        requests.append(RequestSpec(i, int(prompt_tokens), per_agent, arrival, prompt))
    return requests


def _arrivals(workload: Workload, n: int, rng: np.random.Generator) -> np.ndarray | None:
    arrival = workload.arrival
    if isinstance(arrival, ClosedArrival):
        return None
    if isinstance(arrival, FixedRateArrival):
        return np.arange(n) / arrival.rate_per_s
    assert isinstance(arrival, PoissonArrival)
    gaps = rng.exponential(1.0 / arrival.rate_per_s, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def read_workload_file(path: Path) -> list[dict[str, Any]]:
    """JSONL rows: prompt_tokens and/or prompt, optional output_tokens and arrival_s."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read workload file ({exc.strerror})") from None
    rows = []
    for number, row in json_objects(lines, str(path), "request"):
        if not isinstance(row.get("prompt_tokens", 1), int) or row.get("prompt_tokens", 1) < 1:
            raise ConfigError(f"{path}:{number}: prompt_tokens must be a positive integer")
        if "prompt_tokens" not in row and not isinstance(row.get("prompt"), str):
            raise ConfigError(f"{path}:{number}: needs prompt_tokens or prompt")
        arrival = row.get("arrival_s")
        if arrival is not None and (not isinstance(arrival, int | float) or arrival < 0):
            raise ConfigError(f"{path}:{number}: arrival_s must be a number >= 0")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: workload file has no requests")
    return rows


def read_prompts(source: str) -> list[str]:
    """The prompts of ``workload.prompts``: the shipped set (``builtin``) or a JSONL file,
    one ``{"prompt": "..."}`` per line (other fields, such as the shipped set's ``kind``, are
    kept for the reader)."""
    if source == BUILTIN_PROMPTS:
        path = Path(str(resources.files("sim") / "prompts" / "builtin.jsonl"))
    else:
        path = Path(source)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise ConfigError(f"{path}: cannot read prompt file ({reason})") from None
    prompts = []
    for number, row in json_objects(lines, str(path), "prompt"):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"{path}:{number}: needs a non-empty prompt string")
        prompts.append(prompt)
    if not prompts:
        raise ConfigError(f"{path}: prompt file has no prompts")
    return prompts
