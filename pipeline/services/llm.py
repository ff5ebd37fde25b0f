"""The language model seam: one method, ``stream``, yielding the reply's text as it is written.

Backends are chosen by name (``[llm] backend`` in bot.toml) through :data:`LLM_BACKENDS`;
``none`` means no model at all, and the persona reads chat aloud instead (the embedded
default). The ``openai`` backend talks to OpenAI or any server speaking its chat-completions
API (Ollama, LM Studio, vLLM, llama.cpp server) through the official ``openai`` package, with
``stream=True``.

Failures follow :mod:`pipeline.errors`: a rate limit (429), a server error (5xx), a timeout, a
dropped connection or a malformed chunk before the first token is retried with exponential
backoff and jitter, waiting at least as long as the server's ``Retry-After`` asks; once text
has been handed out a retry would repeat it, so the error is raised with ``partial`` set and
the caller decides (the conversation ends the turn with what was said, or a fallback line).

An answer that is not an OpenAI event stream (an HTML page from a web UI or a login portal at
``base_url``, a plain JSON body, a stream without a single completion chunk) is a permanent
error that says so, never an empty reply.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pipeline.backends import BackendSpec
from pipeline.errors import BackendError
from pipeline.services.openai_client import DEFAULT_BASE_URL, OpenAIEndpoint

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"  # the one documented default; any server's model name works

LLM_BACKENDS: dict[str, BackendSpec] = {
    "openai": BackendSpec(
        target="pipeline.services.llm:OpenAIChatLLM",
        requires=("openai",),
        package="openai",
        description="OpenAI or a compatible server (Ollama, LM Studio, vLLM, llama.cpp)",
    ),
}


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One message of a chat-completions conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """Per-request overrides (a persona's ``[llm]`` table); None keeps the backend's value."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None


class LLMError(BackendError):
    """The model failed to answer; ``partial`` when some of the reply had been handed out."""

    def __init__(self, message: str, *, transient: bool = False, partial: bool = False) -> None:
        super().__init__(message, transient=transient)
        self.partial = partial


class LLM(abc.ABC):
    """A chat model that streams its reply."""

    name: ClassVar[str]

    @abc.abstractmethod
    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield the reply's text in pieces as the model writes them.

        ``deadline`` (``time.monotonic()`` seconds) bounds the retries: none is started that
        could not begin before it. Raises :class:`LLMError`.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def describe(self) -> str:
        """One line for the start-up message."""
        return self.name


class ReasoningFilter:
    """Drop ``<think>...</think>`` blocks some local reasoning models put in their content."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self._pending = ""
        self._inside = False

    def feed(self, text: str) -> str:
        self._pending += text
        out: list[str] = []
        while self._pending:
            tag = self.CLOSE if self._inside else self.OPEN
            found = self._pending.find(tag)
            if found < 0:
                keep = _partial_suffix(self._pending, tag)
                if not self._inside:
                    out.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep :]
                break
            if not self._inside:
                out.append(self._pending[:found])
            self._pending = self._pending[found + len(tag) :]
            self._inside = not self._inside
        return "".join(out)

    def flush(self) -> str:
        rest, self._pending = ("" if self._inside else self._pending), ""
        return rest


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that starts ``tag`` (it may complete later)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is a floor."""

    retries: int = 2  # further attempts after the first
    base_s: float = 0.5
    max_s: float = 8.0
    max_retry_after_s: float = 30.0  # a server asking for longer is not waited for

    def delay(self, attempt: int, retry_after: float | None, rng: Callable[[], float]) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** (attempt - 1))
        backoff = ceiling / 2 + rng() * ceiling / 2  # "equal jitter"
        if retry_after is None:
            return backoff
        # The server's wait is a floor; a little jitter on top keeps clients from all
        # coming back in the same millisecond.
        return max(retry_after * (1 + 0.1 * rng()), backoff)


