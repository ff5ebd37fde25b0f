"""The persona's AudioSource: 48 kHz stereo 20 ms frames, gaps between sentences, barge-in."""

from __future__ import annotations

import numpy as np

from bots.discord.voice.playback import FRAME_BYTES, SILENCE, SpeechSource
from pipeline.audio import AudioChunk


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tone(seconds: float, rate: int = 24_000) -> AudioChunk:
    t = np.arange(int(seconds * rate)) / rate
    return AudioChunk(
        samples=(0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=rate
    )


def peak(frame: bytes) -> int:
    return int(np.abs(np.frombuffer(frame, dtype="<i2")).max())


def test_frames_are_20ms_of_48k_stereo_and_the_source_ends_after_the_gap() -> None:
    clock = Clock()
    firsts: list[float] = []
    source = SpeechSource(gap_s=0.5, clock=clock, on_first_frame=firsts.append)
    assert source.add(tone(0.1), "one")
    frames = [source.read() for _ in range(5)]
    assert all(len(frame) == FRAME_BYTES and peak(frame) > 10_000 for frame in frames)
    assert firsts == [0.0]
    assert source.read() == SILENCE  # waiting for the next sentence
    clock.now += 0.6
    assert source.read() == b""
    assert not source.add(tone(0.1), "too late")  # the caller starts a new source


def test_duck_lowers_and_release_restores() -> None:
    source = SpeechSource()
    source.add(tone(1.0))
    loud = peak(source.read())
    source.barge_in("duck", 0.25)
    ducked = peak(source.read())
    source.release()
    again = peak(source.read())
    assert abs(ducked - loud * 0.25) < 200 and abs(again - loud) < 200


def test_stop_ends_at_the_next_read_and_off_changes_nothing() -> None:
    source = SpeechSource()
    source.add(tone(1.0))
    source.read()
    source.barge_in("off")
    assert peak(source.read()) > 10_000
    source.barge_in("stop")
    assert source.read() == b"" and source.ended and source.queued_s() == 0
