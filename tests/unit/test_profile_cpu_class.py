"""A CPU engine's profile follows the processor: the variant of this machine's processor
(its vendor family, else its class)."""

from __future__ import annotations

import json

import pytest

from sim import profile as profiles
from sim.profile import cpu_class, load_profile


def test_cpu_class_reads_avx512_from_the_flags():
    assert cpu_class({"fpu", "avx", "avx2", "avx512f", "avx512bw"}) == "avx512"
    assert cpu_class({"fpu", "avx", "avx2", "fma"}) == "avx2"
    assert cpu_class(set()) == "avx2"


ZEN4 = {"vendor_id": "AuthenticAMD", "cpu family": "25", "flags": "fpu avx2 avx512f"}
ZEN5 = {**ZEN4, "cpu family": "26"}
AVX2 = {**ZEN4, "flags": "fpu avx2"}  # an AMD family 25 without AVX-512: Zen 3
INTEL = {"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "fpu avx2 avx512f"}


def test_cpu_keys_go_from_the_vendor_family_to_the_class(monkeypatch):
    for info, keys in (
        (ZEN4, ["avx512-amd-family25", "avx512"]),
        (AVX2, ["avx2-amd-family25", "avx2"]),
        (INTEL, ["avx512-intel-family6", "avx512"]),
        ({"flags": "fpu avx2"}, ["avx2"]),  # no vendor read: the class alone
    ):
        monkeypatch.setattr(profiles, "_cpuinfo", lambda info=info: info)
        assert profiles.cpu_keys() == keys


@pytest.mark.parametrize(
    ("machine", "variant"),
    [
        (ZEN5, "vllm-cpu-smollm2-135m"),
        (ZEN4, "vllm-cpu-smollm2-135m-zen4"),
        (AVX2, "vllm-cpu-smollm2-135m-avx2"),
        (INTEL, "vllm-cpu-smollm2-135m"),  # no Intel variant: the AVX-512 class's
    ],
)
def test_a_shipped_name_answers_with_the_variant_of_this_machines_processor(
    monkeypatch, machine, variant
):
    monkeypatch.setattr(profiles, "_cpuinfo", lambda: machine)
    assert load_profile("vllm-cpu-smollm2-135m").name == variant
    assert load_profile("vllm-cpu-smollm2-135m", exact=True).name == "vllm-cpu-smollm2-135m"


def test_a_path_is_that_file_whatever_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "_cpuinfo", lambda: AVX2)
    data = json.loads((profiles.SHIPPED_DIR / "vllm-cpu-smollm2-135m.json").read_text())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    assert load_profile(str(path)).name == "vllm-cpu-smollm2-135m"


def test_every_variant_of_the_shipped_cpu_profile_was_measured_on_such_a_processor():
    """Each key resolves to a shipped profile whose provenance names that class (and family)."""
    shipped = json.loads((profiles.SHIPPED_DIR / "vllm-cpu-smollm2-135m.json").read_text())
    variants = {"avx512": shipped["name"], **shipped["cpu_variants"]}
    labels = {"avx2": "AVX2 only", "avx512": "AVX-512", "amd-family25": "AMD EPYC family 25"}
    for key, name in variants.items():
        hardware = json.loads((profiles.SHIPPED_DIR / f"{name}.json").read_text())
        for part, label in labels.items():
            if part in key:
                assert label in hardware["provenance"]["hardware"], (key, name)


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