class OpenAIChatLLM(LLM):
    """Chat completions through the ``openai`` package, streamed."""

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        temperature: float = 0.8,
        max_tokens: int = 200,
        timeout_s: float = 15.0,
        retries: int = 2,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._endpoint = OpenAIEndpoint(
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=0,  # retried here, where a partial reply is known
            label="the language model",
            needed_by='[llm] backend = "openai"',
            base_url_key="[llm] base_url",
            timeout_key="[llm] timeout_s",
        )
        self.base_url = self._endpoint.base_url
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy(retries=retries)
        self._sleep = sleep
        self._rng = rng

    def __repr__(self) -> str:
        return f"OpenAIChatLLM(base_url={self.base_url!r}, model={self.model!r})"

    def describe(self) -> str:
        return f"{self.model} at {self.base_url}"

    async def aclose(self) -> None:
        await self._endpoint.aclose()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        options: GenerationOptions | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[str, None]:
        client = await self._endpoint.client()
        import openai  # loaded by client()

        options = options or GenerationOptions()
        request: dict[str, Any] = {
            "model": options.model or self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": self.temperature if options.temperature is None else options.temperature,
            "max_tokens": options.max_tokens or self.max_tokens,
            "stream": True,
        }
        attempt = 0
        while True:
            attempt += 1
            answering = partial = False
            try:
                reasoning = ReasoningFilter()
                stream = await client.chat.completions.create(**request)
                answering = True
                try:
                    content_type = stream.response.headers.get("content-type", "")
                    if not content_type.lower().startswith("text/event-stream"):
                        raise self._not_a_stream(content_type or "no content type")
                    chunks = 0
                    async for chunk in stream:
                        chunks += 1
                        piece = reasoning.feed(_delta_text(chunk))
                        if piece:
                            partial = True
                            yield piece
                    if chunks == 0:
                        raise self._not_a_stream("an event stream without a completion chunk")
                    rest = reasoning.flush()
                    if rest:
                        yield rest
                finally:
                    await stream.close()
                return
            # openai raises its own errors for the transport too, mid-stream included;
            # ValueError: a chunk that is not JSON or not shaped as documented.
            except (openai.OpenAIError, ValueError) as err:
                error = self._error(
                    err, answering=answering, partial=partial, model=request["model"]
                )
                if partial or not error.transient or attempt > self.retry.retries:
                    raise error from err
                retry_after = self._endpoint.retry_after(err)
                if retry_after is not None and retry_after > self.retry.max_retry_after_s:
                    raise LLMError(
                        f"{error} and asks to wait {retry_after:.0f} s; not waiting that long",
                        transient=True,
                    ) from err
                delay = self.retry.delay(attempt, retry_after, self._rng)
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise LLMError(
                        f"{error}; no time left for another try", transient=True
                    ) from err
                log.warning(
                    "%s; trying again in %.2f s (attempt %d of %d)",
                    error,
                    delay,
                    attempt + 1,
                    self.retry.retries + 1,
                )
                await self._sleep(delay)

    def _not_a_stream(self, what: str) -> LLMError:
        return LLMError(
            f"{self._endpoint.where} answered with {what}, not an OpenAI chat-completions "
            "stream: is [llm] base_url the server's API address (usually ending in /v1)?"
        )

    def _error(self, err: Exception, *, answering: bool, partial: bool, model: str) -> LLMError:
        """Translate an ``openai`` error or a malformed chunk into one that says what to do."""
        if isinstance(err, ValueError):
            message = (
                f"{self._endpoint.where} sent a malformed stream chunk "
                f"({type(err).__name__}: {err})"
            )
            if partial:
                message += "; the answer was cut off"
            return LLMError(self._endpoint.redact(message), transient=True, partial=partial)
        error = self._endpoint.error(
            err,
            not_found=(
                f"check [llm] model {model!r} and base_url (usually ending in /v1; the server "
                "needs a chat-completions endpoint)"
            ),
            rejected=f"check [llm] model {model!r}, temperature and max_tokens",
            answering=answering,
            partial=partial,
        )
        return LLMError(str(error), transient=error.transient, partial=partial)


def _delta_text(chunk: Any) -> str:
    """The text a stream chunk adds; "" for role-only, empty or usage chunks."""
    choices = getattr(chunk, "choices", None)
    if choices is None:
        raise ValueError("a chunk without 'choices'")
    if not choices:
        return ""
    delta = getattr(choices[0], "delta", None)
    content = getattr(delta, "content", None) if delta is not None else None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ValueError(f"delta.content is {type(content).__name__}, not text")
    return content
