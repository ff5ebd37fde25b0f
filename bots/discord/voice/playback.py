"""The persona's speech in a voice channel: a discord.py ``AudioSource`` of lipcast's own.

Each released clip's PCM (mono, any rate) is resampled to 48 kHz stereo 16-bit and cut into
20 ms frames as it arrives, so sentence one plays while sentence two is still being made;
discord.py's player thread reads a frame every 20 ms, encodes it to Opus and sends it under
DAVE. No ffmpeg process. Between sentences of one reply the source plays silence for up to
``gap_s``; after that it ends, and the next clip starts a new one.

Barge-in: when a viewer starts talking over the persona, :meth:`SpeechSource.barge_in` either
ends the source at the next read (``stop``: at most one 20 ms frame later) or lowers its volume
until :meth:`SpeechSource.release` (``duck``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import discord
import numpy as np

from pipeline.audio import AudioChunk
from pipeline.speech.resample import to_stereo_pcm16

FRAME_BYTES = 3_840  # 20 ms of 48 kHz stereo s16
SILENCE = bytes(FRAME_BYTES)
BargeIn = Literal["off", "stop", "duck"]


class SpeechSource(discord.AudioSource):
    """Reply audio, sentence by sentence, read by discord.py's player thread."""

    def __init__(
        self,
        *,
        gap_s: float = 1.5,
        on_first_frame: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._frames: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._ended = False
        self._volume = 1.0
        self._gap_s = gap_s
        self._waiting_since: float | None = None
        self._on_first_frame = on_first_frame
        self._clock = clock
        self.frames_played = 0
        self.labels: list[str] = []  # what was queued, in order (for logs and tests)

    def add(self, audio: AudioChunk, label: str = "") -> bool:
        """Queue one sentence's audio; False when the source has already ended (start a new
        one). Resampling happens here, in the caller's thread: call it off the event loop."""
        pcm = to_stereo_pcm16(audio)
        pcm += bytes(-len(pcm) % FRAME_BYTES)
        frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
        with self._lock:
            if self._ended:
                return False
            self._frames.extend(frames)
            self.labels.append(label)
            self._waiting_since = None
            return True

    def read(self) -> bytes:
        """The next 20 ms (discord.py's player thread); ``b""`` ends playback."""
        with self._lock:
            if self._ended:
                return b""
            if not self._frames:
                now = self._clock()
                if self._waiting_since is None:
                    self._waiting_since = now
                if now - self._waiting_since >= self._gap_s:
                    self._ended = True
                    return b""
                return SILENCE  # the next sentence is on its way
            frame = self._frames.popleft()
            volume = self._volume
            first = self.frames_played == 0
            self.frames_played += 1
        if first and self._on_first_frame is not None:
            self._on_first_frame(self._clock())
        if volume != 1.0:
            samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) * volume
            frame = samples.astype("<i2").tobytes()
        return frame

    def barge_in(self, mode: BargeIn, duck_volume: float = 0.25) -> None:
        """A viewer talks over the persona: ``stop`` ends the source at the next read,
        ``duck`` lowers it to ``duck_volume``, ``off`` does nothing."""
        with self._lock:
            if mode == "stop":
                self._ended = True
                self._frames.clear()
            elif mode == "duck":
                self._volume = duck_volume

    def release(self) -> None:
        """The viewer stopped talking: full volume again."""
        with self._lock:
            self._volume = 1.0

    @property
    def ended(self) -> bool:
        with self._lock:
            return self._ended

    def queued_s(self) -> float:
        """Seconds of speech still to play."""
        with self._lock:
            return len(self._frames) * 0.02

    def is_opus(self) -> bool:
        return False

    def cleanup(self) -> None:
        """discord.py stopped playing (or the source ended): drop what is left."""
        with self._lock:
            self._ended = True
            self._frames.clear()
