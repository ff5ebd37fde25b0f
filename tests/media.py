"""Test helpers that look at clips the way a viewer's player does: decode, then measure."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ClipInfo:
    video_codec: str
    fps: float
    width: int
    height: int
    frames: int
    video_seconds: float
    audio_codec: str
    audio_rate: int
    audio_seconds: float


def _open(source: Path | bytes) -> av.container.InputContainer:
    return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r")


def probe(source: Path | bytes) -> ClipInfo:
    """Decode every video frame and audio sample and report what was really there."""
    with _open(source) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video))
        fps = float(video.base_rate or video.average_rate or 0)
        video_codec, width, height = (
            video.codec_context.name,
            video.codec_context.width,
            video.codec_context.height,
        )
        audio_codec, audio_rate = audio.codec_context.name, audio.codec_context.sample_rate
    with _open(source) as container:
        samples = sum(frame.samples for frame in container.decode(container.streams.audio[0]))
    return ClipInfo(
        video_codec=video_codec,
        fps=fps,
        width=width,
        height=height,
        frames=frames,
        video_seconds=frames / fps,
        audio_codec=audio_codec,
        audio_rate=audio_rate,
        audio_seconds=samples / audio_rate,
    )


def decode_frames(source: Path | bytes) -> list[Frame]:
    with _open(source) as container:
        return [
            np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            for frame in container.decode(video=0)
        ]


def decode_audio(source: Path | bytes) -> tuple[npt.NDArray[np.float32], int]:
    with _open(source) as container:
        stream = container.streams.audio[0]
        parts = [frame.to_ndarray().mean(axis=0) for frame in container.decode(stream)]
        return np.concatenate(parts).astype(np.float32), stream.codec_context.sample_rate


def mouth_gap(frame: Frame, centre: tuple[float, float], width: float) -> float:
    """How far the mouth is open, in pixels: the height of its dark inside.

    Dark pixels are counted per column in a box around the mouth; the mean of the five
    tallest columns is the gap (a closed mouth's line is two or three pixels tall).
    """
    x, y = centre
    box = frame[
        int(y - 0.45 * width) : int(y + 0.45 * width),
        int(x - 0.7 * width) : int(x + 0.7 * width),
    ].astype(np.float32)
    luma = 0.299 * box[..., 0] + 0.587 * box[..., 1] + 0.114 * box[..., 2]
    columns = np.sort((luma < 70).sum(axis=0))
    return float(columns[-5:].mean())


def envelope(
    samples: npt.NDArray[np.float32], rate: int, fps: int, frames: int
) -> npt.NDArray[np.float64]:
    """RMS loudness of the audio over each video frame."""
    hop = rate / fps
    values = []
    for index in range(frames):
        part = samples[int(index * hop) : int((index + 1) * hop)]
        values.append(float(np.sqrt(np.mean(part**2))) if len(part) else 0.0)
    return np.array(values)
