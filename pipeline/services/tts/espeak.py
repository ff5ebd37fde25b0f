"""eSpeak NG through ctypes: the offline default voice, a few milliseconds per sentence.

The library comes with the ``espeakng-loader`` wheel. It keeps its state in C globals and is not
thread-safe, so one process-wide engine drives it from one dedicated thread; every
:class:`EspeakTTS` instance shares that engine. Synthesis runs in that thread and each buffer the
library hands to the callback reaches the caller at once, through an asyncio queue.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np

from pipeline.audio import AudioChunk
from pipeline.errors import BackendError, InputError, MissingDependencyError
from pipeline.services.tts.base import TTS, Voice
from pipeline.threads import stream_from_thread

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # without it a bad data path makes the C library call exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_EE_NOT_FOUND = 2

_BUFFER_MS = 100  # audio per callback, and so per chunk
_MIN_WPM, _MAX_WPM = 80, 450  # eSpeak NG's rate range
_DEFAULT_VOICES = {"en": "en-us", "de": "de", "fr": "fr"}

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True, kw_only=True)
class _Request:
    """One synthesis, as the engine thread needs it."""

    text: bytes  # UTF-8, without NUL characters
    voice: str
    voice_origin: str  # where the voice name came from, for error messages
    words_per_minute: int
    pitch: int


class _EspeakEngine:
    """The process's one eSpeak NG library; every method but the constructor runs on its thread."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._lib: ctypes.CDLL | None = None
        self._sample_rate = 0
        # The C library keeps only a pointer to the callback: this reference keeps it alive.
        self._callback = _SynthCallback(self._on_audio)
        self._sink: Callable[[AudioChunk], bool] | None = None
        self._sink_error: Exception | None = None

    def speak(self, request: _Request, sink: Callable[[AudioChunk], bool]) -> None:
        """Synthesise ``request``, handing each buffer to ``sink`` (False from it aborts)."""
        lib = self._load()
        status = lib.espeak_SetVoiceByName(request.voice.encode("utf-8"))
        if status == _EE_NOT_FOUND:
            raise BackendError(
                f"eSpeak NG has no voice {request.voice!r} ({request.voice_origin}); use an "
                "eSpeak NG voice name: a language code such as 'en-us', 'de' or 'fr', "
                "optionally with a variant such as 'en-us+f3'"
            )
        if status != _EE_OK:
            raise BackendError(
                f"eSpeak NG could not select voice {request.voice!r} (code {status})"
            )
        lib.espeak_SetParameter(_PARAM_RATE, request.words_per_minute, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, request.pitch, 0)
        self._sink, self._sink_error = sink, None
        try:
            status = lib.espeak_Synth(
                request.text, len(request.text) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
        finally:
            self._sink = None
        if self._sink_error is not None:
            raise self._sink_error
        if status != _EE_OK:
            raise BackendError(f"eSpeak NG failed to synthesise (code {status})", transient=True)

    def _load(self) -> ctypes.CDLL:
        if self._lib is not None:
            return self._lib
        try:
            import espeakng_loader
        except ImportError as err:
            raise MissingDependencyError(
                "the espeak TTS backend", package="espeakng-loader"
            ) from err
        library_path = espeakng_loader.get_library_path()
        try:
            data_path = espeakng_loader.get_data_path()
            lib = ctypes.CDLL(library_path)
        except (OSError, RuntimeError) as err:
            raise BackendError(
                f"eSpeak NG from espeakng-loader cannot be loaded ({err}); "
                "reinstall it: pip install --force-reinstall espeakng-loader"
            ) from err
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,  # text
            ctypes.c_size_t,  # size in bytes, with the final NUL
            ctypes.c_uint,  # position
            ctypes.c_int,  # position type
            ctypes.c_uint,  # end position (0: none)
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique identifier
            ctypes.c_void_p,  # user data
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if sample_rate <= 0:
            raise BackendError(
                f"eSpeak NG could not be initialised with its data at {data_path}; "
                "reinstall it: pip install --force-reinstall espeakng-loader"
            )
        lib.espeak_SetSynthCallback(self._callback)
        self._lib, self._sample_rate = lib, sample_rate
        return lib

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, _events: int) -> int:
        """The C callback: 0 goes on, 1 aborts. A NULL ``wav`` marks the end."""
        if not wav or numsamples <= 0 or self._sink is None:
            return 0
        try:
            pcm = np.ctypeslib.as_array(wav, shape=(numsamples,))
            chunk = AudioChunk(
                samples=pcm.astype(np.float32) / np.float32(32768.0),
                sample_rate=self._sample_rate,
            )
            return 0 if self._sink(chunk) else 1
        except Exception as err:  # noqa: BLE001 - must not cross into C; speak() re-raises it
            self._sink_error = err
            return 1


_engine: _EspeakEngine | None = None
_engine_lock = threading.Lock()


def _shared_engine() -> _EspeakEngine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _EspeakEngine()
        return _engine


class EspeakTTS(TTS):
    """eSpeak NG voices, offline; ``Voice.name`` is an eSpeak voice such as ``"en-us+f3"``."""

    name: ClassVar[str] = "espeak"

    def __init__(self, *, words_per_minute: int = 165, pitch: int = 50) -> None:
        self._words_per_minute = words_per_minute
        self._pitch = pitch

    def __repr__(self) -> str:
        return f"EspeakTTS(words_per_minute={self._words_per_minute}, pitch={self._pitch})"

    async def synthesize(self, text: str, voice: Voice) -> AsyncGenerator[AudioChunk, None]:
        """Speak ``text``, yielding about 100 ms of 22,050 Hz audio per chunk as it is made."""
        request = self._request(text, voice)
        engine = _shared_engine()
        async for chunk in stream_from_thread(engine.executor, partial(engine.speak, request)):
            yield chunk

    def _request(self, text: str, voice: Voice) -> _Request:
        cleaned = text.replace("\x00", " ").strip()
        if not cleaned:
            raise InputError("nothing to say: the text is empty")
        if voice.speed <= 0:
            raise InputError(f"voice speed must be above 0, not {voice.speed}")
        if voice.name:
            name, origin = voice.name, "the persona's espeak voice"
        else:
            language = voice.language.strip().lower()
            name = _DEFAULT_VOICES.get(language, language)
            origin = f"the default for language {voice.language!r}"
        wpm = round(self._words_per_minute * voice.speed)
        return _Request(
            text=cleaned.encode("utf-8"),
            voice=name,
            voice_origin=origin,
            words_per_minute=min(max(wpm, _MIN_WPM), _MAX_WPM),
            pitch=self._pitch,
        )
