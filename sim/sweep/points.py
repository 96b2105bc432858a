"""A sweep's points as concrete scenarios, each keyed by a hash of its whole configuration.

Axis values are applied to the validated base scenario with every default spelled out, so
two sweep files that say the same thing differently produce the same keys, and a result
stored under a key can be trusted to belong to exactly that configuration.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ConfigError
from sim.jsonl import canonical_json, file_digest, json_digest
from sim.profile import VllmProfile, load_profile
from sim.scenario import (
    Workload,
    apply_overrides,
    load_scenario,
    resolve_workload_files,
    scenario_from_dict,
    workload_digests,
)
from sim.sweep.samplers import sample_points
from sim.sweep.spec import SweepSpec, read_sweep

# 2: intervals became prediction intervals, replications draw parameters; 3: profiles are
# keyed by their content, not their name or path
KEY_SCHEMA = 3


@dataclass(frozen=True)
class SweepPoint:
    index: int
    values: dict[str, Any]  # axis path -> value
    scenario: dict[str, Any]  # validated and dumped, with the base seed
    key: str


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    source: str
    profile_dir: Path | None  # where relative profile paths of the scenario are found
    points: list[SweepPoint]
    skipped: int  # points the scenario rejected, left out (invalid_points: skip)


def load_sweep(path: str | Path) -> Sweep:
    return resolve_sweep(read_sweep(path), Path(path).parent, str(path))


def resolve_sweep(spec: SweepSpec, base_dir: Path | None, source: str) -> Sweep:
    """Every point validated up front, so a bad axis fails before any simulation runs."""
    base, profile_dir = _base_scenario(spec, base_dir, source)
    # each file read once per sweep (not per point), and read again by the next sweep
    digests = Digests(
        profile=cache(lambda name_or_path: profile_digest(name_or_path, profile_dir)),
        file=cache(file_digest),
    )
    points: list[SweepPoint] = []
    skipped = 0
    for values in sample_points(spec.axes, spec.method):
        try:
            scenario = scenario_at(base, values, source)
        except ConfigError:
            if spec.invalid_points == "error":
                raise
            skipped += 1
            continue
        key = point_key(scenario, spec, digests)
        points.append(SweepPoint(len(points), values, scenario, key))
    if not points:
        raise ConfigError(f"{source}: the scenario rejects every point of the sweep")
    return Sweep(spec, source, profile_dir, points, skipped)


def _base_scenario(
    spec: SweepSpec, base_dir: Path | None, source: str
) -> tuple[dict[str, Any], Path | None]:
    if isinstance(spec.scenario, str):
        path = Path(spec.scenario)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return load_scenario(path, spec.overrides).model_dump(mode="json"), path.parent
    data = apply_overrides(copy.deepcopy(spec.scenario), spec.overrides)
    scenario = scenario_from_dict(data, f"{source}: scenario")
    if base_dir is not None:
        resolve_workload_files(scenario.workload, base_dir)
    return scenario.model_dump(mode="json"), base_dir


def scenario_at(base: dict[str, Any], values: dict[str, Any], source: str) -> dict[str, Any]:
    """The base scenario with the axis values set, validated and dumped."""
    data = apply_overrides(copy.deepcopy(base), [override(p, v) for p, v in values.items()])
    label = ", ".join(f"{path}={value}" for path, value in values.items())
    return scenario_from_dict(data, f"{source}: point {label}").model_dump(mode="json")


def override(path: str, value: Any) -> str:
    """A ``--set`` string, so axes and overrides share one path syntax (lists, indices)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return f"{path}={text.removesuffix('...').strip()}"


@dataclass(frozen=True)
class Digests:
    """How a point key names the files a point reads: by what they hold, not where they lie."""

    profile: Callable[[str], str]  # a profile's name or path -> :func:`profile_digest`
    file: Callable[[str], str]  # a workload or prompt file's path -> :func:`file_digest`


def point_key(scenario: dict[str, Any], spec: SweepSpec, digests: Digests) -> str:
    """Hash of everything a point's stored row depends on, each server's profile and the
    workload's own files by their contents: a moved folder keeps its keys, an edited file
    changes them."""
    servers = {
        name: {**server, "profile": digests.profile(server["profile"])}
        for name, server in scenario["servers"].items()
    }
    files = workload_digests(Workload.model_validate(scenario["workload"]), digests.file)
    workload = {**scenario["workload"], **files}
    config = {
        "schema": KEY_SCHEMA,
        "scenario": {**scenario, "servers": servers, "workload": workload},
        "replications": spec.replications,
        "confidence": spec.confidence,
        "metrics": spec.metrics,
    }
    return json_digest(config)[:16]


def profile_digest(name_or_path: str, profile_dir: Path | None) -> str:
    """A hash of the profile a server runs on (a shipped name: its variant for this machine's
    processor) and of its operator tables' file: moving a sweep's folder keeps its keys, and
    editing a profile in place changes them."""
    profile = load_profile(name_or_path, profile_dir)
    digest = hashlib.sha256(canonical_json(profile.model_dump(mode="json")).encode())
    sidecar = profile.sidecar if isinstance(profile, VllmProfile) else None
    if sidecar is not None:
        digest.update(sidecar.read_bytes())
    return digest.hexdigest()
