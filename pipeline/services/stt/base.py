"""The speech-to-text seam: one method, ``transcribe``, from mono audio to text."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

from pipeline.audio import AudioChunk


@dataclass(frozen=True, kw_only=True)
class Transcript:
    """What was said in a piece of speech."""

    text: str  # the words, stripped; "" when nothing intelligible was said
    language: str | None = None  # the language the backend heard, when it says
    audio_s: float = 0.0  # how long the speech was


class STT(abc.ABC):
    """A speech-to-text backend.

    ``transcribe`` takes one utterance of mono audio at any sample rate (backends resample as
    they need) and returns its words. Blocking engines run in a worker thread; network engines
    have timeouts and raise :class:`~pipeline.errors.BackendError` with ``transient`` set when a
    retry may help. Empty or too short audio is an :class:`~pipeline.errors.InputError`.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    async def transcribe(self, audio: AudioChunk, *, language: str | None = None) -> Transcript:
        """The words in ``audio``; ``language`` (ISO 639-1) is a hint, None lets it guess."""

    async def warm_up(self) -> None:  # noqa: B027 - optional hook, network backends need none
        """Load models now, so the first viewer does not wait for it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or models the backend holds."""


MIN_AUDIO_S = 0.1  # shorter audio holds no word


def check_audio(audio: AudioChunk) -> None:
    """Refuse audio no backend can transcribe, with the reason."""
    from pipeline.errors import InputError

    if audio.sample_rate <= 0:
        raise InputError(f"audio with a sample rate of {audio.sample_rate} Hz cannot be used")
    if audio.duration_s < MIN_AUDIO_S:
        raise InputError(
            f"too little audio to transcribe ({audio.duration_s:.2f} s < {MIN_AUDIO_S} s)"
        )
