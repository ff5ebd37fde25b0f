"""OpenAI's ``audio.speech`` (or a compatible server's), streamed as raw 24 kHz PCM.

The official ``openai`` package makes the request; the response body is read as it arrives and
cut into chunks, so the first words can be rendered while the rest still downloads. The key rule,
the client and the errors are :mod:`pipeline.services.openai_client`'s: failures become
:class:`BackendError` with ``transient`` set where a retry may help, and the API key never
appears in a message or a repr.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, ClassVar

from pipeline.audio import AudioChunk
from pipeline.errors import BackendError, InputError
from pipeline.services.openai_client import DEFAULT_BASE_URL, OpenAIEndpoint
from pipeline.services.tts.base import TTS, Voice

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
        self._endpoint = OpenAIEndpoint(
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            label="OpenAI TTS",
            needed_by='[tts] backend = "openai"',
            base_url_key="[tts.openai] base_url",
            timeout_key="[tts.openai] timeout_s",
        )
        self._model = model
        self._voice = voice

    def __repr__(self) -> str:
        return (
            f"OpenAITTS(base_url={self._endpoint.base_url!r}, model={self._model!r}, "
            f"voice={self._voice!r}, timeout_s={self._endpoint.timeout_s})"
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
        client = await self._endpoint.client()
        import openai  # loaded by client()

        speech = client.audio.speech.with_streaming_response
        answering = produced = False
        try:
            async with speech.create(**request) as response:
                answering = True
                self._check_content_type(response.headers.get("content-type", ""))
                async for chunk in self._pcm_chunks(self._endpoint.iter_body(response)):
                    produced = True
                    yield chunk
        except openai.OpenAIError as err:
            raise self._endpoint.error(
                err,
                not_found=f"check [tts.openai] model {self._model!r} and base_url",
                rejected=(
                    f"check [tts.openai] model {self._model!r} and voice {request['voice']!r} "
                    "(the persona's or [tts.openai] voice)"
                ),
                answering=answering,
            ) from err
        if not produced:
            raise BackendError(f"{self._endpoint.where} returned no audio", transient=True)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._endpoint.aclose()

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
                f"{self._endpoint.where} answered with {kind}, not raw PCM audio; check that "
                "[tts.openai] base_url is an OpenAI-compatible API (usually ending in /v1) "
                "that supports response_format 'pcm'"
            )

    def _check_magic(self, head: bytes) -> None:
        if head.startswith(_NOT_PCM_MAGIC):
            raise BackendError(
                f"{self._endpoint.where} sent an audio file ({head[:4]!r}...) instead of raw PCM; "
                "the server ignores response_format 'pcm'"
            )
