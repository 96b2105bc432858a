"""How fast do sweeps run? 200 staircase-MoA points × 3 replications × 100 requests.

A Latin hypercube over proposers (2-4), the first proposer chunk (4-64 tokens) and the
Poisson rate (0.05-0.3 requests/s) on the shipped vLLM-CPU profile's own file (by path, so
the same sweep on every machine; by name it is the variant of this machine's processor).
Runs the sweep on one worker (in this process) and on a local pool of ``--workers``
processes, each into a fresh results directory, and prints points per second, the parallel
speed-up and whether both runs stored identical rows. The machine is shared, so it also
prints the load average before each run and the CPU seconds each run used (its worker
processes included): a speed-up far below the worker count with CPU seconds close to the
serial run's means other processes took the cores ("cores busy" = CPU seconds / wall
seconds).
A small warm-up sweep runs first, untimed: the first sweep in a process takes a one-off
0.5-0.8 s more than the next (the Latin hypercube sampler's import among it), which the
one-worker run, timed first, paid alone.

``--backend ray`` runs it on a local Ray of one CPU, then of ``--workers`` CPUs: how the
sweep scales on Ray. Ray's start (~15 s) and its workers' first imports are left out of
the timing — each Ray first runs a small warm-up sweep — so the figure is the steady rate a
long sweep on a cluster sees. Ray's workers are not this process's children, so it prints
no CPU seconds.

    python benchmarks/sweep_speed.py [--points 200] [--replications 3] [--workers 2]
    python benchmarks/sweep_speed.py --backend ray
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.reference import REFERENCE_CPU_PROFILE
from sim.sweep import SweepResult, sweep
from sim.sweep.backends import BackendName, require_ray
from stairwise.app import run_script


def sweep_spec(points: int, replications: int, requests: int) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "name": "bench-staircase-moa",
        "scenario": {
            "name": "bench-staircase-moa",
            "seed": 1,
            "servers": {"gpu": {"kind": "vllm", "profile": REFERENCE_CPU_PROFILE}},
            "network": {"latency": {"dist": "lognormal", "median_ms": 0.5, "sigma": 0.4}},
            "topology": {
                "kind": "moa",
                "mode": "staircase",
                "proposers": 3,
                "agent": {"max_tokens": 256},
                "aggregator": {"max_tokens": 128},
                "chunks": {"proposer": [8, 128, 256], "aggregator": [8, 128, 128]},
                "template": "prefix_cache",
            },
            "workload": {
                "requests": requests,
                "arrival": {"kind": "poisson", "rate_per_s": 0.1},
                "prompt_tokens": {"dist": "fixed", "value": 64},
            },
        },
        "axes": {
            "topology.proposers": {"low": 2, "high": 4, "integer": True},
            "topology.chunks.proposer.0": {"low": 4, "high": 64, "log": True, "integer": True},
            "workload.arrival.rate_per_s": {"low": 0.05, "high": 0.3, "log": True},
        },
        "method": {"kind": "lhs", "n": points, "seed": 0},
        "replications": replications,
    }


def timed(
    spec: dict[str, Any], workers: int, backend: BackendName = "local"
) -> tuple[SweepResult, float, float]:
    """The result, wall seconds and CPU seconds (this process and its finished children)."""
    with tempfile.TemporaryDirectory() as out:
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        result = sweep(spec, backend=backend, workers=workers, out=Path(out))
        return result, time.perf_counter() - started, _cpu_seconds() - cpu_before


def timed_on_ray(
    spec: dict[str, Any], warm_up: dict[str, Any], cpus: int
) -> tuple[SweepResult, float]:
    """The result and wall seconds on a local Ray of ``cpus`` CPUs, started and warmed up
    (its workers started, stairwise imported in each) before the clock starts."""
    ray = require_ray()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        timed(warm_up, cpus, "ray")
        result, seconds, _ = timed(spec, cpus, "ray")
        return result, seconds
    finally:
        ray.shutdown()


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--replications", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    if args.points < 1 or args.replications < 1 or args.requests < 1 or args.workers < 1:
        raise ConfigError("--points, --replications, --requests and --workers must be >= 1")

    spec = sweep_spec(args.points, args.replications, args.requests)
    simulations = args.points * args.replications
    print(f"{args.points} points × {args.replications} replications × {args.requests} requests")
    warm_up = {**spec, "method": {**spec["method"], "n": 2 * args.workers}}
    if args.backend == "ray":
        ray_scaling(spec, warm_up, args.points, simulations, args.workers)
        return
    # the first sweep in a process pays one-off costs (the Latin hypercube sampler's
    # import among them): here, not in the one-worker run alone
    timed(warm_up, 1)
    runs = {}
    for workers in (1, args.workers):
        load = os.getloadavg()[0]
        runs[workers] = timed(spec, workers)
        _, seconds, cpu = runs[workers]
        print(
            f"{workers} worker(s) {seconds:7.1f} s  {args.points / seconds:6.2f} points/s  "
            f"{simulations / seconds:6.2f} simulations/s  {cpu:6.1f} CPU s = "
            f"{cpu / seconds:4.2f} cores busy  (load average before: {load:.2f})"
        )
    serial, serial_s, _ = runs[1]
    parallel, parallel_s, _ = runs[args.workers]
    print(f"speed-up   {serial_s / parallel_s:8.2f}×")
    print(f"identical  {'yes' if serial.rows == parallel.rows else 'NO'}")


def ray_scaling(
    spec: dict[str, Any], warm_up: dict[str, Any], points: int, simulations: int, workers: int
) -> None:
    runs = {}
    for cpus in (1, workers):
        load = os.getloadavg()[0]
        runs[cpus] = timed_on_ray(spec, warm_up, cpus)
        _, seconds = runs[cpus]
        print(
            f"Ray, {cpus} CPU(s) {seconds:7.1f} s  {points / seconds:6.2f} points/s  "
            f"{simulations / seconds:6.2f} simulations/s  (load average before: {load:.2f})"
        )
    (serial, serial_s), (parallel, parallel_s) = runs[1], runs[workers]
    print(f"speed-up   {serial_s / parallel_s:8.2f}×  (linear: {workers}×)")
    print(f"identical  {'yes' if serial.rows == parallel.rows else 'NO'}")


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
