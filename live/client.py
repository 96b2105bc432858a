"""Streaming one generation from an OpenAI-compatible server, with timeouts and retries.

Token counts come from the server's usage (``continuous_usage_stats`` puts a running count on
every chunk), not from chunks: a chunk may carry several tokens.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import openai

from sim.driver import CallUsage
from sim.errors import ConfigError
from sim.scenario import LiveSettings, ServerBase, VllmServer

Clock = Callable[[], float]


@dataclass
class Piece:
    t: float  # when the client received it (run clock)
    text: str
    tokens: int  # completion tokens so far, this piece included


class CallFailed(Exception):
    """The call cannot produce (more) tokens; ``str`` is the reason recorded in the trace."""


RETRYABLE = (
    openai.APIConnectionError,
    openai.APITimeoutError,
)  # not HTTP errors: the server answered


def api_key(server: ServerBase) -> str:
    """The key from the environment variable the scenario names; never stored anywhere."""
    if server.api_key_env is None:
        return "none"
    key = os.environ.get(server.api_key_env)
    if not key:
        raise ConfigError(f"environment variable {server.api_key_env} (api_key_env) is not set")
    return key


class Endpoint:
    """One replica of a server: its base URL and an OpenAI client for it."""

    def __init__(
        self, name: str, server: ServerBase, url: str, settings: LiveSettings, clock: Clock
    ):
        self.name = name
        self.server = server
        self.settings = settings
        self.clock = clock
        self.base_url = url.rstrip("/")
        self.model = server.model or "default"
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key(server),
            max_retries=0,
            timeout=openai.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        )

    async def check(self) -> None:
        """Fail early, in one line, if the endpoint does not answer."""
        try:
            models = await self.client.models.list()
        except openai.APIError as exc:
            raise ConfigError(
                f"servers.{self.name}: cannot reach {self.base_url} ({_reason(exc)})"
            ) from None
        served = [m.id for m in models.data]
        if self.server.model is None and served:
            self.model = served[0]
        elif self.server.model not in served:
            raise ConfigError(
                f"servers.{self.name}: {self.base_url} does not serve model "
                f"{self.server.model!r} (it serves {', '.join(served) or 'nothing'})"
            )

    async def close(self) -> None:
        await self.client.close()

    async def stream(
        self,
        messages: list[dict[str, str]] | str,
        tokens: int,
        continue_final: bool,
        temperature: float,
        usage: CallUsage,
        on_piece: Callable[[Piece], None],
        tag: str = "",
        priority: int = 0,
        exact: bool = True,
    ) -> None:
        """Generate exactly ``tokens`` tokens (``exact=False``: at most, the model stopping
        when it wants), calling ``on_piece`` for each streamed piece.

        ``usage`` is kept current as the call goes, so a cancelled or failed call still
        reports what it received. ``tag`` names the call in a ``X-Stairwise-Call`` header
        (servers ignore it; a proxy or a test server can tell the calls apart by it).
        ``priority`` is sent to vLLM servers that schedule by priority only (others refuse or
        ignore the field).
        """
        for attempt in range(self.settings.retries + 1):
            usage.attempts = attempt + 1
            try:
                pieces = self._pieces(
                    messages, tokens, continue_final, temperature, tag, priority, exact
                )
                async for piece, latest in pieces:
                    usage.prompt_tokens = latest.prompt_tokens
                    usage.cached_tokens = latest.cached_tokens
                    usage.completion_tokens = latest.completion_tokens
                    if piece is not None:
                        on_piece(piece)
                return
            except RETRYABLE as exc:
                if usage.completion_tokens > 0 or attempt == self.settings.retries:
                    raise CallFailed(_reason(exc)) from None
            except openai.APIError as exc:
                raise CallFailed(_reason(exc)) from None
            await asyncio.sleep(self.settings.backoff_s * 2**attempt)

    async def _pieces(
        self,
        messages: list[dict[str, str]] | str,
        tokens: int,
        continue_final: bool,
        temperature: float,
        tag: str,
        priority: int,
        exact: bool = True,
    ) -> AsyncIterator[tuple[Piece | None, CallUsage]]:
        """Streamed pieces with the usage so far; finally (None, the call's usage)."""
        extra: dict[str, Any] = {"ignore_eos": True, "min_tokens": tokens} if exact else {}
        if isinstance(self.server, VllmServer) and self.server.scheduling_policy == "priority":
            extra["priority"] = priority
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            "extra_headers": {"X-Stairwise-Call": tag} if tag else None,
        }
        if isinstance(messages, str):
            stream: Any = await self.client.completions.create(
                prompt=messages, extra_body=extra, **common
            )
        else:
            extra |= {
                "continue_final_message": continue_final,
                "add_generation_prompt": not continue_final,
            }
            stream = await self.client.chat.completions.create(
                messages=messages,  # type: ignore[arg-type]
                extra_body=extra,
                **common,
            )
        usage = CallUsage()
        chunks_with_text = last_count = 0
        timeout = self.settings.first_token_timeout_s
        try:
            iterator = stream.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise CallFailed(f"stalled: no token for {timeout:g} s") from None
                now = self.clock()
                text = _chunk_text(chunk)
                if chunk.usage is not None:
                    usage = _usage(chunk.usage, usage)
                if text:
                    chunks_with_text += 1
                counted = usage.completion_tokens if chunk.usage is not None else chunks_with_text
                if counted > last_count or (text and counted > 0):
                    last_count = max(last_count, counted)
                    timeout = self.settings.stall_timeout_s
                    yield Piece(now, text, counted), usage
        finally:
            await stream.close()
        if usage.completion_tokens == 0:
            usage.completion_tokens = chunks_with_text
        if exact and usage.completion_tokens < tokens:
            raise CallFailed(f"stream ended after {usage.completion_tokens} of {tokens} tokens")
        yield None, usage


def _chunk_text(chunk: Any) -> str:
    if not chunk.choices:
        return ""
    choice = chunk.choices[0]
    delta = getattr(choice, "delta", None)
    if delta is not None:
        return delta.content or ""
    return getattr(choice, "text", "") or ""


def _usage(raw: Any, previous: CallUsage) -> CallUsage:
    details = getattr(raw, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return CallUsage(
        prompt_tokens=raw.prompt_tokens,
        cached_tokens=cached if cached is not None else previous.cached_tokens,
        completion_tokens=raw.completion_tokens or 0,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection failed: {cause or exc}".splitlines()[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
