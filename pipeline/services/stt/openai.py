"""OpenAI's ``audio.transcriptions`` (or a compatible server's, e.g. a local whisper server).

The official ``openai`` package makes the request with the speech as a 16 kHz WAV file. The key
rule, the client and the errors are :mod:`pipeline.services.openai_client`'s: failures become
:class:`~pipeline.errors.BackendError` with ``transient`` set where a retry may help, and the API
key never appears in a message or a repr.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pipeline.audio import AudioChunk, write_wav
from pipeline.errors import BackendError
from pipeline.services.openai_client import DEFAULT_BASE_URL, OpenAIEndpoint
from pipeline.services.stt.base import STT, Transcript, check_audio
from pipeline.speech.resample import resample

UPLOAD_RATE = 16_000  # Whisper's own rate: a third of the bytes of 48 kHz, nothing lost


class OpenAISTT(STT):
    """Speech to text through an OpenAI-compatible ``/audio/transcriptions`` endpoint."""

    name: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = "whisper-1",
        timeout_s: float = 30.0,
        api_key: str | None = None,
        max_retries: int = 1,
    ) -> None:
        self._endpoint = OpenAIEndpoint(
            base_url=base_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_retries=max_retries,
            label="OpenAI speech-to-text",
            needed_by='[stt] backend = "openai"',
            base_url_key="[stt.openai] base_url",
            timeout_key="[stt.openai] timeout_s",
        )
        self._model = model

    def __repr__(self) -> str:
        return (
            f"OpenAISTT(base_url={self._endpoint.base_url!r}, model={self._model!r}, "
            f"timeout_s={self._endpoint.timeout_s})"
        )

    async def transcribe(self, audio: AudioChunk, *, language: str | None = None) -> Transcript:
        """Upload ``audio`` as a WAV file and return the server's text."""
        check_audio(audio)
        wav = write_wav(resample(audio, UPLOAD_RATE))
        request: dict[str, Any] = {
            "model": self._model,
            "file": ("speech.wav", wav, "audio/wav"),
            "response_format": "json",
        }
        if language:
            request["language"] = language
        client = await self._endpoint.client()
        import openai  # loaded by client()

        try:
            result = await client.audio.transcriptions.create(**request)
        except openai.OpenAIError as err:
            raise self._endpoint.error(
                err,
                not_found=f"check [stt.openai] model {self._model!r} and base_url",
                rejected=f"check [stt.openai] model {self._model!r}",
            ) from err
        text = getattr(result, "text", None)
        if not isinstance(text, str):
            raise BackendError(
                f"{self._endpoint.where} answered without a transcript; check that "
                "[stt.openai] base_url is an OpenAI-compatible API (usually ending in /v1)",
                transient=False,
            )
        return Transcript(text=text.strip(), language=language, audio_s=audio.duration_s)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._endpoint.aclose()
