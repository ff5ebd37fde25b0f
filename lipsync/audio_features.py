"""Per-video-frame audio features and the viseme track the sprite renderer draws.

The approach follows what Rhubarb Lip Sync and uLipSync do without a phoneme recogniser: the
loudness of each frame decides how far the mouth opens, and the shape of the spectrum decides
which mouth shape it takes — energy above 2.5 kHz means sibilants and spread lips, a low
spectral centroid with little energy in the second-formant band means rounded lips, a loud
frame with strong first-formant energy means a wide-open mouth. Everything here is pure numpy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

SILENCE_DBFS = -50.0  # quieter than this is silence, whatever the clip's level
DYNAMIC_RANGE_DB = 30.0  # loudness range mapped onto closed..fully open
WINDOW_FRAMES = 2.0  # analysis window length in video frames (overlapping, Hann)


class Viseme(enum.Enum):
    """The mouth shapes of the sprite renderer (after Rhubarb's A–F/X set)."""

    CLOSED = "closed"  # silence, m/b/p
    HALF = "half"  # most consonants, unstressed vowels
    OPEN = "open"  # a, loud open vowels
    ROUNDED = "rounded"  # o, u, w
    WIDE = "wide"  # e, i, s, z: spread lips, teeth showing


@dataclass(frozen=True, kw_only=True)
class FrameFeatures:
    """Audio measured over one video frame (arrays, one value per frame)."""

    rms_dbfs: FloatArray
    level: FloatArray  # 0 (silent) .. 1 (loudest part of the clip)
    centroid_hz: FloatArray
    f1_hz: FloatArray  # centroid of 150–1000 Hz: where the first formant sits
    low_ratio: FloatArray  # share of 150–900 Hz energy (first formant)
    mid_ratio: FloatArray  # share of 900–2500 Hz (second formant)
    high_ratio: FloatArray  # share of 2.5–8 kHz (sibilants, fricatives)


@dataclass(frozen=True, kw_only=True)
class MouthFrame:
    """What the mouth does in one video frame."""

    viseme: Viseme
    openness: float  # 0..1, how far the mouth opens within its viseme


def frame_count(n_samples: int, sample_rate: int, fps: int) -> int:
    """Video frames that cover ``n_samples`` of audio (at least one)."""
    return max(1, round(n_samples * fps / sample_rate))


def analyse(samples: FloatArray, sample_rate: int, fps: int) -> FrameFeatures:
    """Measure loudness and spectral balance for each video frame of the audio."""
    n_frames = frame_count(len(samples), sample_rate, fps)
    hop = sample_rate / fps
    window = round(hop * WINDOW_FRAMES)
    window += window % 2
    pad = window
    padded = np.pad(samples.astype(np.float32), (pad, pad + window))
    centres = (np.arange(n_frames) + 0.5) * hop + pad
    starts = np.clip((centres - window / 2).astype(np.int64), 0, len(padded) - window)
    frames = padded[starts[:, None] + np.arange(window)[None, :]]
    frames *= np.hanning(window).astype(np.float32)

    rms = np.sqrt(np.mean(frames**2, axis=1) * (8.0 / 3.0))  # undo the Hann window's loss
    rms_db = (20.0 * np.log10(rms + 1e-9)).astype(np.float32)

    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(window, 1.0 / sample_rate)
    speech = (freqs >= 150) & (freqs <= 8000)
    total = power[:, speech].sum(axis=1) + 1e-12

    def band(low: float, high: float) -> FloatArray:
        mask = (freqs >= low) & (freqs < high)
        ratio: FloatArray = (power[:, mask].sum(axis=1) / total).astype(np.float32)
        return ratio

    centroid = (power[:, speech] * freqs[speech]).sum(axis=1) / total
    first = (freqs >= 150) & (freqs < 1000)
    f1 = (power[:, first] * freqs[first]).sum(axis=1) / (power[:, first].sum(axis=1) + 1e-12)

    voiced = rms_db > SILENCE_DBFS
    reference = float(np.percentile(rms_db[voiced], 90)) if voiced.any() else 0.0
    level = np.clip((rms_db - (reference - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    level[~voiced] = 0.0
    return FrameFeatures(
        rms_dbfs=rms_db,
        level=level.astype(np.float32),
        centroid_hz=centroid.astype(np.float32),
        f1_hz=f1.astype(np.float32),
        low_ratio=band(150, 900),
        mid_ratio=band(900, 2500),
        high_ratio=band(2500, 8000),
    )


def classify(features: FrameFeatures, index: int) -> Viseme:
    """The mouth shape for one frame, from its loudness and spectral balance.

    Sibilants and front vowels (s, i, e: strong energy above 900 Hz, a low first formant) spread
    the lips; back vowels (o, u: a low first formant and little above it) round them; a high
    first formant in a loud frame is an open vowel (a).
    """
    level = float(features.level[index])
    if level < 0.15:
        return Viseme.CLOSED
    high = float(features.high_ratio[index])
    mid = float(features.mid_ratio[index])
    low = float(features.low_ratio[index])
    f1 = float(features.f1_hz[index])
    if high > 0.45 or (high > 0.25 and mid + high > low):
        return Viseme.WIDE
    if mid > 0.2 and f1 < 450:
        return Viseme.WIDE
    if f1 < 420 and mid < 0.08:
        return Viseme.ROUNDED
    if f1 > 560 and level > 0.5:
        return Viseme.OPEN
    return Viseme.HALF


# How far each viseme opens the mouth at full loudness.
MAX_OPENING: dict[Viseme, float] = {
    Viseme.CLOSED: 0.0,
    Viseme.HALF: 0.55,
    Viseme.OPEN: 1.0,
    Viseme.ROUNDED: 0.6,
    Viseme.WIDE: 0.35,
}

ATTACK = 0.75  # share of the distance to the target covered per frame when opening
RELEASE = 0.55  # ... when closing: a little slower, as jaws are
CLOSED_BELOW = 0.04  # an opening this small is drawn as a closed mouth
# The most the mouth may be open in a clip's last frames, the very last first: TTS audio ends
# 10-30 ms after the last sound, so a clip would otherwise end, and rest, with an open mouth.
CLOSING = (0.0, 0.3, 0.65)


def mouth_track(samples: FloatArray, sample_rate: int, fps: int) -> list[MouthFrame]:
    """The smoothed viseme and opening for every video frame of the audio.

    Opening follows loudness with a fast attack and a slightly slower release. A new mouth
    shape must be heard for two frames in a row before it replaces the current one (no
    single-frame flicker), except when the mouth opens from closed. When the audio falls
    silent the mouth keeps its shape while it closes. The track ends with the mouth closed.
    """
    features = analyse(samples, sample_rate, fps)
    track: list[MouthFrame] = []
    shape = Viseme.HALF
    pending: Viseme | None = None
    opening = 0.0
    for index in range(len(features.level)):
        heard = classify(features, index)
        if heard is Viseme.CLOSED or heard is shape:
            pending = None
        elif heard is pending or opening < CLOSED_BELOW:
            shape, pending = heard, None
        else:
            pending = heard
        target = (
            0.0 if heard is Viseme.CLOSED else float(features.level[index]) * MAX_OPENING[shape]
        )
        rate = ATTACK if target > opening else RELEASE
        opening += (target - opening) * rate
        if opening < CLOSED_BELOW:
            track.append(MouthFrame(viseme=Viseme.CLOSED, openness=0.0))
        else:
            track.append(MouthFrame(viseme=shape, openness=opening))
    for back, most in enumerate(CLOSING, start=1):
        if back > len(track):
            break
        last = track[-back]
        if last.openness > most:
            closing = most >= CLOSED_BELOW
            track[-back] = MouthFrame(
                viseme=last.viseme if closing else Viseme.CLOSED, openness=most if closing else 0.0
            )
    return track
