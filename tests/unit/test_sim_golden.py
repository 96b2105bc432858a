"""The simulator's results are pinned: speed work must not change a single number.

``tests/data/sim_golden.json`` holds each scenario of ``tests/sim_golden.py`` as the code
computed it before it was optimised (its summary with intervals and every trace record);
today's code must give the same — integers and strings exactly, floats to 1e-12.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from tests.sim_golden import GOLDEN, pinned_result, scenarios

TOLERANCE = 1e-12


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where two JSON values differ (floats within TOLERANCE, relative or absolute, agree)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{path}: keys {sorted(expected)} != {sorted(actual)}"]
        return [
            d for key in expected for d in differences(expected[key], actual[key], f"{path}.{key}")
        ]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(expected)} items != {len(actual)}"]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{path}[{i}]")
        ]
    if isinstance(expected, float) and isinstance(actual, float):
        close = math.isclose(expected, actual, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
        return [] if close else [f"{path}: {expected!r} != {actual!r}"]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{path}: {expected!r} != {actual!r}"]
    return []


def test_the_comparison_sees_a_change() -> None:
    pinned = {"summary": {"ttft_s": {"p50": 0.5, "count": 3}}, "records": [{"t": [1.0, 2.0]}]}
    assert differences(pinned, json.loads(json.dumps(pinned))) == []
    assert differences(pinned, {**pinned, "records": [{"t": [1.0, 2.0 + 1e-9]}]}) == [
        ".records[0].t[1]: 2.0 != 2.000000001"
    ]
    assert differences(pinned, {**pinned, "summary": {"ttft_s": {"p50": 0.5, "count": 4}}})


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_results_match_the_pinned_ones(name: str) -> None:
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == set(scenarios()), "tests/sim_golden.py and its JSON disagree"
    found = differences(golden[name], pinned_result(scenarios()[name]))
    assert not found, f"{len(found)} differences, first: {found[:5]}"
