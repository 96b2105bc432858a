"""How fast is the simulator? 1,000 staircase-MoA requests on one simulated vLLM engine.

The reference workload (``sim/reference.py``): 4 proposers + 1 aggregator, 512 tokens each,
Poisson arrivals, on the shipped CPU profile's own file — the same workload on every
machine (by name that profile is the variant of this machine's processor: a slower engine
and a more crowded batch elsewhere). Prints wall time, simulation events and events per
generated token (decode steps are batched into one event while the batch is unchanged, so
events should track batch changes, not tokens).

After each run it times a bare SimPy loop that processes as many events as SimPy scheduled
in the run (the model's own count leaves out process starts, ends and relays), and prints the
median of the runs' ratios with their range: what the model's own bookkeeping costs on top of
the engine it runs on. Each ratio divides two times taken a moment apart, as a machine whose
speed drifts needs (one loop timed once after all the runs moved the ratio between 17x and 44x
over three invocations of the same code). Target: 1,000 requests in <= 1 s, ratio <= 10x.

    python benchmarks/sim_speed.py [--requests 1000] [--rate 0.5] [--repeat 3]
    python benchmarks/sim_speed.py --engine-profile NAME   # another profile's step prices
    python benchmarks/sim_speed.py --requests 100000 --repeat 1 --memory   # a big run's memory

``--engine-profile vllm-rtxpro6000-llama31-8b-ops`` times steps priced from operator tables
instead of the fitted formula (a shipped name means that file, whatever the machine).

``--intervals R`` then times what ``stairwise simulate`` does: the prediction and R − 1
interval runs, once all in this process (``workers=1``) and once as the command does by
default (``workers=None``: a process pool of every core when the runs outlast its start),
in wall seconds, and checks both give the same summary.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import resource
import statistics
import time
from collections.abc import Generator
from typing import Any

import simpy

from sim import Simulator, scenario_from_dict, simulate
from sim.engines.vllm import VllmEngine
from sim.errors import ConfigError
from sim.profile import SHIPPED_DIR
from sim.reference import REFERENCE_CPU_PROFILE, staircase_moa
from stairwise.app import run_script


def engine_profile(name_or_path: str) -> str:
    """A shipped profile's own file (not the variant of this machine's processor), or a path."""
    shipped = SHIPPED_DIR / f"{name_or_path}.json"
    return str(shipped) if shipped.exists() else name_or_path


BARE_REPEATS = 5


def bare_simpy_seconds(events: int) -> float:
    """CPU seconds SimPy alone takes to process ``events`` timeouts: the floor under any
    model built on it. Garbage collection is off during each loop, and the fastest of
    :data:`BARE_REPEATS` is kept: a loop lasts a few tens of milliseconds, and collections
    walking the simulated run's objects, still alive in this process, doubled it (one loop
    each moved the ratio between 27x and 57x on a quiet machine)."""
    return min(_bare_loop_seconds(events) for _ in range(BARE_REPEATS))


def _bare_loop_seconds(events: int) -> float:
    env = simpy.Environment()

    def ticks() -> Generator[simpy.Event, None, None]:
        for _ in range(events):
            yield env.timeout(0.001)

    env.process(ticks())
    gc.disable()
    try:
        started = time.process_time()
        env.run()
        return time.process_time() - started
    finally:
        gc.enable()


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.5, help="requests per second")
    parser.add_argument("--mode", default="staircase", choices=["staircase", "standard"])
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the same simulation (median printed)"
    )
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument(
        "--intervals",
        type=int,
        default=0,
        metavar="R",
        help="also time the prediction with R - 1 interval runs, serial and on a pool",
    )
    parser.add_argument("--memory", action="store_true", help="print the peak memory")
    parser.add_argument(
        "--engine-profile",
        default=REFERENCE_CPU_PROFILE,
        help="its step cost: a shipped profile's name (that file itself) or a profile path",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        raise ConfigError(f"--repeat must be at least 1, got {args.repeat}")
    if args.intervals < 0:
        raise ConfigError(f"--intervals must be at least 1 (0: not timed), got {args.intervals}")

    rss_before = peak_rss_mb()
    profile = engine_profile(args.engine_profile)
    spec = staircase_moa("bench-staircase-moa-4x1", args.requests, args.rate, args.mode, profile)
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    walls, cpus, bares, setups = [], [], [], []
    for _ in range(args.repeat):  # the same run: its time moves with the machine, not the run
        started, cpu_started = time.perf_counter(), time.process_time()
        simulator = Simulator(scenario_from_dict(spec))
        if profiler:
            profiler.enable()
        result = simulator.run()
        if profiler:
            profiler.disable()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu_started)
        setups.append(walls[-1] - result.wall_s)
        # every event SimPy scheduled (timeouts, process starts and ends, wake-ups, relays):
        # the model's own count (result.events) leaves out those it does not schedule itself
        simpy_events = next(simulator.env._eid)
        # the floor timed right after each run, so a ratio divides two times of one moment
        bares.append(bare_simpy_seconds(simpy_events))
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    bare = statistics.median(bares)
    ratios = [run / floor for run, floor in zip(cpus, bares, strict=True)]
    rss_after = peak_rss_mb()
    engine = simulator.engines["gpu"][0]
    assert isinstance(engine, VllmEngine)  # the reference workload's server
    generated = result.summary["generated_tokens"]
    print(f"requests            {result.summary['requests']:>12,}")
    print(f"simulated time (s)  {simulator.env.now:>12,.0f}")
    print(f"generated tokens    {generated:>12,}")
    print(f"engine steps        {engine.steps:>12,}")
    print(f"simulation events   {result.events:>12,}   (the model's: steps, units, calls)")
    print(f"SimPy events        {simpy_events:>12,}   (all SimPy scheduled)")
    print(f"events per token    {result.events / generated:>12.4f}")
    print(f"steps per event     {engine.steps / engine.events:>12.1f}")
    spread = f"median of {args.repeat}: {min(cpus):.2f}-{max(cpus):.2f}"
    print(f"wall time (s)       {wall:>12.2f}   (target <= 1 s for 1,000 requests)")
    print(f"CPU time (s)        {cpu:>12.2f}   ({spread}; a busy machine's wall time is longer)")
    print(f"  µs per SimPy event{cpu / simpy_events * 1e6:>12.1f}")
    print(f"  of it set-up      {statistics.median(setups):>12.2f}   (wall: scenario, engines)")
    floor = f"as many timeouts, no GC, best of {BARE_REPEATS} after each run"
    print(f"bare SimPy (CPU s)  {bare:>12.3f}   ({floor})")
    print(f"  µs per event      {bare / simpy_events * 1e6:>12.1f}")
    ratio_spread = f"{min(ratios):.1f}-{max(ratios):.1f}"
    print(
        f"ratio to SimPy      {statistics.median(ratios):>12.1f}×  "
        f"(CPU time, median of each run's own; {ratio_spread}; target <= 10×)"
    )
    print(f"tokens per wall s   {generated / wall:>12,.0f}")
    if args.memory:
        print(f"peak memory (MB)    {rss_after:>12,.0f}   (resident; {rss_before:,.0f} before)")
        per_request = (rss_after - rss_before) * 1024 / args.requests
        print(f"  KiB per request   {per_request:>12.1f}")
    if args.intervals:
        time_intervals(spec, args.intervals)
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def time_intervals(spec: dict[str, Any], replications: int) -> None:
    """Wall seconds of the prediction with its interval runs, serial and as the CLI runs them."""
    summaries = {}
    for label, workers in (("in this process", 1), ("as the CLI does", None)):
        started = time.perf_counter()
        result = simulate(scenario_from_dict(spec), replications=replications, workers=workers)
        seconds = time.perf_counter() - started
        summaries[label] = result.summary
        print(f"with {replications - 1} interval runs, {label:>15}: {seconds:7.2f} s wall")
    same = summaries["in this process"] == summaries["as the CLI does"]
    print(f"  the same summary: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
