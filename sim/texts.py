"""Prompt texts shared by the simulator (which only counts their tokens) and the live runner."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.protocol import Message, Span

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

AGGREGATE_HEADER = (
    "Below are answers to the user's question from several assistants; some may be "
    "unfinished or wrong. Combine them into one accurate, well-written answer of your own."
    "\n\nAnswers:"
)


def answer_label(index: int) -> str:
    return f"\n\n[{index}] "


CHARS_PER_TOKEN_GUESS = 4.0  # English BPE, when neither a profile nor a tokenizer says

# Digits, punctuation and line breaks: a BPE tokenizer gives most of them a token of their own
# (SmolLM2's makes six of "\n\n[1] ", five before a word), where words take several characters
# per token.
_SYMBOL = re.compile(r"[^\w \t]|[\d_]")


def estimate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN_GUESS) -> int:
    """Token count of English text, from the characters per token a profile measured on
    :func:`ratio_text` (:data:`RATIO_TEXT_CHARS` of the sample text). Symbols count one token
    each and the rest — words and the spaces between them — the characters per token that
    leave the sample text at its measured count: an answer label or a number costs what the
    tokenizer charges for it, not a fifth of it, and plain prose is sized as before. The
    simulator sizes fixed texts with it; live runs count real tokens, except on a hosted
    endpoint without a tokenizer route, where they size texts the same way."""
    if not text:
        return 0
    symbols = len(_SYMBOL.findall(text))
    word_tokens = RATIO_TEXT_CHARS / chars_per_token - _RATIO_SYMBOLS
    if word_tokens <= 0:  # a tokenizer finer than one token per symbol: the plain ratio
        return max(1, round(len(text) / chars_per_token))
    chars_per_word_token = (RATIO_TEXT_CHARS - _RATIO_SYMBOLS) / word_tokens
    return max(1, round((len(text) - symbols) / chars_per_word_token + symbols))


SAMPLE_TEXT = (
    "The harbour town woke before dawn. Fishing boats slipped out past the breakwater while "
    "bakers lit their ovens and the first trams rattled along the quay. By mid-morning the "
    "market was full: crates of mackerel and crab, baskets of lemons, coils of rope, brass "
    "lamps and second-hand books. Merchants argued about the price of salt, children chased "
    "gulls, and an old clockmaker repaired a tower clock that had run slow for a century. "
    "In the afternoon a storm gathered over the headland; the harbour master raised the "
    "warning flags, the ferries waited at their moorings and the town listened to the rain. "
    "When the weather cleared the sunset turned the water copper and the boats came home "
    "heavy with their catch, their crews tired, hungry and telling stories of the sea. "
)  # plain English: prompts made of it tokenize like ordinary text


def sample_text(characters: int) -> str:
    """``characters`` characters of plain English (the sample text, repeated)."""
    repeats = characters // len(SAMPLE_TEXT) + 1
    return (SAMPLE_TEXT * repeats)[:characters]


RATIO_TEXT_CHARS = 4000  # the text a profile's chars_per_token is measured on: ratio_text()


def ratio_text() -> str:
    """The plain English on which a tokenizer's characters per token are measured."""
    return sample_text(RATIO_TEXT_CHARS)


_RATIO_SYMBOLS = len(_SYMBOL.findall(ratio_text()))


# Chat-template framing per message (ChatML: "<|im_start|>role\n" ... "<|im_end|>\n").
MESSAGE_OPEN_TOKENS = 3
MESSAGE_CLOSE_TOKENS = 2


def template_runs(
    messages: Sequence[Message],
    continue_final: bool,
    span_runs: Callable[[Span], list[tuple[Hashable, int, int]]],
) -> list[tuple[Hashable, int, int]]:
    """A chat prompt as runs of tokens ``(stream, start, end)``: each message's opening, its
    parts (``span_runs`` gives each part's runs), its closing — except a final message the
    engine continues — then the answer's opening unless one is continued. The one template
    accounting: the simulator prices prompts with it, the live client charges rate limits."""
    runs: list[tuple[Hashable, int, int]] = []
    for index, message in enumerate(messages):
        runs.append((("open", message.role), 0, MESSAGE_OPEN_TOKENS))
        for part in message.parts:
            runs += span_runs(part)
        if not (continue_final and index == len(messages) - 1):
            runs.append((("close",), 0, MESSAGE_CLOSE_TOKENS))
    if not continue_final:
        runs.append((("open", "assistant"), 0, MESSAGE_OPEN_TOKENS))
    return runs
