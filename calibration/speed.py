"""How far one run's engine speed falls from its profile: the spread a profile states so its
intervals hold a live run.

A profile is measured in one twenty-minute window; the machine then runs faster or slower
from hour to hour (the local CPU engine by tens of percent). Every live run probes its vLLM
servers before and after (:mod:`calibration.probe`): per phase, how much slower (> 1) or
faster the engine ran than the profile. Over many runs, the root mean square of their
logarithms is how far a run's speed strays from the profile — the hour's drift and the
profile's own offset from the machine's usual speed together, which is what an interval
must hold. :func:`speed_spread` turns it into the relative sd of a lognormal factor, the
``speed_rel_sd`` a profile states and each interval run draws from.

The probe's own noise is left in (two probes of one run differ by ~10 % here): the spread is
what a probe reads, so an interval from it is at most a little wide.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sim.errors import ConfigError
from sim.profile import SPEED_PHASES, SpeedPhase

MIN_RUNS = 5  # fewer probed runs say too little about a spread


@dataclass(frozen=True)
class RunSpeed:
    """One live run's engine speed against its profile: each phase's factor, the geometric
    mean of the probes around the run (it ran between them)."""

    trace: str  # the live trace's path, as given
    created: str  # when the run started (ISO 8601)
    server: str
    profile: str
    prefill: float
    decode: float

    @classmethod
    def of_probes(
        cls,
        trace: str,
        created: str,
        server: str,
        profile: str,
        factors: Sequence[tuple[float, float]],
    ) -> RunSpeed:
        """From the (prefill, decode) factors of the run's probes (before, after, or both)."""
        if not factors:
            raise ConfigError(f"{trace}: no engine probe of server {server}")
        prefill, decode = (
            math.exp(sum(math.log(f[i]) for f in factors) / len(factors)) for i in (0, 1)
        )
        return cls(trace, created, server, profile, prefill, decode)


def speed_spread(runs: Sequence[RunSpeed]) -> dict[SpeedPhase, float]:
    """Each phase's relative sd of a lognormal factor whose sigma is the root mean square of
    the runs' log factors (around 1: the profile, not the runs' mean)."""
    profiles = {run.profile for run in runs}
    if len(profiles) > 1:
        raise ConfigError(f"probes against several profiles ({', '.join(sorted(profiles))})")
    if len(runs) < MIN_RUNS:
        raise ConfigError(
            f"{len(runs)} probed live run(s): a speed spread needs at least {MIN_RUNS}"
        )
    spread: dict[SpeedPhase, float] = {}
    for phase in SPEED_PHASES:
        logs = [math.log(getattr(run, phase)) for run in runs]
        sigma = math.sqrt(sum(x * x for x in logs) / len(logs))
        spread[phase] = round(math.sqrt(math.expm1(sigma * sigma)), 4)
    return spread


def write_speed_log(runs: Sequence[RunSpeed], path: Path) -> None:
    """The runs a spread was taken from, one JSON line each: what a shipped profile cites."""
    path.write_text("".join(json.dumps(asdict(run)) + "\n" for run in runs))


def read_speed_log(path: Path) -> list[RunSpeed]:
    try:
        return [RunSpeed(**json.loads(line)) for line in path.read_text().splitlines() if line]
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not a speed log ({error})") from None
