"""What-if sweeps: many simulations of one scenario with fields varied along axes.

A sweep file names a base scenario, axes (dotted scenario paths and their values or
ranges), a sampling method (grid, random, Latin hypercube) and replications per point; the
runner fans replications out to a local process pool or Ray and appends one row per point
to a CSV file keyed by the point's configuration hash, so a killed sweep resumes.
"""

from sim.sweep.backends import Backend, LocalBackend, RayBackend, make_backend
from sim.sweep.points import Sweep, SweepPoint, load_sweep, resolve_sweep
from sim.sweep.runner import SweepResult, run_sweep, sweep
from sim.sweep.spec import SweepSpec, parse_sweep, read_sweep

__all__ = [
    "Backend",
    "LocalBackend",
    "RayBackend",
    "Sweep",
    "SweepPoint",
    "SweepResult",
    "SweepSpec",
    "load_sweep",
    "make_backend",
    "parse_sweep",
    "read_sweep",
    "resolve_sweep",
    "run_sweep",
    "sweep",
]
