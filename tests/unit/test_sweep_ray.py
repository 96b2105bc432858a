"""The Ray backend gives the same results as the local process pool for the same seeds."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.sweep import sweep
from sim.sweep.runner import RESULTS_FILE

pytestmark = pytest.mark.ray

SPEC = {
    "kind": "sweep",
    "name": "ray-vs-local",
    "scenario": str(Path("examples/staircase-moa.yaml").resolve()),
    "overrides": ["workload.requests=8"],
    "axes": {"topology.chunks.proposer.0": [4, 32], "workload.arrival.rate_per_s": [0.1, 0.4]},
    "replications": 2,
}


@pytest.fixture
def local_ray() -> Iterator[Any]:
    """Ray on 2 CPUs, its session files in a private temp dir; everything it wrote removed."""
    ray = pytest.importorskip("ray", reason="Ray is the `ray` extra: pip install -e '.[ray]'")
    token_dir = Path.home() / ".ray"
    had_token_dir = token_dir.exists()
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("pymp-*"))
    session = Path(tempfile.mkdtemp(prefix="ray-", dir=temp))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(session))
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(session, ignore_errors=True)
        if not had_token_dir:
            shutil.rmtree(token_dir, ignore_errors=True)
        for leftover in set(temp.glob("pymp-*")) - before:
            shutil.rmtree(leftover, ignore_errors=True)


def test_ray_and_the_local_pool_store_identical_rows(local_ray, tmp_path):
    on_ray = sweep(SPEC, backend="ray", out=tmp_path / "ray")
    assert local_ray.is_initialized()  # the caller's Ray was used and left running
    local = sweep(SPEC, backend="local", workers=2, out=tmp_path / "local")
    assert on_ray.computed == local.computed == 4
    assert on_ray.rows == local.rows
    ray_lines = (tmp_path / "ray" / RESULTS_FILE).read_text().splitlines()
    local_lines = (tmp_path / "local" / RESULTS_FILE).read_text().splitlines()
    assert sorted(ray_lines) == sorted(local_lines)
