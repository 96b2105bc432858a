"""Loading traces for a report: one-line errors naming file, line and field; the reference."""

from __future__ import annotations

import json

import pytest

from reports.runs import Run, load_runs, load_trace, pick_reference
from sim.errors import ConfigError
from sim.trace import make_header


def write_trace(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def header(source="sim"):
    return make_header(source, {"name": "n"})


def test_a_record_missing_a_field_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps(header())
        + "\n\n"  # a blank line still counts as a line
        + json.dumps({"type": "request", "req": 0, "t": 0.0, "prompt_tokens": 5})
        + "\n"
        + json.dumps({"type": "call", "req": 0, "call": "a#1", "round": 1, "t": 0, "final": True})
        + "\n"
    )
    with pytest.raises(ConfigError, match=rf"^{path}:4: call record has no field 'agent'$"):
        load_trace(path)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("", "empty trace"),
        ('{"type": "request"}\n', "no header"),
        (json.dumps(make_header("sim", {})) + "\n{oops\n", ":2: not a JSON trace record"),
    ],
)
def test_unreadable_traces_are_config_errors(tmp_path, text, needle):
    path = tmp_path / "t.jsonl"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_trace(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_trace(tmp_path / "missing.jsonl")


def test_labels_name_file_and_source_and_stay_unique(tmp_path):
    first = write_trace(tmp_path / "run.jsonl", [header("sim")])
    (tmp_path / "other").mkdir()
    second = write_trace(tmp_path / "other" / "run.jsonl", [header("live")])
    labels = [run.label for run in load_runs([first, second, first, first])]
    assert labels == ["run (sim)", "run (live)", "run (sim) #2", "run (sim) #3"]


def test_the_reference_is_the_first_live_run_unless_chosen():
    runs = [Run("a", [header("sim")]), Run("b", [header("live")]), Run("c", [header("live")])]
    assert pick_reference(runs, None) == 1
    assert pick_reference(runs[:1], None) == 0
    assert pick_reference(runs, 3) == 2
    with pytest.raises(ConfigError, match=r"--reference 4: there are 3 traces \(use 1..3\)"):
        pick_reference(runs, 4)
    with pytest.raises(ConfigError, match="--reference 0"):
        pick_reference(runs, 0)
