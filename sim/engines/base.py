"""What the simulator hands an engine, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sim.kv_cache import TokenRun, block_hashes

if TYPE_CHECKING:
    from sim.multistream import StreamSchedule


@dataclass
class CallResult:
    prompt_tokens: int
    cached_tokens: int
    tokens: int  # generated
    queued_s: float  # arrival at the engine -> first scheduled
    status: str = "ok"  # ok | cancelled | why the call failed


@dataclass(eq=False)
class EngineCall:
    """One generation request as an engine sees it.

    ``progress`` receives the server times of tokens produced since its last call; the engine
    calls it when the call's token count reaches a ``watch`` point, and ``done`` at the end.
    """

    key: Hashable
    prompt: list[TokenRun]  # the prompt's tokens as stream runs (for counting and hashing)
    output: Hashable  # the stream the generated tokens extend
    output_start: int
    tokens: int
    watch: tuple[int, ...]
    progress: Callable[[np.ndarray], None]
    done: Callable[[CallResult, np.ndarray], None]
    # a multi-stream sequence (mode: multistream): ``tokens`` counts steps, each step adding
    # as many tokens as the schedule has streams; None: one token per step
    streams: StreamSchedule | None = None
    priority: int = 0  # lower is served first by an engine that schedules by priority
    prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_tokens = sum(end - start for _, start, end in self.prompt)

    def prompt_hashes(self, block_size: int) -> list[int]:
        return block_hashes(self.prompt, block_size)

    def kv_hashes(self, block_size: int, generated: int) -> list[int]:
        """Full blocks of prompt + ``generated`` output tokens: what a finished call leaves
        cached."""
        run = (self.output, self.output_start, self.output_start + generated)
        return block_hashes([*self.prompt, run], block_size)


class Engine(Protocol):
    def submit(self, call: EngineCall) -> None: ...

    def cancel(self, key: Hashable) -> None: ...

    def load(self) -> int:
        """Calls queued or running: how a router picks the least busy replica."""
        ...
