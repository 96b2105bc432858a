"""Block hashes: whole blocks of one run hashed at once are the blocks hashed piece by piece."""

from __future__ import annotations

import random

from sim.kv_cache import BlockChain, TokenRun, block_hashes


def piece_by_piece(runs: list[TokenRun], block_size: int) -> list[int]:
    """The definition: a block's hash chains the previous one and its (stream, start, end)
    pieces, adjacent tokens of one stream merged into one piece."""
    hashes: list[int] = []
    pieces: list[TokenRun] = []
    previous = 0
    for stream, start, end in runs:
        for token in range(start, end):
            if pieces and pieces[-1][0] == stream and pieces[-1][2] == token:
                pieces[-1] = (stream, pieces[-1][1], token + 1)
            else:
                pieces.append((stream, token, token + 1))
            if sum(e - s for _, s, e in pieces) == block_size:
                previous = hash((previous, tuple(pieces)))
                hashes.append(previous)
                pieces = []
    return hashes


def test_hashes_match_the_definition_for_runs_of_every_length() -> None:
    chooser = random.Random(0)
    for _ in range(200):
        block_size = chooser.choice([1, 4, 16])
        runs: list[TokenRun] = []
        for _ in range(chooser.randint(0, 8)):
            stream = chooser.choice([("text", "a"), ("output", 0, "p1"), ("query", 0)])
            start = chooser.randint(0, 40)
            runs.append((stream, start, start + chooser.randint(0, 70)))
        expected = piece_by_piece(runs, block_size)
        assert block_hashes(runs, block_size) == expected
        chain = BlockChain(block_size)  # the same runs, hashed as they grow
        for run in runs:
            chain.extend([run])
        assert chain.hashes == expected
