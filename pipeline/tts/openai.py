"""OpenAI's ``audio.speech`` (or a compatible server's), streamed as raw 24 kHz PCM.

The official ``openai`` package makes the request; the response body is read as it arrives and
cut into chunks, so the first words can be rendered while the rest still downloads. Failures
become :class:`BackendError` with ``transient`` set where a retry may help. The API key never
appears in a message or a repr.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pipeline.audio import AudioChunk
from pipeline.errors import BackendError, ConfigError, InputError
from pipeline.tts.base import TTS, Voice

if TYPE_CHECKING:
    from openai import APIStatusError, AsyncOpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SAMPLE_RATE = 24_000  # response_format="pcm": signed 16-bit little-endian mono at 24 kHz
MAX_INPUT_CHARS = 4096  # the API's limit on ``input``
_MIN_CHUNK_BYTES = 2_400  # 50 ms: network reads are coalesced up to this before a chunk is made
_NOT_PCM_TYPES = (  # answers that are certainly not raw PCM
    "application/json",
    "text/",
    "audio/mpeg",
    "audio/wav",
    "audio/x-wav",
    "audio/ogg",
    "audio/opus",
    "audio/aac",
    "audio/flac",
    "audio/mp4",
)
_NOT_PCM_MAGIC = (b"RIFF", b"ID3", b"OggS", b"fLaC")
_PLACEHOLDER_KEY = "not-needed"  # local compatible servers ignore the key; the client wants one


class OpenAITTS(TTS):
    """OpenAI text-to-speech; ``Voice.name`` is an OpenAI voice such as ``"alloy"``."""

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        timeout_s: float = 30.0,
        api_key: str | None = None,
        max_retries: int = 1,
    ) -> None:
        if not api_key:
            if urlsplit(base_url).hostname == "api.openai.com":
                raise ConfigError(
                    "the openai TTS backend needs an API key: set OPENAI_API_KEY in the "
                    "environment or in .env (never in bot.toml), or point [tts.openai] base_url "
                    "at a local OpenAI-compatible server"
                )
            api_key = _PLACEHOLDER_KEY
        self._base_url = base_url.rstrip("/")
        self._model = model
        self._voice = voice
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._api_key = api_key
        self._client: AsyncOpenAI | None = None

    def __repr__(self) -> str:
        return (
            f"OpenAITTS(base_url={self._base_url!r}, model={self._model!r}, "
            f"voice={self._voice!r}, timeout_s={self._timeout_s})"
        )

    async def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[AudioChunk, None]:
        """Speak ``text``, yielding 24 kHz chunks as the response body streams in."""
        cleaned = text.strip()
        if not cleaned:
            raise InputError("nothing to say: the text is empty")
        if len(cleaned) > MAX_INPUT_CHARS:
            raise InputError(
                f"text too long for OpenAI TTS ({len(cleaned)} > {MAX_INPUT_CHARS} characters); "
                "split it into sentences"
            )
        request: dict[str, Any] = {
            "model": self._model,
            "voice": voice.name or self._voice,
            "input": cleaned,
            "response_format": "pcm",
        }
        if voice.speed != 1.0:
            request["speed"] = min(max(voice.speed, 0.25), 4.0)
        client = await self._get_client()
        import httpx2  # both already loaded by _get_client
        import openai

        speech = client.audio.speech.with_streaming_response
        produced = False
        try:
            async with speech.create(**request) as response:
                self._check_content_type(response.headers.get("content-type", ""))
                async for chunk in self._pcm_chunks(response.iter_bytes()):
                    produced = True
                    yield chunk
        except (openai.OpenAIError, httpx2.HTTPError) as err:
            raise self._backend_error(err, request["voice"]) from err
        if not produced:
            raise BackendError(f"{self._where()} returned no audio", transient=True)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _get_client(self) -> AsyncOpenAI:
        if self._client is None:
            # Importing openai takes most of a second: do it off the event loop.
            await asyncio.to_thread(importlib.import_module, "openai")
            from openai import AsyncOpenAI

            if self._client is None:  # a concurrent first call may have made it meanwhile
                self._client = AsyncOpenAI(
                    api_key=self._api_key,
                    base_url=self._base_url,
                    timeout=self._timeout_s,
                    max_retries=self._max_retries,
                )
        return self._client

    async def _pcm_chunks(self, body: AsyncIterator[bytes]) -> AsyncIterator[AudioChunk]:
        """Cut a byte stream into whole 16-bit samples; a sample may straddle two reads."""
        pending = bytearray()
        first = True
        async for data in body:
            if first and data:
                self._check_magic(data)
                first = False
            pending += data
            if len(pending) >= _MIN_CHUNK_BYTES:
                whole = len(pending) - len(pending) % 2
                yield AudioChunk.from_pcm16(bytes(pending[:whole]), SAMPLE_RATE)
                del pending[:whole]
        if len(pending) >= 2:
            yield AudioChunk.from_pcm16(bytes(pending), SAMPLE_RATE)

    def _check_content_type(self, content_type: str) -> None:
        kind = content_type.split(";")[0].strip().lower()
        if kind.startswith(_NOT_PCM_TYPES):
            raise BackendError(
                f"{self._where()} answered with {kind}, not raw PCM audio; check that "
                "[tts.openai] base_url is an OpenAI-compatible API (usually ending in /v1) "
                "that supports response_format 'pcm'"
            )

    def _check_magic(self, head: bytes) -> None:
        if head.startswith(_NOT_PCM_MAGIC):
            raise BackendError(
                f"{self._where()} sent an audio file ({head[:4]!r}...) instead of raw PCM; "
                "the server ignores response_format 'pcm'"
            )

    def _where(self) -> str:
        return f"OpenAI TTS at {self._base_url}"

    def _backend_error(self, err: Exception, voice: str) -> BackendError:
        """Translate an ``openai`` or ``httpx2`` error into a message that says what to do."""
        import httpx2
        import openai

        where = self._where()
        if isinstance(err, openai.APITimeoutError | httpx2.TimeoutException):
            return BackendError(
                f"{where} sent nothing for {self._timeout_s:g} s (timeout)", transient=True
            )
        if isinstance(err, openai.APIConnectionError):
            reason = self._redact(str(err.__cause__ or err))
            return BackendError(
                f"{where}: connection failed ({reason}); is [tts.openai] base_url right and the "
                "server up?",
                transient=True,
            )
        if isinstance(err, httpx2.TransportError):
            reason = self._redact(str(err) or type(err).__name__)
            return BackendError(f"{where} broke off while sending audio: {reason}", transient=True)
        if not isinstance(err, openai.APIStatusError):
            return BackendError(f"{where} failed: {self._redact(str(err))}")
        status, detail = err.status_code, self._detail(err)
        if status in (401, 403):
            return BackendError(
                f"{where} refused the API key (HTTP {status}{detail}): check OPENAI_API_KEY"
            )
        if status == 429 and _error_code(err.body) == "insufficient_quota":
            return BackendError(
                f"{where}: the account's quota is used up (HTTP 429{detail}); check billing"
            )
        if status == 429:
            return BackendError(f"{where} is rate limiting (HTTP 429{detail})", transient=True)
        if status >= 500 or status == 408:
            return BackendError(f"{where} failed (HTTP {status}{detail})", transient=True)
        if status == 404:
            return BackendError(
                f"{where} has no such model or endpoint (HTTP 404{detail}); check [tts.openai] "
                f"model {self._model!r} and base_url"
            )
        return BackendError(
            f"{where} rejected the request (HTTP {status}{detail}); check [tts.openai] model "
            f"{self._model!r} and voice {voice!r} (the persona's or [tts.openai] voice)"
        )

    def _detail(self, err: APIStatusError) -> str:
        """': <server message>', short and without the key; '' when there is none."""
        body = err.body
        message = body
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, dict) else inner
            message = message or body.get("detail")
        if not message:
            return ""
        text = " ".join(self._redact(str(message)).split())
        return f": {text[:200]}"

    def _redact(self, text: str) -> str:
        if self._api_key != _PLACEHOLDER_KEY:
            text = text.replace(self._api_key, "***")
        return text


def _error_code(body: object) -> str | None:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type")
            return str(code) if code else None
    return None
