"""What the simulator hands an engine, and what it gets back."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sim.kv_cache import BlockChain, TokenRun

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

    # block size -> hashes of the prompt and the output so far (engines ask for them at every
    # admission, publication and release: hashing the prompt once saves most of that work)
    _chains: dict[int, BlockChain] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.prompt_tokens = sum(end - start for _, start, end in self.prompt)

    def prompt_hashes(self, block_size: int) -> list[int]:
        return self.kv_hashes(block_size, 0)

    def kv_hashes(self, block_size: int, generated: int) -> list[int]:
        """Full blocks of prompt + ``generated`` output tokens: what a finished call leaves
        cached."""
        chain = self._chains.get(block_size)
        if chain is None:
            chain = self._chains[block_size] = BlockChain(block_size)
            chain.extend(self.prompt)
        hashed = chain.tokens - self.prompt_tokens  # output tokens in the chain already
        if generated > hashed:
            start = self.output_start
            chain.extend([(self.output, start + hashed, start + generated)])
        return chain.hashes[: (self.prompt_tokens + generated) // block_size]


class Engine(Protocol):
    def submit(self, call: EngineCall) -> None: ...

    def cancel(self, key: Hashable) -> None: ...

    def load(self) -> int:
        """Calls queued or running: how a router picks the least busy replica."""
        ...
