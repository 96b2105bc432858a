"""Which tokens each agent's answer holds, as streams the KV cache can hash.

vLLM decodes greedily at temperature 0 (stairwise's default): two calls with the same prompt
on the same model produce the same tokens. Twin agents — debaters with one system prompt,
proposers re-prompted per chunk — then write word for word the same answer, and the prompts
that quote those answers share their KV blocks in the prefix cache. Live traces showed it: in
a staircase debate the second and third debaters' second calls found 384 of their 397 prompt
tokens cached, where a stream per agent had found 128.

So a call at temperature 0 produces the stream named by its server and its prompt's token
runs, from its first token; any other call produces its agent's own stream, at the call's
place in the answer, as before. An agent's answer is the segments its calls produced, each
call's from its start on (a later call replaces what a cut-short one would have written).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

from sim.kv_cache import TokenRun


class _Segment(NamedTuple):
    start: int  # in the agent's answer
    end: int
    stream: Hashable
    first: int  # the stream's position of the answer's token ``start``


class AnswerStreams:
    """The streams behind every agent's answer, per request."""

    def __init__(self) -> None:
        self._segments: dict[tuple[int, str], list[_Segment]] = {}

    def start_call(
        self,
        request: int,
        agent: str,
        out_start: int,
        tokens: int,
        greedy_on: str | None,
        prompt: Sequence[TokenRun],
    ) -> tuple[Hashable, int]:
        """The stream a call's tokens come from and its position of the first one.
        ``greedy_on``: the server of a call decoded greedily (None: sampled)."""
        if greedy_on is None:
            stream: Hashable = ("output", request, agent)
            first = out_start
        else:  # a hash names the stream: nesting whole prompts would grow with every round
            stream, first = ("greedy", hash((greedy_on, tuple(prompt)))), 0
        segments = self._segments.setdefault((request, agent), [])
        while segments and segments[-1].start >= out_start:
            segments.pop()
        if segments and segments[-1].end > out_start:
            segments[-1] = segments[-1]._replace(end=out_start)
        segments.append(_Segment(out_start, out_start + tokens, stream, first))
        return stream, first

    def runs(self, request: int, agent: str, start: int, end: int) -> list[TokenRun]:
        """The answer's tokens ``start:end`` as runs of the streams that produced them."""
        runs = []
        for segment_start, segment_end, stream, first in self._segments.get((request, agent), ()):
            low = segment_start if segment_start > start else start
            high = segment_end if segment_end < end else end
            if low < high:
                offset = first - segment_start
                runs.append((stream, low + offset, high + offset))
        return runs
