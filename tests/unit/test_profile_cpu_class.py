"""A CPU engine's profile follows the processor: the variant of this machine's CPU class."""

from __future__ import annotations

import json

import pytest

from sim import profile as profiles
from sim.profile import cpu_class, load_profile


def test_cpu_class_reads_avx512_from_the_flags():
    assert cpu_class({"fpu", "avx", "avx2", "avx512f", "avx512bw"}) == "avx512"
    assert cpu_class({"fpu", "avx", "avx2", "fma"}) == "avx2"
    assert cpu_class(set()) == "avx2"


@pytest.mark.parametrize("machine", ["avx2", "avx512"])
def test_a_shipped_name_answers_with_the_variant_of_this_machines_class(monkeypatch, machine):
    monkeypatch.setattr(profiles, "cpu_class", lambda: machine)
    assert load_profile("vllm-cpu-smollm2-135m").name == (
        "vllm-cpu-smollm2-135m-avx2" if machine == "avx2" else "vllm-cpu-smollm2-135m"
    )
    assert load_profile("vllm-cpu-smollm2-135m", exact=True).name == "vllm-cpu-smollm2-135m"


def test_a_path_is_that_file_whatever_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "cpu_class", lambda: "avx2")
    data = json.loads((profiles.SHIPPED_DIR / "vllm-cpu-smollm2-135m.json").read_text())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    assert load_profile(str(path)).name == "vllm-cpu-smollm2-135m"


def test_the_shipped_cpu_profile_names_a_variant_for_every_class():
    """Both classes resolve to a shipped profile measured on such a processor."""
    shipped = json.loads((profiles.SHIPPED_DIR / "vllm-cpu-smollm2-135m.json").read_text())
    for machine, label in (("avx2", "AVX2 only"), ("avx512", "AVX-512")):
        name = shipped["cpu_variants"].get(machine, shipped["name"])
        resolved = json.loads((profiles.SHIPPED_DIR / f"{name}.json").read_text())
        assert label in resolved["provenance"]["hardware"]


def test_a_local_profile_names_the_processor_it_was_measured_on(monkeypatch):
    """Two chips sold as one name ("AMD EPYC") differ by tens of percent: the family and model
    numbers go in a local profile's provenance beside the class."""
    cpuinfo = {
        "model name": "AMD EPYC",
        "cpu family": "26",
        "model": "2",
        "flags": "fpu avx2 avx512f",
    }
    monkeypatch.setattr(profiles, "_cpuinfo", lambda: cpuinfo)
    assert profiles.cpu_description() == "AMD EPYC, family 26 model 2, AVX-512"
    monkeypatch.setattr(profiles, "_cpuinfo", lambda: {**cpuinfo, "flags": "fpu avx2"})
    assert profiles.cpu_description() == "AMD EPYC, family 26 model 2, AVX2 only"
