"""Streaming one generation from an OpenAI-compatible server, with timeouts and retries.

Two dialects. A ``vllm`` server gets vLLM's extras: exact lengths (``min_tokens``,
``ignore_eos``), a continued final message, a request priority, and a running token count on
every chunk (``continuous_usage_stats``), since a chunk may carry several tokens. An ``api``
server (a hosted endpoint) gets strict OpenAI-compatible requests only: the length as
``max_tokens`` (the model may stop earlier), usage in the last chunk, each chunk with text
counted as a token until then; its limits (``rpm``, ``tpm``, ``max_concurrency``) hold calls
back by the rule the simulator applies (``sim/ratelimit.py``), and a 429 is retried after the
server's ``Retry-After``.
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
from sim.ratelimit import CallTooLarge, RateLimiter
from sim.scenario import ApiServer, LiveSettings, ServerBase, VllmServer, continues_answers

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


class LimitGate:
    """An endpoint's limits (``sim/ratelimit.py``) on the event loop's clock: a call waits in
    :meth:`enter` until the rule lets it start, and :meth:`leave` frees its place."""

    def __init__(self, server: ServerBase) -> None:
        limits = (
            (server.rpm, server.tpm, server.max_concurrency)
            if isinstance(server, ApiServer)
            else (None, None, None)
        )
        self._limits = limits
        self._limiter: RateLimiter | None = None  # made on the loop's clock at the first call
        self._waiters: dict[object, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def limited(self) -> bool:
        return any(limit is not None for limit in self._limits)

    async def enter(self, key: object, tokens: int) -> float:
        """Wait until the call may start; the seconds it waited. ``tokens``: its prompt plus
        ``max_tokens``. Raises :class:`CallTooLarge` for a call no wait admits."""
        if not self.limited:
            return 0.0
        loop = asyncio.get_running_loop()
        if self._limiter is None:
            self._limiter = RateLimiter(*self._limits, now=loop.time())
        self._limiter.add(key, tokens)
        admitted = self._waiters[key] = loop.create_future()
        arrived = loop.time()
        self._admit()
        try:
            await admitted
        except asyncio.CancelledError:
            self.leave(key)
            raise
        return loop.time() - arrived

    def leave(self, key: object) -> None:
        """The call ended, failed or was cancelled (queued or running)."""
        if self._limiter is None:
            return
        self._limiter.release(key)
        self._waiters.pop(key, None)
        self._admit()

    def _admit(self) -> None:
        assert self._limiter is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for key in self._limiter.admit(now):
            admitted = self._waiters.pop(key, None)
            if admitted is not None and not admitted.done():
                admitted.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wake = self._limiter.next_time(now)
        if wake is not None:
            self._timer = loop.call_at(wake, self._admit)


class Endpoint:
    """One replica of a server: its base URL, an OpenAI client for it, and its limits."""

    def __init__(
        self, name: str, server: ServerBase, url: str, settings: LiveSettings, clock: Clock
    ):
        self.name = name
        self.server = server
        self.settings = settings
        self.clock = clock
        self.base_url = url.rstrip("/")
        self.model = server.model or "default"
        self.strict = isinstance(server, ApiServer)  # strict OpenAI-compatible requests only
        self.gate = LimitGate(server)
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
        prompt_tokens: int = 0,
        exact: bool = True,
    ) -> None:
        """Generate ``tokens`` tokens (exactly on vLLM; ``exact=False`` or a strict ``api``
        endpoint: at most, the model stopping when it wants), calling ``on_piece`` for each
        streamed piece.

        ``usage`` is kept current as the call goes, so a cancelled or failed call still
        reports what it received. ``tag`` names the call in a ``X-Stairwise-Call`` header
        (servers ignore it; a proxy or a test server can tell the calls apart by it).
        ``priority`` is sent to vLLM servers that schedule by priority only (others refuse or
        ignore the field). ``prompt_tokens`` (an estimate) plus ``tokens`` is what the call
        takes against a ``tpm`` limit. Each attempt waits for the endpoint's limits; a 429
        is retried (within ``retries``) after the server's ``Retry-After``.
        """
        for attempt in range(self.settings.retries + 1):
            usage.attempts = attempt + 1
            pause = self.settings.backoff_s * 2**attempt
            key = object()
            try:
                waited = await self.gate.enter(key, prompt_tokens + tokens)
                if self.gate.limited:
                    usage.queued_s = (usage.queued_s or 0.0) + waited
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
            except CallTooLarge as refused:
                raise CallFailed(str(refused)) from None
            except openai.RateLimitError as exc:
                if usage.completion_tokens > 0 or attempt == self.settings.retries:
                    raise CallFailed(_reason(exc)) from None
                pause = _retry_after(exc, pause)
            except RETRYABLE as exc:
                if usage.completion_tokens > 0 or attempt == self.settings.retries:
                    raise CallFailed(_reason(exc)) from None
            except openai.APIError as exc:
                raise CallFailed(_reason(exc)) from None
            finally:
                self.gate.leave(key)
            await asyncio.sleep(pause)

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
        extra: dict[str, Any] = (
            {"ignore_eos": True, "min_tokens": tokens} if exact and not self.strict else {}
        )
        if isinstance(self.server, VllmServer) and self.server.scheduling_policy == "priority":
            extra["priority"] = priority
        stream_options = {"include_usage": True}
        if not self.strict:
            stream_options["continuous_usage_stats"] = True
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": stream_options,
            "extra_headers": {"X-Stairwise-Call": tag} if tag else None,
        }
        if isinstance(messages, str):
            stream: Any = await self.client.completions.create(
                prompt=messages, extra_body=extra or None, **common
            )
        else:
            if continues_answers(self.server):
                extra |= {
                    "continue_final_message": continue_final,
                    "add_generation_prompt": not continue_final,
                }
            stream = await self.client.chat.completions.create(
                messages=messages,  # type: ignore[arg-type]
                extra_body=extra or None,
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
        if exact and not self.strict and usage.completion_tokens < tokens:  # hosted: may stop
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


def _retry_after(exc: openai.APIStatusError, otherwise: float) -> float:
    """Seconds the server asks a client to wait (``Retry-After-Ms``, ``Retry-After`` in
    seconds); ``otherwise`` when it names none (or an HTTP date)."""
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, ValueError):
            continue
    return otherwise


def _reason(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"connection failed: {cause or exc}".splitlines()[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
