"""The segmenter: Silero VAD on real speech; blips, end-of-speech silence and maximum length."""

from __future__ import annotations

import numpy as np

from pipeline.speech.resample import resample
from pipeline.speech.segmenter import Segmenter, SegmenterOptions, SpeechFinished, SpeechStarted
from pipeline.speech.vad import SileroVAD
from tests.voice_support import speak

VAD = SileroVAD()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(segmenter: Segmenter, clock: Clock, speaker: str, samples: np.ndarray) -> list[object]:
    """In 20 ms pieces, as a voice channel delivers them."""
    events: list[object] = []
    for start in range(0, len(samples), 320):
        clock.now += 0.02
        events += segmenter.feed(speaker, samples[start : start + 320].astype(np.float32))
    return events


async def speech16k(text: str) -> np.ndarray:
    return resample(await speak(text), 16_000).samples


async def test_speech_then_silence_is_one_utterance_with_its_timing() -> None:
    clock = Clock()
    segmenter = Segmenter(VAD, SegmenterOptions(end_silence_ms=400), clock=clock)
    speech = await speech16k("Hello, can you hear me?")
    events = feed(segmenter, clock, "ada", np.concatenate([np.zeros(4800), speech]))
    speech_end = clock.now
    events += feed(segmenter, clock, "ada", np.zeros(16_000))
    started = [e for e in events if isinstance(e, SpeechStarted)]
    finished = [e for e in events if isinstance(e, SpeechFinished)]
    assert len(started) == 1 and abs(started[0].at - 0.3) < 0.1
    assert len(finished) == 1 and finished[0].audio is not None and not finished[0].cut
    assert abs(finished[0].speech_ended_at - speech_end) < 0.15
    assert 0.4 <= finished[0].decided_at - finished[0].speech_ended_at < 0.5
    assert abs(finished[0].audio.duration_s - len(speech) / 16_000) < 0.5


async def test_packets_stopping_counts_as_silence() -> None:
    clock = Clock()
    segmenter = Segmenter(VAD, SegmenterOptions(end_silence_ms=500), clock=clock)
    feed(segmenter, clock, "ada", await speech16k("Thank you very much."))
    assert segmenter.speaking() == ["ada"]
    clock.now += 0.3
    assert segmenter.tick() == []
    clock.now += 0.3
    [finished] = segmenter.tick()
    assert isinstance(finished, SpeechFinished) and finished.audio is not None
    assert segmenter.speaking() == []


async def test_blips_and_noise_are_ignored() -> None:
    clock = Clock()
    segmenter = Segmenter(VAD, SegmenterOptions(min_speech_ms=250), clock=clock)
    rng = np.random.default_rng(7)
    click = np.zeros(16_000, dtype=np.float32)
    click[8000:8040] = 0.9  # a 2.5 ms click
    hiss = (rng.standard_normal(32_000) * 0.01).astype(np.float32)  # background noise
    hum = (0.2 * np.sin(2 * np.pi * 50 * np.arange(32_000) / 16_000)).astype(np.float32)
    events = feed(segmenter, clock, "ada", np.concatenate([click, hiss, hum, np.zeros(16_000)]))
    clock.now += 2
    events += segmenter.tick()
    assert not [e for e in events if isinstance(e, SpeechFinished) and e.audio is not None]
    assert not [e for e in events if isinstance(e, SpeechStarted)]


async def test_short_word_below_min_speech_is_a_blip() -> None:
    clock = Clock()
    segmenter = Segmenter(VAD, SegmenterOptions(min_speech_ms=2000), clock=clock)
    events = feed(
        segmenter, clock, "ada", np.concatenate([await speech16k("Yes."), np.zeros(16_000)])
    )
    finished = [e for e in events if isinstance(e, SpeechFinished)]
    assert finished and all(e.audio is None for e in finished)


async def test_long_speech_is_cut_at_max_length() -> None:
    clock = Clock()
    segmenter = Segmenter(VAD, SegmenterOptions(max_utterance_s=2.0), clock=clock)
    speech = await speech16k(
        "Please tell me a long story about a dragon who lived in a castle by the sea."
    )
    events = feed(segmenter, clock, "ada", np.concatenate([speech, np.zeros(16_000)]))
    finished = [e for e in events if isinstance(e, SpeechFinished) and e.audio is not None]
    assert len(finished) >= 2 and finished[0].cut
    assert all(e.audio is not None and e.audio.duration_s <= 2.05 for e in finished if e.cut)


async def test_speakers_are_independent() -> None:
    clock = Clock()
    segmenter = Segmenter(VAD, clock=clock)
    speech = await speech16k("Where is the nearest train station?")
    events: list[object] = []
    for start in range(0, len(speech) + 16_000, 320):
        clock.now += 0.02
        piece = speech[start : start + 320] if start < len(speech) else np.zeros(320)
        events += segmenter.feed("ada", piece.astype(np.float32))
        events += segmenter.feed("bob", np.zeros(320, dtype=np.float32))
    speakers = [e.speaker for e in events if isinstance(e, SpeechFinished) and e.audio is not None]
    assert speakers == ["ada"]
