"""Where replications run: this process, a local process pool, or a Ray cluster.

Every backend maps one top-level function over a list of tasks and yields ``(index,
result)`` pairs as tasks finish, in any order; callers key results by index, so the order
never shows in what they store. A backend is a context manager and keeps its workers for
its whole life, so a caller that maps many small batches (``plan``) starts them once.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar

from sim.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")
BackendName = Literal["local", "ray"]


class Backend(Protocol):
    workers: int

    def imap_unordered(
        self, function: Callable[[T], R], tasks: Sequence[T]
    ) -> Iterator[tuple[int, R]]: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


def default_workers() -> int:
    return os.cpu_count() or 1


def check_workers(workers: int | None) -> None:
    """A worker count given must be at least 1 (None: the default)."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")


def make_backend(
    name: BackendName, workers: int | None = None, address: str | None = None
) -> Backend:
    check_workers(workers)
    if name == "ray":
        return RayBackend(workers, address)
    if address is not None:
        raise ConfigError("--address only applies to --backend ray")
    return LocalBackend(workers or default_workers())


class LocalBackend:
    """A process pool; with one worker, this process itself (no pickling, no start-up)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        if self.workers > 1:
            # spawn, not fork: the caller may run threads (a progress bar) that fork would copy
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self

    def __exit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def imap_unordered(
        self, function: Callable[[T], R], tasks: Sequence[T]
    ) -> Iterator[tuple[int, R]]:
        if self._pool is None:
            for index, task in enumerate(tasks):
                yield index, function(task)
            return
        pending: dict[Future[R], int] = {
            self._pool.submit(function, task): index for index, task in enumerate(tasks)
        }
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        except BrokenProcessPool:
            raise RuntimeError(
                "a sweep worker process died; in a script, call sweep/plan under "
                "`if __name__ == '__main__':` (worker processes import the script)"
            ) from None
        finally:
            for future in pending:
                future.cancel()


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'stairwise[ray]'") from None
    return ray


class RayBackend:
    """Ray tasks, one per replication: on a cluster (``address``) or a local Ray started here.

    A Ray already initialised by the caller (a test, a notebook) is used as it is and left
    running; one started here is shut down on exit.
    """

    def __init__(self, workers: int | None, address: str | None) -> None:
        self._ray = require_ray()
        self._address = address
        self._started = False
        self.workers = workers or default_workers()

    def __enter__(self) -> Self:
        ray = self._ray
        if not ray.is_initialized():
            self._init(ray)
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", self.workers))
        return self

    def _init(self, ray: Any) -> None:
        if self._address is None:
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            return
        try:
            ray.init(address=self._address, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError(f"--address {self._address}: cannot reach Ray ({exc})") from None

    def __exit__(self, *_: object) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def imap_unordered(
        self, function: Callable[[T], R], tasks: Sequence[T]
    ) -> Iterator[tuple[int, R]]:
        ray = self._ray
        remote = ray.remote(num_cpus=1)(function)
        pending = {remote.remote(task): index for index, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref)
