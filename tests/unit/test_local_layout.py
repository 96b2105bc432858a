"""How the embedded server's cores are laid out, and how a profile records the layout it was
measured on (so the server starts the way its profile describes)."""

from __future__ import annotations

import json

import pytest

from calibration.calibrate import CalibrationOptions, start_profile
from calibration.readers import read_tables
from live.local_server import ServerSettings, core_layout, settings_for
from sim import Simulator, scenario_from_dict
from sim.errors import ConfigError
from tests.helpers import vllm_profile, write_profile


def settings(threads: int, isolate: bool) -> ServerSettings:
    return ServerSettings(threads=threads, isolate=isolate, dtype="float32")


@pytest.mark.parametrize(
    "cores,threads,isolate,engine,clients",
    [
        ([0, 1], 2, False, [0, 1], {0, 1}),  # sharing: the model on both, the rest anywhere
        ([0, 1], 1, True, [0], {1}),
        ([0, 1], 2, True, [0], {1}),  # isolated: at most all cores but one for the model
        ([0, 1, 2, 3], 2, True, [0, 1], {2, 3}),
        ([2, 5, 7], 8, True, [2, 5], {7}),  # the cores this process may use, whichever
    ],
)
def test_core_layout(cores, threads, isolate, engine, clients):
    assert core_layout(settings(threads, isolate), cores) == (engine, clients)


def test_isolating_needs_two_cores():
    with pytest.raises(ConfigError, match="at least 2 cores"):
        core_layout(settings(1, True), [0])


def test_options_not_given_keep_the_defaults():
    given = settings_for(threads=None, isolate=True, port=9000)
    default = ServerSettings()
    assert (given.isolate, given.port, given.threads) == (True, 9000, default.threads)


def test_a_profile_records_how_the_local_server_ran_when_it_was_measured(tmp_path):
    scenario = scenario_from_dict(
        {
            "servers": {
                "gpu": {"kind": "vllm", "profile": write_profile(tmp_path, vllm_profile())}
            },
            "topology": {"kind": "graph", "agents": {"solo": {"steps": 1}}},
            "workload": {"requests": 3},
        }
    )
    trace = tmp_path / "run.jsonl"
    Simulator(scenario, trace_path=trace).run()
    lines = trace.read_text().splitlines()
    layout = {"threads": 1, "isolate": True, "dtype": "float32"}
    header = json.loads(lines[0]) | {"local_server": layout}  # as a live run on it writes
    trace.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    (table,) = read_tables([trace], "stairwise", {})
    options = CalibrationOptions(name="local", model="m", hardware="h")
    profile = start_profile([table], options)
    assert profile.provenance.settings["local_server"] == layout
