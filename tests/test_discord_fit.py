"""lipsync.fit: a reply's sentence clips joined into one MP4 that fits an upload limit, checked
by decoding what comes out as a viewer's player would."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.encode import EncodeOptions, encode_mp4_bytes
from lipsync.errors import EncodeError
from lipsync.fit import fit_clips
from tests.media import decode_audio, decode_frames, probe

RATE = 22050


def clip(
    seconds: float, *, colour: tuple[int, int, int], noise: bool = False, hz: float = 220
) -> bytes:
    """A 256 x 256 clip of one colour (or noise) with a tone at ``hz``."""
    rng = np.random.default_rng(int(hz))
    count = int(seconds * 25)
    if noise:
        frames = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(count)]
    else:
        frames = [np.full((256, 256, 3), colour, dtype=np.uint8) for _ in range(count)]
    t = np.arange(int(seconds * RATE)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return encode_mp4_bytes(frames, tone, RATE, EncodeOptions(crf=18, preset="ultrafast"))


def test_clips_that_fit_are_joined_in_order_at_their_own_size() -> None:
    red, blue = clip(1.2, colour=(200, 30, 30)), clip(0.8, colour=(30, 30, 200), hz=440)
    fitted = fit_clips([red, blue], limit_bytes=10 * 1024 * 1024)
    assert fitted is not None and not fitted.reencoded
    assert (fitted.width, fitted.height) == (256, 256)
    info = probe(fitted.media)
    assert info.frames == 50 and abs(info.audio_seconds - 2.0) < 0.05
    frames = decode_frames(fitted.media)
    assert frames[0][128, 128, 0] > 150 and frames[-1][128, 128, 2] > 150  # red, then blue
    samples, rate = decode_audio(fitted.media)
    # each sentence's sound stays under its own picture: 220 Hz first, 440 Hz after 1.2 s
    assert abs(_pitch(samples[int(0.2 * rate) : int(1.0 * rate)], rate) - 220) < 5
    assert abs(_pitch(samples[int(1.4 * rate) : int(1.9 * rate)], rate) - 440) < 5


def _pitch(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in ``samples``, in Hz."""
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_a_thin_bitrate_gets_a_smaller_picture_that_still_fits() -> None:
    parts = [clip(2.0, colour=(0, 0, 0), noise=True), clip(2.0, colour=(0, 0, 0), noise=True)]
    limit = 70_000  # about 65 kbit/s of picture: too thin for 256 x 256
    fitted = fit_clips(parts, limit_bytes=limit)
    assert fitted is not None and fitted.reencoded
    assert len(fitted.media) <= limit and fitted.height < 256
    info = probe(fitted.media)
    assert info.frames == 100 and abs(info.audio_seconds - 4.0) < 0.1


def test_nothing_watchable_fits_a_tiny_limit() -> None:
    assert fit_clips([clip(3.0, colour=(0, 0, 0), noise=True)], limit_bytes=20_000) is None


def test_a_clip_that_is_not_a_video_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="clip 2"):
        fit_clips([clip(0.5, colour=(1, 2, 3)), b"MP4:not really"], limit_bytes=1 << 20)
