"""A block-hash prefix cache with a finite pool of KV blocks, as vLLM keeps it.

A block's identity is the chain of the token streams it holds (hash of the previous block
and its own (stream, start, end) pieces), so two prompts share cached blocks exactly as far
as they share tokens. Only full blocks are cached; idle cached blocks are evicted LRU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable

TokenRun = tuple[Hashable, int, int]  # (stream, start, end)


def block_hashes(runs: Iterable[TokenRun], block_size: int) -> list[int]:
    """Hashes of the full blocks covering ``runs`` (a partial last block has none)."""
    chain = BlockChain(block_size)
    chain.extend(runs)
    return chain.hashes


class BlockChain:
    """The block hashes of a token sequence that grows at its end.

    Hashing is incremental: ``extend`` continues from the partial last block, so hashing a
    prompt once and then its output as it grows gives the same hashes as hashing the whole
    sequence each time (adjacent tokens of one stream merge into one piece either way) —
    without re-hashing the prompt at every admission, publication and release.
    """

    __slots__ = ("block_size", "filled", "hashes", "pieces", "previous", "tokens")

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.hashes: list[int] = []  # one per full block
        self.tokens = 0  # tokens hashed or pending in the partial last block
        self.previous = 0  # the last full block's hash
        self.pieces: list[TokenRun] = []  # the partial last block's pieces
        self.filled = 0  # tokens in the partial last block

    def extend(self, runs: Iterable[TokenRun]) -> None:
        block_size = self.block_size
        pieces, filled, previous, hashes = self.pieces, self.filled, self.previous, self.hashes
        tokens = self.tokens
        for stream, start, end in runs:
            if end <= start:
                continue
            tokens += end - start
            position = start
            while position < end:
                if not filled and end - position >= block_size:  # whole blocks of this run
                    whole_end = end - (end - position) % block_size
                    for first in range(position, whole_end, block_size):
                        previous = hash((previous, ((stream, first, first + block_size),)))
                        hashes.append(previous)
                    position = whole_end
                    continue
                stop = position + block_size - filled  # where this block fills
                stop = end if end < stop else stop
                last = pieces[-1] if pieces else None
                if last is not None and last[2] == position and last[0] == stream:
                    pieces[-1] = (stream, last[1], stop)  # the same stream's next tokens: one piece
                else:
                    pieces.append((stream, position, stop))
                filled += stop - position
                position = stop
                if filled == block_size:
                    previous = hash((previous, tuple(pieces)))
                    hashes.append(previous)
                    pieces, filled = [], 0
        self.pieces, self.filled, self.previous, self.tokens = pieces, filled, previous, tokens


class KvCache:
    """Blocks held by running sequences plus idle cached blocks, within ``capacity_blocks``."""

    def __init__(self, capacity_blocks: int, caching: bool = True) -> None:
        self.capacity = capacity_blocks
        self.caching = caching
        self.held = 0  # blocks held by running sequences (a shared block counts once)
        self._shared: dict[int, int] = {}  # hash -> sequences holding it
        self._idle: OrderedDict[int, None] = OrderedDict()  # evictable, oldest first

    def free(self) -> int:
        """Blocks a sequence could get now, evicting idle cached ones if needed."""
        return self.capacity - self.held

    def cached_prefix(self, hashes: list[int]) -> int:
        if not self.caching:
            return 0
        count = 0
        for h in hashes:
            if h not in self._shared and h not in self._idle:
                break
            count += 1
        return count

    def acquire(self, hashes: list[int], private: int) -> None:
        """Hold the cached blocks ``hashes`` and ``private`` new blocks (caller checked free())."""
        for h in hashes:
            if h in self._shared:
                self._shared[h] += 1
            else:
                del self._idle[h]
                self._shared[h] = 1
                self.held += 1
        self._take(private)

    def publish(self, hashes: list[int]) -> int:
        """Make a running sequence's freshly computed blocks (its own, already held) findable
        by others, as vLLM does once they are computed; stops at the first block another
        sequence already cached. Returns how many were published."""
        if not self.caching:
            return 0
        published = 0
        for h in hashes:
            if h in self._shared or h in self._idle:
                break
            self._shared[h] = 1
            published += 1
        return published

    def grow(self, blocks: int) -> None:
        self._take(blocks)

    def _take(self, blocks: int) -> None:
        """Hold ``blocks`` more, evicting the least recently used idle blocks they need."""
        idle = self._idle
        for _ in range(min(blocks - (self.capacity - self.held - len(idle)), len(idle))):
            idle.popitem(last=False)
        self.held += blocks

    def release(self, shared: list[int], private: int, computed: list[int]) -> None:
        """Let go of a sequence's blocks; its ``computed`` full blocks become cacheable."""
        self.held -= private
        for h in shared:
            self._drop(h)
        if not self.caching:
            return
        for h in computed:
            if h in self._shared:
                continue  # another running sequence holds the same block
            self._idle[h] = None
            self._idle.move_to_end(h)
        while self._idle and len(self._idle) > self.capacity - self.held:
            self._idle.popitem(last=False)

    def _drop(self, h: int) -> None:
        self._shared[h] -= 1
        if self._shared[h] == 0:
            del self._shared[h]
            self.held -= 1
            if self.caching:
                self._idle[h] = None
                self._idle.move_to_end(h)
