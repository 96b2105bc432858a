"""A simulated run frees what it no longer needs by reference counting alone.

A run holds every request's calls, prompts and protocol state while the request lasts. If
they formed reference cycles, only the garbage collector could free them: a long run would
hold finished requests until a full collection, and each collection would walk them again.
``Simulator.run`` collects rarely because nothing should be left for it to find; this
checks that nothing is, on every pinned scenario kind (engines, topologies, templates).
"""

from __future__ import annotations

import gc
from collections import Counter

import pytest

from sim import Simulator, scenario_from_dict
from tests.sim_golden import scenarios


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_a_run_leaves_no_reference_cycles(name: str) -> None:
    simulator = Simulator(scenario_from_dict(scenarios()[name]))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage
    try:
        simulator.run()
        gc.collect()
        # the simulator's own objects only: another thread's garbage is not this run's
        cyclic = Counter(
            type(thing).__name__
            for thing in gc.garbage
            if type(thing).__module__.split(".")[0] in ("sim", "simpy")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not cyclic, f"objects freed only by the garbage collector: {cyclic.most_common(5)}"
