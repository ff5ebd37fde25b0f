"""The text-to-speech seam: one method, ``synthesize``, yielding audio as it is made."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import ClassVar

from pipeline.audio import AudioChunk


@dataclass(frozen=True, kw_only=True)
class Voice:
    """Which voice speaks: the persona's language and the backend-specific voice id."""

    language: str  # ISO 639-1, e.g. "en", "de", "fr"
    name: str | None = None  # backend-specific: an eSpeak voice, a Piper model, an OpenAI voice
    speed: float = 1.0  # 1.0 is the backend's normal rate


class TTS(abc.ABC):
    """A text-to-speech backend.

    Implementations yield mono :class:`AudioChunk` objects as soon as the engine produces them,
    so a caller can start work on the first chunk while the rest is synthesised. Blocking engines
    run in a worker thread; network engines have timeouts and raise
    :class:`~pipeline.errors.BackendError` with ``transient`` set when a retry may help.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[AudioChunk, None]:
        """Speak ``text`` (one or a few sentences of plain text) with ``voice``."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or engines the backend holds."""
