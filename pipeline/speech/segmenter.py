"""Cutting each speaker's audio into utterances: voice activity, end of speech, blips.

Feed a speaker's audio (16 kHz mono, any piece size) to :meth:`Segmenter.feed`; it answers
with events:

* :class:`SpeechStarted` once the speaker has talked for ``onset_ms`` (barge-in listens to it);
* :class:`SpeechFinished` after ``end_silence_ms`` of silence, or at ``max_utterance_s``
  (``cut``), with the speech as audio, or with ``audio=None`` when it was a blip shorter than
  ``min_speech_ms`` (a cough, a click, a burst of background noise).

Platforms stop sending audio while someone is silent, so :meth:`Segmenter.tick` (called every
few tens of milliseconds) counts the time since a speaker's last audio as silence. Speakers
are independent: two people talking at once are two utterances. Thread-safe: audio may come
from a socket thread while ``tick`` runs on the event loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.audio import AudioChunk, FloatArray
from pipeline.speech.vad import SAMPLE_RATE, WINDOW, WINDOW_MS, SileroVAD, VADStream

_HYSTERESIS = 0.15  # once speaking, a window counts as speech down to threshold - this
_TRAILING_MS = 160  # silence kept after the last word (Whisper likes a little)


@dataclass(frozen=True, kw_only=True)
class SegmenterOptions:
    threshold: float = 0.5  # Silero speech probability that starts speech
    end_silence_ms: int = 500
    min_speech_ms: int = 250
    max_utterance_s: float = 20.0
    onset_ms: int = 64  # speech this long is reported as started (barge-in reacts to it)
    pre_roll_ms: int = 192  # audio kept from before the onset, so the first sound is whole


@dataclass(frozen=True, kw_only=True)
class SpeechStarted:
    speaker: str
    at: float  # clock time the speech began


@dataclass(frozen=True, kw_only=True)
class SpeechFinished:
    speaker: str
    audio: AudioChunk | None  # 16 kHz mono; None: a blip, ignored
    speech_ended_at: float  # clock time of the last speech
    decided_at: float  # clock time the end was decided (speech_ended_at + the silence)
    cut: bool = False  # ended by max_utterance_s, not by silence


SegmentEvent = SpeechStarted | SpeechFinished


@dataclass(kw_only=True)
class _Speaker:
    vad: VADStream
    pending: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    pre_roll: deque[FloatArray] = field(default_factory=deque)
    windows: list[FloatArray] = field(default_factory=list)
    active: bool = False
    started: bool = False
    started_at: float = 0.0
    voiced_ms: int = 0
    silence_ms: int = 0
    last_audio_at: float = 0.0


class Segmenter:
    """Utterances per speaker from a stream of audio."""

    def __init__(
        self,
        vad: SileroVAD,
        options: SegmenterOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vad = vad
        self.options = options or SegmenterOptions()
        self._clock = clock
        self._speakers: dict[str, _Speaker] = {}
        self._lock = threading.Lock()

    def feed(self, speaker: str, samples: FloatArray) -> list[SegmentEvent]:
        """Take a piece of ``speaker``'s 16 kHz mono audio; the events it completes."""
        events: list[SegmentEvent] = []
        with self._lock:
            state = self._speakers.get(speaker)
            if state is None:
                state = self._speakers[speaker] = _Speaker(vad=self._vad.stream())
            now = self._clock()
            state.last_audio_at = now
            data = np.concatenate([state.pending, samples.astype(np.float32)])
            whole = len(data) - len(data) % WINDOW
            state.pending = data[whole:]
            windows = data[:whole].reshape(-1, WINDOW)
            for index, window in enumerate(windows):
                # when this window's audio ended, on the clock
                ends = now - (len(windows) - 1 - index) * WINDOW_MS / 1000
                self._window(speaker, state, window, ends, events)
        return events

    def tick(self) -> list[SegmentEvent]:
        """End the speech of speakers whose audio stopped coming for ``end_silence_ms``."""
        events: list[SegmentEvent] = []
        with self._lock:
            now = self._clock()
            for speaker, state in self._speakers.items():
                if not state.active:
                    continue
                quiet_ms = state.silence_ms + (now - state.last_audio_at) * 1000
                if quiet_ms >= self.options.end_silence_ms:
                    ended = state.last_audio_at - state.silence_ms / 1000
                    events.append(self._finish(speaker, state, ended, now, cut=False))
        return events

    def drop(self, speaker: str) -> None:
        """Forget a speaker who left (what they were saying is dropped)."""
        with self._lock:
            self._speakers.pop(speaker, None)

    def speaking(self) -> list[str]:
        """Speakers whose speech has started and not yet finished."""
        with self._lock:
            return [name for name, state in self._speakers.items() if state.started]

    def _window(
        self,
        speaker: str,
        state: _Speaker,
        window: FloatArray,
        ends: float,
        events: list[SegmentEvent],
    ) -> None:
        options = self.options
        probability = state.vad.probability(window)
        if not state.active:
            state.pre_roll.append(window)
            while len(state.pre_roll) * WINDOW_MS > options.pre_roll_ms + WINDOW_MS:
                state.pre_roll.popleft()
            if probability >= options.threshold:
                state.active = True
                state.windows = list(state.pre_roll)
                state.pre_roll.clear()
                state.voiced_ms = WINDOW_MS
                state.silence_ms = 0
                state.started_at = ends - WINDOW_MS / 1000
            return
        state.windows.append(window)
        if probability >= options.threshold - _HYSTERESIS:
            state.voiced_ms += WINDOW_MS + state.silence_ms  # a pause inside speech is speech
            state.silence_ms = 0
        else:
            state.silence_ms += WINDOW_MS
        if not state.started and state.voiced_ms >= options.onset_ms:
            state.started = True
            events.append(SpeechStarted(speaker=speaker, at=state.started_at))
        if state.silence_ms >= options.end_silence_ms:
            ended = ends - state.silence_ms / 1000
            events.append(self._finish(speaker, state, ended, ends, cut=False))
        elif len(state.windows) * WINDOW_MS >= options.max_utterance_s * 1000:
            events.append(self._finish(speaker, state, ends, ends, cut=True))

    def _finish(
        self, speaker: str, state: _Speaker, ended: float, decided: float, *, cut: bool
    ) -> SpeechFinished:
        options = self.options
        audio = None
        if state.voiced_ms >= options.min_speech_ms:
            trailing = max(0, state.silence_ms - _TRAILING_MS) // WINDOW_MS
            kept = state.windows[: len(state.windows) - trailing] if trailing else state.windows
            audio = AudioChunk(
                samples=np.concatenate(kept).astype(np.float32), sample_rate=SAMPLE_RATE
            )
        state.active = state.started = False
        state.windows = []
        state.voiced_ms = state.silence_ms = 0
        return SpeechFinished(
            speaker=speaker, audio=audio, speech_ended_at=ended, decided_at=decided, cut=cut
        )
