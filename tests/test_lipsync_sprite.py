"""The sprite renderer, judged from decoded frames: the mouth follows the voice."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from lipsync.audio_features import Viseme, analyse, classify, frame_count, mouth_track
from lipsync.avatar import Avatar, load_avatar
from lipsync.encode import EncodeOptions, encode_mp4_bytes
from lipsync.sprite import SpriteRenderer, _blink_schedule
from personas import load_persona
from pipeline.audio import AudioChunk, concat
from pipeline.jobs.render import avatar_for
from pipeline.services.tts import Voice
from pipeline.services.tts.espeak import EspeakTTS
from tests.media import decode_audio, decode_frames, envelope, mouth_gap, probe

ASSETS = Path(__file__).parent / "assets"
FPS = 25
PAUSE_S = 0.8


async def speech_with_pauses() -> AudioChunk:
    """Three spoken sentences with 0.8 s of silence before, between and after them."""
    tts = EspeakTTS()
    sentences = [
        "Hello chat, welcome to the stream.",
        "Today we are talking about lip sync.",
        "Thanks for watching, see you soon!",
    ]
    parts: list[AudioChunk] = []
    rate = 22050
    for sentence in sentences:
        spoken = concat([c async for c in tts.synthesize(sentence, Voice(language="en"))])
        rate = spoken.sample_rate
        parts.append(
            AudioChunk(samples=np.zeros(int(PAUSE_S * rate), np.float32), sample_rate=rate)
        )
        parts.append(spoken)
    parts.append(AudioChunk(samples=np.zeros(int(PAUSE_S * rate), np.float32), sample_rate=rate))
    await tts.aclose()
    return concat(parts)


@pytest.fixture(scope="module")
def photo_avatar() -> Avatar:
    return load_avatar(ASSETS / "face-astronaut.png")


def _avatar(source: str) -> Avatar:
    if source == "photo":
        return load_avatar(ASSETS / "face-astronaut.png")
    return avatar_for(load_persona(source))


@pytest.mark.parametrize("source", ["cohost", "teacher", "photo"])
async def test_mouth_opening_follows_the_voice_and_closes_in_silence(source: str) -> None:
    avatar = _avatar(source)
    assert avatar.size == (512, 512)  # frame and image pixels agree at the default size
    audio = await speech_with_pauses()
    renderer = SpriteRenderer(fps=FPS, size=512)
    frames = renderer.render(audio.samples, audio.sample_rate, avatar)
    clip = encode_mp4_bytes(frames, audio.samples, audio.sample_rate, EncodeOptions(fps=FPS))

    decoded = decode_frames(clip)
    geometry = avatar.geometry
    opening = np.array([mouth_gap(f, geometry.mouth, geometry.mouth_width) for f in decoded])
    samples, rate = decode_audio(clip)
    loudness = envelope(samples, rate, FPS, len(decoded))

    r = float(np.corrcoef(opening, loudness)[0, 1])
    assert r >= 0.6, f"mouth opening vs audio envelope: Pearson r = {r:.2f}"

    silent = loudness < 0.01 * loudness.max()
    # frames well inside a silence: the silence lasts, and the mouth had time to close
    settled = np.array(
        [i >= 5 and silent[i - 5 : i + 1].all() for i in range(len(silent))], dtype=bool
    )
    assert settled.sum() >= 20
    closed = np.median(opening[settled])
    # within two pixels: coding noise at a photo's closed lips, not a mouth that opens
    assert opening[settled].max() <= closed + 2.0, "the mouth moves during silence"
    gap = 0.1 * geometry.mouth_width  # a tenth of the mouth's width
    assert np.percentile(opening[~silent], 75) > closed + gap, "the mouth barely opens in speech"


async def test_frames_cover_the_audio_exactly(photo_avatar: Avatar) -> None:
    renderer = SpriteRenderer(fps=FPS, size=256)
    for seconds in (0.01, 0.5, 1.234, 3.0):
        n = int(seconds * 22050)
        frames = list(renderer.render(np.zeros(n, np.float32), 22050, photo_avatar))
        assert len(frames) == frame_count(n, 22050, FPS) == max(1, round(seconds * FPS))
        assert frames[0].shape == (256, 256, 3)


async def test_encoded_clip_is_h264_aac_in_sync(photo_avatar: Avatar) -> None:
    audio = await speech_with_pauses()
    renderer = SpriteRenderer(fps=FPS, size=256)
    frames = renderer.render(audio.samples, audio.sample_rate, photo_avatar)
    info = probe(encode_mp4_bytes(frames, audio.samples, audio.sample_rate))
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.fps == FPS
    assert abs(info.video_seconds - audio.duration_s) <= 1 / FPS
    assert abs(info.audio_seconds - audio.duration_s) <= 1 / FPS


def _tone(freq_hz: float, seconds: float, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def test_spectrum_chooses_the_mouth_shape() -> None:
    rate = 22050
    rng = np.random.default_rng(1)
    hiss = np.diff(rng.normal(0, 0.3, int(rate * 0.5)), prepend=0.0).astype(np.float32)
    # vowels as a few harmonics shaped by their formants (F1, F2)
    vowel_a = sum(_tone(f, 0.5) * w for f, w in ((150, 0.5), (750, 1.0), (1200, 0.6)))
    vowel_u = sum(_tone(f, 0.5) * w for f, w in ((150, 1.0), (300, 0.9), (800, 0.2)))
    vowel_i = sum(_tone(f, 0.5) * w for f, w in ((150, 0.6), (300, 1.0), (2300, 0.7)))
    loud = np.concatenate([vowel_a, hiss * 0.6, vowel_u, vowel_i]).astype(np.float32)
    features = analyse(loud, rate, FPS)
    shapes = [classify(features, i) for i in range(len(features.level))]
    middle_of = {name: 6 + 12 * n for n, name in enumerate(("a", "s", "u", "i"))}
    assert shapes[middle_of["a"]] is Viseme.OPEN
    assert shapes[middle_of["s"]] is Viseme.WIDE
    assert shapes[middle_of["u"]] is Viseme.ROUNDED
    assert shapes[middle_of["i"]] is Viseme.WIDE


def test_silence_keeps_the_mouth_closed() -> None:
    track = mouth_track(np.zeros(22050, np.float32), 22050, FPS)
    assert len(track) == FPS
    assert all(frame.viseme is Viseme.CLOSED and frame.openness == 0 for frame in track)


async def test_a_clip_ends_with_the_mouth_closed() -> None:
    avatar = _avatar("cohost")
    tts = EspeakTTS()
    spoken = concat([c async for c in tts.synthesize("Thanks for watching!", Voice(language="en"))])
    await tts.aclose()
    # cut the audio 20 ms after its last sound, as TTS backends do
    loud = np.nonzero(np.abs(spoken.samples) > 0.01)[0]
    samples = spoken.samples[: loud[-1] + int(0.02 * spoken.sample_rate)]
    track = mouth_track(samples, spoken.sample_rate, FPS)
    assert track[-1].viseme is Viseme.CLOSED and track[-1].openness == 0.0
    assert track[-2].openness <= 0.3 and max(frame.openness for frame in track) > 0.5
    renderer = SpriteRenderer(fps=FPS, size=512)
    frames = list(renderer.render(samples, spoken.sample_rate, avatar))
    silent = list(renderer.render(np.zeros(2205, np.float32), 22050, avatar))
    geometry = avatar.geometry
    closed = mouth_gap(silent[0], geometry.mouth, geometry.mouth_width)
    assert mouth_gap(frames[-1], geometry.mouth, geometry.mouth_width) <= closed + 1.5


async def test_a_reply_rendered_in_parts_moves_and_blinks_as_one_take() -> None:
    avatar = _avatar("teacher")
    audio = await speech_with_pauses()
    renderer = SpriteRenderer(fps=FPS, size=256)
    whole = list(renderer.render(audio.samples, audio.sample_rate, avatar, start_frame=500))
    # split in the first pause, as between sentences, on a frame boundary
    cut = round(PAUSE_S / 2 * FPS)
    cut_sample = cut * audio.sample_rate // FPS
    first = list(
        renderer.render(audio.samples[:cut_sample], audio.sample_rate, avatar, start_frame=500)
    )
    second = list(
        renderer.render(
            audio.samples[cut_sample:], audio.sample_rate, avatar, start_frame=500 + cut
        )
    )
    assert len(first) == cut and len(first) + len(second) == len(whole)
    # the head's position carries on: the join is as small a step as any other
    steps = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in itertools.pairwise(whole)]
    join = np.abs(first[-1].astype(int) - second[0].astype(int)).mean()
    assert join <= max(steps)
    for a, b in zip(second[5:], whole[cut + 5 :], strict=False):
        assert np.array_equal(a, b)  # past the new clip's first mouth frames, the very same


@pytest.mark.parametrize(("source", "size"), [("cohost", 512), ("photo", 250)])
async def test_frames_for_the_encoder_are_the_rgb_frames_converted(source: str, size: int) -> None:
    import cv2

    avatar = _avatar(source)
    audio = await speech_with_pauses()
    renderer = SpriteRenderer(fps=FPS, size=size)
    for start in (0, 1):  # the head at every whole-pixel position, odd and even
        rgb = list(renderer.render(audio.samples, audio.sample_rate, avatar, start_frame=start))
        i420 = list(
            renderer.render_i420(audio.samples, audio.sample_rate, avatar, start_frame=start)
        )
        assert len(i420) == len(rgb)
        assert _blink_schedule(start, len(rgb), FPS, seed=avatar.key)  # eyelids drawn too
        for index, (picture, planes) in enumerate(zip(rgb, i420, strict=True)):
            expected = cv2.cvtColor(picture, cv2.COLOR_RGB2YUV_I420)
            assert planes.shape == (size * 3 // 2, size)
            assert np.array_equal(planes, expected), f"frame {index} from {start}"
