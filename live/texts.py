"""From the protocol's token spans to chat messages, and prompts of exact token lengths."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable

import httpx

from sim.protocol import Message, Span
from sim.texts import CHARS_PER_TOKEN_GUESS, SAMPLE_TEXT, estimate_tokens, ratio_text

QUESTION = "\n\nQuestion: describe this town, its people and its work in detail."


class AnswerText:
    """An agent's answer as it streams in: text, and where each token count ends in it.

    A streamed piece may carry several tokens; a count inside a piece maps to the piece's
    end, so a unit boundary can include a token or two more than the schedule says.
    """

    def __init__(self) -> None:
        self.text = ""
        self._counts = [0]
        self._ends = [0]

    def extend(self, text: str, count: int) -> None:
        self.text += text
        if count > self._counts[-1]:
            self._counts.append(count)
            self._ends.append(len(self.text))
        else:
            self._ends[-1] = len(self.text)

    def slice(self, start: int, end: int) -> str:
        return self.text[self._offset(start) : self._offset(end)]

    def _offset(self, count: int) -> int:
        if count <= 0:
            return 0
        index = bisect.bisect_left(self._counts, count)
        return self._ends[min(index, len(self._ends) - 1)]


def render_messages(
    messages: tuple[Message, ...], text_of: Callable[[Span], str]
) -> list[dict[str, str]]:
    return [
        {"role": message.role, "content": "".join(text_of(part) for part in message.parts)}
        for message in messages
    ]


def render_completion_prompt(
    messages: tuple[Message, ...], text_of: Callable[[Span], str], continue_final: bool
) -> str:
    """A plain-text prompt for completion endpoints: messages as paragraphs."""
    blocks = ["".join(text_of(part) for part in message.parts) for message in messages]
    return "\n\n".join(blocks) + ("" if continue_final else "\n\n")


class PromptMaker:
    """User prompts of an exact token length, made with the server's own tokenizer.

    Each request's prompt starts differently, so requests share no prefix by accident (the
    simulator assumes the same). Without a tokenizer route (``base_url`` None: a hosted
    endpoint) texts are sized by ``chars_per_token``, the model's profile's, as the simulator
    sizes them.
    """

    def __init__(
        self,
        base_url: str | None,
        model: str | None,
        seed: int,
        chars_per_token: float = CHARS_PER_TOKEN_GUESS,
    ) -> None:
        self.base_url = base_url.removesuffix("/").removesuffix("/v1") if base_url else None
        self.model = model
        self.chars_per_token = chars_per_token
        self.rng = random.Random(seed)
        self._tokens: list[int] | None = None
        self._source = self._long_text()

    def _long_text(self) -> str:
        sentences = [s.strip() + "." for s in SAMPLE_TEXT.split(".") if s.strip()]
        shuffled: list[str] = []
        for _ in range(40):
            self.rng.shuffle(sentences)
            shuffled += sentences
        return " ".join(shuffled)

    async def make(self, client: httpx.AsyncClient, index: int, tokens: int) -> tuple[str, int]:
        """A prompt of about ``tokens`` tokens, and its exact length by the server's count."""
        start = self.rng.randrange(0, len(self._source) // 2)
        text = f"[{index}] " + self._source[start:]
        if self.base_url is None:
            characters = round(tokens * self.chars_per_token) - len(QUESTION)
            return text[: max(1, characters)] + QUESTION, tokens
        ids = await self._tokenize(client, text)
        question = await self._tokenize(client, QUESTION)
        if tokens > len(question) + 4:
            ids = ids[: tokens - len(question)] + question
        else:
            ids = ids[:tokens]
        detokenized = await client.post(
            f"{self.base_url}/detokenize", json={"model": self.model, "tokens": ids}
        )
        detokenized.raise_for_status()
        prompt = str(detokenized.json()["prompt"])
        return prompt, len(await self._tokenize(client, prompt))

    async def count(self, client: httpx.AsyncClient, text: str) -> int:
        """Tokens in a given prompt (a characters-per-token guess without /tokenize)."""
        if self.base_url is None:
            return estimate_tokens(text, self.chars_per_token)
        return len(await self._tokenize(client, text))

    async def _tokenize(self, client: httpx.AsyncClient, text: str) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        response = await client.post(f"{self.base_url}/tokenize", json=body)
        response.raise_for_status()
        return list(response.json()["tokens"])


async def measure_chars_per_token(base_url: str, model: str | None) -> float:
    """Characters per token of the server's tokenizer on plain English: profiles carry it so
    the simulator can size the texts it never tokenizes."""
    text = ratio_text()
    async with httpx.AsyncClient(timeout=30) as client:
        return len(text) / await PromptMaker(base_url, model, seed=0).count(client, text)
